"""The prior baseline (stvgr1_edge.baseline): the best constant time range is exact, the largest track is the
most visible one, and `eval --baseline prior` scores it beside the model."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from stvgr1_edge.baseline import best_constant_range, largest_track, prior_baseline
from stvgr1_edge.dataset import STVGSample
from stvgr1_edge.metrics import Prediction, summarize
from stvgr1_edge.tracks import TrackSet


def _mean_tiou(a: float, b: float, gt: np.ndarray) -> float:
    inter = np.clip(np.minimum(b, gt[:, 1]) - np.maximum(a, gt[:, 0]), 0, None)
    union = np.maximum(b, gt[:, 1]) - np.minimum(a, gt[:, 0])
    return float(np.mean(inter / union))


@pytest.mark.parametrize("seed", range(5))
def test_the_constant_range_beats_every_range_on_a_finer_grid(seed):
    rng = np.random.default_rng(seed)
    starts = np.round(rng.uniform(0, 12, 40), 1)
    gt = np.stack([starts, starts + np.round(rng.uniform(0.5, 8, 40), 1)], axis=1)
    a, b, fitted = best_constant_range(gt.tolist())
    assert fitted == pytest.approx(_mean_tiou(a, b, gt))
    grid = np.arange(0, 20.01, 0.05)
    brute = max(_mean_tiou(x, y, gt) for x, y in itertools.combinations(grid, 2))
    assert fitted >= brute - 1e-9


def test_one_shared_range_is_found_exactly():
    a, b, fitted = best_constant_range([(1.0, 4.4)] * 7 + [(0.0, 9.0)])
    assert (a, b) == pytest.approx((1.0, 4.4)) and fitted == pytest.approx((7 + 3.4 / 9.0) / 8)


def test_the_largest_track_is_the_most_visible_in_the_range():
    tracks = TrackSet(100, 100, 10.0, 20)
    for f in range(20):
        tracks.add(1, f, [0, 0, 10, 10])  # 100 px² everywhere
        if 5 <= f < 10:
            tracks.add(2, f, [0, 0, 30, 30])  # 900 px², only on frames 5..9
    assert largest_track(tracks, range(5, 10)) == 2
    assert largest_track(tracks, range(0, 20)) == 2  # 4500 > 2000
    assert largest_track(tracks, range(10, 20)) == 1
    assert largest_track(TrackSet(100, 100, 10.0, 20), range(0, 20)) is None


def test_the_prior_answers_its_range_with_the_largest_tracks_tube():
    samples = [
        STVGSample(
            key=k,
            video=k,
            query="q",
            num_frames=20,
            height=100,
            width=100,
            fps=10.0,
            st_frame=st,
            ed_frame=st + 9,
            st_time=st / 10,
            ed_time=(st + 9) / 10,
            gt_boxes={f: (0.0, 0.0, 30.0, 30.0) for f in range(st, st + 10)},
        )
        for k, st in (("a", 5), ("b", 5), ("c", 8))
    ]
    tracks = TrackSet(100, 100, 10.0, 20)
    for f in range(20):
        tracks.add(4, f, [0, 0, 30, 30])
        tracks.add(6, f, [50, 50, 60, 60])
    model = {"a": Prediction((6,), 0.0, 1.9, tracks=tracks), "b": Prediction((4,), 0.5, 1.4)}  # b: no tracks
    prior, info = prior_baseline(samples, model)
    assert info["time_range_s"] == [0.5, 1.4] and info["samples_with_tracks"] == 1
    assert prior["a"].ids == (4,) and sorted(prior["a"].tube or {}) == list(range(5, 15))
    assert prior["b"].ids == () and prior["c"].ids == ()  # no tracks to pick from
    report = summarize(prior, samples, "tubedetr")
    assert report["metrics"]["m_tIoU"] == pytest.approx((1 + 1 + 7 / 13) / 3)
    assert report["metrics"]["id_accuracy"] == 1.0 and report["counts"]["id_assessed"] == 1


def test_eval_prints_the_prior_row_and_the_difference(tmp_path, capsys):
    from stvgr1_edge.cli import main
    from stvgr1_edge.dataset import write_hcstvg_v2

    sample = STVGSample(
        key="v.mp4",
        video="v.mp4",
        query="q",
        num_frames=20,
        height=100,
        width=100,
        fps=10.0,
        st_frame=5,
        ed_frame=14,
        st_time=0.5,
        ed_time=1.4,
        gt_boxes={f: (0.0, 0.0, 30.0, 30.0) for f in range(5, 15)},
    )
    gt = write_hcstvg_v2([sample], tmp_path / "gt.json")
    tracks = TrackSet(100, 100, 10.0, 20)
    for f in range(20):
        tracks.add(2, f, [0, 0, 30, 30])
    tracks.save(tmp_path / "v.tracks.json")
    line = {
        "key": "v.mp4",
        "ids": [2],
        "start_s": 0.0,
        "end_s": 1.9,
        "tracks_file": "v.tracks.json",
        "tube": {str(f): [0, 0, 30, 30] for f in range(20)},
    }
    (tmp_path / "pred.jsonl").write_text(json.dumps(line) + "\n")
    report_file = tmp_path / "report.json"
    assert main(["eval", str(tmp_path / "pred.jsonl"), str(gt), "--baseline", "prior", "--json", str(report_file)]) == 0
    printed = capsys.readouterr().out
    assert "prior" in printed and "difference" in printed and "0.50–1.40 s" in printed
    report = json.loads(report_file.read_text())
    model = report["results"]["tubedetr"]["metrics"]
    prior = report["baseline"]["results"]["tubedetr"]["metrics"]
    assert model["m_tIoU"] == pytest.approx(0.5) and prior["m_tIoU"] == 1.0
    assert model["id_accuracy"] == 1.0 and prior["id_accuracy"] == 1.0
    assert "-50.0" in printed  # model − prior on m_tIoU, in points
    assert main(["eval", str(tmp_path / "pred.jsonl"), str(gt), "--per-video"]) == 0
    printed = capsys.readouterr().out
    assert "per video (tubedetr)" in printed and "v.mp4" in printed and "right" in printed
