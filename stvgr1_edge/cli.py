"""`stvg-edge` command line. The CLI owns output and progress; the library only logs.

Every user error (bad input, missing dependency or weights) ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from .errors import BadInputError, StvgError

if TYPE_CHECKING:
    from .pipeline import PipelineConfig
    from .run_config import RunConfig

app = typer.Typer(
    name="stvg-edge",
    help="Spatio-temporal video grounding (STVG-R1) on edge GPUs: who does what, and when.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"stvg-edge {version('stvg-edge')}")
        except PackageNotFoundError:  # run from a checkout that is not installed
            from . import __version__

            typer.echo(f"stvg-edge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log library progress (INFO) to stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if not verbose:
        _quiet_third_party()


def _quiet_third_party() -> None:
    """Keep transformers' and the hub's progress bars and advice off the terminal: the CLI owns the output."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its HTTP retry chatter
    if "transformers" in sys.modules:  # already imported (e.g. main() called in-process): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


# --- options shared by run, predict and serve: the models and how they run -----------------------
MODEL_OPTION = typer.Option(
    None,
    "--model",
    help="Grounding VLM (Qwen2.5-VL): hub ID, local folder or nano \\[default: the STVG-R1 7B checkpoint].",
)
BUNDLE_OPTION = typer.Option(
    None,
    "--bundle",
    help="Exported bundle (stvg-edge export): its language model, vision encoder and tracker (if it has one).",
)
QUANT_OPTION = typer.Option(
    None,
    "--quant",
    help="none or nf4 (bitsandbytes 4-bit: CUDA, or CPU where bitsandbytes has CPU 4-bit kernels) \\[default: none].",
)
TRACKER_OPTION = typer.Option(None, "--tracker", help="classical (no weights), sam2 or edgetam \\[default: classical].")
TRACKER_MODEL_OPTION = typer.Option(
    None, "--tracker-model", help="SAM2.1/EdgeTAM weights (hub ID or folder) for --tracker sam2|edgetam."
)
DETECTOR_OPTION = typer.Option(
    None, "--detector", help="Keyframe detector for sam2/edgetam: hub ID, folder, or classical."
)
TRACK_EVERY_OPTION = typer.Option(
    None, "--track-every", help="Track every k-th frame; the VLM's sampled frames are always tracked \\[default: 1]."
)
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
DTYPE_OPTION = typer.Option(None, "--dtype", help="auto, bf16, fp16 or fp32 \\[default: auto].")
MAX_NEW_TOKENS_OPTION = typer.Option(1024, "--max-new-tokens", min=1, help="Most tokens generated per query.")


