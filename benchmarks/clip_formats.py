"""Models at the clip formats users feed them, against the prior baseline, with and without the answer template.

For each format (synth's default 320x240/8 s, the nano model's first training format 224x168/6 s, and 4 s / 16 s
clips at the default size) the same fresh synthetic clips go through the dataset commands (`dataset_eval.py`: synth,
predict, eval --baseline prior) for every model named, once with the answer template (the default) and, with
``--free``, once decoding freely (`predict --free-answer`), and with ``--answer-samples N`` once giving the answer
that N sampled answers agree with most (`predict --answer-samples N`). Several models (e.g. a GRPO model and its SFT
start) are scored on the very same clips in one run. One JSON with every report and a PNG: m_tIoU and m_vIoU per
format, each model beside the prior, and the share of answers that parsed.

    python benchmarks/clip_formats.py [--models nano [WORK/sft ...]] [--num 16] [--seed 9000] [--free]
                                      [--answer-samples N] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
