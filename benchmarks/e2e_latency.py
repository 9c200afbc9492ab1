"""End-to-end latency of `stvg-edge run`: the full-precision model against the optimized bundle, stage by stage.

One clip, one query, the same tracker, up to three columns measured in one run (``--columns``):

* **full**: the checkpoint as saved (fp32 on CPU, bf16 on CUDA), its PyTorch vision tower and transformers'
  ``generate`` — what a user of the reference code runs;
* **optimized**: ``stvg-edge export --llm int4 --vision-dtype V`` (ONNX vision encoder: int8 on a CPU, whose
  integer units run it twice as fast as fp32; TensorRT where installed; int4 weight-only decoder layers), run on the
  static engine (``--engine static``, compiled) with the output projection in ``--lm-head`` format (int4: the head
  is half of what a 3B-wide decode step reads) and bf16 around the int4 layers (``--dtype bf16``, as the int4
  kernels compute). The nano model keeps its weights (``--llm none``, fp head): its 4.7 M parameters make decoding
  overhead-bound, so quantizing it (or its vision graph) would only change its answers, and the static engine's
  greedy tokens are ``generate``'s;
* **quantized**: no export: the checkpoint with its language model quantized at load (``--weights int4 --lm-head
  int4``, searched rounding, as the bundle's) and bf16 compute (``--dtype bf16``: the PyTorch vision tower and the
  prefill run on bf16 matrix units, which an fp32 ONNX graph cannot use on a CPU), on the static engine. The nano
  model keeps its weights and dtype here too.

Each column runs in a fresh process per clip length (so peak RSS is its own); the clip is answered ``--runs`` times
(default 2) and the last run is reported, so neither column pays one-time costs (the engine's compile, first-call
allocations); with ``--runs 1`` the optimized column's decode includes loading its compiled step from the on-disk
cache (or compiling it, the first time a prompt length is seen).
Reported per stage (seconds): decode, track, markers, resize, vision, prefill, decode_tokens, other, total; the
peak RSS; the answers; the generated tokens' agreement (position by position, against the full column); the
bundle's own int4 first-logits cosine (from its manifest: a fixed text prompt, full vs int4).

Architectures: ``nano`` (the packaged model), ``3b-truncated`` (Qwen2.5-VL-3B widths and its 151,936-token head,
``--layers`` decoder and vision layers, random weights); ``3b`` / ``7b`` (full depth, random weights: for GPUs).
Random weights do not stop at an EOS: their answers run to ``--max-new-tokens``, in both columns alike.

    python benchmarks/e2e_latency.py                                   # nano + 3b-truncated, 10/20/40/80 s, CPU
    python benchmarks/e2e_latency.py --arch 7b --seconds 20 --device cuda

Writes ``--out`` (default ``benchmarks/results/e2e_latency.json``, merged by architecture and device) and a
stacked-bar plot beside it (``.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_decode import cpu_name  # noqa: E402
from pipeline_memory import QUERY, write_video  # noqa: E402

from stvgr1_edge.errors import write_json_atomic  # noqa: E402

logger = logging.getLogger("e2e_latency")
STAGES = ("decode", "track", "markers", "resize", "vision", "prefill", "decode_tokens")
COLUMNS = ("full", "optimized", "quantized")
KEPT = ("peak_rss_mb", "load_s", "first_run_s", "answer_text", "config")
"""What a column's child reports that goes into the result as is."""


