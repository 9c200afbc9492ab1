"""The nano recipe's dense vision stage (train/recipes/nano/pretrain_vision.py) and the SFT paths it relies on:
labels that follow the pixels, the grounder's exact tensors, only the vision tower trained, and SFT on frozen
vision features computing the same loss as SFT on pixels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")
import torch

from stvgr1_edge_train.recipes.nano.pretrain_vision import (
    CHANGE_HEADS,
    IGNORE,
    MERGED_PX,
    TEMPORAL_PATCH,
    VisionPretrainConfig,
    glyph_crop,
    label_classes,
    labelled_clip,
    pretrain_vision,
    small_scene,
    video_tensors,
)

CONFIG = VisionPretrainConfig(
    glyph_steps=2,
    glyph_batch=2,
    scene_steps=2,
    scene_batch=2,
    steps=2,
    batch_clips=1,
    val_clips=1,
    eval_every=1,
    data_workers=0,
    warmup_steps=1,
)


@pytest.fixture(scope="module")
def tiny(saved_tiny):
    return saved_tiny


def _frames_from_patches(pixel_values, grid, video_processor) -> np.ndarray:
    """Undo patchify + normalisation: (T, H, W, 3) uint8 (the layout of Qwen2VLVideoProcessor.patchify)."""
    t, h, w = (int(v) for v in grid[0])
    m, p, tp = video_processor.merge_size, video_processor.patch_size, video_processor.temporal_patch_size
    x = pixel_values.reshape(t, h // m, w // m, m, m, 3, tp, p, p)
    x = x.permute(0, 6, 1, 3, 7, 2, 4, 8, 5).reshape(t * tp, h * p, w * p, 3).numpy()
    x = x * np.asarray(video_processor.image_std) + np.asarray(video_processor.image_mean)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def test_labels_follow_the_drawn_markers_and_objects(tiny, tmp_path):
    vp = tiny.processor.video_processor
    # clip 19: five small objects, one of them blinking, none changing colour (whose blends have no single name)
    items = labelled_clip(19, vp, CONFIG, np.random.default_rng(3), tmp_path, variants=3)
    classes = label_classes()
    checked = 0  # object tokens whose colour label was checked against their pixels, over the three variants
    for video, labels in items:
        frames = _frames_from_patches(video.pixel_values_videos, video.video_grid_thw, vp)
        groups, rows, cols = len(frames) // TEMPORAL_PATCH, frames.shape[1] // MERGED_PX, frames.shape[2] // MERGED_PX
        digit = labels["digit"].reshape(groups, rows, cols).numpy()
        colour = labels["colour"].reshape(groups, rows, cols).numpy()
        # marker cores are pure red (255, 0, 0); the palette's red is (220, 30, 30)
        red = (frames[..., 0] >= 245) & (frames[..., 1] <= 15) & (frames[..., 2] <= 15)
        cells = red.reshape(groups, TEMPORAL_PATCH, rows, MERGED_PX, cols, MERGED_PX).any(axis=(1, 3, 5))
        assert digit.any() and (cells[digit > 0]).all(), "a token labelled with an ID shows no marker pixels"
        # a marker's text may reach into a neighbouring token, but markers are not drawn where no ID is labelled
        assert (cells & (digit == 0)).sum() <= 2 * (digit > 0).sum()
        # an object token's colour label is the colour most of its object pixels have (both frames of the tube)
        from stvgr1_edge.synth import PALETTE

        palette = np.asarray(list(PALETTE.values()), np.float64)
        for g, r, c in zip(*np.nonzero(colour > 0)):
            name = classes["colour"][colour[g, r, c]]
            if name == "dark" or cells[g, r, c]:
                continue  # marker edges blend red into the object's colour
            patch = frames[
                TEMPORAL_PATCH * g : TEMPORAL_PATCH * (g + 1),
                r * MERGED_PX : (r + 1) * MERGED_PX,
                c * MERGED_PX : (c + 1) * MERGED_PX,
            ]
            px = patch.reshape(-1, 3).astype(np.float64)
            dist = ((px[:, None, :] - palette[None]) ** 2).sum(-1)
            near = dist.min(axis=1) < 40**2
            if near.sum() < 30:
                continue
            votes = np.bincount(dist[near].argmin(axis=1), minlength=len(palette))
            assert list(PALETTE)[int(votes.argmax())] == name
            checked += 1
        for name in ("colour", "shape", "size", "event"):  # object labels do not depend on the IDs drawn
            assert torch.equal(labels[name], items[0][1][name])
    assert checked >= 3  # tokens a marker does not touch (how many depends on the glyphs drawn)


def test_a_clip_without_extra_markers_labels_only_its_objects_ids(tiny, tmp_path):
    from dataclasses import replace

    from stvgr1_edge.synth import SynthConfig, generate_clip

    # IDs 1..N in order of appearance and no random extra markers: the only digits are the objects' own
    config = replace(CONFIG, extra_markers_per_frame=0, shuffle_ids_prob=0.0, offset_ids_prob=0.0)
    ((_, labels),) = labelled_clip(19, tiny.processor.video_processor, config, np.random.default_rng(3), tmp_path)
    clip = generate_clip(19, SynthConfig(width=config.width, height=config.height, seconds=config.seconds))
    shown = {label_classes()["digit"][k] for k in labels["digit"].unique().tolist() if k > 0}
    assert shown and shown <= {str(i) for i in range(1, len(clip.objects) + 1)}


def test_small_scenes_mark_digits_in_the_frames_style_and_label_them(tmp_path):
    import cv2

    from stvgr1_edge.markers import marker_style
    from stvgr1_edge.synth import SynthConfig
    from stvgr1_edge.synth_render import make_background

    rng = np.random.default_rng(0)
    backgrounds = [make_background(rng, SynthConfig(width=224, height=168))]
    font_scale, thickness = marker_style(168, 224)
    (_, glyph_height), _ = cv2.getTextSize("8", cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    labelled, tallest = 0, 0
    for _ in range(40):
        frames, labels = small_scene(rng, backgrounds, CONFIG)
        assert frames.shape == (2, 56, 56, 3) and labels["digit"].shape == (2, 2)
        assert (labels["event"] == IGNORE).all()
        red = (frames[0, ..., 0] >= 245) & (frames[0, ..., 1] <= 15) & (frames[0, ..., 2] <= 15)
        for r, c in zip(*np.nonzero(labels["digit"])):
            labelled += 1
            both = (frames[..., 0] >= 245) & (frames[..., 1] <= 15) & (frames[..., 2] <= 15)
            assert both[:, r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28].any()
        rows = np.nonzero(red.any(axis=1))[0]
        if len(rows):
            tallest = max(tallest, rows.max() - rows.min() + 1)
    assert labelled >= 20
    # digits as tall as the 224x168 frame's markers, not the crop's (a 56-pixel frame's are ~3 px tall)
    assert tallest >= glyph_height - 1


def test_glyph_crops_are_labelled_by_the_marker_they_show():
    from stvgr1_edge.synth import SynthConfig
    from stvgr1_edge.synth_render import make_background

    rng = np.random.default_rng(1)
    backgrounds = [make_background(rng, SynthConfig(width=224, height=168))]
    seen = set()
    for _ in range(200):
        frames, labels = glyph_crop(rng, backgrounds, CONFIG)
        assert frames.shape == (TEMPORAL_PATCH, MERGED_PX, MERGED_PX, 3) and labels["digit"].shape == (1, 1)
        assert all((labels[k] == IGNORE).all() for k in ("colour", "shape", "size", "event", *CHANGE_HEADS))
        red = (frames[..., 0] >= 245) & (frames[..., 1] <= 15) & (frames[..., 2] <= 15)
        digit = int(labels["digit"][0, 0])
        # a marker's centre lies in the crop, so some of its red strokes do; an unmarked crop has none
        assert red.any(axis=(1, 2)).all() == (digit > 0) and red.any() == (digit > 0)
        seen.add(digit)
    assert {0, *range(1, 10)} <= seen and any(d >= 10 for d in seen)


def test_tensors_are_the_grounders(tiny):
    from stvgr1_edge.clip import PromptedClip
    from stvgr1_edge.grounding import GroundingInputs

    frames = np.random.default_rng(0).integers(0, 256, (12, 168, 224, 3)).astype(np.uint8)
    clip = PromptedClip(frames, tuple(range(12)), 2.0, 168, 224, 10.0, 60)
    ref = GroundingInputs(tiny.processor).prepare_video(clip)
    ours = video_tensors(frames, 2.0, tiny.processor.video_processor)
    assert torch.equal(ours.pixel_values_videos, ref.pixel_values_videos)
    assert torch.equal(ours.video_grid_thw, ref.video_grid_thw)
    assert torch.equal(ours.second_per_grid_ts.float(), ref.second_per_grid_ts.float())


def test_pretraining_changes_the_vision_tower_only(tiny, tmp_path):
    import dataclasses

    from transformers import Qwen2_5_VLForConditionalGeneration

    report = pretrain_vision(tiny.folder, tmp_path / "out", dataclasses.replace(CONFIG, state_weight=1.0))
    assert [h["phase"] for h in report["history"]] == ["glyph", "glyph", "scene", "scene", "clip", "clip"]
    assert report["final"]["step"] == 6 and 0.0 <= report["final"]["digit_acc"] <= 1.0
    assert 0.0 <= report["final"]["colour_balanced_acc"] <= 1.0
    # the state head is scored where it has labels (scenes and clips), never on digit-only glyph crops
    assert all("state_r2_radius" not in h for h in report["history"][:2])
    assert all(np.isfinite(h["state_r2_radius"]) and h["state_r2_radius"] <= 1 for h in report["history"][2:])
    before = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny.folder).state_dict()
    after = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.visual.") for k in changed), sorted(changed)[:5]
    assert any(k.startswith("model.visual.merger.") for k in changed)


def test_frozen_tower_pretraining_trains_the_heads_only(tiny, tmp_path, monkeypatch):
    """``--freeze-tower`` (the read-out baseline): the optimizer holds exactly the heads' weights, and the saved
    model is the loaded one, weight for weight."""
    import dataclasses

    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge_train.recipes.nano.pretrain_vision import TokenProbe

    optimized = []
    adamw = torch.optim.AdamW

    def recording_adamw(params, **kwargs):
        optimized.extend(params)
        return adamw(optimized, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", recording_adamw)
    config = dataclasses.replace(CONFIG, train_tower=False)
    report = pretrain_vision(tiny.folder, tmp_path / "frozen", config)
    assert report["final"]["step"] == 6
    hidden = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny.folder).config.text_config.hidden_size
    heads = TokenProbe.build(hidden)
    assert sorted(p.shape for p in optimized) == sorted(p.shape for p in heads.parameters())
    before = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny.folder).state_dict()
    after = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "frozen").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_event_lm_stage_trains_the_language_model_only_and_scores_held_out_clips(tiny, tmp_path):
    """The event stage changes language-model weights only (the tower and the head stay as loaded), and its report
    holds one held-out evaluation per ``eval_every`` clips with rates in [0, 1]."""
    import dataclasses

    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge_train.recipes.nano.pretrain_event_lm import EventLMConfig, pretrain_event_lm

    config = EventLMConfig(clips=2, eval_clips=1, eval_every=1)
    report = pretrain_event_lm(tiny.folder, tmp_path / "event_lm", config)
    assert [h["step"] for h in report["history"]] == [1, 2]
    assert all(0.0 <= h[k] <= 1.0 for h in report["history"] for k in ("event_balanced_acc", "recall"))
    assert all("event_tube_balanced_acc" in h for h in report["history"])
    before = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny.folder).state_dict()
    after = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "event_lm").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.language_model.") for k in changed), sorted(changed)[:5]
    assert any(".layers." in k for k in changed)
    # per-tube balance weighs the same clips' tokens otherwise, so the same steps reach other weights
    pretrain_event_lm(tiny.folder, tmp_path / "per_tube", dataclasses.replace(config, balance_per_tube=True))
    per_tube = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "per_tube").state_dict()
    assert any(not torch.equal(after[k], per_tube[k]) for k in changed)
    # with train_tower the tower's weights change as well
    tower = pretrain_event_lm(
        tiny.folder, tmp_path / "tower", EventLMConfig(clips=2, eval_clips=1, eval_every=2, train_tower=True)
    )
    assert [h["step"] for h in tower["history"]] == [2]
    after = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "tower").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("model.visual.") for k in changed) and any(".language_model." in k for k in changed)


def test_tube_balanced_accuracy_gives_a_time_only_rule_one_half():
    """Events sit mid-clip: "positive in the middle tubes" scores well on clip-wide balanced accuracy but exactly 0.5
    within tubes; a rule that sees the event scores 1; tubes holding one class do not count."""
    from stvgr1_edge_train.recipes.nano.probe_lm import tube_balanced_accuracy

    tube = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3])
    truth = np.array([0, 0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0], bool)
    middle = (tube == 1) | (tube == 2)
    clip_wide = (middle[truth].mean() + 1 - middle[~truth].mean()) / 2
    assert clip_wide > 0.75
    assert tube_balanced_accuracy(middle, truth, tube) == pytest.approx(0.5)
    assert tube_balanced_accuracy(truth, truth, tube) == pytest.approx(1.0)
    # tube 1 right (balanced 1), tube 2 all negative (balanced 0.5): weighted by their 4 tokens each
    mixed = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1], bool)
    assert tube_balanced_accuracy(mixed, truth, tube) == pytest.approx(0.75)


def test_balanced_weights_balance_each_group_and_cap_the_positives():
    from stvgr1_edge_train.recipes.nano.pretrain_event_lm import balanced_weights

    active = torch.tensor([1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1]).bool()
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2])
    weight = balanced_weights(active, groups, max_pos_weight=4.0)
    for g in range(3):
        pos, neg = active & (groups == g), ~active & (groups == g)
        want = min(float(neg.sum()) / float(pos.sum()), 4.0)
        assert torch.allclose(weight[pos], torch.full((int(pos.sum()),), want))
        assert torch.all(weight[neg] == 1.0)
    assert weight[13] == 4.0  # 6 negatives / 1 positive, capped
    # one group over the clip: every positive weighs all negatives / all positives
    clip_wide = balanced_weights(active, torch.zeros_like(groups), max_pos_weight=20.0)
    assert torch.all(clip_wide[active] == 10.0 / 4.0)


def test_event_weight_weighs_the_event_classes_against_none():
    import dataclasses

    import torch.nn.functional as F

    from stvgr1_edge_train.recipes.nano.pretrain_vision import TokenProbe, _losses_and_hits

    torch.manual_seed(0)
    probe = TokenProbe.build(16)
    features = torch.randn(40, 16)
    labels = {name: torch.randint(0, len(names), (40,)) for name, names in label_classes().items()}
    labels["event"][:30] = 0  # mostly "none", as in the clips
    plain, _ = _losses_and_hits(probe, features, labels, CONFIG)
    weighted, _ = _losses_and_hits(probe, features, labels, dataclasses.replace(CONFIG, event_weight=5.0))
    weight = torch.full((len(label_classes()["event"]),), 5.0)
    weight[0] = 1.0
    with torch.no_grad():
        expected = F.cross_entropy(probe["event"](features), labels["event"], weight=weight)
        assert torch.allclose(weighted["event"], expected) and not torch.allclose(plain["event"], expected)
        assert all(torch.equal(weighted[k], plain[k]) for k in plain if k != "event")


def test_change_labels_name_the_move_the_size_the_turn_and_the_colour_change():
    from stvgr1_edge_train.recipes.nano.pretrain_vision import change_labels

    classes = label_classes()

    def named(first, second, shape):
        return {k: (classes[k][v] if v != IGNORE else None) for k, v in change_labels(first, second, shape).items()}

    red, dark = (220, 30, 30), (35, 35, 35)
    assert named(((50, 50), 10, 0, red), ((65, 46), 11, 5, red), "square") == {
        "dx": "far_right",
        "dy": "up",
        "scale": "grows",
        "turn": "same",
        "recolour": "same",
    }
    # 85 degrees turns a square by 5 (its symmetry is 90); 30 turns a star (symmetry 72) by 30
    assert named(((50, 50), 10, 0, red), ((50, 50), 10, 85, red), "square")["turn"] == "same"
    assert named(((50, 50), 10, 0, red), ((49, 62), 10, 30, red), "star") == {
        "dx": "still",
        "dy": "far_down",
        "scale": "same",
        "turn": "turns",
        "recolour": "same",
    }
    assert named(((50, 50), 10, 0, red), ((42, 50), 8, 40, dark), "circle") == {
        "dx": "left",
        "dy": "still",
        "scale": "shrinks",
        "turn": None,
        "recolour": "changes",
    }


def test_clip_change_labels_follow_the_objects_and_their_events():
    """Outside its event an object keeps its size and colour, so those tokens are "same" for both; a blink shows as
    "changes" on most of its event tokens, a spin as "turns", a stop as still on both axes."""
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.synth import SynthConfig, generate_clip
    from stvgr1_edge_train.recipes.nano.pretrain_vision import object_token_labels

    classes = label_classes()
    found = {}
    for seed in range(12):
        clip = generate_clip(seed, SynthConfig(width=224, height=168, seconds=6))
        sampled = plan_sampling(clip.num_frames, clip.config.fps, 168, 224).indices
        labels = object_token_labels(clip, sampled, CONFIG.min_object_pixels, CONFIG.min_object_share)
        event, on_object = labels["event"], labels["shape"] > 0
        assert ((labels["dx"] > 0) <= (on_object | (labels["dx"] == IGNORE))).all()
        for name in ("scale", "recolour"):
            outside = on_object & (event == 0) & (labels[name] != IGNORE)
            found.setdefault(name, []).extend(labels[name][outside].tolist())
        for event_name, head, value in (
            ("blinks", "recolour", "changes"),
            ("spins", "turn", "turns"),
            ("stops", "dx", "still"),
            ("stops", "dy", "still"),
        ):
            sel = (event == classes["event"].index(event_name)) & (labels[head] != IGNORE)
            found.setdefault((event_name, head), []).extend((labels[head][sel] == classes[head].index(value)).tolist())
    # outside its event (before, after, or without one) an object keeps its size and colour within a tube
    assert len(found["scale"]) > 100 and set(found["scale"]) == {classes["scale"].index("same")}
    assert set(found["recolour"]) == {classes["recolour"].index("same")}
    for key in (("blinks", "recolour"), ("spins", "turn"), ("stops", "dx"), ("stops", "dy")):
        assert len(found[key]) >= 10 and np.mean(found[key]) > 0.7, (key, len(found[key]), np.mean(found[key]))


def test_scene_changes_give_the_change_heads_every_class():
    import dataclasses

    from stvgr1_edge.synth import SynthConfig
    from stvgr1_edge.synth_render import make_background

    classes = label_classes()
    rng = np.random.default_rng(4)
    backgrounds = [make_background(rng, SynthConfig(width=224, height=168))]
    seen = {False: {h: set() for h in CHANGE_HEADS}, True: {h: set() for h in CHANGE_HEADS}}
    for changes in (False, True):
        config = dataclasses.replace(CONFIG, scene_changes=changes)
        for _ in range(150):
            _, labels = small_scene(rng, backgrounds, config)
            for h in CHANGE_HEADS:
                seen[changes][h] |= {classes[h][v] for v in labels[h].ravel().tolist() if v > 0}
    # plain scenes: small moves, small turns, no size or colour change; changing scenes: every class
    assert seen[False]["scale"] == {"same"} and seen[False]["recolour"] == {"same"}
    assert not {"far_left", "far_right"} & seen[False]["dx"]
    for h in CHANGE_HEADS:
        assert seen[True][h] == set(classes[h][1:]), (h, seen[True][h])


def test_change_heads_train_only_with_a_change_weight():
    import dataclasses

    import torch.nn.functional as F

    from stvgr1_edge_train.recipes.nano.pretrain_vision import TokenProbe, _losses_and_hits

    torch.manual_seed(0)
    probe = TokenProbe.build(16)
    features = torch.randn(40, 16)
    labels = {name: torch.randint(0, len(names), (40,)) for name, names in label_classes().items()}
    off, _ = _losses_and_hits(probe, features, labels, CONFIG)
    assert not set(CHANGE_HEADS) & set(off)
    on, hits = _losses_and_hits(probe, features, labels, dataclasses.replace(CONFIG, change_weight=2.0))
    assert set(CHANGE_HEADS) <= set(on) and set(CHANGE_HEADS) <= set(hits)
    weight = torch.tensor([5.0 if n == "changes" else 1.0 for n in label_classes()["recolour"]])
    with torch.no_grad():
        expected = 2.0 * F.cross_entropy(probe["recolour"](features), labels["recolour"], weight=weight)
        assert torch.allclose(on["recolour"], expected)
        assert all(torch.equal(on[k], off[k]) for k in off)


def test_state_labels_hold_each_objects_offset_radius_turn_and_colour_in_both_frames():
    """A square growing and turning, a circle beside it: each owned token's state row is the object's state in
    each frame, relative to that token; a circle has no turn, floor tokens and slivers no state at all."""
    from stvgr1_edge_train.recipes.nano.pretrain_vision import STATE_NAMES, tube_object_labels

    maps = [np.zeros((56, 84), np.uint8) for _ in range(2)]
    maps[0][0:28, 0:28], maps[1][0:28, 0:30] = 1, 1  # the square: token (0, 0) (and a sliver of (0, 1) in frame 1)
    maps[0][28:56, 56:84], maps[1][28:56, 56:84] = 2, 2  # the circle: token (1, 2)
    states = {
        (1, 0): ((14.0, 14.0), 10.0, 0.0, (200, 0, 0)),
        (1, 1): ((15.0, 13.0), 20.0, 45.0, (200, 0, 0)),
        (2, 0): ((70.0, 42.0), 14.0, 30.0, (0, 0, 255)),
        (2, 1): ((70.0, 42.0), 14.0, 60.0, (0, 0, 255)),
    }
    shapes = {1: "square", 2: "circle"}
    labels = tube_object_labels(
        maps,
        lambda k, j: ("red", shapes[k], "small", None),
        min_object_pixels=30,
        min_object_share=0.2,
        state=lambda k, j: states[k, j],
    )
    state, n = labels["state"], len(STATE_NAMES)
    assert state.shape == (2, 3, 2 * n)
    square, circle = state[0, 0], state[1, 2]
    np.testing.assert_allclose(square[:2], [0.0, 0.0], atol=1e-6)  # centred on its token in frame 0
    np.testing.assert_allclose(square[n : n + 2], [1 / 28, -1 / 28], atol=1e-6)  # moved 1 px right, 1 px up
    np.testing.assert_allclose([square[2], square[n + 2]], [0.0, np.log(2.0)], atol=1e-6)  # radius 10 -> 20
    # a square's 45-degree turn is half of its 90-degree symmetry: folded, the turn's cosine goes from 1 to -1
    np.testing.assert_allclose([square[4], square[n + 4]], [1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(square[5:8], [200 / 255 - 0.5, -0.5, -0.5], atol=1e-6)
    np.testing.assert_allclose(circle[:2], [0.0, 0.0], atol=1e-6)
    assert np.isnan(circle[[3, 4, n + 3, n + 4]]).all() and not np.isnan(np.delete(circle, [3, 4, n + 3, n + 4])).any()
    floor = np.ones((2, 3), bool)
    floor[0, 0] = floor[1, 2] = False
    assert np.isnan(state[floor]).all()  # the floor and the square's 2-pixel sliver in token (0, 1)
    without = tube_object_labels(maps, lambda k, j: ("red", shapes[k], "small", None), 30, 0.2)
    assert np.isnan(without["state"]).all()


def test_the_state_loss_skips_unlabelled_entries_and_r2_scores_against_the_mean():
    import dataclasses

    from stvgr1_edge_train.recipes.nano.pretrain_vision import (
        STATE_NAMES,
        TokenProbe,
        _losses_and_hits,
        state_loss_and_sums,
        state_r2,
    )

    torch.manual_seed(0)
    width = TEMPORAL_PATCH * len(STATE_NAMES)
    target = torch.randn(200, width)
    target[::3] = float("nan")  # tokens without an object
    target[:, [3, 4, 11, 12]] = float("nan")  # circles everywhere: no turn
    exact_loss, exact = state_loss_and_sums(torch.nan_to_num(target), target)
    assert exact_loss.item() == 0.0
    scores = state_r2(*exact)
    assert scores["state_r2_radius"] == pytest.approx(1.0) and np.isnan(scores["state_r2_turn"])
    labelled = ~torch.isnan(target[:, 0])
    mean = torch.nan_to_num(target[labelled].nanmean(0)).expand_as(target)
    assert state_r2(*state_loss_and_sums(mean, target)[1])["state_r2_colour"] == pytest.approx(0.0, abs=1e-6)
    # NaN entries cost nothing: whatever is predicted there, the loss is the same
    noise = torch.randn_like(target)
    wild = torch.where(torch.isnan(target), 1e3 * noise, noise)
    assert torch.equal(state_loss_and_sums(wild, target)[0], state_loss_and_sums(noise, target)[0])
    assert state_loss_and_sums(noise, torch.full_like(target, float("nan"))) == (None, None)
    # the state head trains only with a state weight, and then at that weight
    probe = TokenProbe.build(16)
    features = torch.randn(200, 16)
    labels = {name: torch.randint(0, len(names), (200,)) for name, names in label_classes().items()}
    labels["state"] = target
    off, _ = _losses_and_hits(probe, features, labels, CONFIG)
    on, hits = _losses_and_hits(probe, features, labels, dataclasses.replace(CONFIG, state_weight=3.0))
    assert "state" not in off and "state" in hits
    with torch.no_grad():
        assert torch.allclose(on["state"], 3.0 * state_loss_and_sums(probe["state"](features), target)[0])


def test_sft_on_frozen_vision_features_has_the_same_loss(tmp_path):
    from _train_helpers import write_mixed_synthetic
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.tiny import save_tiny_model
    from stvgr1_edge_train.cache import load_cached_dataset
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.prepare import prepare_cache
    from stvgr1_edge_train.sft import FrozenVisionFeatures, SFTCollator, SFTRunConfig, run_sft

    annotations = write_mixed_synthetic(tmp_path / "data", num_small=2, num_wide=1)
    prepare_cache(annotations, tmp_path / "cache")
    folder = save_tiny_model(tmp_path / "tiny")
    processor, _ = load_processor(str(folder))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder).eval()
    rows = list(load_cached_dataset(tmp_path / "cache"))
    features = FrozenVisionFeatures(model)
    with torch.no_grad():
        from_pixels = model(**SFTCollator(processor, describe_objects=True)(rows)).loss
        batch = SFTCollator(processor, describe_objects=True, vision_features=features)(rows)
        assert "pixel_values_videos" not in batch
        from_features = model(**batch).loss
    assert torch.allclose(from_pixels, from_features, atol=1e-5)

    trainer = run_sft(
        SFTRunConfig(
            data=str(tmp_path / "cache"),
            model=str(folder),
            output_dir=str(tmp_path / "sft"),
            max_steps=2,
            per_device_train_batch_size=2,
            gradient_checkpointing=False,
            save_steps=100,
            freeze_vision=True,
            learning_rate=1e-3,
        )
    )
    assert trainer.state.global_step == 2
    trained = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "sft").state_dict()
    start = model.state_dict()
    assert all(torch.equal(trained[k], start[k]) for k in start if k.startswith("model.visual."))
    assert any(not torch.equal(trained[k], start[k]) for k in start if k.startswith("model.language_model."))


def test_recipe_sft_settings_are_sft_fields_and_a_misspelt_key_stops_the_run(tmp_path):
    from stvgr1_edge_train.recipes.nano.train_nano import RECIPE_DIR, sft_settings

    settings = sft_settings(RECIPE_DIR / "sft.yaml")
    assert settings["mark_target"] is True and settings["time_weight"] == 3.0 and settings["learning_rate"] == 5e-4
    typo = tmp_path / "typo.yaml"
    typo.write_text("event_timline: true\n")  # was dropped without a word before
    with pytest.raises(SystemExit, match="unknown SFT setting.*event_timline"):
        sft_settings(typo)


def test_recipe_sft_passes_its_options_over_the_yaml_settings(tmp_path, monkeypatch):
    import stvgr1_edge_train.sft as sft
    from stvgr1_edge_train.recipes.nano.train_nano import main

    runs = []
    monkeypatch.setattr(sft, "run_sft", runs.append)
    argv = ["sft", "--work", str(tmp_path), "--from", "START", "--data", "a,b", "--max-steps", "3"]
    main(argv)
    main([*argv, "--attention-weight", "1.5", "--train-tower", "--lr", "1e-4"])
    plain, attended = runs
    assert plain.attention_weight == 0.0 and plain.freeze_vision is True and plain.learning_rate == 5e-4
    assert (attended.attention_weight, attended.freeze_vision, attended.learning_rate) == (1.5, False, 1e-4)
    assert attended.max_steps == 3 and attended.model == "START"
    assert attended.data == f"{tmp_path / 'a'},{tmp_path / 'b'}"


def test_recipe_stream_passes_its_options_over_the_stage_defaults(tmp_path, monkeypatch):
    import stvgr1_edge_train.recipes.nano.stream_sft as stream
    from stvgr1_edge_train.recipes.nano.train_nano import main

    runs = []
    monkeypatch.setattr(stream, "stream_sft", lambda start, out, config: runs.append((start, out, config)))
    main(["stream", "--work", str(tmp_path)])
    main(
        [
            "stream",
            "--work",
            str(tmp_path),
            "--from",
            "START",
            "--output",
            "OUT",
            "--max-steps",
            "3",
            "--lr",
            "1e-4",
            "--attention-weight",
            "0",
            "--attention-span",
        ]
    )
    (start, out, plain), (start2, out2, changed) = runs
    assert (start, out) == (tmp_path / "sft", tmp_path / "stream") and plain == stream.StreamSFTConfig()
    assert (start2, out2) == ("START", "OUT")
    assert (changed.steps, changed.learning_rate, changed.attention_weight) == (3, 1e-4, 0.0)
    assert changed.attention_span is True and plain.attention_span is False
    assert changed.formats == plain.formats and changed.train_tower is True


def test_ridge_probe_finds_a_planted_signal_and_balanced_finds_the_rare_class():
    from stvgr1_edge_train.recipes.nano.probe_lm import ridge_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16))
    train = np.arange(3000) < 1800
    six = (x @ rng.normal(size=(16, 6))).argmax(1)  # 6 classes, linearly separable
    assert (ridge_probe(x, six, train) == six)[~train].mean() > 0.8
    assert (ridge_probe(x, rng.permutation(six), train) == six)[~train].mean() < 0.3  # no signal: near chance
    rare = x[:, 2] > 1.6  # ~5% of the rows
    plain, balanced = ridge_probe(x, rare, train), ridge_probe(x, rare, train, balanced=True)
    assert plain[~train & rare].mean() < 0.5 < balanced[~train & rare].mean()
    assert balanced[~train & ~rare].mean() < 0.25


def test_probe_states_start_with_the_towers_merged_tokens(tiny, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.prompt import grounding_prompt
    from stvgr1_edge_train.recipes.nano.probe_lm import video_token_states
    from stvgr1_edge_train.video_inputs import ClipProcessor, collate_videos

    vp = tiny.processor.video_processor
    ((video, _),) = labelled_clip(19, vp, CONFIG, np.random.default_rng(3), tmp_path)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny.folder, dtype=torch.float32).eval()
    text = ClipProcessor(tiny.processor).prepare_text(
        grounding_prompt("the red circle jumps"), video.num_visual_tokens(vp.merge_size)
    )
    video_token_id = tiny.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    states = video_token_states(model, text["input_ids"], video, video_token_id)
    assert states.shape == (
        model.config.text_config.num_hidden_layers + 1,
        video.num_visual_tokens(vp.merge_size),
        model.config.text_config.hidden_size,
    )
    batch = collate_videos([video])
    with torch.no_grad():
        merged = model.model.get_video_features(
            batch["pixel_values_videos"], batch["video_grid_thw"], return_dict=True
        ).pooler_output[0]
    np.testing.assert_allclose(states[0], merged.numpy(), atol=1e-5)
    assert not np.allclose(states[1], states[0])  # the LM's first layer changed them


def test_grpo_curves_follow_the_log_and_skip_entries_without_a_reward(tmp_path):
    import json

    from stvgr1_edge_train.recipes.nano.train_nano import write_grpo_curves

    log = []
    for step in range(1, 13):
        log.append(
            {
                "step": step,
                "reward": 1.0 + 0.1 * step,
                "reward_std": 0.5,
                "kl": 0.001 * step,
                "rewards/temporal_iou_reward/mean": 0.05 * step,
                "rewards/id_match_reward/mean": 0.5,
                "rewards/format_reward/mean": 1.0,
            }
        )
    log.insert(5, {"step": 5, "loss": 0.1})  # a loss-only entry (no generation logged) is not a point
    log.append({"train_runtime": 10.0, "step": 12})  # the trainer's closing summary neither
    path = tmp_path / "curves.json"
    write_grpo_curves(log, path, smooth=4)
    curves = json.loads(path.read_text())
    assert curves["step"] == list(range(1, 13))
    assert curves["tIoU reward"] == pytest.approx([0.05 * s for s in range(1, 13)])
    assert curves["KL"][-1] == pytest.approx(0.012) and curves["ID reward"] == [0.5] * 12
    assert path.with_suffix(".png").stat().st_size > 10_000


def test_event_auc_counts_ties_half_and_names_every_event():
    from stvgr1_edge.synth import EVENTS
    from stvgr1_edge_train.recipes.nano.probe_events import auc, class_aucs

    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0]), np.array([2.0, 3.0])) == 0.0
    assert auc(np.array([1.0, 3.0]), np.array([1.0, 2.0])) == pytest.approx(0.625)  # 2.5 of 4 pairs
    assert np.isnan(auc(np.array([]), np.array([1.0])))
    label = np.array([0, 0, 1, 1, 2, -1])
    score = np.array([0.0, 1.0, 2.0, 3.0, 0.5, 9.0])  # the left-out (-1) row would win every pair
    scores = class_aucs(score, label)
    assert set(scores) == {"all", *EVENTS}
    assert scores[EVENTS[0]] == 1.0 and scores[EVENTS[1]] == 0.5 and scores["all"] == pytest.approx(5 / 6)


def test_true_state_rows_label_each_object_tube_by_its_event():
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.synth import EVENTS, SynthConfig, generate_clip
    from stvgr1_edge_train.recipes.nano.probe_events import true_state_rows

    for seed in range(3):
        clip = generate_clip(seed, SynthConfig(width=224, height=168, seconds=6))
        sampled = plan_sampling(clip.num_frames, clip.config.fps, 168, 224).indices
        labels, tube, context = true_state_rows(clip, sampled)
        pairs = [tuple(sampled[g : g + 2]) for g in range(0, len(sampled), 2)]
        want = []
        for obj in clip.objects:
            for a, b in pairs:
                if obj.present[a] and obj.present[b]:
                    e = obj.event
                    want.append(
                        0 if e is None else EVENTS.index(e.name) + 1 if e.start_frame <= b and a <= e.end_frame else -1
                    )
        assert labels.tolist() == want
        # a state is centre (2), radius, folded rotation (sin, cos) and colour (3); a tube row holds both frames' and
        # their difference, a context row this tube's, its neighbours', the first tube's and the change since then
        assert tube.shape == (len(want), 24) and context.shape == (len(want), 5 * 24)
        assert np.allclose(tube[:, 16:], tube[:, 8:16] - tube[:, :8]) and np.array_equal(context[:, :24], tube)
        assert np.allclose(context[:, 96:], tube - context[:, 72:96])
        assert (labels > 0).any()  # the target does its event


def test_other_clip_formats_label_the_grid_the_model_sees_and_unseen_sizes_are_refused(tiny, tmp_path):
    """``--width/--height/--seconds``: a 28-multiple size that §4 keeps (308x252, what it makes of synth's default
    320x240) gets one label per token of that grid; a size §4 would resize is refused with the size to use."""
    from dataclasses import replace

    config = replace(CONFIG, width=308, height=252, seconds=8.0)
    assert config.clip_format_error() is None
    ((video, labels),) = labelled_clip(19, tiny.processor.video_processor, config, np.random.default_rng(3), tmp_path)
    t, h, w = (int(v) for v in video.video_grid_thw[0])
    assert (h * 14, w * 14) == (252, 308)
    assert all(v.shape[0] == t * (h // 2) * (w // 2) == 8 * 9 * 11 for v in labels.values())  # one row per token
    problem = replace(CONFIG, width=320, height=240, seconds=8.0).clip_format_error()
    assert problem is not None and "--width 308 --height 252" in problem


def test_the_pretraining_command_answers_bad_input_in_one_line(tiny, tmp_path, capsys):
    from stvgr1_edge_train.recipes.nano.pretrain_vision import main

    for argv, words in [
        ([tiny.folder, str(tmp_path / "a"), "--width", "320", "--height", "240"], "308x252"),
        ([tiny.folder, str(tmp_path / "b"), "--train-seed", str(VisionPretrainConfig.seed + 2)], "validation root"),
        ([str(tmp_path / "missing"), str(tmp_path / "c")], "not a model folder"),
        ([tiny.folder, str(tmp_path / "d"), "--seconds", "0.5"], "--seconds of at least"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and "\n" not in err and words in err, err
        assert not (tmp_path / argv[1]).exists()


def test_a_training_seed_draws_other_clips_and_keeps_the_validation_clips(tiny, tmp_path, monkeypatch):
    from dataclasses import replace

    from stvgr1_edge_train.recipes.nano import pretrain_vision as stage

    roots: dict[str, list[int]] = {"train": [], "all": []}
    clip_stream_init, labelled = stage.ClipStream.__init__, stage.labelled_clips

    def recording_init(self, root_seed, *args):
        roots["train"].append(root_seed)
        clip_stream_init(self, root_seed, *args)

    def recording_labelled(root_seed, *args, **kwargs):
        roots["all"].append(root_seed)
        return labelled(root_seed, *args, **kwargs)

    monkeypatch.setattr(stage.ClipStream, "__init__", recording_init)
    monkeypatch.setattr(stage, "labelled_clips", recording_labelled)
    config = replace(CONFIG, glyph_steps=0, scene_steps=0, steps=1, train_seed=12_345)
    stage.pretrain_vision(tiny.folder, tmp_path / "out", config)
    assert roots["train"] == [12_345]
    assert roots["all"][0] == config.seed + 1  # the validation clips: the same whatever the training seed
    assert replace(config, train_seed=config.seed + 1).train_seed_error() is not None


def test_the_event_probe_reads_models_on_the_clip_format_asked_for(tiny, tmp_path, capsys):
    """``probe_events MODEL --width 308 --height 252 --seconds 8``: the probe's clips are of that grid, with as many
    video tokens in the prompt as the tower gives; a size the model never sees unresized is refused in one line."""
    from stvgr1_edge_train.recipes.nano.probe_events import main
    from stvgr1_edge_train.recipes.nano.probe_lm import PromptedLabelledClips

    config = VisionPretrainConfig(width=308, height=252, seconds=8.0)
    video, labels, input_ids = PromptedLabelledClips(tiny.processor, tmp_path, config)(33_000, 0)
    assert [int(v) for v in video.video_grid_thw[0]] == [8, 18, 22]
    video_pad = tiny.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert int((torch.as_tensor(input_ids) == video_pad).sum()) == labels["event"].numel() == 8 * 9 * 11
    with pytest.raises(SystemExit) as exit_info:
        main([str(tiny.folder), "--width", "320", "--height", "240"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "308x252" in err


def test_the_event_probe_pools_each_objects_own_tokens(tiny, tmp_path):
    """The object read-out averages the tokens the vision stage labels for one object: every labelled token has an
    owner, and one owner's tokens in a tube carry one colour, shape, size and event."""
    from stvgr1_edge_train.recipes.nano.probe_events import probe_clip, token_object_ids

    ((_, labels),) = labelled_clip(19, tiny.processor.video_processor, CONFIG, np.random.default_rng(3), tmp_path)
    owners, has_event = token_object_ids(*probe_clip(19, CONFIG), CONFIG.min_object_pixels)
    owners = owners.reshape(-1)
    labelled = labels["shape"].numpy() > 0
    assert labelled.any() and (owners[labelled] > 0).all()
    assert set(owners[owners > 0].tolist()) <= set(has_event)
    assert len(owners) == labels["shape"].numel() == 6 * 6 * 8  # 224x168 6 s: 6 tubes of 6 x 8 tokens
    tube = np.arange(len(owners)) // 48
    for t in range(6):
        for k in np.unique(owners[labelled & (tube == t)]):
            where = labelled & (tube == t) & (owners == k)
            for name in ("colour", "shape", "size", "event"):
                assert len(np.unique(labels[name].numpy()[where])) == 1, (t, k, name)


