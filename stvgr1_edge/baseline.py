"""The prior baseline: what a model scores without looking at the video, so that every table shows how far above
it the model is.

* Time: the one constant range ``[a, b]`` (seconds) that maximizes the mean tIoU over the set's GT ranges. It is
  fitted on the very set it is scored on, so it is the best any constant answer can do there (an upper bound
  for a model that learned only the dataset's prior). Exact over candidate ends: each sample's tIoU is, for a
  fixed ``a``, linear in ``b`` below its GT end and ``c / (b + k)`` (convex) above it, so the mean is convex
  between consecutive GT ends and peaks on one of them -- likewise for ``a``. Candidates are the GT start and
  end times rounded to ``resolution_s`` (at most ``max_candidates`` of them, by quantile, on large sets).
* ID: the *largest track* in that range -- of the tracks the model's answer was given, the one with the largest
  summed box area over the range's frames (the most visible object) -- and its tube over the range.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .answer import GroundingAnswer
from .dataset import STVGSample
from .metrics import Prediction
from .tracks import TrackSet
from .tube import build_tube, frames_in_range

BASELINES = {"prior": "constant time range fitted on the set's GT (best mean tIoU) + the largest track in it"}


def best_constant_range(
    gt_ranges_s: Sequence[tuple[float, float]], resolution_s: float = 0.1, max_candidates: int = 400
) -> tuple[float, float, float]:
    """``(a, b, mean tIoU)`` of the constant range with the best mean tIoU (in seconds) over ``gt_ranges_s``."""
    gt = np.asarray(gt_ranges_s, dtype=np.float64).reshape(-1, 2)
    if len(gt) == 0:
        raise ValueError("no GT ranges to fit a constant range to")
    ends = np.unique(np.round(gt.ravel() / resolution_s) * resolution_s)
    if len(ends) > max_candidates:
        ends = np.unique(np.quantile(gt.ravel(), np.linspace(0, 1, max_candidates)))
    starts, stops = gt[:, 0], gt[:, 1]
    best = (float(ends[0]), float(ends[0]), -1.0)
    for a in ends:
        b = ends[ends >= a][:, None]  # (candidates, 1) against (samples,)
        inter = np.clip(np.minimum(b, stops) - np.maximum(a, starts), 0.0, None)
        union = np.maximum(b, stops) - np.minimum(a, starts)
        tiou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).mean(axis=1)
        i = int(np.argmax(tiou))
        if tiou[i] > best[2]:
            best = (float(a), float(b[i, 0]), float(tiou[i]))
    return best


def largest_track(tracks: TrackSet, frames: range) -> int | None:
    """The track with the largest summed box area over ``frames`` (None when no track is in them)."""
    best_id, best_area = None, 0.0
    for track in tracks:
        area = 0.0
        for f in frames:
            box = track.box_at(f)
            if box is not None:
                area += max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
        if area > best_area:
            best_id, best_area = track.track_id, area
    return best_id


def prior_baseline(
    samples: Sequence[STVGSample], predictions: Mapping[str, Prediction]
) -> tuple[dict[str, Prediction], dict[str, Any]]:
    """The prior baseline's prediction for every sample, using the tracks of the model's prediction for the same
    sample (none: a time-only answer), and a description of what was fitted."""
    a, b, fitted = best_constant_range([(s.st_time, s.ed_time) for s in samples])  # type: ignore[misc]
    out: dict[str, Prediction] = {}
    with_track = 0
    for sample in samples:
        model = predictions.get(sample.key)
        tracks = None if model is None else model.load_tracks()
        if tracks is None:
            out[sample.key] = Prediction((), a, b)
            continue
        times = [i / tracks.fps for i in range(tracks.num_frames)]
        track_id = largest_track(tracks, frames_in_range(times, a, b))
        if track_id is None:
            out[sample.key] = Prediction((), a, b, tube={}, tracks=tracks)
            continue
        tube = build_tube(GroundingAnswer((track_id,), a, b, True), tracks, times)
        boxes = {f: (box[0], box[1], box[2], box[3]) for f, box in tube.boxes.items()}
        out[sample.key] = Prediction((track_id,), a, b, tube=boxes, tracks=tracks)
        with_track += 1
    description = {
        "description": BASELINES["prior"],
        "time_range_s": [round(a, 4), round(b, 4)],
        "fitted_mean_tIoU_seconds": round(fitted, 4),
        "samples_with_tracks": with_track,
    }
    return out, description
