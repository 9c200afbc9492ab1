"""Weights are read from safetensors files only, and a broken file is named before a loader trips over it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import BadInputError


def check_safetensors_weights(folder: str | os.PathLike) -> None:
    """One :class:`BadInputError` line unless ``folder``'s weights are safetensors files whose headers read.

    Pickle weights (``*.bin``, ``*.pt``) are never loaded, not even with ``weights_only``: a folder holding only
    those is refused with how to convert it. A broken file (garbage, a bad header, cut short) is named."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in folder.glob(pattern))
        found = f" (only pickle files: {', '.join(pickles[:3])})" if pickles else ""
        raise BadInputError(
            f"{folder} holds no safetensors weights{found}: stvg-edge loads safetensors only; convert them, e.g. "
            "load in a trusted environment and save_pretrained(..., safe_serialization=True)"
        )
    for file in files:
        if not _safetensors_file_is_whole(file):
            raise BadInputError(
                f"{file} is not a valid safetensors file (bad header or cut short, {file.stat().st_size} bytes): "
                "download or export the weights again"
            )


def _safetensors_file_is_whole(file: Path) -> bool:
    """The 8-byte header length, a JSON header of tensor entries, and every tensor's bytes inside the file."""
    import struct

    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        header_len = struct.unpack("<Q", head)[0]
        if not 0 < header_len <= size - 8:
            return False
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False
    if not isinstance(header, dict):
        return False
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        return False
    return 8 + header_len + max(ends, default=0) <= size
