"""``TrackSet``: every tracked object's ID and its per-frame boxes, masks and scores.

This is the seam between tracking and everything after it (markers, tubes, GT-ID assignment) and the
on-disk tracks JSON of ARCHITECTURE.md::

    {"fps", "width", "height", "num_frames",
     "tracks": {"<id>": {"frames": [...], "boxes": [[x1, y1, x2, y2], ...], "masks": [RLE|null, ...],
                         "scores": [...], "label": str}}}

Boxes are absolute pixel xyxy in the original frame; frames are 0-based native indices, increasing.
Masks are stored as COCO RLE so that long videos stay small in memory.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .errors import AnnotationError, read_json, write_json_atomic


@dataclass
class Track:
    """One object's observations, in increasing frame order."""

    track_id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    masks: list[dict | None] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    label: str = ""

    def add(self, frame: int, box, mask: dict | None = None, score: float = 1.0) -> None:
        """Append an observation; frames must increase (a repeated last frame replaces it)."""
        frame = int(frame)
        box = [float(v) for v in box]
        if self.frames and frame <= self.frames[-1]:
            if frame != self.frames[-1]:
                raise ValueError(f"track {self.track_id}: frame {frame} added after frame {self.frames[-1]}")
            self.boxes[-1], self.masks[-1], self.scores[-1] = box, mask, float(score)
            return
        self.frames.append(frame)
        self.boxes.append(box)
        self.masks.append(mask)
        self.scores.append(float(score))

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def first_frame(self) -> int:
        return self.frames[0]

    @property
    def last_frame(self) -> int:
        return self.frames[-1]

    def _position(self, frame: int) -> int | None:
        i = bisect.bisect_left(self.frames, frame)
        return i if i < len(self.frames) and self.frames[i] == frame else None

    def box_at(self, frame: int) -> list[float] | None:
        """The observed box at ``frame``, or None."""
        i = self._position(frame)
        return None if i is None else self.boxes[i]

    def mask_at(self, frame: int) -> dict | None:
        i = self._position(frame)
        return None if i is None else self.masks[i]

    def interpolated_box(self, frame: int, max_gap: int | None = None) -> list[float] | None:
        """The box at ``frame``: observed, or linearly interpolated between the observations around it.

        Never extrapolates beyond the first/last observation; with ``max_gap`` set, gaps longer than
        that many frames (an object that was really gone) are not bridged.
        """
        i = bisect.bisect_left(self.frames, frame)
        if i < len(self.frames) and self.frames[i] == frame:
            return self.boxes[i]
        if i == 0 or i == len(self.frames):
            return None
        f0, f1 = self.frames[i - 1], self.frames[i]
        if max_gap is not None and f1 - f0 > max_gap:
            return None
        w = (frame - f0) / (f1 - f0)
        b0, b1 = np.asarray(self.boxes[i - 1]), np.asarray(self.boxes[i])
        return [float(v) for v in (1 - w) * b0 + w * b1]


@dataclass
class TrackSet:
    """All tracks of one video plus the video geometry they refer to."""

    width: int
    height: int
    fps: float
    num_frames: int
    tracks: dict[int, Track] = field(default_factory=dict)

    def track(self, track_id: int, label: str = "") -> Track:
        """The track with this ID, created empty if new."""
        t = self.tracks.get(int(track_id))
        if t is None:
            t = self.tracks[int(track_id)] = Track(int(track_id), label=label)
        return t

    def add(
        self, track_id: int, frame: int, box, mask: dict | None = None, score: float = 1.0, label: str = ""
    ) -> None:
        self.track(track_id, label).add(frame, box, mask, score)

    @property
    def ids(self) -> list[int]:
        return sorted(self.tracks)

    def __len__(self) -> int:
        return len(self.tracks)

    def __iter__(self) -> Iterator[Track]:
        return iter(self.tracks[i] for i in self.ids)

    def objects_at(self, frame: int) -> list[tuple[int, list[float], dict | None]]:
        """``(id, box, mask)`` of every object observed at ``frame``, by increasing ID."""
        out = []
        for t in self:
            i = t._position(frame)
            if i is not None:
                out.append((t.track_id, t.boxes[i], t.masks[i]))
        return out

    # -- JSON -------------------------------------------------------------------------------------
    def to_dict(self, decimals: int | None = 2) -> dict:
        """The tracks JSON; boxes rounded to ``decimals`` (None: exact, so that loading gives the same floats)."""

        def rounded(v: float, places: int | None) -> float:
            return v if places is None else round(v, places)

        return {
            "fps": float(self.fps),
            "width": int(self.width),
            "height": int(self.height),
            "num_frames": int(self.num_frames),
            "tracks": {
                str(t.track_id): {
                    "frames": list(t.frames),
                    "boxes": [[rounded(v, decimals) for v in b] for b in t.boxes],
                    "masks": list(t.masks),
                    "scores": [rounded(s, None if decimals is None else 4) for s in t.scores],
                    "label": t.label,
                }
                for t in self
            },
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "tracks") -> "TrackSet":
        try:
            ts = cls(int(d["width"]), int(d["height"]), float(d["fps"]), int(d["num_frames"]))
            for key, td in d["tracks"].items():
                frames, boxes = td["frames"], td["boxes"]
                masks = td.get("masks") or [None] * len(frames)
                scores = td.get("scores") or [1.0] * len(frames)
                if not (len(frames) == len(boxes) == len(masks) == len(scores)):
                    raise AnnotationError(f"{source}: track {key}: frames, boxes, masks and scores differ in length")
                t = ts.track(int(key), td.get("label", ""))
                for f, b, m, s in zip(frames, boxes, masks, scores):
                    if len(b) != 4:
                        raise AnnotationError(f"{source}: track {key}: box {b} is not [x1, y1, x2, y2]")
                    t.add(f, b, m, s)
        except AnnotationError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AnnotationError(
                f"{source}: not a tracks file ({type(exc).__name__}: {exc}); expected the tracks JSON of `stvg-edge "
                "track`"
            ) from None
        return ts

    def save(self, path: str | os.PathLike, decimals: int | None = 2) -> None:
        write_json_atomic(path, self.to_dict(decimals))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrackSet":
        return cls.from_dict(read_json(path, "tracks file"), source=str(path))
