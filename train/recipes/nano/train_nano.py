"""The nano recipe, stage by stage: data → init → vision stage → text stage → SFT → GRPO → eval → ship.

    python -m stvgr1_edge_train.recipes.nano.train_nano all    --work runs/nano          # everything, in order
    python -m stvgr1_edge_train.recipes.nano.train_nano data   --work runs/nano   # synth + prepare train, val, held-out
    python -m stvgr1_edge_train.recipes.nano.train_nano formats --work runs/nano  # the clip-format sets
    python -m stvgr1_edge_train.recipes.nano.train_nano init   --work runs/nano   # random-init nano model + processor
    python -m stvgr1_edge_train.recipes.nano.train_nano vision --work runs/nano [--max-steps N]   # -> WORK/vision
    python -m stvgr1_edge_train.recipes.nano.train_nano text   --work runs/nano [--max-steps N]   # -> WORK/text
    python -m stvgr1_edge_train.recipes.nano.train_nano sft    --work runs/nano [--max-steps N] [--attention-weight W]
    python -m stvgr1_edge_train.recipes.nano.train_nano time   --work runs/nano [--max-steps N]   # -> WORK/time
    python -m stvgr1_edge_train.recipes.nano.train_nano stream --work runs/nano [--max-steps N]   # -> WORK/stream
    python -m stvgr1_edge_train.recipes.nano.train_nano grpo   --work runs/nano [--max-steps N]   # -> WORK/grpo
    python -m stvgr1_edge_train.recipes.nano.train_nano val    --work runs/nano --model runs/nano/sft [--num 100]
    python -m stvgr1_edge_train.recipes.nano.train_nano eval   --work runs/nano --model runs/nano/grpo [--num 40]
    python -m stvgr1_edge_train.recipes.nano.train_nano ship   --work runs/nano --model runs/nano/grpo

Data seeds (disjoint ``SeedSequence`` roots): training clips ``stvg-edge synth --seed 0 --num 800`` and
``--seed 1 --num 2400``; validation (model selection, ``val``) ``--seed 4000 --num 200``; held-out (final metrics
only, ``eval``) ``--seed 5000 --num 200``; the vision stage draws its own clips from root seeds 10000/10001.
Clips are 224x168, 6 s at 10 fps, so the §4 sampling gives 12 frames at 2 fps and 288 visual tokens. The clip-format
sets (``formats``: :data:`FORMAT_SETS`, seeds 20-23, validation 24) add synth's default 320x240/8 s and 4 s / 16 s
clips; the shipped model's last SFT and its GRPO stage train on them (``--data cache_formats``). Stage settings
live in ``pretrain_vision.py`` (``VisionPretrainConfig``), ``pretrain_text.py`` (``TextPretrainConfig``), ``sft.yaml``
and ``grpo.yaml`` next to this file. The ``time`` stage (``pretrain_time.py``: time reading on clips with a trivially
visible event, from WORK/sft) is not part of ``all``; it also writes its clips to ``WORK/cache_time``, which SFT can
take next to another cache (``--data cache_formats,cache_time``). The ``stream`` stage (``stream_sft.py``: SFT on
fresh synthetic clips in the clip formats, never one twice, from WORK/sft) is not part of ``all`` either.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent
TRAIN_SETS = ((0, 800), (1, 2400))
"""(root seed, clips) of the training sets, prepared into one cache (``WORK/cache_train``)."""
VAL_SEED, VAL_NUM = 4000, 200
"""Validation clips (``WORK/cache_val``): model selection and quick checks during training."""
HELDOUT_SEED, HELDOUT_NUM = 5000, 200
"""Held-out clips: the final metrics only (full pipeline from the MP4s); never used for any choice."""
CLIP_ARGS = ["--width", "224", "--height", "168", "--seconds", "6"]
FORMAT_SETS = (
    (20, 500, ()),
    (21, 300, ("--width", "224", "--height", "168", "--seconds", "6")),
    (22, 250, ("--seconds", "4")),
    (23, 250, ("--seconds", "16")),
)
"""(root seed, clips, synth options) of the clip-format sets (``WORK/cache_formats``): synth's default 320x240/8 s,
the first stages' 224x168/6 s, and 4 s / 16 s clips, so that the model's answers follow the clip's size and length."""
FORMAT_VAL = (24, 60, ())
"""Clip-format validation clips (``WORK/cache_formats_val``, synth's default format): model selection."""
STAGES = ("all", "data", "formats", "init", "vision", "text", "time", "sft", "stream", "grpo", "val", "eval", "ship")
"""The recipe's stages, as the command line names them."""
TIME_CACHE_CLIPS = 400
"""Time-reading clips (``pretrain_time.py``, root seed 42000) written to ``WORK/cache_time`` for SFT mixing."""

