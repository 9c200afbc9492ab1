"""``ReplayTracker``: serve tracks computed earlier (``stvg-edge track -o tracks.json``) as if tracking live.

Lets ``stvg-edge run --tracks tracks.json`` ask many questions about one video without tracking it again,
and lets tests feed ground-truth tracks through the whole pipeline.
"""

from __future__ import annotations

from ..errors import BadInputError
from ..tracks import TrackSet
from ..video import Frame, VideoInfo
from .base import StreamingTracker, TrackerConfig


class ReplayTracker(StreamingTracker):
    """A tracker whose answer is known in advance. ``start`` checks the tracks belong to the video."""

    def __init__(self, tracks: TrackSet, source: str = "tracks"):
        self.tracks = tracks
        self.source = source
        self.config = TrackerConfig()

    def start(self, info: VideoInfo, always_track: frozenset[int] = frozenset()) -> None:
        self._schedule_video(always_track)
        t = self.tracks
        if (t.width, t.height, t.num_frames) != (info.width, info.height, info.num_frames):
            raise BadInputError(
                f"{self.source} is for a {t.width}x{t.height} video of {t.num_frames} frames, but {info.path} is "
                f"{info.width}x{info.height} with {info.num_frames} frames: track this video with `stvg-edge track`"
            )

    def step(self, frame: Frame) -> None:
        pass

    def finish(self) -> TrackSet:
        return self.tracks
