"""`stvg-edge train prepare|grpo|sft` (also `python -m stvgr1_edge_train ...`). The CLI prints; the library logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from stvgr1_edge.errors import StvgError

app = typer.Typer(
    name="train",
    help="Fine-tune the grounder on STVG data: prepare a cache, then GRPO (or SFT).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress (INFO) to stderr.")) -> None:
    if verbose:
        logging.basicConfig(
            level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
        )


@app.command()
def prepare(
    annotations: Path = typer.Argument(..., help="HCSTVG-v1/v2, VidSTG or `stvg-edge synth` annotations JSON."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Cache folder to write (resumable: complete samples are skipped)."
    ),
    videos: Optional[Path] = typer.Option(
        None, "--videos", help="Folder holding the videos (default: next to the annotations)."
    ),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Worker processes, parallel over videos."),
    tracker: str = typer.Option("classical", "--tracker", help="classical (no weights), sam2 or edgetam."),
    tracker_model: Optional[str] = typer.Option(
        None, "--tracker-model", help="SAM2.1/EdgeTAM weights for sam2/edgetam."
    ),
    detector: Optional[str] = typer.Option(None, "--detector", help="Keyframe detector for sam2/edgetam."),
    device: str = typer.Option("cpu", "--device", help="Torch device for model trackers."),
    model: Optional[str] = typer.Option(
        None, "--model", help="Model folder whose processor makes the tensors (default: Qwen2.5-VL's constants)."
    ),
    iou_floor: float = typer.Option(0.5, "--iou-floor", help="Least IoU for a GT frame to vote for a tracked box."),
    min_vote_share: float = typer.Option(0.6, "--min-vote-share", help="Least vote share of the winning ID."),
    min_coverage: float = typer.Option(0.3, "--min-coverage", help="Least share of GT frames that must vote."),
) -> None:
    """Track, assign GT IDs, draw markers, sample frames and cache the processor tensors per sample."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stvgr1_edge.gt_match import GTIdConfig

    from .prepare import PrepareConfig, prepare_cache

    config = PrepareConfig(
        tracker=tracker,
        tracker_model=tracker_model,
        detector=detector,
        device=device,
        processor=model,
        workers=workers,
        gt_id=GTIdConfig(iou_floor=iou_floor, min_vote_share=min_vote_share, min_coverage=min_coverage),
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        bar = progress.add_task("videos", total=None)
        report = prepare_cache(annotations, out, videos, config, on_video=lambda _p: progress.advance(bar))
    counts = ", ".join(f"{k} {v}" for k, v in report["counts"].items())
    typer.echo(f"{report['num_samples']} samples: {counts} -> {out} (details: {out / 'report.json'})")
    check = report.get("truth_check")
    if check:
        typer.echo(
            f"GT-ID check against the true target: {check['num_agree']}/{check['num_assigned']} assigned agree, "
            f"{len(check['unassigned'])} unassigned"
        )


@app.command()
def grpo(
    overrides: Optional[List[str]] = typer.Argument(
        None, help="KEY=VALUE settings, e.g. grpo.max_steps=100 rewards.id_weight=0.5."
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="Run YAML (e.g. train/configs/grpo_stvg_r1.yaml)."
    ),
    data: Optional[str] = typer.Option(
        None, "--data", help='Cache folder from `train prepare` (several: joined by ",").'
    ),
    model: Optional[str] = typer.Option(None, "--model", help="Qwen2.5-VL hub id or folder to fine-tune."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output folder (checkpoints + final model)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Checkpoint folder, or 'latest' in the output folder."),
) -> None:
    """GRPO with the STVG-R1 reward (tIoU + ID match + format) on a prepared cache."""
    from .grpo import load_run_config, run_grpo

    run = load_run_config(
        config, overrides or [], data=data, model=model, output_dir=output, resume_from_checkpoint=resume
    )
    trainer = run_grpo(run)
    typer.echo(f"trained {trainer.state.global_step} steps -> {run.output_dir}")


@app.command()
def sft(
    data: str = typer.Option(..., "--data", help='Cache folder from `train prepare` (several: joined by ",").'),
    model: str = typer.Option(..., "--model", help="Qwen2.5-VL hub id or folder."),
    output: str = typer.Option("runs/sft_stvg_r1", "--output", "-o", help="Output folder."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Checkpoint folder, or 'latest'."),
    epochs: float = typer.Option(1.0, "--epochs", help="Training epochs."),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after this many steps (-1: all epochs)."),
    lr: float = typer.Option(1e-5, "--lr", help="Learning rate."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Samples per device per step."),
    save_steps: int = typer.Option(500, "--save-steps", min=1, help="Checkpoint every this many steps."),
    restate_query: bool = typer.Option(
        False, "--restate-query", help="Teach a reasoning that restates the query before naming the ID."
    ),
    describe_objects: bool = typer.Option(
        False,
        "--describe-objects",
        help="Teach a reasoning that first says what each marked object is (where "
        "the cache knows: synthetic clips); implies --restate-query.",
    ),
    mark_target: bool = typer.Option(
        False,
        "--mark-target",
        help="Like --describe-objects, with the query first and the target's line "
        'marked ", the target."; implies --describe-objects.',
    ),
    check_attributes: bool = typer.Option(
        False,
        "--check-attributes",
        help='With --mark-target: tag each word of each line "+" (agrees with the query so far) or "-".',
    ),
    line_end_weight: float = typer.Option(
        1.0, "--line-end-weight", min=0.0, help="With --mark-target: loss weight of each line's end and check tags."
    ),
    time_weight: float = typer.Option(
        1.0, "--time-weight", min=0.0, help="Loss weight of the answer's time tokens (both time ranges)."
    ),
    event_timeline: bool = typer.Option(
        False,
        "--event-timeline",
        help="With --mark-target: state the target's event tube by tube (+ or - "
        "per 2-frame tube) before the time range.",
    ),
    freeze_vision: bool = typer.Option(
        False, "--freeze-vision", help="Train the language model only (keep a pretrained vision tower)."
    ),
    attention_weight: float = typer.Option(
        0.0,
        "--attention-weight",
        min=0.0,
        help="Weight of the event-edge attention loss: each time's tokens attend to the target's tokens in the "
        "first/last tube of its GT range (needs a cache with target boxes; 0: off).",
    ),
    attention_layer: int = typer.Option(2, "--attention-layer", min=0, help="LM layer of the attention loss."),
    attention_head: int = typer.Option(0, "--attention-head", min=0, help="Head of the attention loss."),
) -> None:
    """Supervised warm-start on teacher-forced answers (for models that cannot produce the format yet)."""
    from .sft import SFTRunConfig, run_sft

    run = SFTRunConfig(
        data=data,
        model=model,
        output_dir=output,
        resume_from_checkpoint=resume,
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        save_steps=save_steps,
        restate_query=restate_query,
        describe_objects=describe_objects,
        mark_target=mark_target,
        check_attributes=check_attributes,
        line_end_weight=line_end_weight,
        time_weight=time_weight,
        event_timeline=event_timeline,
        freeze_vision=freeze_vision,
        attention_weight=attention_weight,
        attention_layer=attention_layer,
        attention_head=attention_head,
    )
    trainer = run_sft(run)
    typer.echo(f"trained {trainer.state.global_step} steps -> {output}")


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m stvgr1_edge_train`: user errors end in one line on stderr and exit code 2."""
    try:  # typer >= 0.26 vendors click; older typer uses the click package
        from typer._click import exceptions as click_exceptions
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions as click_exceptions

    try:
        result = app(args=argv, prog_name="python -m stvgr1_edge_train", standalone_mode=False)
    except StvgError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except click_exceptions.UsageError as exc:
        typer.echo(f"error: {exc.format_message()} (see: python -m stvgr1_edge_train --help)", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    return result if isinstance(result, int) else 0
