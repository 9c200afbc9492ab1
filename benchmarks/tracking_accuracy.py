"""Tracking accuracy of the classical (weight-free) tracker on synthetic clips, scored with motmetrics.

Each clip is synthesized from a seed (``stvgr1_edge.synth``), encoded to H.264 like a real video,
tracked by :class:`ClassicalTracker`, and compared with the clip's GT tracks: IDF1, MOTA and ID
switches per clip (motmetrics; a hypothesis box matches a GT box at IoU >= 0.5). The tracker was developed
on seeds 0-999; the ranges 1000-1009, 2000-2019, 3000-3019, 4000-4019, 6000-6019, 7000-7019, 8000-8019,
9000-9019 and 9500-9519 have been looked at while debugging (seen), and each tracker version re-runs them
all; a fresh range never looked at (10000-10019, 11000-11019) is run once per tracker version, at the end,
and not tuned on. Each summary names the commit it ran at.

    python benchmarks/tracking_accuracy.py [--seeds START COUNT] [--out benchmarks/results/tracking_accuracy.json]

The ``--out`` JSON keeps one summary per seed range under ``runs`` (a re-run of a range replaces it and
moves the old one to ``superseded``), so ranges accumulate in one file; the plot beside it (same name,
``.png``) shows every range in ``runs``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stvgr1_edge.errors import write_json_atomic
from stvgr1_edge.masks import box_iou_matrix
from stvgr1_edge.synth import SynthConfig, generate_clip, write_clip_video
from stvgr1_edge.tracking.classical import ClassicalTracker, ClassicalTrackerConfig
from stvgr1_edge.tracks import TrackSet

MATCH_IOU = 0.5
"""A hypothesis box counts as the GT object when their IoU is at least this (the MOTChallenge convention)."""


def _iou_distances(gt_boxes: list, hyp_boxes: list, match_iou: float) -> np.ndarray:
    """motmetrics' distance matrix: 1 - IoU, NaN (no match possible) below ``match_iou``.

    Same as ``mm.distances.iou_matrix(..., max_iou=1 - match_iou)``, which calls ``np.asfarray`` and so
    fails under NumPy 2 in motmetrics 1.4.0.
    """
    iou = box_iou_matrix(
        np.asarray(gt_boxes, np.float64).reshape(-1, 4), np.asarray(hyp_boxes, np.float64).reshape(-1, 4)
    )
    return np.where(iou >= match_iou, 1.0 - iou, np.nan)


def mot_scores(gt: TrackSet, pred: TrackSet, match_iou: float = MATCH_IOU) -> dict:
    """IDF1, MOTA, ID switches and friends of ``pred`` against ``gt``, computed by motmetrics."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for frame in range(gt.num_frames):
        g = gt.objects_at(frame)
        h = pred.objects_at(frame)
        dist = _iou_distances([b for _, b, _ in g], [b for _, b, _ in h], match_iou)
        acc.update([i for i, _, _ in g], [i for i, _, _ in h], dist)
    names = [
        "idf1",
        "mota",
        "motp",
        "num_switches",
        "num_false_positives",
        "num_misses",
        "num_objects",
        "num_unique_objects",
        "mostly_tracked",
        "num_fragmentations",
    ]
    summary = mm.metrics.create().compute(acc, metrics=names, name="clip")
    row = summary.loc["clip"]
    return {
        "idf1": float(row["idf1"]),
        "mota": float(row["mota"]),
        "matched_box_iou": float(1.0 - row["motp"]),  # MOTP here is the mean 1 - IoU of matched pairs
        "id_switches": int(row["num_switches"]),
        "false_positives": int(row["num_false_positives"]),
        "misses": int(row["num_misses"]),
        "gt_boxes": int(row["num_objects"]),
        "gt_objects": int(row["num_unique_objects"]),
        "mostly_tracked": int(row["mostly_tracked"]),
        "fragmentations": int(row["num_fragmentations"]),
        "predicted_ids": len(pred),
    }


def track_synthetic_clip(
    seed: int, workdir: Path, config: SynthConfig = SynthConfig(), tracker_config: ClassicalTrackerConfig | None = None
) -> tuple[TrackSet, TrackSet, float]:
    """Synthesize clip ``seed``, write it as MP4, track it; returns (gt, predicted, tracking seconds)."""
    clip = generate_clip(seed, config, key=f"seed{seed}")
    video = write_clip_video(clip, workdir / f"seed{seed}.mp4")
    tracker = ClassicalTracker(tracker_config or ClassicalTrackerConfig())
    t0 = time.perf_counter()
    pred = tracker.track_video(str(video))
    return clip.gt_tracks, pred, time.perf_counter() - t0


