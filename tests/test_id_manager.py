"""Keyframe ID rules (STVG-R1 §2) and re-linking, on scripted masks."""

from __future__ import annotations

import numpy as np
import pytest

from stvgr1_edge.tracking.id_manager import Decision, IdManager, IdManagerConfig

H = W = 40


def rect(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y1:y2, x1:x2] = True
    return m


def plan(manager: IdManager, frame: int, masks: list[np.ndarray], tracked: dict[int, np.ndarray], scores=None):
    boxes = np.array(
        [
            [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if m.any() else [0, 0, 0, 0]
            for m in masks
            for ys, xs in [np.nonzero(m)]
        ],
        dtype=np.float32,
    ).reshape(-1, 4)
    scores = np.ones(len(masks)) if scores is None else np.asarray(scores)
    stack = np.stack(masks) if masks else np.zeros((0, H, W), bool)
    return manager.plan_keyframe(frame, stack, boxes, scores, tracked)


def box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_new_objects_get_ids_from_one_in_score_order():
    m = IdManager()
    p = plan(m, 0, [rect(0, 0, 10, 10), rect(20, 20, 30, 30)], {}, scores=[0.3, 0.9])
    assert [(a.detection, a.decision, a.track_id, a.reseed) for a in p.assignments] == [
        (0, Decision.NEW, 2, True),
        (1, Decision.NEW, 1, True),
    ]
    assert p.seeds == {2: 0, 1: 1}


def test_duplicate_at_iou_threshold_refreshes_the_tracked_object():
    m = IdManager()
    obj = rect(0, 0, 10, 10)
    det = rect(0, 0, 10, 4)  # IoU = 40 / 100 = 0.4 exactly
    p = plan(m, 15, [det], {7: obj})
    (a,) = p.assignments
    assert (a.decision, a.track_id, a.reseed) == (Decision.DUPLICATE, 7, True)
    assert a.overlap == pytest.approx(0.4)
    assert m.next_id == 1  # no ID consumed


def test_refresh_can_be_switched_off():
    m = IdManager(IdManagerConfig(refresh_on_match=False))
    p = plan(m, 15, [rect(0, 0, 10, 10)], {3: rect(0, 0, 10, 10)})
    assert p.assignments[0].decision is Decision.DUPLICATE and p.seeds == {}


def test_containment_smaller_detection_is_dropped():
    m = IdManager()
    obj = rect(0, 0, 20, 20)  # area 400
    det = rect(0, 0, 12, 12)  # area 144 inside it: IoU 0.36 < 0.4, containment 1.0
    (a,) = plan(m, 15, [det], {4: obj}).assignments
    assert (a.decision, a.track_id, a.reseed) == (Decision.CONTAINED, 4, False)
    assert a.overlap == pytest.approx(1.0)


def test_containment_larger_detection_replaces_the_mask():
    m = IdManager()
    obj = rect(0, 0, 12, 12)
    det = rect(0, 0, 20, 20)
    p = plan(m, 15, [det], {4: obj})
    (a,) = p.assignments
    assert (a.decision, a.track_id, a.reseed) == (Decision.ABSORBS, 4, True)
    assert p.seeds == {4: 0}


def test_partial_overlap_below_both_thresholds_is_a_new_object():
    m = IdManager()
    obj = rect(0, 0, 10, 10)
    det = rect(5, 0, 15, 10)  # IoU 50/150 = 0.33, containment 0.5 both ways
    (a,) = plan(m, 15, [det], {5: obj}).assignments
    assert (a.decision, a.track_id) == (Decision.NEW, 1)  # this manager's first ID


def test_thresholds_come_from_the_config():
    obj = rect(0, 0, 10, 10)
    det = rect(5, 0, 15, 10)  # IoU 1/3, containment 0.5
    assert (
        plan(IdManager(IdManagerConfig(duplicate_iou=0.3)), 0, [det], {1: obj}).assignments[0].decision
        is Decision.DUPLICATE
    )
    assert (
        plan(IdManager(IdManagerConfig(containment=0.5)), 0, [det], {1: obj}).assignments[0].decision
        is Decision.CONTAINED
    )


def test_duplicate_detections_in_one_keyframe_make_one_object():
    m = IdManager()
    p = plan(m, 0, [rect(0, 0, 10, 10), rect(0, 0, 10, 9), rect(0, 0, 20, 20)], {}, scores=[0.9, 0.8, 0.7])
    by_det = {a.detection: a for a in p.assignments}
    assert by_det[0].decision is Decision.CONTAINED  # the larger third detection represents the group
    assert by_det[1].decision is Decision.DUPLICATE
    assert by_det[2].decision is Decision.NEW
    assert {a.track_id for a in p.assignments} == {1}
    assert p.seeds == {1: 2}


def test_empty_detection_mask_is_ignored():
    m = IdManager()
    (a,) = plan(m, 0, [np.zeros((H, W), bool)], {}).assignments
    assert (a.decision, a.track_id, a.reseed) == (Decision.EMPTY, None, False)
    assert m.next_id == 1


def test_appear_disappear_reappear_near_gets_old_id_far_gets_new_id():
    m = IdManager(IdManagerConfig(relink_max_gap=30))
    a = rect(0, 0, 10, 10)
    b = rect(25, 25, 35, 35)
    p0 = plan(m, 0, [a, b], {})
    assert sorted(x.track_id for x in p0.assignments) == [1, 2]
    m.observe(0, {1: box_of(a), 2: box_of(b)})
    m.observe(5, {1: box_of(a)})  # 2 vanished after frame 0
    assert m.lost_ids(15, {1}) == [2]
    near = rect(26, 25, 36, 35)  # shifted by one pixel: re-linked
    far = rect(0, 25, 10, 35)  # elsewhere: a new object
    p = plan(m, 15, [near, far], {1: a})
    by_det = {x.detection: x for x in p.assignments}
    assert (by_det[0].decision, by_det[0].track_id, by_det[0].reseed) == (Decision.RELINK, 2, True)
    assert (by_det[1].decision, by_det[1].track_id) == (Decision.NEW, 3)


def test_relink_window_expires_and_ids_are_never_reused():
    m = IdManager(IdManagerConfig(relink_max_gap=10))
    a = rect(0, 0, 10, 10)
    plan(m, 0, [a], {})
    m.observe(0, {1: box_of(a)})
    m.observe(20, {})  # 20 > 10 frames later: forgotten
    assert m.lost_ids(20, set()) == []
    (x,) = plan(m, 20, [a], {}).assignments
    assert (x.decision, x.track_id) == (Decision.NEW, 2)


def test_relink_is_one_to_one_and_prefers_the_closest():
    m = IdManager()
    a, b = rect(0, 0, 10, 10), rect(12, 0, 22, 10)
    plan(m, 0, [a, b], {})
    m.observe(0, {1: box_of(a), 2: box_of(b)})
    p = plan(m, 15, [rect(11, 0, 21, 10), rect(1, 0, 11, 10)], {})
    assert {x.detection: x.track_id for x in p.assignments} == {0: 2, 1: 1}
    assert all(x.decision is Decision.RELINK for x in p.assignments)


def test_relink_by_centre_distance_when_boxes_do_not_overlap():
    m = IdManager(IdManagerConfig(relink_min_box_iou=0.9, relink_max_centre_distance=0.8))
    a = rect(0, 0, 10, 10)  # diagonal 14.1
    plan(m, 0, [a], {})
    m.observe(0, {1: box_of(a)})
    (x,) = plan(m, 10, [rect(10, 0, 20, 10)], {}).assignments  # centres 10 px apart = 0.71 diagonals
    assert (x.decision, x.track_id) == (Decision.RELINK, 1)
    assert x.overlap == pytest.approx(0.0)
