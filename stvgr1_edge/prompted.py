"""Sampled frames + tracks → :class:`PromptedClip`: the STVG-R1 §3 ID markers drawn, at native
resolution, on exactly the frames the VLM will see (`STVG-R1.md` §4 sampling).

:class:`SampledFrameCollector` sits on the decoded frame stream and keeps only the sampled frames
(at most ``FrameSampling.num_frames`` ≤ 768 of them), so a pipeline decodes the video once::

    collector = SampledFrameCollector(sampling)
    for frame in collector.watch(iter_frames(path, info=info)):
        tracker.step(frame)
    clip = render_prompted_clip(collector.frames(), tracker.finish(), sampling)
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from .clip import PromptedClip
from .sampling import FrameSampling
from .tracks import TrackSet
from .video import Frame


class SampledFrameCollector:
    """Keeps the frames of a stream whose index is in ``sampling.indices``; drops the rest at once."""

    def __init__(self, sampling: FrameSampling):
        self.sampling = sampling
        self._wanted = frozenset(sampling.indices)
        self._kept: dict[int, Frame] = {}

    def add(self, frame: Frame) -> bool:
        """Offer one decoded frame; returns whether it was kept (a repeated index replaces the old one)."""
        if frame.index not in self._wanted:
            return False
        self._kept[frame.index] = frame
        return True

    def watch(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """Pass every frame through unchanged, keeping the sampled ones on the way."""
        for frame in frames:
            self.add(frame)
            yield frame

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def missing(self) -> tuple[int, ...]:
        """Sampled indices not seen yet."""
        return tuple(i for i in self.sampling.indices if i not in self._kept)

    @property
    def complete(self) -> bool:
        return not self.missing

    def frames(self) -> list[Frame]:
        """The kept frames in sampling order. Raises ValueError if any sampled frame never came."""
        missing = self.missing
        if missing:
            raise ValueError(f"{len(missing)} sampled frame(s) never arrived, e.g. {list(missing[:5])}: "
                             "the stream ended early or skipped them")
        return [self._kept[i] for i in self.sampling.indices]


def render_prompted_clip(
    frames: Sequence[Frame],
    tracks: TrackSet,
    sampling: FrameSampling,
    *,
    draw_markers: bool = True,
    video_fps: float | None = None,
    num_video_frames: int | None = None,
) -> PromptedClip:
    """Stack the sampled frames (T, H, W, 3) uint8 with every tracked object's ID drawn on each.

    ``frames`` must contain every index of ``sampling.indices`` (extra frames are ignored); they are
    not modified. Each object observed at a sampled frame (``TrackSet.objects_at``) is marked from its
    mask when it has one, else from its box. ``draw_markers=False`` (time-only grounding) keeps the
    pixels as decoded. ``video_fps``/``num_video_frames`` default to the track set's.
    """
    by_index = {frame.index: frame for frame in frames}
    missing = [i for i in sampling.indices if i not in by_index]
    if missing:
        raise ValueError(f"render_prompted_clip: sampled frame(s) {missing[:5]} not among the "
                         f"{len(by_index)} frames given")
    if not sampling.indices:
        raise ValueError("render_prompted_clip: the sampling has no frames")
    if draw_markers:
        from .markers import draw_id_markers

    images = []
    for index in sampling.indices:
        image = by_index[index].image
        objects = tracks.objects_at(index) if draw_markers else []
        if objects:
            image = draw_id_markers(image, [mask if mask is not None else box for _, box, mask in objects],
                                    [track_id for track_id, _, _ in objects])
        images.append(image)
    stacked = np.stack(images).astype(np.uint8, copy=False)
    return PromptedClip(
        frames=stacked,
        frame_indices=tuple(sampling.indices),
        sample_fps=sampling.sample_fps,
        resized_height=sampling.resized_height,
        resized_width=sampling.resized_width,
        video_fps=float(tracks.fps if video_fps is None else video_fps),
        num_video_frames=int(tracks.num_frames if num_video_frames is None else num_video_frames),
    )
