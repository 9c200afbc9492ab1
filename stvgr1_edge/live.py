"""Live sources -- network streams, cameras, a container piped on standard input -- and the sliding windows that
``run --window`` answers over.

What a source string means (:func:`open_source`): ``-`` is a container on standard input (any format FFmpeg can
probe from a pipe, e.g. MPEG-TS); ``/dev/video*`` a V4L2 camera; ``rtsp://`` a camera over RTSP (over TCP: UDP
drops packets on busy networks); anything else with ``://`` goes to FFmpeg as written; the rest is a file.

A live source has no end and no frame count, so nothing is probed ahead. Two ways to ground on one:

* :func:`record` copies its packets (no decoding) into a temporary file until ``duration_s`` or its end; that file
  then runs exactly as any file does (``run - "query"``, ``run rtsp://cam --duration 30``).
* :func:`sliding_windows` over :func:`stream_frames` keeps the decoded frames of the last ``window_s`` seconds and
  hands over one :class:`Window` every ``every_s`` seconds of stream time (``run --window 4 --every 2``): window
  ``k`` holds the frames timed in ``[k * every_s, k * every_s + window_s)`` and is handed over as soon as a later
  frame arrives (or the source ends right after it). Memory holds one window, however long the stream runs.

Frames of a stream are timed by their decoded presentation timestamps, from the first frame; a missing or
backward timestamp becomes one frame interval after the previous frame. When a network stream or camera fails
(or a live one -- RTSP, RTMP, UDP, SRT, a camera -- simply ends), :func:`stream_frames` reconnects with exponential
backoff and goes on timing frames from where it stopped; an HTTP file that ends has ended.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .errors import BadInputError, VideoError
from .video import Frame, VideoInfo, is_url

logger = logging.getLogger(__name__)

STDIN = "-"
T = TypeVar("T")


def is_camera(source: str) -> bool:
    return source.startswith("/dev/video")


def is_live(source: str) -> bool:
    """A source with no known end: a camera, an RTSP/RTMP/UDP stream or standard input."""
    return source == STDIN or is_camera(source) or source.split("://")[0] in ("rtsp", "rtsps", "rtmp", "udp", "srt")


def open_source(source: str, timeout_s: float = 10.0) -> Any:
    """An open PyAV input container for ``source`` (see the module docstring)."""
    import av

    options: dict[str, str] = {}
    fmt = None
    if source == STDIN:
        if sys.stdin is None or sys.stdin.isatty():
            raise BadInputError(
                "- reads a video piped on standard input, but nothing is piped in: e.g. "
                'ffmpeg -i CAMERA -f mpegts - | stvg-edge run - "QUERY"'
            )
        target: Any = _Pipe(sys.stdin.fileno())
    elif is_camera(source):
        target, fmt = source, "v4l2"
    elif is_url(source):
        target = source
        if source.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = "tcp"
    else:
        path = Path(source)
        if not path.is_file():
            raise VideoError(f"video not found: {source}")
        target = str(path)
    try:
        container = av.open(target, mode="r", format=fmt, options=options, timeout=timeout_s)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        where = "standard input" if source == STDIN else source
        raise VideoError(f"cannot open {where} as a video: {_short(exc)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{source} has no video stream")
    return container


class _Pipe:
    """A pipe for FFmpeg to read: ``read(n)`` returns the bytes already there (``os.read``), where
    ``sys.stdin.buffer.read(n)`` would wait for all ``n`` -- frames come out as the stream arrives."""

    def __init__(self, fd: int):
        self.fd = fd

    def read(self, n: int) -> bytes:
        return os.read(self.fd, n)


def _short(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:160]


# --- recording to a file ------------------------------------------------------------------------------
def record(source: str, out_path: str | os.PathLike, duration_s: float | None = None) -> Path:
    """Copy ``source``'s video packets (no decoding) into a Matroska file at ``out_path`` until ``duration_s``
    seconds of stream time or the source's end. Returns the path."""
    import av

    out_path = Path(out_path)
    container = open_source(source)
    try:
        stream = container.streams.video[0]
        with av.open(str(out_path), mode="w", format="matroska") as output:
            copy = output.add_stream_from_template(stream)
            first_pts = None
            written = 0
            try:
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.pts is None and packet.dts is None:
                        continue
                    pts = packet.pts if packet.pts is not None else packet.dts
                    first_pts = pts if first_pts is None else first_pts
                    if duration_s is not None and packet.time_base is not None:
                        if float((pts - first_pts) * packet.time_base) >= duration_s:
                            break
                    packet.stream = copy
                    output.mux(packet)
                    written += 1
            except av.error.FFmpegError as exc:
                if not written:
                    raise VideoError(f"{source}: no video could be read ({_short(exc)})") from None
                logger.warning("%s: reading stopped after %d packets: %s", source, written, _short(exc))
    finally:
        container.close()
    if not written:
        raise VideoError(f"{source}: the stream held no video frames")
    return out_path


# --- decoded frames with reconnection -----------------------------------------------------------------
@dataclass(frozen=True)
class Reconnect:
    """How a dropped network stream is retried: ``attempts`` times, waiting ``backoff_s``, then twice as long each
    time, at most ``max_backoff_s``. A frame that arrives resets the count."""

    attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0


