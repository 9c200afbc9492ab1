"""Export latency: every exported stage vs its PyTorch original, measured in the same run, reported as ratios.

Stages:

- vision encoder: PyTorch ``get_video_features`` (model dtype) vs ONNX fp32 and fp16 (onnxruntime, best provider);
- LLM decode: ms per generated token, PyTorch (bf16 on CUDA, fp32 on CPU) vs weight-only int4
  (:mod:`stvgr1_edge_export.int4`);
- tracker: ms per propagated frame, PyTorch ``Sam2Tracker`` vs ``OnnxSam2Tracker`` (same frames, same detector).

``--arch tiny`` uses the tiny random models (CPU-friendly); ``3b``/``7b`` build random weights of the real
Qwen2.5-VL architecture (:func:`stvgr1_edge.tiny.real_qwen2_5_vl_config`) and the real SAM2.1-tiny tracker
architecture, meant for a GPU. Nothing is downloaded.

    python benchmarks/export_latency.py --arch tiny
    python benchmarks/export_latency.py --arch 7b --device cuda --grid 2 36 64

Writes ``benchmarks/results/export_latency.json`` (merged under ``<arch>-<device>``) and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stvgr1_edge.errors import write_json_atomic  # noqa: E402

logger = logging.getLogger("export_latency")
RESULTS = ROOT / "benchmarks" / "results" / "export_latency.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=("tiny", "3b", "7b"), default="tiny")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--grid",
        type=int,
        nargs=3,
        default=None,
        metavar=("T", "H", "W"),
        help="video patch grid for the vision stage (default: 2 16 20 tiny, 2 36 64 real)",
    )
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens generated per decode measurement")
    p.add_argument("--tracker-frames", type=int, default=6, help="frames per tracker measurement (first = keyframe)")
    p.add_argument("--objects", type=int, default=2, help="objects tracked")
    p.add_argument("--repeats", type=int, default=5, help="runs of each variant, interleaved")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Median milliseconds of each ``fn()``, after one warm-up each, the variants run in turn ``repeats`` times
    (so load from other processes hits them alike)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def build_model(arch: str, device: str):
    import torch

    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl, build_tokenizer, real_qwen2_5_vl_config

    if arch == "tiny":
        model, processor = build_tiny_qwen2_5_vl(seed=0)
        return model.to(device), processor.tokenizer
    from transformers import Qwen2_5_VLForConditionalGeneration

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(real_qwen2_5_vl_config(arch)).to(dtype).eval()
    return model, build_tokenizer()


def bench_vision(model, grid, device: str, repeats: int, workdir: Path) -> dict:
    import torch

    from stvgr1_edge.backends.onnx_tracker import available_providers
    from stvgr1_edge.backends.onnx_vision import OnnxVisionEncoder
    from stvgr1_edge_export.vision_onnx import export_vision_encoder

    cfg = model.model.visual.config
    grid_t = torch.tensor([grid])
    patch_dim = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2
    pixels = torch.randn(int(grid_t.prod()), patch_dim, generator=torch.Generator().manual_seed(0))
    dtype = next(model.parameters()).dtype
    providers = available_providers(device)
    out = {"grid_thw": list(grid), "pytorch_dtype": str(dtype).removeprefix("torch."), "providers": providers}

    def pytorch():
        with torch.inference_mode():
            model.model.get_video_features(pixels.to(device, dtype), grid_t.to(device))

    # PyTorch first, before any onnxruntime session exists: idle onnxruntime threads would otherwise compete
    # with torch's on a small shared CPU and inflate the PyTorch number
    ms = interleaved({"pytorch": pytorch}, repeats, device)
    fns = {}
    for onnx_dtype in ("fp32", "fp16"):
        try:
            path = export_vision_encoder(model, workdir / f"vision_{onnx_dtype}.onnx", dtype=onnx_dtype)
            encoder = OnnxVisionEncoder(path, providers=providers)
            fns[f"onnx_{onnx_dtype}"] = lambda encoder=encoder: encoder.run_numpy(pixels, grid_t)
        except Exception as exc:  # noqa: BLE001 - a benchmark records what failed and goes on
            logger.warning("vision ONNX %s failed: %s", onnx_dtype, exc)
            out[f"onnx_{onnx_dtype}_error"] = str(exc).splitlines()[0][:200]
    ms.update(interleaved(fns, repeats, device))
    for name, value in ms.items():
        out[f"{name}_ms"] = value
        if name != "pytorch":
            out[f"{name}_vs_pytorch"] = value / ms["pytorch"]
    return out


def bench_decode(model, tokenizer, device: str, tokens: int, repeats: int) -> dict:
    import torch

    from stvgr1_edge_export.int4 import quantize_int4_

    ids = tokenizer(["Target ID: 2, Time range: 1.0 to 3.5 seconds. The person walks"], return_tensors="pt")[
        "input_ids"
    ].to(device)
    kwargs = dict(
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id or 0,
    )

    def generate(m):
        def fn():
            with torch.inference_mode():
                m.generate(input_ids=ids, **kwargs)

        return fn

    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if device == "cpu":  # both models at once, measured in turn
        quantized = copy.deepcopy(model)
        names = quantize_int4_(quantized)
        ms = interleaved({"base": generate(model), "int4": generate(quantized)}, repeats, device)
    else:  # GPU: quantize in place (memory), so one after the other
        ms = interleaved({"base": generate(model)}, repeats, device)
        names = quantize_int4_(model)
        ms.update(interleaved({"int4": generate(model)}, repeats, device))
    base_ms, int4_ms = ms["base"] / tokens, ms["int4"] / tokens
    return {
        "tokens": tokens,
        f"pytorch_{dtype}_ms_per_token": base_ms,
        "int4_ms_per_token": int4_ms,
        "int4_vs_pytorch": int4_ms / base_ms,
        "int4_linears": len(names),
    }


def bench_tracker(arch: str, device: str, frames: int, objects: int, repeats: int, workdir: Path) -> dict:
    import torch

    from benchmarks.tracker_latency import render_frames, square_boxes, time_tracker
    from stvgr1_edge.backends.onnx_tracker import OnnxSam2Tracker, available_providers
    from stvgr1_edge.tracking.base import Detections, Detector
    from stvgr1_edge.tracking.sam2 import Sam2Tracker, Sam2TrackerConfig
    from stvgr1_edge.tracking.tiny_configs import build_video_model
    from stvgr1_edge_export.tracker_onnx import export_tracker_folder

    height, width = (96, 128) if arch == "tiny" else (480, 640)
    model, processor = build_video_model("sam2", real_size=arch != "tiny")
    head = model.mask_decoder.pred_obj_score_head
    with torch.no_grad():  # objects always present: every frame propagates all of them (random weights)
        last = head.proj_out if hasattr(head, "proj_out") else head.layers[-1]
        last.weight.zero_()
        last.bias.fill_(20.0)
    source = workdir / "sam2"
    model.save_pretrained(source)
    processor.save_pretrained(source)
    export_tracker_folder(str(source), workdir / "sam2_onnx", family="sam2")
    images = render_frames(objects, frames, height, width)
    boxes = square_boxes(objects, height, width)

    class Boxes(Detector):
        def __call__(self, image):
            return Detections(boxes, np.full(len(boxes), 0.9))

    config = Sam2TrackerConfig(keyframe_interval=10**6)

    def median_ms(tracker) -> float:  # one warm-up clip, then ``repeats`` clips; frame 0 (the keyframe) left out
        time_tracker(tracker, images, device, skip=1)
        return statistics.median(t for _ in range(repeats) for t in time_tracker(tracker, images, device, skip=1)[0])

    # PyTorch first (see bench_vision), then the ONNX tracker
    torch_ms = median_ms(Sam2Tracker(str(source), Boxes(), config, device=device, family="sam2"))
    onnx_ms = median_ms(
        OnnxSam2Tracker(workdir / "sam2_onnx", Boxes(), config, device=device, providers=available_providers(device))
    )
    return {
        "frame_size": [height, width],
        "objects": objects,
        "frames": frames,
        "pytorch_ms_per_frame": torch_ms,
        "onnx_ms_per_frame": onnx_ms,
        "onnx_vs_pytorch": onnx_ms / torch_ms,
    }


def run(args: argparse.Namespace) -> dict:
    import onnxruntime
    import torch
    import transformers

    grid = tuple(args.grid) if args.grid else ((2, 16, 20) if args.arch == "tiny" else (2, 36, 64))
    result: dict = {
        "arch": args.arch,
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model, tokenizer = build_model(args.arch, args.device)
        result["vision"] = bench_vision(model, grid, args.device, args.repeats, workdir)
        result["decode"] = bench_decode(model, tokenizer, args.device, args.decode_tokens, args.repeats)
        del model
        result["tracker"] = bench_tracker(
            args.arch, args.device, args.tracker_frames, args.objects, args.repeats, workdir
        )
    return result


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stvgr1_edge.errors import atomic_output

    rows = []
    for label, r in sorted(results.items()):
        v, d, t = r["vision"], r["decode"], r["tracker"]
        for key in ("onnx_fp32_vs_pytorch", "onnx_fp16_vs_pytorch"):
            if key in v:
                rows.append((f"{label}\nvision {key.split('_')[1]}", v[key]))
        rows.append((f"{label}\nLLM decode int4", d["int4_vs_pytorch"]))
        rows.append((f"{label}\ntracker onnx", t["onnx_vs_pytorch"]))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="tab:blue")
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.set_xlabel("latency ratio: exported / PyTorch (lower is faster)")
    ax.invert_yaxis()
    for i, (_, value) in enumerate(rows):
        ax.text(value, i, f" {value:.2f}x", va="center", fontsize=8)
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    result = run(args)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[f"{args.arch}-{args.device}"] = result
    write_json_atomic(args.out, results, indent=2)
    plot(results, args.out.with_suffix(".png"))
    logger.info("wrote %s and %s", args.out, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
