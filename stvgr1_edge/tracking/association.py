"""Matching tracks to detections (step 3 and 4 of the classical tracker): one Hungarian assignment on box IoU,
centre distance after constant-velocity prediction, colour and size; and the cost of re-linking a lost track."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..masks import box_iou_matrix
from .observations import INVALID_COST, Observation, TrackState, VideoClock, centre, diagonal, hist_distance

if TYPE_CHECKING:  # pragma: no cover
    from .classical import ClassicalTrackerConfig


def relink_cost(
    cfg: ClassicalTrackerConfig,
    clock: VideoClock,
    track: TrackState,
    box: np.ndarray,
    hist: np.ndarray,
    area: float,
    frame: int,
) -> float:
    # where it would be if it kept moving, or where it vanished (it may have stopped, hidden)
    dist = min(
        float(np.linalg.norm(centre(c) - centre(box)) / diagonal(c))
        for c in (track.predict(frame, clock.max_predict_frames), track.box)
    )
    lost_s = (frame - track.last_frame) / clock.fps
    if dist > cfg.relink_gate + cfg.relink_gate_growth_per_s * lost_s:
        return INVALID_COST
    app = hist_distance(track.hist, hist)
    size = min(abs(math.log(max(area, 1.0) / max(track.area, 1.0))), 2.0)
    if app > cfg.relink_max_appearance_distance:
        where_predicted = (
            frame - track.last_frame <= clock.max_predict_frames
            and dist <= cfg.relink_appearance_free_distance
            and size <= cfg.relink_max_size_change
        )
        if not where_predicted:
            return INVALID_COST
    return cfg.appearance_weight * app + cfg.distance_weight * dist + cfg.size_weight * size


def assign(
    cfg: ClassicalTrackerConfig,
    clock: VideoClock,
    tracks: list[TrackState],
    obs: list[Observation],
    preds: dict[int, np.ndarray],
    gate: float | None,
    max_app: float,
    frame: int,
) -> tuple[list[tuple[TrackState, Observation]], list[Observation]]:
    """Hungarian assignment; ``gate=None`` means re-linking lost tracks (:func:`relink_cost`)."""
    from scipy.optimize import linear_sum_assignment

    if not tracks or not obs:
        return [], list(obs)
    cost = np.full((len(tracks), len(obs)), INVALID_COST)
    ob_boxes = np.stack([o.box for o in obs])
    if gate is None:
        for i, t in enumerate(tracks):
            for j, o in enumerate(obs):
                if o.owner is not None:
                    cost[i, j] = 0.0 if o.owner is t else INVALID_COST
                else:
                    cost[i, j] = relink_cost(cfg, clock, t, o.box, o.hist, o.area, frame)
    else:
        pred_boxes = np.stack([preds[t.key] for t in tracks])
        iou = box_iou_matrix(pred_boxes, ob_boxes)
        dist = (
            np.linalg.norm(centre(pred_boxes)[:, None] - centre(ob_boxes)[None], axis=2) / diagonal(pred_boxes)[:, None]
        )
        mutual_nearest = (dist == dist.min(axis=1, keepdims=True)) & (dist == dist.min(axis=0, keepdims=True))
        for i, t in enumerate(tracks):
            for j, o in enumerate(obs):
                if o.owner is not None:  # a split part belongs to the track it was cut out for
                    cost[i, j] = 0.0 if o.owner is t else INVALID_COST
                    continue
                if iou[i, j] <= 0 and dist[i, j] > gate:
                    continue
                app = hist_distance(t.hist, o.hist)
                where_predicted = (
                    iou[i, j] >= cfg.appearance_free_iou
                    or dist[i, j] <= cfg.appearance_free_distance
                    or (mutual_nearest[i, j] and dist[i, j] <= gate)
                )
                if app > max_app and not where_predicted:
                    continue  # being where predicted wins over colour (objects blink, change colour)
                size = 0.0 if o.partial else min(abs(math.log(max(o.area, 1.0) / max(t.area, 1.0))), 2.0)
                cost[i, j] = (
                    (1 - iou[i, j])
                    + cfg.distance_weight * dist[i, j]
                    + cfg.appearance_weight * app
                    + cfg.size_weight * size
                )
    rows, cols = linear_sum_assignment(cost)
    matches = [(tracks[r], obs[c]) for r, c in zip(rows, cols) if cost[r, c] < INVALID_COST]
    used = {c for r, c in zip(rows, cols) if cost[r, c] < INVALID_COST}
    return matches, [o for j, o in enumerate(obs) if j not in used]
