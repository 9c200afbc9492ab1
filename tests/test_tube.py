"""`stvgr1_edge.tube.build_tube`: exact boxes, frames and repairs from hand-built track sets."""

from __future__ import annotations

import numpy as np
import pytest

from stvgr1_edge.answer import GroundingAnswer, parse_answer
from stvgr1_edge.masks import mask_to_rle, rle_to_mask
from stvgr1_edge.tracks import TrackSet
from stvgr1_edge.tube import Tube, build_tube, frames_in_range

FPS = 10.0
NUM_FRAMES = 50
TIMES = [i / FPS for i in range(NUM_FRAMES)]


def answer(ids, start_s, end_s, parse_ok=True) -> GroundingAnswer:
    return GroundingAnswer(tuple(ids), start_s, end_s, parse_ok)


def empty_tracks() -> TrackSet:
    return TrackSet(width=200, height=100, fps=FPS, num_frames=NUM_FRAMES)


def moving_box(frame: int, x0: float = 10.0, y0: float = 20.0) -> list[float]:
    """A 20x40 box moving 2 px right and 1 px down per frame (exact in float)."""
    return [x0 + 2 * frame, y0 + frame, x0 + 20 + 2 * frame, y0 + 40 + frame]


# --- frames --------------------------------------------------------------------------------------
def test_frames_in_range_are_inclusive_at_both_ends():
    assert list(frames_in_range(TIMES, 1.0, 2.0)) == list(range(10, 21))
    assert list(frames_in_range(TIMES, 1.01, 1.99)) == list(range(11, 20))
    assert list(frames_in_range(TIMES, 4.95, 9.0)) == []
    assert list(frames_in_range(TIMES, 0.0, 0.0)) == [0]
    # 0.1 * 3 != 0.3 in floating point: the tolerance keeps frame 3
    assert list(frames_in_range([0.0, 0.1, 0.2, 0.1 * 3], 0.3, 0.3)) == [3]


def test_tube_frames_all_lie_inside_the_time_range():
    tracks = empty_tracks()
    for f in range(NUM_FRAMES):
        tracks.add(1, f, moving_box(f))
    tube = build_tube(answer([1], 1.25, 2.75), tracks, TIMES)
    assert tube.frames == list(range(13, 28))
    assert all(1.25 <= TIMES[f] <= 2.75 for f in tube.frames)
    assert tube.boxes[13] == moving_box(13)
    assert tube.interpolated_frames == () and tube.repaired_frames == () and tube.warnings == ()


def test_default_frame_times_come_from_the_track_fps():
    tracks = empty_tracks()
    for f in range(NUM_FRAMES):
        tracks.add(1, f, moving_box(f))
    assert build_tube(answer([1], 1.0, 2.0), tracks).frames == list(range(10, 21))


def test_variable_frame_rate_times_select_by_timestamp():
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 1.0]
    tracks = TrackSet(200, 100, 10.0, len(times))
    for f in range(len(times)):
        tracks.add(1, f, moving_box(f))
    assert build_tube(answer([1], 0.12, 0.42), tracks, times).frames == [2, 3]


# --- interpolation -------------------------------------------------------------------------------
def every_fourth_frame_tracks() -> TrackSet:
    tracks = empty_tracks()
    tracks.add(1, 0, [0, 0, 8, 8])
    tracks.add(1, 4, [4, 8, 12, 16])
    tracks.add(1, 8, [4, 8, 12, 16])
    return tracks


def test_skipped_frames_are_linearly_interpolated():
    tube = build_tube(answer([1], 0.0, 1.0), every_fourth_frame_tracks(), TIMES)
    assert tube.frames == list(range(9))  # never extrapolated past the last observation (frame 8)
    assert tube.boxes[1] == [1.0, 2.0, 9.0, 10.0]
    assert tube.boxes[2] == [2.0, 4.0, 10.0, 12.0]
    assert tube.boxes[3] == [3.0, 6.0, 11.0, 14.0]
    assert tube.boxes[6] == [4.0, 8.0, 12.0, 16.0]
    assert tube.interpolated_frames == (1, 2, 3, 5, 6, 7)