def test_the_context_row_holds_the_tube_its_neighbours_and_the_first_tube():
    from stvgr1_edge_train.recipes.nano.probe_events import object_context

    per_tube = {t: np.full((2, 3), float(t)) for t in (2, 3, 5)}  # 2 layers, 3 features; absent at 4
    row = object_context(per_tube, 3)
    assert row.shape == (2, 15)
    np.testing.assert_array_equal(row[0], [3, 3, 3, 2, 2, 2, 0, 0, 0, 2, 2, 2, 1, 1, 1])
    row = object_context(per_tube, 5)  # no tube 6 either, the first is still tube 2
    np.testing.assert_array_equal(row[1], [5, 5, 5, 0, 0, 0, 0, 0, 0, 2, 2, 2, 3, 3, 3])


def test_the_state_read_out_recovers_a_state_the_tokens_hold_and_not_one_they_lack():
    """``read_states``: pooled tokens that are a linear image of the true tube state give it back (R^2 near 1, the
    context rows those of the true states); tokens of pure noise give R^2 near or below 0."""
    from stvgr1_edge_train.recipes.nano.probe_events import object_context, read_states

    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(24, 40))

    def clips(n: int, signal: bool):
        tubes, keys, truths = [], [], {}
        for c in range(n):
            for k in (1, 2, 3):
                for t in range(6):
                    truth = rng.normal(size=24)
                    pooled = (truth @ mixing if signal else rng.normal(size=40)) + 0.01 * rng.normal(size=40)
                    tubes.append((c, k, t, pooled[None], truth))
                    truths.setdefault((c, k), {})[t] = truth
                    if 1 <= t <= 4:
                        keys.append((c, k, t))
        return (tubes, keys), truths

    (train, _), ((test, truths)) = clips(30, True), clips(10, True)
    train_rows, test_rows, r2 = read_states(train, test, 0)
    assert min(r2.values()) > 0.99, r2
    expected = np.stack([object_context(truths[c, k], t) for c, k, t in test[1]])
    assert test_rows.shape == expected.shape and np.corrcoef(test_rows.ravel(), expected.ravel())[0, 1] > 0.99
    assert len(train_rows) == len(train[1])
    (noise_train, _), (noise_test, _) = clips(30, False), clips(10, False)
    assert max(read_states(noise_train, noise_test, 0)[2].values()) < 0.1