def stream_frames(
    source: str,
    duration_s: float | None = None,
    reconnect: Reconnect = Reconnect(),
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Frame]:
    """Decoded frames of ``source`` indexed from 0 and timed from its first frame, until ``duration_s`` seconds
    or its end; a network stream that drops is reopened (``reconnect``)."""
    import av

    retry = is_url(source) or is_camera(source)  # reconnect after an error
    endless = retry and is_live(source)  # ... and after an end: a camera's stream has none, an HTTP file does
    index, last_t, interval = 0, None, 1 / 30
    failures = 0
    while True:
        reason = "the stream ended"
        try:
            container = open_source(source)
        except VideoError as exc:
            if not retry or index == 0 and failures == 0:
                raise
            reason = str(exc)
        else:
            try:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                rate = stream.average_rate or stream.guessed_rate
                interval = 1 / float(rate) if rate else interval
                start = None if last_t is None else last_t + interval  # this connection continues the clock
                first = None
                for decoded in container.decode(stream):
                    failures = 0
                    t_raw = decoded.time
                    if t_raw is not None and first is None:
                        first = t_raw
                    t = (start or 0.0) + (t_raw - first) if t_raw is not None and first is not None else None
                    if t is None or (last_t is not None and t <= last_t):
                        t = 0.0 if last_t is None else last_t + interval
                    if duration_s is not None and t >= duration_s:
                        return
                    yield Frame(index, t, decoded.to_ndarray(format="rgb24"))
                    index, last_t = index + 1, t
            except av.error.FFmpegError as exc:
                if not retry:
                    raise VideoError(f"{source}: decoding stopped at frame {index}: {_short(exc)}") from None
                reason = f"the stream dropped ({_short(exc)})"
            finally:
                container.close()
            if not retry or (reason == "the stream ended" and not endless):
                return
        if failures >= reconnect.attempts:
            raise VideoError(
                f"{source}: {reason}, and {reconnect.attempts} reconnect attempts failed: check that the camera or "
                "stream is up and reachable"
            )
        delay = min(reconnect.max_backoff_s, reconnect.backoff_s * 2**failures)
        failures += 1
        logger.warning(
            "%s: %s; reconnecting in %.1f s (attempt %d of %d)", source, reason, delay, failures, reconnect.attempts
        )
        sleep(delay)


def in_background(items: Iterator[T], max_buffered: int = 256) -> Iterator[T]:
    """``items`` (decoded frames, say), produced in a daemon thread: the stream keeps being read while the caller
    computes, and the caller's thread only ever waits on a queue, so Ctrl-C reaches it at once (a read blocked inside
    FFmpeg would hold it). At most ``max_buffered`` items wait; past that the reader waits too. Errors are raised in
    the caller."""
    import queue
    import threading

    handed: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max_buffered)

    def read() -> None:
        try:
            for item in items:
                handed.put(("item", item))
            handed.put(("end", None))
        except BaseException as exc:  # handed to the caller, who raises it
            handed.put(("error", exc))

    threading.Thread(target=read, name="stvg-edge-reader", daemon=True).start()
    while True:
        try:
            kind, value = handed.get(timeout=0.2)
        except queue.Empty:
            continue
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value


def run_in_background(fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread (:func:`in_background` of its one result), so that Ctrl-C reaches the caller."""
    return next(in_background(fn() for _ in range(1)))


# --- sliding windows ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """One window of a stream as a clip: its frames indexed from 0 and timed from the window's start."""

    index: int
    start_s: float
    """Stream time where the window starts (seconds from the stream's first frame)."""
    end_s: float
    """Stream time where it ends (exclusive)."""
    start_frame: int
    """The stream index of its first frame."""
    frames: tuple[Frame, ...]
    info: VideoInfo

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
            "start_frame": self.start_frame,
            "num_frames": len(self.frames),
        }


def sliding_windows(
    frames: Iterator[Frame], window_s: float, every_s: float | None = None, source: str = "stream"
) -> Iterator[Window]:
    """Windows ``[k * every_s, k * every_s + window_s)`` of ``frames`` (see the module docstring); ``every_s``
    defaults to ``window_s`` (back to back)."""
    if window_s <= 0:
        raise BadInputError(f"--window {window_s}: a window is a positive number of seconds")
    every_s = window_s if every_s is None else every_s
    if every_s <= 0:
        raise BadInputError(f"--every {every_s}: windows are answered every positive number of seconds")
    buffer: deque[Frame] = deque()
    k = 0
    eps = 1e-6
    last: Frame | None = None
    interval = 0.0
    for frame in frames:
        if last is not None:
            interval = frame.time_s - last.time_s
        while frame.time_s >= k * every_s + window_s - eps:  # window k is complete
            if buffer:
                yield _window(k, k * every_s, window_s, buffer, source)
            k += 1
            while buffer and buffer[0].time_s < k * every_s - eps:
                buffer.popleft()
        if frame.time_s >= k * every_s - eps:
            buffer.append(frame)
        last = frame
    if last is not None and buffer and last.time_s + interval >= k * every_s + window_s - eps:
        yield _window(k, k * every_s, window_s, buffer, source)  # the source ended right at the window's end


def _window(k: int, start_s: float, window_s: float, frames: deque[Frame], source: str) -> Window:
    clip = tuple(
        Frame(i, f.time_s - start_s, f.image) for i, f in enumerate(f for f in frames if f.time_s < start_s + window_s)
    )
    times = tuple(f.time_s for f in clip)
    n = len(clip)
    # the window's own rate, frames over its length: exact for a steady stream (10 fps over 4 s: 40 / 4), where a
    # rate measured between timestamps carries float noise that moves qwen-vl-utils' floor to fewer sampled frames
    fps = n / window_s
    height, width = clip[0].image.shape[:2]
    info = VideoInfo(source, width, height, n, fps, window_s, "live", times)
    first_index = next(f.index for f in frames if f.time_s < start_s + window_s)
    return Window(k, start_s, start_s + window_s, first_index, clip, info)
