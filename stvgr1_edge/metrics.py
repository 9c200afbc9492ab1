"""Spatio-temporal grounding metrics (STVG-R1.md §8), in two labelled conventions.

Per sample: temporal IoU (tIoU), vIoU = (1/|S_u|) * sum over t in S_i of IoU(pred_t, gt_t) (S_i: frames
in both the predicted and the GT range, S_u: frames in either; a frame of S_i without a predicted box
counts 0), whether the answered ID names the GT target's track, and J/F for mask predictions. Over samples: the
means (m_tIoU, m_vIoU), vIoU@R and tIoU@R (share of samples above R), ID accuracy, J&F.

ID accuracy. An answer names a *tracker* ID; the annotation names no tracker ID at all (and a synthetic clip's
object IDs are another numbering). So an answered ID is correct when it names the track that
:func:`stvgr1_edge.gt_match.assign_gt_id` assigns to the GT boxes -- the same IoU-floor + vote-share rule that
training data preparation uses -- whatever its number. That needs the tracks the answer was given (``tracks_file``
in `stvg-edge predict` output); without them, or when the tracker did not follow the target (no track wins the
vote), the sample is *not assessable* and left out of the accuracy, with the reason counted. A missing or
unparsed answer on an assessable sample is wrong.

Conventions (both in use; the numbers differ, so every output says which one it is):

``tubedetr`` -- the standard one (TubeDETR ``hcstvg_eval.py`` after the fix of its issue #3, where the
  union's end was ``min`` of the two ends instead of ``max`` and vIoU came out too high). Frame-based:
  the GT frames are ``st_frame..ed_frame``; the predicted frames are the native frames whose time
  ``frame / fps`` lies in ``[start_s, end_s]``; tIoU = |S_i| / |S_u| on those frame sets; every native
  frame is evaluated (TubeDETR subsamples to 5 fps first); thresholds are strict (vIoU > R).

``stvg-r1`` -- the STVG-R1 reference script. tIoU on continuous seconds ``[start_s, end_s]`` vs
  ``[st_time, ed_time]``; vIoU on native frames ``floor(t * fps)`` of both ranges, the union counted
  inclusively (``max_end - min_start + 1``); thresholds with >=. Reproduced quirk: when the two frame
  ranges share a single frame (``overlap_start == overlap_end``) the script scores vIoU 0. (We add
  1e-6 before flooring so that ``st_frame / fps * fps`` maps back to ``st_frame`` despite float error.)
  The script's "ID repair" belongs to tube building, not here: the tube in the prediction is scored as is.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .dataset import STVGSample, load_annotations
from .errors import AnnotationError, BadInputError, read_json
from .gt_match import GTIdConfig, assign_gt_id
from .masks import box_iou, rle_to_mask
from .tracks import TrackSet

logger = logging.getLogger(__name__)

CONVENTIONS = {
    "tubedetr": "TubeDETR hcstvg_eval.py (union fix): frame-based tIoU and vIoU on every native frame, "
    "predicted frames = frames with time in [start_s, end_s], thresholds strict (> R)",
    "stvg-r1": "STVG-R1 reference script: tIoU in seconds, vIoU on native frames floor(t*fps) with the union "
    "counted inclusively (single-frame overlap scores 0), thresholds >= R",
}
THRESHOLDS = (0.3, 0.5, 0.7)
DAVIS_BOUNDARY_TOLERANCE = 0.008
"""F-measure tolerance as a fraction of the image diagonal (DAVIS ``bound_th``)."""
_FRAME_EPS = 1e-6

Box = Sequence[float]


# --- temporal -----------------------------------------------------------------------------------------
def temporal_iou_seconds(pred: tuple[float, float], gt: tuple[float, float]) -> float:
    """IoU of two closed time intervals ``(start, end)`` in seconds; 0 when they do not overlap.

    Two identical zero-length intervals score 1 (the reference script would divide by zero)."""
    inter = min(pred[1], gt[1]) - max(pred[0], gt[0])
    union = max(pred[1], gt[1]) - min(pred[0], gt[0])
    if union <= 0:
        return 1.0 if tuple(pred) == tuple(gt) else 0.0
    return max(0.0, inter) / union


def temporal_iou_frames(pred_frames: range, gt_frames: range) -> float:
    """|S_i| / |S_u| for two ranges of frame indices (step 1)."""
    inter = len(range(max(pred_frames.start, gt_frames.start), min(pred_frames.stop, gt_frames.stop)))
    union = len(pred_frames) + len(gt_frames) - inter
    return inter / union if union else 0.0


def frames_in_time_range(start_s: float, end_s: float, fps: float, num_frames: int) -> range:
    """Native frames ``f`` in ``0..num_frames-1`` with ``start_s <= f / fps <= end_s`` (empty if end < start)."""
    first = max(0, math.ceil(start_s * fps - _FRAME_EPS))
    last = min(num_frames - 1, math.floor(end_s * fps + _FRAME_EPS))
    return range(first, max(first, last + 1))


def time_to_frame_floor(t: float, fps: float) -> int:
    """The STVG-R1 script's ``int(t * fps)`` for t >= 0 (floor, with float noise removed)."""
    return math.floor(t * fps + _FRAME_EPS)


