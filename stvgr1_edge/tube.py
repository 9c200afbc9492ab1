"""From an answer to a spatio-temporal tube: the tracker's boxes for the answered ID(s) inside the
answered time range (`STVG-R1.md` §1, §6). Pure: no model, no video, only a ``TrackSet`` and times.

* Frames: every native frame whose time lies in ``[start_s, end_s]`` (both ends included).
* Boxes: the track's observed box; on frames the tracker skipped (``every`` k), the linear
  interpolation between the observations around it (``Track.interpolated_box``; never extrapolated).
* Several IDs: a box per ID (``boxes_by_id``) and their union box per frame (``boxes``, what the
  result JSON and the metrics use).
* Masks: only where the tracker observed one; with several IDs, the union of the observed masks.
* ID repair (off by default, the reference evaluation's lenient rule): where an answered ID has no
  box, take the object present in that frame whose box best overlaps the tube's previous box; failing
  that, the ID's box at the nearest frame where it was tracked; failing that, the largest object in
  the frame (by mask area, else box area).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .answer import GroundingAnswer
from .masks import box_iou_matrix, mask_to_rle, rle_area, rle_to_mask
from .tracks import Track, TrackSet

logger = logging.getLogger(__name__)

_TIME_EPS = 1e-6  # seconds; frame times and answered times both come from decimal text


@dataclass(frozen=True)
class Tube:
    """The answer in space and time. Frames are 0-based native indices; boxes absolute xyxy pixels."""

    ids: tuple[int, ...]
    start_s: float | None
    end_s: float | None
    boxes: dict[int, list[float]] = field(default_factory=dict)
    """frame → box; with several IDs, the union box of those present in that frame."""
    boxes_by_id: dict[int, dict[int, list[float]]] = field(default_factory=dict)
    """ID → frame → box."""
    masks: dict[int, dict] = field(default_factory=dict)
    """frame → COCO RLE, on frames where the tracker observed a mask (union over the IDs)."""
    interpolated_frames: tuple[int, ...] = ()
    """Frames where some ID's box was interpolated between tracked frames."""
    repaired_frames: tuple[int, ...] = ()
    """Frames where some ID's box came from ID repair (another object or a held box)."""
    warnings: tuple[str, ...] = ()

    @property
    def frames(self) -> list[int]:
        return sorted(self.boxes)

    @property
    def is_empty(self) -> bool:
        return not self.boxes

    def __len__(self) -> int:
        return len(self.boxes)

    def boxes_json(self, decimals: int = 2) -> dict[str, list[float]]:
        """``{"<frame_index>": [x1, y1, x2, y2]}`` as in the result and predictions JSON."""
        return {str(f): [round(float(v), decimals) for v in self.boxes[f]] for f in self.frames}


def frames_in_range(frame_times_s: Sequence[float], start_s: float, end_s: float) -> range:
    """Indices of the frames whose time lies in ``[start_s, end_s]`` (times increasing)."""
    first = bisect.bisect_left(frame_times_s, start_s - _TIME_EPS)
    stop = bisect.bisect_right(frame_times_s, end_s + _TIME_EPS)
    return range(first, max(first, stop))


def build_tube(
    answer: GroundingAnswer,
    tracks: TrackSet,
    frame_times_s: Sequence[float] | None = None,
    *,
    interpolate: bool = True,
    max_gap: int | None = None,
    id_repair: bool = False,
) -> Tube:
    """The tube of ``answer`` over ``tracks``.

    ``frame_times_s``: every native frame's time in seconds (``VideoInfo.frame_times_s``); None means
    ``index / tracks.fps`` for ``tracks.num_frames`` frames. ``interpolate``: fill frames the tracker
    skipped; ``max_gap``: do not bridge gaps longer than this many frames. ``id_repair``: the lenient
    reference rule (module docstring). An answer that did not parse, or has no ID or no time range,
    gives an empty tube.
    """
    if not answer.parse_ok or not answer.ids or not answer.has_time_range:
        return Tube(answer.ids, answer.start_s, answer.end_s)
    if frame_times_s is None:
        frame_times_s = [i / tracks.fps for i in range(tracks.num_frames)]
    assert answer.start_s is not None and answer.end_s is not None  # has_time_range
    frames = frames_in_range(frame_times_s, answer.start_s, answer.end_s)

    warnings: list[str] = []
    boxes_by_id: dict[int, dict[int, list[float]]] = {}
    masks_by_frame: dict[int, list[dict]] = {}
    interpolated: set[int] = set()
    repaired: set[int] = set()
    for track_id in answer.ids:
        track = tracks.tracks.get(track_id)
        if track is None or len(track) == 0:
            warnings.append(f"ID {track_id} was never tracked" + (": repaired from other objects" if id_repair else ""))
        per_frame: dict[int, list[float]] = {}
        previous_box: list[float] | None = None
        for frame in frames:
            box = None
            if track is not None:
                box = track.box_at(frame)
                if box is not None:
                    mask = track.mask_at(frame)
                    if mask is not None:
                        masks_by_frame.setdefault(frame, []).append(mask)
                elif interpolate:
                    box = track.interpolated_box(frame, max_gap=max_gap)
                    if box is not None:
                        interpolated.add(frame)
            if box is None and id_repair:
                box = _repaired_box(tracks, track, frame, previous_box)
                if box is not None:
                    repaired.add(frame)
            if box is not None:
                per_frame[frame] = [float(v) for v in box]
                previous_box = per_frame[frame]
        boxes_by_id[track_id] = per_frame

    union: dict[int, list[float]] = {}
    for per_frame in boxes_by_id.values():
        for frame, box in per_frame.items():
            union[frame] = box if frame not in union else _union_box(union[frame], box)
    masks = {frame: (rles[0] if len(rles) == 1 else _union_mask(rles)) for frame, rles in masks_by_frame.items()}
    if frames and not union:
        warnings.append(
            f"no box for ID(s) {', '.join(map(str, answer.ids))} between {answer.start_s:.2f} and {answer.end_s:.2f} s"
        )
    for w in warnings:
        logger.debug("tube: %s", w)
    return Tube(
        answer.ids,
        answer.start_s,
        answer.end_s,
        dict(sorted(union.items())),
        boxes_by_id,
        dict(sorted(masks.items())),
        tuple(sorted(interpolated & union.keys())),
        tuple(sorted(repaired)),
        tuple(warnings),
    )


def _repaired_box(
    tracks: TrackSet, track: Track | None, frame: int, previous_box: list[float] | None
) -> list[float] | None:
    """Reference ID repair for one frame where the ID has no box (module docstring)."""
    objects = tracks.objects_at(frame)
    if previous_box is not None and objects:
        ious = box_iou_matrix(np.asarray([previous_box]), np.asarray([box for _, box, _ in objects]))[0]
        best = int(np.argmax(ious))
        if ious[best] > 0:
            return objects[best][1]
    if track is not None and len(track):
        i = bisect.bisect_left(track.frames, frame)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(track.frames)]
        nearest = min(candidates, key=lambda j: (abs(track.frames[j] - frame), track.frames[j]))
        return track.boxes[nearest]
    if objects:
        return max(objects, key=lambda obj: (_object_area(obj[1], obj[2]), -obj[0]))[1]
    return None


def _object_area(box: list[float], mask: dict | None) -> float:
    if mask is not None:
        return float(rle_area(mask))
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _union_box(a: list[float], b: list[float]) -> list[float]:
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def _union_mask(rles: list[dict]) -> dict:
    merged = rle_to_mask(rles[0])
    for rle in rles[1:]:
        merged |= rle_to_mask(rle)
    return mask_to_rle(merged)