def test_true_tube_states_follow_a_growing_object():
    """The drawing state of each (tube, object) where the object is in both frames: a growing object's radius
    column rises across its event and stays up after it, the others' keep theirs."""
    from stvgr1_edge_train.recipes.nano.probe_events import probe_clip, state_r2, true_tube_states

    config = VisionPretrainConfig()
    for seed in range(200):
        clip, sampled = probe_clip(seed, config)
        if clip.objects[0].event is not None and clip.objects[0].event.name == "grows":
            break
    states = true_tube_states(clip, sampled)
    growing = clip.objects[0].object_id
    radius = [states[t, growing][2] for t in range(6) if (t, growing) in states]
    assert radius[-1] > 1.4 * radius[0] and all(b >= a - 1e-9 for a, b in zip(radius, radius[1:]))
    assert {k for _, k in states} <= {o.object_id for o in clip.objects}
    truth = np.stack(list(states.values()))
    assert state_r2(truth, truth)["radius"] == 1.0
    assert abs(state_r2(np.broadcast_to(truth.mean(0), truth.shape), truth)["colour"]) < 1e-9


def test_validation_reports_each_rare_class_recall_beside_the_plain_accuracy():
    """Plain accuracy of a change head is mostly "same": a head that never answers "turns" scores 0.75 on three
    unturned tokens and one turned token, but its balanced accuracy is 0.5 and its "turns" recall 0."""
    from stvgr1_edge_train.recipes.nano.pretrain_vision import IGNORE, class_hits, recall_scores

    names = label_classes()["turn"]
    same, turns = names.index("same"), names.index("turns")
    target = torch.tensor([same, same, same, turns, IGNORE, 0])
    pred = torch.tensor([same, same, same, same, turns, 0])
    right, n = class_hits(pred, target, len(names))
    assert n.tolist() == [1, 3, 1] and right.tolist() == [1, 3, 0]
    scores = recall_scores("turn", right, n)
    assert scores == {"turn_balanced_acc": 0.5, "turn_recall_same": 1.0, "turn_recall_turns": 0.0}
    assert set(recall_scores("digit", right, n)) == {"digit_balanced_acc"}


def test_still_scenes_change_objects_in_place():
    """With ``scene_still`` every object keeps its centre between the two frames (dx, dy "still"), while turns,
    growth and colour changes still occur; without it, changing scenes move most objects."""
    import dataclasses

    from stvgr1_edge.synth import SynthConfig
    from stvgr1_edge.synth_render import make_background

    classes = label_classes()
    rng = np.random.default_rng(5)
    backgrounds = [make_background(rng, SynthConfig(width=224, height=168))]
    seen = {}
    for still in (False, True):
        config = dataclasses.replace(CONFIG, scene_changes=True, scene_still=still)
        seen[still] = {h: [] for h in CHANGE_HEADS}
        for _ in range(150):
            _, labels = small_scene(rng, backgrounds, config)
            for h in CHANGE_HEADS:
                seen[still][h] += [classes[h][v] for v in labels[h].ravel().tolist() if v > 0]
    assert set(seen[True]["dx"]) == {"still"} and set(seen[True]["dy"]) == {"still"}
    assert {"turns"} <= set(seen[True]["turn"]) and {"grows", "shrinks"} <= set(seen[True]["scale"])
    assert "changes" in seen[True]["recolour"]
    assert np.mean([c != "still" for c in seen[False]["dx"]]) > 0.5
