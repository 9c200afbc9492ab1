"""One exception family for everything the user can fix, and atomic output writing.

The CLI catches :class:`StvgError`, prints its message as one line on stderr and exits with code 2.
Anything else is an internal error (exit 1, traceback). Messages say what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


class StvgError(Exception):
    """A problem the user can fix: bad input, a missing dependency or missing weights."""


class BadInputError(StvgError):
    """An input file, argument or value is unusable."""


class VideoError(BadInputError):
    """A video cannot be opened or decoded."""


class AnnotationError(BadInputError):
    """An annotation or prediction file is malformed."""


class MissingDependencyError(StvgError):
    """An optional dependency is not installed."""


class MissingWeightsError(StvgError):
    """Model weights cannot be found locally or downloaded."""


def require(module: str, extra: str, purpose: str) -> Any:
    """Import an optional dependency lazily, or raise a one-line error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}' ({exc}): "
            f"install it with  pip install 'stvg-edge[{extra}]'"
        ) from None


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Fail now, in one line, if the output file ``path`` (given as ``flag``) cannot be written — before any work
    is done for it. Creates its folder if missing."""
    p = Path(path)
    if p.is_dir():
        raise BadInputError(f"{flag} {p} is a folder: give a file path")
    _check_writable_folder(p.parent, f"{flag} {p}")
    return p


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Fail now, in one line, if the output folder ``path`` (given as ``flag``) cannot be written. Creates it if
    missing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise BadInputError(f"{flag} {p} is a file: give a folder path")
    _check_writable_folder(p, f"{flag} {p}")
    return p


def _check_writable_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".stvg-edge-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadInputError(f"cannot write {what}: {exc.strerror or exc} ({folder}): choose another path") from None


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    A failed run never leaves a half-written output file behind.
    """
    final = Path(path)
    if final.parent and not final.parent.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else final.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; it replaces ``path`` only if the block succeeds.

    For outputs that are whole folders (bundles, quantized models): a failed export never leaves a partial
    folder behind, and an existing one is replaced only by a complete new one.
    """
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (sorted keys for byte-stable output)."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, sort_keys=True, ensure_ascii=False)
            f.write("\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, turning every failure into one clear :class:`BadInputError` line."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{what} not found: {p}")
    if p.is_dir():
        raise BadInputError(f"{what} is a directory, expected a file: {p}")
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError:
        raise BadInputError(f"{what} is not UTF-8 text: {p}") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): {p}"
        ) from None
