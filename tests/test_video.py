"""Video I/O: probing, streaming decode with timestamps, seeking, writing, and clear errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import write_test_video

from stvgr1_edge.errors import VideoError
from stvgr1_edge.video import VideoWriter, iter_frames, probe_video, read_frames


def _red(frame) -> int:
    return int(round(float(frame.image[..., 0].mean())))


def test_probe_reports_size_count_fps_and_times(tmp_path):
    path = write_test_video(tmp_path / "a.mp4", num_frames=20, width=64, height=48, fps=10.0)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (64, 48, 20)
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(2.0)
    assert info.frame_times_s[:3] == pytest.approx((0.0, 0.1, 0.2))
    assert not info.is_variable_frame_rate


def test_streaming_decode_yields_every_frame_in_order_with_its_pixels(tmp_path):
    path = write_test_video(tmp_path / "a.mp4", num_frames=20)
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == list(range(20))
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    # frame i was written with red = 8*i; H.264 at crf 18 keeps flat colours within a few levels
    assert all(abs(_red(f) - 8 * f.index) <= 3 for f in frames)
    assert [f.time_s for f in frames[:2]] == pytest.approx([0.0, 0.1])


def test_decode_with_start_stop_step_seeks_to_the_right_frames(tmp_path):
    path = write_test_video(tmp_path / "a.mp4", num_frames=30)
    got = list(iter_frames(path, start=17, stop=27, step=3))
    assert [f.index for f in got] == [17, 20, 23, 26]
    assert all(abs(_red(f) - 8 * f.index) <= 3 for f in got)


def test_read_frames_returns_requested_order_with_repeats(tmp_path):
    path = write_test_video(tmp_path / "a.mp4", num_frames=30)
    got = read_frames(path, [25, 3, 25, 0])
    assert [f.index for f in got] == [25, 3, 25, 0]
    assert abs(_red(got[0]) - 200) <= 3 and abs(_red(got[1]) - 24) <= 3


def test_variable_frame_rate_timestamps_come_from_pts(tmp_path):
    import av

    path = tmp_path / "vfr.mp4"
    times = [0.0, 0.1, 0.2, 0.5, 0.6, 1.2]  # irregular gaps
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.time_base = Fraction(1, 1000)
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            img = np.full((32, 32, 3), 30 * i, np.uint8)
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = int(t * 1000)
            fr.time_base = Fraction(1, 1000)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe_video(path)
    assert info.num_frames == 6
    assert info.frame_times_s == pytest.approx(times, abs=1e-3)
    assert info.is_variable_frame_rate
    got = list(iter_frames(path))
    assert [f.time_s for f in got] == pytest.approx(times, abs=1e-3)
    # seeking into the irregular part still lands on the right frame
    assert [f.index for f in iter_frames(path, start=4)] == [4, 5]


def test_writer_is_atomic_and_pads_odd_sizes(tmp_path):
    out = tmp_path / "w.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 10, 33, 21) as w:
            w.write(np.zeros((21, 33, 3), np.uint8))
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with VideoWriter(out, 10, 33, 21) as w:
        for _ in range(3):
            w.write(np.full((21, 33, 3), 100, np.uint8))
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames) == (34, 22, 3)
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "bad.mp4", 10, 32, 32) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
    assert not (tmp_path / "bad.mp4").exists()


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated", "directory"])
def test_unusable_videos_raise_one_line_video_errors(tmp_path, kind):
    path = tmp_path / "v.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 20)
    elif kind == "truncated":
        good = write_test_video(tmp_path / "good.mp4", num_frames=40)
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(VideoError) as err:
        probe_video(path)
        list(iter_frames(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message


def test_cut_faststart_mp4_gives_the_frames_it_holds_with_a_warning(tmp_path, caplog):
    """With the index at the front, a cut file still opens: the frames present are used (the header's count is
    reported, not trusted), and every one of them decodes."""
    import av

    path = tmp_path / "fast.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(60):  # noise frames: every frame costs bytes, so a cut loses frames
            for p in s.encode(
                av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), format="rgb24")
            ):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert probe_video(path).num_frames == 60
    cut = tmp_path / "cut.mp4"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    caplog.set_level("WARNING", logger="stvgr1_edge.video")
    info = probe_video(cut)
    assert 0 < info.num_frames < 60 and "header lists 60 frames" in caplog.text
    decoded = [f.index for f in iter_frames(cut, info=info)]
    # the packets cut mid-way do not decode: every frame before them does, in order
    assert decoded == list(range(len(decoded))) and info.num_frames - 5 <= len(decoded) <= info.num_frames


def test_real_old_codec_footage_decodes_and_seeks_exactly(fixtures):
    """5 s of real street footage (MS-MPEG4 in AVI, one keyframe then 49 predicted frames): seeking to a predicted
    frame decodes from the keyframe and gives the same pixels as reading in order."""
    import av

    path = fixtures / "vtest_250_299.avi"
    with av.open(str(path)) as container:
        keyframes = [p.is_keyframe for p in container.demux(video=0) if p.size]
    assert keyframes == [True] + [False] * 49  # frames 17 and 41 can only be decoded from frame 0
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.codec) == (768, 576, 50, "msmpeg4")
    assert info.fps == pytest.approx(10.0)
    sequential = [f for f in iter_frames(path) if f.index in (17, 41)]
    seeked = read_frames(path, [41, 17], info=info)
    assert np.array_equal(seeked[1].image, sequential[0].image)
    assert np.array_equal(seeked[0].image, sequential[1].image)
    assert not np.array_equal(sequential[0].image, sequential[1].image)  # people walk: the frames differ


def test_decode_ahead_gives_the_same_frames_and_raises_where_the_stream_breaks(tmp_path):
    import threading

    from stvgr1_edge.video import decode_ahead

    path = write_test_video(tmp_path / "v.mp4", num_frames=40)
    direct = list(iter_frames(path))
    ahead = list(decode_ahead(iter_frames(path), depth=3))
    assert [f.index for f in ahead] == [f.index for f in direct]
    assert all(np.array_equal(a.image, b.image) and a.time_s == b.time_s for a, b in zip(ahead, direct))

    def breaks_at_7():
        yield from direct[:7]
        raise VideoError("video is truncated or corrupt near frame 7")

    seen = []
    with pytest.raises(VideoError, match="frame 7"):
        for frame in decode_ahead(breaks_at_7(), depth=2):
            seen.append(frame.index)
    assert seen == list(range(7))

    closed = threading.Event()

    def endless():
        try:
            while True:
                yield direct[0]
        finally:
            closed.set()

    before = threading.active_count()
    stream = decode_ahead(endless(), depth=2)
    next(stream)
    stream.close()  # the consumer stops early: the thread ends and closes its source
    assert closed.is_set() and threading.active_count() == before


def test_cli_refuses_an_unknown_hardware_decoder_before_loading_anything(tmp_path, capsys):
    from stvgr1_edge.cli import main

    path, out = write_test_video(tmp_path / "v.mp4", num_frames=4), tmp_path / "r.json"
    assert main(["run", str(path), "a man", "-o", str(out), "--hw-decode", "no-such-device"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-device" in err[0] and not out.exists()


def test_hardware_decoding_is_checked_and_falls_back_to_identical_software_frames(tmp_path, caplog):
    from stvgr1_edge.video import check_hw_decode, hw_decode_types

    with pytest.raises(VideoError) as err:
        check_hw_decode("no-such-device")
    assert "\n" not in str(err.value) and "no-such-device" in str(err.value)
    path = write_test_video(tmp_path / "v.mp4", num_frames=12)
    with pytest.raises(VideoError, match="no-such-device"):
        next(iter_frames(path, hw_decode="no-such-device"))
    types = hw_decode_types()
    if not types:
        pytest.skip("this PyAV/FFmpeg build offers no hardware decoders")
    import torch

    device = "cuda" if "cuda" in types else types[0]
    caplog.set_level("WARNING", logger="stvgr1_edge.video")
    on_device = list(iter_frames(path, hw_decode=device))
    software = list(iter_frames(path))
    assert [f.index for f in on_device] == [f.index for f in software]
    # H.264 decoding is bit-exact, on a device or not; without the device, the software fallback says so
    assert all(np.array_equal(a.image, b.image) for a, b in zip(on_device, software))
    if not (device == "cuda" and torch.cuda.is_available()):
        assert "decoding in software" in caplog.text