# --- synth ---------------------------------------------------------------------------------------
@app.command()
def synth(
    out_dir: Path = typer.Argument(..., help="Output folder: videos/*.mp4 and annotations.json are written here."),
    num: int = typer.Option(8, "--num", "-n", min=1, help="Number of clips."),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed; the same seed gives byte-identical annotations."),
    width: int = typer.Option(320, help="Frame width in pixels (even)."),
    height: int = typer.Option(240, help="Frame height in pixels (even)."),
    fps: float = typer.Option(10.0, help="Frame rate of the clips."),
    seconds: float = typer.Option(8.0, help="Clip length in seconds."),
) -> None:
    """Synthesize STVG clips with known tracks, events and queries (HCSTVG-v2 annotations)."""
    from rich.console import Console
    from rich.progress import Progress

    from .errors import check_output_dir
    from .synth import SynthConfig, write_synthetic_dataset

    check_output_dir(out_dir, "OUT_DIR")
    cfg = SynthConfig(width=width, height=height, fps=fps, seconds=seconds)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("synthesizing clips", total=num)
        ann = write_synthetic_dataset(
            out_dir, num=num, seed=seed, config=cfg, on_clip=lambda _key: progress.advance(task)
        )
    typer.echo(f"wrote {num} clips and {ann}")


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
    _check_choice("--convention", convention, (*CONVENTIONS, "both"))
    _check_choice("--baseline", baseline, ("prior",))
    if json_out not in (None, "-"):
        check_output_file(Path(json_out), "--json")
    conventions = tuple(CONVENTIONS) if convention == "both" else (convention,)
    report = evaluate_files(files[:-1], files[-1], conventions, per_video=per_video, baseline=baseline)
    if json_out == "-":
        _echo_json(report)
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
    config = _run_config(
        pipeline=PipelineConfig(time_only=time_only),
        model=model,
        bundle=None if bundle is None else str(bundle),
        quant=quant,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
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


# --- track ---------------------------------------------------------------------------------------
@app.command()
def track(
    video: str = typer.Argument(..., help="Video file or URL to track (any format PyAV/FFmpeg opens)."),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Tracks file to write (default: VIDEO_STEM.tracks.json, or .mot.txt with --format mot).",
    ),
    vis: Optional[Path] = typer.Option(None, "--vis", help="Also write an annotated MP4 (boxes + IDs) here."),
    tracker: str = typer.Option("classical", "--tracker", help="classical (no weights), sam2 or edgetam."),
    tracker_model: Optional[str] = typer.Option(
        None, "--tracker-model", help="SAM2.1/EdgeTAM weights: hub ID or local folder (sam2/edgetam only)."
    ),
    detector: Optional[str] = typer.Option(
        None, "--detector", help="Keyframe detector for sam2/edgetam: hub ID, folder, or classical."
    ),
    every: int = typer.Option(1, "--every", min=1, help="Track every k-th frame (others are interpolated later)."),
    keyframe_interval: int = typer.Option(
        15, "--keyframe-interval", min=1, help="Re-detect every this many tracked frames (sam2/edgetam)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (model trackers)."),
    fmt: str = typer.Option(
        "json", "--format", help="json (stvg-edge's tracks JSON) or mot (MOTChallenge text: frame,id,x,y,w,h,...)."
    ),
) -> None:
    """Track every object with a consistent integer ID; write the tracks JSON (and an annotated MP4)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .errors import check_output_file
    from .grounding import resolve_device
    from .render import draw_tracks
    from .tracking.factory import make_tracker
    from .video import VideoWriter, iter_frames, probe_video

    _check_choice("--format", fmt, ("json", "mot"))
    info = probe_video(video)
    suffix = ".tracks.json" if fmt == "json" else ".mot.txt"
    output = output if output is not None else Path(f"{Path(video.split('?')[0]).stem or 'video'}{suffix}")
    check_output_file(output, "--output")
    if vis is not None:
        check_output_file(vis, "--vis")
    streaming_tracker = make_tracker(
        tracker,
        model=tracker_model,
        detector=detector,
        device=resolve_device(device),
        every=every,
        keyframe_interval=keyframe_interval,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("tracking", total=info.num_frames)
        tracks = streaming_tracker.track_video(
            str(video), info=info, on_frame=lambda f: progress.update(task, completed=f.index + 1)
        )
        if vis is not None:  # written before the JSON: a failure leaves neither file behind
            task = progress.add_task("rendering", total=info.num_frames)
            with VideoWriter(vis, info.fps, info.width, info.height) as writer:
                for frame in iter_frames(video, info=info):
                    writer.write(draw_tracks(frame.image, tracks.objects_at(frame.index)))
                    progress.advance(task)
    if fmt == "mot":
        from .mot import write_mot

        write_mot(tracks, output)
    else:
        tracks.save(output)
    typer.echo(f"{len(tracks)} tracks over {info.num_frames} frames -> {output}" + (f", {vis}" if vis else ""))


NO_ANSWER_EXIT = 3
"""``run --strict``: at least one query's answer could not be parsed (the result is written all the same)."""


