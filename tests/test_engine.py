"""The static decode engine (stvgr1_edge/backends/engine.py) against transformers' generate: the same tokens (greedy,
seeded sampling, EOS, min_new_tokens, the repetition stop), compiled and eager, on the packaged nano model, a tiny
random model and a 3B model cut to 4 layers; weight-only int8/int4 fidelity; the compile cache; the CLI's --engine."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch

from stvgr1_edge.backends.engine import EngineConfig, Sampling, StaticEngine, compile_cache_dir
from stvgr1_edge.backends.int4 import WeightOnlyInt4Linear
from stvgr1_edge.backends.int8 import WeightOnlyInt8Linear, quantize_weight_int8
from stvgr1_edge.backends.weight_only import quantize_language_model_
from stvgr1_edge.clip import PromptedClip
from stvgr1_edge.errors import BadInputError
from stvgr1_edge.grounding import Grounder, GrounderConfig
from stvgr1_edge.prompt import grounding_prompt, time_only_prompt

PROMPTS = (grounding_prompt("the man walks to the door"), time_only_prompt("a red ball rolls"))


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """Compiled steps go to a folder of this test session, not the user's cache."""
    folder = tmp_path_factory.mktemp("compile_cache")
    saved = {k: os.environ.get(k) for k in ("STVG_EDGE_COMPILE_CACHE", "TORCHINDUCTOR_CACHE_DIR")}
    os.environ["STVG_EDGE_COMPILE_CACHE"] = str(folder)
    yield folder
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def clip() -> PromptedClip:
    frames = np.random.default_rng(0).integers(0, 256, (4, 60, 90, 3), dtype=np.uint8)
    return PromptedClip(frames, (0, 6, 13, 19), 2.0, 56, 84, 10.0, 20)


@pytest.fixture(scope="module")
def nano() -> Grounder:
    return Grounder.from_pretrained(GrounderConfig(model="nano", device="cpu", max_new_tokens=64))


@pytest.fixture(scope="module")
def tiny() -> Grounder:
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    model, processor = build_tiny_qwen2_5_vl(seed=0)
    return Grounder(model, processor, GrounderConfig(model="tiny", device="cpu", max_new_tokens=16))


@pytest.fixture(scope="module")
def three_b() -> Grounder:
    """Qwen2.5-VL-3B at its real widths (2048 hidden, 16/2 heads, 151,936-token tied head), 4 decoder layers and 4
    vision blocks, random weights."""
    from stvgr1_edge.tiny import build_truncated_qwen2_5_vl

    model, processor = build_truncated_qwen2_5_vl("3b", layers=4, vision_depth=4)
    return Grounder(model, processor, GrounderConfig(model="3b-4", device="cpu", max_new_tokens=8))


def query_inputs(grounder: Grounder, clip: PromptedClip | None, prompt: str):
    """``(inputs, mm_encoder_outputs)`` of one query: the grounder's own (video) inputs, or a text-only chat."""
    if clip is None:
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        chat = grounder.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return dict(grounder.processor.tokenizer([chat], return_tensors="pt")), None
    encoded = grounder.encode_video(clip)
    inputs = grounder.prepare_text(prompt, encoded.inputs.num_visual_tokens)
    inputs.update(video_grid_thw=encoded.inputs.video_grid_thw, second_per_grid_ts=encoded.inputs.second_per_grid_ts)
    return inputs, {"video": encoded.features}


def hf_tokens(model, inputs, mm, **generate_kwargs) -> list[int]:
    kwargs = dict(do_sample=False, temperature=None, top_p=None, top_k=None) | generate_kwargs
    with torch.inference_mode():
        out = model.generate(**inputs, mm_encoder_outputs=mm, **kwargs) if mm else model.generate(**inputs, **kwargs)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def assert_same_tokens_as_generate(grounder: Grounder, clip: PromptedClip, compile: bool, min_distinct: int):
    """The engine's tokens are generate's on two video queries and a text-only one; returns them."""
    engine = StaticEngine(grounder.model, EngineConfig(compile=compile))
    new = grounder.config.max_new_tokens
    answers = []
    for source, prompt in [(clip, p) for p in PROMPTS] + [(None, "Describe the video.")]:
        inputs, mm = query_inputs(grounder, source, prompt)
        expected = hf_tokens(grounder.model, inputs, mm, max_new_tokens=new)
        got = engine.generate(inputs, mm, max_new_tokens=new, sampling=Sampling())
        assert got.tokens == expected, (prompt, source is None)
        assert len(set(expected)) >= min_distinct  # not one token repeated: the steps' positions are exercised
        answers.append(got.tokens)
    assert engine.step is not None and engine.step.capacity % EngineConfig().cache_block == 0
    return answers


