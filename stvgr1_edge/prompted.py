"""Sampled frames + tracks → :class:`PromptedClip`: the STVG-R1 §3 ID markers drawn, at native
resolution, on exactly the frames the VLM will see (`STVG-R1.md` §4 sampling).

:func:`track_and_prompt` is the one pass that turns a video into a prompted clip: every decoded frame goes to the
tracker, :class:`SampledFrameCollector` keeps only the sampled ones (at most ``FrameSampling.num_frames`` ≤ 768),
and :func:`render_prompted_clip` marks them once tracking ends::

    tracked = track_and_prompt(iter_frames(path, info=info), info, tracker, plan_sampling(...))

Inference, training-data preparation and pre-training all call it, so the pixels a model is trained on and the
pixels it answers on cannot drift apart.

The markers need the final tracks, so the native frames wait until tracking ends. Past ``memory_mb`` the
collector keeps them in a temporary folder instead of memory (768 frames of 1080p are 4.8 GB); with
``resize=True`` each frame is shrunk to the VLM's size right after its markers are drawn, so the clip itself
stays small (exactly what the grounder would have computed: the same resize, one frame at a time).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from .clip import PromptedClip
from .errors import BadInputError
from .sampling import FrameSampling, resize_frame
from .tracks import TrackSet
from .video import Frame, VideoInfo

if TYPE_CHECKING:  # pragma: no cover
    from .tracking.base import StreamingTracker

logger = logging.getLogger(__name__)


class SampledFrameCollector:
    """Keeps the frames of a stream whose index is in ``sampling.indices``; drops the rest at once.

    ``memory_mb``: once the kept frames would take more than this, further frames go to a temporary folder
    (raw ``.npy``, under ``spill_dir`` or the system's temp) and are read back one at a time by :meth:`kept`.
    ``None`` keeps everything in memory. Use it as a context manager (or call :meth:`close`) so the folder is
    removed.
    """

    def __init__(self, sampling: FrameSampling, memory_mb: float | None = None, spill_dir: str | None = None):
        self.sampling = sampling
        self._wanted = frozenset(sampling.indices)
        self._kept: dict[int, Frame | tuple[float, Path]] = {}
        self._memory_bytes = None if memory_mb is None else int(memory_mb * 2**20)
        self._bytes_in_memory = 0
        self._spill_parent = spill_dir
        self._spill_dir: Path | None = None

    def add(self, frame: Frame) -> bool:
        """Offer one decoded frame; returns whether it was kept (a repeated index replaces the old one)."""
        if frame.index not in self._wanted:
            return False
        self._drop(frame.index)
        if self._memory_bytes is not None and self._bytes_in_memory + frame.image.nbytes > self._memory_bytes:
            self._kept[frame.index] = (frame.time_s, self._spill(frame))
        else:
            self._kept[frame.index] = frame
            self._bytes_in_memory += frame.image.nbytes
        return True

    def _drop(self, index: int) -> None:
        old = self._kept.pop(index, None)
        if isinstance(old, Frame):
            self._bytes_in_memory -= old.image.nbytes
        elif old is not None:
            old[1].unlink(missing_ok=True)

    def _spill(self, frame: Frame) -> Path:
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="stvg-frames-", dir=self._spill_parent))
            logger.info("sampled frames over the in-memory budget go to %s", self._spill_dir)
        path = self._spill_dir / f"{frame.index}.npy"
        try:
            np.save(path, frame.image, allow_pickle=False)
        except OSError as exc:  # e.g. a full disk: say so in one line instead of a traceback
            raise BadInputError(
                f"cannot keep sampled frames in {self._spill_dir} ({exc.strerror or exc}): free disk "
                "space there or raise --frame-memory-mb"
            ) from exc
        return path

    def watch(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """Pass every frame through unchanged, keeping the sampled ones on the way."""
        for frame in frames:
            self.add(frame)
            yield frame

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def spilled(self) -> int:
        """How many kept frames are on disk rather than in memory."""
        return sum(1 for v in self._kept.values() if not isinstance(v, Frame))

    @property
    def missing(self) -> tuple[int, ...]:
        """Sampled indices not seen yet."""
        return tuple(i for i in self.sampling.indices if i not in self._kept)

    @property
    def complete(self) -> bool:
        return not self.missing

    def kept(self) -> Iterator[Frame]:
        """The kept frames in sampling order, spilled ones read back one at a time. Raises ValueError (before
        yielding anything) if any sampled frame never came."""
        missing = self.missing
        if missing:
            raise ValueError(
                f"{len(missing)} sampled frame(s) never arrived, e.g. {list(missing[:5])}: "
                "the stream ended early or skipped them"
            )
        return self._iter_kept()

    def _iter_kept(self) -> Iterator[Frame]:
        for index in self.sampling.indices:
            entry = self._kept[index]
            if isinstance(entry, Frame):
                yield entry
            else:
                yield Frame(index, entry[0], np.load(entry[1], allow_pickle=False))

    def frames(self) -> list[Frame]:
        """The kept frames in sampling order, all in memory. Raises ValueError if any sampled frame never came."""
        return list(self.kept())

    def close(self) -> None:
        """Forget the frames and remove the temporary folder, if any."""
        self._kept.clear()
        self._bytes_in_memory = 0
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None

    def __enter__(self) -> "SampledFrameCollector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_prompted_clip(
    frames: Iterable[Frame],
    tracks: TrackSet,
    sampling: FrameSampling,
    *,
    draw_markers: bool = True,
    resize: bool = False,
    video_fps: float | None = None,
    num_video_frames: int | None = None,
    timings_ms: dict[str, float] | None = None,
) -> PromptedClip:
    """Stack the sampled frames (T, H, W, 3) uint8 with every tracked object's ID drawn on each.

    ``frames`` must contain every index of ``sampling.indices`` (extra frames are ignored; any order); they
    are not modified, and are consumed one at a time (an iterator keeps only one native frame alive). Each
    object observed at a sampled frame (``TrackSet.objects_at``) is marked from its mask when it has one, else
    from its box. ``draw_markers=False`` (time-only grounding) keeps the pixels as decoded. ``resize=True``
    shrinks each marked frame to ``sampling.resized_height x resized_width`` at once (qwen-vl-utils' resize, as
    the grounder would do it later; the clip then holds the small frames). ``video_fps``/``num_video_frames``
    default to the track set's. ``timings_ms`` gets ``markers`` and ``resize`` added (wall ms). The clip's
    ``drawn_ids`` are the IDs drawn on any sampled frame (none with ``draw_markers=False``).
    """
    if not sampling.indices:
        raise ValueError("render_prompted_clip: the sampling has no frames")
    if draw_markers:
        from .markers import draw_id_markers

    wanted = frozenset(sampling.indices)
    images: dict[int, np.ndarray] = {}
    drawn: set[int] = set()
    for frame in frames:
        if frame.index not in wanted:
            continue
        image = frame.image
        t0 = time.perf_counter()
        objects = tracks.objects_at(frame.index) if draw_markers else []
        drawn.update(track_id for track_id, _, _ in objects)
        if objects:
            image = draw_id_markers(
                image,
                [mask if mask is not None else box for _, box, mask in objects],
                [track_id for track_id, _, _ in objects],
            )
        t1 = time.perf_counter()
        if resize:
            image = resize_frame(image, sampling.resized_height, sampling.resized_width)
        if timings_ms is not None:
            timings_ms["markers"] = timings_ms.get("markers", 0.0) + (t1 - t0) * 1e3
            timings_ms["resize"] = timings_ms.get("resize", 0.0) + (time.perf_counter() - t1) * 1e3
        images[frame.index] = image
    missing = [i for i in sampling.indices if i not in images]
    if missing:
        raise ValueError(
            f"render_prompted_clip: sampled frame(s) {missing[:5]} not among the {len(images)} frames given"
        )
    stacked = np.stack([images.pop(i) for i in sampling.indices]).astype(np.uint8, copy=False)
    return PromptedClip(
        frames=stacked,
        frame_indices=tuple(sampling.indices),
        sample_fps=sampling.sample_fps,
        resized_height=sampling.resized_height,
        resized_width=sampling.resized_width,
        video_fps=float(tracks.fps if video_fps is None else video_fps),
        num_video_frames=int(tracks.num_frames if num_video_frames is None else num_video_frames),
        drawn_ids=tuple(sorted(drawn)),
    )


@dataclass(frozen=True)
class TrackedClip:
    """What one decode pass over a video gives the grounder: its tracks and its prompted clip."""

    info: VideoInfo
    sampling: FrameSampling
    tracks: TrackSet
    """Every tracked object (empty when no tracker ran: time-only grounding)."""
    clip: PromptedClip
    """The sampled frames with ID markers drawn (unless ``draw_markers`` was off), resized for the VLM."""
    timings_ms: dict[str, float]
    """``decode``, ``track`` and ``render`` wall time (``render`` = ``markers`` + ``resize``, also given)."""
    spilled_frames: int = 0
    """Sampled frames that waited on disk (over ``frame_memory_mb``)."""


def track_and_prompt(
    frames: Iterable[Frame],
    info: VideoInfo,
    tracker: StreamingTracker | None,
    sampling: FrameSampling,
    *,
    draw_markers: bool = True,
    frame_memory_mb: float | None = 1024.0,
    frame_spill_dir: str | None = None,
    on_frame: Callable[[Frame], None] | None = None,
) -> TrackedClip:
    """The one way a video becomes a prompted clip — for inference, training-data preparation and pre-training.

    One pass over ``frames`` (decoded in order): each goes to ``tracker`` (which also tracks every sampled frame,
    so markers come from real observations, never from interpolation), the sampled ones are kept at native
    resolution; once tracking ends the §3 markers are drawn on them and each is resized for the VLM (§4).
    ``tracker=None`` skips tracking (time-only grounding: no markers). ``on_frame`` sees every frame (progress).
    """
    timings = {"decode": 0.0, "track": 0.0, "render": 0.0, "markers": 0.0, "resize": 0.0}
    frames = iter(frames)
    if tracker is not None:
        tracker.start(info, always_track=frozenset(sampling.indices))
    with SampledFrameCollector(sampling, frame_memory_mb, frame_spill_dir) as collector:
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            t1 = time.perf_counter()
            timings["decode"] += (t1 - t0) * 1e3
            if frame is None:
                break
            collector.add(frame)
            if tracker is not None:
                tracker.step(frame)
            timings["track"] += (time.perf_counter() - t1) * 1e3
            if on_frame is not None:
                on_frame(frame)
        t0 = time.perf_counter()
        tracks = (
            tracker.finish() if tracker is not None else TrackSet(info.width, info.height, info.fps, info.num_frames)
        )
        timings["track"] += (time.perf_counter() - t0) * 1e3
        if not collector.complete:
            raise BadInputError(
                f"{info.path}: {len(collector.missing)} sampled frame(s) could not be decoded "
                f"(e.g. {list(collector.missing[:3])}): re-encode the video with ffmpeg"
            )
        if collector.spilled:
            logger.info(
                "%d of %d sampled frames waited on disk (over frame_memory_mb)", collector.spilled, len(collector)
            )
        t0 = time.perf_counter()
        clip = render_prompted_clip(
            collector.kept(),
            tracks,
            sampling,
            draw_markers=draw_markers and tracker is not None,
            resize=True,
            video_fps=info.fps,
            num_video_frames=info.num_frames,
            timings_ms=timings,
        )
        timings["render"] = (time.perf_counter() - t0) * 1e3
        spilled = collector.spilled
    return TrackedClip(info, sampling, tracks, clip, timings, spilled)