# --- run ----------------------------------------------------------------------------------------
@app.command()
def run(
    video: str = typer.Argument(
        ...,
        help="Video file, stream URL (rtsp://, http(s)://), camera (/dev/video0) or - for a container piped on stdin.",
    ),
    queries: List[str] = typer.Argument(..., help="One or more sentences describing who does what."),
    output: Optional[str] = typer.Option(
        None,
        "--output",
        "-o",
        help="Result JSON to write, - for stdout \\[default: result.json; --window: result.jsonl, a line a window].",
    ),
    vis: Optional[Path] = typer.Option(
        None, "--vis", help="Also write an MP4 showing each query's tube over its time range."
    ),
    model: Optional[str] = MODEL_OPTION,
    bundle: Optional[Path] = BUNDLE_OPTION,
    quant: Optional[str] = QUANT_OPTION,
    tracker: Optional[str] = TRACKER_OPTION,
    tracker_model: Optional[str] = TRACKER_MODEL_OPTION,
    detector: Optional[str] = DETECTOR_OPTION,
    track_every: Optional[int] = TRACK_EVERY_OPTION,
    keyframe_interval: Optional[int] = typer.Option(
        None, "--keyframe-interval", help="Re-detect every this many tracked frames (sam2/edgetam) \\[default: 15]."
    ),
    tracks: Optional[Path] = typer.Option(
        None, "--tracks", help="Reuse a tracks JSON from `stvg-edge track` instead of tracking again."
    ),
    duration: Optional[float] = typer.Option(
        None, "--duration", help="Read only the first S seconds (needed for a live source unless --window is given)."
    ),
    window: Optional[float] = typer.Option(
        None, "--window", help="Answer over the last S seconds, again and again (live sources too): JSONL output."
    ),
    every: Optional[float] = typer.Option(
        None, "--every", help="With --window: answer every T seconds of video \\[default: the window's length]."
    ),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    time_only: bool = typer.Option(False, "--time-only", help="Temporal grounding only: no markers, no ID, no tube."),
    multi: bool = typer.Option(
        False, "--multi", help="Several targets: ask for every involved ID; the tube is their union box."
    ),
    id_repair: bool = typer.Option(False, "--id-repair", help="Lenient ID repair of the reference evaluation (§6)."),
    frame_memory_mb: float = typer.Option(
        1024.0,
        "--frame-memory-mb",
        min=0,
        help="Sampled frames wait for the final tracks in memory up to this many "
        "MB, then in a temporary folder (lower it on small devices).",
    ),
    max_new_tokens: int = MAX_NEW_TOKENS_OPTION,
    strict: bool = typer.Option(
        False, "--strict", help=f"Exit with code {NO_ANSWER_EXIT} when any query's answer cannot be parsed."
    ),
) -> None:
    """Ground QUERY in VIDEO: target ID(s), time range and the tube (box per frame)."""
    import tempfile

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .errors import check_output_file, write_json_atomic
    from .live import STDIN, is_live, record, run_in_background
    from .pipeline import PipelineConfig
    from .prompt import normalize_query
    from .run_config import build_pipeline
    from .video import iter_frames, probe_video

    if every is not None and window is None:
        raise BadInputError(
            "--every is the step between answers of --window: add --window S, or use --track-every K to track every "
            "k-th frame"
        )
    if window is not None and vis is not None:
        raise BadInputError("--vis draws one clip's tubes: with --window every window has its own; drop --vis")
    if window is not None and tracks is not None:
        raise BadInputError("--tracks replays one file's tracks: a --window run tracks each window; drop --tracks")
    for flag, value in (("--duration", duration), ("--window", window), ("--every", every)):
        if value is not None and not value > 0:
            raise BadInputError(f"{flag} {value}: give a positive number of seconds")
    config = _run_config(
        pipeline=PipelineConfig(
            time_only=time_only, multi_object=multi, id_repair=id_repair, frame_memory_mb=frame_memory_mb
        ),
        model=model,
        bundle=None if bundle is None else str(bundle),
        quant=quant,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
        tracker=tracker,
        tracker_model=tracker_model,
        detector=detector,
        every=track_every,
        keyframe_interval=keyframe_interval,
        tracks=None if tracks is None else str(tracks),
    )
    output = output or ("result.jsonl" if window is not None else "result.json")
    if output != "-":
        check_output_file(Path(output), "--output")  # outputs that cannot be written fail before any work is done
    if vis is not None:
        check_output_file(vis, "--vis")
    for q in queries:
        normalize_query(q)
    if window is not None:
        _run_windows(config, video, queries, output, window, every, duration, strict)
        return
    if is_live(video) and video != STDIN and duration is None:
        raise BadInputError(
            f"{video} is a live source with no end: give --duration S (answer on its first S seconds) or --window S "
            "(answer over the last S seconds, again and again)"
        )
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="stvg-edge-live-") as spool:
        source = video
        if video == STDIN or duration is not None:  # a stream, or a cut: its packets to a file, then as any file
            with console.status(f"reading {'standard input' if video == STDIN else video}"):
                source = str(run_in_background(lambda: record(video, Path(spool) / "source.mkv", duration)))
        info = probe_video(source)  # fail on bad input before loading any model
        next(iter_frames(source, stop=1, info=info))  # ... including a stream whose frames do not decode
        if tracks is not None:
            from .tracking.replay import ReplayTracker
            from .tracks import TrackSet

            ReplayTracker(TrackSet.load(tracks), source=str(tracks)).start(info)  # the tracks are for this video
        with console.status(f"loading {bundle or model or 'the grounding model'}"):
            pipeline = build_pipeline(config)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _FramesPerSecondColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            bar = progress.add_task("decode + track", total=info.num_frames)
            result = pipeline.run(
                source,
                queries,
                on_frame=lambda f: progress.update(bar, completed=f.index + 1),
                on_stage=lambda s: progress.update(bar, description=f"{s}"),
            )
        result.video = video
        if vis is not None:  # the video first: a failure there leaves no result JSON behind either
            from .vis import write_tube_video

            write_tube_video(source, result, vis)
    if output == "-":
        _echo_json(result.to_dict())
    else:
        write_json_atomic(output, result.to_dict(), indent=1)
    _print_run_summary(result, output, vis)
    unparsed = [i + 1 for i, q in enumerate(result.queries) if not q.answer.parse_ok]
    if unparsed:  # the result says parse_ok: false; the user hears it too, on stderr
        reason = result.queries[unparsed[0] - 1].answer.reason
        typer.echo(f"warning: no answer could be parsed for query {', '.join(map(str, unparsed))} ({reason})", err=True)
        if strict:
            raise typer.Exit(NO_ANSWER_EXIT)


