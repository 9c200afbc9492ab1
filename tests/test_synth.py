"""The synthetic STVG clip generator: determinism, GT consistency, query uniqueness, events, video, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stvgr1_edge.cli import main
from stvgr1_edge.errors import BadInputError
from stvgr1_edge.masks import mask_to_box, rle_to_mask
from stvgr1_edge.synth import (
    BLINK_RGB,
    EVENTS,
    PALETTE,
    SynthConfig,
    clip_annotation,
    clip_key,
    clip_seeds,
    generate_clip,
    render_frames,
    write_synthetic_dataset,
)
from stvgr1_edge.tracks import TrackSet
from stvgr1_edge.video import probe_video, read_frames

CFG = SynthConfig()
NUM_PROPERTY_CLIPS = 24


@pytest.fixture(scope="module")
def clips():
    """Clips of seed 0 and their annotations, generated in memory (no video)."""
    out = []
    for i, s in enumerate(clip_seeds(0, NUM_PROPERTY_CLIPS)):
        clip = generate_clip(s, CFG, clip_key(0, i))
        out.append((clip, clip_annotation(clip, f"videos/{clip.key}.mp4")))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "seed0"
    ann_path = write_synthetic_dataset(out, num=2, seed=0)
    return out, ann_path


def test_same_seed_gives_byte_identical_annotations_and_other_seed_differs(dataset, tmp_path):
    out, ann_path = dataset
    again = write_synthetic_dataset(tmp_path / "again", num=2, seed=0)
    other = write_synthetic_dataset(tmp_path / "other", num=2, seed=1)
    assert ann_path.read_bytes() == again.read_bytes()
    assert ann_path.read_bytes() != other.read_bytes()
    assert sorted(json.loads(other.read_text())) == ["synth_s1_0000", "synth_s1_0001"]


def test_clip_seeds_are_spawned_from_one_seed_sequence():
    seeds = clip_seeds(7, 3)
    expected = [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(7).spawn(3)]
    assert seeds == expected and len(set(seeds)) == 3
    assert clip_seeds(7, 5)[:3] == seeds  # adding clips keeps the earlier ones


def test_hcstvg_fields_and_event_range(clips):
    for clip, ann in clips:
        n = CFG.num_frames
        st, ed = ann["st_frame"], ann["ed_frame"]
        assert ann["img_num"] == n == 80 and ann["img_hw"] == [240, 320]
        assert 0 <= st < ed <= n - 1
        assert ann["st_time"] == st / 10.0 and ann["ed_time"] == ed / 10.0
        assert len(ann["bbox"]) == ed - st + 1
        length_s = (ed - st + 1) / CFG.fps
        assert 1.8 <= length_s <= min(4.0, 0.6 * CFG.seconds) + 1e-9
        assert ann["event"] in EVENTS and ann["fps"] == 10.0
        assert ann["English"].endswith(".") and ann["English"][0].isupper()
        assert ann["label"] == "{size} {colour} {shape}".format(**ann["objects"][str(ann["target_id"])])


def test_gt_tracks_load_boxes_inside_frame_and_hcstvg_bbox_equals_target_track(clips):
    for clip, ann in clips:
        ts = TrackSet.from_dict(ann["gt_tracks"])
        assert (ts.width, ts.height, ts.num_frames) == (320, 240, 80)
        assert ts.ids == list(range(1, len(ann["objects"]) + 1))
        for track in ts:
            for x1, y1, x2, y2 in track.boxes:
                assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        target = ts.tracks[ann["target_id"]]
        for k, f in enumerate(range(ann["st_frame"], ann["ed_frame"] + 1)):
            x1, y1, x2, y2 = target.box_at(f)  # visible over the whole event
            assert ann["bbox"][k] == [x1, y1, x2 - x1, y2 - y1]


def test_masks_decode_to_the_stored_tight_boxes(clips):
    for clip, ann in clips[:8]:
        for track in TrackSet.from_dict(ann["gt_tracks"]):
            for box, rle in zip(track.boxes, track.masks):
                assert mask_to_box(rle_to_mask(rle)) == box


def test_rendered_pixels_are_the_masks(clips):
    """Every GT mask pixel has its object's colour and the rest of the frame is the static floor."""
    for clip, _ in clips[:3]:
        for f, frame in enumerate(render_frames(clip)):
            covered = np.zeros(frame.shape[:2], bool)
            for obj_id, _box, rle in clip.gt_tracks.objects_at(f):
                mask = rle_to_mask(rle)
                assert not (mask & covered).any()  # visible masks do not overlap
                covered |= mask
                assert (frame[mask] == clip.objects[obj_id - 1].rgb[f]).all()
            assert (frame[~covered] == clip.background[~covered]).all()