def test_interpolation_off_keeps_only_tracked_frames():
    tube = build_tube(answer([1], 0.0, 1.0), every_fourth_frame_tracks(), TIMES, interpolate=False)
    assert tube.frames == [0, 4, 8]
    assert tube.interpolated_frames == ()


def test_max_gap_stops_bridging_long_gaps():
    tracks = every_fourth_frame_tracks()
    tracks.add(1, 20, [0, 0, 1, 1])
    tube = build_tube(answer([1], 0.0, 2.0), tracks, TIMES, max_gap=4)
    assert tube.frames == list(range(9)) + [20]


# --- several IDs, unknown IDs, failed parses -------------------------------------------------------
def test_several_ids_give_per_id_boxes_and_their_union():
    tracks = empty_tracks()
    for f in range(10, 15):
        tracks.add(1, f, [10, 10, 20, 30])
    for f in range(12, 17):
        tracks.add(2, f, [15, 5, 40, 25])
    tube = build_tube(answer([1, 2], 1.0, 1.6), tracks, TIMES)
    assert tube.ids == (1, 2)
    assert tube.boxes_by_id[1] == {f: [10.0, 10.0, 20.0, 30.0] for f in range(10, 15)}
    assert tube.boxes_by_id[2] == {f: [15.0, 5.0, 40.0, 25.0] for f in range(12, 17)}
    assert tube.boxes == {
        10: [10.0, 10.0, 20.0, 30.0],
        11: [10.0, 10.0, 20.0, 30.0],
        12: [10.0, 5.0, 40.0, 30.0],
        13: [10.0, 5.0, 40.0, 30.0],
        14: [10.0, 5.0, 40.0, 30.0],
        15: [15.0, 5.0, 40.0, 25.0],
        16: [15.0, 5.0, 40.0, 25.0],
    }


def test_an_id_that_was_never_tracked_gives_an_empty_tube_with_a_warning():
    tracks = empty_tracks()
    tracks.add(1, 10, [0, 0, 5, 5])
    tube = build_tube(answer([7], 0.0, 2.0), tracks, TIMES)
    assert tube.is_empty and len(tube) == 0
    assert tube.warnings == ("ID 7 was never tracked", "no box for ID(s) 7 between 0.00 and 2.00 s")


def test_an_id_outside_the_range_gives_an_empty_tube():
    tracks = empty_tracks()
    tracks.add(1, 40, [0, 0, 5, 5])
    tube = build_tube(answer([1], 0.0, 2.0), tracks, TIMES)
    assert tube.is_empty
    assert tube.warnings == ("no box for ID(s) 1 between 0.00 and 2.00 s",)


@pytest.mark.parametrize(
    "bad",
    [
        GroundingAnswer((1,), 1.0, 2.0, parse_ok=False, reason="x"),
        GroundingAnswer((), 1.0, 2.0, parse_ok=True),  # time-only answer
        GroundingAnswer((1,), None, None, parse_ok=False),
    ],
)
def test_a_failed_or_incomplete_answer_gives_an_empty_tube(bad):
    tracks = empty_tracks()
    for f in range(NUM_FRAMES):
        tracks.add(1, f, moving_box(f))
    tube = build_tube(bad, tracks, TIMES, id_repair=True)
    assert tube.is_empty
    assert (tube.ids, tube.start_s, tube.end_s) == (bad.ids, bad.start_s, bad.end_s)


