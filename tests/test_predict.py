"""`stvg-edge predict` over a synthetic set with the packaged nano model: killed and resumed, sharded (also under
torchrun with two CPU processes), with failing videos; and `eval` on what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from stvgr1_edge.cli import main
from stvgr1_edge.dataset import load_annotations
from stvgr1_edge.errors import BadInputError
from stvgr1_edge.metrics import evaluate_files
from stvgr1_edge.pipeline import GroundingPipeline
from stvgr1_edge.predict import Shard, predict_dataset
from stvgr1_edge.run_config import RunConfig, build_pipeline
from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset

NUM_CLIPS = 6
PREDICT_ARGS = ["--model", "nano", "--device", "cpu", "--max-new-tokens", "256"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict_set")
    return write_synthetic_dataset(
        root, num=NUM_CLIPS, seed=7100, config=SynthConfig(width=224, height=168, seconds=4.0)
    )


@pytest.fixture(scope="module")
def pipeline() -> GroundingPipeline:
    return build_pipeline(RunConfig(model="nano", device="cpu", max_new_tokens=256))


@pytest.fixture(scope="module")
def reference(dataset, pipeline, tmp_path_factory) -> Path:
    """One uninterrupted, unsharded run."""
    out = tmp_path_factory.mktemp("reference") / "pred.jsonl"
    summary = predict_dataset(load_annotations(dataset), dataset.parent / "videos", pipeline, out)
    assert (summary.predicted, summary.failed, summary.already_done) == (NUM_CLIPS, 0, 0)
    return out


def _lines(*paths: Path) -> dict[str, dict]:
    """Every line by key, without its timings (the only field that differs between two identical runs)."""
    out = {}
    for path in paths:
        for line in path.read_text().splitlines():
            obj = json.loads(line)
            obj.pop("timings_ms", None)
            assert obj["key"] not in out
            out[obj["key"]] = obj
    return out


def _tracks(output: Path) -> dict[str, dict]:
    folder = output.with_name(output.stem + ".tracks")
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def test_every_query_gets_a_line_with_its_answer_and_tracks(dataset, reference):
    lines = _lines(reference)
    assert sorted(lines) == sorted(s.key for s in load_annotations(dataset))
    for line in lines.values():
        assert {"query", "answer_text", "ids", "start_s", "end_s", "tube", "parse_ok", "tracks_file"} <= set(line)
        assert (reference.parent / line["tracks_file"]).is_file()
    assert len(_tracks(reference)) == NUM_CLIPS
    config = json.loads(reference.with_name("pred.jsonl.config.json").read_text())
    assert config["grounder"]["model"] == "nano" and config["tracker"]["name"] == "classical"


def _python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_a_run_killed_midway_resumes_to_the_predictions_of_an_uninterrupted_run(dataset, reference, tmp_path):
    out = tmp_path / "pred.jsonl"
    argv = [sys.executable, "-m", "stvgr1_edge", "predict", str(dataset), "-o", str(out), *PREDICT_ARGS]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_python_env())
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_text().count("\n")
    assert 2 <= written < NUM_CLIPS  # killed midway

    done = subprocess.run(argv, capture_output=True, text=True, env=_python_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{written} already done" in done.stdout
    assert _lines(out) == _lines(reference)
    assert _tracks(out) == _tracks(reference)
    assert evaluate_files(out, dataset)["results"] == evaluate_files(reference, dataset)["results"]


def test_resume_drops_a_cut_line_and_replays_saved_tracks_exactly(dataset, reference, pipeline, tmp_path):
    """Killed after a video's tracks were saved but before its lines were: the rerun replays those tracks and
    answers exactly as the run that tracked live."""
    out = tmp_path / "pred.jsonl"
    shutil.copytree(reference.with_name("pred.tracks"), tmp_path / "pred.tracks")
    lines = reference.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-2]) + lines[-2][:25])  # the last whole line gone, the one before cut short

    calls = []
    original_run = GroundingPipeline.run

    def counting_run(self, video, queries, **kwargs):
        calls.append(type(self.tracker).__name__)
        return original_run(self, video, queries, **kwargs)

    GroundingPipeline.run = counting_run  # type: ignore[method-assign]
    try:
        summary = predict_dataset(load_annotations(dataset), dataset.parent / "videos", pipeline, out)
    finally:
        GroundingPipeline.run = original_run  # type: ignore[method-assign]
    assert (summary.already_done, summary.predicted) == (NUM_CLIPS - 2, 2)
    assert calls == ["ReplayTracker", "ReplayTracker"]
    assert _lines(out) == _lines(reference)


def test_two_shards_merged_equal_one_run_and_eval_merges_their_files(dataset, reference, pipeline, tmp_path):
    out = tmp_path / "pred.jsonl"
    samples = load_annotations(dataset)
    for index in (0, 1):
        predict_dataset(samples, dataset.parent / "videos", pipeline, out, shard=Shard(index, 2))
    shards = [tmp_path / "pred-00000-of-00002.jsonl", tmp_path / "pred-00001-of-00002.jsonl"]
    assert not out.exists() and all(p.is_file() for p in shards)
    assert set(_lines(shards[0])).isdisjoint(_lines(shards[1])) and _lines(*shards) == _lines(reference)
    merged = evaluate_files(out, dataset)  # pred.jsonl itself does not exist: its shard set is read
    assert merged["files"]["predictions"] == [str(p) for p in shards]
    assert merged["results"] == evaluate_files(reference, dataset)["results"]
    shards[1].unlink()
    with pytest.raises(BadInputError, match="shard pred-00001-of-00002.jsonl is missing"):
        evaluate_files(out, dataset)


def test_answered_ids_are_scored_on_the_tracks_the_predictions_name(dataset, reference):
    report = evaluate_files(reference, dataset, per_video=True)["results"]["tubedetr"]
    assert report["counts"]["id_assessed"] + sum(report["counts"]["id_not_assessable"].values()) == NUM_CLIPS
    # every line names its tracks: what is left out is where the tracker lost the target, never "no tracks"
    assert "no_tracks" not in report["counts"]["id_not_assessable"] and report["counts"]["id_assessed"] >= 3
    lines = _lines(reference)
    for key, row in report["per_video"].items():
        if row["id_status"] == "assessed":
            assert row["id_correct"] == (lines[key]["ids"] == [row["gt_track_id"]])


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_two_shards_that_equal_one_run(dataset, reference, tmp_path):
    out = tmp_path / "pred.jsonl"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    argv += ["-m", "stvgr1_edge", "predict", str(dataset), "-o", str(out), *PREDICT_ARGS]
    env = {**_python_env(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = [tmp_path / f"pred-0000{i}-of-00002.jsonl" for i in (0, 1)]
    assert _lines(*shards) == _lines(reference)
    assert _tracks(out) == _tracks(reference)


def test_failed_videos_are_recorded_and_the_rest_complete(dataset, pipeline, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(dataset.parent, data)
    samples = sorted(load_annotations(data / "annotations.json"), key=lambda s: s.video)
    videos = [Path(str(s.video_path)) for s in samples]
    assert all(v.parent == data / "videos" for v in videos)
    videos[0].unlink()
    videos[1].write_bytes(b"\x00not a video" * 100)
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(data / "annotations.json"), str(data / "videos"), "-o", str(out), *PREDICT_ARGS]) == 0
    assert f"{NUM_CLIPS - 2} queries predicted, 0 already done, 2 failed (2 videos)" in capsys.readouterr().out
    lines = _lines(out)
    assert "video file not found" in lines[samples[0].key]["error"]
    assert lines[samples[1].key]["error"] and "\n" not in lines[samples[1].key]["error"]
    assert all("error" not in lines[s.key] for s in samples[2:])

    report = evaluate_files(out, data / "annotations.json")["results"]["stvg-r1"]
    assert report["counts"]["failed"] == 2 and sorted(report["failed"]) == sorted(s.key for s in samples[:2])

    # a rerun keeps the failures; --retry-failed tries them again
    shutil.copy(dataset.parent / "videos" / videos[0].name, videos[0])
    assert main(["predict", str(data / "annotations.json"), str(data / "videos"), "-o", str(out), *PREDICT_ARGS]) == 0
    assert "0 queries predicted" in capsys.readouterr().out
    argv = ["predict", str(data / "annotations.json"), str(data / "videos"), "-o", str(out), "--retry-failed"]
    assert main([*argv, *PREDICT_ARGS]) == 0
    assert "1 queries predicted" in capsys.readouterr().out
    assert "error" not in _lines(out)[samples[0].key] and "error" in _lines(out)[samples[1].key]


def test_many_queries_on_one_video_are_answered_from_one_tracking_pass(dataset, pipeline, tmp_path):
    base = load_annotations(dataset)[0]
    samples = [base, replace(base, key=base.key + "#2", query="the small object moves to the left")]
    calls = []
    original_run = GroundingPipeline.run

    def counting_run(self, video, queries, **kwargs):
        calls.append(list(queries))
        return original_run(self, video, queries, **kwargs)

    GroundingPipeline.run = counting_run  # type: ignore[method-assign]
    try:
        summary = predict_dataset(samples, dataset.parent / "videos", pipeline, tmp_path / "pred.jsonl")
    finally:
        GroundingPipeline.run = original_run  # type: ignore[method-assign]
    assert summary.predicted == 2 and calls == [[s.query for s in samples]]
    assert len(_tracks(tmp_path / "pred.jsonl")) == 1


def test_resuming_with_other_settings_is_refused_with_one_line(dataset, reference, tmp_path, capsys):
    out = tmp_path / "pred.jsonl"
    shutil.copy(reference, out)
    shutil.copy(reference.with_name("pred.jsonl.config.json"), tmp_path / "pred.jsonl.config.json")
    argv = ["predict", str(dataset), "-o", str(out), "--model", "nano", "--device", "cpu", "--max-new-tokens", "32"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grounder.max_new_tokens" in err[0] and "--no-resume" in err[0]
    assert out.read_text() == reference.read_text()  # nothing appended


@pytest.mark.parametrize("text", ["2/2", "1/0", "a/b", "3"])
def test_a_bad_shard_is_one_line(text, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text("{}")
    assert main(["predict", str(gt), "-o", str(tmp_path / "p.jsonl"), "--shard", text]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "shard" in err[0]


def test_the_shard_comes_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    shard = Shard.from_environment()
    assert shard == Shard(3, 4) and shard.output_path("out/p.jsonl") == Path("out/p-00003-of-00004.jsonl")
    monkeypatch.delenv("RANK")
    assert Shard.from_environment() is None


def test_videos_are_found_by_name_in_sub_folders_or_by_stem(tmp_path):
    from stvgr1_edge.dataset import STVGSample
    from stvgr1_edge.predict import plan_videos

    (tmp_path / "v" / "part1").mkdir(parents=True)
    for name in ("part1/a.mkv", "b.mp4", "c.mp4", "part1/c.mp4", "e.avi", "e.mkv"):
        (tmp_path / "v" / name).write_bytes(b"x")
    samples = [STVGSample(key=k, video=k, query="q") for k in ("a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4")]
    samples.append(STVGSample(key="b2", video="b.mp4", query="another"))
    jobs = {j.video: j for j in plan_videos(samples, tmp_path / "v")}
    assert jobs["a.mp4"].path == tmp_path / "v" / "part1" / "a.mkv"  # the one file with its stem
    assert jobs["b.mp4"].path == tmp_path / "v" / "b.mp4" and [s.key for s in jobs["b.mp4"].samples] == ["b.mp4", "b2"]
    assert jobs["c.mp4"].path is None and jobs["c.mp4"].candidates == 2  # two files of that name: ambiguous
    assert jobs["d.mp4"].path is None and jobs["d.mp4"].candidates == 0
    assert jobs["e.mp4"].path is None and jobs["e.mp4"].candidates == 2
