"""The video path's speed before and after a change: per-stage wall time of `stvg-edge run` on one long 720p clip,
side by side, with the real-time factor (wall / video duration).

Each input is the JSON that ``benchmarks/pipeline_memory.py --budgets 1024 --out FILE`` writes (one run of the whole
pipeline in a fresh process: classical tracker on every 3rd frame, the packaged nano model), run at the two commits
on the same machine, one after the other. The clip is the same in both (the script draws it from a fixed seed).

    git worktree add /tmp/before <commit>
    (cd /tmp/before && python benchmarks/pipeline_memory.py --budgets 1024 --out /tmp/before.json)
    python benchmarks/pipeline_memory.py --budgets 1024 --out /tmp/after.json
    python benchmarks/pipeline_speed.py /tmp/before.json /tmp/after.json --labels <commit> <commit>

Writes ``--out`` (default ``benchmarks/results/pipeline_speed.json``) and a stacked bar per column (``.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stvgr1_edge.errors import write_json_atomic  # noqa: E402

STAGES = ("decode", "track", "markers", "resize", "vision", "prefill", "decode_tokens")


def tracked_frames(video: dict, tracker: str) -> int:
    """Frames the tracker steps on: every k-th (``tracker`` reads "classical, every k") and the sampled ones."""
    from stvgr1_edge.sampling import plan_sampling

    every = int(tracker.rsplit("every", 1)[1])
    sampled = plan_sampling(video["frames"], video["fps"], video["height"], video["width"]).indices
    return len(set(range(0, video["frames"], every)) | set(sampled))


def column(run: dict, seconds: float, num_tracked: int) -> dict:
    """Per-stage seconds of one run (``markers``/``resize`` from ``render`` when a run has only that), and the
    per-frame costs of tracking (per tracked frame) and marker drawing (per sampled frame)."""
    t = run["timings_ms"]
    stages = {k: t[k] / 1e3 for k in STAGES if k in t}
    if "markers" not in t and "render" in t:
        stages["render (markers + resize)"] = t["render"] / 1e3
    total = t["total"] / 1e3
    stages["other"] = max(0.0, total - sum(stages.values()))
    return {
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "total_s": round(total, 3),
        "real_time_factor": round(total / seconds, 3),
        "track_ms_per_tracked_frame": round(t["track"] / num_tracked, 2),
        "markers_ms_per_sampled_frame": round(t["markers"] / run["sampled_frames"], 2) if "markers" in t else None,
        "answer_text": run["answer_text"],
        "peak_rss_mb": run.get("peak_rss_mb"),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result["columns"])
    names: list[str] = []
    for col in result["columns"].values():
        names += [k for k in col["stages_s"] if k not in names]
    fig, ax = plt.subplots(figsize=(7, 5))
    bottoms = [0.0] * len(labels)
    for name in names:
        values = [result["columns"][label]["stages_s"].get(name, 0.0) for label in labels]
        ax.bar(labels, values, bottom=bottoms, label=name)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    seconds = result["video"]["seconds"]
    ax.axhline(seconds, color="black", linestyle="--", linewidth=1, label=f"video length ({seconds:.0f} s)")
    for i, label in enumerate(labels):
        col = result["columns"][label]
        ax.text(i, col["total_s"], f"{col['total_s']:.1f} s (×{col['real_time_factor']:.2f})", ha="center", va="bottom")
    ax.set_ylabel("wall time (s)")
    v = result["video"]
    ax.set_title(f"stvg-edge run, {v['width']}x{v['height']} {v['fps']:.0f} fps, {seconds:.0f} s; {result['tracker']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="pipeline_memory.py result JSONs, oldest first")
    parser.add_argument("--labels", nargs="+", required=True, help="one label per run (e.g. the commits)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pipeline_speed.json")
    args = parser.parse_args(argv)
    if len(args.labels) != len(args.runs):
        parser.error("give one --labels entry per run")
    loaded = [json.loads(p.read_text()) for p in args.runs]
    video = loaded[0]["video"]
    if any(d["video"] != video for d in loaded):
        parser.error("the runs are not on the same clip")
    num_tracked = tracked_frames(video, loaded[0]["tracker"])
    columns = {label: column(d["runs"][0], video["seconds"], num_tracked) for label, d in zip(args.labels, loaded)}
    result = {
        "benchmark": "pipeline_speed",
        "video": video,
        "tracker": loaded[0]["tracker"],
        "model": loaded[0]["model"],
        "tracked_frames": num_tracked,
        "machine": loaded[-1]["machine"],
        "same_answer": len({c["answer_text"] for c in columns.values()}) == 1,
        "columns": columns,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result, indent=2)
    plot(result, args.out.with_suffix(".png"))
    for label, col in columns.items():
        print(f"{label}: {col['total_s']:.1f} s (real-time factor {col['real_time_factor']:.2f}) {col['stages_s']}")
    print(f"same answer: {result['same_answer']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