# ---------------------------------------------------------------------------------------------- models
def build_model_folder(arch: str, layers: int, folder: Path, device: str = "cpu") -> str:
    """A checkpoint folder (``save_pretrained``) for ``arch``, or "nano" for the packaged model."""
    if arch == "nano":
        return "nano"
    if (folder / "config.json").exists():
        return str(folder)
    import torch

    from stvgr1_edge.tiny import build_truncated_qwen2_5_vl

    if arch == "3b-truncated":
        model, processor = build_truncated_qwen2_5_vl("3b", layers=layers, vision_depth=layers)
    else:  # full depth, random weights, bf16 as the hub's checkpoints; drawn on the device (minutes on a CPU)
        from stvgr1_edge.tiny import real_qwen2_5_vl_config

        depth = real_qwen2_5_vl_config(arch)
        with torch.device(device):
            model, processor = build_truncated_qwen2_5_vl(
                arch,
                layers=depth.text_config.num_hidden_layers,
                vision_depth=depth.vision_config.depth,
                dtype=torch.bfloat16,
            )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def export_bundle_folder(model: str, out: Path, device: str, llm: str, vision_dtype: str) -> dict:
    """``stvg-edge export --model MODEL --out OUT --llm LLM --vision-dtype V`` (TensorRT vision where it is
    installed)."""
    from stvgr1_edge.model_source import packaged_model_dir

    source = str(packaged_model_dir()) if model == "nano" else model
    command = [sys.executable, "-m", "stvgr1_edge", "export", "--model", source, "--out", str(out), "--llm", llm]
    command += ["--vision-dtype", vision_dtype]
    if device.startswith("cuda"):
        command += ["--device", device]
        try:
            import tensorrt  # noqa: F401

            command += ["--vision", "trt"]
        except ImportError:
            pass
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    manifest = json.loads((out / "manifest.json").read_text())
    return {"command": " ".join(["stvg-edge", *command[3:]]), "wall_s": round(time.perf_counter() - started, 1)} | {
        "int4_logits_cosine": manifest.get("parity", {}).get("int4_logits_cosine"),
        "vision_parity": manifest.get("parity", {}).get("vision"),
        "int4": manifest["grounder"].get("int4"),
    }


# ---------------------------------------------------------------------------------------------- one column
def run_column(spec: dict) -> dict:
    """Child process: build the column's pipeline, answer the clip twice, report the second run."""
    from stvgr1_edge.memory import return_large_buffers_to_os
    from stvgr1_edge.run_config import RunConfig, build_pipeline

    return_large_buffers_to_os()  # as the CLI does with the classical tracker
    if spec["column"] == "full":
        config = RunConfig(
            model=spec["model"], device=spec["device"], max_new_tokens=spec["max_new_tokens"], engine="hf"
        )
    elif spec["column"] == "quantized":
        quantized = spec["llm"] == "int4"
        config = RunConfig(
            model=spec["model"],
            device=spec["device"],
            max_new_tokens=spec["max_new_tokens"],
            engine="static",
            weights="int4" if quantized else "fp",
            lm_head="int4" if quantized else "fp",
            dtype="bf16" if quantized else None,
        )
    else:
        config = RunConfig(
            bundle=spec["bundle"],
            device=spec["device"],
            max_new_tokens=spec["max_new_tokens"],
            engine="static",
            lm_head=spec["lm_head"],
            dtype="bf16" if spec["llm"] == "int4" else None,
        )
    # free decoding in both columns, as the reference decodes: every answer is --max-new-tokens long
    config = RunConfig(**{**config.__dict__, "tracker": "classical", "every": spec["every"], "answer_template": False})
    started = time.perf_counter()
    pipeline = build_pipeline(config)
    load_s = time.perf_counter() - started
    grounder, generated = pipeline.grounder, []
    for name in ("_generate_hf", "_generate_static"):  # keep the token ids (random weights' tokens decode to "")

        def keep_ids(inputs, features, constraint=None, keep_prompt=False, generate=getattr(grounder, name)):
            ids, prefill_s, decode_s, prompt = generate(inputs, features, constraint, keep_prompt)
            generated.append(list(ids))
            return ids, prefill_s, decode_s, prompt

        setattr(grounder, name, keep_ids)
    runs = []
    for _ in range(spec["runs"]):
        started = time.perf_counter()
        result = pipeline.run(spec["video"], [QUERY])
        runs.append((time.perf_counter() - started, result))
    wall_s, result = runs[-1]
    query = result.queries[0]
    return {
        "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()},
        "first_run_s": round(runs[0][0], 2),
        "wall_s": round(wall_s, 3),
        "load_s": round(load_s, 2),
        "peak_rss_mb": peak_rss_mb(),
        "answer_text": query.answer.raw,
        "answer_tokens": generated[-1],
        "config": pipeline.describe()["grounder"],
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ``ru_maxrss``, not inherited from the parent across
    exec, whose own peak holds the model it built)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def measure(spec: dict) -> dict:
    """:func:`run_column` in a fresh process."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        command = [sys.executable, __file__, "--child", json.dumps(spec), "--child-out", out.name]
        subprocess.run(command, check=True)
        return json.loads(Path(out.name).read_text())


def stages_s(run: dict) -> dict[str, float]:
    t = run["timings_ms"]
    stages = {k: t.get(k, 0.0) / 1e3 for k in STAGES}
    stages["other"] = max(0.0, t["total"] / 1e3 - sum(stages.values()))
    return {k: round(v, 3) for k, v in stages.items()}


def agreement(reference: list[int], tokens: list[int]) -> float:
    """Share of the reference's token positions the other answer has the same token at."""
    if not reference:
        return 1.0 if not tokens else 0.0
    return round(sum(a == b for a, b in zip(reference, tokens)) / len(reference), 4)


