"""Live sources: sliding windows over a stream, reconnection when a network stream drops, `run -` from a pipe,
`run --window/--every` writing a JSON line a window, and Ctrl-C keeping the lines already written."""

from __future__ import annotations

import http.server
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stvgr1_edge.cli import main
from stvgr1_edge.errors import VideoError
from stvgr1_edge.live import Reconnect, sliding_windows, stream_frames
from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset
from stvgr1_edge.video import Frame, iter_frames, probe_video

NANO = ["--model", "nano", "--device", "cpu", "--max-new-tokens", "128"]


def _frames(seconds: float, fps: float = 10.0):
    for i in range(int(round(seconds * fps))):
        yield Frame(i, i / fps, np.full((4, 6, 3), i % 256, np.uint8))


def test_windows_cover_the_stream_in_steps_and_hold_one_window():
    windows = list(sliding_windows(_frames(10.0), window_s=4.0, every_s=2.0))
    assert [(w.start_s, w.end_s) for w in windows] == [(0, 4), (2, 6), (4, 8), (6, 10)]
    for w in windows:
        assert len(w.frames) == 40 and w.start_frame == 20 * w.index
        assert [f.index for f in w.frames] == list(range(40))  # a clip of its own, timed from its start
        assert w.frames[0].time_s == 0.0 and w.info.fps == 10.0 and w.info.num_frames == 40
        assert int(w.frames[0].image[0, 0, 0]) == w.start_frame  # the stream's frame, not a copy of another
    back_to_back = list(sliding_windows(_frames(9.0), window_s=3.0))
    assert [(w.start_s, w.start_frame) for w in back_to_back] == [(0, 0), (3, 30), (6, 60)]
    assert list(sliding_windows(_frames(3.5), window_s=4.0)) == []  # never a window the stream did not fill


def _write_ts(clip: Path, out: Path, seconds: float | None = None) -> Path:
    """The clip re-encoded as MPEG-TS (what a camera or `ffmpeg -f mpegts -` sends down a pipe)."""
    import av

    info = probe_video(clip)
    with av.open(str(out), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=int(round(info.fps)))
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, "yuv420p"
        for frame in iter_frames(clip, info=info):
            if seconds is not None and frame.time_s >= seconds:
                break
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("live")
    annotations = write_synthetic_dataset(root, num=1, seed=21, config=SynthConfig(seconds=8.0))
    entry = next(iter(json.loads(annotations.read_text()).values()))
    return root / entry["video_path"], entry["English"]


@pytest.fixture(scope="module")
def ts_file(clip, tmp_path_factory) -> Path:
    return _write_ts(clip[0], tmp_path_factory.mktemp("ts") / "clip.ts")


