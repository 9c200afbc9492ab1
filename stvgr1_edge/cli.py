"""`stvg-edge` command line. The CLI owns output and progress; the library only logs.

Every user error (bad input, missing dependency or weights) ends in one line on stderr and exit code 2. The commands
live by what they work on: :mod:`.cli_video` (run, track, synth, demo), :mod:`.cli_dataset` (predict, eval),
:mod:`.cli_service` (serve, doctor); :mod:`.cli_common` holds the app and the options they share. Importing them
here registers them, in the order `stvg-edge --help` lists them.
"""

from __future__ import annotations

from typing import List, Optional

import typer

from . import cli_video  # noqa: F401 - registers run, track, synth, demo (listed first)

# isort: split
from . import cli_dataset, cli_service  # noqa: F401 - registers predict, eval, doctor, serve

# isort: split
from .cli_common import NO_ANSWER_EXIT, app
from .errors import StvgError

__all__ = ["NO_ANSWER_EXIT", "app", "main"]


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
