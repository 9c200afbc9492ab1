"""A model at the clip formats users feed it, against the prior baseline, with and without the answer template.

For each format (synth's default 320x240/8 s, the nano model's training format 224x168/6 s, and 4 s / 16 s clips at
the default size) the same fresh synthetic clips go through the dataset commands (`dataset_eval.py`: synth,
predict, eval --baseline prior), once with the answer template (the default) and once decoding freely
(`predict --free-answer`). One JSON with every report and a PNG: m_tIoU and m_vIoU per format, both decodings
beside the prior, and the share of answers that parsed.

    python benchmarks/clip_formats.py [--model nano] [--num 16] [--seed 9000] [--out FILE.json]
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
        "id_accuracy": model["id_accuracy"],
        "parsed": summary["answers_parsed"],
        "prior_m_tIoU": prior["m_tIoU"],
        "prior_m_vIoU": prior["m_vIoU"],
    }


def plot(table: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    formats = list(table)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    xs = range(len(formats))
    for ax, metric in zip(axes, ("m_tIoU", "m_vIoU", "parsed")):
        bars = [(d, [table[f][d][metric] or 0 for f in formats]) for d in DECODINGS]
        if metric != "parsed":
            bars.append(("prior", [table[f]["template"][f"prior_{metric}"] or 0 for f in formats]))
        width = 0.8 / len(bars)
        for i, (label, values) in enumerate(bars):
            ax.bar([x + (i - (len(bars) - 1) / 2) * width for x in xs], values, width, label=label)
        ax.set_xticks(list(xs), formats, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(metric if metric != "parsed" else "answers parsed")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nano")
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/clip_formats.json"))
    args = parser.parse_args()

    reports: dict = {}
    table: dict = {}
    for name, synth_options in FORMATS.items():
        for decoding, flags in DECODINGS.items():
            summary = evaluate_on_synth(args.model, args.num, args.seed, args.device, synth_options, flags)
            reports.setdefault(name, {})[decoding] = summary
            table.setdefault(name, {})[decoding] = row(summary)
            r = table[name][decoding]
            print(
                f"{name:>20} {decoding:>8}: m_tIoU {r['m_tIoU']:.3f} (prior {r['prior_m_tIoU']:.3f}), "
                f"m_vIoU {r['m_vIoU']:.3f}, ID {r['id_accuracy']:.3f}, parsed {r['parsed']:.3f}",
                flush=True,
            )
    what = f"{args.model} on {args.num} fresh synthetic clips per format (seed {args.seed}), {CONVENTION} convention"
    result = {"what": what, "convention": CONVENTION, "table": table, "reports": reports}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(table, args.out.with_suffix(".png"), what)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