# --- spatio-temporal ----------------------------------------------------------------------------------
def frame_box_iou(pred: Box | None, gt: Box | None) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes; 0 if either is missing."""
    return 0.0 if pred is None or gt is None else box_iou(pred, gt)


def viou(pred_tube: Mapping[int, Box], gt_boxes: Mapping[int, Box], pred_frames: range, gt_frames: range) -> float:
    """(1/|S_u|) * sum over t in S_i of IoU(pred_tube[t], gt_boxes[t]) with S_i / S_u of the two frame ranges."""
    s_i = range(max(pred_frames.start, gt_frames.start), min(pred_frames.stop, gt_frames.stop))
    s_u = len(pred_frames) + len(gt_frames) - len(s_i)
    if s_u == 0:
        return 0.0
    return sum(frame_box_iou(pred_tube.get(t), gt_boxes.get(t)) for t in s_i) / s_u


def viou_stvg_r1(
    pred_tube: Mapping[int, Box],
    gt_boxes: Mapping[int, Box],
    pred_s: tuple[float, float],
    gt_s: tuple[float, float],
    fps: float,
) -> float:
    """The reference script's vIoU: frame ranges ``floor(t * fps)`` (inclusive), union inclusive,
    0 when the ranges overlap in fewer than two frames."""
    ps, pe = time_to_frame_floor(pred_s[0], fps), time_to_frame_floor(pred_s[1], fps)
    gs, ge = time_to_frame_floor(gt_s[0], fps), time_to_frame_floor(gt_s[1], fps)
    overlap_start, overlap_end = max(ps, gs), min(pe, ge)
    union_frames = max(pe, ge) - min(ps, gs) + 1
    if overlap_start >= overlap_end or union_frames <= 0:
        return 0.0
    total = sum(frame_box_iou(pred_tube.get(t), gt_boxes.get(t)) for t in range(overlap_start, overlap_end + 1))
    return total / union_frames


def share_above(values: Sequence[float], threshold: float, strict: bool) -> float:
    """Share of ``values`` above ``threshold`` (``>`` if strict else ``>=``); 0 for no values."""
    if not values:
        return 0.0
    return sum((v > threshold) if strict else (v >= threshold) for v in values) / len(values)


# --- masks: J (region IoU) and F (DAVIS boundary F-measure) -------------------------------------------
def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: IoU of two boolean masks (1 when both are empty)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary: mask pixels with a background 8-neighbour (outside the image counts as background)."""
    import cv2

    m = np.asarray(mask, np.uint8)
    eroded = cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (m - eroded).astype(bool)


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = DAVIS_BOUNDARY_TOLERANCE) -> float:
    """F: DAVIS boundary F-measure. A boundary pixel matches if the other boundary is within
    ``ceil(bound_th * image diagonal)`` pixels (Euclidean; ``bound_th >= 1`` is a pixel count)."""
    from scipy.ndimage import distance_transform_edt

    pred_b, gt_b = mask_boundary(pred), mask_boundary(gt)
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    tolerance = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred_b.shape))
    dist_to_gt = distance_transform_edt(~gt_b)
    dist_to_pred = distance_transform_edt(~pred_b)
    precision = float((dist_to_gt[pred_b] <= tolerance).sum() / n_pred)
    recall = float((dist_to_pred[gt_b] <= tolerance).sum() / n_gt)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# --- predictions --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """One answer to score: IDs, time range in seconds (None if unparsed), tube and masks per native frame, and the
    tracks the answer's IDs refer to (in memory, or the tracks JSON `predict` wrote), needed to score the ID."""

    ids: tuple[int, ...] = ()
    start_s: float | None = None
    end_s: float | None = None
    tube: Mapping[int, tuple[float, float, float, float]] | None = None
    masks: Mapping[int, Mapping[str, Any]] | None = None
    tracks_file: str | None = None
    tracks: TrackSet | None = None

    def load_tracks(self) -> TrackSet | None:
        """The tracks the IDs refer to; None when the prediction does not say."""
        if self.tracks is not None:
            return self.tracks
        return None if self.tracks_file is None else _load_tracks_file(self.tracks_file)

    @property
    def has_time(self) -> bool:
        return self.start_s is not None and self.end_s is not None


