"""`stvg-edge run` end to end on CPU: synthetic clip → tracker → tiny random Qwen2.5-VL (saved and reloaded
from a folder) → result JSON; and with a scripted answer, the tube equals the GT track (eval m_vIoU = 1.0)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from stvgr1_edge.cli import main
from stvgr1_edge.grounding import Grounder, GrounderConfig, GroundingOutput
from stvgr1_edge.pipeline import GroundingPipeline, PipelineConfig
from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset
from stvgr1_edge.tiny import save_tiny_model
from stvgr1_edge.tracking.factory import make_tracker
from stvgr1_edge.tracking.replay import ReplayTracker
from stvgr1_edge.tracks import TrackSet
from stvgr1_edge.video import VideoWriter, probe_video

BOX = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
RESULT_SCHEMA = {  # ARCHITECTURE.md, result JSON of `run`
    "type": "object",
    "required": ["video", "fps", "num_frames", "queries", "timings_ms", "config"],
    "properties": {
        "video": {"type": "string"},
        "fps": {"type": "number", "exclusiveMinimum": 0},
        "num_frames": {"type": "integer", "minimum": 1},
        "queries": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["query", "answer_text", "ids", "start_s", "end_s", "tube", "parse_ok", "warnings"],
                "properties": {
                    "query": {"type": "string"},
                    "answer_text": {"type": "string"},
                    "ids": {"type": "array", "items": {"type": "integer"}},
                    "start_s": {"type": ["number", "null"]},
                    "end_s": {"type": ["number", "null"]},
                    "tube": {"type": "object", "patternProperties": {"^[0-9]+$": BOX}, "additionalProperties": False},
                    "parse_ok": {"type": "boolean"},
                    "warnings": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "timings_ms": {
            "type": "object",
            "required": ["decode", "track", "render", "vision", "prefill", "decode_tokens", "total"],
            "additionalProperties": {"type": "number", "minimum": 0},
        },
        "config": {"type": "object"},
    },
}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, num=1, seed=7, config=SynthConfig(seconds=6.0))
    return out


@pytest.fixture(scope="module")
def annotation(synth_dir) -> tuple[str, dict]:
    ann = json.loads((synth_dir / "annotations.json").read_text())
    key = sorted(ann)[0]
    return key, ann[key]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_qwen"), seed=0)


@pytest.fixture(scope="module")
def grounder(model_dir) -> Grounder:
    return Grounder.from_pretrained(GrounderConfig(model=str(model_dir), device="cpu", max_new_tokens=12))


def _video(synth_dir, annotation) -> Path:
    return synth_dir / annotation[1]["video_path"]


def test_run_cli_end_to_end_writes_a_result_that_follows_the_contract(
    synth_dir, annotation, model_dir, tmp_path, capsys
):
    video = _video(synth_dir, annotation)
    out, vis = tmp_path / "result.json", tmp_path / "result.mp4"
    rc = main(
        [
            "run",
            str(video),
            annotation[1]["English"],
            "the small object moves — ça bouge 跳",
            "-o",
            str(out),
            "--vis",
            str(vis),
            "--model",
            str(model_dir),
            "--device",
            "cpu",
            "--max-new-tokens",
            "12",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.validate(result, RESULT_SCHEMA)
    info = probe_video(video)
    assert result["num_frames"] == info.num_frames and result["fps"] == pytest.approx(info.fps)
    assert result["num_tracks"] >= 2  # the classical tracker found the moving objects
    assert result["queries"][1]["query"] == "the small object moves — ça bouge 跳"  # non-ASCII survives
    for q in result["queries"]:
        if q["parse_ok"] and q["tube"]:
            assert all(q["start_s"] - 1e-6 <= int(f) / info.fps <= q["end_s"] + 1e-6 for f in q["tube"])
        if not q["parse_ok"]:
            assert q["tube"] == {} and q["warnings"]
    vis_info = probe_video(vis)
    assert vis_info.num_frames == info.num_frames
    assert "tracks" in capsys.readouterr().out  # the one-screen summary


def test_run_cli_frame_memory_budget_changes_nothing_but_where_frames_wait(
    synth_dir, annotation, model_dir, tmp_path, capsys
):
    video = _video(synth_dir, annotation)
    texts = []
    for budget in ("1024", "0"):
        out = tmp_path / f"result_{budget}.json"
        rc = main(
            [
                "run",
                str(video),
                annotation[1]["English"],
                "-o",
                str(out),
                "--model",
                str(model_dir),
                "--device",
                "cpu",
                "--max-new-tokens",
                "12",
                "--frame-memory-mb",
                budget,
            ]
        )
        assert rc == 0, capsys.readouterr().err
        result = json.loads(out.read_text(encoding="utf-8"))
        assert result["config"]["pipeline"]["frame_memory_mb"] == float(budget)
        texts.append(result["queries"][0]["answer_text"])
    assert texts[0] == texts[1]


class ScriptedGrounder:
    """The real grounder's inputs and timings, but the model's text replaced by a given answer."""

    def __init__(self, grounder: Grounder, answer_text: str):
        self.inner, self.answer_text, self.config = grounder, answer_text, grounder.config
        self.encode_calls = 0

    def check_prompt_fits(self, prompt_text: str, num_visual_tokens: int) -> None:
        self.inner.check_prompt_fits(prompt_text, num_visual_tokens)

    def encode_video(self, clip):
        self.encode_calls += 1
        return self.inner.encode_video(clip)

    def ground(self, clip, prompt_text, encoded=None) -> GroundingOutput:
        out = self.inner.ground(clip, prompt_text, encoded)
        return GroundingOutput(
            self.answer_text,
            out.timings_ms,
            out.num_generated_tokens,
            out.tokens_per_s,
            out.num_visual_tokens,
            out.num_prompt_tokens,
            out.vision_reused,
        )


def clip_seen_by_the_model(synth_dir, annotation, grounder, config: PipelineConfig, answer: str):
    """Run the pipeline on the annotation's video with its GT tracks replayed; the PromptedClip the grounder got."""
    key, ann = annotation
    seen = []

    class Spy(ScriptedGrounder):
        def encode_video(self, clip):
            seen.append(clip)
            return super().encode_video(clip)

    GroundingPipeline(ReplayTracker(TrackSet.from_dict(ann["gt_tracks"])), Spy(grounder, answer), config).run(
        _video(synth_dir, annotation), [ann["English"]]
    )
    return seen[0]


