"""Which detection is which object: the keyframe ID rules of STVG-R1 §2, plus re-linking of lost objects.

On a keyframe the detector's masks are compared with the masks the tracker currently holds:

1. mask IoU ≥ ``duplicate_iou`` with an object → that object (a duplicate; it may refresh the object's mask);
2. else intersection / area ≥ ``containment`` for either mask → the same object, and the larger mask wins
   (a larger detection replaces the object's mask, a smaller one is dropped);
3. else, better than the reference: a detection near where a recently lost object vanished (box IoU or
   centre distance) gets that object's old ID back;
4. else a new object with the next ID. IDs start at 1 and are never reused.

Detections are taken in decreasing score order; detections that match no tracked object are also checked
against each other with rules 1–2, so one keyframe never creates two IDs for one object. Pure numpy: masks
may be at any resolution as long as detections and tracked objects share it (IoU and containment ratios
do not change under the axis-aligned resize SAM applies, so model-space masks work).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdManagerConfig:
    """Keyframe matching thresholds. Defaults: STVG-R1 §2 (rules 1–2) and ours (re-linking)."""

    duplicate_iou: float = 0.4
    """A detection whose mask IoU with an object is at least this is that object (STVG-R1: 0.4)."""
    containment: float = 0.6
    """Intersection over either mask's own area at least this → containment, the larger wins (STVG-R1: 0.6)."""
    refresh_on_match: bool = True
    """Re-seed a tracked object's mask from the detection that duplicates it (the reference never refreshes)."""
    relink_max_gap: int = 45
    """A lost object can get its ID back for this many native frames after it was last seen (0 disables)."""
    relink_min_box_iou: float = 0.3
    """Re-link when the detection box overlaps the object's last box by at least this IoU, or ..."""
    relink_max_centre_distance: float = 0.5
    """... when the box centres are at most this many last-box diagonals apart."""


class Decision(str, Enum):
    """What a keyframe detection turned out to be."""

    NEW = "new"
    """No match: a new object with the next ID."""
    DUPLICATE = "duplicate"
    """Mask IoU ≥ ``duplicate_iou`` with an object."""
    CONTAINED = "contained"
    """Lies inside a larger object: dropped, the object keeps its mask."""
    ABSORBS = "absorbs"
    """Contains a smaller object: the object takes this (larger) mask."""
    RELINK = "relink"
    """Near where a recently lost object vanished: it gets that object's ID back."""
    EMPTY = "empty"
    """The detection's mask is empty: ignored."""


@dataclass(frozen=True)
class Assignment:
    """The decision for one detection (``detection`` indexes the keyframe's detections)."""

    detection: int
    decision: Decision
    track_id: int | None
    """The object ID the detection belongs to (None only for ``EMPTY``)."""
    overlap: float
    """The number that decided it: mask IoU, containment ratio or box IoU (0 for new/empty)."""
    reseed: bool
    """Whether the tracker should (re)initialise ``track_id``'s mask from this detection."""


@dataclass(frozen=True)
class KeyframePlan:
    """All decisions of one keyframe."""

    frame: int
    assignments: tuple[Assignment, ...]

    @property
    def seeds(self) -> dict[int, int]:
        """``track_id -> detection index`` whose mask (re)initialises that object in the tracker."""
        return {a.track_id: a.detection for a in self.assignments if a.reseed and a.track_id is not None}

    def ids_with(self, decision: Decision) -> list[int | None]:
        return [a.track_id for a in self.assignments if a.decision is decision]


@dataclass
class _LastSeen:
    frame: int
    box: np.ndarray