def _run_windows(
    config: "RunConfig",
    video: str,
    queries: List[str],
    output: str,
    window: float,
    every: Optional[float],
    duration: Optional[float],
    strict: bool,
) -> None:
    """`run --window`: one `run` result a window, each a JSON line written (and flushed) as soon as it is answered;
    Ctrl-C keeps every line already written."""
    import itertools
    import os

    from rich.console import Console

    from .live import in_background, sliding_windows, stream_frames
    from .run_config import build_pipeline

    console = Console(stderr=True)
    frames = in_background(stream_frames(video, duration_s=duration))  # read on while the model answers
    first = next(frames, None)  # a source that cannot be read fails before any model loads
    if first is None:
        raise BadInputError(f"{video}: no video frames could be read")
    frames = itertools.chain([first], frames)
    with console.status(f"loading {config.bundle or config.model or 'the grounding model'}"):
        pipeline = build_pipeline(config)
    sink = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")
    written, unparsed = 0, 0
    try:
        for w in sliding_windows(frames, window, every, source=video):
            result = pipeline.run_frames(w.frames, w.info, queries)
            line = {"window": w.to_dict(), **result.to_dict()}
            sink.write(json.dumps(line, ensure_ascii=False) + "\n")
            sink.flush()
            if sink is not sys.stdout:
                os.fsync(sink.fileno())
            written += 1
            unparsed += sum(not q.answer.parse_ok for q in result.queries)
            answers = "; ".join(
                f"ID {','.join(map(str, q.answer.ids)) or '—'} {q.answer.start_s:.1f}–{q.answer.end_s:.1f} s"
                if q.answer.has_time_range
                else "no answer"
                for q in result.queries
            )
            console.print(f"window {w.index} [{w.start_s:.1f}–{w.end_s:.1f} s]: {answers}")
    finally:
        if sink is not sys.stdout:
            sink.close()
    console.print(f"{written} windows answered -> {'stdout' if output == '-' else output}")
    if unparsed and strict:
        raise typer.Exit(NO_ANSWER_EXIT)


