"""`stvg-edge` commands on a dataset: `predict` (every query of an annotation file) and `eval` (the paper's table)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .cli_common import (
    ANSWER_SAMPLES_OPTION,
    ANSWER_TEMPLATE_OPTION,
    BUNDLE_OPTION,
    DETECTOR_OPTION,
    DEVICE_OPTION,
    DTYPE_OPTION,
    ENGINE_OPTION,
    HW_DECODE_OPTION,
    LM_HEAD_OPTION,
    MAX_NEW_TOKENS_OPTION,
    MODEL_OPTION,
    QUANT_OPTION,
    TRACK_EVERY_OPTION,
    TRACKER_MODEL_OPTION,
    TRACKER_OPTION,
    WEIGHTS_OPTION,
    app,
    check_choice,
    echo_json,
    run_config_of,
)
from .errors import BadInputError


# --- predict -------------------------------------------------------------------------------------
@app.command()
def predict(
    annotations: Path = typer.Argument(..., help="Annotation file (HCSTVG-v1/v2, VidSTG, `synth`'s, a query list)."),
    video_dir: Optional[Path] = typer.Argument(
        None, help="Folder with the videos \\[default: the annotation's folder and its videos/ folder]."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Predictions JSONL (one line per query)."),
    model: Optional[str] = MODEL_OPTION,
    bundle: Optional[Path] = BUNDLE_OPTION,
    quant: Optional[str] = QUANT_OPTION,
    tracker: Optional[str] = TRACKER_OPTION,
    tracker_model: Optional[str] = TRACKER_MODEL_OPTION,
    detector: Optional[str] = DETECTOR_OPTION,
    track_every: Optional[int] = TRACK_EVERY_OPTION,
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    time_only: bool = typer.Option(False, "--time-only", help="Temporal grounding only: no markers, no ID, no tube."),
    max_new_tokens: int = MAX_NEW_TOKENS_OPTION,
    engine: Optional[str] = ENGINE_OPTION,
    answer_template: bool = ANSWER_TEMPLATE_OPTION,
    answer_samples: int = ANSWER_SAMPLES_OPTION,
    weights: Optional[str] = WEIGHTS_OPTION,
    lm_head: Optional[str] = LM_HEAD_OPTION,
    hw_decode: Optional[str] = HW_DECODE_OPTION,
    shard: Optional[str] = typer.Option(
        None, "--shard", help="i/n: this process takes every n-th video \\[default: RANK/WORLD_SIZE, else 0/1]."
    ),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Skip the queries already in OUTPUT (default), or start it over."
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again the videos that failed before."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N samples (a quick check)."),
) -> None:
    """Ground every query of an annotation file: resumable, sharded, one JSONL line per query (for `eval`)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .dataset import load_annotations
    from .errors import check_output_file
    from .pipeline import PipelineConfig
    from .predict import Shard, predict_dataset
    from .run_config import build_pipeline

    this_shard = Shard.parse(shard) if shard is not None else (Shard.from_environment() or Shard())
    if device == "auto" and this_shard.count > 1:
        device = _rank_device(device)
    config = run_config_of(
        pipeline=PipelineConfig(time_only=time_only, hw_decode=hw_decode),
        model=model,
        bundle=None if bundle is None else str(bundle),
        quant=quant,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
        engine=engine,
        answer_template=answer_template,
        answer_samples=answer_samples,
        weights=weights,
        lm_head=lm_head,
        tracker=tracker,
        tracker_model=tracker_model,
        detector=detector,
        every=track_every,
    )
    check_output_file(this_shard.output_path(output), "--output")
    samples = load_annotations(annotations)[:limit]
    if video_dir is not None and not video_dir.is_dir():
        raise BadInputError(f"VIDEO_DIR is not a folder: {video_dir}")
    console = Console(stderr=True)
    with console.status(f"loading {bundle or model or 'the grounding model'}"):
        pipeline = build_pipeline(config)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("predicting", total=None)

        def started(summary) -> None:
            progress.update(bar, total=summary.queries, completed=summary.already_done)

        summary = predict_dataset(
            samples,
            video_dir,
            pipeline,
            output,
            shard=this_shard,
            resume=resume,
            retry_failed=retry_failed,
            on_start=started,
            on_video=lambda n: progress.advance(bar, n),
        )
    typer.echo(
        f"{summary.predicted} queries predicted, {summary.already_done} already done, {summary.failed} failed "
        f"({summary.failed_videos} videos) in {summary.seconds:.1f} s -> {summary.output}"
    )


