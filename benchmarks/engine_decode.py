"""Decode speed of the static engine (stvgr1_edge/backends/engine.py) against transformers' generate, per weight
format, on Qwen2.5-VL-3B cut to its first layers (real widths and a real 151,936-token head, random weights).

    python benchmarks/engine_decode.py                         # the full table (CPU: minutes)
    python benchmarks/engine_decode.py --quick                 # 2 layers, 128-token prompt, 16 tokens, 2 formats
    python benchmarks/engine_decode.py --compile-processes 0   # skip the two-process compile-cache measurement

Batch 1, a ``--prompt-tokens`` text-only prompt (decode speed does not depend on what the prompt was), exactly
``--new-tokens`` tokens (EOS suppressed, no repetition stop). In one run: HF generate fp32 and bf16; the engine in
fp32, bf16, int8 (+ int8 lm_head) and int4 (+ int4 lm_head, groups 32 and 128); HF generate and the engine with the
fp32 weights on onnxruntime's kernel (``fp32-ort``: :mod:`stvgr1_edge.backends.fp32_ort`). For each: decode tokens/s and
ms/token (median of ``--repeats``, the first token — prefill — left out), the tokens' agreement with HF fp32's,
the first logits' cosine to HF fp32's, and the bandwidth ceiling: the measured copy bandwidth (``2 * bytes /
time`` of a large tensor copy) over the bytes one decode step reads (the decoder's weights, the head, the KV cache
up to where it is read). The issue's targets are checked and written down with the numbers:
the fastest engine on a dtype's own weights (either kernel) >= 1.5x HF generate in that dtype (torch's kernels: what
a user of the reference code runs); the fastest weight-only engine >= 4x HF generate fp32.

``--compile-processes N`` (default 1) also runs the fp32 and int8 engines' first decode step in two fresh processes
sharing one empty compile cache folder: the first compiles, the second loads the compiled steps from disk.

Writes ``benchmarks/results/engine_decode.json`` (merged under a key naming the machine and shapes) and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "engine_decode.json"
logger = logging.getLogger("engine_decode")

# label -> (decoder: "hf" | "static", dtype, weights, lm_head, int4 group size)
CONFIGS = {
    "hf-fp32": ("hf", "fp32", "fp", "fp", 0),
    "hf-bf16": ("hf", "bf16", "fp", "fp", 0),
    "hf-fp32-ort": ("hf", "fp32", "fp32-ort", "fp32-ort", 0),
    "engine-fp32": ("static", "fp32", "fp", "fp", 0),
    "engine-fp32-ort": ("static", "fp32", "fp32-ort", "fp32-ort", 0),
    "engine-bf16": ("static", "bf16", "fp", "fp", 0),
    "engine-int8": ("static", "fp32", "int8", "int8", 0),
    "engine-int4-g32": ("static", "fp32", "int4", "int4", 32),
    "engine-int4-g128": ("static", "fp32", "int4", "int4", 128),
    "engine-int4-g128-bf16": ("static", "bf16", "int4", "int4", 128),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["3b", "7b"], default="3b")
    p.add_argument("--layers", type=int, default=4, help="decoder layers kept")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (medians reported)")
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    p.add_argument("--no-compile", action="store_true", help="engine configurations run eager")
    p.add_argument(
        "--per-session-pools", action="store_true", help="CPU: onnxruntime's int4 sessions without the shared pool"
    )
    p.add_argument("--compile-processes", type=int, default=1, choices=[0, 1], help="measure compile in 2 processes")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 layers, 128 + 16 tokens, 1 repeat")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the model, the cache and the timing)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--compile-probe", type=Path, default=None, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.prompt_tokens, args.new_tokens, args.repeats = 2, 128, 16, 1
        args.configs = [c for c in args.configs if c in ("hf-fp32", "engine-fp32", "engine-int8")]
        args.compile_processes = 0
    return args


# ---------------------------------------------------------------------------------------------- measuring
def synchronize(device: str) -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously: a clock read alone times the launch)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def copy_bandwidth_gb_s(device: str = "cpu", megabytes: int = 1024, repeats: int = 5) -> float:
    """Best of ``repeats`` copies of a ``megabytes`` fp32 tensor on ``device``: read + write = 2 * bytes moved."""
    import torch

    src = torch.randn(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


def tensor_bytes(modules) -> int:
    from stvgr1_edge.backends.fp32_ort import OrtFp32Linear

    seen, total = set(), 0
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        for m in module.modules():  # weights held by onnxruntime, not torch
            if isinstance(m, OrtFp32Linear):
                total += 4 * m.out_features * (m.in_features + m.has_bias)
    return total


def bytes_per_token(model, kv_positions: int) -> dict[str, int]:
    """What one decode step reads: every decoder layer's weights, the final norm, the head, one embedding row, and the
    KV cache over ``kv_positions`` (the engine reads its whole capacity: the masked slots too)."""
    text = model.model.language_model
    cfg = text.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    dtype_bytes = text.embed_tokens.weight.element_size()
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * kv_positions * dtype_bytes
    weights = tensor_bytes([text.layers, text.norm, model.lm_head]) + cfg.hidden_size * dtype_bytes
    return {"weights": weights, "kv_cache": kv, "total": weights + kv}


class FirstTokenClock:
    """A generate streamer: the time the first new token arrives (generate puts the prompt first); it then calls
    ``on_first_token`` (the grounder's switch of torch's threads for onnxruntime linears)."""

    def __init__(self, on_first_token=lambda: None) -> None:
        self.calls, self.first_s, self.on_first_token = 0, None, on_first_token

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first_s = time.perf_counter()
            self.on_first_token()

    def end(self) -> None:
        pass


def run_hf(model, inputs, new_tokens: int) -> tuple[list[int], float, float]:
    import torch

    from stvgr1_edge.backends.int4_mlas import DecodingThreads

    threads = DecodingThreads(model, start_at_once=False)  # as Grounder.generate: the prompt on all threads
    clock = FirstTokenClock(threads.start)
    start = time.perf_counter()
    with torch.inference_mode(), threads:
        out = model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, streamer=clock
        )
    synchronize(str(out.device))
    end = time.perf_counter()
    return out[0, inputs["input_ids"].shape[1] :].tolist(), clock.first_s - start, end - clock.first_s


def first_logits_hf(model, inputs):
    import torch

    with torch.inference_mode():
        return model(**inputs, logits_to_keep=1).logits[:, -1].float()


def build_model(args, seed: int = 0):
    import torch

    from stvgr1_edge.tiny import build_truncated_qwen2_5_vl

    with torch.device(args.device):  # drawn where it runs: a 7B-wide model's random init takes minutes on a CPU
        return build_truncated_qwen2_5_vl(args.arch, layers=args.layers, vision_depth=4, seed=seed)


def prompt_inputs(processor, length: int, device: str = "cpu"):
    import torch

    vocab = len(processor.tokenizer)
    ids = torch.randint(14, vocab, (1, length), generator=torch.Generator().manual_seed(0))  # no special tokens
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def variant(base, dtype: str, weights: str, lm_head: str, group: int):
    """A copy of the fp32 model in ``dtype`` with its linears in ``weights`` / ``lm_head`` (quantized from fp32)."""
    import torch

    from stvgr1_edge.backends.weight_only import quantize_language_model_

    model = copy.deepcopy(base)
    if dtype == "bf16":
        model.to(torch.bfloat16)
    quantize_language_model_(model, weights, lm_head, group or 128)
    return model


def bench_config(label, spec, base, inputs, reference, args) -> dict:
    import torch

    from stvgr1_edge.backends.engine import EngineConfig, Sampling, StaticEngine

    decoder, dtype, weights, lm_head, group = spec
    start = time.perf_counter()
    model = base if (dtype, weights, lm_head) == ("fp32", "fp", "fp") else variant(base, dtype, weights, lm_head, group)
    prepare_s = time.perf_counter() - start
    new = args.new_tokens
    compile_s = 0.0
    if decoder == "hf":

        def once():
            return run_hf(model, inputs, new)

        logits = first_logits_hf(model, inputs)
        once()  # warm-up, as the engine's: CUDA's first bf16 generate took 4.1 s against 0.43 s after
        capacity = inputs["input_ids"].shape[1] + new // 2  # the dynamic cache's mean length over the decode
    else:
        engine = StaticEngine(model, EngineConfig(compile=not args.no_compile))
        last: dict = {}

        def once():
            out = engine.generate(inputs, None, max_new_tokens=new, min_new_tokens=new, sampling=Sampling())
            last.update(logits=out.first_logits, compile_s=out.compile_s)
            return out.tokens, out.prefill_s, out.decode_s

        once()  # warm-up: compiles the step
        logits, compile_s = last["logits"], last["compile_s"]
        capacity = engine.step.capacity
    runs = [once() for _ in range(args.repeats)]
    tokens = runs[0][0]
    decode_s = statistics.median(r[2] for r in runs)
    prefill_s = statistics.median(r[1] for r in runs)
    tok_s = (new - 1) / decode_s
    reads = bytes_per_token(model, capacity)
    ref_tokens = reference["tokens"] if reference else tokens
    prefix = next((i for i, (a, b) in enumerate(zip(tokens, ref_tokens)) if a != b), min(len(tokens), len(ref_tokens)))
    result = {
        "decoder": decoder,
        "dtype": dtype,
        "weights": weights,
        "lm_head": lm_head,
        "lm_head_kernel": getattr(model.lm_head, "kernel", type(model.lm_head).__name__),
        "int4_group_size": group or None,
        "compiled": decoder == "static" and not args.no_compile,
        "decode_tokens_per_s": round(tok_s, 3),
        "best_decode_tokens_per_s": round((new - 1) / min(r[2] for r in runs), 3),
        "ms_per_token": round(decode_s / (new - 1) * 1e3, 3),
        "prefill_ms": round(prefill_s * 1e3, 1),
        "runs_decode_s": [round(r[2], 4) for r in runs],
        "compile_s": round(compile_s, 2),
        "prepare_s": round(prepare_s, 2),
        "token_agreement_vs_hf_fp32": round(sum(a == b for a, b in zip(tokens, ref_tokens)) / len(ref_tokens), 4),
        "identical_prefix_vs_hf_fp32": prefix,
        "first_logits_cosine_vs_hf_fp32": round(
            torch.nn.functional.cosine_similarity(logits, reference["logits"] if reference else logits).item(), 6
        ),
        "bytes_per_token": reads,
    }
    if model is not base:
        del model
    return result | {"_tokens": tokens, "_logits": logits}


# ---------------------------------------------------------------------------------------------- compile cache
def compile_probe(args) -> None:
    """Child process: build the model, time the first decode step of the fp32 and int8 engines, print JSON."""
    from stvgr1_edge.backends.engine import EngineConfig, Sampling, StaticEngine

    base, processor = build_model(args)
    inputs = prompt_inputs(processor, args.prompt_tokens, args.device)
    out = {}
    for label in ("engine-fp32", "engine-int8"):
        _, dtype, weights, lm_head, group = CONFIGS[label]
        model = base if label == "engine-fp32" else variant(base, dtype, weights, lm_head, group)
        result = StaticEngine(model, EngineConfig()).generate(inputs, None, max_new_tokens=4, sampling=Sampling())
        out[label] = result.compile_s
    args.compile_probe.write_text(json.dumps(out))


def compile_in_two_processes(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="stvg_compile_cache_") as cache:
        env = dict(os.environ, STVG_EDGE_COMPILE_CACHE=cache)
        times = []
        for _ in range(2):
            out = Path(cache) / "probe.json"
            cmd = [sys.executable, __file__, "--arch", args.arch, "--layers", str(args.layers), "--device", args.device]
            cmd += ["--prompt-tokens", str(args.prompt_tokens), "--compile-probe", str(out)]
            subprocess.run(cmd, env=env, check=True)
            times.append(json.loads(out.read_text()))
    return {
        label: {"first_process_s": round(times[0][label], 2), "second_process_s": round(times[1][label], 2)}
        for label in times[0]
    }


# ---------------------------------------------------------------------------------------------- run
def run(args) -> dict:
    import torch
    import transformers

    from stvgr1_edge.backends.ort_threads import share_threads, threads_shared

    bandwidth = copy_bandwidth_gb_s(args.device)
    logger.info("copy bandwidth %.1f GB/s", bandwidth)
    if args.device == "cpu" and not args.per_session_pools:  # as stvg-edge run does for CPU int4 (ort_threads.py)
        share_threads()
    base, processor = build_model(args)
    inputs = prompt_inputs(processor, args.prompt_tokens, args.device)
    results: dict[str, dict] = {}
    tokens: dict[str, list[int]] = {}
    reference = None
    for label in sorted(args.configs, key=lambda c: c != "hf-fp32"):  # HF fp32 first: the reference
        logger.info("%s ...", label)
        r = bench_config(label, CONFIGS[label], base, inputs, reference, args)
        if label == "hf-fp32":
            reference = {"tokens": r["_tokens"], "logits": r["_logits"]}
        tokens[label] = r.pop("_tokens")
        r.pop("_logits")
        ceiling = bandwidth * 1e9 / r["bytes_per_token"]["total"]
        r["ceiling_tokens_per_s"] = round(ceiling, 2)
        r["percent_of_ceiling"] = round(100 * r["decode_tokens_per_s"] / ceiling, 1)
        results[label] = r
        logger.info("%s: %.2f tok/s (%.0f%% of ceiling)", label, r["decode_tokens_per_s"], r["percent_of_ceiling"])
    for label, r in results.items():  # the engine against generate in its own dtype (random weights: bf16 and fp32
        hf = f"hf-{r['dtype']}"  # tokens part within a few steps)
        if r["decoder"] == "static" and r["weights"] in ("fp", "fp32-ort") and hf in tokens:
            same = sum(a == b for a, b in zip(tokens[label], tokens[hf])) / len(tokens[hf])
            r["token_agreement_vs_hf_same_dtype"] = round(same, 4)
    speed = {k: v["decode_tokens_per_s"] for k, v in results.items()}
    targets = {}
    for dtype in ("fp32", "bf16"):  # the fastest engine on this dtype's own weights (either kernel) against generate
        engines = [k for k in (f"engine-{dtype}", f"engine-{dtype}-ort") if k in speed]
        if f"hf-{dtype}" in speed and engines:
            best = max(engines, key=lambda k: speed[k])
            ratio = speed[best] / speed[f"hf-{dtype}"]
            targets[f"engine_{dtype}_vs_hf_{dtype}"] = {"config": best, "ratio": round(ratio, 2), "target": 1.5}
            targets[f"engine_{dtype}_vs_hf_{dtype}"]["met"] = ratio >= 1.5
    if "engine-fp32-ort" in speed and "hf-fp32-ort" in speed:  # the engine's own share, the kernel being equal
        ratio = speed["engine-fp32-ort"] / speed["hf-fp32-ort"]
        targets["engine_vs_hf_both_fp32_ort"] = {"ratio": round(ratio, 2)}
    weight_only = {k: v for k, v in speed.items() if k.startswith(("engine-int8", "engine-int4"))}
    if weight_only and "hf-fp32" in speed:
        best = max(weight_only, key=lambda k: weight_only[k])
        ratio = weight_only[best] / speed["hf-fp32"]
        targets["fastest_weight_only_vs_hf_fp32"] = {"config": best, "ratio": round(ratio, 2), "target": 4.0}
        targets["fastest_weight_only_vs_hf_fp32"]["met"] = ratio >= 4.0
    result = {
        "model": f"Qwen2.5-VL-{args.arch} ({args.layers} decoder layers, random weights)",
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "batch": 1,
        "repeats": args.repeats,
        "device": device_name(args.device),
        "copy_bandwidth_gb_s": round(bandwidth, 2),
        "onnxruntime_shared_pool": threads_shared(),
        "configs": results,
        "targets": targets,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    if args.compile_processes:
        result["compile_time_s"] = compile_in_two_processes(args)
    return result


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the architecture: speeds differ by CPU family."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU ({cpu_name()}, {torch.get_num_threads()} threads)"


def plot(entry: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stvgr1_edge.errors import atomic_output

    configs = entry["configs"]
    labels = list(configs)
    speed = [configs[k]["decode_tokens_per_s"] for k in labels]
    ceiling = [configs[k]["ceiling_tokens_per_s"] for k in labels]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(labels) + 1.4))
    ax.barh(labels, ceiling, color="0.85", label="bandwidth ceiling")
    ax.barh(labels, speed, color=["tab:gray" if k.startswith("hf") else "tab:blue" for k in labels], label="measured")
    for i, k in enumerate(labels):
        ax.text(
            speed[i], i, f" {speed[i]:.1f} tok/s ({configs[k]['percent_of_ceiling']:.0f}%)", va="center", fontsize=8
        )
    ax.invert_yaxis()
    ax.set_xlabel("decode tokens/s (batch 1)")
    ax.set_title(
        f"{entry['model']}, {entry['prompt_tokens']}-token prompt, {entry['new_tokens']} new tokens\n"
        f"{entry['device']}, copy bandwidth {entry['copy_bandwidth_gb_s']:.1f} GB/s",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.compile_probe is not None:
        compile_probe(args)
        return
    from stvgr1_edge.errors import write_json_atomic

    entry = run(args)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    key = f"{args.arch}-{args.layers}l-{args.device.split(':')[0]}-p{args.prompt_tokens}-n{args.new_tokens}"
    key += "-quick" if args.quick else ""
    results[key] = entry
    write_json_atomic(args.out, results, indent=2)
    plot(entry, args.out.with_suffix(".png"))
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