def _check_choice(flag: str, value: Optional[str], choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise BadInputError(f"{flag} {value!r} is not one of {', '.join(choices)}")


def _run_config(pipeline: "PipelineConfig", **options: Any) -> "RunConfig":
    """The :class:`~stvgr1_edge.run_config.RunConfig` of `run`/`predict` options, checked: a choice that is not one,
    or options that conflict, fail here, before any file is read."""
    from .run_config import RunConfig, check_run_config

    _check_choice("--quant", options.get("quant"), ("none", "nf4"))
    _check_choice("--tracker", options.get("tracker"), ("classical", "sam2", "edgetam"))
    _check_choice("--dtype", options.get("dtype"), ("auto", "bf16", "fp16", "fp32"))
    config = RunConfig(**options, pipeline=pipeline)  # the choices were checked, so the strings are the typed values
    check_run_config(config)
    return config


def _FramesPerSecondColumn():  # noqa: N802 - builds a rich column; rich is imported only when a command runs
    """A progress column with the frames per second the video is read at."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class FramesPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.0f} fps" if task.speed else "", style="progress.data.speed")

    return FramesPerSecond()


def _print_run_summary(result, output: str, vis: Optional[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{Path(result.video).name}: {result.info.num_frames} frames @ {result.info.fps:.2f} fps, "
        f"{len(result.tracks)} tracks, {result.sampling.num_frames} frames to the VLM"
    )
    for col in ("query", "IDs", "time range (s)", "tube frames", "parsed"):
        table.add_column(col)
    for q in result.queries:
        a = q.answer
        span = f"{a.start_s:.2f} – {a.end_s:.2f}" if a.has_time_range else "—"
        table.add_row(q.query, ", ".join(map(str, a.ids)) or "—", span, str(len(q.tube)), "yes" if a.parse_ok else "no")
    console = Console(stderr=output == "-")  # stdout carries the JSON then
    console.print(table)
    for i, q in enumerate(result.queries):
        for w in q.warnings:
            console.print(f"[yellow]warning[/] (query {i + 1}): {w}")
    typer.echo(result.timing_line(), err=True)
    if output != "-":
        console.print(f"wrote {output}" + (f" and {vis}" if vis else ""))


# --- doctor --------------------------------------------------------------------------------------
@app.command()
def doctor() -> None:
    """What this machine can run: torch/CUDA, GPU, onnxruntime, TensorRT, int4 kernels, codecs; and which options."""
    from rich.console import Console

    from .doctor import diagnose

    with Console(stderr=True).status("checking this machine"):
        report = diagnose()
    for line in report.render():
        typer.echo(line)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


# --- serve ---------------------------------------------------------------------------------------
@app.command()
def serve(
    model: Optional[str] = MODEL_OPTION,
    bundle: Optional[Path] = BUNDLE_OPTION,
    quant: Optional[str] = QUANT_OPTION,
    tracker: Optional[str] = TRACKER_OPTION,
    tracker_model: Optional[str] = TRACKER_MODEL_OPTION,
    detector: Optional[str] = DETECTOR_OPTION,
    track_every: Optional[int] = TRACK_EVERY_OPTION,
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    max_new_tokens: int = MAX_NEW_TOKENS_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="STVG_EDGE_API_KEY", help="Require this key (Authorization: Bearer KEY)."
    ),
    cache_videos: int = typer.Option(16, "--cache-videos", min=0, help="Keep the tracks of this many videos."),
) -> None:
    """Serve grounding over HTTP with the model loaded once: POST /ground, GET /health, GET /config."""
    from rich.console import Console

    from .errors import require
    from .pipeline import PipelineConfig
    from .run_config import build_pipeline
    from .serve import serve as serve_forever

    require("fastapi", "serve", "stvg-edge serve")
    require("uvicorn", "serve", "stvg-edge serve")
    config = _run_config(
        pipeline=PipelineConfig(),
        model=model,
        bundle=None if bundle is None else str(bundle),
        quant=quant,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
        tracker=tracker,
        tracker_model=tracker_model,
        detector=detector,
        every=track_every,
    )
    console = Console(stderr=True)
    with console.status(f"loading {bundle or model or 'the grounding model'}"):
        pipeline = build_pipeline(config)
    console.print(f"serving on http://{host}:{port} (POST /ground, GET /health, GET /config); Ctrl-C stops")
    serve_forever(pipeline, host, port, api_key=api_key, cache_size=cache_videos)


# --- train / export (the optional toolchain packages) --------------------------------------------
def _run_toolchain(ctx: typer.Context, package: str, extra: str, marker_module: str) -> None:
    """Hand the remaining arguments to ``stvgr1_edge_<package>.cli.app``. The runtime never imports the toolchain
    at module level (a Jetson needs only the runtime): it is looked up here, when asked for."""
    import importlib

    from .errors import MissingDependencyError, require

    require(marker_module, extra, f"stvg-edge {package}")
    try:
        toolchain = importlib.import_module(f"stvgr1_edge_{package}.cli")
    except ImportError as exc:
        raise MissingDependencyError(
            f"stvg-edge {package} needs the stvgr1_edge_{package} package ({exc}): "
            f"install it with  pip install 'stvg-edge[{extra}]'"
        ) from None
    code = toolchain.app(args=list(ctx.args), prog_name=f"stvg-edge {package}", standalone_mode=False)
    if isinstance(code, int) and code:
        raise typer.Exit(code)


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("train", add_help_option=False, context_settings=_PASS_THROUGH)
def train_cmd(ctx: typer.Context) -> None:
    """Fine-tune the grounder: `stvg-edge train prepare|grpo|sft --help` (needs the `train` extra)."""
    _run_toolchain(ctx, "train", "train", "trl")


@app.command("export", add_help_option=False, context_settings=_PASS_THROUGH)
def export_cmd(ctx: typer.Context) -> None:
    """Write a deployable bundle (ONNX/TensorRT vision, int4/nf4 LLM, ONNX tracker): `stvg-edge export --help`."""
    _run_toolchain(ctx, "export", "export", "onnx")


# --- demo ----------------------------------------------------------------------------------------
@app.command()
def demo(
    out: Path = typer.Option(Path("stvg_demo"), "--out", "-o", help="Folder for the clip, result.json and result.mp4."),
    seed: int = typer.Option(5000, "--seed", "-s", help="Synthetic clip seed (5000+ were never trained on)."),
    model: str = typer.Option("nano", "--model", help="Grounding model (default: the packaged nano model)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
) -> None:
    """Synthesize a clip, ground its query with the packaged nano model, print the answer next to the truth."""
    from rich.console import Console
    from rich.table import Table

    from .demo import DemoConfig, run_demo
    from .errors import check_output_dir

    check_output_dir(out, "--out")

    console = Console()
    with Console(stderr=True).status("synthesizing, tracking and grounding"):
        r = run_demo(DemoConfig(out_dir=str(out), seed=seed, model=model, device=device))
    span = f"{r.answer_start_s:.2f} – {r.answer_end_s:.2f}" if r.answer_start_s is not None else "—"
    table = Table(title=f"query: {r.query}")
    for col in ("", "target ID (tracker)", "time range (s)"):
        table.add_column(col)
    table.add_row("answer", ", ".join(map(str, r.answer_ids)) or "—", span)
    table.add_row(
        "ground truth",
        "—" if r.gt_tracker_id is None else str(r.gt_tracker_id),
        f"{r.gt_start_s:.2f} – {r.gt_end_s:.2f}",
    )
    console.print(table)
    console.print(f"model text: {r.answer_text!r}")
    console.print(f"tIoU {r.tiou:.2f}, vIoU {r.viou:.2f}, ID {'correct' if r.id_correct else 'wrong'}")
    console.print(f"wrote {r.result_json} and {r.result_mp4}")


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that every ``finally`` (temporary outputs) runs."""


def _raise_terminated(_signum, _frame) -> None:
    raise _Terminated()


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point: runs the app and maps user errors to one line + exit code 2.

    Exit codes: 0 success; 2 bad input, an unwritable output, a missing dependency or missing weights (one line
    on stderr); 3 with ``run --strict`` when an answer cannot be parsed; 130 interrupted (Ctrl-C), 143 terminated
    (SIGTERM) — no output file is left half-written either way; 1 a genuine internal error (traceback). Returns the
    code (the console script passes it to ``sys.exit``)."""
    import importlib
    import signal
    import threading

    try:  # typer >= 0.26 vendors click; older typer uses the click package
        click_exceptions = importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - depends on the installed typer
        click_exceptions = importlib.import_module("click.exceptions")

    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = app(args=argv, prog_name="stvg-edge", standalone_mode=False)
    except StvgError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except click_exceptions.NoArgsIsHelpError:
        return 0  # a bare `stvg-edge`: the help was printed, nothing went wrong
    except click_exceptions.UsageError as exc:
        cmd = f" {exc.ctx.info_name}" if exc.ctx is not None and exc.ctx.parent is not None else ""
        typer.echo(f"error: {exc.format_message()} (see: stvg-edge{cmd} --help)", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    except _Terminated:
        typer.echo("terminated", err=True)
        return 143
    except OSError as exc:  # an output that cannot be written: full disk, file size limit, permissions
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}: free space or choose another output path", err=True)
        return 2
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    if isinstance(code, int) and code == 130:  # click turned Ctrl-C into an abort and returned its code
        typer.echo("interrupted", err=True)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
