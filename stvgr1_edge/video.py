"""Video I/O with PyAV: probing, streaming decode with presentation timestamps, seeking, H.264 writing.

Frames are RGB ``uint8`` arrays of shape ``(H, W, 3)``. One rule for every stage: a frame's index is its 0-based
position in the decoder's output, which is presentation order (decoders reorder B-frames); its time is the
index-th smallest presentation timestamp of the stream's packets, in seconds from the first. Timestamps attached to
decoded frames are not used: real files (MPEG-4 part 2 with packed B-frames, remuxed streams) carry missing,
duplicated or non-monotonic ones, while their packets' timestamps, sorted, still give every frame's time. Variable
frame rates and streams that do not start at 0 follow from the same rule. Container headers are not trusted either:
a frame count in the header that disagrees with the packets is reported as a warning, never an error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Generator, Iterable, Sequence, cast

import numpy as np

from .errors import VideoError, atomic_output

logger = logging.getLogger(__name__)

_FIX = "re-encode it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. ``frame_times_s`` are the presentation times of every frame (seconds
    from the first frame), read from the container's packets without decoding."""

    path: str
    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float
    codec: str
    frame_times_s: tuple[float, ...]

    @property
    def is_variable_frame_rate(self) -> bool:
        if self.num_frames < 3:
            return False
        gaps = np.diff(np.asarray(self.frame_times_s))
        return bool(gaps.max() - gaps.min() > 0.5 / max(self.fps, 1e-6))


@dataclass(frozen=True)
class Frame:
    """One decoded frame: 0-based presentation index, time in seconds, RGB pixels (H, W, 3) uint8."""

    index: int
    time_s: float
    image: np.ndarray


def is_url(source: str | os.PathLike) -> bool:
    """A network source (``rtsp://``, ``http(s)://``, ...): handed to FFmpeg as written, never as a path."""
    return "://" in str(source)


def hw_decode_types() -> list[str]:
    """Hardware decoder device types the loaded FFmpeg offers (e.g. ``cuda``, ``vaapi``); empty without PyAV's
    hardware support."""
    try:
        from av.codec.hwaccel import hwdevices_available
    except ImportError:  # PyAV < 14
        return []
    return sorted(hwdevices_available())


def check_hw_decode(device_type: str | None) -> None:
    """Refuse a hardware decoder the loaded FFmpeg does not have, in one line (before any decoding)."""
    if device_type is None:
        return
    offered = hw_decode_types()
    if device_type not in offered:
        raise VideoError(
            f"hardware decoding with {device_type!r} is not offered by this PyAV/FFmpeg build "
            f"(it offers: {', '.join(offered) or 'none'}): pick one of those or leave hardware decoding off"
        )


def _open(path: str | os.PathLike, hw_decode: str | None = None):
    import av

    if is_url(path):
        p: str | Path = str(path)
    else:
        p = Path(path)
        if not p.exists():
            raise VideoError(f"video not found: {p}")
        if p.is_dir():
            raise VideoError(f"video path is a directory, expected a file: {p}")
        if p.is_file() and p.stat().st_size == 0:  # devices and pipes have no size
            raise VideoError(f"video file is empty (0 bytes): {p}")
    if hw_decode is not None:  # a stream the device cannot decode is decoded in software
        from av.codec.hwaccel import HWAccel

        try:
            container = av.open(str(p), mode="r", hwaccel=HWAccel(hw_decode, allow_software_fallback=True))
        except av.error.FFmpegError as exc:  # no such device here (no GPU, no driver): decode in software
            logger.warning("%s: no %s device (%s): decoding in software", p, hw_decode, _short(exc))
        else:
            if not container.streams.video:
                container.close()
                raise VideoError(f"{p} has no video stream: pass a video file")
            return container
    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoError(
            f"cannot open {p} as a video: {_short(exc)}; is it a complete, uncorrupted video file? {_FIX}"
        ) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p} has no video stream: pass a video file")
    return container