def _rank_device(device: str) -> str:
    """``cuda:LOCAL_RANK`` for one process per GPU under torchrun/accelerate; the device as given without CUDA."""
    import os

    import torch

    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None or not local_rank.isdigit() or not torch.cuda.is_available():
        return device
    return f"cuda:{int(local_rank) % torch.cuda.device_count()}"


# --- eval ----------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    files: List[Path] = typer.Argument(
        ...,
        help="PRED... GT: predictions (`predict` JSONL -- a missing pred.jsonl means its shard files -- a `run` "
        "result or {key: {ids, start_s, end_s, tube}} JSON), then the ground truth (HCSTVG-v1/v2, VidSTG).",
        metavar="PRED... GT",
    ),
    convention: str = typer.Option(
        "both", help="tubedetr (standard, frame-based), stvg-r1 (the reference script's) or both."
    ),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", help="prior: also score the best constant time range + the largest track in it."
    ),
    per_video: bool = typer.Option(
        False, "--per-video", help="Include each video's tIoU, vIoU, ID correctness and J/F in the JSON."
    ),
    json_out: Optional[str] = typer.Option(
        None, "--json", help="Write the full report (metrics, counts, per video) as JSON to this file, or - for stdout."
    ),
) -> None:
    """Score predictions: the paper's table (m_tIoU, m_vIoU, vIoU@R, ID accuracy) in both conventions."""
    from .errors import check_output_file, write_json_atomic
    from .metrics import CONVENTIONS, evaluate_files

    if len(files) < 2:
        raise BadInputError("eval needs predictions and then the ground truth: stvg-edge eval PRED [PRED...] GT")
    check_choice("--convention", convention, (*CONVENTIONS, "both"))
    check_choice("--baseline", baseline, ("prior",))
    if json_out not in (None, "-"):
        check_output_file(Path(json_out), "--json")
    conventions = tuple(CONVENTIONS) if convention == "both" else (convention,)
    report = evaluate_files(files[:-1], files[-1], conventions, per_video=per_video, baseline=baseline)
    if json_out == "-":
        echo_json(report)
        return
    if json_out is not None:
        write_json_atomic(json_out, report, indent=1)
    _print_eval_table(report)


def _print_eval_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def cell(value) -> str:
        return "—" if value is None else f"{100 * value:.1f}"

    columns = {
        "m_tIoU": "m_tIoU",
        "m_vIoU": "m_vIoU",
        "vIoU@0.3": "vIoU@.3",
        "vIoU@0.5": "vIoU@.5",
        "id_accuracy": "ID",
    }
    table = Table(title="grounding accuracy (%)")
    for col in ("convention", "answers", *columns.values()):
        table.add_column(col, justify="left" if col in ("convention", "answers") else "right")
    baseline = report.get("baseline")
    for convention, result in report["results"].items():
        model = result["metrics"]
        table.add_row(convention, "model", *(cell(model.get(c)) for c in columns))
        if baseline is not None:
            prior = baseline["results"][convention]["metrics"]
            table.add_row("", baseline["name"], *(cell(prior.get(c)) for c in columns))
            table.add_row(
                "",
                "difference",
                *(
                    "—" if model.get(c) is None or prior.get(c) is None else f"{100 * (model[c] - prior[c]):+.1f}"
                    for c in columns
                ),
            )
    console = Console()
    first = next(iter(report["results"].values()))
    if "per_video" in first:
        videos = Table(title=f"per video ({first['convention']})")
        for col in ("video", "tIoU", "vIoU", "ID"):
            videos.add_column(col, justify="left" if col == "video" else "right")
        for key, row in first["per_video"].items():
            answer = {True: "right", False: "wrong"}.get(row["id_correct"], row["id_status"])
            videos.add_row(key, f"{row['tIoU']:.3f}", "—" if row["vIoU"] is None else f"{row['vIoU']:.3f}", answer)
        console.print(videos)
    console.print(table)
    counts = first["counts"]
    console.print(
        f"{counts['samples']} samples: {counts['predicted']} predicted, {counts['failed']} failed, "
        f"{counts['missing']} missing, {counts['unparsed_time']} without a time range; ID assessed on "
        f"{counts['id_assessed']}"
        + (
            " (not assessable: " + ", ".join(f"{k} {v}" for k, v in counts["id_not_assessable"].items()) + ")"
            if counts["id_not_assessable"]
            else ""
        )
    )
    if baseline is not None:
        a, b = baseline["time_range_s"]
        console.print(f"{baseline['name']}: {baseline['description']}; here {a:.2f}–{b:.2f} s")
