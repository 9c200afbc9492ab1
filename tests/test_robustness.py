"""Process faults and outputs that cannot be written: one line on stderr, the documented exit code, no traceback and
no output file left half-written (each command runs as a real process, as a user would start it)."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLIP = str(FIXTURES / "vtest_250_299.avi")
ENTRY = "import sys; from stvgr1_edge.cli import main; sys.exit(main(sys.argv[1:]))"


def _cli(*args: str, timeout: float = 300, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn
    )


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


UNWRITABLE = [
    ("synth", ["synth", "/proc/stvg-edge-test/out", "--num", "1"], "OUT_DIR"),
    ("track", ["track", CLIP, "-o", "/proc/stvg-edge-test/t.json"], "--output"),
    ("track --vis", ["track", CLIP, "-o", "{tmp}/t.json", "--vis", "/proc/stvg-edge-test/v.mp4"], "--vis"),
    ("run", ["run", CLIP, "a person walks", "--model", "nano", "-o", "/proc/stvg-edge-test/r.json"], "--output"),
    (
        "run --vis",
        ["run", CLIP, "a person walks", "--model", "nano", "-o", "{tmp}/r.json", "--vis", "/proc/stvg-edge-test/v.mp4"],
        "--vis",
    ),
    ("demo", ["demo", "--out", "/proc/stvg-edge-test/demo"], "--out"),
    ("run -o folder", ["run", CLIP, "a person walks", "--model", "nano", "-o", "{tmp}"], "is a folder"),
    ("track -o folder", ["track", CLIP, "-o", "{tmp}"], "is a folder"),
    ("synth to a file", ["synth", "{tmp}/file.txt"], "is a file"),
]


@pytest.mark.parametrize("name, args, named", UNWRITABLE, ids=[u[0] for u in UNWRITABLE])
def test_an_output_that_cannot_be_written_fails_first_in_one_line(tmp_path, name, args, named):
    (tmp_path / "file.txt").write_text("not a folder\n")
    started = time.perf_counter()
    proc = _cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line.startswith("error: ") and named in line
    assert _leftovers(tmp_path) == ["file.txt"]  # nothing else was written
    assert time.perf_counter() - started < 60  # refused before any decoding or model loading


def test_a_network_source_is_passed_on_as_written(tmp_path):
    """A URL is not a path: it reaches FFmpeg unchanged (here nothing listens, so opening it fails in one line)."""
    url = "rtsp://127.0.0.1:9/stream"
    proc = _cli("track", url, "-o", str(tmp_path / "t.json"), timeout=120)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert url in line and "not found" not in line
    assert _leftovers(tmp_path) == []


def test_a_file_size_limit_while_writing_is_one_line_and_leaves_no_partial_file(tmp_path):
    """``ulimit -f``: the clip being written outgrows the limit; the writer's temporary file goes away."""
    limit = 64 * 1024

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "synth"
    proc = _cli("synth", str(out), "--num", "2", "--width", "640", "--height", "480", preexec_fn=small_files)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert "File too large" in line
    assert all(not name.startswith(".") and Path(name).name[0] != "." for name in _leftovers(out))
    assert "annotations.json" not in _leftovers(out)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_mid_run_gives_its_exit_code_and_leaves_no_temporary_file(tmp_path, sig, code, word):
    out = tmp_path / "synth"
    # as from a terminal: a shell starting the tests in the background makes SIGINT ignored, and children inherit that
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "synth", str(out), "--num", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not (out / "videos").exists() or not any((out / "videos").glob("*.mp4")):
        assert time.time() < deadline and proc.poll() is None, "synth did not start writing clips"
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and err.strip().splitlines() == [word], err
    assert not [name for name in _leftovers(out) if Path(name).name.startswith(".")]  # no temporary files
    assert not (out / "annotations.json").exists()


def test_time_ranges_that_run_backwards_are_refused_with_their_cause(tmp_path, capsys):
    import json

    from stvgr1_edge.cli import main

    entry = {
        "img_num": 100,
        "img_hw": [120, 160],
        "st_frame": 50,
        "ed_frame": 10,
        "bbox": [[1, 1, 5, 5]] * 5,
        "English": "a man waves",
    }
    (tmp_path / "gt.json").write_text(json.dumps({"v.mp4": entry}))
    (tmp_path / "pred.json").write_text(json.dumps({"v.mp4": {"ids": [1], "start_s": 5.0, "end_s": 2.0}}))
    assert main(["eval", str(tmp_path / "pred.json"), str(tmp_path / "gt.json")]) == 2
    assert "'ed_frame' is 10, before st_frame 50" in capsys.readouterr().err
    entry.update(st_frame=10, ed_frame=14)
    (tmp_path / "gt.json").write_text(json.dumps({"v.mp4": entry}))
    assert main(["eval", str(tmp_path / "pred.json"), str(tmp_path / "gt.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "end_s 2.0 is before start_s 5.0" in err[0]
