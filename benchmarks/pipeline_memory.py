"""Peak memory of `stvg-edge run` on a long high-resolution video: sampled frames in memory vs waiting on disk.

The markers need the final tracks, so the pipeline holds the sampled frames (2 fps, up to 768) at native
resolution until tracking ends. ``PipelineConfig.frame_memory_mb`` bounds that: past the budget the frames wait
in a temporary folder. This script writes one video (``--seconds`` of ``--width x --height`` at ``--fps``,
coloured squares moving over a textured floor), then runs the whole pipeline (classical tracker, the packaged
nano model) once per budget, each in a fresh process, and records the process's peak resident memory
(``ru_maxrss``), the wall time and the answer (which must not depend on the budget).

    python benchmarks/pipeline_memory.py                                     # 1280x720, 40 s, 30 fps
    python benchmarks/pipeline_memory.py --width 1920 --height 1080 --budgets none 1024 0

Writes ``benchmarks/results/pipeline_memory.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stvgr1_edge.errors import write_json_atomic  # noqa: E402

QUERY = "the red square moves to the right"


def write_video(path: Path, width: int, height: int, fps: float, seconds: float, seed: int = 0) -> int:
    """Squares bouncing over a textured floor; returns the number of frames written."""
    from stvgr1_edge.video import VideoWriter

    rng = np.random.default_rng(seed)
    floor = (rng.random((height // 8, width // 8, 3)) * 60 + 90).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    colours = np.array([[220, 40, 40], [40, 200, 60], [40, 80, 220], [230, 200, 40]], np.uint8)
    side = max(8, min(width, height) // 8)
    pos = rng.random((len(colours), 2)) * [width - side, height - side]
    vel = (rng.random((len(colours), 2)) - 0.5) * [width, height] * 0.3 / fps
    n = int(round(seconds * fps))
    with VideoWriter(path, fps, width, height, crf=28, preset="ultrafast") as writer:
        for _ in range(n):
            image = floor.copy()
            for k, (x, y) in enumerate(pos.astype(int)):
                image[y : y + side, x : x + side] = colours[k]
            writer.write(image)
            pos += vel
            for axis, limit in ((0, width - side), (1, height - side)):
                out = (pos[:, axis] < 0) | (pos[:, axis] > limit)
                vel[out, axis] *= -1
                pos[:, axis] = np.clip(pos[:, axis], 0, limit)
    return n


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_once(video: str, budget: float | None, every: int, max_new_tokens: int = 64) -> dict:
    """One pipeline run in this process (called in a child process by :func:`main`): peak resident memory overall
    (``ru_maxrss``) and per pipeline stage (sampled every 10 ms)."""
    import resource
    import threading

    from stvgr1_edge.grounding import Grounder, GrounderConfig
    from stvgr1_edge.memory import return_large_buffers_to_os
    from stvgr1_edge.pipeline import GroundingPipeline, PipelineConfig
    from stvgr1_edge.tracking.factory import make_tracker

    return_large_buffers_to_os()  # as the CLI does

    grounder = Grounder.from_pretrained(GrounderConfig(model="nano", max_new_tokens=max_new_tokens))
    tracker = make_tracker("classical", every=every)
    stage_peaks = {"load": _rss_mb()}
    current = ["load"]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            stage_peaks[current[0]] = max(stage_peaks.get(current[0], 0.0), _rss_mb())

    def on_stage(name: str) -> None:
        current[0] = name

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = GroundingPipeline(tracker, grounder, PipelineConfig(frame_memory_mb=budget)).run(
        video, [QUERY], on_stage=on_stage
    )
    done.set()
    sampler.join()
    q = result.queries[0]
    return {
        "frame_memory_mb": budget,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_mb_by_stage": {k: round(v, 1) for k, v in stage_peaks.items()},
        "wall_s": time.perf_counter() - start,
        "sampled_frames": result.sampling.num_frames,
        "answer_text": q.answer.raw,
        "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()},
    }


def _plot(runs: list[dict], native_mb: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["in memory" if r["frame_memory_mb"] is None else f"budget {r['frame_memory_mb']:g} MB" for r in runs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, [r["peak_rss_mb"] for r in runs], color="tab:blue")
    ax.set_ylabel("peak RSS (MB)")
    ax.set_title(f"stvg-edge run: sampled frames at native size = {native_mb:.0f} MB")
    for i, r in enumerate(runs):
        ax.text(
            i, r["peak_rss_mb"], f"{r['peak_rss_mb']:.0f} MB\n{r['wall_s']:.0f} s", ha="center", va="bottom", fontsize=8
        )
    ax.set_ylim(0, max(r["peak_rss_mb"] for r in runs) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--every", type=int, default=3, help="track every k-th frame (the sampled ones always)")
    parser.add_argument(
        "--budgets",
        nargs="+",
        default=["none", "0"],
        help="frame_memory_mb values to compare ('none': always in memory)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "pipeline_memory.json",
        help="Result JSON; the plot is written beside it (same name, .png).",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, help="answer length cap (the video path is timed, not the answer)"
    )
    parser.add_argument("--child", nargs=4, metavar=("VIDEO", "BUDGET", "EVERY", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        video, budget, every, tokens = args.child
        print(json.dumps(run_once(video, None if budget == "none" else float(budget), int(every), int(tokens))))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "long.mp4"
        t0 = time.perf_counter()
        num_frames = write_video(video, args.width, args.height, args.fps, args.seconds)
        print(f"wrote {num_frames} frames in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        runs = []
        for budget in args.budgets:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(video), budget, str(args.every), str(args.max_new_tokens)],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), file=sys.stderr)
    native_mb = runs[0]["sampled_frames"] * args.width * args.height * 3 / 2**20
    result = {
        "benchmark": "pipeline_memory",
        "video": {
            "width": args.width,
            "height": args.height,
            "fps": args.fps,
            "seconds": args.seconds,
            "frames": num_frames,
        },
        "query": QUERY,
        "tracker": f"classical, every {args.every}",
        "model": "nano",
        "max_new_tokens": args.max_new_tokens,
        "sampled_frames_native_mb": native_mb,
        "same_answer": len({r["answer_text"] for r in runs}) == 1,
        "machine": platform.platform(),
        "runs": runs,
        "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result, indent=2)
    _plot(runs, native_mb, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
