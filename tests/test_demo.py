"""`stvg-edge demo` end to end on CPU: synthetic clip → classical tracker → packaged nano model → result.json +
result.mp4, with the answer printed next to the ground truth."""

from __future__ import annotations

import json

from stvgr1_edge.cli import main
from stvgr1_edge.dataset import load_annotations
from stvgr1_edge.video import probe_video


def test_demo_writes_result_and_video(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "5003"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    sample = load_annotations(out / "clip" / "annotations.json")[0]
    q = result["queries"][0]
    assert q["query"] == sample.query
    assert q["parse_ok"] is True and len(q["ids"]) == 1
    info = probe_video(out / "result.mp4")
    assert (info.num_frames, info.width, info.height) == (60, 224, 168)
    # the printed table holds the answer and the ground truth
    assert "ground truth" in printed and "answer" in printed
    assert f"{sample.st_time:.2f} – {sample.ed_time:.2f}" in printed
    assert f"{q['start_s']:.2f} – {q['end_s']:.2f}" in printed