def _plot(per_clip: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = [c["seed"] for c in per_clip]
    x = np.arange(len(seeds))
    if len(seeds) > 40:  # many ranges: name the first seed of each
        seeds = [str(s) if i == 0 or s != seeds[i - 1] + 1 else "" for i, s in enumerate(seeds)]
    else:
        seeds = [str(s) for s in seeds]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(11.0, 0.12 * len(seeds)), 3.8))
    ax1.bar(x - 0.2, [c["idf1"] for c in per_clip], 0.4, label="IDF1")
    ax1.bar(x + 0.2, [c["mota"] for c in per_clip], 0.4, label="MOTA")
    ax1.axhline(0.9, color="k", ls="--", lw=1, label="IDF1 target 0.90")
    ax1.set_xticks(x, seeds, rotation=45)
    ax1.set_ylim(min(0.0, min(c["mota"] for c in per_clip)), 1.05)
    ax1.set_xlabel("clip seed")
    ax1.legend(loc="lower left", fontsize=8)
    ax1.set_title("classical tracker vs synthetic GT (motmetrics)")
    ax2.bar(x, [c["id_switches"] for c in per_clip], color="tab:red")
    ax2.axhline(1, color="k", ls="--", lw=1, label="target <= 1")
    ax2.set_xticks(x, seeds, rotation=45)
    ax2.set_xlabel("clip seed")
    ax2.set_ylabel("ID switches")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _git_commit() -> str | None:
    """The repository's HEAD commit (``-dirty`` if the tracker or this script has uncommitted changes), or None
    outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "stvgr1_edge/tracking",
                "benchmarks/tracking_accuracy.py",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def summarize(per_clip: list[dict]) -> dict:
    """Aggregate per-clip scores of one seed range."""
    cfg = SynthConfig()
    return {
        "tracker": "classical",
        "tracker_config": "ClassicalTrackerConfig() defaults",
        "git_commit": _git_commit(),
        "synth_config": {"width": cfg.width, "height": cfg.height, "fps": cfg.fps, "seconds": cfg.seconds},
        "match_iou": MATCH_IOU,
        "metrics_library": "motmetrics",
        "seeds": [c["seed"] for c in per_clip],
        "mean_idf1": float(np.mean([c["idf1"] for c in per_clip])),
        "min_idf1": float(np.min([c["idf1"] for c in per_clip])),
        "mean_mota": float(np.mean([c["mota"] for c in per_clip])),
        "mean_matched_box_iou": float(np.mean([c["matched_box_iou"] for c in per_clip])),
        "total_id_switches": int(sum(c["id_switches"] for c in per_clip)),
        "max_id_switches_per_clip": int(max(c["id_switches"] for c in per_clip)),
        "target": {"idf1_min": 0.9, "id_switches_max_per_clip": 1},
        "clips_meeting_target": int(sum(c["idf1"] >= 0.9 and c["id_switches"] <= 1 for c in per_clip)),
        "tracking_fps_cpu": float(sum(c["frames"] for c in per_clip) / sum(c["track_seconds"] for c in per_clip)),
        "per_clip": per_clip,
    }


def _load_results(path: Path) -> dict:
    """The results file, upgraded from the old single-range layout (a summary at the top level)."""
    if not path.exists():
        return {"benchmark": "tracking_accuracy", "runs": {}, "superseded": []}
    old = json.loads(path.read_text())
    if "runs" in old:
        return old
    seeds = old.get("seeds", [])
    key = f"{min(seeds)}-{max(seeds)}" if seeds else "unknown"
    old.pop("benchmark", None)
    return {"benchmark": "tracking_accuracy", "runs": {key: old}, "superseded": []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds",
        nargs=2,
        type=int,
        default=[1000, 10],
        metavar=("START", "COUNT"),
        help="clip seeds START .. START+COUNT-1 (default: 1000 10)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "tracking_accuracy.json",
        help="Result JSON (seed ranges accumulate in it); the plot is written beside it (same name, .png).",
    )
    args = parser.parse_args(argv)
    start, count = args.seeds
    if count < 1:
        parser.error("COUNT must be at least 1")
    if args.out.is_dir():
        parser.error(f"--out is the result JSON file, not a folder: pass {args.out / 'tracking_accuracy.json'}")

    per_clip = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(start, start + count):
            gt, pred, seconds = track_synthetic_clip(seed, Path(tmp))
            scores = {"seed": seed, **mot_scores(gt, pred), "track_seconds": round(seconds, 3), "frames": gt.num_frames}
            per_clip.append(scores)
            print(json.dumps(scores), file=sys.stderr)
    summary = summarize(per_clip)
    summary["run_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    path = args.out
    path.parent.mkdir(parents=True, exist_ok=True)
    results = _load_results(path)
    key = f"{start}-{start + count - 1}"
    if key in results["runs"]:
        results["superseded"].append({"seed_range": key, **results["runs"][key]})
    results["runs"][key] = summary
    write_json_atomic(path, results, indent=2)
    _plot([c for run in results["runs"].values() for c in run["per_clip"]], path.with_suffix(".png"))
    print(json.dumps({k: v for k, v in summary.items() if k != "per_clip"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
