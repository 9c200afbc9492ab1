"""The tracking seam: detections in, a streaming tracker, a ``TrackSet`` out.

A tracker sees one decoded frame at a time (``step``) and keeps only what it needs (bounded memory);
``finish`` returns the ``TrackSet``. Settings are frozen configs; what belongs to one video is made by ``start``:
the tracker's state and its :class:`TrackingSchedule` — every ``every``-th frame plus the frames passed as
``always_track`` (the pipeline passes the frames the VLM will see, so markers are drawn from real observations
there, never from interpolation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..tracks import TrackSet
from ..video import Frame, VideoInfo, iter_frames, probe_video


@dataclass(frozen=True)
class Detections:
    """Detections in one frame, as parallel arrays (supervision-style).

    ``boxes`` (N, 4) float32 absolute xyxy pixels; ``scores`` (N,); ``labels`` N class names;
    ``masks`` optional (N, H, W) bool.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: tuple[str, ...] = ()
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float32).reshape(-1))
        if not self.labels:
            object.__setattr__(self, "labels", ("object",) * len(self.boxes))
        if not (len(self.boxes) == len(self.scores) == len(self.labels)):
            raise ValueError("Detections: boxes, scores and labels differ in length")
        if self.masks is not None and len(self.masks) != len(self.boxes):
            raise ValueError("Detections: masks and boxes differ in length")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), ())

    def filter(self, keep: np.ndarray | Sequence[bool]) -> "Detections":
        keep = np.asarray(keep, dtype=bool)
        return Detections(
            self.boxes[keep],
            self.scores[keep],
            tuple(label for label, k in zip(self.labels, keep) if k),
            None if self.masks is None else self.masks[keep],
        )


class Detector(ABC):
    """Finds objects in one RGB frame."""

    @abstractmethod
    def __call__(self, image: np.ndarray) -> Detections: ...


@dataclass(frozen=True)
class TrackerConfig:
    """Shared tracker settings. Defaults follow STVG-R1 §2."""

    every: int = 1
    """Track every k-th frame; frames in between are interpolated when a tube is built."""
    keyframe_interval: int = 15
    """Run the detector again every this many *tracked* frames (the reference: 15)."""


@dataclass(frozen=True)
class TrackingSchedule:
    """Which frames of one video are tracked: every ``every``-th, plus ``always_track``."""

    every: int = 1
    always_track: frozenset[int] = frozenset()
    """Frame indices tracked regardless of ``every`` (e.g. the frames sampled for the VLM)."""

    def should_track(self, index: int) -> bool:
        return index % self.every == 0 or index in self.always_track


class StreamingTracker(ABC):
    """Frame-by-frame tracker with temporally consistent integer IDs starting at 1."""

    config: TrackerConfig
    schedule: TrackingSchedule = TrackingSchedule()
    """This video's schedule, set by :meth:`start` (via :meth:`_schedule_video`)."""

    @abstractmethod
    def start(self, info: VideoInfo, always_track: frozenset[int] = frozenset()) -> None:
        """Reset state for a new video; ``always_track``: frames to track whatever ``config.every`` says.
        Implementations call :meth:`_schedule_video` first."""

    def _schedule_video(self, always_track: frozenset[int] | set[int] | tuple[int, ...]) -> None:
        self.schedule = TrackingSchedule(self.config.every, frozenset(int(i) for i in always_track))

    @abstractmethod
    def step(self, frame: Frame) -> None:
        """Consume the next frame (every decoded frame is passed; skipped ones cost nothing)."""

    @abstractmethod
    def finish(self) -> TrackSet:
        """Flush and return all tracks."""

    def should_track(self, index: int) -> bool:
        return self.schedule.should_track(index)

    def track_video(
        self,
        path: str,
        info: VideoInfo | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        always_track: frozenset[int] = frozenset(),
    ) -> TrackSet:
        """Convenience: decode ``path`` once and track it (``on_frame`` sees every tracked frame, e.g. a progress
        bar; frames the schedule skips are decoded, not converted)."""
        info = info or probe_video(path)
        self.start(info, always_track)
        for frame in iter_frames(path, info=info, keep=self.should_track):
            self.step(frame)
            if on_frame is not None:
                on_frame(frame)
        return self.finish()
