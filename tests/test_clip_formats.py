"""benchmarks/clip_formats.py: the paired difference between two models scored on the same clips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("clip_formats")


def per_video(values) -> dict:
    return {f"clip_{i:02d}": {"vIoU": v, "tIoU": 0.5} for i, v in enumerate(values)}


def test_the_mean_difference_is_the_difference_of_the_means_and_a_clip_without_a_tube_scores_zero(bench):
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, 16), rng.uniform(0, 1, 16)
    b_with_gap = [None, *b[1:]]  # no tube for the first clip: eval's m_vIoU counts it as 0
    d = bench.paired_difference(per_video(a), per_video(b_with_gap), "vIoU")
    assert d["clips"] == 16
    assert d["mean"] == pytest.approx(np.mean([0.0, *b[1:]]) - np.mean(a))
    assert d["ci95"][0] < d["mean"] < d["ci95"][1]
    assert bench.paired_difference(per_video(a), per_video(b), "tIoU") == {"mean": 0.0, "ci95": [0.0, 0.0], "clips": 16}


def test_the_interval_tells_a_consistent_gain_from_noise(bench):
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.8, 16)
    gain = bench.paired_difference(per_video(base), per_video(base + 0.05 + rng.normal(0, 0.01, 16)), "vIoU")
    assert gain["ci95"][0] > 0.03 and gain["ci95"][1] < 0.07
    # the same mean gain carried by two clips of 16: the interval reaches 0
    spread = base.copy()
    spread[:2] += 0.4
    noisy = bench.paired_difference(per_video(base), per_video(spread), "vIoU")
    assert noisy["mean"] == pytest.approx(0.05)
    assert noisy["ci95"][0] <= 0 < noisy["ci95"][1]
    # seeded: a rerun gives the same interval
    assert bench.paired_difference(per_video(base), per_video(spread), "vIoU") == noisy


def test_different_clips_are_refused(bench):
    with pytest.raises(ValueError, match="clip_15"):
        bench.paired_difference(per_video([0.1] * 15), per_video([0.2] * 16), "vIoU")


def test_a_model_against_itself_differs_by_nothing_on_the_same_clips(tmp_path):
    # the whole path: synth, predict and eval per column, eval's per-video rows keyed by the same clips
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "formats.json"
    same = str(root / "stvgr1_edge" / "models" / "nano")  # the packaged model under a second name
    argv = [sys.executable, str(root / "benchmarks" / "clip_formats.py"), "--models", "nano", same]
    argv += ["--num", "2", "--formats", "320x240 4s", "--out", str(out)]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=900)
    table = json.loads(out.read_text())["table"]["320x240 4s"]
    assert "vs_first" not in table["nano template"]  # the column the others are compared with
    assert table[f"{same} template"]["vs_first"] == {
        "m_tIoU": {"mean": 0.0, "ci95": [0.0, 0.0], "clips": 2},
        "m_vIoU": {"mean": 0.0, "ci95": [0.0, 0.0], "clips": 2},
    }
