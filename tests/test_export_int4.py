"""Weight-only int4 linears (packing, kernels, model swap, folder round trip) and the NF4 skip-module logic."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import stvgr1_edge_export.int4
from stvgr1_edge.backends import int4
from stvgr1_edge.backends.int4 import (
    WeightOnlyInt4Linear,
    dequantize_int4,
    integer_zero_points,
    load_int4,
    pack_uint4x2,
    unpack_uint4x2,
)
from stvgr1_edge.backends.nf4 import require_nf4_runtime
from stvgr1_edge.errors import BadInputError, MissingDependencyError
from stvgr1_edge_export.int4 import (
    RANGE_SHRINKS,
    cache_calibration_inputs,
    collect_input_hessians,
    int4_linear_from,
    quantize_int4_,
    quantize_weight_int4,
    quantize_weight_int4_gptq,
    save_int4,
)
from stvgr1_edge_export.nf4 import nf4_skip_modules


@pytest.fixture(scope="module")
def tiny():
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(seed=0)


@pytest.fixture(scope="module")
def prompt_ids():
    return torch.randint(0, 800, (1, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def quantized(tiny, prompt_ids):
    """(fp32 logits, quantized model, quantized names): the tiny model quantized with group size 32."""
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    model, _ = build_tiny_qwen2_5_vl(seed=0)
    with torch.no_grad():
        reference = model(input_ids=prompt_ids).logits
    names = quantize_int4_(model, group_size=32)
    return reference, model, names


# ----------------------------------------------------------------------------------------------- packing
def test_quantize_weight_exact_on_integer_ramp():
    weight = (torch.arange(64, dtype=torch.float32) % 16).reshape(1, 64).repeat(8, 1)  # each group spans 0..15
    codes, scales, zeros = quantize_weight_int4(weight, group_size=32)
    assert torch.equal(codes, weight.to(torch.uint8))
    assert torch.equal(scales, torch.ones(8, 2)) and torch.equal(zeros, torch.full((8, 2), 8.0))
    assert torch.equal(dequantize_int4(codes, scales, zeros, 32), weight)


def test_range_search_never_reconstructs_a_group_worse_than_min_max_and_lowers_the_error():
    torch.manual_seed(0)
    weight = torch.randn(64, 256)
    errors = {}
    for name, shrinks in (("min_max", (1.0,)), ("searched", RANGE_SHRINKS)):
        codes, scales, zeros = quantize_weight_int4(weight, 32, shrinks)
        assert codes.dtype == torch.uint8 and int(codes.max()) <= 15
        errors[name] = ((dequantize_int4(codes, scales, zeros, 32) - weight) ** 2).reshape(64, 8, 32).sum(-1)
    # plain min/max: 16 levels over each group's range, the grid moved by less than half a step so that it holds 0
    codes, scales, zeros = quantize_weight_int4(weight, 32, (1.0,))
    groups = weight.reshape(64, 8, 32)
    assert torch.allclose(scales, (groups.amax(-1) - groups.amin(-1)) / 15)
    assert ((zeros - 8 * scales - groups.amin(-1)).abs() <= scales / 2 + 1e-6).all()
    zero_points = integer_zero_points(scales, zeros)
    assert zero_points is not None and torch.allclose(zeros, (8 - zero_points.float()) * scales, atol=1e-6)
    assert (errors["searched"] <= errors["min_max"] * (1 + 1e-5)).all()
    assert errors["searched"].sum() < 0.97 * errors["min_max"].sum()  # Gaussian weights: about 5% less


def test_groups_of_one_sign_keep_half_a_step_of_error_on_the_integer_grid():
    weight = torch.cat([torch.linspace(1.0, 1.5, 32), -torch.linspace(2.0, 3.0, 32)]).reshape(1, 64)
    codes, scales, zeros = quantize_weight_int4(weight, 32, (1.0,))
    assert torch.allclose(scales, torch.tensor([[1.5 / 15, 3.0 / 15]]))  # the grid spans [0, max] and [min, 0]
    assert integer_zero_points(scales, zeros).tolist() == [[0, 15]]
    error = (dequantize_int4(codes, scales, zeros, 32) - weight).abs().reshape(2, 32).amax(-1)
    assert (error <= scales[0] / 2 + 1e-6).all()


def test_gptq_moves_the_layer_outputs_less_than_rounding_on_unseen_inputs():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 256, generator=gen)
    mixing = torch.randn(256, 256, generator=gen) * torch.logspace(0, -2, 256)[:, None]
    calibration, unseen = (torch.randn(n, 256, generator=gen) @ mixing for n in (2048, 1024))
    hessian = calibration.T @ calibration / len(calibration)
    rounded = dequantize_int4(*quantize_weight_int4(weight, 32), 32)
    codes, scales, zeros = quantize_weight_int4_gptq(weight, hessian, 32)
    assert codes.dtype == torch.uint8 and codes.shape == weight.shape and int(codes.max()) <= 15
    assert integer_zero_points(scales, zeros) is not None  # the same grid as plain rounding
    gptq = dequantize_int4(codes, scales, zeros, 32)

    def output_error(w):
        return ((unseen @ (w - weight).T) ** 2).mean().item()

    assert output_error(gptq) < 0.7 * output_error(rounded)
    # it trades weight error for output error: the weights themselves are further from the original
    assert ((gptq - weight) ** 2).sum() > ((rounded - weight) ** 2).sum()


def test_gptq_with_uncorrelated_inputs_is_plain_searched_rounding():
    # a diagonal Hessian propagates no error to other columns, so GPTQ must pick the rounding's codes exactly
    weight = torch.randn(32, 128, generator=torch.Generator().manual_seed(1))
    hessian = torch.diag(torch.rand(128, generator=torch.Generator().manual_seed(2)) + 0.5)
    for expected, got in zip(quantize_weight_int4(weight, 64), quantize_weight_int4_gptq(weight, hessian, 64)):
        assert torch.allclose(expected.float(), got.float(), atol=1e-6)


def test_uint4x2_packing_round_trips_with_even_index_in_high_nibble():
    codes = torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)
    packed = pack_uint4x2(codes)
    assert packed.tolist() == [[0x12, 0xF0]]
    assert torch.equal(unpack_uint4x2(packed), codes)


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_linear_matches_dequantized_matmul(group_size):
    torch.manual_seed(group_size)
    linear = nn.Linear(256, 96, bias=True)
    layer = int4_linear_from(linear, group_size)
    codes, scales, zeros = quantize_weight_int4(linear.weight, group_size)
    dense = dequantize_int4(codes, scales, zeros, group_size)
    x = torch.randn(2, 5, 256)
    expected = nn.functional.linear(x, dense, linear.bias)
    with torch.no_grad():
        got = layer(x)
    assert got.shape == (2, 5, 96)
    tolerance = 1e-4 if layer.kernel == "dequant" else 1e-2  # the int4 kernels take bf16 activations
    assert (got - expected).abs().max().item() < tolerance * expected.abs().max().item()
    assert torch.equal(layer.codes(), codes)  # the packed layout unpacks exactly


def _head_sized_codes(out_features: int, group_size: int = 64, seed: int = 0, in_features: int = 256):
    weight = torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(seed)) * 0.02
    return quantize_weight_int4(weight, group_size)


def test_a_cpu_layer_runs_on_onnxruntime_with_the_same_weights(monkeypatch):
    import copy

    from stvgr1_edge.backends import int4_mlas

    if not int4_mlas.mlas_available() or int4.kernel_for(torch.device("cpu")) != "cpu":
        pytest.skip("needs onnx, onnxruntime and torch's CPU int4 kernel")
    out_features, width = 2048, int4.MLAS_FROM_IN_FEATURES
    codes, scales, zeros = _head_sized_codes(out_features, in_features=width)
    layer = WeightOnlyInt4Linear(width, out_features, codes, scales, zeros, None, 64, torch.float32)
    assert layer.kernel == "mlas" and int4.kernel_counts(nn.Sequential(layer)) == {"mlas": 1}
    narrow = WeightOnlyInt4Linear(
        width // 2, out_features, codes[:, : width // 2], scales[:, :8], zeros[:, :8], None, 64, torch.float32
    )
    assert narrow.kernel == "cpu"  # fewer inputs: torch's kernel costs less per call
    x = torch.randn(3, width, generator=torch.Generator().manual_seed(1))
    expected = x @ dequantize_int4(codes, scales, zeros, 64).T
    with torch.no_grad():
        got = layer(x)
        compiled = torch.compile(layer)(x)
    assert got.dtype == torch.float32 and got.shape == (3, out_features)
    # int8 activations: ~0.5% of the largest output at most, and nearly the same direction
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.999
    assert torch.equal(compiled, got)  # the compiled step calls the same kernel
    assert torch.equal(layer.codes(), codes)
    with torch.no_grad():  # a prefill's rows go through the dense path, decode rows through onnxruntime
        prefill = layer(torch.cat([x, torch.randn(200, width)]))[:3]
    assert torch.nn.functional.cosine_similarity(prefill, expected).min() > 0.999
    assert copy.deepcopy(layer)._mlas is layer._mlas
    monkeypatch.setattr(int4_mlas, "mlas_available", lambda: False)  # without onnxruntime: torch's kernel
    fallback = WeightOnlyInt4Linear(width, out_features, codes, scales, zeros, None, 64, torch.float32)
    assert fallback.kernel == "cpu"
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(fallback(x), expected).min() > 0.999


def test_decoding_threads_drop_torch_to_one_thread_only_for_onnxruntime_layers():
    from stvgr1_edge.backends.int4_mlas import DecodingThreads, mlas_available

    if not mlas_available() or int4.kernel_for(torch.device("cpu")) != "cpu":
        pytest.skip("needs onnx, onnxruntime and torch's CPU int4 kernel")
    width = int4.MLAS_FROM_IN_FEATURES
    codes, scales, zeros = _head_sized_codes(512, in_features=width)
    with_mlas = nn.Sequential(WeightOnlyInt4Linear(width, 512, codes, scales, zeros, None, 64, torch.float32))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with DecodingThreads(with_mlas):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with DecodingThreads(nn.Sequential(nn.Linear(4, 4))):
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), DecodingThreads(with_mlas):
            raise RuntimeError("restored on the way out too")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


SHARED_POOL_SCRIPT = """
import numpy as np, onnxruntime as ort, torch
from onnx import TensorProto, helper
from stvgr1_edge.backends import ort_threads
from stvgr1_edge.backends.int4 import WeightOnlyInt4Linear, dequantize_int4, quantize_weight_int4
from stvgr1_edge.run_config import RunConfig, build_pipeline

