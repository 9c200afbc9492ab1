"""The prepared-clip cache as a ``datasets.Dataset`` for the trainers (the format itself:
:mod:`stvgr1_edge.prepared`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stvgr1_edge.errors import BadInputError
from stvgr1_edge.prepared import load_cached_samples


def load_cached_dataset(cache_dir: str | Path, processor_constants: dict[str, Any] | None = None):
    """The cache as a ``datasets.Dataset`` of rows (:meth:`CachedSample.to_row`); checks the tensors were made
    with ``processor_constants`` (the training processor's) when given. ``cache_dir`` may name several caches
    joined by "," (``runs/nano/cache_formats,runs/nano/cache_time``): their rows, in that order."""
    from datasets import Dataset

    rows = []
    for folder in str(cache_dir).split(","):
        samples = load_cached_samples(folder)
        if processor_constants is not None:
            for s in samples:
                if s.processor and s.processor != processor_constants:
                    raise BadInputError(
                        f"sample {s.sample_id!r} was prepared with processor constants {s.processor}, "
                        f"the model's processor has {processor_constants}: rerun prepare with --model"
                    )
        rows += [s.to_row(Path(folder)) for s in samples]
    return Dataset.from_list(rows)
