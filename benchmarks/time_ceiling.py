"""How well can a time answer score at each clip format, from the frames a grounder is shown?

The grounder sees the §4-sampled frames only (2 fps, paired into 2-frame tubes by Qwen2.5-VL's tubelet embedding),
so even a perfect reader of those frames cannot place an event's edges finer than the gap between two samples. On
the clips `clip_formats.py` scores (same formats, seeds and TubeDETR frame-based tIoU), this prints and plots, per
format, the mean tIoU of:

- ``prior``: the best constant range of the clips (what `eval --baseline prior` answers);
- ``tube reader``: knows which 2-frame tubes hold a sampled frame inside the event and answers halfway between
  the first (last) such tube and its neighbour — a reader at the vision tower's token resolution;
- ``frame reader``: knows which sampled frames lie inside the event and answers halfway between the first (last)
  of them and its neighbour — the most the shown frames tell;
- ``target``: prior + 0.10, capped at 0.85 — the nano model's goal at each format.

    python benchmarks/time_ceiling.py [--num 16] [--seed 9000] [--out benchmarks/results/time_ceiling.json]

No model runs: clips are generated (not rendered) and sampled by the package's own rules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_formats import FORMATS  # noqa: E402

from stvgr1_edge.errors import atomic_output, write_json_atomic  # noqa: E402

READERS = ("prior", "tube reader", "frame reader")


def edge_answer(times: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """Halfway between the first (last) ``inside`` time and the one before (after) it; the clip's first (last)
    sampled time where there is none."""
    idx = np.nonzero(inside)[0]
    first, last = int(idx[0]), int(idx[-1])
    start = (times[first - 1] + times[first]) / 2 if first > 0 else times[first]
    end = (times[last] + times[last + 1]) / 2 if last + 1 < len(times) else times[last]
    return float(start), float(end)


def tube_edge_answer(times: np.ndarray, tubes: np.ndarray) -> tuple[float, float]:
    """:func:`edge_answer` at 2-frame tube resolution: a tube showing the event counts both its frames in."""
    return edge_answer(times, np.repeat(tubes, 2))


def format_ceiling(num: int, seed: int, options: dict) -> dict:
    """The readers' mean tIoU on ``num`` clips of one format (``options``: SynthConfig fields)."""
    from stvgr1_edge.baseline import best_constant_range
    from stvgr1_edge.metrics import frames_in_time_range, temporal_iou_frames
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.synth import SynthConfig, clip_seeds, generate_clip

    config = SynthConfig(**options)
    clips = []
    for clip_seed in clip_seeds(seed, num):
        clip = generate_clip(clip_seed, config)
        sampled = np.asarray(plan_sampling(clip.num_frames, config.fps, config.height, config.width).indices)
        clips.append((clip.num_frames, sampled, range(clip.event.start_frame, clip.event.end_frame + 1)))
    prior = best_constant_range([(gt.start / config.fps, (gt.stop - 1) / config.fps) for _, _, gt in clips])[:2]
    scores: dict[str, list[float]] = {name: [] for name in READERS}
    for num_frames, sampled, gt in clips:
        times = sampled / config.fps
        inside = (sampled >= gt.start) & (sampled < gt.stop)
        answers = {
            "prior": prior,
            "tube reader": tube_edge_answer(times, inside.reshape(-1, 2).any(axis=1)),
            "frame reader": edge_answer(times, inside),
        }
        for name, (a, b) in answers.items():
            scores[name].append(temporal_iou_frames(frames_in_time_range(a, b, config.fps, num_frames), gt))
    means = {name: float(np.mean(v)) for name, v in scores.items()}
    means["target"] = min(means["prior"] + 0.10, 0.85)
    return {
        "clips": num,
        "sampled_frames": len(clips[0][1]),
        "prior_range_s": [round(v, 2) for v in prior],
        "m_tIoU": means,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    for k, reader in enumerate(READERS):
        ax.bar(x + (k - 1) * 0.27, [results[n]["m_tIoU"][reader] for n in names], 0.27, label=reader)
    ax.scatter(x, [results[n]["m_tIoU"]["target"] for n in names], marker="_", s=900, c="k", label="target", zorder=3)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("m_tIoU (TubeDETR frames)")
    ax.set_title("Time answers read off the sampled frames, against the prior")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=16, help="Clips per format (clip_formats.py's default).")
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--out", default="benchmarks/results/time_ceiling.json")
    args = parser.parse_args(argv)
    results = {name: format_ceiling(args.num, args.seed, options) for name, options in FORMATS.items()}
    report = {
        "what": f"tIoU reachable from the sampled frames, {args.num} synthetic clips per format (seed {args.seed})",
        "convention": "tubedetr",
        "readers": {
            "prior": "best constant range of the clips",
            "tube reader": "halfway between the first/last 2-frame tube showing the event and its neighbour",
            "frame reader": "halfway between the first/last sampled frame inside the event and its neighbour",
            "target": "prior + 0.10, capped at 0.85",
        },
        "formats": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report, indent=1)
    with atomic_output(out.with_suffix(".png")) as tmp:
        plot(results, tmp)
    for name, r in results.items():
        print(f"{name:20s} " + "  ".join(f"{k} {v:.3f}" for k, v in r["m_tIoU"].items()))


if __name__ == "__main__":
    main()
