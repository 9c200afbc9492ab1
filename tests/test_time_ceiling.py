"""benchmarks/time_ceiling.py: the readers' answers by hand, and the prior it reports is the evaluation's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("time_ceiling")


def test_readers_answer_halfway_to_the_neighbouring_sample(bench):
    times = np.arange(8) * 0.5  # 8 samples, 4 tubes: (0, .5) (1, 1.5) (2, 2.5) (3, 3.5)
    inside = np.array([0, 0, 0, 1, 1, 1, 0, 0], bool)  # frames 1.5 .. 2.5
    assert bench.edge_answer(times, inside) == (1.25, 2.75)
    assert bench.tube_edge_answer(times, inside.reshape(-1, 2).any(axis=1)) == (0.75, 2.75)
    # an event touching the clip's ends is answered at the first / last sample
    assert bench.edge_answer(times, np.ones(8, bool)) == (0.0, 3.5)
    assert bench.tube_edge_answer(times, np.array([1, 0, 0, 1], bool)) == (0.0, 3.5)


def test_ceiling_on_the_clip_formats_clips(bench, tmp_path):
    from stvgr1_edge.baseline import best_constant_range
    from stvgr1_edge.synth import SynthConfig, clip_seeds, generate_clip

    out = tmp_path / "ceiling.json"
    bench.main(["--num", "6", "--seed", "9000", "--out", str(out)])
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert sorted(report["formats"]) == sorted(bench.FORMATS)
    default = report["formats"]["default 320x240 8s"]
    # the prior is the best constant range of the very clips clip_formats.py synthesises (seed 9000)
    clips = [generate_clip(s, SynthConfig()) for s in clip_seeds(9000, 6)]
    fps = SynthConfig().fps
    a, b, _ = best_constant_range([(c.event.start_frame / fps, c.event.end_frame / fps) for c in clips])
    assert default["prior_range_s"] == [round(a, 2), round(b, 2)]
    assert default["sampled_frames"] == 16
    for r in report["formats"].values():
        m = r["m_tIoU"]
        assert m["frame reader"] > m["tube reader"] > 0.5 and m["target"] == min(m["prior"] + 0.1, 0.85)
