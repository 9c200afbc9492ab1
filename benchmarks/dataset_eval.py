"""A model against the prior baseline on a fresh synthetic set, through the dataset commands a user runs:

    stvg-edge synth DIR --num N --seed S            # clips never used in training (seeds 5000+)
    stvg-edge predict DIR/annotations.json DIR/videos -o DIR/pred.jsonl --model MODEL
    stvg-edge eval DIR/pred.jsonl DIR/annotations.json --baseline prior --json REPORT

Writes the eval report with the commands and wall times (JSON) and a bar chart of model vs prior per convention
(PNG). The synth format is its default unless ``--width/--height/--seconds`` say otherwise.

    python benchmarks/dataset_eval.py [--model nano] [--num 64] [--seed 9000] [--answer-samples N]
                                      [--out benchmarks/results/...]

``--answer-samples N`` passes the same option to predict (the answer N sampled answers agree with most).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "id_accuracy")


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def plot(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conventions = list(report["results"])
    fig, axes = plt.subplots(1, len(conventions), figsize=(6 * len(conventions), 4), sharey=True)
    for ax, convention in zip([axes] if len(conventions) == 1 else axes, conventions):
        model = report["results"][convention]["metrics"]
        prior = report["baseline"]["results"][convention]["metrics"]
        xs = range(len(METRICS))
        ax.bar([x - 0.2 for x in xs], [model[m] or 0 for m in METRICS], 0.4, label="model")
        ax.bar([x + 0.2 for x in xs], [prior[m] or 0 for m in METRICS], 0.4, label="prior baseline")
        ax.set_xticks(list(xs), METRICS)
        ax.set_title(convention)
        ax.set_ylim(0, 1)
    (axes if len(conventions) == 1 else axes[0]).legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_on_synth(
    model: str,
    num: int,
    seed: int,
    device: str = "cpu",
    synth_options: dict | None = None,
    predict_flags: tuple[str, ...] = (),
) -> dict:
    """synth -> predict -> eval in a temporary folder: the eval report (with each clip's scores) with the commands,
    wall times and the share of answers that parsed. ``synth_options``: synth's --width/--height/--seconds (None:
    its default)."""
    cli = [sys.executable, "-m", "stvgr1_edge"]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synth = [*cli, "synth", str(data), "--num", str(num), "--seed", str(seed)]
        for flag, value in (synth_options or {}).items():
            if value is not None:
                synth += [f"--{flag}", str(value)]
        pred = data / "pred.jsonl"
        predict = [*cli, "predict", str(data / "annotations.json"), str(data / "videos"), "-o", str(pred)]
        predict += ["--model", model, "--device", device, *predict_flags]
        report_file = Path(tmp) / "report.json"
        evaluate = [*cli, "eval", str(pred), str(data / "annotations.json"), "--baseline", "prior"]
        evaluate += ["--json", str(report_file), "--per-video"]
        seconds = {"synth": run(synth), "predict": run(predict), "eval": run(evaluate)}
        report = json.loads(report_file.read_text())
        lines = [json.loads(line) for line in pred.read_text().splitlines()]

    def shown(argv: list[str]) -> str:
        return shlex.join(["stvg-edge", *argv[3:]]).replace(tmp, "DIR")

    report["files"] = {"predictions": "DIR/data/pred.jsonl", "ground_truth": "DIR/data/annotations.json"}
    return {
        "what": f"{model} vs the prior baseline on {num} fresh synthetic clips (seed {seed})",
        "commands": [shown(synth), shown(predict), shown(evaluate)],
        "wall_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "answers_parsed": sum(bool(line.get("parse_ok")) for line in lines) / len(lines),
        **report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nano")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--answer-samples", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dataset_eval_synth64.json"))
    args = parser.parse_args()

    summary = evaluate_on_synth(
        args.model,
        args.num,
        args.seed,
        args.device,
        {f: getattr(args, f) for f in ("width", "height", "seconds")},
        ("--answer-samples", str(args.answer_samples)) if args.answer_samples else (),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    plot(summary, args.out.with_suffix(".png"), summary["what"])
    for convention, result in summary["results"].items():
        prior = summary["baseline"]["results"][convention]["metrics"]
        row = ", ".join(
            f"{m} {100 * (result['metrics'][m] or 0):.1f} (prior {100 * (prior[m] or 0):.1f})" for m in METRICS
        )
        print(f"{convention}: {row}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
