"""Models at the clip formats users feed them, against the prior baseline, with and without the answer template.

For each format (synth's default 320x240/8 s, the nano model's first training format 224x168/6 s, and 4 s / 16 s
clips at the default size) the same fresh synthetic clips go through the dataset commands (`dataset_eval.py`: synth,
predict, eval --baseline prior) for every model named, once with the answer template (the default) and, with
``--free``, once decoding freely (`predict --free-answer`), and with ``--answer-samples N`` once giving the answer
that N sampled answers agree with most (`predict --answer-samples N`). Several models (e.g. a GRPO model and its SFT
start) are scored on the very same clips in one run, so every column after the first also gets its paired difference
from the first (``vs_first``: m_tIoU and m_vIoU, the mean over clips of the per-clip difference, with a 95%
bootstrap interval over clips): on 16 clips a few points are within noise. One JSON with every report (each clip's
scores included) and a PNG: m_tIoU and m_vIoU per format, each model beside the prior, and the share of answers that
parsed.

    python benchmarks/clip_formats.py [--models nano [WORK/sft ...]] [--num 16] [--seed 9000] [--free]
                                      [--answer-samples N] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataset_eval import evaluate_on_synth  # noqa: E402

FORMATS = {
    "default 320x240 8s": {},
    "224x168 6s": {"width": 224, "height": 168, "seconds": 6.0},
    "320x240 4s": {"seconds": 4.0},
    "320x240 16s": {"seconds": 16.0},
}
DECODINGS = {"template": (), "free": ("--free-answer",)}
CONVENTION = "tubedetr"


def row(summary: dict) -> dict:
    model = summary["results"][CONVENTION]["metrics"]
    prior = summary["baseline"]["results"][CONVENTION]["metrics"]
    return {
        "m_tIoU": model["m_tIoU"],
        "m_vIoU": model["m_vIoU"],
        "vIoU@0.5": model.get("vIoU@0.5"),
        "id_accuracy": model["id_accuracy"],
        "parsed": summary["answers_parsed"],
        "prior_m_tIoU": prior["m_tIoU"],
        "prior_m_vIoU": prior["m_vIoU"],
    }


def paired_difference(first: dict, other: dict, metric: str, resamples: int = 10_000) -> dict:
    """``other`` minus ``first`` on the same clips (eval's ``per_video`` rows; a clip without a tube scores 0, as in
    the mean): the mean difference -- exactly the difference of the two m_ scores -- and a 95% percentile-bootstrap
    interval over clips, seeded so a rerun gives the same interval."""
    from scipy.stats import bootstrap

    if set(first) != set(other):
        raise ValueError(f"paired scores need the same clips: {sorted(set(first) ^ set(other))} in only one")
    keys = sorted(first)
    diff = np.array([(other[k][metric] or 0.0) - (first[k][metric] or 0.0) for k in keys])
    if np.ptp(diff) == 0:  # every clip moved by the same amount (often 0): no spread to resample
        low = high = float(diff[0])
    else:
        ci = bootstrap(
            (diff,), np.mean, n_resamples=resamples, confidence_level=0.95, method="percentile", random_state=0
        ).confidence_interval
        low, high = float(ci.low), float(ci.high)
    return {"mean": float(diff.mean()), "ci95": [low, high], "clips": len(keys)}


def plot(table: dict, path: Path, title: str) -> None:
    """table[format][column] -> row; one bar per column (model and decoding), plus the prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    formats = list(table)
    columns = list(table[formats[0]])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    xs = range(len(formats))
    for ax, metric in zip(axes, ("m_tIoU", "m_vIoU", "parsed")):
        bars = [(c, [table[f][c][metric] or 0 for f in formats]) for c in columns]
        if metric != "parsed":
            bars.append(("prior", [table[f][columns[0]][f"prior_{metric}"] or 0 for f in formats]))
        width = 0.8 / len(bars)
        for i, (label, values) in enumerate(bars):
            ax.bar([x + (i - (len(bars) - 1) / 2) * width for x in xs], values, width, label=label)
        ax.set_xticks(list(xs), formats, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(metric if metric != "parsed" else "answers parsed")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["nano"], help="Models scored on the same clips.")
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    parser.add_argument("--free", action="store_true", help="Also decode without the answer template.")
    parser.add_argument(
        "--answer-samples", type=int, default=0, help="Also give the answer N sampled answers agree with most."
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/clip_formats.json"))
    args = parser.parse_args()

    decodings = {k: v for k, v in DECODINGS.items() if args.free or k == "template"}
    if args.answer_samples > 0:
        decodings[f"samples {args.answer_samples}"] = ("--answer-samples", str(args.answer_samples))
    reports: dict = {}
    table: dict = {}
    for name in args.formats:
        for model in args.models:
            for decoding, flags in decodings.items():
                column = f"{model} {decoding}"
                summary = evaluate_on_synth(model, args.num, args.seed, args.device, FORMATS[name], flags)
                reports.setdefault(name, {})[column] = summary
                table.setdefault(name, {})[column] = r = row(summary)
                print(
                    f"{name:>20} {column}: m_tIoU {r['m_tIoU']:.3f} (prior {r['prior_m_tIoU']:.3f}), "
                    f"m_vIoU {r['m_vIoU']:.3f}, ID {r['id_accuracy']:.3f}, parsed {r['parsed']:.3f}",
                    flush=True,
                )
        first, *others = reports[name]
        for column in others:
            rows = [reports[name][c]["results"][CONVENTION]["per_video"] for c in (first, column)]
            table[name][column]["vs_first"] = d = {
                f"m_{m}": paired_difference(*rows, metric=m) for m in ("tIoU", "vIoU")
            }
            shown = [f"{k} {v['mean']:+.3f} (95% {v['ci95'][0]:+.3f} to {v['ci95'][1]:+.3f})" for k, v in d.items()]
            print(f"{name:>20} {column} - {first}: " + ", ".join(shown), flush=True)
    what = (
        f"{', '.join(args.models)} on {args.num} fresh synthetic clips per format (seed {args.seed}), "
        f"{CONVENTION} convention"
    )
    result = {"what": what, "convention": CONVENTION, "table": table, "reports": reports}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(table, args.out.with_suffix(".png"), what)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