def _frame_keyed(obj: Any, where: str, name: str) -> dict[int, Any]:
    if not isinstance(obj, dict):
        raise AnnotationError(f"{where}: field '{name}' is {type(obj).__name__}, expected {{\"<frame>\": ...}}")
    out = {}
    for k, v in obj.items():
        try:
            frame = int(k)
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: field '{name}' has key {k!r}, expected a frame index") from None
        out[frame] = v
    return out


@lru_cache(maxsize=8)  # the queries of one video are scored one after another and share its tracks
def _load_tracks_file(path: str) -> TrackSet:
    return TrackSet.load(path)


def parse_prediction(obj: Any, where: str, base_dir: Path | None = None) -> Prediction:
    """A :class:`Prediction` from one predictions-JSON (or run-result query) object; one-line errors.
    A relative ``tracks_file`` is resolved against ``base_dir`` (the predictions file's folder)."""
    if not isinstance(obj, dict):
        raise AnnotationError(f"{where}: is {type(obj).__name__}, expected an object with ids, start_s, end_s, tube")
    ids = obj.get("ids", [])
    if ids is None:
        ids = []
    if isinstance(ids, int) and not isinstance(ids, bool):
        ids = [ids]
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise AnnotationError(f"{where}: field 'ids' is {ids!r}, expected a list of integers")
    times = []
    for name in ("start_s", "end_s"):
        v = obj.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise AnnotationError(f"{where}: field '{name}' is {v!r}, expected seconds (a number) or null")
        times.append(None if v is None else float(v))
    if times[0] is not None and times[1] is not None and times[1] < times[0]:
        raise AnnotationError(f"{where}: end_s {times[1]} is before start_s {times[0]}: a time range runs forwards")
    tube: dict[int, tuple[float, float, float, float]] | None = None
    if obj.get("tube") is not None:
        tube = {}
        for frame, box in _frame_keyed(obj["tube"], where, "tube").items():
            if box is None:
                continue
            if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
                raise AnnotationError(f"{where}: field 'tube' frame {frame} is {box!r}, expected [x1, y1, x2, y2]")
            x1, y1, x2, y2 = (float(v) for v in box)
            tube[frame] = (x1, y1, x2, y2)
    masks = None
    if obj.get("masks") is not None:
        masks = {}
        for frame, rle in _frame_keyed(obj["masks"], where, "masks").items():
            if rle is None:
                continue
            if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
                raise AnnotationError(f"{where}: field 'masks' frame {frame} is not a COCO RLE {{size, counts}}")
            masks[frame] = rle
    tracks_file = obj.get("tracks_file")
    if tracks_file is not None:
        if not isinstance(tracks_file, str) or not tracks_file:
            raise AnnotationError(f"{where}: field 'tracks_file' is {tracks_file!r}, expected a path")
        if base_dir is not None and not Path(tracks_file).is_absolute():
            tracks_file = str(base_dir / tracks_file)
    return Prediction(tuple(ids), times[0], times[1], tube, masks, tracks_file)


