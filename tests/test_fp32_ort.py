"""The "fp32-ort" weight format (stvgr1_edge/backends/fp32_ort.py): an fp32 model's own weights on onnxruntime's CPU
kernel — the fp32 product for any row count, no torch copy of the weight left, the engine's and generate's tokens
unchanged, one-line errors where it cannot run, and the CLI path."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
from test_engine import PROMPTS, clip, compile_cache, hf_tokens, nano_cli_run, query_inputs  # noqa: F401 (fixtures)

from stvgr1_edge.backends.engine import EngineConfig, Sampling, StaticEngine
from stvgr1_edge.backends.int4_mlas import mlas_available, uses_mlas
from stvgr1_edge.backends.weight_only import quantize_language_model_
from stvgr1_edge.errors import BadInputError
from stvgr1_edge.grounding import Grounder, GrounderConfig

pytestmark = pytest.mark.skipif(not mlas_available(), reason="needs onnx, onnxruntime and torch custom ops")


@pytest.mark.parametrize("bias", [True, False])
def test_linear_is_the_fp32_product_for_any_rows_and_keeps_no_torch_weight(bias):
    from stvgr1_edge.backends.fp32_ort import OrtFp32Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(1024, 640, bias=bias)  # 2.6 MB: freed by munmap, so a dangling read would crash
    inputs = [torch.randn(1, 1024), torch.randn(2, 129, 1024), torch.randn(700, 1024)]
    with torch.inference_mode():
        expected = [linear(x) for x in inputs]
    layer = OrtFp32Linear(linear)
    del linear
    gc.collect()
    scratch = [torch.full((1024 * 640,), float(i)) for i in range(8)]  # reuse whatever memory was freed
    assert list(layer.state_dict()) == [] and not list(layer.parameters())
    with torch.inference_mode():
        for x, want in zip(inputs, expected):
            got = layer(x)
            assert got.shape == want.shape and got.dtype == torch.float32
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert len(scratch) == 8
    assert uses_mlas(torch.nn.Sequential(layer)) and not uses_mlas(torch.nn.Sequential(torch.nn.Linear(2, 2)))


@pytest.fixture(scope="module")
def nano_pair():
    """The packaged nano model as loaded, and a copy with every language-model linear and the head on fp32-ort."""
    from stvgr1_edge.model_source import packaged_model_dir

    config = GrounderConfig(model=str(packaged_model_dir()), device="cpu", max_new_tokens=48)
    plain = Grounder.from_pretrained(config)
    model = copy.deepcopy(plain.model)
    counts = quantize_language_model_(model, "fp32-ort", "fp32-ort")
    return plain, Grounder(model, plain.processor, config), counts


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_engine_and_generate_on_fp32_ort_give_the_torch_fp32_tokens(nano_pair, clip, compile):  # noqa: F811
    """The trained nano model, video and text queries: the static engine (eager and compiled) and generate over fp32-ort
    linears answer with the tokens of generate over torch's fp32 linears; decoding runs torch on one thread."""
    plain, converted, counts = nano_pair
    layers = converted.model.model.language_model.layers
    assert counts["fp32-ort"] == 7 * len(layers) + 1 and uses_mlas(converted.model)
    for source, prompt in [(clip, p) for p in PROMPTS] + [(None, "Describe the video.")]:
        inputs, mm = query_inputs(plain, source, prompt)
        expected = hf_tokens(plain.model, inputs, mm, max_new_tokens=48)
        assert hf_tokens(converted.model, inputs, mm, max_new_tokens=48) == expected
        threads = []
        hook = converted.model.lm_head.register_forward_hook(lambda *a: threads.append(torch.get_num_threads()))
        try:
            engine = StaticEngine(converted.model, EngineConfig(compile=compile))
            got = engine.generate(inputs, mm, max_new_tokens=48, sampling=Sampling())
        finally:
            hook.remove()
        assert got.tokens == expected and len(set(expected)) >= 3
        if not compile:  # the compiled step calls the kernel without the module's hook
            assert threads[0] == torch.get_num_threads() and set(threads[1:]) == {1}


def test_it_refuses_bf16_weights_and_gpu_runs_in_one_line(nano_pair):
    from stvgr1_edge import cli_common
    from stvgr1_edge.backends import weight_only
    from stvgr1_edge.run_config import RunConfig, check_run_config

    assert cli_common.WEIGHT_FORMATS == weight_only.WEIGHT_FORMATS  # the CLI offers every format, and only those

    plain, _, _ = nano_pair
    bf16 = copy.deepcopy(plain.model).to(torch.bfloat16)
    with pytest.raises(BadInputError, match="fp32-ort.* runs fp32 weights on a CPU") as info:
        quantize_language_model_(bf16, "fp32-ort")
    assert "\n" not in str(info.value)
    assert type(bf16.model.language_model.layers[0].mlp.down_proj) is torch.nn.Linear  # nothing half-converted
    for bad in (dict(weights="fp32-ort", dtype="bf16"), dict(lm_head="fp32-ort", device="cuda")):
        with pytest.raises(BadInputError, match="fp32-ort.* runs fp32 weights on a CPU") as info:
            check_run_config(RunConfig(**bad))
        assert "\n" not in str(info.value)


@pytest.mark.slow
def test_cli_run_with_fp32_ort_answers_like_fp(tmp_path):
    """`stvg-edge run --weights fp32-ort --lm-head fp32-ort` (a fresh process: it turns on onnxruntime's shared pool)
    gives the fp run's answer and tube, and says which format ran."""
    results = {}
    for weights in ("fp", "fp32-ort"):
        flags = ("--engine", "static", "--weights", weights, "--lm-head", weights)
        results[weights] = nano_cli_run(tmp_path, 5003, weights, *flags, fresh_process=True)
    assert results["fp32-ort"]["config"]["grounder"]["weights"] == "fp32-ort"
    fp, ort = (results[w]["queries"][0] for w in ("fp", "fp32-ort"))
    assert (ort["answer_text"], ort["ids"], ort["start_s"], ort["end_s"]) == (
        fp["answer_text"],
        fp["ids"],
        fp["start_s"],
        fp["end_s"],
    )
    assert ort["tube"] == fp["tube"] and "Target ID" in fp["answer_text"]
