"""The tracking seam: detections in, a streaming tracker, a ``TrackSet`` out.

A tracker sees one decoded frame at a time (``step``) and keeps only what it needs (bounded memory);
``finish`` returns the ``TrackSet``. It runs on every ``every``-th frame plus any frame listed in
``always_track`` (the pipeline passes the frames the VLM will see, so markers are drawn from real
observations there, never from interpolation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
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
        return Detections(self.boxes[keep], self.scores[keep], tuple(l for l, k in zip(self.labels, keep) if k),
                          None if self.masks is None else self.masks[keep])


class Detector(ABC):
    """Finds objects in one RGB frame."""

    @abstractmethod
    def __call__(self, image: np.ndarray) -> Detections: ...


@dataclass
class TrackerConfig:
    """Shared tracker settings. Defaults follow STVG-R1 §2."""

    every: int = 1
    """Track every k-th frame; frames in between are interpolated when a tube is built."""
    keyframe_interval: int = 15
    """Run the detector again every this many *tracked* frames (the reference: 15)."""
    always_track: frozenset[int] = field(default_factory=frozenset)
    """Frame indices that are tracked regardless of ``every`` (e.g. the frames sampled for the VLM)."""


class StreamingTracker(ABC):
    """Frame-by-frame tracker with temporally consistent integer IDs starting at 1."""

    config: TrackerConfig

    @abstractmethod
    def start(self, info: VideoInfo) -> None:
        """Reset state for a new video."""

    @abstractmethod
    def step(self, frame: Frame) -> None:
        """Consume the next frame (every decoded frame is passed; skipped ones cost nothing)."""

    @abstractmethod
    def finish(self) -> TrackSet:
        """Flush and return all tracks."""

    def should_track(self, index: int) -> bool:
        return index % self.config.every == 0 or index in self.config.always_track

    def track_video(self, path: str, info: VideoInfo | None = None,
                    on_frame: Callable[[Frame], None] | None = None) -> TrackSet:
        """Convenience: decode ``path`` once and track it (``on_frame`` sees every frame, e.g. a progress bar)."""
        info = info or probe_video(path)
        self.start(info)
        for frame in iter_frames(path, info=info):
            self.step(frame)
            if on_frame is not None:
                on_frame(frame)
        return self.finish()