def _is_run_result(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("queries"), list) and "video" in obj


def match_predictions(
    data: Any, samples: Sequence[STVGSample], source: str, base_dir: Path | None = None
) -> tuple[dict[str, Prediction], list[str]]:
    """Assign the predictions in ``data`` to samples; returns ``({sample key: prediction}, unknown keys)``.

    ``data`` is ``{key: prediction}`` keyed by the GT's sample key or the video's stem, or a `run`
    result (``{"video": path, "queries": [...]}``, or a list of them), matched by the video file's stem
    and, when a video has several samples, by the query text.
    """
    by_key = {s.key: s for s in samples}
    by_stem: dict[str, list[STVGSample]] = {}
    for s in samples:
        by_stem.setdefault(s.video_stem, []).append(s)
    matched: dict[str, Prediction] = {}
    unknown: list[str] = []

    def assign(sample_key: str, pred: Prediction, label: str) -> None:
        if sample_key in matched:
            raise AnnotationError(f"{source}: two predictions for '{sample_key}' (the second is {label})")
        matched[sample_key] = pred

    if _is_run_result(data) or (isinstance(data, list) and data and all(_is_run_result(d) for d in data)):
        for result in [data] if isinstance(data, dict) else data:
            stem = Path(str(result["video"])).stem
            candidates = by_stem.get(stem, [])
            for i, q in enumerate(result["queries"]):
                label = f"{stem} query {i}"
                pred = parse_prediction(q, f"{source}: {label}", base_dir)
                text = str(q.get("query", "")).strip().lower() if isinstance(q, dict) else ""
                same_text = [s for s in candidates if s.query.strip().lower() == text]
                if len(same_text) == 1 or (not same_text and len(candidates) == 1 and len(result["queries"]) == 1):
                    assign((same_text or candidates)[0].key, pred, label)
                else:
                    unknown.append(label)
        return matched, unknown
    if not isinstance(data, dict):
        raise AnnotationError(
            f"{source}: predictions must be {{video key: {{ids, start_s, end_s, tube}}}} or a `run` result JSON"
        )
    for key, obj in data.items():
        pred = parse_prediction(obj, f"{source}: video '{key}'", base_dir)
        if key in by_key:
            assign(key, pred, key)
        elif len(by_stem.get(Path(key).stem, [])) == 1:
            assign(by_stem[Path(key).stem][0].key, pred, key)
        else:
            unknown.append(key)
    return matched, unknown


# --- per-sample scoring -------------------------------------------------------------------------------
ID_NOT_ASSESSABLE = {
    "no_tracks": "the prediction names no tracks for its IDs (`stvg-edge predict` writes them; `run -o` does not)",
    "target_no_match": "no track follows the GT target (the tracker lost it or never found it)",
    "target_ambiguous": "the GT target's frames are split between tracks",
}
"""Why a sample's ID could not be scored (counted under ``counts.id_not_assessable``)."""


