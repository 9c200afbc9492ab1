"""The nano recipe's stream stage (train/recipes/nano/stream_sft.py): each fresh clip becomes the same sample that
`train prepare` makes of it, the clip formats are drawn by their shares, and a run trains the tower unless told not
to."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("trl")
import torch

from stvgr1_edge.synth import EVENTS, SynthConfig, clip_annotation, generate_clip, write_clip_video
from stvgr1_edge_train.recipes.nano.stream_sft import StreamSFTConfig, draw_format, stream_clip, stream_sft

SMALL = SynthConfig(width=224, height=168, seconds=6.0)


def test_stream_clip_is_the_prepared_sample_of_the_same_clip(saved_tiny, tmp_path):
    """The clip written as an MP4 and prepared by `train prepare` (classical tracker) gives the same prompt, times,
    tokens and target boxes, and nearly the same pixels, as the stream's in-memory path (true tracks replayed)."""
    from stvgr1_edge.prepared import load_cached_samples, read_video_tensors
    from stvgr1_edge_train.prepare import PrepareConfig, prepare_cache

    seeds = (11, 12)
    annotations = {}
    for seed in seeds:
        clip = generate_clip(seed, SMALL, key=f"c{seed}")
        write_clip_video(clip, tmp_path / "videos" / f"c{seed}.mp4")
        annotations[f"c{seed}"] = clip_annotation(clip, f"videos/c{seed}.mp4")
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    report = prepare_cache(
        tmp_path / "ann.json", tmp_path / "cache", config=PrepareConfig(processor=str(saved_tiny.folder))
    )
    assert report["counts"] == {"cached": 2}, report["counts"]
    rows = {s.sample_id: s for s in load_cached_samples(tmp_path / "cache")}
    streamed = {seed: stream_clip(seed, SMALL, saved_tiny.processor, tmp_path) for seed in seeds}
    for seed in seeds:
        row, mine = rows[f"c{seed}"], streamed[seed].sample
        for field in ("query", "prompt", "gt_start_s", "gt_end_s", "duration_s", "num_visual_tokens", "processor"):
            assert getattr(row, field) == getattr(mine, field), field
        assert tuple(row.frame_times_s) == mine.frame_times_s
        # the annotations' boxes are whole pixels (xywh truncated), the stream's the true track's
        assert [len(b) for b in row.target_boxes] == [len(b) for b in mine.target_boxes]
        assert any(mine.target_boxes) and not all(mine.target_boxes)
        for a, b in zip(row.target_boxes, mine.target_boxes):
            np.testing.assert_allclose(a, b, atol=1.01 / SMALL.height)
        assert streamed[seed].event == generate_clip(seed, SMALL).event.name
        # the whole track's boxes: the range's boxes where the event is, the object's elsewhere
        track = streamed[seed].target_track_boxes
        assert len(track) == len(mine.target_boxes) and all(track)
        assert all(t == b for t, b in zip(track, mine.target_boxes) if b)
        labels = dict(zip(row.valid_ids, row.object_labels))
        assert labels[row.gt_id] == dict(zip(mine.valid_ids, mine.object_labels))[mine.gt_id]
        assert sorted(row.object_labels) == sorted(mine.object_labels)
    # the pixels differ only by the markers' masks (tracked vs true) and H.264 of all frames vs the sampled ones
    prepared = {
        seed: read_video_tensors(tmp_path / "cache" / rows[f"c{seed}"].video_file).pixel_values_videos for seed in seeds
    }
    same = (prepared[11] - streamed[11].video.pixel_values_videos).abs().mean()
    other = (prepared[12] - streamed[11].video.pixel_values_videos).abs().mean()
    assert same < 0.05 < other, (float(same), float(other))
    for seed in seeds:  # the ID markers are drawn, about as many of their pixels as from the tracker's masks
        drawn = marker_pixels(streamed[seed].video.pixel_values_videos, saved_tiny.processor)
        assert 0.5 < drawn / marker_pixels(prepared[seed], saved_tiny.processor) < 2.0


def marker_pixels(pixel_values, processor) -> int:
    """How many pixels of the patchified clip are the markers' pure red (255, 0, 0)."""
    vp = processor.video_processor
    patches = pixel_values.view(-1, 3, vp.temporal_patch_size, vp.patch_size, vp.patch_size)
    red = [(v - m) / s for v, m, s in zip((1.0, 0.0, 0.0), vp.image_mean, vp.image_std)]
    hits = torch.ones(patches[:, 0].shape, dtype=torch.bool)
    for c in range(3):
        hits &= (patches[:, c] - red[c]).abs() < 0.02
    return int(hits.sum())


