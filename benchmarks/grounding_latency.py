"""Grounding latency: vision encoder ms, prefill ms, decode tokens/s and end-to-end ms of one query.

    python benchmarks/grounding_latency.py --arch tiny                       # CPU, seconds
    python benchmarks/grounding_latency.py --arch 7b --dtype bf16            # GPU, random 7B weights
    python benchmarks/grounding_latency.py --arch 3b --quant nf4             # GPU + bitsandbytes
    python benchmarks/grounding_latency.py --model DIR                       # a real checkpoint

``--arch 3b|7b`` builds random weights of the published Qwen2.5-VL-3B/7B-Instruct architectures (no
download); latency does not depend on the weight values, except that decoding is forced to exactly
``--new-tokens`` tokens (``min_new_tokens``) so every configuration decodes the same length. The clip is
``--frames`` random frames already at the resized ``--size`` (default: the §4 example, a 20 s 16:9 clip =
40 frames at 196x364 = 1,820 visual tokens), with the STVG-R1 prompt.

Results are merged into ``benchmarks/results/grounding_latency.json`` under a key naming the configuration
and device (other entries are kept), and all entries are plotted to ``grounding_latency.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUERY = "the man in the red shirt turns around and walks to the door"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--arch", choices=["tiny", "3b", "7b"], default="tiny", help="random-weight architecture (ignored with --model)"
    )
    parser.add_argument("--model", default=None, help="hub id or folder of a real checkpoint instead of --arch")
    parser.add_argument("--frames", type=int, default=40, help="sampled frames in the clip (even)")
    parser.add_argument("--size", default="196x364", help="resized frame HEIGHTxWIDTH (multiples of 28)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    parser.add_argument("--quant", choices=["none", "nf4"], default="none")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per query (forced)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--attn", default="sdpa", help="attention implementation")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (medians are reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "grounding_latency.json")
    parser.add_argument("--label", default=None, help="result key (default: derived from the configuration)")
    return parser.parse_args(argv)


def build_grounder(args: argparse.Namespace):
    import torch

    from stvgr1_edge.errors import BadInputError
    from stvgr1_edge.grounding import Grounder, GrounderConfig, resolve_device, resolve_dtype
    from stvgr1_edge.tiny import build_processor, build_tiny_qwen2_5_vl, build_tokenizer, real_qwen2_5_vl_config

    config = GrounderConfig(
        model=args.model or f"random-{args.arch}",
        device=args.device,
        dtype=args.dtype,
        quant=args.quant,
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        attn_implementation=args.attn,
    )
    if args.model:
        return Grounder.from_pretrained(config)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.quant == "nf4" and not device.startswith("cuda"):
        raise BadInputError("--quant nf4 needs a CUDA GPU (bitsandbytes 4-bit): use --quant none on CPU")
    if args.arch == "tiny":
        model, processor = build_tiny_qwen2_5_vl(seed=0)
    else:
        from transformers import Qwen2_5_VLForConditionalGeneration

        tokenizer = build_tokenizer()
        processor = build_processor(tokenizer)
        model_config = real_qwen2_5_vl_config(args.arch)
        # Our small tokenizer numbers the special tokens 0..13; point the model at those ids.
        for field, token in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ):
            setattr(model_config, field, tokenizer.convert_tokens_to_ids(token))
        model_config._attn_implementation = args.attn
        torch.manual_seed(0)
        with torch.device(device if args.quant == "none" else "cpu"):
            model = Qwen2_5_VLForConditionalGeneration._from_config(model_config, dtype=dtype).eval()
    if args.quant == "nf4":  # quantize through the real loading path: save, then load with bitsandbytes
        with tempfile.TemporaryDirectory(prefix="stvg_bench_") as folder:
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
            del model
            return Grounder.from_pretrained(GrounderConfig(**{**config.__dict__, "model": folder}))
    return Grounder(model.to(device=device, dtype=dtype), processor, config)


def synthetic_clip(num_frames: int, height: int, width: int):
    from stvgr1_edge.clip import PromptedClip

    if height % 28 or width % 28:
        sys.exit(f"--size {height}x{width}: both sides must be multiples of 28")
    frames = np.random.default_rng(0).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    stride = 15  # a 30 fps video sampled at 2 fps
    return PromptedClip(
        frames=frames,
        frame_indices=tuple(range(0, stride * num_frames, stride)),
        sample_fps=2.0,
        resized_height=height,
        resized_width=width,
        video_fps=30.0,
        num_video_frames=stride * num_frames,
    )


def device_name(grounder) -> str:
    import torch

    if grounder.device.type == "cuda":
        return torch.cuda.get_device_name(grounder.device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run(args: argparse.Namespace) -> dict:
    import torch
    import transformers

    from stvgr1_edge.prompt import grounding_prompt

    height, width = (int(v) for v in args.size.lower().split("x"))
    grounder = build_grounder(args)
    clip = synthetic_clip(args.frames, height, width)
    prompt = grounding_prompt(QUERY)
    if grounder.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(grounder.device)
    for _ in range(args.warmup):
        grounder.ground(clip, prompt)
    outputs = [grounder.ground(clip, prompt) for _ in range(args.repeats)]

    def median(key: str) -> float:
        return statistics.median(o.timings_ms[key] for o in outputs)

    first = outputs[0]
    result = {
        "arch": "checkpoint" if args.model else args.arch,
        "model": args.model,
        "device": device_name(grounder),
        "dtype": str(next(grounder.model.model.visual.parameters()).dtype).removeprefix("torch."),
        "quant": args.quant,
        "attn": args.attn,
        "frames": args.frames,
        "size": [height, width],
        "visual_tokens": first.num_visual_tokens,
        "prompt_tokens": first.num_prompt_tokens,
        "new_tokens": first.num_generated_tokens,
        "repeats": args.repeats,
        "preprocess_ms": median("preprocess"),
        "vision_ms": median("vision"),
        "prefill_ms": median("prefill"),
        "decode_ms": median("decode"),
        "decode_tokens_per_s": statistics.median(o.tokens_per_s for o in outputs),
        "end_to_end_ms": median("total"),
        "runs_ms": [o.timings_ms for o in outputs],
        "parameters": sum(p.numel() for p in grounder.model.parameters()),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    if grounder.device.type == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(grounder.device) / 2**30
    return result


def default_label(args: argparse.Namespace, result: dict) -> str:
    where = "cuda" if "CPU" not in result["device"] else "cpu"
    name = Path(args.model).name if args.model else args.arch
    return f"{name}-{result['dtype']}-{args.quant}-{where}-{args.frames}f-{args.size}"


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stvgr1_edge.errors import atomic_output

    labels = sorted(results)
    stages = ("preprocess_ms", "vision_ms", "prefill_ms", "decode_ms")
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(labels) + 2.2))
    left = np.zeros(len(labels))
    for stage in stages:
        values = np.array([results[k][stage] for k in labels])
        ax.barh(labels, values, left=left, label=stage.removesuffix("_ms"))
        left += values
    for i, key in enumerate(labels):
        ax.text(
            left[i],
            i,
            f"  {results[key]['end_to_end_ms']:.0f} ms, {results[key]['decode_tokens_per_s']:.1f} tok/s",
            va="center",
            fontsize=8,
        )
    ax.set_xlabel("milliseconds per query (median)")
    ax.set_title("STVG-R1 grounding latency (one query, fresh clip)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=len(stages), fontsize=8, frameon=False)
    ax.set_xlim(0, left.max() * 1.45)
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main(argv=None) -> None:
    from stvgr1_edge.errors import StvgError, write_json_atomic

    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    try:
        result = run(args)
    except StvgError as exc:
        sys.exit(f"error: {exc}")
    label = args.label or default_label(args, result)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[label] = result
    write_json_atomic(args.out, results, indent=2)
    plot(results, args.out.with_suffix(".png"))
    summary = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items() if k != "runs_ms"}
    print(json.dumps({label: summary}, indent=2))


if __name__ == "__main__":
    main()