@dataclass(frozen=True)
class SampleScore:
    """Scores of one sample; None where the metric does not apply."""

    key: str
    tiou: float
    viou: float
    id_correct: bool | None
    """None when not assessable: see ``id_status``."""
    id_status: str = "assessed"
    """"assessed", "missing" (no prediction: wrong) or a key of :data:`ID_NOT_ASSESSABLE`."""
    gt_track_id: int | None = None
    """The track assigned to the GT target (when the prediction has tracks and one wins the vote)."""
    j: float | None = None
    f: float | None = None


def gt_masks(sample: STVGSample) -> dict[int, dict] | None:
    """The target's GT masks (RLE) at GT frames, from ``gt_tracks`` + ``target_id``; None if there are none."""
    if sample.gt_tracks is None or sample.target_id is None:
        return None
    track = sample.gt_tracks["tracks"].get(str(sample.target_id))
    if track is None:
        return None
    first, last = sample.st_frame, sample.ed_frame
    assert first is not None and last is not None  # scored samples have ground truth (evaluate checks)
    masks = {
        int(f): m
        for f, m in zip(track["frames"], track.get("masks") or [])
        if m is not None and first <= int(f) <= last
    }
    return masks or None


def score_id(
    sample: STVGSample, pred: Prediction | None, config: GTIdConfig = GTIdConfig()
) -> tuple[bool | None, str, int | None]:
    """``(correct, status, GT target's track)``: correct when the answered IDs are exactly the track
    :func:`~stvgr1_edge.gt_match.assign_gt_id` gives the GT boxes, in the tracks the answer was given."""
    if pred is None:
        return False, "missing", None
    tracks = pred.load_tracks()
    if tracks is None:
        return None, "no_tracks", None
    if sample.width and sample.height and (tracks.width, tracks.height) != (sample.width, sample.height):
        raise AnnotationError(
            f"video '{sample.key}': the prediction's tracks are for a {tracks.width}x{tracks.height} video, the "
            f"annotation says {sample.width}x{sample.height}: the tracks belong to another video"
        )
    assignment = assign_gt_id(tracks, sample.gt_boxes, config)
    if assignment.track_id is None:
        return None, f"target_{assignment.status}", None
    return set(pred.ids) == {assignment.track_id}, "assessed", assignment.track_id


def score_sample(
    sample: STVGSample, pred: Prediction | None, convention: str = "tubedetr", gt_id: GTIdConfig = GTIdConfig()
) -> SampleScore:
    """tIoU, vIoU, ID correctness and (for mask predictions with GT masks) J and F of one sample."""
    _check_convention(convention)
    id_correct, id_status, gt_track = score_id(sample, pred, gt_id)
    j, f = _mask_scores(sample, pred)
    if pred is None or not pred.has_time:
        return SampleScore(sample.key, 0.0, 0.0, id_correct, id_status, gt_track, j, f)
    start_s, end_s = pred.start_s, pred.end_s
    assert start_s is not None and end_s is not None  # has_time
    fps = sample.frame_rate()
    tube = pred.tube or {}
    if convention == "tubedetr":
        assert sample.st_frame is not None and sample.ed_frame is not None and sample.num_frames is not None  # has GT
        pred_frames = frames_in_time_range(start_s, end_s, fps, sample.num_frames)
        gt_frames = range(sample.st_frame, sample.ed_frame + 1)
        tiou = temporal_iou_frames(pred_frames, gt_frames)
        v = viou(tube, sample.gt_boxes, pred_frames, gt_frames)
    else:
        assert sample.st_time is not None and sample.ed_time is not None  # filled in from the frames when loaded
        tiou = temporal_iou_seconds((start_s, end_s), (sample.st_time, sample.ed_time))
        v = viou_stvg_r1(tube, sample.gt_boxes, (start_s, end_s), (sample.st_time, sample.ed_time), fps)
    return SampleScore(sample.key, tiou, v, id_correct, id_status, gt_track, j, f)