def test_right_answer_gives_the_gt_tube_and_eval_scores_it_one(synth_dir, annotation, grounder, tmp_path, capsys):
    key, ann = annotation
    gt_tracks = TrackSet.from_dict(ann["gt_tracks"])
    answer = (
        f"<think>scripted</think><answer>Target ID: {ann['target_id']}, "
        f"Time range: {ann['st_time']:.2f} to {ann['ed_time']:.2f}</answer>"
    )
    scripted = ScriptedGrounder(grounder, answer)
    pipeline = GroundingPipeline(ReplayTracker(gt_tracks), scripted)
    result = pipeline.run(_video(synth_dir, annotation), [ann["English"], "another question about it"])

    assert scripted.encode_calls == 1  # two queries, one vision pass
    q = result.queries[0]
    assert q.answer.parse_ok and q.answer.ids == (ann["target_id"],)
    target = gt_tracks.tracks[ann["target_id"]]
    expected = {f: target.box_at(f) for f in range(ann["st_frame"], ann["ed_frame"] + 1)}
    assert q.tube.boxes == expected

    pred = tmp_path / "pred.json"
    pred.write_text(
        json.dumps(
            {
                key: {
                    "ids": list(q.answer.ids),
                    "start_s": q.answer.start_s,
                    "end_s": q.answer.end_s,
                    "tube": q.tube.boxes_json(),
                }
            }
        )
    )
    capsys.readouterr()
    assert main(["eval", str(pred), str(synth_dir / "annotations.json"), "--json", "-"]) == 0
    metrics = json.loads(capsys.readouterr().out)["results"]["tubedetr"]["metrics"]
    assert metrics["m_vIoU"] == pytest.approx(1.0) and metrics["m_tIoU"] == pytest.approx(1.0)


