"""On a CUDA GPU (every test here is marked ``gpu`` and skipped without one; ``benchmarks/gpu_check.sh`` runs them):
the static engine with CUDA graphs decodes generate's tokens, int4 through tinygemm keeps the first logits, and the
CLI answers on the GPU what it answers on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
from test_engine import PROMPTS, clip, compile_cache, hf_tokens, query_inputs  # noqa: F401 (fixtures)

from stvgr1_edge.backends.engine import EngineConfig, Sampling, StaticEngine
from stvgr1_edge.backends.int4 import WeightOnlyInt4Linear
from stvgr1_edge.backends.weight_only import quantize_language_model_
from stvgr1_edge.grounding import Grounder, GrounderConfig

pytestmark = pytest.mark.gpu


def on_cuda(inputs: dict) -> dict:
    return {k: v.to("cuda") if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def nano_on_cuda(dtype: str, max_new_tokens: int = 64) -> Grounder:
    return Grounder.from_pretrained(
        GrounderConfig(model="nano", device="cuda", dtype=dtype, max_new_tokens=max_new_tokens)  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("compile", [False, True])
def test_engine_on_cuda_decodes_generates_tokens(clip, compile):  # noqa: F811
    """fp32 on the GPU, eager and compiled (``reduce-overhead``: the step replays as a CUDA graph): two video queries
    and a text-only one, token for token generate's."""
    grounder = nano_on_cuda("fp32")
    engine = StaticEngine(grounder.model, EngineConfig(compile=compile))
    for source, prompt in [(clip, p) for p in PROMPTS] + [(None, "Describe the video.")]:
        inputs, mm = query_inputs(grounder, source, prompt)
        inputs = on_cuda(inputs)
        expected = hf_tokens(grounder.model, inputs, mm, max_new_tokens=64)
        got = engine.generate(inputs, mm, max_new_tokens=64, sampling=Sampling())
        assert got.tokens == expected, (prompt, source is None)
        assert len(set(expected)) >= 5
    assert engine.step is not None and {b.device.type for b in engine.step.buffers()} == {"cuda"}


def test_int4_tinygemm_engine_keeps_the_first_logits_and_compiles_to_the_eager_answer(clip):  # noqa: F811
    """bf16 nano with int4 weights and head on tinygemm: first logits' cosine >= 0.99 to the bf16 model's, and the
    compiled (CUDA graph) int4 step answers the eager one's first tokens."""
    reference_model = nano_on_cuda("bf16", max_new_tokens=24)
    quantized = nano_on_cuda("bf16", max_new_tokens=24)
    counts = quantize_language_model_(quantized.model, "int4", "int4", 32)
    layer = quantized.model.model.language_model.layers[0].mlp.down_proj
    assert isinstance(layer, WeightOnlyInt4Linear) and layer.kernel == "cuda" and counts["int4"] >= 4 * 7
    inputs, mm = query_inputs(quantized, clip, PROMPTS[0])
    inputs = on_cuda(inputs)
    reference = StaticEngine(reference_model.model, EngineConfig(compile=False)).generate(inputs, mm, max_new_tokens=1)
    eager = StaticEngine(quantized.model, EngineConfig(compile=False)).generate(inputs, mm, max_new_tokens=24)
    compiled = StaticEngine(quantized.model, EngineConfig(compile=True)).generate(inputs, mm, max_new_tokens=24)
    cosine = torch.nn.functional.cosine_similarity(eager.first_logits, reference.first_logits).item()
    assert 0.99 <= cosine < 1 - 1e-7
    assert compiled.tokens[:8] == eager.tokens[:8]


def test_cli_run_on_cuda_answers_what_the_cpu_answers(tmp_path, fixtures):
    """``stvg-edge run`` on the real-footage fixture, fp32: on the GPU with generate and with the default engine (the
    static one there), the CPU's answer (generate, its default)."""
    from stvgr1_edge.cli import main

    video = str(fixtures / "vtest_250_299.avi")
    answers = {}
    for device, engine in (("cpu", None), ("cuda", "hf"), ("cuda", None)):
        out = tmp_path / f"{device}_{engine}.json"
        args = ["run", video, "the man in the white shirt walks to the left", "--model", "nano", "-o", str(out)]
        args += ["--device", device, "--dtype", "fp32"] + (["--engine", engine] if engine else [])
        assert main(args) == 0
        result = json.loads(out.read_text())
        grounder = result["config"]["grounder"]
        assert grounder["device"].startswith(device)
        assert grounder["engine"] == (engine or {"cpu": "hf", "cuda": "static"}[device])
        query = result["queries"][0]
        answers[(device, engine)] = (query["answer_text"], query["ids"], query["start_s"], query["end_s"])
    assert answers[("cuda", "hf")] == answers[("cpu", None)] == answers[("cuda", None)]
    assert "Target ID" in answers[("cpu", None)][0]