def _overlaps(masks_a: np.ndarray, masks_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise ``(intersection, area_a, area_b)`` of boolean masks ``(N, H, W)`` × ``(M, H, W)``."""
    a = masks_a.reshape(len(masks_a), -1).astype(np.float32)
    b = masks_b.reshape(len(masks_b), -1).astype(np.float32)
    return a @ b.T, a.sum(1), b.sum(1)


def _box_centre_distance(box: np.ndarray, ref: np.ndarray) -> float:
    """Distance between box centres in units of ``ref``'s diagonal."""
    c = (box[:2] + box[2:]) / 2
    rc = (ref[:2] + ref[2:]) / 2
    diag = float(np.hypot(ref[2] - ref[0], ref[3] - ref[1]))
    return float(np.hypot(*(c - rc)) / max(diag, 1e-6))


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    from ..masks import box_iou

    return box_iou(a, b)


class IdCounter:
    """Object IDs as every tracker hands them out: 1, 2, 3, ... within one video, never reused (a re-linked object
    keeps its old ID instead of taking a new one)."""

    def __init__(self) -> None:
        self._next = 1

    def new(self) -> int:
        track_id = self._next
        self._next += 1
        return track_id

    def peek(self) -> int:
        """The ID the next new object will get."""
        return self._next


class IdManager:
    """Hands out object IDs on keyframes and remembers where objects were last seen (for re-linking)."""

    def __init__(self, config: IdManagerConfig | None = None):
        self.config = config or IdManagerConfig()
        self.reset()

    def reset(self) -> None:
        self._ids = IdCounter()
        self._last_seen: dict[int, _LastSeen] = {}

    @property
    def next_id(self) -> int:
        return self._ids.peek()

    def observe(self, frame: int, boxes: dict[int, np.ndarray | list[float]]) -> None:
        """Record the objects the tracker sees at ``frame`` (``id -> xyxy`` in frame pixels)."""
        for track_id, box in boxes.items():
            self._last_seen[int(track_id)] = _LastSeen(int(frame), np.asarray(box, dtype=np.float64))
        horizon = frame - self.config.relink_max_gap
        for track_id in [i for i, seen in self._last_seen.items() if seen.frame < horizon]:
            del self._last_seen[track_id]  # too old to re-link: forget it (bounded memory)

    def lost_ids(self, frame: int, present: set[int] | frozenset[int]) -> list[int]:
        """IDs seen within ``relink_max_gap`` frames before ``frame`` that are not ``present`` now."""
        return sorted(
            i for i, s in self._last_seen.items() if i not in present and frame - s.frame <= self.config.relink_max_gap
        )

    def plan_keyframe(
        self,
        frame: int,
        detection_masks: np.ndarray,
        detection_boxes: np.ndarray,
        detection_scores: np.ndarray,
        tracked_masks: dict[int, np.ndarray],
    ) -> KeyframePlan:
        """Decide, for each detection, which object it is (see the module docstring).

        ``detection_masks`` (N, H, W) bool, ``detection_boxes`` (N, 4) xyxy frame pixels, ``detection_scores``
        (N,); ``tracked_masks`` maps the IDs the tracker currently sees to (H, W) bool masks.
        """
        cfg = self.config
        det_masks = np.asarray(detection_masks, dtype=bool)
        det_boxes = np.asarray(detection_boxes, dtype=np.float64).reshape(-1, 4)
        order = np.argsort(-np.asarray(detection_scores, dtype=np.float64), kind="stable")
        decided: dict[int, Assignment] = {}
        det_areas = det_masks.reshape(len(det_masks), -1).sum(1)

        # Rules 1-2 against the tracked objects.
        track_ids = list(tracked_masks)
        reseeded: set[int] = set()
        if track_ids and len(det_masks):
            inter, area_d, area_t = _overlaps(det_masks, np.stack([tracked_masks[i] for i in track_ids]).astype(bool))
        for d in order:
            d = int(d)
            if det_areas[d] == 0:
                decided[d] = Assignment(d, Decision.EMPTY, None, 0.0, False)
                continue
            if not track_ids:
                continue
            match = self._match_rules(inter[d], area_d[d], area_t)
            if match is None:
                continue
            j, decision, overlap = match
            tid = track_ids[j]
            reseed = tid not in reseeded and (
                decision is Decision.ABSORBS or (decision is Decision.DUPLICATE and cfg.refresh_on_match)
            )
            if reseed:
                reseeded.add(tid)
            decided[d] = Assignment(d, decision, tid, overlap, reseed)

        # Rules 1-2 among the unmatched detections themselves: one object per group.
        pending = [int(d) for d in order if int(d) not in decided]
        groups: list[list[int]] = []  # each group: [representative, members...]
        for d in pending:
            if groups:
                group_reps = np.array([g[0] for g in groups])
                inter_p, area_dp, area_r = _overlaps(det_masks[[d]], det_masks[group_reps])
                match = self._match_rules(inter_p[0], area_dp[0], area_r)
                if match is not None:
                    j, decision, overlap = match
                    group = groups[j]
                    if decision is Decision.ABSORBS:  # the larger detection now represents the group
                        decided[group[0]] = Assignment(group[0], Decision.CONTAINED, None, overlap, False)
                        group.insert(0, d)
                    else:
                        decided[d] = Assignment(d, decision, None, overlap, False)  # ID filled in below
                        group.append(d)
                    continue
            groups.append([d])

        # Rule 3: re-link group representatives to recently lost objects (Hungarian on box IoU / distance).
        reps = [g[0] for g in groups]
        relinked = self._relink(frame, reps, det_boxes, present=set(track_ids))
        group_ids: list[int] = []
        for group in groups:
            rep = group[0]
            if rep in relinked:
                tid, overlap = relinked[rep]
                decided[rep] = Assignment(rep, Decision.RELINK, tid, overlap, True)
            else:  # Rule 4
                tid = self._ids.new()
                decided[rep] = Assignment(rep, Decision.NEW, tid, 0.0, True)
            group_ids.append(tid)
            for member in group[1:]:
                old = decided[member]
                decided[member] = Assignment(member, old.decision, tid, old.overlap, False)
        plan = KeyframePlan(int(frame), tuple(decided[d] for d in sorted(decided)))
        logger.debug("keyframe %d: %s", frame, [(a.detection, a.decision.value, a.track_id) for a in plan.assignments])
        return plan

    def _match_rules(self, inter: np.ndarray, area_d: float, areas: np.ndarray) -> tuple[int, Decision, float] | None:
        """Rules 1–2 for one detection against M masks: ``(index, decision, overlap)`` or None."""
        cfg = self.config
        union = area_d + areas - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        j = int(np.argmax(iou))
        if iou[j] >= cfg.duplicate_iou:
            return j, Decision.DUPLICATE, float(iou[j])
        contain = np.maximum(inter / max(area_d, 1e-9), inter / np.maximum(areas, 1e-9))
        j = int(np.argmax(contain))
        if contain[j] >= cfg.containment:
            decision = Decision.ABSORBS if area_d > areas[j] else Decision.CONTAINED
            return j, decision, float(contain[j])
        return None

    def _relink(
        self, frame: int, dets: list[int], det_boxes: np.ndarray, present: set[int]
    ) -> dict[int, tuple[int, float]]:
        """``detection -> (old id, box IoU)`` for detections near a recently lost object (one-to-one)."""
        cfg = self.config
        lost = self.lost_ids(frame, present)
        if cfg.relink_max_gap <= 0 or not lost or not dets:
            return {}
        from scipy.optimize import linear_sum_assignment

        big = 1e6
        cost = np.full((len(dets), len(lost)), big)
        ious = np.zeros_like(cost)
        for a, d in enumerate(dets):
            for b, tid in enumerate(lost):
                ref = self._last_seen[tid].box
                iou = _box_iou(det_boxes[d], ref)
                dist = _box_centre_distance(det_boxes[d], ref)
                ious[a, b] = iou
                if iou >= cfg.relink_min_box_iou or dist <= cfg.relink_max_centre_distance:
                    cost[a, b] = (1.0 - iou) + dist
        rows, cols = linear_sum_assignment(cost)
        return {dets[r]: (lost[c], float(ious[r, c])) for r, c in zip(rows, cols) if cost[r, c] < big}
