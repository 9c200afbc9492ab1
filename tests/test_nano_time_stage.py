"""The nano recipe's time-reading stage (train/recipes/nano/pretrain_time.py): clips whose square is shown exactly on
the event's sampled frames, teacher answers whose times carry the weight, the prior it is scored against, and a run
that trains the language model only."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")
import torch

from stvgr1_edge.baseline import best_constant_range
from stvgr1_edge_train.recipes.nano.pretrain_time import (
    TimeReadingBatches,
    TimeReadingConfig,
    pretrain_time,
    time_reading_clip,
    time_reading_frames,
)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_the_square_is_shown_on_the_sampled_frames_inside_the_range_only(seed):
    config = TimeReadingConfig()
    clip = time_reading_frames(seed, config)
    frames, times = clip["frames"], np.array(clip["frame_times_s"])
    assert len(frames) == len(times) and len(frames) % 2 == 0 and len(frames) >= 4
    assert frames.shape[1] % 28 == 0 and frames.shape[2] % 28 == 0
    inside = (times >= clip["start_s"] - 1e-9) & (times <= clip["end_s"] + 1e-9)
    assert inside.any() and (~inside).any()
    plain = frames[~inside][0]
    changed = np.array([(f != plain).any() for f in frames])
    np.testing.assert_array_equal(changed, inside)
    assert config.margin_s <= clip["start_s"] + 1e-9 and clip["end_s"] <= clip["duration_s"] - config.margin_s
    assert clip["end_s"] - clip["start_s"] >= config.min_event_s - 2 / min(config.video_fps)
    assert config.min_seconds - 0.1 <= clip["duration_s"] <= config.max_seconds + 0.1
    # the same seed draws the same clip
    np.testing.assert_array_equal(time_reading_frames(seed, config)["frames"], frames)


def test_ranges_and_lengths_vary_so_a_constant_range_scores_low():
    clips = [time_reading_frames(seed) for seed in range(40)]
    ranges = np.array([(c["start_s"], c["end_s"]) for c in clips])
    assert len({round(c["duration_s"]) for c in clips}) >= 6
    assert best_constant_range(ranges)[2] < 0.5


def test_best_constant_range_is_the_best_one_on_the_grid():
    assert best_constant_range(np.array([[1.0, 2.0], [1.0, 2.0]]))[2] == pytest.approx(1.0)
    # two disjoint ranges: matching one (tIoU 1 and 0) beats covering both (1/3 each)
    assert best_constant_range(np.array([[0.0, 1.0], [2.0, 3.0]]))[2] == pytest.approx(0.5)
    assert best_constant_range(np.array([[0.0, 2.0], [1.0, 3.0]]))[2] == pytest.approx(2 / 3)


def test_batches_label_the_answer_only_and_weigh_its_times(saved_tiny):
    config = TimeReadingConfig(time_weight=3.0)
    clips = [time_reading_clip(seed, saved_tiny.processor.video_processor, config) for seed in (7, 8)]
    batches = TimeReadingBatches(saved_tiny.processor, config)
    batch = batches(clips)
    tokenizer = saved_tiny.processor.tokenizer
    for i, clip in enumerate(clips):
        prompt = batches.prompt_ids(clip)
        labels, weights = batch["labels"][i], batch["loss_weights"][i]
        assert (labels[: len(prompt)] == -100).all() and (weights[: len(prompt)] == 0).all()
        answer = tokenizer.decode(labels[labels != -100])
        assert f"Time range: {clip.start_s:.2f} to {clip.end_s:.2f}" in answer
        assert f'"{clip.query}"' in answer
        heavy = tokenizer.decode(labels[weights == 3.0])
        assert heavy.replace(" ", "") == f"{clip.start_s:.2f}{clip.end_s:.2f}" * 2
        video_tokens = int((batch["mm_token_type_ids"][i] == 2).sum())
        assert video_tokens == clip.video.num_visual_tokens(saved_tiny.processor.video_processor.merge_size)


def test_stage_trains_the_language_model_only_and_reports_each_evaluation(saved_tiny, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = TimeReadingConfig(
        steps=2,
        batch_size=2,
        eval_clips=2,
        eval_every=1,
        max_seconds=6.0,
        clock_weight=1.0,
        clock_layer=1,
    )
    report = pretrain_time(saved_tiny.folder, tmp_path / "time", config)
    assert [h["step"] for h in report["history"]] == [0, 1, 2]
    for h in report["history"]:
        assert 0.0 <= h["m_tiou"] <= 1.0 and 0.0 < h["prior_m_tiou"] <= 1.0 and 0.0 <= h["parsed"] <= 1.0
    before = Qwen2_5_VLForConditionalGeneration.from_pretrained(saved_tiny.folder).state_dict()
    after = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "time").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("model.visual.") for k in changed), sorted(changed)[:5]
    assert any(".layers." in k for k in changed)


def test_cached_clips_load_with_another_cache_and_teach_the_same_answer(saved_tiny, tmp_path):
    """Time-reading clips written as a cache load next to another cache (folders joined by ","), and the SFT
    collator teaches them the stage's own answer."""
    from stvgr1_edge.prepared import read_video_tensors
    from stvgr1_edge_train.cache import load_cached_dataset
    from stvgr1_edge_train.recipes.nano.pretrain_time import write_time_reading_cache
    from stvgr1_edge_train.recipes.nano.pretrain_vision import clip_seed
    from stvgr1_edge_train.sft import SFTCollator

    write_time_reading_cache(tmp_path / "a", saved_tiny.processor, 2, root_seed=1)
    write_time_reading_cache(tmp_path / "b", saved_tiny.processor, 3, root_seed=2)
    rows = load_cached_dataset(f"{tmp_path / 'a'},{tmp_path / 'b'}")
    assert len(rows) == 5
    assert [r["video_file"].startswith(str(tmp_path / "a")) for r in rows] == [True, True, False, False, False]
    config = TimeReadingConfig()
    clip = time_reading_clip(clip_seed(2, 1), saved_tiny.processor.video_processor, config)
    row = rows[3]
    assert (row["gt_start_s"], row["gt_end_s"], row["query"]) == (clip.start_s, clip.end_s, clip.query)
    assert torch.equal(read_video_tensors(row["video_file"]).pixel_values_videos, clip.video.pixel_values_videos)
    collated = SFTCollator(saved_tiny.processor, mark_target=True, check_attributes=True)([row])
    own = TimeReadingBatches(saved_tiny.processor, config)([clip])
    assert torch.equal(collated["input_ids"], own["input_ids"])
    assert torch.equal(collated["labels"], own["labels"])


def test_token_times_are_each_tubes_mean_frame_time_in_token_order(saved_tiny):
    merge = saved_tiny.processor.video_processor.merge_size
    clip = time_reading_clip(11, saved_tiny.processor.video_processor)
    times = clip.token_times_s(merge)
    tubes = int(clip.video.video_grid_thw[0, 0])
    per_tube = clip.video.num_visual_tokens(merge) // tubes
    assert len(times) == clip.video.num_visual_tokens(merge)
    frame_times = clip.frame_times_s
    for j in range(tubes):
        expected = (frame_times[2 * j] + frame_times[2 * j + 1]) / 2
        assert torch.allclose(times[j * per_tube : (j + 1) * per_tube], torch.tensor(expected))
    assert (times.diff() >= 0).all() and times[-1] > times[0]
