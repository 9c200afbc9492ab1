"""Tracker latency: milliseconds per tracked frame vs number of objects, per backend and dtype.

Backends: ``classical`` (weight-free), ``sam2`` (SAM2.1 Hiera-tiny architecture) and ``edgetam`` (EdgeTAM,
RepViT-M1 via timm), with random weights of the real architecture sizes (no download) or ``--tiny`` configs.
Frames are rendered in memory. For SAM2/EdgeTAM they are ``N`` squares moving on a textured background,
seeded by a detector returning exactly those squares; the first frame is the keyframe (detector seeding,
reported separately as ``keyframe_ms``) and the steady-state number ``ms_per_frame`` is the median over the
following frames, which propagate exactly ``N`` objects (keyframes later are disabled so random weights
cannot change ``N``). The classical tracker gets a synthetic scene (``stvgr1_edge.synth``: textured floor,
furniture, ``N`` shapes moving across it) at the requested size, the footage it is made for; it holds its
first ``background_frames`` frames until it has a background model, so only the frames after that are timed:
each one is detected (background subtraction), split, matched and recorded for real.

    python benchmarks/tracker_latency.py --frames 4 --objects 1 2 --height 240 --width 320     # modest CPU run
    python benchmarks/tracker_latency.py --device cuda                                         # fp32 + bf16 + fp16

Writes ``--out`` (default ``benchmarks/results/tracker_latency.json``) and the plot beside it (same name, ``.png``).
"""

from __future__ import annotations

import argparse
import itertools
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

logger = logging.getLogger("tracker_latency")


def square_boxes(n: int, height: int, width: int) -> np.ndarray:
    """``n`` non-overlapping boxes on a grid covering the frame."""
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    cw, ch = width / cols, height / rows
    return np.array(
        [
            [c * cw + cw * 0.2, r * ch + ch * 0.2, c * cw + cw * 0.6, r * ch + ch * 0.6]
            for r in range(rows)
            for c in range(cols)
        ][:n],
        np.float32,
    )


