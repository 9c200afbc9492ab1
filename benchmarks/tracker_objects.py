"""SAM2.1 / EdgeTAM propagation cost vs number of objects: batched (``sam2_batched``) vs transformers' per-object loop.

For each model size and N objects, two ``Sam2Tracker``s (``batched_objects`` True / False) share one model and step
through the same rendered frames in lockstep (their order alternates per frame, so machine noise hits both alike):
N squares moving on a textured background, seeded on the first frame by a detector returning exactly those squares
(later keyframes are disabled, so random weights cannot change N). Timed per frame after ``--warmup`` frames:

* ``propagate_ms``: the model call that the two paths implement (frame to image features, memory attention, mask
  decoder and memory encoder for every object), the median over the timed frames;
* ``step_ms``: the whole tracker step (adds preprocessing and the per-object full-resolution masks, boxes, RLE).

Sizes (random weights, nothing downloaded): ``tiny`` (the test configs, 128 px input), ``mid`` (SAM2.1 Hiera-tiny
widths and depths, and EdgeTAM's memory path, at 512 px input: a quarter of the memory tokens), ``real``
(``facebook/sam2.1-hiera-tiny`` shapes at 1024 px; EdgeTAM with RepViT-M1 when timm is installed, else with the
Hiera-tiny image encoder: the image encoder runs once per frame in both paths, so only its constant changes).

    python benchmarks/tracker_objects.py                                   # tiny + mid, CPU (a few minutes)
    python benchmarks/tracker_objects.py --sizes real --device cuda        # on a GPU

Writes ``--out`` (default ``benchmarks/results/tracker_objects.json``) and the plot beside it (same name, ``.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stvgr1_edge.errors import write_json_atomic  # noqa: E402
from stvgr1_edge.tracking.base import Detections, Detector  # noqa: E402
from stvgr1_edge.video import Frame, VideoInfo  # noqa: E402

logger = logging.getLogger("tracker_objects")
PATHS = {"batched": True, "one_by_one": False}


def square_boxes(n: int, height: int, width: int) -> np.ndarray:
    """``n`` non-overlapping boxes on a grid covering the frame."""
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    cw, ch = width / cols, height / rows
    cells = [(c * cw, r * ch) for r in range(rows) for c in range(cols)][:n]
    return np.array([[x + cw * 0.2, y + ch * 0.2, x + cw * 0.6, y + ch * 0.6] for x, y in cells], np.float32)


def render_frames(boxes: np.ndarray, n_frames: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Coloured squares swaying sideways on a textured background."""
    rng = np.random.default_rng(seed)
    background = (rng.random((height, width, 3)) * 80 + 40).astype(np.uint8)
    colours = rng.integers(150, 255, size=(len(boxes), 3))
    frames = []
    for i in range(n_frames):
        img = background.copy()
        for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
            dx = (i * 2) % max(1, int((x2 - x1) * 0.4))
            img[y1:y2, x1 + dx : x2 + dx] = colours[k]
        frames.append(img)
    return frames


class GridDetector(Detector):
    """The rendered squares with exact masks: every one of them enters the model session."""

    def __init__(self, boxes: np.ndarray):
        self.boxes = boxes

    def __call__(self, image: np.ndarray) -> Detections:
        masks = np.zeros((len(self.boxes), *image.shape[:2]), bool)
        for k, (x1, y1, x2, y2) in enumerate(self.boxes.astype(int)):
            masks[k, y1:y2, x1:x2] = True
        return Detections(self.boxes, np.full(len(self.boxes), 0.9, np.float32), ("object",) * len(self.boxes), masks)