def _mask_scores(sample: STVGSample, pred: Prediction | None) -> tuple[float | None, float | None]:
    """Mean J and F over the GT frames that have a GT mask (a frame without a predicted mask is empty)."""
    masks = gt_masks(sample)
    if masks is None:
        return None, None
    js, fs = [], []
    for frame, gt_rle in sorted(masks.items()):
        gt = rle_to_mask(gt_rle)
        pred_rle = None if pred is None or pred.masks is None else pred.masks.get(frame)
        pm = np.zeros_like(gt) if pred_rle is None else rle_to_mask(pred_rle)
        if pm.shape != gt.shape:
            raise AnnotationError(
                f"video '{sample.key}': predicted mask at frame {frame} is {pm.shape[1]}x{pm.shape[0]}, GT is "
                f"{gt.shape[1]}x{gt.shape[0]}"
            )
        js.append(region_similarity(pm, gt))
        fs.append(boundary_f_measure(pm, gt))
    return float(np.mean(js)), float(np.mean(fs))


# --- aggregate ----------------------------------------------------------------------------------------
def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise BadInputError(f"unknown convention '{convention}': use one of {', '.join(CONVENTIONS)}")


def _check_gt(samples: Sequence[STVGSample]) -> None:
    if not samples:
        raise AnnotationError("the ground truth has no samples: nothing to evaluate")
    no_gt = [s.key for s in samples if not s.has_ground_truth]
    if no_gt:
        raise AnnotationError(
            f"{len(no_gt)} sample(s) have no ground truth (first: '{no_gt[0]}'): a query list cannot be scored"
        )


def summarize(
    matched: Mapping[str, Prediction],
    samples: Sequence[STVGSample],
    convention: str = "tubedetr",
    per_video: bool = False,
    thresholds: Iterable[float] = THRESHOLDS,
    gt_id: GTIdConfig = GTIdConfig(),
    unknown: Sequence[str] = (),
    failed: Mapping[str, str] | None = None,
) -> dict:
    """Score already matched predictions (``{sample key: Prediction}``) against the samples: metrics, counts and
    the keys that are missing (scored 0), failed (the predictor recorded an error; scored 0) or unknown."""
    _check_convention(convention)
    _check_gt(samples)
    thresholds = tuple(thresholds)
    strict = convention == "tubedetr"
    failed = dict(failed or {})
    scores = [score_sample(s, matched.get(s.key), convention, gt_id) for s in samples]
    missing = [s.key for s in samples if s.key not in matched and s.key not in failed]
    if missing or failed:
        logger.warning(
            "%d of %d samples have no prediction (%d failed); they score 0",
            len(missing) + len(failed),
            len(samples),
            len(failed),
        )
    has_tubes = any(p.tube is not None for p in matched.values())
    has_masks = any(p.masks is not None for p in matched.values())

    tious = [sc.tiou for sc in scores]
    metrics: dict[str, float | None] = {"m_tIoU": float(np.mean(tious))}
    vious = [sc.viou for sc in scores]
    metrics["m_vIoU"] = float(np.mean(vious)) if has_tubes else None
    for r in thresholds:
        metrics[f"vIoU@{r}"] = share_above(vious, r, strict) if has_tubes else None
    for r in thresholds:
        metrics[f"tIoU@{r}"] = share_above(tious, r, strict)
    with_id = [sc.id_correct for sc in scores if sc.id_correct is not None]
    # missing predictions count as wrong, but only once some answer could be assessed at all
    any_assessed = any(sc.id_status == "assessed" for sc in scores)
    metrics["id_accuracy"] = sum(with_id) / len(with_id) if any_assessed else None
    with_masks = [sc for sc in scores if sc.j is not None]
    if has_masks and with_masks:
        j = float(np.mean([sc.j for sc in with_masks]))
        f = float(np.mean([sc.f for sc in with_masks if sc.f is not None]))
        metrics["J"], metrics["F"], metrics["J&F"] = j, f, (j + f) / 2
    else:
        metrics["J"] = metrics["F"] = metrics["J&F"] = None

    not_assessable = {reason: sum(sc.id_status == reason for sc in scores) for reason in ID_NOT_ASSESSABLE}
    out: dict[str, Any] = {
        "convention": convention,
        "convention_description": CONVENTIONS[convention],
        "counts": {
            "samples": len(samples),
            "predicted": len(matched),
            "missing": len(missing),
            "failed": len(failed),
            "unknown": len(unknown),
            "unparsed_time": sum(1 for p in matched.values() if not p.has_time),
            "with_tube": sum(1 for p in matched.values() if p.tube is not None),
            "id_assessed": len(with_id) if any_assessed else 0,
            "id_not_assessable": {k: v for k, v in not_assessable.items() if v},
            "with_gt_masks": len(with_masks),
        },
        "metrics": metrics,
        "missing": missing,
        "failed": failed,
        "unknown": list(unknown),
    }
    if per_video:
        out["per_video"] = {
            sc.key: {
                "tIoU": sc.tiou,
                "vIoU": sc.viou if has_tubes else None,
                "id_correct": sc.id_correct,
                "id_status": sc.id_status,
                "gt_track_id": sc.gt_track_id,
                "J": sc.j if has_masks else None,
                "F": sc.f if has_masks else None,
            }
            for sc in scores
        }
    return out


