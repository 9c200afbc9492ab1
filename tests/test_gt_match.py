"""The GT target's track (stvgr1_edge.gt_match): majority vote over the GT frames with an IoU floor and a least
vote share, shared by training-data preparation and `stvg-edge eval`'s ID accuracy."""

import pytest

from stvgr1_edge.gt_match import GTIdConfig, assign_gt_id
from stvgr1_edge.tracks import TrackSet


def _trackset(boxes_by_id: dict[int, dict[int, list[float]]], num_frames: int = 20) -> TrackSet:
    ts = TrackSet(160, 120, 5.0, num_frames)
    for track_id, boxes in boxes_by_id.items():
        for frame, box in sorted(boxes.items()):
            ts.add(track_id, frame, box)
    return ts


def test_assign_gt_id_majority_vote_exact():
    gt = {f: [10.0, 10.0, 30.0, 30.0] for f in range(10)}
    # ID 7 matches frames 0..7 exactly, ID 2 sits on the GT box in frames 8..9, ID 5 is elsewhere.
    tracks = _trackset(
        {
            7: {f: [10, 10, 30, 30] for f in range(8)},
            2: {f: [10, 10, 30, 30] for f in (8, 9)},
            5: {f: [100, 80, 120, 100] for f in range(10)},
        }
    )
    a = assign_gt_id(tracks, gt)
    assert (a.track_id, a.status, a.votes) == (7, "ok", {7: 8, 2: 2})
    assert a.vote_share == pytest.approx(0.8) and a.coverage == pytest.approx(1.0) and a.mean_iou == pytest.approx(1.0)


def test_assign_gt_id_reports_ambiguous_and_no_match():
    gt = {f: [10.0, 10.0, 30.0, 30.0] for f in range(10)}
    split = _trackset({1: {f: [10, 10, 30, 30] for f in range(5)}, 2: {f: [10, 10, 30, 30] for f in range(5, 10)}})
    tie = assign_gt_id(split, gt)
    assert (tie.track_id, tie.status, tie.votes) == (None, "ambiguous", {1: 5, 2: 5}) and "tie" in tie.reason
    lean = _trackset({1: {f: [10, 10, 30, 30] for f in range(6)}, 2: {f: [10, 10, 30, 30] for f in range(6, 10)}})
    low = assign_gt_id(lean, gt, GTIdConfig(min_vote_share=0.7))  # 6/10 < 0.7
    assert (low.status, low.vote_share, low.track_id) == ("ambiguous", pytest.approx(0.6), None)
    assert assign_gt_id(lean, gt).track_id == 1  # the default share 0.6 is met exactly
    # IoU of [10,10,30,30] and [20,10,40,30] is 1/3: below the floor, no vote at all
    shifted = _trackset({4: {f: [20, 10, 40, 30] for f in range(10)}})
    none = assign_gt_id(shifted, gt)
    assert (none.track_id, none.status, none.votes) == (None, "no_match", {})
    sparse = _trackset({4: {0: [10, 10, 30, 30], 1: [10, 10, 30, 30]}})  # 2 of 10 frames vote: coverage 0.2
    assert assign_gt_id(sparse, gt).status == "no_match"
