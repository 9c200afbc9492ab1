"""One run configuration: every option that would be ignored is refused in one line (exit 2) before anything
loads, and a result's ``config`` records what ran."""

from __future__ import annotations

import json

import pytest

from stvgr1_edge.cli import main
from stvgr1_edge.errors import BadInputError
from stvgr1_edge.pipeline import PipelineConfig
from stvgr1_edge.run_config import RunConfig, build_pipeline, check_run_config, run_config_from_dict

CONFLICTS = [
    (["--bundle", "B", "--model", "nano"], "--model"),
    (["--bundle", "B", "--quant", "nf4"], "--quant"),
    (["--tracks", "T.json", "--tracker", "sam2"], "--tracker"),
    (["--tracks", "T.json", "--track-every", "3"], "--track-every"),
    (["--tracks", "T.json", "--keyframe-interval", "5"], "--keyframe-interval"),
    (["--tracks", "T.json", "--detector", "classical"], "--detector"),
    (["--tracks", "T.json", "--tracker-model", "M"], "--tracker-model"),
    (["--time-only", "--multi"], "--multi"),
    (["--time-only", "--tracker", "classical"], "--tracker"),
    (["--time-only", "--tracks", "T.json"], "--tracks"),
    (["--track-every", "0"], "--track-every"),
    (["--every", "2"], "--window"),  # the window step, without a window
    (["--window", "4", "--vis", "V.mp4"], "--vis"),
    (["--window", "4", "--tracks", "T.json"], "--tracks"),
    (["--quant", "int8"], "--quant"),
]


@pytest.mark.parametrize("args, named", CONFLICTS, ids=[" ".join(a) for a, _ in CONFLICTS])
def test_conflicting_run_options_exit_2_with_one_line_naming_the_option(args, named, capsys, tmp_path):
    # the video does not exist: the conflict must be reported first, before any file is read or model loaded
    rc = main(["run", str(tmp_path / "missing.mp4"), "a query", *args, "-o", str(tmp_path / "out.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and named in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out.json").exists()


def _manifest(quant: str, tracker: bool) -> dict:
    return {
        "grounder": {"llm_quant": quant, "vision": {"onnx": "vision_encoder.onnx"}},
        "tracker": {"folder": "tracker", "family": "sam2"} if tracker else None,
    }


def test_bundle_manifest_conflicts_tracker_and_dtype():
    with pytest.raises(BadInputError, match="bundle brings its own tracker.*--tracker"):
        check_run_config(RunConfig(bundle="B", tracker="classical"), _manifest("none", tracker=True))
    with pytest.raises(BadInputError, match="--tracker-model"):
        check_run_config(RunConfig(bundle="B", tracker_model="M"), _manifest("none", tracker=True))
    check_run_config(RunConfig(bundle="B", tracker="classical"), _manifest("none", tracker=False))  # no tracker in it
    check_run_config(RunConfig(bundle="B", detector="classical"), _manifest("none", tracker=True))  # feeds its tracker
    with pytest.raises(BadInputError, match="nf4.*--dtype"):
        check_run_config(RunConfig(bundle="B", dtype="fp32"), _manifest("nf4", tracker=False))
    check_run_config(RunConfig(bundle="B", dtype="bf16"), _manifest("int4", tracker=False))
    check_run_config(RunConfig(bundle="B", dtype="fp32"), _manifest("none", tracker=False))


def test_run_config_from_dict_refuses_unknown_keys_and_routes_pipeline_keys():
    config = run_config_from_dict({"model": "nano", "every": 2, "time_only": False, "id_repair": True})
    assert (config.model, config.every, config.pipeline.id_repair) == ("nano", 2, True)
    with pytest.raises(BadInputError, match="unknown run option.*'evry'"):
        run_config_from_dict({"evry": 2})


def test_configs_are_frozen():
    config = RunConfig()
    with pytest.raises(AttributeError):
        config.every = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        PipelineConfig().time_only = True  # type: ignore[misc]


def test_result_config_records_what_ran(tmp_path):
    """The Python API and the CLI build the pipeline the same way; the result says which model, device, dtype and
    tracker ran (not the defaults that were asked for)."""
    from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(tmp_path, num=1, seed=5001, config=SynthConfig(width=224, height=168, seconds=3.0))
    entry = next(iter(json.loads((tmp_path / "annotations.json").read_text()).values()))
    video = str(tmp_path / entry["video_path"])
    config = RunConfig(model="nano", device="cpu", every=2, max_new_tokens=16)
    api = build_pipeline(config).run(video, [entry["English"]]).to_dict()
    assert (
        main(
            [
                "run",
                video,
                entry["English"],
                "--model",
                "nano",
                "--device",
                "cpu",
                "--track-every",
                "2",
                "--max-new-tokens",
                "16",
                "-o",
                str(tmp_path / "cli.json"),
            ]
        )
        == 0
    )
    cli = json.loads((tmp_path / "cli.json").read_text())
    assert api["config"] == cli["config"]
    assert api["queries"][0]["answer_text"] == cli["queries"][0]["answer_text"]
    grounder, tracker = cli["config"]["grounder"], cli["config"]["tracker"]
    assert (grounder["model"], grounder["quant"], grounder["device"], grounder["dtype"]) == (
        "nano",
        "none",
        "cpu",
        "float32",
    )
    assert grounder["vision_encoder"] == "pytorch" and grounder["bundle"] is None
    assert tracker == {"name": "classical", "every": 2}
    assert cli["config"]["pipeline"]["time_only"] is False


def test_default_engine_is_the_static_one_on_cuda_and_generate_elsewhere():
    """What ``--engine`` defaults to follows the benchmarks (engine_decode.json per device): nf4 stays on generate,
    which is the only decoder that runs it."""
    from stvgr1_edge.run_config import default_engine

    assert default_engine("cuda", "none") == default_engine("cuda:1", "int4") == "static"
    assert default_engine("cpu", "none") == default_engine("cpu", "int4") == default_engine("cuda", "nf4") == "hf"