def test_parsed_text_end_to_end():
    tracks = empty_tracks()
    for f in range(NUM_FRAMES):
        tracks.add(3, f, moving_box(f))
    a = parse_answer("<think>..</think><answer>Target ID: 3, Time range: 0.5 to 0.7</answer>", 4.9, tracks.ids)
    tube = build_tube(a, tracks, TIMES)
    assert tube.boxes_json() == {
        "5": [20.0, 25.0, 40.0, 65.0],
        "6": [22.0, 26.0, 42.0, 66.0],
        "7": [24.0, 27.0, 44.0, 67.0],
    }
    assert build_tube(parse_answer("no idea"), tracks, TIMES).boxes_json() == {}


def test_boxes_json_rounds_to_two_decimals():
    tracks = empty_tracks()
    tracks.add(1, 0, [1.23456, 2.0, 3.005, 4.9999])
    assert build_tube(answer([1], 0.0, 0.0), tracks, TIMES).boxes_json() == {"0": [1.23, 2.0, 3.0, 5.0]}


# --- masks -----------------------------------------------------------------------------------------
def rect_mask(x1, y1, x2, y2, h=100, w=200) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y1:y2, x1:x2] = True
    return m


def test_masks_pass_through_and_union_over_ids():
    tracks = empty_tracks()
    m1, m2 = rect_mask(0, 0, 10, 10), rect_mask(5, 5, 30, 20)
    tracks.add(1, 3, [0, 0, 10, 10], mask_to_rle(m1))
    tracks.add(1, 5, [0, 0, 10, 10], mask_to_rle(m1))
    tracks.add(2, 3, [5, 5, 30, 20], mask_to_rle(m2))
    single = build_tube(answer([1], 0.3, 0.5), tracks, TIMES)
    assert sorted(single.masks) == [3, 5]
    assert single.masks[3] == mask_to_rle(m1)
    assert 4 in single.boxes and 4 not in single.masks  # interpolated frames have no mask
    both = build_tube(answer([1, 2], 0.3, 0.3), tracks, TIMES)
    assert np.array_equal(rle_to_mask(both.masks[3]), m1 | m2)


# --- ID repair ----------------------------------------------------------------------------------------
def lost_and_relinked_tracks() -> TrackSet:
    """ID 1 walks right over frames 0..4, is lost, and comes back as ID 2 over frames 5..9; ID 3 stands still."""
    tracks = empty_tracks()
    for f in range(0, 5):
        tracks.add(1, f, moving_box(f))
    for f in range(5, 10):
        tracks.add(2, f, moving_box(f))
    for f in range(0, 10):
        tracks.add(3, f, [150, 10, 190, 90])
    return tracks


def test_id_repair_is_off_by_default():
    tube = build_tube(answer([1], 0.0, 0.9), lost_and_relinked_tracks(), TIMES)
    assert tube.frames == [0, 1, 2, 3, 4]
    assert tube.repaired_frames == ()


def test_id_repair_continues_from_the_previous_box_by_best_iou():
    tube = build_tube(answer([1], 0.0, 0.9), lost_and_relinked_tracks(), TIMES, id_repair=True)
    assert tube.frames == list(range(10))
    assert tube.boxes == {f: moving_box(f) for f in range(10)}  # followed ID 2, not the larger ID 3
    assert tube.repaired_frames == (5, 6, 7, 8, 9)


def test_id_repair_without_a_previous_box_uses_the_nearest_frame_with_the_id():
    tracks = empty_tracks()
    for f in range(3, 6):
        tracks.add(1, f, moving_box(f))
    tracks.add(2, 0, [150, 10, 190, 90])  # larger, but not the answered ID
    tube = build_tube(answer([1], 0.0, 0.7), tracks, TIMES, id_repair=True)
    assert tube.boxes[0] == moving_box(3)  # held from frame 3: no previous box yet
    assert tube.boxes[1] == moving_box(3)
    assert tube.boxes[5] == moving_box(5)
    assert tube.boxes[6] == moving_box(5)  # no other object at 6 overlaps: held from frame 5
    assert tube.repaired_frames == (0, 1, 2, 6, 7)