def evaluate(
    predictions: Any,
    samples: Sequence[STVGSample],
    convention: str = "tubedetr",
    per_video: bool = False,
    thresholds: Iterable[float] = THRESHOLDS,
    source: str = "predictions",
    tracks: Mapping[str, TrackSet] | None = None,
    gt_id: GTIdConfig = GTIdConfig(),
) -> dict:
    """Score predictions (predictions JSON or `run` result, already parsed) against GT samples.

    ``tracks`` (``{sample key: TrackSet}``) gives the tracks an in-memory answer's IDs refer to (a `run` result
    does not carry them). Missing predictions score 0 and are listed; predictions for unknown keys are listed
    and ignored. vIoU metrics are null when no prediction carries a tube (temporal-only predictions); ID accuracy
    when no sample's ID is assessable; J/F when no sample has GT masks or no prediction has masks.
    """
    _check_convention(convention)
    _check_gt(samples)
    matched, unknown = match_predictions(predictions, samples, source)
    if tracks:
        matched = {k: replace(p, tracks=tracks.get(k, p.tracks)) for k, p in matched.items()}
    return summarize(matched, samples, convention, per_video, thresholds, gt_id, unknown)


# --- prediction files ---------------------------------------------------------------------------------
_SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})$")


def shard_file_name(path: str | os.PathLike, index: int, count: int) -> Path:
    """``pred.jsonl`` -> ``pred-00001-of-00004.jsonl``: where shard ``index`` of ``count`` writes (one shard: as is)."""
    path = Path(path)
    if count == 1:
        return path
    return path.with_name(f"{path.stem}-{index:05d}-of-{count:05d}{path.suffix}")


def expand_prediction_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Each path as is, or -- when it does not exist -- its complete set of shard files (``pred-*-of-*.jsonl``)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.exists():
            out.append(path)
            continue
        shards = sorted(path.parent.glob(f"{path.stem}-*-of-*{path.suffix}"))
        shards = [s for s in shards if _SHARD_NAME.search(s.stem)]
        if not shards:
            out.append(path)  # read_json reports it as not found
            continue
        counts = {int(_SHARD_NAME.search(s.stem).group(2)) for s in shards}  # type: ignore[union-attr]
        if len(counts) != 1:
            raise BadInputError(f"{path}: shard files of different shard counts {sorted(counts)} lie beside it")
        count = counts.pop()
        for index in range(count):
            expected = shard_file_name(path, index, count)
            if not expected.exists():
                raise BadInputError(
                    f"{path}: shard {expected.name} is missing (still running? it is `predict --shard {index}/{count}`)"
                )
            out.append(expected)
    return out