# ------------------------------------------------------------------------------------------ token for token
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_tiny_model_greedy_tokens_are_generates(tiny, clip, compile):
    assert_same_tokens_as_generate(tiny, clip, compile, min_distinct=3)


@pytest.mark.slow
@pytest.mark.parametrize("compile", [False, True])
def test_nano_model_greedy_tokens_are_generates_up_to_its_eos(nano, clip, compile):
    answers = assert_same_tokens_as_generate(nano, clip, compile, min_distinct=3)
    eos = nano.model.generation_config.eos_token_id  # the trained model ends its time-only answer
    assert answers[1][-1] in eos and len(answers[1]) < nano.config.max_new_tokens


@pytest.mark.slow
@pytest.mark.parametrize("compile", [False, True])
def test_3b_truncated_model_greedy_tokens_are_generates(three_b, clip, compile):
    assert_same_tokens_as_generate(three_b, clip, compile, min_distinct=3)


def test_grounder_static_engine_gives_the_hf_engines_answers_and_timings(tiny, clip):
    hf = Grounder(tiny.model, tiny.processor, GrounderConfig(model="tiny", device="cpu", max_new_tokens=16))
    config = GrounderConfig(model="tiny", device="cpu", max_new_tokens=16, engine="static", compile=False)
    static = Grounder(tiny.model, tiny.processor, config)  # eager here: the compiled step is checked above
    for prompt in PROMPTS:
        a, b = hf.ground(clip, prompt), static.ground(clip, prompt)
        assert (a.text, a.num_generated_tokens, a.num_prompt_tokens) == (
            b.text,
            b.num_generated_tokens,
            b.num_prompt_tokens,
        )
        assert b.timings_ms["prefill"] > 0 and b.timings_ms["decode"] > 0 and b.tokens_per_s > 0
        parts = sum(b.timings_ms[k] for k in ("preprocess", "vision", "prefill", "decode"))
        assert b.timings_ms["total"] == pytest.approx(parts)


def test_repetition_stop_and_min_new_tokens_end_where_generates_do(tiny, clip):
    """On this prompt the tiny model falls into a 7-token loop: both engines stop on the same token; with EOS
    forbidden by min_new_tokens both run to the same length."""
    lengths = {}
    for engine in ("hf", "static"):
        config = GrounderConfig(
            model="tiny", device="cpu", max_new_tokens=40, stop_on_repetition=16, engine=engine, compile=False
        )
        out = Grounder(tiny.model, tiny.processor, config).ground(clip, grounding_prompt("the man walks"))
        lengths[engine] = out.num_generated_tokens
    assert lengths["hf"] == lengths["static"] < 40
    inputs, mm = query_inputs(tiny, clip, PROMPTS[1])
    eos = tiny.model.generation_config.eos_token_id
    forced = hf_tokens(tiny.model, inputs, mm, max_new_tokens=12, min_new_tokens=12)
    engine = StaticEngine(tiny.model, EngineConfig(compile=False))
    assert engine.generate(inputs, mm, max_new_tokens=12, min_new_tokens=12).tokens == forced
    assert len(forced) == 12 and not set(forced[:-1]) & set(eos)


def test_seeded_sampling_draws_generates_tokens(tiny, clip):
    """Temperature, top-k and top-p through HF's own warpers, one multinomial draw a step: the same seed, the same
    sample as generate, and not the greedy answer."""
    inputs, mm = query_inputs(tiny, clip, PROMPTS[0])
    engine = StaticEngine(tiny.model, EngineConfig(compile=False))
    kwargs = dict(temperature=1.5, top_k=40, top_p=0.9)
    torch.manual_seed(7)
    expected = hf_tokens(tiny.model, inputs, mm, max_new_tokens=16, do_sample=True, **kwargs)
    torch.manual_seed(7)
    got = engine.generate(inputs, mm, max_new_tokens=16, sampling=Sampling(do_sample=True, **kwargs)).tokens
    assert got == expected
    assert got != engine.generate(inputs, mm, max_new_tokens=16, sampling=Sampling()).tokens