def render_frames(n_objects: int, n_frames: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    background = (rng.random((height, width, 3)) * 80 + 40).astype(np.uint8)
    boxes = square_boxes(n_objects, height, width)
    colours = rng.integers(150, 255, size=(n_objects, 3))
    frames = []
    for i in range(n_frames):
        img = background.copy()
        for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
            dx = (i * 2) % max(1, int((x2 - x1) * 0.4))
            img[y1:y2, x1 + dx : x2 + dx] = colours[k]
        frames.append(img)
    return frames


def render_scene(n_objects: int, n_frames: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``n_frames`` frames of a synthetic clip with ``n_objects`` moving shapes, rendered at ``width`` x ``height``.

    The classical tracker's cost depends on what it sees (foreground area, merges, colours), so it is timed on
    the scenes it is built for, where it finds one track per object. The squares of :func:`render_frames` sway in
    place: their always-covered middles enter the background model and each square becomes two edge fragments.
    """
    from stvgr1_edge.synth import SynthConfig, generate_clip
    from stvgr1_edge.synth_render import render_frames as render_clip

    fps = 10.0
    config = SynthConfig(
        width=width, height=height, fps=fps, seconds=n_frames / fps, min_objects=n_objects, max_objects=n_objects
    )
    clip = generate_clip(seed, config, key=f"latency{n_objects}")
    return list(itertools.islice(render_clip(clip), n_frames))


class GridDetector(Detector):
    """Returns the ``n`` rendered squares with their masks (the detector's own cost is not measured here).

    Masks make the seeding independent of the random weights: every object enters the session.
    """

    def __init__(self, boxes: np.ndarray):
        self.boxes = boxes

    def __call__(self, image: np.ndarray) -> Detections:
        masks = np.zeros((len(self.boxes), *image.shape[:2]), bool)
        for k, (x1, y1, x2, y2) in enumerate(self.boxes.astype(int)):
            masks[k, y1:y2, x1:x2] = True
        return Detections(self.boxes, np.full(len(self.boxes), 0.9, np.float32), ("object",) * len(self.boxes), masks)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_tracker(tracker, frames: list[np.ndarray], device: str, skip: int) -> tuple[list[float], float, int]:
    """Per-frame step times (ms) after ``skip`` frames, the first frame's time, and how many tracks it found."""
    height, width = frames[0].shape[:2]
    info = VideoInfo(
        "<rendered>",
        width,
        height,
        len(frames),
        10.0,
        len(frames) / 10.0,
        "raw",
        tuple(i / 10.0 for i in range(len(frames))),
    )
    tracker.start(info)
    times = []
    for i, image in enumerate(frames):
        _sync(device)
        t0 = time.perf_counter()
        tracker.step(Frame(i, i / 10.0, image))
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    tracks = tracker.finish()
    return times[skip:], times[0], len(tracks)


def bench_video_model(family: str, dtype_name: str, args, device: str) -> list[dict]:
    import torch

    from stvgr1_edge.tracking.sam2 import (
        Sam2Tracker,
        Sam2TrackerConfig,
        VideoSegmenter,
        _fix_edgetam_mask_prompt_scores,
    )
    from stvgr1_edge.tracking.tiny_configs import build_video_model

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    model, processor = build_video_model(family, real_size=not args.tiny)
    model = model.to(device, dtype).eval()
    if family == "edgetam":
        _fix_edgetam_mask_prompt_scores(model)
    segmenter = VideoSegmenter(model, processor, family, device, dtype)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    rows = []
    for n in args.objects:
        frames = render_frames(n, args.frames + 1 + args.warmup, args.height, args.width)
        config = Sam2TrackerConfig(keyframe_interval=10**9, retire_after=10**9)
        tracker = Sam2Tracker(segmenter, GridDetector(square_boxes(n, args.height, args.width)), config)
        times, first, _ = time_tracker(tracker, frames, device, skip=1 + args.warmup)
        assert tracker.ids.next_id == n + 1, "the keyframe did not seed exactly N objects"
        row = dict(
            backend=family,
            dtype=dtype_name,
            objects=n,
            ms_per_frame=statistics.median(times),
            ms_mean=statistics.fmean(times),
            keyframe_ms=first,
            frames=len(times),
            params_m=round(params_m, 2),
        )
        logger.info("%s", row)
        rows.append(row)
    return rows


def bench_classical(args) -> list[dict]:
    from stvgr1_edge.tracking.classical import ClassicalTracker

    rows = []
    for n in args.objects:
        tracker = ClassicalTracker()
        # The tracker holds its first background_frames tracked frames (costing nothing) until it has a background
        # model, then tracks them all at once: only frames after that are steady-state per-frame work.
        ready = tracker.config.background_frames + 1
        warm = ready if args.classical_warmup is None else args.classical_warmup
        if warm < ready:
            raise SystemExit(
                f"--classical-warmup {warm} would time frames held before the background model exists "
                f"(they cost nothing): use at least {ready}"
            )
        frames = render_scene(n, warm + args.frames, args.height, args.width)
        times, first, found = time_tracker(tracker, frames, "cpu", skip=warm)
        if found == 0:  # nothing tracked: the timing would measure an idle tracker
            raise SystemExit(f"the classical tracker found no track among {n} moving shapes")
        row = dict(
            backend="classical",
            dtype="-",
            objects=n,
            ms_per_frame=statistics.median(times),
            ms_mean=statistics.fmean(times),
            keyframe_ms=None,
            frames=len(times),
            params_m=0.0,
        )
        logger.info("%s", row)
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({(r["backend"], r["dtype"]) for r in rows}):
        series = sorted((r["objects"], r["ms_per_frame"]) for r in rows if (r["backend"], r["dtype"]) == key)
        ax.plot([s[0] for s in series], [s[1] for s in series], marker="o", label=" ".join(k for k in key if k != "-"))
    ax.set_xlabel("objects tracked")
    ax.set_ylabel("ms per frame (median)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["classical", "sam2", "edgetam"])
    parser.add_argument("--objects", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--frames", type=int, default=10, help="timed frames per point (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed propagation frames after the keyframe")
    parser.add_argument(
        "--classical-warmup",
        type=int,
        default=None,
        help="frames not timed for the classical tracker (default: its background window + 1)",
    )
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--dtypes", nargs="+", default=None, help="fp32 bf16 fp16 (default: fp32; +bf16 +fp16 on CUDA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny random configs instead of the real sizes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "tracker_latency.json",
        help="Result JSON; the plot is written beside it (same name, .png).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dtypes = args.dtypes or (["fp32", "bf16", "fp16"] if device.startswith("cuda") else ["fp32"])
    rows: list[dict] = []
    for backend in args.backends:
        if backend == "classical":
            rows += bench_classical(args)
            continue
        for dtype_name in dtypes:
            try:
                rows += bench_video_model(backend, dtype_name, args, device)
            except ImportError as exc:  # e.g. EdgeTAM's RepViT needs timm
                logger.warning("skipping %s %s: %s", backend, dtype_name, exc)
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    result = dict(
        benchmark="tracker_latency",
        device=device,
        gpu=gpu,
        cpu=platform.processor() or platform.machine(),
        torch_threads=torch.get_num_threads(),
        frame_size=[args.height, args.width],
        tiny=args.tiny,
        weights="random (architecture sizes only)",
        rows=rows,
        note="ms_per_frame: median step time while propagating N objects; keyframe_ms: first frame incl. "
        "seeding; classical: after its background warm-up",
    )
    out = args.out
    write_json_atomic(out, result, indent=1)
    where = f"{device} {gpu}" if gpu else device
    title = f"tracker latency, {where}, {args.width}x{args.height}{', tiny' if args.tiny else ''}"
    plot(rows, out.with_suffix(".png"), title)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
