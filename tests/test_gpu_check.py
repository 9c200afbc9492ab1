"""benchmarks/gpu_check.sh --dry-run: every step of the one-shot GPU check runs on the CPU at tiny sizes and leaves
its results where the real run will (the real run needs a CUDA machine; this keeps the script right until then)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_and_writes_its_results(tmp_path):
    out = tmp_path / "gpu_check"
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = json.loads((out / "summary.json").read_text())
    failed = {s["step"]: (out / f"{s['step']}.log").read_text()[-2000:] for s in summary["steps"] if s["exit_code"]}
    assert done.returncode == 0 and not failed, failed or done.stderr[-2000:]
    assert [s["step"] for s in summary["steps"]] == [
        "doctor",
        "pytest_gpu",
        "int4_prefill_rows",
        "engine_decode",
        "e2e_latency",
        "tracker_objects",
    ]
    assert summary["device"] == "cpu" and summary["all_passed"]
    e2e = json.loads((out / "e2e_latency.json").read_text())["nano-cpu"]
    row = e2e["rows"][0]
    assert set(row["columns"]) == {"full", "optimized", "quantized"}
    assert row["columns"]["optimized"]["same_answer"] and row["columns"]["quantized"]["same_answer"]
    assert row["columns"]["optimized"]["config"]["engine"] == "static"
    assert all(row["columns"][c]["stages_s"]["track"] > 0 for c in row["columns"])
    objects = json.loads((out / "tracker_objects.json").read_text())
    assert {r["objects"] for r in objects["rows"]} == {1, 5} and {r["path"] for r in objects["rows"]} == {
        "batched",
        "one_by_one",
    }
    decode = json.loads((out / "engine_decode.json").read_text())
    (entry,) = decode.values()
    assert entry["configs"]["engine-fp32"]["token_agreement_vs_hf_fp32"] == 1.0
    assert (out / "e2e_latency.png").is_file() and (out / "tracker_objects.png").is_file()