logger = logging.getLogger("stvgr1_edge_train.recipes.nano")


def _stvg_edge(*args: str) -> None:
    cmd = [sys.executable, "-m", "stvgr1_edge", *args]
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def synth_and_prepare(work: Path, sets: list[tuple], workers: int) -> None:
    """``stvg-edge synth`` each (folder name, root seed, clips, synth options, cache or None) set into WORK (once),
    then ``train prepare`` it into its cache with WORK/init's processor (resumable)."""
    init = work / "init"
    if not (init / "config.json").exists():
        stage_init(work)
    for name, seed, num, options, cache in sets:
        if not (work / name / "annotations.json").exists():
            _stvg_edge("synth", str(work / name), "--num", str(num), "--seed", str(seed), *options)
        if cache is not None:
            annotations = str(work / name / "annotations.json")
            _stvg_edge(
                "train",
                "prepare",
                annotations,
                "--out",
                str(work / cache),
                "--model",
                str(init),
                "--workers",
                str(workers),
            )


def stage_data(work: Path, workers: int) -> None:
    sets = [(f"train{seed}", seed, num, CLIP_ARGS, "cache_train") for seed, num in TRAIN_SETS]
    sets += [
        ("val", VAL_SEED, VAL_NUM, CLIP_ARGS, "cache_val"),
        ("heldout", HELDOUT_SEED, HELDOUT_NUM, CLIP_ARGS, None),
    ]
    synth_and_prepare(work, sets, workers)


def stage_format_data(work: Path, workers: int) -> None:
    """The clip-format sets into ``WORK/cache_formats``, the validation set into ``WORK/cache_formats_val``."""
    sets = [(f"formats{seed}", seed, num, options, "cache_formats") for seed, num, options in FORMAT_SETS]
    sets.append(("formats_val", *FORMAT_VAL, "cache_formats_val"))
    synth_and_prepare(work, sets, workers)


def stage_init(work: Path) -> None:
    from .build_nano import build_nano

    build_nano(work / "init")


def stage_vision(work: Path, max_steps: int | None, start: str | None = None, output: str | None = None) -> None:
    from .pretrain_vision import VisionPretrainConfig, pretrain_vision

    config = VisionPretrainConfig() if max_steps is None else VisionPretrainConfig(steps=max_steps)
    pretrain_vision(start or work / "init", output or work / "vision", config)


def stage_text(work: Path, max_steps: int | None, start: str | None = None, output: str | None = None) -> None:
    from .pretrain_text import TextPretrainConfig, pretrain_text

    config = TextPretrainConfig() if max_steps is None else TextPretrainConfig(steps=max_steps)
    pretrain_text(start or work / "vision", output or work / "text", config)


def stage_time(work: Path, max_steps: int | None, start: str | None = None, output: str | None = None) -> None:
    """The time-reading stage (``pretrain_time.py``) from ``start`` (default WORK/sft), and its clips as a cache for
    SFT mixing (``WORK/cache_time``, :data:`TIME_CACHE_CLIPS` clips, written once)."""
    from stvgr1_edge_train.grpo import load_processor

    from .pretrain_time import TimeReadingConfig, pretrain_time, write_time_reading_cache

    start = start or str(work / "sft")
    if not (work / "cache_time" / "samples").is_dir():
        write_time_reading_cache(work / "cache_time", load_processor(start)[0], TIME_CACHE_CLIPS)
    config = TimeReadingConfig() if max_steps is None else TimeReadingConfig(steps=max_steps)
    pretrain_time(start, output or work / "time", config)


def stage_stream(
    work: Path,
    max_steps: int | None,
    start: str | None = None,
    output: str | None = None,
    learning_rate: float | None = None,
    attention_weight: float | None = None,
    attention_span: bool = False,
) -> None:
    """SFT on fresh synthetic clips (``stream_sft.py``) from ``start`` (default WORK/sft) to WORK/stream."""
    from dataclasses import replace

    from .stream_sft import StreamSFTConfig, stream_sft

    config = StreamSFTConfig()
    if max_steps is not None:
        config = replace(config, steps=max_steps)
    if learning_rate is not None:
        config = replace(config, learning_rate=learning_rate)
    if attention_weight is not None:
        config = replace(config, attention_weight=attention_weight)
    if attention_span:
        config = replace(config, attention_span=True)
    stream_sft(start or work / "sft", output or work / "stream", config)


