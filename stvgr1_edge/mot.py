"""MOTChallenge text tracks: what py-motmetrics, TrackEval and most MOT tools read.

One line per box, comma-separated, sorted by frame then ID::

    frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1

Frames are **1-based** (the MOTChallenge convention; a :class:`~stvgr1_edge.tracks.TrackSet` counts from 0). Boxes are
the tracks' own pixel coordinates as left, top, width, height, written as SORT and ByteTrack write theirs: no pixel
is added for MOTChallenge's 1-based image origin (py-motmetrics' loader subtracts one from ``bb_left``/``bb_top`` of
ground truth and results alike, which leaves every IoU unchanged). Masks and labels have no place in this format;
the video geometry (size, fps, frame count) is not in the file either, so :func:`read_mot` takes it as arguments.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import AnnotationError, BadInputError, atomic_output
from .tracks import TrackSet

UNUSED = "-1,-1,-1"
"""The 3D world coordinates of MOT15's last three columns: unknown for 2D tracks."""


def mot_rows(tracks: TrackSet) -> list[tuple[int, int, float, float, float, float, float]]:
    """``(frame (1-based), id, left, top, width, height, conf)`` for every observation, by frame then ID."""
    rows = []
    for track in tracks:
        for frame, box, score in zip(track.frames, track.boxes, track.scores):
            x1, y1, x2, y2 = box
            rows.append((frame + 1, track.track_id, x1, y1, x2 - x1, y2 - y1, score))
    rows.sort(key=lambda row: (row[0], row[1]))
    return rows


def write_mot(tracks: TrackSet, path: str | os.PathLike) -> Path:
    """Write ``tracks`` as a MOTChallenge text file (boxes to 2 decimals), atomically: a failed write leaves no
    file, or the previous one untouched. Returns the path written."""
    lines = []
    for frame, track_id, left, top, width, height, conf in mot_rows(tracks):
        values = (left, top, width, height, conf)
        if not all(math.isfinite(v) for v in values):
            raise BadInputError(f"track {track_id} has a box or score that is not a number at frame {frame - 1}")
        lines.append(f"{frame},{track_id},{left:.2f},{top:.2f},{width:.2f},{height:.2f},{conf:.4f},{UNUSED}\n")
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
    return path


def read_mot(path: str | os.PathLike, width: int, height: int, fps: float, num_frames: int) -> TrackSet:
    """The :class:`TrackSet` of a MOTChallenge text file (MOT15's 10 columns, or MOT16/17's 9), for a video of
    the given geometry. ``conf`` becomes the score (-1, "unknown", becomes 1.0)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"MOT file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AnnotationError(f"MOT file is not UTF-8 text: {path}") from None

    rows: list[tuple[int, int, list[float], float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        where = f"{path}, line {number}"
        if len(fields) < 6:
            raise AnnotationError(f"{where}: {len(fields)} fields, expected frame,id,left,top,width,height[,conf,...]")
        try:
            frame_1, track_id = _integer(fields[0]), _integer(fields[1])
            left, top, box_width, box_height = (float(v) for v in fields[2:6])
            conf = float(fields[6]) if len(fields) > 6 else 1.0
        except ValueError:
            raise AnnotationError(f"{where}: not numbers: {line.strip()!r}") from None
        if not 1 <= frame_1 <= num_frames:
            raise AnnotationError(f"{where}: frame {frame_1} is outside 1..{num_frames} (MOT frames are 1-based)")
        if box_width < 0 or box_height < 0:
            raise AnnotationError(f"{where}: negative box width or height")
        box = [left, top, left + box_width, top + box_height]
        rows.append((track_id, frame_1 - 1, box, 1.0 if conf == -1 else conf))

    tracks = TrackSet(width=int(width), height=int(height), fps=float(fps), num_frames=int(num_frames))
    rows.sort(key=lambda row: (row[0], row[1]))  # a track's frames must be added in increasing order
    for i, (track_id, frame, box, score) in enumerate(rows):
        if i and rows[i - 1][:2] == (track_id, frame):
            raise AnnotationError(f"{path}: track {track_id} has two boxes at frame {frame + 1}")
        tracks.add(track_id, frame, box, score=score)
    return tracks


def _integer(text: str) -> int:
    """``"3"`` or ``"3.0"`` (some tools write IDs and frames as floats) -> 3; anything else raises ValueError."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)
