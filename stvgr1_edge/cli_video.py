"""`stvg-edge` commands on one video: `run` (files, streams, live windows), `track`, `synth` and `demo`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

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
    NO_ANSWER_EXIT,
    QUANT_OPTION,
    TRACK_EVERY_OPTION,
    TRACKER_MODEL_OPTION,
    TRACKER_OPTION,
    WEIGHTS_OPTION,
    app,
    apply_memory_settings,
    check_choice,
    echo_json,
    fps_column,
    run_config_of,
)
from .errors import BadInputError

if TYPE_CHECKING:
    from .run_config import RunConfig


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
    engine: Optional[str] = ENGINE_OPTION,
    answer_template: bool = ANSWER_TEMPLATE_OPTION,
    answer_samples: int = ANSWER_SAMPLES_OPTION,
    weights: Optional[str] = WEIGHTS_OPTION,
    lm_head: Optional[str] = LM_HEAD_OPTION,
    hw_decode: Optional[str] = HW_DECODE_OPTION,
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
    config = run_config_of(
        pipeline=PipelineConfig(
            time_only=time_only,
            multi_object=multi,
            id_repair=id_repair,
            frame_memory_mb=frame_memory_mb,
            hw_decode=hw_decode,
        ),
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
            fps_column(),
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
        echo_json(result.to_dict())
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

    check_choice("--format", fmt, ("json", "mot"))
    apply_memory_settings(tracker)
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