def stage_val(work: Path, model: str, num: int | None, data: str = "cache_val") -> None:
    from stvgr1_edge_train.evaluate import evaluate_cache

    scores = evaluate_cache(model, work / data, num=num)
    print(model, {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items() if k != "samples"})


def sft_settings(path: Path) -> dict:
    """SFTRunConfig fields from a recipe YAML file; a key that is not a field stops the run (a misspelt setting
    would otherwise be dropped without a word)."""
    from stvgr1_edge_train.grpo import load_yaml
    from stvgr1_edge_train.sft import SFTRunConfig

    settings = load_yaml(path.read_text()) or {}
    unknown = sorted(set(settings) - {f.name for f in fields(SFTRunConfig)})
    if unknown:
        raise SystemExit(f"{path}: unknown SFT setting(s) {', '.join(unknown)}; see stvgr1_edge_train.sft.SFTRunConfig")
    return settings


def stage_sft(
    work: Path,
    max_steps: int | None,
    start: str | None = None,
    output: str | None = None,
    learning_rate: float | None = None,
    data: str = "cache_train",
    train_tower: bool = False,
    attention_weight: float | None = None,
) -> None:
    from stvgr1_edge_train.sft import SFTRunConfig, run_sft

    settings = sft_settings(RECIPE_DIR / "sft.yaml")
    if max_steps is not None:
        settings["max_steps"] = max_steps
    if attention_weight is not None:
        settings["attention_weight"] = attention_weight
    if learning_rate is not None:
        settings["learning_rate"] = learning_rate
    if train_tower:
        settings["freeze_vision"] = False
    run_sft(
        SFTRunConfig(
            data=",".join(str(work / name) for name in data.split(",")),
            model=start or str(work / "text"),
            output_dir=output or str(work / "sft"),
            **settings,
        )
    )


def stage_grpo(
    work: Path,
    max_steps: int | None,
    start: str | None = None,
    output: str | None = None,
    learning_rate: float | None = None,
    data: str = "cache_train",
    settings: tuple[str, ...] = (),
) -> None:
    from stvgr1_edge_train.grpo import load_run_config, run_grpo

    overrides = list(settings)
    if max_steps is not None:
        overrides.append(f"grpo.max_steps={max_steps}")
    if learning_rate is not None:
        overrides.append(f"grpo.learning_rate={learning_rate}")
    run = load_run_config(
        RECIPE_DIR / "grpo.yaml",
        overrides,
        data=",".join(str(work / name) for name in data.split(",")),
        model=start or str(work / "sft"),
        output_dir=output or str(work / "grpo"),
    )
    trainer = run_grpo(run)
    write_grpo_curves(trainer.state.log_history, Path(run.output_dir) / "grpo_curves.json")


CURVES = {
    "reward": "reward",
    "tIoU reward": "rewards/temporal_iou_reward/mean",
    "ID reward": "rewards/id_match_reward/mean",
    "format reward": "rewards/format_reward/mean",
    "reward std in group": "reward_std",
    "KL": "kl",
}
"""The GRPO log's curves: plotted name -> TRL's log key."""