def test_clip_formats_are_drawn_by_their_shares():
    config = StreamSFTConfig(
        formats=((0.5, 320, 240, 8.0), (0.3, 224, 168, 6.0), (0.2, 320, 240, 16.0), (0.0, 320, 240, 4.0))
    )
    drawn = [draw_format(seed, config) for seed in range(3000)]
    counts = {}
    for c in drawn:
        counts[(c.width, c.height, c.seconds)] = counts.get((c.width, c.height, c.seconds), 0) + 1
    assert set(counts) == {(320, 240, 8.0), (224, 168, 6.0), (320, 240, 16.0)}
    for share, width, height, seconds in config.formats[:3]:
        assert abs(counts[(width, height, seconds)] / len(drawn) - share) < 0.03
    assert [draw_format(seed, config) for seed in range(50)] == drawn[:50]


@pytest.mark.parametrize("train_tower", [True, False])
def test_stage_trains_the_tower_unless_frozen_and_reports_each_evaluation(saved_tiny, tmp_path, train_tower):
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = StreamSFTConfig(
        steps=2,
        batch_size=2,
        eval_clips=2,
        eval_every=1,
        train_tower=train_tower,
        formats=((1.0, 224, 168, 6.0),),
        attention_layer=1,
        attention_head=3,
    )
    report = stream_sft(saved_tiny.folder, tmp_path / "stream", config)
    assert [h["step"] for h in report["history"]] == [0, 1, 2]
    for h in report["history"]:
        assert 0.0 <= h["m_tiou"] <= 1.0 and 0.0 < h["prior_m_tiou"] <= 1.0 and 0.0 <= h["id_accuracy"] <= 1.0
        # the per-event split covers every clip once and averages back to the clip-wide numbers
        by_event = h["by_event"]
        assert set(by_event) <= set(EVENTS) and sum(e["clips"] for e in by_event.values()) == config.eval_clips
        for key in ("m_tiou", "prior_m_tiou"):
            pooled = sum(e[key] * e["clips"] for e in by_event.values()) / config.eval_clips
            assert pooled == pytest.approx(h[key]), key
    assert [h["attention_loss"] is not None and h["attention_loss"] > 0 for h in report["history"]] == [
        False,
        True,
        True,
    ]
    before = Qwen2_5_VLForConditionalGeneration.from_pretrained(saved_tiny.folder).state_dict()
    after = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "stream").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".layers." in k and not k.startswith("model.visual.") for k in changed)
    assert any(k.startswith("model.visual.") for k in changed) == train_tower


def test_zero_steps_only_evaluate_and_write_nothing(saved_tiny, tmp_path):
    config = StreamSFTConfig(steps=0, eval_clips=3, formats=((1.0, 224, 168, 6.0),), attention_layer=1)
    report = stream_sft(saved_tiny.folder, tmp_path / "never", config)
    assert [h["step"] for h in report["history"]] == [0] and report["final"] is report["history"][0]
    assert sum(e["clips"] for e in report["final"]["by_event"].values()) == 3
    assert not (tmp_path / "never").exists()


def test_events_option_keeps_every_clip_to_those_events():
    config = StreamSFTConfig(events=("blinks", "stops"))
    events = set()
    for seed in range(12):
        clip = generate_clip(seed, draw_format(seed, config))
        events |= {o.event.name for o in clip.objects if o.event is not None}
    assert events == {"blinks", "stops"}


def test_unknown_event_is_one_line_and_exit_2(capsys):
    from stvgr1_edge_train.recipes.nano.stream_sft import main

    with pytest.raises(SystemExit) as stop:
        main(["model", "out", "--events", "blinks,waves"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "waves" in err and "blinks" in err


def test_carry_loss_reaches_the_update_and_is_reported(saved_tiny, tmp_path):
    """Two steps with the carry loss weighted up end in other language-model weights than the same steps (same clips,
    same seed) without it, and other ones again when it classifies seconds instead of regressing them; each evaluation
    after a step reports its running value; without it none is reported."""
    from safetensors.torch import load_file

    def run(name, carry_weight, time_classes=0):
        config = StreamSFTConfig(
            steps=2,
            batch_size=2,
            eval_clips=1,
            eval_every=2,
            formats=((1.0, 224, 168, 6.0),),
            attention_layer=1,
            attention_head=3,
            carry_weight=carry_weight,
            time_classes=time_classes,
        )
        report = stream_sft(saved_tiny.folder, tmp_path / name, config)
        return report, load_file(tmp_path / name / "model.safetensors")

    plain, plain_weights = run("plain", 0.0)
    carried, carried_weights = run("carried", 100.0)
    assert [h["carry_loss"] for h in plain["history"]] == [None, None]
    assert carried["history"][0]["carry_loss"] is None and carried["history"][-1]["carry_loss"] > 0
    layer0 = [k for k in plain_weights if k.startswith("model.layers.0.")]
    assert layer0 and any(not torch.equal(plain_weights[k], carried_weights[k]) for k in layer0)
    # the carry head is a probe: the saved model has the same tensors either way
    assert set(plain_weights) == set(carried_weights)
    classified, classified_weights = run("classified", 100.0, time_classes=7)
    assert classified["history"][-1]["carry_loss"] > 0 and set(classified_weights) == set(plain_weights)
    assert any(not torch.equal(classified_weights[k], carried_weights[k]) for k in layer0)
