"""The CLI's error contract: user errors are one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stvgr1_edge.cli import main
from stvgr1_edge.errors import BadInputError, atomic_output, read_json, write_json_atomic


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["no-such-command"], "No such command"),
        (["eval"], "Missing argument"),
        (["synth", "out", "--num", "0"], "--num"),
        (["run", "missing.mp4", "a dog", "--answer-samples", "-1"], "--answer-samples must be >= 0"),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, argv, fragment):
    assert main(argv) == 2
    assert fragment in _one_error_line(capsys)


def test_eval_on_missing_prediction_file_exits_2(tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text("{}")
    assert main(["eval", str(tmp_path / "missing.json"), str(gt)]) == 2
    assert "missing.json" in _one_error_line(capsys)


def test_console_script_exit_code_and_stderr_from_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stvgr1_edge", "eval", str(tmp_path / "nope.json"), str(tmp_path / "nope2.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "synth" in capsys.readouterr().out


def test_atomic_output_leaves_nothing_on_failure_and_replaces_on_success(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            1 / 0
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    write_json_atomic(target, {"b": 1, "a": "é"})
    assert target.read_text(encoding="utf-8") == '{"a": "é", "b": 1}\n'


@pytest.mark.parametrize(
    "content, fragment", [(None, "not found"), ("{bad", "not valid JSON"), (b"\xff\xfe\x00", "not UTF-8")]
)
def test_read_json_errors_are_single_lines(tmp_path, content, fragment):
    p = tmp_path / "x.json"
    if isinstance(content, str):
        p.write_text(content)
    elif isinstance(content, bytes):
        p.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        read_json(p, "predictions file")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_atomic_output_dir_replaces_a_folder_only_when_complete(tmp_path):
    from stvgr1_edge.errors import atomic_output_dir

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("export failed")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no scratch folder left
    with atomic_output_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
