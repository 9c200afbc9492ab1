"""`stvg-edge` command line. The CLI owns output and progress; the library only logs.

Every user error (bad input, missing dependency or weights) ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import StvgError

app = typer.Typer(
    name="stvg-edge",
    help="Spatio-temporal video grounding (STVG-R1) on edge GPUs: who does what, and when.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log library progress (INFO) to stderr.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


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
    from rich.progress import Progress

    from .synth import SynthConfig, write_synthetic_dataset

    cfg = SynthConfig(width=width, height=height, fps=fps, seconds=seconds)
    with Progress(transient=True) as progress:
        task = progress.add_task("synthesizing clips", total=num)
        ann = write_synthetic_dataset(out_dir, num=num, seed=seed, config=cfg,
                                      on_clip=lambda _key: progress.advance(task))
    typer.echo(f"wrote {num} clips and {ann}")


# --- eval ----------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    pred: Path = typer.Argument(..., help="Predictions JSON ({video key: {ids, start_s, end_s, tube}}) or a `run` result JSON."),
    gt: Path = typer.Argument(..., help="Ground truth in the HCSTVG-v2 format (e.g. `stvg-edge synth` annotations.json)."),
    convention: str = typer.Option("tubedetr", help="tubedetr (standard, frame-based) or stvg-r1 (the reference script's)."),
) -> None:
    """Score predictions: m_tIoU, m_vIoU, vIoU@R, ID accuracy, tIoU@R (and J&F for masks)."""
    from .metrics import evaluate_files

    _echo_json(evaluate_files(pred, gt, convention=convention))


# --- track (tracking issue) ---------------------------------------------------------------------


# --- run (grounding issue) -----------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point: runs the app and maps user errors to one line + exit code 2.

    Returns the exit code (the console script passes it to ``sys.exit``)."""
    try:  # typer >= 0.26 vendors click; older typer uses the click package
        from typer._click import exceptions as click_exceptions
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions as click_exceptions

    try:
        app(args=argv, prog_name="stvg-edge", standalone_mode=False)
    except StvgError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except click_exceptions.UsageError as exc:
        cmd = f" {exc.ctx.info_name}" if exc.ctx is not None and exc.ctx.parent is not None else ""
        typer.echo(f"error: {exc.format_message()} (see: stvg-edge{cmd} --help)", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