# ------------------------------------------------------------------------------------------ weight formats
def test_int8_weight_quantization_is_per_channel_symmetric():
    weight = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -3.0]])
    codes, scales = quantize_weight_int8(weight)
    assert codes.dtype == torch.int8 and codes[:, 1].tolist() == [-127, 0, 64]
    assert torch.allclose(scales, torch.tensor([1 / 127, 1.0, 3 / 127]))
    assert (codes.float() * scales[:, None] - weight).abs().max() <= 3 / 127 / 2 + 1e-6


@pytest.mark.parametrize(
    "weights, lm_head, group_size", [("int8", "int8", 128), ("int4", "int8", 32), ("int4", "fp", 64)]
)
def test_weight_only_first_logits_stay_close_to_full_precision(nano, clip, weights, lm_head, group_size):
    """The trained nano model: its answer's first-token logits through int8 / int4 linears (and an int8 head) keep
    a cosine >= 0.99 to fp32's, and the quantized layers really ran (the logits moved). (Its 1016-token head does
    not pack for the CPU int4 kernel: the 3B test below quantizes a real vocabulary's head to int4.)"""
    from stvgr1_edge.model_source import packaged_model_dir

    quantized = Grounder.from_pretrained(GrounderConfig(model=str(packaged_model_dir()), device="cpu"))
    counts = quantize_language_model_(quantized.model, weights, lm_head, group_size)
    kinds = {"int8": WeightOnlyInt8Linear, "int4": WeightOnlyInt4Linear, "fp": torch.nn.Linear}
    assert type(quantized.model.lm_head) is kinds[lm_head] and counts[weights] >= 4 * 7
    layer = quantized.model.model.language_model.layers[0]
    assert isinstance(layer.mlp.down_proj, kinds[weights]) and isinstance(layer.self_attn.q_proj, kinds[weights])
    inputs, mm = query_inputs(nano, clip, PROMPTS[0])
    reference = StaticEngine(nano.model, EngineConfig(compile=False)).generate(inputs, mm, max_new_tokens=1)
    got = StaticEngine(quantized.model, EngineConfig(compile=False)).generate(inputs, mm, max_new_tokens=1)
    cosine = torch.nn.functional.cosine_similarity(got.first_logits, reference.first_logits).item()
    assert 0.99 <= cosine < 1 - 1e-7


@pytest.mark.slow
@pytest.mark.parametrize("lm_head, group_size", [("int4", 32), ("int4", 128), ("int8", 128)])
def test_3b_head_quantized_keeps_the_first_logits(three_b, clip, lm_head, group_size):
    """The 151,936 x 2048 head of the 3B model in int4 (groups of 32 / 128) or int8: first logits' cosine >= 0.99."""
    from stvgr1_edge.backends.int8 import int8_linear_from
    from stvgr1_edge.backends.weight_only import int4_linear_of

    inputs, mm = query_inputs(three_b, clip, PROMPTS[0])
    model, head = three_b.model, three_b.model.lm_head
    reference = StaticEngine(model, EngineConfig(compile=False)).generate(inputs, mm, max_new_tokens=1)
    model.lm_head = int4_linear_of(head, group_size) if lm_head == "int4" else int8_linear_from(head)
    try:
        got = StaticEngine(model, EngineConfig(compile=False)).generate(inputs, mm, max_new_tokens=1)
    finally:
        model.lm_head = head
    cosine = torch.nn.functional.cosine_similarity(got.first_logits, reference.first_logits).item()
    assert 0.99 <= cosine < 1 - 1e-7


@pytest.mark.slow
def test_compiled_int8_engine_with_bf16_weights_answers_like_eager(clip):
    """bf16 activations, int8 weights, compiled: the fused dequantizing matmul gives the eager engine's answer."""
    from stvgr1_edge.model_source import packaged_model_dir

    config = GrounderConfig(model=str(packaged_model_dir()), device="cpu", dtype="bf16", max_new_tokens=24)
    grounder = Grounder.from_pretrained(config)
    quantize_language_model_(grounder.model, "int8", "int8")
    inputs, mm = query_inputs(grounder, clip, PROMPTS[0])
    eager = StaticEngine(grounder.model, EngineConfig(compile=False)).generate(inputs, mm, max_new_tokens=24)
    compiled = StaticEngine(grounder.model, EngineConfig(compile=True)).generate(inputs, mm, max_new_tokens=24)
    assert compiled.tokens[:8] == eager.tokens[:8]
    cosine = torch.nn.functional.cosine_similarity(compiled.first_logits, eager.first_logits).item()
    assert cosine > 0.999