def test_target_is_inside_and_mostly_unoccluded_during_its_event(clips):
    for clip, _ in clips:
        target, event = clip.target, clip.event
        for f in range(event.start_frame, event.end_frame + 1):
            visible = rle_to_mask(clip.gt_tracks.tracks[clip.target_id].mask_at(f)).sum()
            r = target.radius[f]
            assert visible > 0.3 * 1.5 * r * r  # every shape covers > 1.5 r^2 unoccluded
            x, y = target.center[f]
            assert r <= x <= 320 - r and r <= y <= 240 - r


def test_query_phrase_names_the_target_alone_and_distractors_share_attributes(clips):
    shared = 0
    for clip, ann in clips:
        words = ann["phrase"].split()
        assert ann["English"].lower().startswith(f"the {ann['phrase']} ")
        attrs = {"size": w for w in words if w in ("small", "large")}
        attrs |= {"colour": w for w in words if w in PALETTE}
        attrs["shape"] = words[-1]
        matching = [i for i, o in ann["objects"].items() if all(o[k] == v for k, v in attrs.items())]
        assert matching == [str(ann["target_id"])]
        target = ann["objects"][str(ann["target_id"])]
        others = [o for i, o in ann["objects"].items() if i != str(ann["target_id"])]
        assert all(
            (o["size"], o["colour"], o["shape"]) != (target["size"], target["colour"], target["shape"]) for o in others
        )
        shared += any(o["colour"] == target["colour"] or o["shape"] == target["shape"] for o in others)
    assert shared >= 0.7 * len(clips)


def test_distractor_events_make_both_id_and_time_matter(clips):
    with_events = same_event_elsewhere = 0
    for clip, ann in clips:
        events = [o["event"] for i, o in ann["objects"].items() if i != str(ann["target_id"]) and o["event"]]
        with_events += bool(events)
        for e in events:
            assert 0 <= e["st_frame"] < e["ed_frame"] < ann["img_num"]
            if e["name"] == ann["event"]:  # the same event never overlaps the target's
                assert e["ed_frame"] < ann["st_frame"] or e["st_frame"] > ann["ed_frame"]
                same_event_elsewhere += 1
    assert with_events >= 0.6 * len(clips)
    assert same_event_elsewhere >= 2


def test_objects_enter_and_leave_through_the_frame_edges(clips):
    entered = left = 0
    for clip, _ in clips:
        for track in clip.gt_tracks:
            x1, y1, x2, y2 = track.boxes[0]
            if track.first_frame > 0 and (x1 == 0 or y1 == 0 or x2 == 320 or y2 == 240):
                entered += 1
            x1, y1, x2, y2 = track.boxes[-1]
            if track.last_frame < clip.num_frames - 1 and (x1 == 0 or y1 == 0 or x2 == 320 or y2 == 240):
                left += 1
    assert entered >= 5 and left >= 5


def test_crossing_objects_occlude_in_depth_order(clips):
    """Where the cores of several objects overlap (the disc of 0.3 x radius around the centre, inside every shape),
    the rendered pixel has the colour of the one with the highest depth declared in the clip's annotation, and
    that object's GT mask holds the pixel."""
    checked = 0
    for clip, ann in clips[:8]:
        declared = {int(obj_id): obj["depth"] for obj_id, obj in ann["objects"].items()}
        assert sorted(declared.values()) == list(range(len(clip.objects)))  # a strict order, no ties
        height, width = clip.config.height, clip.config.width
        ys, xs = np.mgrid[0:height, 0:width] + 0.5  # pixel centres, in the objects' pixel-edge coordinates
        for f, frame in enumerate(render_frames(clip)):
            present = [o for o in clip.objects if o.present[f]]
            if f % 2 or len(present) < 2:
                continue
            cores = np.stack([np.hypot(xs - o.center[f][0], ys - o.center[f][1]) <= 0.3 * o.radius[f] for o in present])
            shared = cores.sum(axis=0) >= 2
            if not shared.any():
                continue
            depth = np.where(cores, np.array([declared[o.object_id] for o in present])[:, None, None], -1)
            front = depth.argmax(axis=0)
            visible = {obj_id: rle_to_mask(rle) for obj_id, _, rle in clip.gt_tracks.objects_at(f)}
            for k, obj in enumerate(present):
                pixels = shared & (front == k)
                if pixels.any():
                    assert (frame[pixels] == obj.rgb[f]).all(), (clip.key, f, obj.object_id)
                    assert visible[obj.object_id][pixels].all(), (clip.key, f, obj.object_id)
                    checked += int(pixels.sum())
    assert checked >= 50  # the clips really make objects cross


def _samples_in_event(clip) -> np.ndarray:
    """The native frames that 2-fps sampling (linspace over the clip, rounded) picks inside the event."""
    n = clip.num_frames
    idx = np.round(np.linspace(0, n - 1, int(round(n / clip.config.fps * 2)))).astype(int)
    return idx[(idx >= clip.event.start_frame) & (idx <= clip.event.end_frame)]