def test_markers_are_drawn_on_the_frames_the_model_sees(synth_dir, annotation, grounder):
    """The clip handed to the grounder carries red ID digits where the tracks are; time-only carries none."""
    answer = "<answer>Time range: 1.00 to 2.00</answer>"
    seen = {
        mode: clip_seen_by_the_model(synth_dir, annotation, grounder, PipelineConfig(time_only=time_only), answer)
        for mode, time_only in (("ids", False), ("time", True))
    }
    diff = np.abs(seen["ids"].frames.astype(int) - seen["time"].frames.astype(int)).sum(axis=-1)
    assert seen["ids"].frame_indices == seen["time"].frame_indices
    assert (diff > 0).any()  # markers changed pixels ...
    changed = seen["ids"].frames[diff > 0]
    assert (changed[:, 0].astype(int) > changed[:, 1].astype(int)).mean() > 0.5  # ... mostly towards red


def test_frames_waiting_on_disk_give_the_model_the_same_pixels(synth_dir, annotation, grounder, tmp_path, caplog):
    """frame_memory_mb=0 sends every sampled frame to a temporary folder while tracking runs: the clip the model
    sees is the same, already at the VLM's size, and the folder is gone afterwards."""
    caplog.set_level("INFO", logger="stvgr1_edge.prompted")
    answer = "<answer>Target ID: 1, Time range: 1.00 to 2.00</answer>"
    seen = {
        mode: clip_seen_by_the_model(
            synth_dir,
            annotation,
            grounder,
            PipelineConfig(frame_memory_mb=budget, frame_spill_dir=str(tmp_path)),
            answer,
        )
        for mode, budget in (("memory", None), ("disk", 0))
    }
    assert np.array_equal(seen["memory"].frames, seen["disk"].frames)
    clip = seen["disk"]
    assert f"{clip.num_frames} of {clip.num_frames} sampled frames waited on disk" in caplog.text
    assert clip.frames.shape[1:3] == (clip.resized_height, clip.resized_width)
    assert list(tmp_path.iterdir()) == []


def test_time_only_mode_returns_a_range_without_ids_or_tube(synth_dir, annotation, grounder):
    key, ann = annotation
    scripted = ScriptedGrounder(grounder, "<think>x</think><answer>Time range: 1.5 to 3</answer>")
    result = GroundingPipeline(make_tracker("classical"), scripted, PipelineConfig(time_only=True)).run(
        _video(synth_dir, annotation), [ann["English"]]
    )
    q = result.queries[0]
    assert q.answer.parse_ok and q.answer.ids == () and (q.answer.start_s, q.answer.end_s) == (1.5, 3.0)
    assert q.tube.is_empty


def test_video_with_no_objects_gives_parse_ok_false_and_a_warning(tmp_path, model_dir, capsys):
    video = tmp_path / "empty_scene.mp4"
    with VideoWriter(video, 10, 96, 64) as w:
        for _ in range(30):
            w.write(np.full((64, 96, 3), 128, np.uint8))
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "run",
                str(video),
                "the dog jumps",
                "-o",
                str(out),
                "--model",
                str(model_dir),
                "--device",
                "cpu",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    q = json.loads(out.read_text())["queries"][0]
    assert q["parse_ok"] is False and q["tube"] == {} and any("no objects" in w for w in q["warnings"])