def test_unknown_formats_and_nf4_with_the_static_engine_are_one_line_errors(tiny):
    for bad in (dict(engine="fast"), dict(weights="int3"), dict(lm_head="fp8"), dict(quant="nf4", engine="static")):
        with pytest.raises(BadInputError) as info:
            Grounder(tiny.model, tiny.processor, GrounderConfig(model="tiny", device="cpu", **bad))
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ compile cache
def test_a_step_that_fails_to_compile_decodes_eagerly_with_one_warning(tiny, clip, monkeypatch, caplog):
    """Where the step cannot be compiled (a Jetson torch without Triton, a CPU without a C++ compiler) the engine
    warns once and gives the eager loop's tokens; larger caches built later are not compiled again."""

    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("Cannot find a working triton installation\nmore detail")

        return compiled

    inputs, mm = query_inputs(tiny, clip, PROMPTS[0])
    expected = StaticEngine(tiny.model, EngineConfig(compile=False)).generate(inputs, mm, max_new_tokens=16).tokens
    monkeypatch.setattr(torch, "compile", broken_compile)
    engine = StaticEngine(tiny.model, EngineConfig(compile=True, cache_block=16))
    with caplog.at_level("WARNING", logger="stvgr1_edge.backends.engine"):
        got = engine.generate(inputs, mm, max_new_tokens=16, sampling=Sampling())
        capacity = engine.step.capacity
        again = engine.generate(inputs, mm, max_new_tokens=capacity, min_new_tokens=capacity, sampling=Sampling())
    assert got.tokens == expected and again.tokens[:16] == expected
    assert engine.step.capacity > capacity  # a new, larger step: built eager, no second warning
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["decode step: compiling failed (Cannot find a working triton installation): decoding eagerly"]