def write_grpo_curves(log_history: list[dict], path: Path, smooth: int = 10) -> None:
    """The reward and its terms (tIoU, ID, format), their spread within a group and the KL to the start, step by
    step, as JSON and a PNG next to it (with a ``smooth``-step running mean: one step is one batch of prompt groups)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    logged = [entry for entry in log_history if "reward" in entry]
    curves = {name: [entry.get(key) for entry in logged] for name, key in CURVES.items()}
    steps = [entry.get("step", i + 1) for i, entry in enumerate(logged)]
    path.write_text(json.dumps({"step": steps, **curves}, indent=1))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, names in zip(axes, (("reward",), ("tIoU reward", "ID reward", "format reward"), ("KL",))):
        for name in names:
            values = np.asarray([np.nan if v is None else v for v in curves[name]], dtype=float)
            line = ax.plot(steps, values, alpha=0.3)[0]
            if len(values) >= smooth and not np.isnan(values).any():  # a gap would read as zero in the mean
                mean = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
                ax.plot(steps[smooth - 1 :], mean, color=line.get_color(), label=f"{name} ({smooth}-step mean)")
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=100)
    plt.close(fig)
    logger.info("GRPO curves -> %s (+ .png)", path)


def stage_eval(work: Path, model: str, num: int | None) -> None:
    from stvgr1_edge.evaluation import evaluate_model_on_synth

    scores = evaluate_model_on_synth(model, work / "heldout", num=num)
    print(model, {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()})


def stage_ship(work: Path, model: str) -> None:
    """Copy the model's weights, config and processor files into the package (``stvgr1_edge/models/nano``)."""
    target = Path(__file__).resolve().parents[3] / "stvgr1_edge" / "models" / "nano"
    target.mkdir(parents=True, exist_ok=True)
    keep = (
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "chat_template.jinja",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    )
    for name in keep:
        src = Path(model) / name
        if src.exists():
            shutil.copy2(src, target / name)
    size_mb = (target / "model.safetensors").stat().st_size / 2**20
    if size_mb > 25:
        raise SystemExit(f"model.safetensors is {size_mb:.1f} MB > 25 MB: shrink NANO_ARCH")
    print(f"shipped {model} -> {target} ({size_mb:.1f} MB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.recipes.nano.train_nano",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "stage",
        choices=STAGES,
    )
    parser.add_argument("--work", type=Path, default=Path("runs/nano"), help="Working folder (data, caches, runs).")
    parser.add_argument("--workers", type=int, default=2, help="Worker processes for `train prepare`.")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="Cut the vision/text/SFT/GRPO stage to this many steps."
    )
    parser.add_argument(
        "--data",
        default=None,
        help="Cache in WORK for sft/grpo (default cache_train; several joined by ',') or val (cache_val).",
    )
    parser.add_argument(
        "--train-tower", action="store_true", help="sft: train the vision tower too (sft.yaml freezes it)."
    )
    parser.add_argument(
        "--attention-weight",
        type=float,
        default=None,
        help="sft/stream: weight of the event-edge attention loss (stvgr1_edge_train.sft.SFTRunConfig."
        "attention_weight; sft needs caches with target boxes).",
    )
    parser.add_argument(
        "--attention-span",
        action="store_true",
        help="stream: the times attend to the target over its whole GT range (stream_sft.py --attention-span).",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="grpo: override a grpo.yaml setting (grpo.temperature=0.7, rewards.id_weight=0.5); repeatable.",
    )
    parser.add_argument("--model", default=None, help="Model folder for eval/ship (default: WORK/grpo).")
    parser.add_argument("--num", type=int, default=None, help="Held-out clips to evaluate (default: all).")
    parser.add_argument(
        "--from",
        dest="start",
        default=None,
        help="Starting model of the vision/text/time/sft/stream/grpo stage (default: WORK/init, WORK/vision, "
        "WORK/sft, WORK/text, WORK/sft, WORK/sft).",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="Output folder of the vision/text/time/sft/stream/grpo stage (default: WORK/<stage>).",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Override the learning rate of sft.yaml (sft), stream_sft.py (stream) or grpo.yaml (grpo).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or str(work / "grpo")
    if args.stage in ("init",):
        stage_init(work)
    if args.stage in ("all", "data"):
        stage_data(work, args.workers)
    if args.stage == "formats":
        stage_format_data(work, args.workers)

    def overrides(stage: str) -> tuple:
        """--max-steps, --from and --output of the stage named on the command line (`all` runs every stage with its
        defaults)."""
        return (args.max_steps, args.start, args.output) if args.stage == stage else (None, None, None)

    if args.stage in ("all", "vision"):
        stage_vision(work, *overrides("vision"))
    if args.stage in ("all", "text"):
        stage_text(work, *overrides("text"))
    if args.stage == "time":
        stage_time(work, *overrides("time"))
    if args.stage in ("all", "sft"):
        stage_sft(work, *overrides("sft"), args.lr, args.data or "cache_train", args.train_tower, args.attention_weight)
    if args.stage in ("all", "grpo"):
        stage_grpo(
            work,
            *overrides("grpo"),
            args.lr if args.stage == "grpo" else None,
            args.data or "cache_train",
            tuple(args.settings),
        )
    if args.stage == "stream":
        stage_stream(work, *overrides("stream"), args.lr, args.attention_weight, args.attention_span)
    if args.stage == "val":
        stage_val(work, args.model or str(work / "sft"), args.num, args.data or "cache_val")
    if args.stage == "all":
        stage_eval(work, str(work / "sft"), args.num)
    if args.stage in ("all", "eval"):
        stage_eval(work, model, args.num)
    if args.stage in ("all", "ship"):
        stage_ship(work, model)


if __name__ == "__main__":
    main()
