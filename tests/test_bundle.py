"""`stvg-edge export` + `stvg-edge run --bundle` end to end on CPU with a tiny random Qwen2.5-VL.

- fp32 ONNX vision + unquantized LLM: the bundle gives the *same* generated text (greedy) as the unexported model;
- int4 LLM: runs; its agreement with the unexported answer is recorded (random weights: it may differ);
- the manifest carries versions, shapes, dtypes and parity numbers; a bad bundle folder exits 2 with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from stvgr1_edge.cli import main  # noqa: E402
from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset  # noqa: E402
from stvgr1_edge.tiny import save_tiny_model  # noqa: E402

MAX_NEW = "12"


@pytest.fixture(scope="module")
def video_and_query(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, num=1, seed=3, config=SynthConfig(seconds=3.0, width=160, height=120))
    ann = json.loads((out / "annotations.json").read_text())
    entry = next(iter(ann.values()))
    return out / entry["video_path"], entry["English"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_qwen"), seed=0)


@pytest.fixture(scope="module")
def bundles(model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for llm in ("none", "int4"):
        folder = root / f"bundle_{llm}"
        rc = main(["export", "--model", str(model_dir), "--out", str(folder), "--llm", llm])
        assert rc == 0
        out[llm] = folder
    return out


def _run(args: list[str], out: Path) -> dict:
    assert main(["run", *args, "-o", str(out), "--device", "cpu", "--max-new-tokens", MAX_NEW]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def test_bundle_with_fp32_vision_gives_the_same_answer_as_the_unexported_model(
    bundles, model_dir, video_and_query, tmp_path
):
    video, query = video_and_query
    reference = _run([str(video), query, "--model", str(model_dir)], tmp_path / "ref.json")
    exported = _run([str(video), query, "--bundle", str(bundles["none"])], tmp_path / "bundle.json")
    ref_q, got_q = reference["queries"][0], exported["queries"][0]
    assert ref_q["num_generated_tokens"] == got_q["num_generated_tokens"] > 0
    assert got_q["answer_text"] == ref_q["answer_text"]
    assert exported["num_tracks"] == reference["num_tracks"]


def test_bundle_with_int4_llm_runs_int4_weights_and_records_them(bundles, model_dir, video_and_query, tmp_path):
    """`run --bundle` on an int4 bundle really runs int4 linears (not the full-precision weights), whose logits stay
    close to full precision's, and the result's config says int4 with the ONNX vision encoder."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.backends import load_language_model
    from stvgr1_edge.backends.int4 import WeightOnlyInt4Linear

    video, query = video_and_query
    exported = _run([str(video), query, "--bundle", str(bundles["int4"])], tmp_path / "int4.json")
    assert exported["queries"][0]["num_generated_tokens"] > 0
    grounder = exported["config"]["grounder"]
    assert (grounder["quant"], grounder["vision_encoder"], grounder["bundle"]) == ("int4", "onnx", str(bundles["int4"]))

    int4 = load_language_model(bundles["int4"] / "llm", "int4", "cpu")
    full = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    language = [n for n, m in int4.named_modules() if isinstance(m, WeightOnlyInt4Linear)]
    assert language and all(n.startswith("model.language_model.") for n in language)
    assert not any(isinstance(m, WeightOnlyInt4Linear) for m in int4.model.visual.modules())
    ids = torch.randint(0, 800, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = full(input_ids=ids).logits, int4(input_ids=ids).logits
    cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    assert 0.95 < cosine < 1.0 - 1e-6  # quantized (not the same weights), yet close


def test_manifest_records_versions_shapes_dtypes_and_parity(bundles):
    import onnxruntime
    import torch
    import transformers

    for llm, folder in bundles.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["format"] == "stvg-edge-bundle/1"
        assert manifest["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
        assert manifest["versions"]["transformers"] == transformers.__version__
        assert manifest["versions"]["onnxruntime"] == onnxruntime.__version__
        grounder = manifest["grounder"]
        assert grounder["llm_quant"] == llm
        assert grounder["vision"]["onnx"] == "vision_encoder.onnx" and (folder / "vision_encoder.onnx").is_file()
        assert grounder["vision"]["dtype"] == "fp32" and grounder["vision"]["engine"] is None
        assert grounder["vision"]["patch_dim"] == 3 * 2 * 14 * 14
        assert grounder["hidden_size"] == 64 and grounder["num_hidden_layers"] == 2
        assert (folder / "llm" / "config.json").is_file()
        assert (folder / "llm" / "tokenizer_config.json").is_file() or (folder / "llm" / "tokenizer.json").is_file()
        vision = manifest["parity"]["vision"]
        assert vision["max_abs_err"] < 1e-4 and vision["cosine"] > 0.99999
        assert manifest["tracker"] is None
        assert not list(folder.parent.glob(f".{folder.name}.*"))  # temp build folder renamed away
    int4 = json.loads((bundles["int4"] / "manifest.json").read_text())
    assert 0.9 < int4["parity"]["int4_logits_cosine"] <= 1.0 + 1e-9
    assert int4["grounder"]["int4"]["quantized_linears"] > 0
    assert "int4_logits_cosine" not in json.loads((bundles["none"] / "manifest.json").read_text())["parity"]


def test_bundle_with_onnx_tracker_runs_and_records_tracker_parity(model_dir, video_and_query, tmp_path):
    from stvgr1_edge.tracking.tiny_configs import save_tiny_video_model

    tracker_dir = save_tiny_video_model(tmp_path / "sam2", "sam2", object_score_bias=20.0)
    folder = tmp_path / "bundle"
    assert (
        main(
            [
                "export",
                "--model",
                str(model_dir),
                "--out",
                str(folder),
                "--tracker",
                "onnx",
                "--tracker-model",
                str(tracker_dir),
            ]
        )
        == 0
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tracker"]["family"] == "sam2" and manifest["tracker"]["memory_slots"] == 4
    assert manifest["tracker"]["pointer_tokens"] == 10 and manifest["tracker"]["tokens_per_slot"] == 64
    tracker_parity = manifest["parity"]["tracker"]
    assert tracker_parity["same_ids"] is True and tracker_parity["min_mask_iou"] >= 0.99
    assert max(tracker_parity["graph_max_abs_err"].values()) < 1e-3
    from safetensors import safe_open

    weights = sorted((folder / "tracker").glob("*.safetensors"))
    assert [w.name for w in weights] == ["model.safetensors"]
    with safe_open(str(weights[0]), "pt") as f:
        kept = list(f.keys())
    assert len(kept) == manifest["tracker"]["pytorch_tensors"] > 0
    assert any(k.startswith("prompt_encoder.") for k in kept)  # stays PyTorch (box prompts)
    assert not [
        k for k in kept if k.split(".")[0] in ("vision_encoder", "mask_decoder", "memory_encoder", "memory_attention")
    ]  # carried by the graphs
    video, query = video_and_query
    result = _run([str(video), query, "--bundle", str(folder)], tmp_path / "r.json")
    assert result["num_tracks"] >= 1


def test_bundle_grounder_encodes_video_with_the_onnx_encoder(bundles, model_dir):
    import numpy as np
    import torch

    from stvgr1_edge.bundle import load_bundle
    from stvgr1_edge.clip import PromptedClip
    from stvgr1_edge.grounding import Grounder, GrounderConfig

    bundle = load_bundle(bundles["none"], device="cpu")
    assert bundle.providers[-1] == "CPUExecutionProvider" and not bundle.has_tracker
    grounder = bundle.grounder(max_new_tokens=4)
    assert grounder.vision_encoder is not None
    tower = grounder.model.model.visual
    assert sum(p.numel() for p in tower.parameters()) == 0  # released: the ONNX graph holds the only copy
    assert grounder.model.device.type == "cpu" and grounder.device.type == "cpu"
    with pytest.raises(RuntimeError, match="released"):
        tower(torch.zeros(4, 1176), grid_thw=torch.tensor([[1, 2, 2]]))
    reference = Grounder.from_pretrained(GrounderConfig(model=str(model_dir), device="cpu", max_new_tokens=4))
    frames = np.random.default_rng(0).integers(0, 255, (4, 56, 84, 3), dtype=np.uint8)
    clip = PromptedClip(
        frames=frames,
        frame_indices=(0, 1, 2, 3),
        sample_fps=2.0,
        resized_height=56,
        resized_width=84,
        video_fps=4.0,
        num_video_frames=4,
    )
    got = torch.cat(grounder.encode_video(clip).features.pooler_output)
    want = torch.cat(reference.encode_video(clip).features.pooler_output)
    assert got.shape == want.shape and float((got - want).abs().max()) < 1e-4


def test_trt_bundle_without_tensorrt_exits_2_with_one_line(bundles, video_and_query, tmp_path, capsys, monkeypatch):
    import shutil
    import sys

    folder = tmp_path / "trt_bundle"
    shutil.copytree(bundles["none"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["grounder"]["vision"]["engine"] = "vision_encoder.engine"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "vision_encoder.engine").write_bytes(b"not an engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    video, query = video_and_query
    capsys.readouterr()
    rc = main(["run", str(video), query, "--bundle", str(folder), "-o", str(tmp_path / "x.json"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "tensorrt" in err and "NVIDIA" in err
    assert not (tmp_path / "x.json").exists()


def test_runtime_module_imports_without_the_export_package():
    import subprocess
    import sys

    code = "import sys; sys.modules['export'] = None; import stvgr1_edge.bundle, stvgr1_edge.cli; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("case", ["missing", "no_manifest", "bad_manifest", "incomplete"])
def test_bad_bundle_dir_exits_2_with_one_line(case, bundles, video_and_query, tmp_path, capsys):
    import shutil

    video, query = video_and_query
    folder = tmp_path / "b"
    if case != "missing":
        folder.mkdir()
    if case == "bad_manifest":
        (folder / "manifest.json").write_text('{"format": "something else"}')
    if case == "incomplete":
        shutil.copy(bundles["none"] / "manifest.json", folder / "manifest.json")
    capsys.readouterr()
    rc = main(["run", str(video), query, "--bundle", str(folder), "-o", str(tmp_path / "x.json"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "bundle" in err
    assert not (tmp_path / "x.json").exists()


def test_export_refuses_a_non_bundle_out_folder_and_trt_without_tensorrt(model_dir, tmp_path, capsys):
    import importlib.util

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    capsys.readouterr()
    assert main(["export", "--model", str(model_dir), "--out", str(busy)]) == 2
    assert "not a bundle" in capsys.readouterr().err
    assert (busy / "keep.txt").exists()
    if importlib.util.find_spec("tensorrt") is None:
        assert main(["export", "--model", str(model_dir), "--out", str(tmp_path / "t"), "--vision", "trt"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "tensorrt" in err
        assert not (tmp_path / "t").exists()


def test_cpu_bundle_int8_vision_int4_llm_runs_in_bf16_and_records_both(model_dir, video_and_query, tmp_path, capsys):
    """The CPU bundle: an int8 vision graph (recorded with its parity: close, not equal) and an int4 language model,
    run with ``--dtype bf16`` (what surrounds the int4 layers on bf16 units); an int8 graph is not one TensorRT
    builds, so ``--vision trt`` with it is refused in one line."""
    folder = tmp_path / "cpu_bundle"
    export = ["export", "--model", str(model_dir), "--llm", "int4", "--vision-dtype", "int8"]
    assert main([*export, "--out", str(folder)]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["grounder"]["vision"]["dtype"] == "int8"
    assert 0.99 < manifest["parity"]["vision"]["cosine"] < 1.0 - 1e-7
    video, query = video_and_query
    result = _run([str(video), query, "--bundle", str(folder), "--dtype", "bf16"], tmp_path / "bf16.json")
    grounder = result["config"]["grounder"]
    assert (grounder["quant"], grounder["dtype"], grounder["vision_encoder"]) == ("int4", "bfloat16", "onnx")
    assert result["queries"][0]["num_generated_tokens"] > 0
    capsys.readouterr()
    assert main([*export, "--out", str(tmp_path / "trt"), "--vision", "trt"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--vision-dtype int8" in err and "fp16" in err
    assert not (tmp_path / "trt").exists()


def test_export_with_gptq_calibration_records_it_and_picks_other_int4_weights(
    bundles, model_dir, video_and_query, tmp_path, capsys
):
    import torch
    from safetensors.torch import load_file

    from stvgr1_edge_train.prepare import prepare_cache

    video, _ = video_and_query
    cache = tmp_path / "cache"
    assert prepare_cache(video.parent.parent / "annotations.json", cache)["counts"] == {"cached": 1}
    folder = tmp_path / "gptq"
    assert (
        main(
            [
                "export",
                "--model",
                str(model_dir),
                "--out",
                str(folder),
                "--llm",
                "int4",
                "--int4-calibration",
                str(cache),
                "--int4-calibration-num",
                "1",
            ]
        )
        == 0
    )
    int4 = json.loads((folder / "manifest.json").read_text())["grounder"]["int4"]
    assert int4["method"] == "GPTQ" and int4["calibration_clips"] == 1 and int4["calibration"] == str(cache)
    rounded = json.loads((bundles["int4"] / "manifest.json").read_text())["grounder"]["int4"]
    assert rounded["method"] == "searched rounding" and rounded["calibration_clips"] is None
    gptq_weights, rounded_weights = (load_file(f / "llm" / "model.safetensors") for f in (folder, bundles["int4"]))
    packed = [k for k in gptq_weights if k.endswith(".codes_uint4x2")]  # group 128: the tiny LM's down projections
    assert packed and not all(torch.equal(gptq_weights[k], rounded_weights[k]) for k in packed)
    # the calibration only applies to an int4 LLM, and must be a training cache: one line, exit 2, nothing written
    capsys.readouterr()
    for extra in (
        ["--llm", "none", "--int4-calibration", str(cache)],
        ["--llm", "int4", "--int4-calibration", str(video)],
    ):
        assert main(["export", "--model", str(model_dir), "--out", str(tmp_path / "bad"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--int4-calibration" in err
        assert not (tmp_path / "bad").exists()


def _damaged(bundle: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    copy = tmp_path / f"bundle_{how}"
    shutil.copytree(bundle, copy)
    if how == "llm_byte":  # one byte of the language model's weights changed
        path = copy / "llm" / "model.safetensors"
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "onnx_byte":
        path = copy / "vision_encoder.onnx"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "llm_missing":
        (copy / "llm" / "model.safetensors").unlink()
    elif how == "manifest_shape":
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["grounder"] = ["not", "a", "table"]
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    "how, says",
    [
        ("llm_byte", "not the one exported"),
        ("onnx_byte", "not the one exported"),
        ("llm_missing", "missing"),
        ("manifest_shape", "does not describe a bundle"),
    ],
)
def test_a_damaged_bundle_is_refused_in_one_line_before_loading(bundles, video_and_query, tmp_path, capsys, how, says):
    video, query = video_and_query
    damaged = _damaged(bundles["int4"], tmp_path, how)
    rc = main(["run", str(video), query, "--bundle", str(damaged), "-o", str(tmp_path / "r.json"), "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and says in lines[0], lines
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("how", ["pickle_only", "garbage", "cut_short", "bad_header"])
def test_model_folders_without_sound_safetensors_are_refused_in_one_line(
    model_dir, video_and_query, tmp_path, capsys, how
):
    """Pickle weights are never loaded; a damaged safetensors file is named before transformers reads it."""
    import shutil

    folder = tmp_path / how
    shutil.copytree(model_dir, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    if how == "pickle_only":
        weights.unlink()
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    elif how == "garbage":
        weights.write_bytes(b"x" * 1000)
    elif how == "cut_short":
        weights.write_bytes(data[: len(data) // 2])
    else:
        weights.write_bytes((10**12).to_bytes(8, "little") + data[8:])
    video, query = video_and_query
    rc = main(["run", str(video), query, "--model", str(folder), "-o", str(tmp_path / "r.json"), "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, lines
    assert ("pickle" in lines[0]) if how == "pickle_only" else ("not a valid safetensors file" in lines[0])
    assert not (tmp_path / "r.json").exists()


def test_predict_over_a_dataset_with_an_int4_bundle_records_it_and_scores(bundles, tmp_path, capsys):
    """`predict --bundle` runs the bundle's int4 LLM and ONNX vision encoder over a set; `eval` reads the lines."""
    data = tmp_path / "data"
    write_synthetic_dataset(data, num=2, seed=11, config=SynthConfig(seconds=3.0, width=160, height=120))
    out = tmp_path / "pred.jsonl"
    argv = ["predict", str(data / "annotations.json"), "-o", str(out), "--bundle", str(bundles["int4"])]
    assert main([*argv, "--device", "cpu", "--max-new-tokens", MAX_NEW]) == 0
    assert "2 queries predicted" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2 and all(line["num_generated_tokens"] > 0 for line in lines)
    config = json.loads((tmp_path / "pred.jsonl.config.json").read_text())["grounder"]
    assert (config["quant"], config["vision_encoder"]) == ("int4", "onnx")
    assert main(["eval", str(out), str(data / "annotations.json"), "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"]["tubedetr"]["counts"]["predicted"] == 2