def test_id_repair_for_an_unknown_id_takes_the_largest_object_then_follows_it():
    tracks = empty_tracks()
    for f in range(0, 3):
        tracks.add(1, f, [0, 0, 10, 10])  # small
        tracks.add(2, f, [50, 0, 90, 60])  # large
    for f in range(3, 5):
        tracks.add(1, f, [0, 0, 10, 10])  # ID 2 gone, nothing overlaps its last box
    tube = build_tube(answer([9], 0.0, 0.4), tracks, TIMES, id_repair=True)
    assert tube.boxes == {
        0: [50.0, 0.0, 90.0, 60.0],
        1: [50.0, 0.0, 90.0, 60.0],
        2: [50.0, 0.0, 90.0, 60.0],
        3: [0.0, 0.0, 10.0, 10.0],
        4: [0.0, 0.0, 10.0, 10.0],
    }
    assert tube.repaired_frames == (0, 1, 2, 3, 4)
    assert tube.warnings == ("ID 9 was never tracked: repaired from other objects",)


def test_largest_object_is_measured_by_mask_area_when_there_are_masks():
    tracks = empty_tracks()
    tracks.add(1, 0, [0, 0, 100, 100], mask_to_rle(rect_mask(0, 0, 5, 5)))  # big box, tiny mask
    tracks.add(2, 0, [120, 0, 160, 40], mask_to_rle(rect_mask(120, 0, 160, 40)))
    tube = build_tube(answer([9], 0.0, 0.0), tracks, TIMES, id_repair=True)
    assert tube.boxes == {0: [120.0, 0.0, 160.0, 40.0]}


def test_repair_never_overrides_a_box_the_id_has():
    tube = build_tube(answer([3], 0.0, 0.9), lost_and_relinked_tracks(), TIMES, id_repair=True)
    assert tube.boxes == {f: [150.0, 10.0, 190.0, 90.0] for f in range(10)}
    assert tube.repaired_frames == ()


# --- the right answer gives the ground truth --------------------------------------------------------
def test_right_answer_gives_the_ground_truth_tube():
    """GT person (ID 2) acts over frames 12..31; with the GT ID and the GT range the tube is the GT."""
    gt_frames = range(12, 32)
    gt_boxes = {f: [30.0 + 1.5 * f, 12.0 + 0.5 * f, 70.0 + 1.5 * f, 92.0 + 0.5 * f] for f in gt_frames}
    tracks = empty_tracks()
    for f in range(NUM_FRAMES):
        tracks.add(1, f, [0.0, 0.0, 20.0, 50.0])  # a bystander
        tracks.add(2, f, [30.0 + 1.5 * f, 12.0 + 0.5 * f, 70.0 + 1.5 * f, 92.0 + 0.5 * f])
    right = parse_answer(
        f"<answer>Target ID: 2, Time range: {TIMES[12]:.2f} to {TIMES[31]:.2f}</answer>",
        duration_s=NUM_FRAMES / FPS,
        valid_ids=tracks.ids,
    )
    tube = build_tube(right, tracks, TIMES)
    assert tube.boxes == gt_boxes
    assert isinstance(tube, Tube) and tube.ids == (2,)

    # Tracked only every 3rd frame: the straight-line motion is recovered by interpolation.
    sparse = empty_tracks()
    for f in range(0, NUM_FRAMES, 3):
        sparse.add(2, f, [30.0 + 1.5 * f, 12.0 + 0.5 * f, 70.0 + 1.5 * f, 92.0 + 0.5 * f])
    sparse_tube = build_tube(right, sparse, TIMES)
    assert sparse_tube.frames == list(gt_frames)
    for f in gt_frames:
        assert sparse_tube.boxes[f] == pytest.approx(gt_boxes[f], abs=1e-9)
    assert set(sparse_tube.interpolated_frames) == {f for f in gt_frames if f % 3}
