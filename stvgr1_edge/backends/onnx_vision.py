"""Runs the vision tower exported by ``stvg-edge export`` with onnxruntime: a drop-in for
``model.model.get_video_features``.

The graph takes the grid-dependent tensors (rotary tables, window order, attention segments) as inputs, computed
here once per distinct video grid (:func:`compute_vision_side_inputs`, the same transformers helpers the stock tower
uses), so one graph serves every clip size. The graph inputs are:

Graph inputs (``N`` patches, ``M = N / merge_size**2`` merged tokens):

=================  =========================  ==========================================================
name               shape / dtype              meaning
=================  =========================  ==========================================================
pixel_values       (N, C*Tp*P*P) float        processor patches (``pixel_values_videos``), processor order
window_index       (M,) int64                 merged-token order used inside the tower (window order)
reverse_index      (M,) int64                 its inverse permutation (``argsort(window_index)``)
cos, sin           (N, head_dim) float32      rotary tables, already in window order
window_gather      (Sw, Lw) int64             window-order positions of each window, padded with 0
window_valid       (Sw, Lw) bool              which slots of ``window_gather`` are real
window_scatter     (N,) int64                 flat slot ``s * Lw + l`` of every token, to undo the gather
full_gather/...    (Sf, Lf) / (N,)            the same for the full-attention layers (one segment per frame)
=================  =========================  ==========================================================

"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import BadInputError, require
from .ort_threads import session_options as ort_session_options

logger = logging.getLogger(__name__)


INPUT_NAMES = (
    "pixel_values",
    "window_index",
    "reverse_index",
    "cos",
    "sin",
    "window_gather",
    "window_valid",
    "window_scatter",
    "full_gather",
    "full_valid",
    "full_scatter",
)
OUTPUT_NAME = "visual_tokens"
METADATA_KEY = "qwen2_5_vl_vision_config"
"""ONNX metadata key holding the vision config JSON (the runtime rebuilds the side inputs from it)."""


@dataclass(frozen=True)
class AttentionSegments:
    """Contiguous attention segments of the window-ordered sequence, laid out as one padded batch."""

    gather: torch.Tensor
    """(segments, max_len) int64: sequence position of slot ``l`` of segment ``s`` (0 in padded slots)."""
    valid: torch.Tensor
    """(segments, max_len) bool: True where the slot holds a real token."""
    scatter: torch.Tensor
    """(N,) int64: flat slot ``s * max_len + l`` holding token ``n`` (inverse of ``gather``)."""


@dataclass(frozen=True)
class VisionSideInputs:
    """Everything grid-dependent the vision graph needs besides the pixels (see the module table)."""

    window_index: torch.Tensor
    reverse_index: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    window: AttentionSegments
    full: AttentionSegments

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        """The graph inputs after ``pixel_values``, in :data:`INPUT_NAMES` order."""
        return (
            self.window_index,
            self.reverse_index,
            self.cos,
            self.sin,
            self.window.gather,
            self.window.valid,
            self.window.scatter,
            self.full.gather,
            self.full.valid,
            self.full.scatter,
        )


def segments_from_cu_seqlens(cu_seqlens: torch.Tensor) -> AttentionSegments:
    """Padded-batch layout of the segments ``[cu[i], cu[i+1])`` (zero-length segments dropped)."""

    cu = cu_seqlens.to(torch.int64).cpu()
    lengths = cu[1:] - cu[:-1]
    keep = lengths > 0
    starts, lengths = cu[:-1][keep], lengths[keep]
    max_len = int(lengths.max())
    slot = torch.arange(max_len)
    valid = slot[None, :] < lengths[:, None]
    gather = torch.where(valid, starts[:, None] + slot[None, :], torch.zeros((), dtype=torch.int64))
    flat_slots = torch.arange(valid.numel()).reshape(valid.shape)
    scatter = flat_slots[valid]  # row-major over (segment, slot) = sequence order, segments being contiguous
    return AttentionSegments(gather=gather, valid=valid, scatter=scatter)


def compute_vision_side_inputs(grid_thw: torch.Tensor, vision_config) -> VisionSideInputs:
    """The grid-dependent graph inputs for ``grid_thw`` ((videos, 3) T/H/W patch grids), as the stock tower
    computes them in its ``forward`` (same transformers helpers, same order)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionRotaryEmbedding
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

    grid_thw = torch.as_tensor(grid_thw, dtype=torch.int64).reshape(-1, 3).cpu()
    merge = vision_config.spatial_merge_size
    if bool(((grid_thw[:, 1:] % merge) != 0).any()):
        raise BadInputError(
            f"video grid {grid_thw.tolist()} is not a multiple of the merge size {merge} in H/W: "
            "use the Qwen2.5-VL processor's patches"
        )
    merge_unit = merge * merge
    num_patches = int(grid_thw.prod(-1).sum())

    position_ids = get_vision_position_ids(grid_thw, merge)
    window_index, cu_window_seqlens = get_vision_window_index(
        grid_thw, spatial_merge_size=merge, window_size=vision_config.window_size, patch_size=vision_config.patch_size
    )
    cu_seqlens = get_vision_cu_seqlens(grid_thw)

    rotary = Qwen2_5_VLVisionRotaryEmbedding(vision_config)
    cos, sin = rotary(torch.empty(0), position_ids)

    def to_window_order(table: torch.Tensor) -> torch.Tensor:
        return table.reshape(num_patches // merge_unit, merge_unit, -1)[window_index].reshape(num_patches, -1)

    return VisionSideInputs(
        window_index=window_index.to(torch.int64),
        reverse_index=torch.argsort(window_index).to(torch.int64),
        cos=to_window_order(cos).float().contiguous(),
        sin=to_window_order(sin).float().contiguous(),
        window=segments_from_cu_seqlens(cu_window_seqlens),
        full=segments_from_cu_seqlens(cu_seqlens),
    )


def session_options(intra_op_num_threads: int = 0):
    """onnxruntime ``SessionOptions`` for the exported graphs: all graph optimizations, errors-only logging and the
    process's threading (:func:`~.ort_threads.session_options`: a pool of ``intra_op_num_threads`` whose idle
    workers do not spin, 0 letting onnxruntime choose one per physical core, or the shared pool)."""
    ort = require("onnxruntime", "export", "running an exported graph")
    options = ort_session_options(intra_op_num_threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def split_per_video(
    tokens: torch.Tensor,
    grid_thw: torch.Tensor,
    spatial_merge_size: int,
    dtype: torch.dtype | None = None,
    device: Any = None,
):
    """``get_video_features``-style output: ``pooler_output`` is a tuple with one (tokens, hidden) tensor per
    video (cast to ``dtype`` / moved to ``device`` when given)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    tokens = tokens.to(device=device, dtype=dtype or tokens.dtype)
    split_sizes = (grid_thw.prod(-1) // spatial_merge_size**2).tolist()
    per_video = torch.split(tokens, split_sizes)  # a tuple, as the stock tower returns it (typed as one tensor)
    return BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=per_video)  # type: ignore[arg-type]


def grid_key(grid_thw) -> tuple[tuple[int, int, int], ...]:
    """Hashable form of a (videos, 3) grid, the key of the side-input caches."""
    return tuple((int(t), int(h), int(w)) for t, h, w in torch.as_tensor(grid_thw).reshape(-1, 3).tolist())


class OnnxVisionEncoder:
    """Runs an exported vision encoder with onnxruntime; a drop-in for ``model.model.get_video_features``.

    The grid-dependent side inputs are computed once per distinct ``grid_thw`` (LRU of ``cache_size`` grids):
    a deployment sees few distinct grids, so each call then costs only the pixel copy and the session run.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int = 0,
        cache_size: int = 8,
    ) -> None:
        ort = require("onnxruntime", "export", "running the ONNX vision encoder")
        from transformers import Qwen2_5_VLVisionConfig

        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"ONNX vision encoder not found: {path}: export one with export_vision_encoder")
        # by path, so onnxruntime finds an external-data side file next to the graph
        self.session = ort.InferenceSession(
            str(path),
            sess_options=session_options(intra_op_num_threads),
            providers=list(providers or ["CPUExecutionProvider"]),
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise BadInputError(f"{path} has no {METADATA_KEY!r} metadata: re-export it with export_vision_encoder")
        self.config = Qwen2_5_VLVisionConfig(**json.loads(meta[METADATA_KEY]))
        self.path = path
        self.side_feed = functools.lru_cache(maxsize=cache_size)(self._side_feed)
        """``grid key -> {input name: numpy array}`` for the side inputs, cached (see :func:`grid_key`)."""

    def _side_feed(self, key: tuple[tuple[int, int, int], ...]) -> dict[str, Any]:
        side = compute_vision_side_inputs(torch.tensor(key, dtype=torch.int64), self.config)
        return {name: t.numpy() for name, t in zip(INPUT_NAMES[1:], side.as_tuple())}

    def run_numpy(self, pixel_values, grid_thw) -> Any:
        """(M, out_hidden_size) float32 numpy array of merged visual tokens, processor order."""
        import numpy as np

        pixels = torch.as_tensor(pixel_values).detach()
        feed = {"pixel_values": np.ascontiguousarray(pixels.to("cpu", torch.float32).numpy())}
        feed.update(self.side_feed(grid_key(grid_thw)))
        return self.session.run([OUTPUT_NAME], feed)[0]

    def __call__(self, pixel_values, grid_thw, dtype: torch.dtype | None = None, device: Any = None):
        """Like ``get_video_features(pixel_values, grid_thw)``: ``pooler_output`` is a tuple with one
        (tokens, out_hidden_size) tensor per video (cast to ``dtype`` / moved to ``device`` when given)."""
        grid = torch.as_tensor(grid_thw, dtype=torch.int64).reshape(-1, 3).cpu()
        tokens = torch.from_numpy(self.run_numpy(pixel_values, grid))
        return split_per_video(tokens, grid, self.config.spatial_merge_size, dtype or torch.float32, device)