def test_compile_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("STVG_EDGE_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache_dir() == tmp_path / "xdg" / "stvg-edge" / "inductor"
    monkeypatch.setenv("STVG_EDGE_COMPILE_CACHE", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"


@pytest.mark.slow
def test_compiled_step_is_written_to_and_read_back_from_the_cache_folder(tiny, clip, compile_cache):
    """A compile fills the folder ($STVG_EDGE_COMPILE_CACHE); after dynamo forgets everything (as a new process
    would), compiling the same step again is an FX-graph cache hit, and inductor is pointed at that folder."""
    from torch._dynamo.utils import counters

    inputs, mm = query_inputs(tiny, clip, PROMPTS[0])
    first = StaticEngine(tiny.model, EngineConfig(compile=True)).generate(inputs, mm, max_new_tokens=4)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(compile_cache)
    assert any((compile_cache / "fxgraph").rglob("*")) and any(compile_cache.rglob("*.so"))
    torch._dynamo.reset()
    hits = counters["inductor"]["fxgraph_cache_hit"]
    again = StaticEngine(tiny.model, EngineConfig(compile=True)).generate(inputs, mm, max_new_tokens=4)
    assert counters["inductor"]["fxgraph_cache_hit"] > hits
    assert again.tokens == first.tokens and again.compile_s > 0


# ------------------------------------------------------------------------------------------ CLI
def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_bad_engine_exits_2_with_one_line(capsys, tmp_path):
    from stvgr1_edge.cli import main

    for command in (["run", str(tmp_path / "v.mp4"), "q"], ["predict", str(tmp_path / "a.json"), "-o", "p.jsonl"]):
        assert main([*command, "--engine", "fast"]) == 2
        assert "--engine 'fast' is not one of hf, static" in _one_error_line(capsys)


def nano_cli_run(tmp_path, seed: int, name: str, *flags: str, fresh_process: bool = False) -> dict:
    """``stvg-edge run --model nano`` (CPU, 256 new tokens, ``flags``) on one synthetic 224x168 6 s clip of ``seed``,
    in this process or a fresh one; the result JSON."""
    import subprocess
    import sys

    from stvgr1_edge.cli import main
    from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset

    folder = tmp_path / f"clip{seed}"
    if not folder.exists():
        write_synthetic_dataset(folder, num=1, seed=seed, config=SynthConfig(width=224, height=168, seconds=6))
    entry = next(iter(json.loads((folder / "annotations.json").read_text()).values()))
    out = tmp_path / f"{name}.json"
    args = ["run", str(folder / entry["video_path"]), entry["English"], "--model", "nano", "--device", "cpu"]
    args += ["-o", str(out), "--max-new-tokens", "256", *flags]
    if fresh_process:
        done = subprocess.run([sys.executable, "-m", "stvgr1_edge.cli", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    else:
        assert main(args) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_cli_static_engine_answers_like_hf_on_nano(tmp_path):
    answers = {}
    for engine in ("hf", "static"):
        result = nano_cli_run(tmp_path, 5001, engine, "--engine", engine)
        assert result["config"]["grounder"]["engine"] == engine
        query = result["queries"][0]
        answers[engine] = (query["answer_text"], query["ids"], query["start_s"], query["end_s"], query["tube"])
    assert answers["static"] == answers["hf"]
    assert "Target ID" in answers["hf"][0] and answers["hf"][1]  # a real answer, parsed


def test_run_config_weight_formats_reach_the_grounder_and_conflicts_are_one_line():
    from stvgr1_edge.run_config import RunConfig, build_pipeline, check_run_config

    pipeline = build_pipeline(RunConfig(model="nano", device="cpu", engine="static", weights="int8", lm_head="int8"))
    model = pipeline.grounder.model
    assert isinstance(model.lm_head, WeightOnlyInt8Linear)
    assert isinstance(model.model.language_model.layers[0].mlp.down_proj, WeightOnlyInt8Linear)
    grounder = pipeline.describe()["grounder"]
    assert (grounder["engine"], grounder["weights"], grounder["lm_head"]) == ("static", "int8", "int8")
    for bad in (dict(quant="nf4", weights="int4"), dict(bundle="b", weights="int8")):
        with pytest.raises(BadInputError) as info:
            check_run_config(RunConfig(**bad))
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("kernel", ["mlas", "cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_int4_prefill_takes_the_dense_path_with_the_kernels_values(monkeypatch, kernel):
    """Long inputs (a prefill) through the weight dequantized once, short ones (decoding) through the int4 kernel
    (onnxruntime's or torch's on a CPU, tinygemm on CUDA): the same outputs to the kernels' rounding."""
    from stvgr1_edge.backends import int4, int4_mlas
    from stvgr1_edge.backends.int4 import quantize_weight_int4

    device = "cuda" if kernel == "cuda" else "cpu"
    if kernel == "cpu":
        monkeypatch.setattr(int4_mlas, "mlas_available", lambda: False)
    monkeypatch.setattr(int4, "MLAS_FROM_IN_FEATURES", 0)  # a small layer on onnxruntime's kernel too
    linear = torch.nn.Linear(256, 64, bias=True).to(device)
    codes, scales, zeros = quantize_weight_int4(linear.weight, 32)
    layer = WeightOnlyInt4Linear(256, 64, codes, scales, zeros, linear.bias, 32, torch.bfloat16)
    if layer.kernel != kernel:
        pytest.skip(f"the {kernel!r} int4 kernel is not available here")
    dequantized = []
    monkeypatch.setattr(
        int4, "dequantize_for_prefill", lambda *a: dequantized.append(1) or int4.dequantize_packed_int4(*a)
    )
    x = torch.randn(int4.DENSE_FROM_ROWS[kernel], 256, device=device)
    dense = layer(x)
    assert len(dequantized) == 1
    rows = torch.cat([layer(x[i : i + 1]) for i in range(0, len(x), 64)])  # one row at a time: the kernel
    assert len(dequantized) == 1
    torch.testing.assert_close(dense[::64], rows, rtol=2e-2, atol=2e-2)
    reference = torch.nn.functional.linear(x, int4.dequantize_int4(codes, scales, zeros, 32), linear.bias)
    assert torch.nn.functional.cosine_similarity(dense.flatten(), reference.flatten(), dim=0) > 0.999


def test_int4_onnxruntime_layers_decode_on_one_torch_thread_and_prefill_on_all(nano, clip, monkeypatch):
    """With onnxruntime int4 linears the prompt runs on all of torch's threads, every token after the first on one;
    both engines give the threads back, and answer alike. (Nano's narrow layers take the kernel by a lowered
    threshold.)"""
    from stvgr1_edge.backends import int4
    from stvgr1_edge.backends.int4_mlas import mlas_available, uses_mlas

    if not mlas_available():
        pytest.skip("needs onnx and onnxruntime")
    monkeypatch.setattr(int4, "MLAS_FROM_IN_FEATURES", 0)
    model = copy.deepcopy(nano.model)
    quantize_language_model_(model, "int4", "fp", 32)
    if not uses_mlas(model):
        pytest.skip("torch has no CPU int4 kernel here")
    seen: list[tuple[int, int]] = []  # (rows of the head's input, torch threads) per forward
    model.lm_head.register_forward_hook(lambda m, args, out: seen.append((args[0].shape[1], torch.get_num_threads())))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    answers = []
    try:
        for engine in ("hf", "static"):
            config = GrounderConfig(model="nano-int4", device="cpu", max_new_tokens=12, engine=engine, compile=False)
            seen.clear()
            answers.append(Grounder(model, nano.processor, config).ground(clip, PROMPTS[0]))
            assert torch.get_num_threads() == 2, engine
            assert seen[0][1] == 2 and len(seen) == answers[-1].num_generated_tokens > 2, (engine, seen)
            assert {threads for _, threads in seen[1:]} == {1}, (engine, seen)
    finally:
        torch.set_num_threads(threads)
    assert answers[0].text == answers[1].text


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_prefill_dequantization_is_exactly_the_eager_formula_fused_or_not(monkeypatch, dtype):
    """The fused (compiled) dequantization of packed codes gives the eager formula's values bit for bit, and a
    machine where compiling fails gets the same values eagerly, with one warning."""
    from stvgr1_edge.backends import int4

    codes = torch.randint(0, 16, (48, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    scales, zeros = torch.rand(48, 8).to(dtype), torch.randn(48, 8).to(dtype)
    expected = int4.dequantize_int4(codes, scales, zeros, 32).to(dtype)
    packed = int4.pack_uint4x2(codes)
    assert torch.equal(int4.dequantize_packed_int4(packed, scales, zeros, 32, dtype), expected)
    monkeypatch.setattr(int4, "_fused_dequantize", None)
    assert torch.equal(int4.dequantize_for_prefill(packed, scales.t().contiguous().t(), zeros, 32, dtype), expected)
    assert int4._fused_dequantize not in (None, False)  # compiled

    def cannot_build(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nmore")

    monkeypatch.setattr(int4, "_fused_dequantize", cannot_build)
    warnings = []
    monkeypatch.setattr(int4.logger, "warning", lambda *args: warnings.append(args[0] % args[1:]))
    assert torch.equal(int4.dequantize_for_prefill(packed, scales, zeros, 32, dtype), expected)
    assert int4._fused_dequantize is False and warnings == [
        "int4 prefill: dequantizing eagerly (compiling failed: no C++ compiler)"
    ]
    assert torch.equal(int4.dequantize_for_prefill(packed, scales, zeros, 32, dtype), expected)
    assert len(warnings) == 1


def test_int4_quantization_and_cpu_packing_in_row_blocks_equal_one_block(monkeypatch):
    """Rows are quantized and packed a block at a time (bounded memory): the same codes, scales, zeros and packed
    weight as all rows at once, also when the row count is not a multiple of the block (64 rows: the CPU packing's
    own block)."""
    from stvgr1_edge.backends import int4

    weight = torch.randn(208, 256, generator=torch.Generator().manual_seed(3))  # the CPU kernel packs 16 rows at a time
    whole = int4.quantize_weight_int4(weight, 32)
    layer_whole = WeightOnlyInt4Linear(256, 208, *whole, None, 32, torch.float32)
    monkeypatch.setattr(int4, "QUANTIZE_ROWS", 64)
    blocks = int4.quantize_weight_int4(weight, 32)
    assert all(torch.equal(a, b) for a, b in zip(whole, blocks))
    layer_blocks = WeightOnlyInt4Linear(256, 208, *blocks, None, 32, torch.float32)
    assert torch.equal(layer_whole.weight, layer_blocks.weight)
    x = torch.randn(3, 256)
    assert torch.equal(layer_whole(x), layer_blocks(x))