# ---------------------------------------------------------------------------------------------- plot
def plot(entries: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(entries)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.6), squeeze=False)
    names = [*STAGES, "other"]
    colours = plt.get_cmap("tab10").colors
    for ax, key in zip(axes[0], keys):
        rows = entries[key]["rows"]
        labels, bottoms, x = [], [], []
        columns = [c for c in COLUMNS if c in rows[0]["columns"]]
        for i, row in enumerate(rows):
            for j, column in enumerate(columns):
                labels.append(f"{row['seconds']:g}s\n{column[:5]}")
                x.append(i * (len(columns) + 0.6) + j)
                bottoms.append(0.0)
        for s, name in enumerate(names):
            values = [row["columns"][c]["stages_s"][name] for row in rows for c in columns]
            ax.bar(x, values, bottom=bottoms, color=colours[s % 10], label=name if ax is axes[0][0] else None)
            bottoms = [b + v for b, v in zip(bottoms, values)]
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylabel("wall time (s), second run")
        ax.set_title(key, fontsize=9)
    fig.legend(loc="upper center", ncol=len(names), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", nargs="+", default=["nano", "3b-truncated"], choices=["nano", "3b-truncated", "3b", "7b"]
    )
    parser.add_argument("--seconds", nargs="+", type=float, default=[10, 20, 40, 80])
    parser.add_argument("--layers", type=int, default=4, help="3b-truncated: decoder and vision layers kept")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--every", type=int, default=3, help="track every k-th frame (the sampled ones always)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--runs",
        type=int,
        default=2,
        help="answers per column process; the last is reported (1: the first run, "
        "which for the optimized column includes loading or compiling its decode step)",
    )
    parser.add_argument(
        "--llm", default="auto", choices=["auto", "int4", "none"], help="optimized bundle's LLM (auto: none for nano)"
    )
    parser.add_argument(
        "--lm-head", default="auto", choices=["auto", "fp", "int8", "int4"], help="optimized head (auto: fp for nano)"
    )
    parser.add_argument(
        "--vision-dtype",
        default="auto",
        choices=["auto", "fp32", "fp16", "int8"],
        help="optimized bundle's vision graph (auto: int8 with an int4 LLM on a CPU, else fp32)",
    )
    parser.add_argument("--columns", nargs="+", default=list(COLUMNS), choices=COLUMNS, help="full is always run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="keep models, bundles and clips here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "e2e_latency.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        Path(args.child_out).write_text(json.dumps(run_column(json.loads(args.child))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    with tempfile.TemporaryDirectory(prefix="e2e_latency_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        clips = {}
        for seconds in args.seconds:
            clips[seconds] = work / f"clip_{seconds:g}s_{args.height}p.mp4"
            if not clips[seconds].exists():
                write_video(clips[seconds], args.width, args.height, args.fps, seconds)
        results = json.loads(args.out.read_text()) if args.out.exists() else {}
        for arch in args.arch:
            model = build_model_folder(arch, args.layers, work / f"model_{arch}", device)
            bundle = work / f"bundle_{arch}"
            llm = args.llm if args.llm != "auto" else ("none" if arch == "nano" else "int4")
            lm_head = args.lm_head if args.lm_head != "auto" else ("fp" if arch == "nano" else "int4")
            quantized_cpu = device == "cpu" and llm == "int4"  # the nano model stays as trained (see the module doc)
            vision_dtype = args.vision_dtype if args.vision_dtype != "auto" else ("int8" if quantized_cpu else "fp32")
            export = (
                export_bundle_folder(model, bundle, device, llm, vision_dtype) if "optimized" in args.columns else None
            )
            if export is not None:
                logger.info("%s: exported in %.0f s", arch, export["wall_s"])
            rows = []
            for seconds in args.seconds:
                base = dict(
                    model=model,
                    bundle=str(bundle),
                    device=device,
                    video=str(clips[seconds]),
                    every=args.every,
                    max_new_tokens=args.max_new_tokens,
                    lm_head=lm_head,
                    llm=llm,
                    runs=args.runs,
                )
                columns = ["full", *[c for c in args.columns if c != "full"]]
                runs = {column: measure(base | {"column": column}) for column in columns}
                total = {c: runs[c]["timings_ms"]["total"] / 1e3 for c in columns}
                full = runs["full"]
                row = {"seconds": seconds, "columns": {}}
                for c in columns:
                    row["columns"][c] = {
                        "total_s": round(total[c], 3),
                        "real_time_factor": round(total[c] / seconds, 3),
                        "stages_s": stages_s(runs[c]),
                        "generated_tokens": len(runs[c]["answer_tokens"]),
                        **{k: runs[c][k] for k in ("peak_rss_mb", "load_s", "first_run_s", "answer_text", "config")},
                    }
                    if c != "full":
                        row["columns"][c] |= {
                            "ratio_to_full": round(total[c] / total["full"], 3),
                            "same_answer": full["answer_text"] == runs[c]["answer_text"],
                            "token_agreement": agreement(full["answer_tokens"], runs[c]["answer_tokens"]),
                        }
                        logger.info(
                            "%s %gs: full %.1f s, %s %.1f s (x%.2f), same answer %s, token agreement %.2f",
                            arch,
                            seconds,
                            total["full"],
                            c,
                            total[c],
                            row["columns"][c]["ratio_to_full"],
                            row["columns"][c]["same_answer"],
                            row["columns"][c]["token_agreement"],
                        )
                rows.append(row)
            gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
            results[f"{arch}-{device}"] = {
                "arch": arch,
                "layers": args.layers if arch == "3b-truncated" else None,
                "device": device,
                "gpu": gpu,
                "cpu": cpu_name(),
                "torch_threads": torch.get_num_threads(),
                "clip": {"width": args.width, "height": args.height, "fps": args.fps, "query": QUERY},
                "tracker": f"classical, every {args.every}",
                "max_new_tokens": args.max_new_tokens,
                "runs": args.runs,
                "optimized": f"bundle (ONNX vision {vision_dtype}, LLM {llm}), static engine, lm_head {lm_head}"
                + (", bf16" if llm == "int4" else ""),
                "quantized": "weights int4, lm_head int4, bf16, static engine" if llm == "int4" else "static engine",
                "export": export,
                "rows": rows,
                "versions": {"torch": torch.__version__},
                "machine": platform.platform(),
            }
            write_json_atomic(args.out, results, indent=1)
        plot(results, args.out.with_suffix(".png"))
    ratios = {
        key: [(r["seconds"], {c: v.get("ratio_to_full") for c, v in r["columns"].items()}) for r in e["rows"]]
        for key, e in results.items()
    }
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
