"""Video as real files have it: B-frames whose decoded timestamps are out of order, headers that over-state the
frame count or the frame rate, streams that do not start at 0, variable frame rates. Every clip is generated here
with PyAV; a red square moves right by 3 pixels a frame, so each decoded frame shows where it belongs."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stvgr1_edge.cli import main
from stvgr1_edge.video import iter_frames, probe_video, read_frames

W, H, N = 160, 120, 40


def _square(i: int) -> np.ndarray:
    image = np.full((H, W, 3), 40, np.uint8)
    image[40:80, 10 + 3 * i : 30 + 3 * i] = (220, 40, 40)
    return image


def _square_x(image: np.ndarray) -> int:
    return int(np.nonzero(image[60, :, 0] > 130)[0].min())


def _b_frame_packets(tmp_path: Path) -> Path:
    """An MPEG-4 part 2 stream with B-frames (decode order differs from presentation order), in MP4."""
    path = tmp_path / "bframes.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.max_b_frames = 2
        for i in range(N):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_square(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _remux(source: Path, target: Path, fmt: str, pts_of=None) -> Path:
    """Copy ``source``'s packets into ``target`` (container ``fmt``), each packet's pts replaced by
    ``pts_of(packet)`` when given (what broken muxers write)."""
    with av.open(str(source)) as src, av.open(str(target), "w", format=fmt) as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            if pts_of is not None:
                packet.pts = pts_of(packet)
            packet.stream = out
            dst.mux(packet)
    return target


def _first_dts(path: Path) -> int:
    with av.open(str(path)) as container:
        return min(p.dts for p in container.demux(video=0) if p.dts is not None)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("real_world")
    bframes = _b_frame_packets(tmp)
    return {
        "bframes": bframes,
        # pts written in decode order: the decoder hands frames out in presentation order with scrambled pts
        "scrambled_pts_mkv": _remux(bframes, tmp / "scrambled.mkv", "matroska", lambda p: p.dts),
        # (shifted to start at 0: MP4 hides frames before 0 behind an edit list)
        "scrambled_pts_mp4": _remux(bframes, tmp / "scrambled.mp4", "mp4", lambda p: p.dts - _first_dts(bframes)),
        # AVI's header then lists 60x the frames (and 600 fps): the header lies, the frames are fine
        "lying_header_avi": _remux(bframes, tmp / "lying.avi", "avi", lambda p: p.dts),
    }


@pytest.mark.parametrize("name", ["bframes", "scrambled_pts_mkv", "scrambled_pts_mp4", "lying_header_avi"])
def test_frames_come_in_presentation_order_with_their_times(clips, name):
    path = clips[name]
    if name.startswith("scrambled"):  # the precondition: the decoded frames' own timestamps are out of order
        with av.open(str(path)) as container:
            decoded_pts = [f.pts for f in container.decode(video=0)]
        assert decoded_pts != sorted(decoded_pts)
    info = probe_video(path)
    assert info.num_frames == N and info.fps == pytest.approx(10.0, rel=0.05)
    frames = list(iter_frames(path, info=info))
    assert [f.index for f in frames] == list(range(N))
    assert [_square_x(f.image) for f in frames] == [10 + 3 * i for i in range(N)]
    assert all(b.time_s > a.time_s for a, b in zip(frames, frames[1:]))
    picked = read_frames(path, [33, 7], info=info)
    assert [_square_x(f.image) for f in picked] == [10 + 3 * 33, 10 + 3 * 7]


def test_a_lying_header_is_a_warning_not_an_error(clips, caplog):
    with av.open(str(clips["lying_header_avi"])) as container:
        assert container.streams.video[0].frames > 10 * N  # the precondition: the header over-states the count
    caplog.set_level("WARNING", logger="stvgr1_edge.video")
    info = probe_video(clips["lying_header_avi"])
    assert info.num_frames == N and info.duration_s < 5
    assert "header lists" in caplog.text and "using the" in caplog.text


def test_variable_frame_rate_and_a_late_start_give_the_stream_times(tmp_path):
    """Frames shown at irregular times, the first at 7 s of the stream's clock: times are seconds from the first
    frame, each frame's own."""
    times_ms = [7000 + t for t in (0, 100, 150, 400, 420, 900, 1000, 1500, 1510, 2000)]
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(_square(i), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info = probe_video(path)
    assert info.frame_times_s == pytest.approx([(t - times_ms[0]) / 1000 for t in times_ms], abs=1e-3)
    assert info.is_variable_frame_rate
    frames = list(iter_frames(path, info=info))
    assert [_square_x(f.image) for f in frames] == [10 + 3 * i for i in range(len(times_ms))]
    assert [f.time_s for f in frames] == list(info.frame_times_s)


def test_track_cli_runs_on_a_b_frame_clip_with_scrambled_timestamps(clips, tmp_path):
    """The crash seen on real MPEG-4 clips ("frame 3 added after frame 4") cannot happen: the tracker gets frames
    in order, and the one square is one track along the whole clip."""
    out = tmp_path / "tracks.json"
    assert main(["track", str(clips["scrambled_pts_mkv"]), "-o", str(out)]) == 0
    tracks = json.loads(out.read_text())["tracks"]
    frames = [f for track in tracks.values() for f in track["frames"]]
    assert frames == sorted(frames) or len(tracks) > 1
    longest = max(tracks.values(), key=lambda t: len(t["frames"]))
    assert longest["frames"] == sorted(longest["frames"]) and len(longest["frames"]) >= N // 2