@pytest.mark.parametrize("case", ["missing_video", "text_video", "empty_query", "long_query", "bad_tracks"])
def test_bad_run_input_exits_2_with_one_line_and_writes_nothing(
    case, synth_dir, annotation, model_dir, tmp_path, capsys
):
    video, query = str(_video(synth_dir, annotation)), "the red square grows"
    extra = []
    if case == "missing_video":
        video = str(tmp_path / "nope.mp4")
    elif case == "text_video":
        Path(tmp_path / "t.mp4").write_text("not a video")
        video = str(tmp_path / "t.mp4")
    elif case == "empty_query":
        query = "   "
    elif case == "long_query":
        query = "the red square grows " * 20000
    elif case == "bad_tracks":
        (tmp_path / "tracks.json").write_text(
            json.dumps({"fps": 10, "width": 8, "height": 8, "num_frames": 3, "tracks": {}})
        )
        extra = ["--tracks", str(tmp_path / "tracks.json")]
    out = tmp_path / "result.json"
    rc = main(
        [
            "run",
            video,
            query,
            "-o",
            str(out),
            "--vis",
            str(tmp_path / "v.mp4"),
            "--model",
            str(model_dir),
            "--device",
            "cpu",
            "--max-new-tokens",
            "4",
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists() and not (tmp_path / "v.mp4").exists()


def test_missing_model_is_one_line_pointing_at_how_to_get_weights(synth_dir, annotation, tmp_path, capsys):
    rc = main(
        [
            "run",
            str(_video(synth_dir, annotation)),
            "the red square grows",
            "-o",
            str(tmp_path / "r.json"),
            "--model",
            str(tmp_path / "no_such_model_dir"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not found" in err[0] and "no_such_model_dir" in err[0]


def test_multi_object_mode_asks_for_several_ids_and_unions_their_boxes(synth_dir, annotation, grounder):
    key, ann = annotation
    gt_tracks = TrackSet.from_dict(ann["gt_tracks"])
    a, b = gt_tracks.ids[:2]
    prompts = []

    class Recorder(ScriptedGrounder):
        def ground(self, clip, prompt_text, encoded=None):
            prompts.append(prompt_text)
            return super().ground(clip, prompt_text, encoded)

    scripted = Recorder(grounder, f"<think>x</think><answer>Target ID: {a}, {b}, Time range: 0.00 to 5.90</answer>")
    result = GroundingPipeline(ReplayTracker(gt_tracks), scripted, PipelineConfig(multi_object=True)).run(
        _video(synth_dir, annotation), ["the two red things move"]
    )
    assert "object IDs are corresponding" in prompts[0] and "Target ID: [ID, ID, ...]" in prompts[0]
    q = result.queries[0]
    assert q.answer.ids == (a, b)
    both = sorted(set(gt_tracks.tracks[a].frames) & set(gt_tracks.tracks[b].frames))
    f = both[len(both) // 2]
    ba, bb = gt_tracks.tracks[a].box_at(f), gt_tracks.tracks[b].box_at(f)
    assert q.tube.boxes[f] == [min(ba[0], bb[0]), min(ba[1], bb[1]), max(ba[2], bb[2]), max(ba[3], bb[3])]


def test_time_only_and_multi_together_is_a_user_error(synth_dir, annotation, model_dir, tmp_path, capsys):
    rc = main(
        [
            "run",
            str(_video(synth_dir, annotation)),
            "x moves",
            "--time-only",
            "--multi",
            "-o",
            str(tmp_path / "r.json"),
            "--model",
            str(model_dir),
        ]
    )
    assert rc == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_only_frames_that_are_tracked_or_sampled_become_arrays_and_stages_are_timed(synth_dir, annotation, grounder):
    """With every 3rd frame tracked, the other frames are decoded but never converted (nor handed to anyone); the
    result times every stage and gives the real-time factor."""
    from stvgr1_edge.sampling import plan_sampling

    video = _video(synth_dir, annotation)
    info = probe_video(video)
    seen: list[int] = []
    pipeline = GroundingPipeline(make_tracker("classical", every=3), grounder)
    result = pipeline.run(video, [annotation[1]["English"]], on_frame=lambda f: seen.append(f.index))
    sampled = set(plan_sampling(info.num_frames, info.fps, info.height, info.width).indices)
    expected = sorted(sampled | set(range(0, info.num_frames, 3)))
    assert seen == expected and len(seen) < info.num_frames
    t = result.timings_ms
    assert {"decode", "track", "markers", "resize", "render", "vision", "prefill", "decode_tokens", "total"} <= set(t)
    assert t["render"] >= t["markers"] + t["resize"] - 1.0
    rtf = t["total"] / 1e3 / info.duration_s  # written with 4 decimals: within half a unit of the last one
    assert result.to_dict()["real_time_factor"] == pytest.approx(rtf, rel=1e-3, abs=5e-5)
    assert "real-time factor" in result.timing_line()
