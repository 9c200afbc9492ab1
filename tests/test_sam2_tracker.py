"""Sam2Tracker (SAM2.1 and EdgeTAM) end to end on a small clip with tiny random models loaded from folders.

Random weights make the propagated masks meaningless, so the tiny models get a fixed object-presence bias:
``-20`` = every propagated frame says "absent" (objects are observed exactly on detector-seeded keyframes and
keep their IDs by re-linking), ``+20`` = always present (masks are junk; only structure is checked).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_two_box_clip

from stvgr1_edge.errors import MissingWeightsError
from stvgr1_edge.masks import mask_to_box, rle_to_mask
from stvgr1_edge.tracking.base import Detections, Detector
from stvgr1_edge.tracking.sam2 import Sam2Tracker, Sam2TrackerConfig, load_video_model
from stvgr1_edge.video import iter_frames, probe_video

H, W, N = 48, 64, 12
BOXES = np.array([[8, 8, 24, 28], [36, 12, 56, 40]], np.float32)


class ScriptedDetector(Detector):
    """The same two objects on every call, with exact masks (or boxes only)."""

    def __init__(self, with_masks: bool = True):
        self.with_masks = with_masks
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Detections:
        self.calls += 1
        masks = None
        if self.with_masks:
            masks = np.zeros((len(BOXES), *image.shape[:2]), bool)
            for k, (x1, y1, x2, y2) in enumerate(BOXES.astype(int)):
                masks[k, y1:y2, x1:x2] = True
        return Detections(BOXES, np.array([0.9, 0.8]), ("person", "ball"), masks)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_two_box_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", N, W, H, wobble_a=2, wobble_b=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    from stvgr1_edge.tracking.tiny_configs import save_tiny_video_model

    root = tmp_path_factory.mktemp("video_models")
    return {
        (family, bias): str(save_tiny_video_model(root / f"{family}{bias}", family, object_score_bias=bias))
        for family, bias in [("sam2", -20.0), ("sam2", 20.0), ("edgetam", -20.0)]
    }


@pytest.mark.parametrize("family", ["sam2", "edgetam"])
def test_scripted_objects_keep_ids_from_one_across_keyframes(models, clip, family):
    detector = ScriptedDetector()
    config = Sam2TrackerConfig(keyframe_interval=4, retire_after=2)
    tracker = Sam2Tracker(models[(family, -20.0)], detector, config, family=family)
    tracks = tracker.track_video(str(clip))
    assert tracks.ids == [1, 2]
    assert (tracks.width, tracks.height, tracks.num_frames) == (W, H, N)
    assert detector.calls == 3  # tracked frames 0, 4, 8
    for track, box, label in zip(tracks, BOXES, ("person", "ball")):
        assert track.frames == [0, 4, 8]
        assert track.label == label
        for b, rle in zip(track.boxes, track.masks):
            assert b == pytest.approx(box.tolist(), abs=1.0)
            assert rle["size"] == [H, W]
            mask = rle_to_mask(rle)
            assert mask_to_box(mask) == b


def test_every_two_tracks_even_frames_and_always_track_with_disjoint_masks(models, clip):
    detector = ScriptedDetector(with_masks=False)
    config = Sam2TrackerConfig(every=2, keyframe_interval=3)
    tracker = Sam2Tracker(models[("sam2", 20.0)], detector, config)
    tracks = tracker.track_video(str(clip), always_track=frozenset({3}))
    tracked = {0, 2, 3, 4, 6, 8, 10}
    assert detector.calls == 3  # tracked frames #0, #3, #6 = native 0, 4, 8
    assert tracks.ids == list(range(1, len(tracks) + 1))
    assert set().union(*(t.frames for t in tracks)) <= tracked
    for frame in tracked:
        objects = tracks.objects_at(frame)
        masks = [rle_to_mask(rle) for _, _, rle in objects]
        for (_, box, _), mask in zip(objects, masks):
            assert mask.shape == (H, W) and mask_to_box(mask) == box
        if len(masks) > 1:  # overlaps resolved per pixel: no pixel belongs to two objects
            assert np.stack(masks).sum(0).max() == 1


def test_session_memory_stays_bounded(models, clip):
    config = Sam2TrackerConfig(keyframe_interval=5, recent_frames=2, conditioning_frames=1)
    tracker = Sam2Tracker(models[("sam2", 20.0)], ScriptedDetector(), config)
    tracker.start(probe_video(clip))
    for frame in iter_frames(clip):
        tracker.step(frame)
        session = tracker._session
        assert len(session.processed_frames) == 1
        for outputs in session.output_dict_per_obj.values():
            assert len(outputs["non_cond_frame_outputs"]) <= 3
            assert len(outputs["cond_frame_outputs"]) <= 1
    assert len(tracker.finish()) >= 2


def test_long_absent_objects_leave_the_session_and_come_back_with_their_id(models, clip):
    config = Sam2TrackerConfig(keyframe_interval=6, retire_after=2)
    tracker = Sam2Tracker(models[("sam2", -20.0)], ScriptedDetector(), config)
    tracker.start(probe_video(clip))
    held = []
    for frame in iter_frames(clip):
        tracker.step(frame)
        held.append(list(tracker._session.obj_ids))
    assert held[0] == [1, 2] and held[3] == [] and held[6] == [1, 2]
    assert tracker.finish().ids == [1, 2]


def test_missing_model_folder_is_one_line_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        load_video_model(str(tmp_path / "absent"), "sam2")
    assert "\n" not in str(err.value) and "not found" in str(err.value)


def test_offline_hub_id_says_how_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as err:
        Sam2Tracker("nobody-xyz/sam2-missing", ScriptedDetector(), family="sam2")
    assert "\n" not in str(err.value) and "hf download nobody-xyz/sam2-missing" in str(err.value)
