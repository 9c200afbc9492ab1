"""Which tracked object is the GT target: a majority vote of the GT frames, with an IoU floor and a least vote share.

The one definition of "the GT target's track", used wherever an answer's track ID is compared with ground truth:
training data preparation (the ID a sample is trained to answer) and ``stvg-edge eval`` (an answered ID is correct
when it names that track). The reference has neither floor nor share; without them a target the tracker lost or
split would still get an ID, and an answer could be scored against an object the tracker never followed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .masks import box_iou_matrix
from .tracks import TrackSet


@dataclass(frozen=True)
class GTIdConfig:
    """How a sample's GT boxes are matched to one tracked ID."""

    iou_floor: float = 0.5
    """A GT frame votes for the best-overlapping tracked box only if their IoU is at least this."""
    min_vote_share: float = 0.6
    """The winning ID needs at least this share of the votes cast; otherwise the sample is ambiguous."""
    min_coverage: float = 0.3
    """At least this share of the GT frames must cast a vote; otherwise the target was not tracked."""


@dataclass(frozen=True)
class GTIdAssignment:
    """The outcome of :func:`assign_gt_id` for one sample."""

    track_id: int | None
    """The assigned tracked ID (None unless ``status == "ok"``)."""
    status: str
    """"ok", "ambiguous" (votes split, or a tie) or "no_match" (too few GT frames overlap any track)."""
    vote_share: float
    """Votes for the leading ID / votes cast."""
    coverage: float
    """Votes cast / GT frames."""
    mean_iou: float
    """Mean IoU of the leading ID's voting boxes with the GT boxes."""
    num_gt_frames: int
    votes: dict[int, int] = field(default_factory=dict)
    """Votes per tracked ID."""
    reason: str = ""


def assign_gt_id(
    tracks: TrackSet, gt_boxes: Mapping[int, Sequence[float]], config: GTIdConfig = GTIdConfig()
) -> GTIdAssignment:
    """Per GT frame, the tracked object whose box has the best IoU with the GT box votes (if IoU ≥ floor);
    the majority ID wins if it has ``min_vote_share`` of the votes and ``min_coverage`` of the frames voted."""
    votes: Counter[int] = Counter()
    iou_sums: dict[int, float] = defaultdict(float)
    for frame in sorted(gt_boxes):
        objects = tracks.objects_at(int(frame))
        if not objects:
            continue
        ious = box_iou_matrix(np.asarray([gt_boxes[frame]]), np.asarray([box for _, box, _ in objects]))[0]
        best = int(np.argmax(ious))
        if ious[best] >= config.iou_floor:
            track_id = int(objects[best][0])
            votes[track_id] += 1
            iou_sums[track_id] += float(ious[best])
    num_gt = len(gt_boxes)
    cast = sum(votes.values())
    if not cast:
        reason = f"no tracked box reaches IoU {config.iou_floor} with the GT box in any of {num_gt} GT frames"
        return GTIdAssignment(None, "no_match", 0.0, 0.0, 0.0, num_gt, {}, reason)
    ranked = votes.most_common()
    leader, leader_votes = ranked[0]
    share, coverage = leader_votes / cast, cast / max(num_gt, 1)
    mean_iou = iou_sums[leader] / leader_votes
    vote_dict = {int(k): int(v) for k, v in ranked}

    def refused(status: str, reason: str) -> GTIdAssignment:
        return GTIdAssignment(None, status, share, coverage, mean_iou, num_gt, vote_dict, reason)

    if coverage < config.min_coverage:
        return refused(
            "no_match",
            f"only {cast} of {num_gt} GT frames overlap a tracked box "
            f"(coverage {coverage:.2f} < {config.min_coverage})",
        )
    if len(ranked) > 1 and ranked[1][1] == leader_votes:
        return refused("ambiguous", f"tie between IDs {ranked[0][0]} and {ranked[1][0]} ({leader_votes} votes each)")
    if share < config.min_vote_share:
        return refused(
            "ambiguous", f"ID {leader} has only {share:.2f} of the votes (< {config.min_vote_share}): {vote_dict}"
        )
    return GTIdAssignment(leader, "ok", share, coverage, mean_iou, num_gt, vote_dict)