def video_config(family: str, size: str):
    """``(config, note)`` of a random-weight model of ``size`` (tiny / mid / real)."""
    from transformers import EdgeTamVideoConfig, Sam2VideoConfig, Sam2VisionConfig

    from stvgr1_edge.tracking.tiny_configs import real_video_config, tiny_video_config

    if size == "tiny":
        return tiny_video_config(family), "tiny test config"
    note = "SAM2.1 Hiera-tiny shapes" if family == "sam2" else "EdgeTAM shapes"
    vision = None  # the family's own image encoder
    if family == "edgetam":
        try:
            import timm  # noqa: F401  (EdgeTAM's RepViT-M1 is a timm model)
        except ImportError:
            vision, note = Sam2VisionConfig(), "EdgeTAM memory path + Hiera-tiny image encoder (no timm)"
    if size == "real":
        if vision is None:
            return real_video_config(family), note
        return EdgeTamVideoConfig(vision_config=vision), note
    if vision is None and family == "edgetam":
        raise SystemExit("--sizes mid builds EdgeTAM with the Hiera image encoder: run it where timm is absent")
    side, feat = 512, 128  # input side and its stride-4 feature side
    vision = vision or Sam2VisionConfig()
    vision.backbone_config.image_size = [side, side]
    vision.backbone_feature_sizes = [[feat, feat], [feat // 2, feat // 2], [feat // 4, feat // 4]]
    kwargs = dict(
        vision_config=vision,
        image_size=side,
        prompt_encoder_config=dict(image_size=side),
        memory_attention_rope_feat_sizes=[feat // 4, feat // 4],
    )
    cls = Sam2VideoConfig if family == "sam2" else EdgeTamVideoConfig
    return cls(**kwargs), f"{note} at {side} px input"


def build_segmenter(family: str, size: str, device: str, dtype_name: str):
    import torch
    from transformers import EdgeTamVideoModel, Sam2VideoModel

    from stvgr1_edge.tracking.sam2 import VideoSegmenter, _fix_edgetam_mask_prompt_scores
    from stvgr1_edge.tracking.tiny_configs import video_processor

    config, note = video_config(family, size)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    torch.manual_seed(0)
    model = (Sam2VideoModel if family == "sam2" else EdgeTamVideoModel)(config).to(device, dtype).eval()
    if family == "edgetam":
        _fix_edgetam_mask_prompt_scores(model)
    head = model.mask_decoder.pred_obj_score_head  # always "present": every object runs every frame
    last = head.proj_out if hasattr(head, "proj_out") else head.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(20.0)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    return VideoSegmenter(model, video_processor(config.image_size), family, device, dtype), note, params_m


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_paths(segmenter, n: int, args, device: str) -> dict[str, dict[str, list[float]]]:
    """Per-frame propagate and step times (ms) of both paths, stepping the same frames in lockstep."""
    from stvgr1_edge.tracking.sam2 import Sam2Tracker, Sam2TrackerConfig

    boxes = square_boxes(n, args.height, args.width)
    total = 1 + args.warmup + args.frames
    frames = render_frames(boxes, total, args.height, args.width)
    info = VideoInfo("<rendered>", args.width, args.height, total, 10.0, total / 10.0, "raw", ())
    trackers, times = {}, {}
    for name, batched in PATHS.items():
        config = Sam2TrackerConfig(keyframe_interval=10**9, retire_after=10**9, batched_objects=batched)
        tracker = Sam2Tracker(segmenter, GridDetector(boxes), config)
        propagate, record = tracker._propagate, {"propagate": [], "step": []}

        def timed_propagate(pixels, t, propagate=propagate, record=record):
            _sync(device)
            t0 = time.perf_counter()
            out = propagate(pixels, t)
            _sync(device)
            record["propagate"].append((time.perf_counter() - t0) * 1000)
            return out

        tracker._propagate = timed_propagate  # type: ignore[method-assign]
        tracker.start(info)
        trackers[name], times[name] = tracker, record
    for i, image in enumerate(frames):
        for name in list(PATHS)[:: 1 if i % 2 else -1]:  # alternate which path goes first
            _sync(device)
            t0 = time.perf_counter()
            trackers[name].step(Frame(i, i / 10.0, image))
            _sync(device)
            times[name]["step"].append((time.perf_counter() - t0) * 1000)
    for name, tracker in trackers.items():
        assert tracker.ids.next_id == n + 1 and len(tracker._session.obj_ids) == n, "not exactly N objects tracked"
        tracker.finish()
        skip = 1 + args.warmup  # the keyframe (its propagate call runs before seeding: an empty session)
        times[name] = {k: v[skip:] for k, v in times[name].items()}
    return times


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["family"], r["size"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (family, size) in zip(axes[0], panels):
        for path_name, style in (("batched", "o-"), ("one_by_one", "s--")):
            series = sorted(
                (r["objects"], r["propagate_ms"])
                for r in rows
                if (r["family"], r["size"], r["path"]) == (family, size, path_name)
            )
            ax.plot([s[0] for s in series], [s[1] for s in series], style, label=path_name.replace("_", "-"))
        ax.set_title(f"{family} {size}", fontsize=9)
        ax.set_xlabel("objects")
        ax.set_ylabel("propagate ms per frame (median)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["sam2", "edgetam"])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid", "real"])
    parser.add_argument("--objects", nargs="+", type=int, default=[1, 5, 10, 20])
    parser.add_argument("--frames", type=int, default=None, help="timed frames per point (default: 8 tiny, 3 else)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed frames after the keyframe (default: fill the memory bank)"
    )
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "tracker_objects.json",
        help="Result JSON; the plot is written beside it (same name, .png).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    rows, models = [], {}
    for size in args.sizes:
        for family in args.families:
            segmenter, note, params_m = build_segmenter(family, size, device, args.dtype)
            config = segmenter.model.config
            frames = args.frames or (8 if size == "tiny" else 3)
            # a full memory bank: num_maskmem - 1 recent memories (pointers keep growing to 15, cheap tokens)
            warmup = args.warmup if args.warmup is not None else config.num_maskmem
            models[f"{family}/{size}"] = dict(note=note, params_m=round(params_m, 2), image_size=config.image_size)
            run = argparse.Namespace(**{**vars(args), "frames": frames, "warmup": warmup})
            for n in args.objects:
                times = time_paths(segmenter, n, run, device)
                for path_name, t in times.items():
                    row = dict(
                        family=family,
                        size=size,
                        path=path_name,
                        objects=n,
                        propagate_ms=round(statistics.median(t["propagate"]), 3),
                        propagate_min_ms=round(min(t["propagate"]), 3),
                        step_ms=round(statistics.median(t["step"]), 3),
                        frames=len(t["step"]),
                        warmup=warmup,
                    )
                    logger.info("%s", row)
                    rows.append(row)
            del segmenter
    scaling = {}
    lo, hi = min(args.objects), max(args.objects)
    for key in sorted({(r["family"], r["size"]) for r in rows}):
        entry = {}
        for stat in ("propagate_ms", "propagate_min_ms"):
            ms = {(r["path"], r["objects"]): r[stat] for r in rows if (r["family"], r["size"]) == key}
            tag = "" if stat == "propagate_ms" else "_min"
            entry |= {f"{p}_ratio_{hi}_to_{lo}{tag}": round(ms[(p, hi)] / ms[(p, lo)], 2) for p in PATHS}
            entry |= {
                f"speedup_at_{n}{tag}": round(ms[("one_by_one", n)] / ms[("batched", n)], 2) for n in args.objects
            }
        scaling["/".join(key)] = entry
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    from stvgr1_edge.tracking.sam2_batched import CPU_BATCH_BYTES

    result = dict(
        benchmark="tracker_objects",
        device=device,
        gpu=gpu,
        cpu=platform.processor() or platform.machine(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        dtype=args.dtype,
        frame_size=[args.height, args.width],
        weights="random (architecture shapes only)",
        cpu_batch_bytes=CPU_BATCH_BYTES if device == "cpu" else None,
        models=models,
        scaling=scaling,
        rows=rows,
        note="propagate_ms: median model call per tracked frame with N objects (image encoder once, memory "
        "attention + mask decoder + memory encoder for all N), propagate_min_ms its fastest frame; step_ms: whole "
        "tracker step (median); ratios and speedups from propagate_ms, *_min from propagate_min_ms",
    )
    write_json_atomic(args.out, result, indent=1)
    where = f"{device} {gpu}" if gpu else f"{device}, {torch.get_num_threads()} threads"
    plot(rows, args.out.with_suffix(".png"), f"SAM2/EdgeTAM propagation vs objects, {where}, {args.dtype}")
    print(json.dumps(scaling, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