build_pipeline(RunConfig(model="nano", device="cpu"))
before = ort_threads.threads_shared()  # full precision: off
build_pipeline(RunConfig(model="nano", device="cpu", weights="int4"))  # turns the shared pool on
codes, scales, zeros = quantize_weight_int4(torch.randn(512, 1024), 64)
layer = WeightOnlyInt4Linear(1024, 512, codes, scales, zeros, None, 64, torch.float32)
x = torch.randn(1, 1024)
cosine = torch.nn.functional.cosine_similarity(layer(x), x @ dequantize_int4(codes, scales, zeros, 64).T).item()
value = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [value("x", [2])], [value("y", [2])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
session = ort.InferenceSession(model, ort_threads.session_options(), providers=["CPUExecutionProvider"])
relu = session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist()
print(before, ort_threads.threads_shared(), layer.kernel, round(cosine, 4), relu)
"""


def test_a_cpu_int4_run_shares_one_onnxruntime_pool_and_the_packages_sessions_follow():
    """onnxruntime's shared pool is process-wide (with it on, it refuses sessions asking for a pool of their own), so
    a fresh interpreter: a full-precision run leaves it off, an int4 one turns it on, and then both the int4 kernel
    and a graph built with the package's session options run."""
    from stvgr1_edge.backends.int4_mlas import mlas_available
    from stvgr1_edge.backends.ort_threads import session_options, threads_shared

    if not mlas_available() or int4.kernel_for(torch.device("cpu")) != "cpu":
        pytest.skip("needs onnx, onnxruntime and torch's CPU int4 kernel")
    assert not threads_shared()  # off unless asked for: this process's own sessions keep their pools
    assert session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    done = subprocess.run([sys.executable, "-c", SHARED_POOL_SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after, kernel, cosine, relu = done.stdout.strip().splitlines()[-1].split(" ", 4)
    assert (before, after, kernel) == ("False", "True", "mlas")
    assert float(cosine) > 0.999 and relu == "[0.0, 2.0]"


def test_zero_points_off_the_integer_grid_keep_torchs_kernel():
    if int4.kernel_for(torch.device("cpu")) != "cpu":
        pytest.skip("needs torch's CPU int4 kernel")
    width = int4.MLAS_FROM_IN_FEATURES
    codes, scales, zeros = _head_sized_codes(512, in_features=width)
    shifted = zeros + 0.3 * scales  # a float range start, as older exports wrote
    assert integer_zero_points(scales, shifted) is None
    assert integer_zero_points(scales.bfloat16(), zeros.bfloat16()) is not None  # bf16-saved ones still are on it
    layer = WeightOnlyInt4Linear(width, 512, codes, scales, shifted, None, 64, torch.float32)
    assert layer.kernel == "cpu"


def test_dequant_fallback_kernel_equals_packed_cpu_kernel(monkeypatch):
    from stvgr1_edge.backends import int4_mlas

    monkeypatch.setattr(int4_mlas, "mlas_available", lambda: False)  # torch's kernel (onnxruntime's: above)
    torch.manual_seed(0)
    linear = nn.Linear(128, 64, bias=False)
    packed = int4_linear_from(linear, 64)
    monkeypatch.setattr(int4, "kernel_for", lambda device: "dequant")
    fallback = int4_linear_from(linear, 64)
    assert fallback.kernel == "dequant"
    x = torch.randn(3, 128)
    with torch.no_grad():  # the same weights; the packed CPU kernel computes in bf16 (the fallback in fp32)
        expected = fallback(x)
        assert (packed(x) - expected).abs().max().item() < 1e-2 * expected.abs().max().item()
        assert (packed(x.bfloat16()).float() - fallback(x.bfloat16()).float()).abs().max().item() < 1e-2
    assert torch.equal(fallback.codes(), packed.codes())


def test_unsupported_group_size_is_a_one_line_error():
    with pytest.raises(BadInputError, match="group size 48"):
        quantize_int4_(nn.Sequential(nn.Linear(96, 96)), group_size=48)


# ----------------------------------------------------------------------------------------------- model level
def test_quantize_swaps_only_language_model_linears(quantized):
    _, model, names = quantized
    assert len(names) == 14  # 2 decoder layers x (q, k, v, o, gate, up, down)
    assert all(name.startswith("model.language_model.layers.") for name in names)
    assert all(isinstance(model.get_submodule(name), WeightOnlyInt4Linear) for name in names)
    assert isinstance(model.lm_head, nn.Linear)
    assert not any(isinstance(m, WeightOnlyInt4Linear) for m in model.model.visual.modules())


def test_quantized_logits_stay_close_and_greedy_generation_runs(quantized, prompt_ids):
    reference, model, _ = quantized
    with torch.no_grad():
        logits = model(input_ids=prompt_ids).logits
    cosine = torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0).item()
    assert cosine > 0.99
    generated = model.generate(input_ids=prompt_ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert generated.shape == (1, 30)


def _dense(layer: WeightOnlyInt4Linear) -> torch.Tensor:
    scales_and_zeros = layer.scales_and_zeros.float()
    return dequantize_int4(layer.codes(), scales_and_zeros[..., 0].t(), scales_and_zeros[..., 1].t(), layer.group_size)


def test_gptq_on_the_model_calibrates_each_linear_on_its_own_inputs():
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    calibration = [
        {"input_ids": torch.randint(0, 800, (1, 32), generator=torch.Generator().manual_seed(i))} for i in range(4)
    ]
    reference, _ = build_tiny_qwen2_5_vl(seed=0)
    names = [n for n, m in reference.named_modules() if isinstance(m, nn.Linear) and n.startswith("model.language")]
    hessians = collect_input_hessians(reference, names, calibration)
    assert sorted(hessians) == sorted(names)
    layer = "model.language_model.layers.0"
    # q, k and v read the same normed hidden states, o reads the attention output: the hooks sit on the right modules
    assert torch.allclose(hessians[f"{layer}.self_attn.q_proj"], hessians[f"{layer}.self_attn.v_proj"])
    assert not torch.allclose(hessians[f"{layer}.self_attn.q_proj"], hessians[f"{layer}.self_attn.o_proj"])
    assert not any(m._forward_hooks for m in reference.modules())  # the hooks are gone afterwards

    rounded, _ = build_tiny_qwen2_5_vl(seed=0)
    gptq, _ = build_tiny_qwen2_5_vl(seed=0)
    assert quantize_int4_(rounded, group_size=32) == quantize_int4_(gptq, group_size=32, calibration=calibration)
    errors = {"rounded": 0.0, "gptq": 0.0}
    for name in names:
        weight, h = reference.get_submodule(name).weight.detach(), hessians[name]
        for kind, model in (("rounded", rounded), ("gptq", gptq)):
            delta = _dense(model.get_submodule(name)) - weight
            errors[kind] += torch.trace(delta @ h @ delta.T).item()  # the mean squared output change on those inputs
    assert errors["gptq"] < 0.9 * errors["rounded"]


def test_gptq_calibrates_one_decoder_layer_at_a_time_on_the_layers_already_quantized(monkeypatch):
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    model, _ = build_tiny_qwen2_5_vl(seed=0)
    calibration = [{"input_ids": torch.randint(0, 800, (1, 16), generator=torch.Generator().manual_seed(0))}]
    calls = []

    def recording(model_, names, batches):
        calls.append((list(names), [isinstance(m, WeightOnlyInt4Linear) for m in model_.modules()].count(True)))
        return collect_input_hessians(model_, names, batches)

    monkeypatch.setattr(stvgr1_edge_export.int4, "collect_input_hessians", recording)
    names = quantize_int4_(model, group_size=32, calibration=calibration)
    layers = [{n for n in names if n.startswith(f"model.language_model.layers.{i}.")} for i in range(2)]
    assert [set(c[0]) for c in calls] == layers  # one pass per layer, holding only that layer's matrices
    assert [c[1] for c in calls] == [0, 7]  # the second layer is calibrated behind the quantized first one


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A `train prepare` cache of two synthetic clips and the tiny model saved next to it."""
    from _train_helpers import write_mixed_synthetic

    from stvgr1_edge.tiny import save_tiny_model
    from stvgr1_edge_train.prepare import prepare_cache

    root = tmp_path_factory.mktemp("calibration")
    annotations = write_mixed_synthetic(root / "data", num_small=2, num_wide=0)
    assert prepare_cache(annotations, root / "cache")["counts"] == {"cached": 2}
    return root / "cache", save_tiny_model(root / "tiny")


def test_cache_calibration_inputs_are_the_prompted_clips_followed_by_the_models_answer(prepared):
    from stvgr1_edge.grounding import Grounder, GrounderConfig, VideoInputs
    from stvgr1_edge.prepared import load_cached_samples, read_video_tensors

    cache, model_dir = prepared
    grounder = Grounder.from_pretrained(GrounderConfig(model=str(model_dir), device="cpu", dtype="fp32"))
    batches = cache_calibration_inputs(grounder.model, grounder.processor, cache, num=1, max_new_tokens=8)
    assert len(batches) == 1
    batch = batches[0]
    sample = load_cached_samples(cache)[0]
    video = read_video_tensors(cache / sample.video_file)
    prompt = grounder.model_inputs(
        VideoInputs(
            video.pixel_values_videos, video.video_grid_thw, video.second_per_grid_ts, video.num_visual_tokens(2), 0.0
        ),
        sample.prompt,
    )
    length = prompt["input_ids"].shape[1]
    assert torch.equal(batch["pixel_values_videos"], video.pixel_values_videos)
    assert torch.equal(batch["input_ids"][:, :length], prompt["input_ids"])  # the cached sample's own prompt ...
    answer = grounder.model.generate(**prompt, do_sample=False, max_new_tokens=8)[:, length:]
    assert answer.shape[1] > 0 and torch.equal(batch["input_ids"][:, length:], answer)  # ... then the greedy answer
    assert batch["mm_token_type_ids"].shape == batch["input_ids"].shape == batch["attention_mask"].shape
    assert int(batch["mm_token_type_ids"][0, length:].abs().sum()) == 0  # the answer is text
    with pytest.raises(BadInputError, match="not a training cache"):
        cache_calibration_inputs(grounder.model, grounder.processor, cache / "samples", num=1)


def test_save_load_round_trip_gives_identical_outputs(quantized, prompt_ids, tmp_path):
    _, model, names = quantized
    folder = save_int4(model, tmp_path / "int4_model")
    spec = json.loads((folder / int4.QUANT_FILE).read_text())
    assert sorted(spec["modules"]) == sorted(names)
    assert spec["modules"][names[0]]["group_size"] == 32
    loaded = load_int4(folder)
    assert all(isinstance(loaded.get_submodule(name), WeightOnlyInt4Linear) for name in names)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=prompt_ids).logits, model(input_ids=prompt_ids).logits)
    greedy = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert torch.equal(loaded.generate(input_ids=prompt_ids, **greedy), model.generate(input_ids=prompt_ids, **greedy))


def test_load_in_bf16_casts_what_surrounds_the_int4_layers_and_keeps_their_kernels(quantized, prompt_ids, tmp_path):
    """``load_int4(dtype=bf16)``: embeddings, norms and attention weights in bf16, the int4 layers' buffers as packed,
    the rotary tables fp32; the logits stay close to the fp32 load's (same codes, bf16 around them)."""
    _, model, names = quantized
    folder = save_int4(model, tmp_path / "int4_bf16")
    as_saved, bf16 = load_int4(folder), load_int4(folder, dtype=torch.bfloat16)
    floating = [p for p in bf16.parameters() if p.is_floating_point()]
    assert floating and all(p.dtype == torch.bfloat16 for p in floating)
    assert all(p.dtype == torch.float32 for p in as_saved.parameters() if p.is_floating_point())
    for name in names:
        a, b = as_saved.get_submodule(name), bf16.get_submodule(name)
        assert torch.equal(a.weight, b.weight) and a.scales_and_zeros.dtype == b.scales_and_zeros.dtype
    assert bf16.model.language_model.rotary_emb.inv_freq.dtype == torch.float32
    with torch.no_grad():
        a, b = as_saved(input_ids=prompt_ids).logits, bf16(input_ids=prompt_ids).logits
    assert (a.dtype, b.dtype) == (torch.float32, torch.bfloat16)
    b = b.float()
    assert not torch.equal(a, b)
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


def test_load_refuses_a_folder_without_int4_file(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        load_int4(tmp_path)


@pytest.mark.gpu
def test_cuda_tinygemm_matches_dequantized_matmul_in_bf16():
    torch.manual_seed(0)
    linear = nn.Linear(512, 256, bias=True).cuda().to(torch.bfloat16)
    layer = int4_linear_from(linear, 128)
    assert layer.kernel == "cuda"
    codes, scales, zeros = quantize_weight_int4(linear.weight, 128)
    dense = dequantize_int4(codes, scales, zeros, 128)
    x = torch.randn(4, 512, device="cuda", dtype=torch.bfloat16)
    expected = nn.functional.linear(x.float(), dense, linear.bias.float())
    got = layer(x).float()
    assert (got - expected).abs().max().item() < 2e-2 * expected.abs().max().item()
    assert torch.equal(layer.codes(), codes)


# ----------------------------------------------------------------------------------------------- NF4
def test_nf4_skip_modules_name_the_real_vision_tower_and_head(tiny):
    from transformers.quantizers.quantizers_utils import should_convert_module

    model, _ = tiny
    skip = nf4_skip_modules(model)
    assert skip == ["model.visual", "lm_head"]
    assert nf4_skip_modules(model.config) == skip  # same list from the config alone (meta model)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    kept = [name for name in linears if not should_convert_module(name, skip)]
    assert kept == [name for name in linears if name.startswith("model.visual.") or name == "lm_head"]
    assert any(name.startswith("model.language_model.") and should_convert_module(name, skip) for name in linears)
    # the bare tower name would quantize the vision tower: transformers matches from the start of the name
    assert should_convert_module("model.visual.blocks.0.attn.qkv", ["visual"])


def test_nf4_without_bitsandbytes_or_cuda_is_a_missing_dependency():
    try:
        import bitsandbytes  # noqa: F401

        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if available:
        pytest.skip("bitsandbytes and CUDA present")
    with pytest.raises(MissingDependencyError):
        require_nf4_runtime()


@pytest.mark.gpu
def test_nf4_folder_round_trip_keeps_vision_tower_unquantized(tiny, tmp_path, prompt_ids):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    from stvgr1_edge.backends.nf4 import load_nf4
    from stvgr1_edge.tiny import save_tiny_model
    from stvgr1_edge_export.nf4 import quantize_nf4_to_folder

    model, processor = tiny
    source = save_tiny_model(tmp_path / "fp", model=model, processor=processor)
    folder = quantize_nf4_to_folder(source, tmp_path / "nf4")
    loaded = load_nf4(folder)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.visual.modules())
    assert isinstance(loaded.model.language_model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    generated = loaded.generate(input_ids=prompt_ids.cuda(), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 28)


def test_tied_head_is_stored_once_and_retied_on_load(tmp_path, prompt_ids):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.tiny import build_tokenizer, tiny_qwen2_5_vl_config

    config = tiny_qwen2_5_vl_config(build_tokenizer())
    config.tie_word_embeddings = True  # as in Qwen2.5-VL-3B
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    quantize_int4_(model, group_size=32)
    folder = save_int4(model, tmp_path / "tied")
    spec = json.loads((folder / int4.QUANT_FILE).read_text())
    assert spec["tied"] == {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    loaded = load_int4(folder)
    assert loaded.lm_head.weight is loaded.model.language_model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=prompt_ids).logits, model(input_ids=prompt_ids).logits)


def test_exported_layers_hand_their_codes_to_save_without_a_matmul(monkeypatch):
    """Reading codes back out of a kernel's layout costs an (in x in) @ (in x out) int4 matmul per layer (hours
    for a 3B model on a CPU): a layer made by the exporter keeps its codes, and saving reads those."""
    from stvgr1_edge.backends.int4 import WeightOnlyInt4Linear
    from stvgr1_edge_export.int4 import int4_linear_from, quantize_weight_int4

    torch.manual_seed(0)
    linear = nn.Linear(256, 64)
    expected, _, _ = quantize_weight_int4(linear.weight, 128)
    layer = int4_linear_from(linear, 128)

    def no_matmul(*args, **kwargs):
        raise AssertionError("codes() ran the kernel")

    monkeypatch.setattr(WeightOnlyInt4Linear, "_mm", no_matmul)
    assert torch.equal(layer.codes(), expected)
    assert "_kept_codes" not in layer.state_dict() and set(layer.state_dict()) == {"weight", "scales_and_zeros", "bias"}