def _short(exc: BaseException) -> str:
    """FFmpeg's reason without the errno and path noise (e.g. "Invalid data found when processing input")."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:160]


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read size, frame count, fps and every frame's presentation time by demuxing (no decoding)."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # flush packet
                    continue
                if packet.pts is not None:
                    pts.append(packet.pts)
                elif packet.dts is not None:
                    pts.append(packet.dts)
        except av.error.FFmpegError as exc:
            logger.warning("demuxing %s stopped early: %s", path, _short(exc))
        declared = int(stream.frames or 0)  # the container's own frame count (0 when it has none)
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        codec = ctx.name or "unknown"
        time_base = stream.time_base or Fraction(1, 1)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    finally:
        container.close()

    if not pts:
        raise VideoError(f"video has 0 frames: {path}: {_FIX}")
    if width <= 0 or height <= 0:
        raise VideoError(f"video has no frame size in its header: {path}: {_FIX}")
    if declared > 0 and abs(len(pts) - declared) > max(2, declared // 50):
        logger.warning(
            "%s: its header lists %d frames, its stream holds %d: using the %d present",
            path,
            declared,
            len(pts),
            len(pts),
        )
    pts.sort()
    t0 = pts[0]
    times = tuple(float((p - t0) * time_base) for p in pts)
    n = len(times)
    measured = (n - 1) / times[-1] if n > 1 and times[-1] > 0 else 0.0  # the frames' own average rate
    fps = float(rate) if rate else measured
    if measured > 0 and abs(fps - measured) > 0.01 * measured:  # the header's rate is not the stream's
        logger.warning(
            "%s: its header says %.3g fps, its timestamps %.3g fps: using the timestamps", path, fps, measured
        )
        fps = measured
    if fps <= 0 or not np.isfinite(fps):
        raise VideoError(f"video has no usable frame rate: {path}: {_FIX}")
    duration = n / fps if n < 2 else times[-1] + (times[-1] - times[0]) / (n - 1)
    return VideoInfo(str(path), width, height, n, fps, float(duration), codec, times)


def iter_frames(
    path: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    info: VideoInfo | None = None,
    keep: Callable[[int], bool] | None = None,
    hw_decode: str | None = None,
) -> Generator[Frame, None, None]:
    """Stream decoded frames ``start, start+step, ...`` (< ``stop``) in presentation order.

    One sequential decode pass from the first frame (frames before ``start`` are decoded, not converted): a
    frame's index is its position in the decoder's output (the module's rule), which a seek could not tell.
    ``keep(index)``: only those frames are converted to RGB arrays and yielded (a decoder must still decode every
    frame, but the conversion of a 720p frame costs as much again, for frames nothing looks at).
    ``hw_decode``: an FFmpeg hardware device type (see :func:`hw_decode_types`) to decode on; frames are downloaded
    to memory, and a stream the device cannot decode is decoded in software (with a warning).
    Raises :class:`VideoError` if the stream breaks off mid-way.
    """
    import av

    if step < 1:
        raise ValueError("step must be >= 1")
    info = info or probe_video(path)
    stop = info.num_frames if stop is None else min(stop, info.num_frames)
    if start >= stop:
        return
    check_hw_decode(hw_decode)
    container = _open(path, hw_decode)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if index == 0 and hw_decode is not None and not getattr(stream.codec_context, "is_hwaccel", True):
                    logger.warning("%s: %s cannot decode this stream: decoding in software", path, hw_decode)
                if index >= stop:
                    break
                if index >= start and (index - start) % step == 0 and (keep is None or keep(index)):
                    yield Frame(index, info.frame_times_s[index], frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as exc:
            raise VideoError(
                f"video is truncated or corrupt near frame {max(index, 0)}: {path} ({_short(exc)}): {_FIX}"
            ) from None
        if index < 0:
            raise VideoError(f"video has 0 decodable frames: {path}: {_FIX}")
    finally:
        container.close()


def decode_ahead(frames: Iterable[Frame], depth: int = 8) -> Generator[Frame, None, None]:
    """``frames``, produced in a background thread at most ``depth`` frames ahead of the consumer.

    FFmpeg's decoding and the RGB conversion release the GIL, so on a multi-core device the next frames are decoded
    while the caller tracks this one. Errors reach the caller at the frame where they happened; closing this
    iterator (or leaving a ``for`` loop over it) stops the thread and closes ``frames``.
    """
    import queue
    import threading

    if depth < 1:
        raise ValueError("depth must be >= 1")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(frames)
        try:
            for frame in source:
                if not put(frame):
                    break
            else:
                put(end)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="decode-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(Frame, item)
    finally:
        stop.set()
        worker.join()


def read_frames(path: str | os.PathLike, indices: Sequence[int], info: VideoInfo | None = None) -> list[Frame]:
    """Decode the frames at ``indices`` (any order, repeats allowed) in one forward pass.

    Returns them in the order asked.
    """
    info = info or probe_video(path)
    wanted = set(int(i) for i in indices)
    if not wanted:
        return []
    lo, hi = min(wanted), max(wanted)
    if lo < 0 or hi >= info.num_frames:
        raise VideoError(f"frame index out of range [0, {info.num_frames}) in {path}")
    got = {f.index: f for f in iter_frames(path, start=lo, stop=hi + 1, info=info) if f.index in wanted}
    missing = sorted(wanted - got.keys())
    if missing:
        raise VideoError(f"could not decode frames {missing[:5]} of {path}: {_FIX}")
    return [got[int(i)] for i in indices]


class VideoWriter:
    """Write RGB frames to an H.264 MP4 (yuv420p), atomically: the file appears only on ``close()``.

    Odd frame sizes are padded by one pixel (yuv420p needs even sizes). Use as a context manager;
    an exception inside the block discards the partial file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int,
        height: int,
        codec: str = "libx264",
        crf: int = 18,
        preset: str = "medium",
    ):
        import av

        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self._enc_w, self._enc_h = self.width + self.width % 2, self.height + self.height % 2
        self._atomic = atomic_output(self.path)
        self._tmp = self._atomic.__enter__()
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25, 1)
        options = {"crf": str(crf), "preset": preset} if codec == "libx264" else {}
        # Deterministic output: one encoder thread, no timestamps from the wall clock.
        # add_stream is typed as returning any stream kind; a video codec name gives a VideoStream.
        self._stream = cast("av.VideoStream", self._container.add_stream(codec, rate=rate, options=options))
        self._stream.width, self._stream.height = self._enc_w, self._enc_h
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.thread_count = 1
        self._container.metadata["creation_time"] = "1970-01-01T00:00:00Z"
        self._closed = False
        self.frames_written = 0

    def write(self, image: np.ndarray) -> None:
        import av

        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, writer expects {self.width}x{self.height}")
        if (self._enc_w, self._enc_h) != (self.width, self.height):
            image = np.pad(image, ((0, self._enc_h - self.height), (0, self._enc_w - self.width), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def write_all(self, images: Iterable[np.ndarray]) -> None:
        for image in images:
            self.write(image)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        finally:
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