@pytest.mark.parametrize("event", EVENTS)
def test_each_event_is_visible_at_two_fps_sampling(event):
    still = event in ("jumps", "shakes")  # no base motion, so the event's own displacement is measured
    cfg = SynthConfig(events=(event,), min_speed=0.0 if still else 0.08, max_speed=0.0 if still else 0.2)
    for s in clip_seeds(3, 3):
        clip = generate_clip(s, cfg)
        target, e = clip.target, clip.event
        st, ed = e.start_frame, e.end_frame
        samples = _samples_in_event(clip)
        assert e.name == event and len(samples) >= 3
        r0 = target.radius[st]
        if event == "jumps":
            assert target.center[st : ed + 1, 1].min() <= target.center[st, 1] - 1.3 * r0 + 1e-9
            assert np.ptp(target.center[samples, 1]) > 0.5 * r0
        elif event == "shakes":
            assert np.ptp(target.center[samples, 0]) > 0.5 * r0
        elif event == "spins":
            sym = {"square": 90.0, "triangle": 120.0, "star": 72.0, "cross": 90.0}[target.shape]
            steps = np.abs(np.diff(target.angle_deg[samples])) % sym
            assert ((steps > 0.15 * sym) & (steps < 0.85 * sym)).all()
            assert target.angle_deg[: st + 1].max() == 0.0
        elif event == "grows":
            assert target.size == "small" and target.radius[ed] == pytest.approx(1.6 * r0)
        elif event == "shrinks":
            assert target.size == "large" and target.radius[ed] == pytest.approx(0.6 * r0)
        elif event == "stops":
            assert np.array_equal(target.center[st : ed + 1], np.repeat(target.center[st : st + 1], ed - st + 1, 0))
            assert not np.array_equal(target.center[st - 1], target.center[st])
        elif event == "changes_colour":
            assert e.new_colour != target.colour
            assert tuple(target.rgb[st]) == PALETTE[target.colour] and tuple(target.rgb[ed]) == PALETTE[e.new_colour]
            assert clip.query.rstrip(".").endswith(e.new_colour) or f"to {e.new_colour}" in clip.query
        elif event == "blinks":
            colours = {tuple(int(v) for v in target.rgb[f]) for f in samples}
            assert colours == {BLINK_RGB, PALETTE[target.colour]}
            assert tuple(target.rgb[st]) == BLINK_RGB == tuple(target.rgb[ed])
        if event not in ("changes_colour", "blinks"):
            assert all(tuple(c) == PALETTE[target.colour] for c in target.rgb)


def test_written_video_decodes_to_the_annotated_size_and_colours(dataset):
    out, ann_path = dataset
    ann = json.loads(ann_path.read_text())
    assert sorted(ann) == ["synth_s0_0000", "synth_s0_0001"]
    seeds = clip_seeds(0, 2)
    for i, (key, a) in enumerate(sorted(ann.items())):
        path = out / a["video_path"]
        info = probe_video(path)
        assert info.num_frames == a["img_num"] and [info.height, info.width] == a["img_hw"]
        assert info.fps == pytest.approx(a["fps"])
        clip = generate_clip(seeds[i], CFG, key)
        check = [a["st_frame"], (a["st_frame"] + a["ed_frame"]) // 2, a["ed_frame"]]
        checked = 0
        for frame in read_frames(path, check):
            for obj_id, box, rle in clip.gt_tracks.objects_at(frame.index):
                mask = rle_to_mask(rle)
                cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
                if not mask[cy - 2 : cy + 3, cx - 2 : cx + 3].all():  # centre occluded or on a star's notch
                    continue
                expected = clip.objects[obj_id - 1].rgb[frame.index].astype(int)
                got = frame.image[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
                assert np.abs(got - expected).max() < 25, (key, frame.index, obj_id, got, expected)
                checked += 1
        assert checked >= 3


def test_cli_synth_writes_videos_and_annotations(tmp_path):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--num", "2", "--seed", "0"]) == 0
    ann = json.loads((out / "annotations.json").read_text())
    assert sorted(ann) == ["synth_s0_0000", "synth_s0_0001"]
    for a in ann.values():
        assert (out / a["video_path"]).stat().st_size > 0


def test_cli_synth_rejects_unusable_sizes_with_exit_code_2(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "bad"), "--width", "63"]) == 2
    assert "even sizes" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "bad"), "--seconds", "1"]) == 2


def test_config_validation():
    with pytest.raises(BadInputError):
        SynthConfig(events=("dances",))
    with pytest.raises(BadInputError):
        SynthConfig(min_objects=4, max_objects=3)
    short = SynthConfig(seconds=4.0, min_objects=2, max_objects=2)
    clip = generate_clip(1, short)
    assert clip.num_frames == 40 and len(clip.objects) == 2
    assert clip.event.num_frames <= 0.6 * 40
    assert math.isclose(clip_annotation(clip, "v.mp4")["ed_time"], clip.event.end_frame / 10.0)