def read_prediction_lines(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A `predict` JSONL file as ``({key: prediction object}, {key: error line of a failed video})``."""
    if not path.exists():
        raise BadInputError(f"predictions file not found: {path}")
    predictions: dict[str, Any] = {}
    failed: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(
                    f"{path}: line {number} is not valid JSON ({exc.msg}); a `predict` run that was killed while "
                    "writing it drops it when resumed"
                ) from None
            key = obj.get("key") if isinstance(obj, dict) else None
            if not isinstance(key, str):
                raise AnnotationError(f"{path}: line {number} has no 'key' (the sample key of the annotation file)")
            if key in predictions or key in failed:
                raise AnnotationError(f"{path}: two lines for '{key}' (the second at line {number})")
            if obj.get("error") is not None:
                failed[key] = str(obj["error"])
            else:
                predictions[key] = obj
    return predictions, failed


def load_predictions(
    files: Sequence[Path], samples: Sequence[STVGSample]
) -> tuple[dict[str, Prediction], list[str], dict[str, str]]:
    """Read and match prediction files (JSON, `run` results, `predict` JSONL; see :func:`expand_prediction_paths`
    for shard sets): ``({sample key: prediction}, unknown keys, {sample key: error of a failed video})``."""
    matched: dict[str, Prediction] = {}
    unknown: list[str] = []
    failed: dict[str, str] = {}
    for path in files:
        if path.suffix == ".jsonl":
            data, file_failed = read_prediction_lines(path)
        else:
            data, file_failed = read_json(path, "predictions file"), {}
        file_matched, file_unknown = match_predictions(data, samples, path.name, base_dir=path.parent)
        for key in file_matched.keys() & (matched.keys() | failed.keys()):
            raise AnnotationError(f"{path.name}: a second prediction for '{key}' (another file has one)")
        matched.update(file_matched)
        unknown.extend(file_unknown)
        failed.update(file_failed)
    return matched, unknown, failed


def evaluate_files(
    pred_paths: str | os.PathLike | Sequence[str | os.PathLike],
    gt_path: str | os.PathLike,
    conventions: Sequence[str] = tuple(CONVENTIONS),
    per_video: bool = False,
    baseline: str | None = None,
    gt_id: GTIdConfig = GTIdConfig(),
) -> dict:
    """Score prediction files against an annotation file (any loadable format) in each convention; with
    ``baseline="prior"`` also the prior baseline (:mod:`stvgr1_edge.baseline`) on the same samples and tracks."""
    for convention in conventions:
        _check_convention(convention)
    if isinstance(pred_paths, (str, os.PathLike)):
        pred_paths = [pred_paths]
    files = expand_prediction_paths(pred_paths)
    for path in files:  # the cheap check before the annotations are parsed
        if not path.is_file():
            raise BadInputError(f"predictions file not found: {path}")
    samples = load_annotations(gt_path)
    _check_gt(samples)
    matched, unknown, failed = load_predictions(files, samples)
    out: dict[str, Any] = {
        "files": {"predictions": [str(p) for p in files], "ground_truth": str(gt_path)},
        "results": {
            c: summarize(matched, samples, c, per_video, gt_id=gt_id, unknown=unknown, failed=failed)
            for c in conventions
        },
    }
    if baseline is not None:
        from .baseline import BASELINES, prior_baseline

        if baseline not in BASELINES:
            raise BadInputError(f"unknown baseline '{baseline}': use one of {', '.join(BASELINES)}")
        prior, description = prior_baseline(samples, matched)
        out["baseline"] = {
            "name": baseline,
            **description,
            "results": {c: summarize(prior, samples, c, gt_id=gt_id) for c in conventions},
        }
    return out