class _DroppingHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``payload``; the first ``drops`` requests are cut off after ``cut`` bytes."""

    payload = b""
    drops = 1
    cut = 0
    served = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).served += 1
        data = self.payload[: self.cut] if type(self).served <= self.drops else self.payload
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Content-Length", str(len(self.payload)))  # promises more than a cut-off reply sends
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if len(data) < len(self.payload):  # drop the connection the hard way (a reset), as a failing network does
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def log_message(self, *args):
        pass


def _serve(payload: bytes, drops: int, cut: int):
    handler = type("Handler", (_DroppingHandler,), {"payload": payload, "drops": drops, "cut": cut, "served": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def test_a_dropped_stream_is_reconnected_and_its_clock_goes_on(ts_file, caplog):
    payload = ts_file.read_bytes()
    server, handler = _serve(payload, drops=1, cut=len(payload) // 2)
    waits: list[float] = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.ts"
        with caplog.at_level(logging.WARNING, logger="stvgr1_edge.live"):
            frames = list(stream_frames(url, reconnect=Reconnect(attempts=3, backoff_s=0.5), sleep=waits.append))
    finally:
        server.shutdown()
    assert handler.served == 2 and waits == [0.5]
    assert "reconnecting in 0.5 s (attempt 1 of 3)" in caplog.text
    times = [f.time_s for f in frames]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(b > a for a, b in zip(times, times[1:]))  # one clock across both connections
    assert 80 < len(frames) < 160  # half the clip, then all of it again


def test_a_stream_that_stays_down_ends_in_one_line_after_backing_off(ts_file):
    payload = ts_file.read_bytes()
    server, _handler = _serve(payload, drops=1, cut=len(payload) // 2)
    waits: list[float] = []

    def wait(seconds: float) -> None:
        if not waits:  # the camera goes away for good after the first drop
            server.shutdown()
            server.server_close()
        waits.append(seconds)

    url = f"http://127.0.0.1:{server.server_address[1]}/cam.ts"
    with pytest.raises(VideoError) as err:
        list(stream_frames(url, reconnect=Reconnect(attempts=3, backoff_s=1.0), sleep=wait))
    assert waits == [1.0, 2.0, 4.0]  # exponential backoff
    assert "3 reconnect attempts failed" in str(err.value) and "\n" not in str(err.value)


def _python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # background shells start children with SIGINT ignored


def test_a_piped_stream_answered_over_windows_gives_a_json_line_a_window(ts_file, clip, tmp_path):
    out = tmp_path / "answers.jsonl"
    argv = [sys.executable, "-m", "stvgr1_edge", "run", "-", clip[1], "--window", "4", "--every", "2", *NANO]
    with open(ts_file, "rb") as stdin:
        done = subprocess.run([*argv, "-o", str(out)], stdin=stdin, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(d["window"]["start_s"], d["window"]["end_s"]) for d in lines] == [(0, 4), (2, 6), (4, 8)]  # 8 s clip
    for d in lines:
        assert d["num_frames"] == 40 and d["duration_s"] == 4.0 and d["video"] == "-"
        assert len(d["sampled_frames"]) == 8  # 2 fps over the window, as the checkpoint samples a 4 s clip
        q = d["queries"][0]
        assert {"ids", "start_s", "end_s", "tube", "parse_ok"} <= set(q)
        assert all(0 <= int(f) < 40 for f in q["tube"])
    assert "3 windows answered" in done.stderr

    # stdout carries the lines with -o -; the table goes to stderr
    with open(ts_file, "rb") as stdin:
        done = subprocess.run([*argv, "-o", "-"], stdin=stdin, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["window"]["index"] for line in done.stdout.splitlines()] == [0, 1, 2]


@pytest.mark.slow
def test_ctrl_c_ends_a_live_run_and_keeps_every_line_written(ts_file, clip, tmp_path):
    out = tmp_path / "answers.jsonl"
    argv = [sys.executable, "-m", "stvgr1_edge", "run", "-", clip[1], "--window", "2", *NANO, "-o", str(out)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=_python_env(), preexec_fn=_default_sigint
    )
    assert proc.stdin is not None
    payload = ts_file.read_bytes()
    proc.stdin.write(payload[: len(payload) * 3 // 4])  # six of eight seconds, and the pipe stays open
    proc.stdin.flush()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") >= 2):
        assert proc.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)  # waiting for more of the stream now
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == 130, proc.stderr.read().decode() if proc.stderr else ""
    lines = out.read_text().splitlines()
    assert len(lines) >= 2 and all(json.loads(line)["queries"] for line in lines)


def test_run_reads_a_container_piped_on_stdin_as_the_same_file(ts_file, clip, tmp_path):
    from_file, from_pipe = tmp_path / "file.json", tmp_path / "pipe.json"
    argv = [sys.executable, "-m", "stvgr1_edge", "run"]
    done = subprocess.run([*argv, str(ts_file), clip[1], *NANO, "-o", str(from_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with open(ts_file, "rb") as stdin:
        done = subprocess.run([*argv, "-", clip[1], *NANO, "-o", str(from_pipe)], stdin=stdin, capture_output=True)
    assert done.returncode == 0, done.stderr
    a, b = json.loads(from_file.read_text()), json.loads(from_pipe.read_text())
    assert b["video"] == "-" and b["num_frames"] == a["num_frames"] == 80
    assert b["queries"][0]["answer_text"] == a["queries"][0]["answer_text"]
    assert b["queries"][0]["tube"] == a["queries"][0]["tube"]


def test_duration_reads_only_the_first_seconds(clip, tmp_path):
    out = tmp_path / "cut.json"
    assert main(["run", str(clip[0]), clip[1], *NANO, "--duration", "3", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_frames"] == 30 and result["video"] == str(clip[0])


@pytest.mark.parametrize(
    "args, says",
    [
        (["rtsp://127.0.0.1:9/cam"], "live source with no end"),
        (["rtsp://127.0.0.1:9/cam", "--duration", "5"], "cannot open rtsp://127.0.0.1:9/cam"),
        (["/dev/video99", "--window", "4"], "cannot open /dev/video99"),
        (["x.mp4", "--window", "0"], "--window 0"),
    ],
)
def test_live_sources_that_cannot_run_fail_in_one_line(args, says, tmp_path, capsys):
    assert main(["run", *args[:1], "a query", *args[1:], "-o", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not (tmp_path / "o.json").exists()


def test_stdin_that_is_a_terminal_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    assert main(["run", "-", "a query", "--window", "4", "-o", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing is piped in" in err[0]
    assert not (tmp_path / "o.jsonl").exists()
