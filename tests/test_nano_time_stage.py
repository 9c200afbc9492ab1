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
    SQUARE_PATTERNS,
    TimeReadingBatches,
    TimeReadingConfig,
    pretrain_time,
    square_pixels,
    time_reading_clip,
    time_reading_frames,
)
from stvgr1_edge_train.sft import (
    attention_mass_loss,
    carried_states,
    event_edge_token_masks,
    time_head_loss,
    time_token_positions,
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


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_with_distractors_each_square_shows_its_own_pattern_on_its_own_range_and_the_query_names_the_target(seed):
    config = TimeReadingConfig(distractors=2)
    clip = time_reading_frames(seed, config)
    frames, times = clip["frames"], np.array(clip["frame_times_s"])
    squares = clip["squares"]
    assert len(squares) == 3 and sorted(p for p, *_ in squares) == sorted(SQUARE_PATTERNS)
    target_pattern, target_box, start_s, end_s = squares[0]
    assert clip["query"] == f"the {target_pattern} square is shown"
    assert (start_s, end_s) == (clip["start_s"], clip["end_s"]) and tuple(clip["square_box"]) == target_box
    for i, (_, (x0, y0, side), _, _) in enumerate(squares):
        for _, (x1, y1, other), _, _ in squares[i + 1 :]:  # no square hides another
            assert x0 + side <= x1 or x1 + other <= x0 or y0 + side <= y1 or y1 + other <= y0
    for pattern, (x0, y0, side), a, b in squares:
        inside = (times >= a - 1e-9) & (times <= b + 1e-9)
        assert inside.any() and (~inside).any()
        region = frames[:, y0 : y0 + side, x0 : x0 + side]
        drawn = np.broadcast_to(square_pixels(pattern, side), region.shape[1:])
        np.testing.assert_array_equal([(r == drawn).all() for r in region], inside)
    # the target's pattern is what its box shows; the other patterns never show there
    for pattern in set(SQUARE_PATTERNS) - {target_pattern}:
        x0, y0, side = target_box
        drawn = np.broadcast_to(square_pixels(pattern, side), (side, side, 3))
        assert not any((f[y0 : y0 + side, x0 : x0 + side] == drawn).all() for f in frames)


def test_distractors_are_refused_beyond_the_patterns_and_patterns_are_named():
    with pytest.raises(ValueError, match="at most 2"):
        time_reading_frames(0, TimeReadingConfig(distractors=3))
    with pytest.raises(ValueError, match="unknown square pattern"):
        square_pixels("plaid", 14)
    checkered, striped = square_pixels("checkered", 28)[..., 0], square_pixels("striped", 28)[..., 0]
    assert (checkered != striped).any() and set(np.unique(checkered)) == set(np.unique(striped)) == {10, 245}


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
        attention_layer=1,
        attention_head=3,
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


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_event_edge_masks_are_the_squares_cells_in_the_first_and_last_shown_tubes(saved_tiny, seed):
    vp = saved_tiny.processor.video_processor
    frames = time_reading_frames(seed)["frames"]
    clip = time_reading_clip(seed, vp)
    tubes, rows, cols = (int(v) for v in clip.video.video_grid_thw[0])
    cell = vp.merge_size * vp.patch_size
    rows, cols = rows // vp.merge_size, cols // vp.merge_size
    masks = event_edge_token_masks(clip.target_boxes(vp.patch_size), clip.video.video_grid_thw[0], vp.merge_size)
    first, last = (m.view(tubes, rows, cols) for m in masks)
    # which pixels the square changes, per tube, against a frame without it
    times = np.array(clip.frame_times_s)
    plain = frames[(times < clip.start_s - 1e-9) | (times > clip.end_s + 1e-9)][0]
    changed = (frames != plain).any(-1).reshape(tubes, 2, rows, cell, cols, cell).any(1).mean((2, 4))
    shown = np.nonzero(changed.max((1, 2)) > 0)[0]
    assert len(shown) >= 1
    for mask, tube in ((first, shown[0]), (last, shown[-1])):
        assert mask.any() and mask.sum() == mask[tube].sum()  # one tube: the first (last) that shows the square
        covered = changed[tube]
        assert (covered[mask[tube].numpy()] > 0.45).all() and (covered[~mask[tube].numpy()] < 0.55).all()


def test_time_token_positions_spell_the_written_times(saved_tiny):
    clips = [time_reading_clip(seed, saved_tiny.processor.video_processor) for seed in (12, 13)]
    batch = TimeReadingBatches(saved_tiny.processor, TimeReadingConfig())(clips)
    tokenizer = saved_tiny.processor.tokenizer
    for row, clip in enumerate(clips):
        runs = time_token_positions(tokenizer, batch["labels"][row])
        spelled = [tokenizer.decode(batch["input_ids"][row, run]).strip() for run in runs]
        start, end = f"{clip.start_s:.2f}", f"{clip.end_s:.2f}"
        assert spelled == [start, end, start, end]


def test_attention_mass_loss_is_the_models_own_attention_on_the_targets(saved_tiny):
    """The loss recomputes one head's attention from the layer's input: it must be the attention the model itself
    computes (eager attention, 3-D rotary positions, grouped key heads), on the square's tokens."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.rope_index import use_trained_rope_index

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(saved_tiny.folder, attn_implementation="eager")
    model = use_trained_rope_index(model).eval()
    clips = [time_reading_clip(seed, saved_tiny.processor.video_processor) for seed in (14, 15)]
    batches = TimeReadingBatches(saved_tiny.processor, TimeReadingConfig())
    batch = batches(clips)
    batch.pop("labels")
    batch.pop("loss_weights")
    queries = batch.pop("attention_queries")
    assert len(queries) == 8 and all(len(targets) > 0 for _, _, targets in queries)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
        for layer, head in ((1, 3), (0, 0)):
            loss = attention_mass_loss(model, batch, out.hidden_states[layer], layer, head, queries)
            attention = out.attentions[layer][:, head]
            masses = [attention[row][q][:, t].sum(-1) for row, q, t in queries]
            expected = -torch.log(torch.cat(masses)).mean()
            assert torch.allclose(loss, expected, atol=1e-4), (layer, head, loss, expected)
        # a different target set gives a different loss: the targets are what is scored
        shifted = [(row, q, t - 1) for row, q, t in queries]
        assert not torch.allclose(attention_mass_loss(model, batch, out.hidden_states[0], 0, 0, shifted), loss)


def test_each_auxiliary_loss_reaches_the_update(saved_tiny, tmp_path):
    """Two steps (the first at the warm-up's zero rate) with the clock, the attention or the carry loss weighted up
    end in other weights than the same steps without it (same clips, same seed): no term is dropped from the loss
    that is optimized."""
    from safetensors.torch import load_file

    def one_step(name, **weights):
        config = TimeReadingConfig(
            steps=2, batch_size=2, eval_clips=1, max_seconds=6.0, clock_layer=1, attention_layer=1, **weights
        )
        pretrain_time(saved_tiny.folder, tmp_path / name, config)
        return load_file(tmp_path / name / "model.safetensors")

    def differ(a, b):
        return any(not torch.equal(a[k], b[k]) for k in a if ".layers.0." in k)

    both = one_step("both", clock_weight=1.0, attention_weight=1.0)
    assert differ(one_step("clock", clock_weight=100.0, attention_weight=1.0), both)
    assert differ(one_step("attention", clock_weight=1.0, attention_weight=100.0), both)
    assert differ(one_step("carry", clock_weight=1.0, attention_weight=1.0, carry_weight=100.0), both)
    assert not differ(one_step("again", clock_weight=1.0, attention_weight=1.0), both)  # the steps are reproducible
    classes = dict(clock_weight=100.0, attention_weight=1.0, carry_weight=100.0)
    assert differ(one_step("classes", time_classes=7, **classes), one_step("regress", **classes))


def test_time_heads_classify_whole_seconds_or_regress_tens_of_seconds():
    """With classes the loss is the cross-entropy against the whole second, late times in the last class: a head
    whose logits peak at exactly those classes scores near 0, one a second late scores high. Without, it is the
    squared error in tens of seconds."""
    seconds = torch.tensor([0.25, 0.75, 1.5, 2.99, 3.0, 9.7])
    wanted = torch.tensor([0, 0, 1, 2, 3, 4])  # 9.7 s counts as the last of 5 classes
    head = torch.nn.Identity()
    exact = 30.0 * torch.nn.functional.one_hot(wanted, 5).float()
    late = 30.0 * torch.nn.functional.one_hot((wanted + 1).clamp(max=4), 5).float()
    assert time_head_loss(head, exact, seconds, 5) < 1e-6
    assert time_head_loss(head, late, seconds, 5) > 10.0
    states = torch.tensor([[0.1], [0.2], [0.3], [0.3], [0.3], [1.0]])
    expected = torch.nn.functional.mse_loss(states.squeeze(-1), seconds / 10)
    assert torch.isclose(time_head_loss(head, states, seconds, 0), expected)


def test_carried_states_are_the_positions_that_write_each_time_with_that_time(saved_tiny):
    """The carry loss regresses, at each position that predicts a time's characters, the time whose characters
    follow: decoding the next tokens of every picked position gives back the paired time."""
    config = TimeReadingConfig(distractors=1, carry_weight=1.0, attention_weight=0.0)
    clips = [time_reading_clip(seed, saved_tiny.processor.video_processor, config) for seed in (21, 22)]
    batch = TimeReadingBatches(saved_tiny.processor, config)(clips)
    tokenizer = saved_tiny.processor.tokenizer
    length = batch["input_ids"].shape[1]
    positions = torch.arange(length, dtype=torch.float32).view(1, length, 1).expand(2, length, 1)
    rows = torch.arange(2, dtype=torch.float32).view(2, 1, 1).expand(2, length, 1)
    ranges = [(c.start_s, c.end_s) for c in clips]
    picked, written = carried_states(torch.cat([rows, positions], -1), batch["attention_queries"], ranges)
    assert len(picked) == len(written) > 0
    spelled: dict[tuple[int, str], str] = {}
    for (row, position), time in zip(picked.long().tolist(), written.tolist()):
        key = (row, f"{time:.2f}")
        spelled[key] = spelled.get(key, "") + tokenizer.decode(batch["input_ids"][row, position + 1])
    for row, clip in enumerate(clips):
        start, end = f"{clip.start_s:.2f}", f"{clip.end_s:.2f}"
        # each time is written twice (the reasoning's and the <answer>'s range)
        assert spelled[(row, start)].replace(" ", "") == start * 2
        assert spelled[(row, end)].replace(" ", "") == end * 2
