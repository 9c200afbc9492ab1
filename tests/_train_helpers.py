"""Shared builders for the train/ tests: small synthetic datasets, a prepared cache, a saved tiny model."""

from __future__ import annotations

import json
from pathlib import Path

SMALL = dict(width=160, height=120, fps=5.0, seconds=4.0)
"""A small clip: 20 frames, 8 sampled frames at 112x168 (96 patches a frame, 96 visual tokens)."""
WIDE = dict(width=128, height=96, fps=5.0, seconds=6.0)
"""Another grid: 30 frames, 12 sampled frames at 112x140 (a different video_grid_thw)."""


def write_mixed_synthetic(root: Path, num_small: int = 3, num_wide: int = 2) -> Path:
    """Two synthetic datasets of different resolution and length, merged into ``root/annotations.json``."""
    from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset

    merged = {}
    for name, cfg, num, seed in (("small", SMALL, num_small, 11), ("wide", WIDE, num_wide, 12)):
        if num == 0:
            continue
        ann = write_synthetic_dataset(root / name, num=num, seed=seed, config=SynthConfig(**cfg))
        for key, entry in json.loads(ann.read_text()).items():
            entry["video_path"] = f"{name}/{entry['video_path']}"
            merged[key] = entry
    path = root / "annotations.json"
    path.write_text(json.dumps(merged))
    return path
