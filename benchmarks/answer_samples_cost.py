"""What ``--answer-samples N`` costs: N answers sampled in one batch, against the one decoded answer, at Qwen2.5-VL-3B
widths.

    python benchmarks/answer_samples_cost.py [--layers 2] [--frames 40] [--size 196x364] [--new-tokens 48]
                                             [--samples 1 4 8 16] [--repeats 2]

A 3B-wide model cut to its first ``--layers`` decoder layers (random weights, the real 151,936-token head: one decode
step reads what a real layer and head read), a clip of random frames at the §4 size of a 20 s 16:9 clip (40 frames at
196x364, 1,820 visual tokens), the STVG-R1 prompt. In one run, medians of ``--repeats``: the grounder's query with its
answer decoded greedily (exactly ``--new-tokens`` tokens: prefill, then decode), then the same query with
``answer_samples=N``: the N samples continue the decoded answer's pass over the prompt (what the grounder does), so
they add N rows of ``--new-tokens`` steps and no prefill. Beside each, the samples drawn with a prompt pass of their
own (:func:`stvgr1_edge.answer_mbr.sample_completions` without one), which is what reusing the pass saves. Beside
them the machine's floor for one decode step: the bytes it reads (decoder layers, head, one embedding row) over the
measured copy bandwidth. A step of N rows reads those weights once, so its time grows far slower than N.

Writes ``benchmarks/results/answer_samples_cost.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_decode import bytes_per_token, copy_bandwidth_gb_s, cpu_name  # noqa: E402
from grounding_latency import QUERY, synthetic_clip  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "answer_samples_cost.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["3b", "7b"], default="3b")
    p.add_argument("--layers", type=int, default=2, help="decoder layers kept")
    p.add_argument("--frames", type=int, default=40, help="sampled frames (even)")
    p.add_argument("--size", default="196x364", help="resized frame HEIGHTxWIDTH (multiples of 28)")
    p.add_argument("--new-tokens", type=int, default=48, help="tokens per answer (the nano model's are ~100)")
    p.add_argument("--samples", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    import torch

    from stvgr1_edge.answer_mbr import sample_completions
    from stvgr1_edge.grounding import Grounder, GrounderConfig
    from stvgr1_edge.prompt import grounding_prompt
    from stvgr1_edge.tiny import build_truncated_qwen2_5_vl

    model, processor = build_truncated_qwen2_5_vl(args.arch, layers=args.layers, vision_depth=2)
    config = GrounderConfig(
        model=f"random-{args.arch}", device="cpu", max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens
    )
    grounder = Grounder(model, processor, config)
    height, width = (int(v) for v in args.size.lower().split("x"))
    clip = synthetic_clip(args.frames, height, width)
    prompt = grounding_prompt(QUERY)
    encoded = grounder.encode_video(clip)
    inputs = grounder.query_inputs(encoded.inputs, prompt)

    def timed_queries(sampling: Grounder, runs: int) -> tuple[list[float], list]:
        """Wall times (ms) and answers of ``runs`` queries (seeded samples: the same draws each time)."""
        times, answers = [], []
        for _ in range(runs):
            start = time.perf_counter()
            answers.append(sampling.ground(clip, prompt, encoded))
            times.append((time.perf_counter() - start) * 1e3)
        return times, answers

    times, greedy = timed_queries(grounder, args.repeats + 1)
    times, greedy = times[1:], greedy[1:]  # the first warms up
    prefill_ms = statistics.median(g.timings_ms["prefill"] for g in greedy)
    decode_ms = statistics.median(g.timings_ms["decode"] for g in greedy)
    decoded_ms = statistics.median(times)  # the query without samples, the same runs as the split
    rows = []
    for n in args.samples:
        sampling = Grounder(model, processor, dataclasses.replace(config, answer_samples=n))
        sampled_ms = statistics.median(timed_queries(sampling, args.repeats)[0])
        own_pass = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            tokens = sample_completions(
                model, inputs, encoded.features, n, 1.0, (), torch.Generator().manual_seed(repeat), args.new_tokens
            )
            own_pass.append((time.perf_counter() - start) * 1e3)
            assert all(len(t) == args.new_tokens for t in tokens)
        sampling_ms = sampled_ms - decoded_ms
        rows.append(
            {
                "samples": n,
                "sampling_ms": round(sampling_ms, 1),
                "step_ms": round(sampling_ms / (args.new_tokens - 1), 2),
                "query_ratio": round(sampled_ms / decoded_ms, 2),
                "own_pass_sampling_ms": round(statistics.median(own_pass), 1),
            }
        )
        print(f"N={n}: {sampling_ms:.0f} ms of samples, query x{rows[-1]['query_ratio']}", flush=True)
    moved = bytes_per_token(model, inputs["input_ids"].shape[1] + args.new_tokens)
    bandwidth = copy_bandwidth_gb_s()
    return {
        "what": "the cost of --answer-samples N against the decoded answer alone, medians of "
        f"{args.repeats}: sampling_ms = the query with N samples (continuing the decoded answer's prompt pass) minus "
        "the query without; step_ms = sampling_ms / (tokens - 1); own_pass_sampling_ms: the N samples with a "
        "prompt pass of their own",
        "command": shlex.join(["python", "benchmarks/answer_samples_cost.py", *sys.argv[1:]]),
        "machine": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "model": f"Qwen2.5-VL-{args.arch} widths, {args.layers} decoder layers, random weights, fp32",
        "visual_tokens": encoded.inputs.num_visual_tokens,
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "new_tokens": args.new_tokens,
        "decoded": {
            "query_ms": round(decoded_ms, 1),
            "prefill_ms": round(prefill_ms, 1),
            "decode_ms": round(decode_ms, 1),
            "step_ms": round(decode_ms / (args.new_tokens - 1), 2),
        },
        "samples": rows,
        "floor": {
            "bytes_per_step": moved["total"],
            "copy_bandwidth_gb_s": round(bandwidth, 1),
            "step_ms": round(moved["total"] / bandwidth / 1e6, 2),
        },
    }


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["samples"] for r in result["samples"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    decoded = result["decoded"]
    base = decoded["prefill_ms"] + decoded["decode_ms"]
    left.bar(["decoded"] + [f"+{n}" for n in ns], [base] + [base] * len(ns), label="decoded answer (prefill + decode)")
    left.bar(
        [f"+{n}" for n in ns], [r["sampling_ms"] for r in result["samples"]], bottom=base, label="N sampled answers"
    )
    left.scatter(
        [f"+{n}" for n in ns],
        [base + r["own_pass_sampling_ms"] for r in result["samples"]],
        marker="_",
        s=400,
        color="black",
        label="samples with a prompt pass of their own",
    )
    left.set_ylabel("ms per query")
    left.set_title("one query, with N sampled answers")
    left.legend(fontsize=8)
    right.plot([1] + ns, [decoded["step_ms"]] + [r["step_ms"] for r in result["samples"]], "o-", label="measured")
    right.plot([1] + ns, [decoded["step_ms"] * n for n in [1] + ns], "--", label="N separate decodes")
    right.axhline(result["floor"]["step_ms"], color="grey", linestyle=":", label="bandwidth floor (weights once)")
    right.set_xlabel("rows per step (1: the decoded answer)")
    right.set_ylabel("ms per decode step")
    right.set_title("a decode step of N rows")
    right.legend(fontsize=8)
    shapes = f"{result['visual_tokens']} visual tokens, {result['new_tokens']} tokens"
    fig.suptitle(f"{result['model']}, {shapes}; {result['machine']}")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
