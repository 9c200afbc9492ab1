"""Qwen2.5-VL's vision tower (patch embed, 2D rotary, window/full attention blocks, patch merger) as an ONNX graph
with a dynamic number of patches.

The stock ``Qwen2_5_VisionTransformerPretrainedModel.forward`` derives everything that depends on the grid (rotary
angles, window order, attention segment boundaries) with Python loops and ``.tolist()``, so an export bakes one grid
in. Here those tensors are computed outside the graph (:func:`compute_vision_side_inputs`, plain torch, reusing
transformers' own ``vision_utils`` helpers) and fed as graph inputs; the graph is only tensor algebra over them.

Attention runs per segment, batched: the segments of one kind (windows for windowed layers, frames for the
full-attention layers) are gathered into a ``(segments, max_len)`` batch, padded keys masked out, one batched
attention computed, and the valid rows scattered back. That equals the stock per-window loop.

fp16 graphs keep the numerically sensitive parts in fp32: the residual stream, RMSNorm, rotary, the attention
softmax. Only the linear layers and the two attention matmuls run in fp16 (their inputs cast down, outputs cast up).

int8 graphs (for CPUs) are the fp32 graph with every linear layer's weights quantized per output channel to int8
and its input quantized per call (onnxruntime's dynamic quantization, ``MatMulInteger``: integer dot products on
VNNI/AMX units); attention, norms and the residual stream stay fp32. On 2 Sapphire Rapids cores, a 3B-wide tower
over a 20 s clip's 8,960 patches took 4.6 s in int8 against 9.6 s in fp32 (output cosine 0.998, random weights).

The graph inputs (the pixels and the grid-dependent tensors) are listed in :mod:`stvgr1_edge.backends.onnx_vision`,
which computes them and runs the graph.

Output ``visual_tokens``: (M, out_hidden_size) float32, processor order — the ``pooler_output`` of the stock tower.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn

from stvgr1_edge.backends.onnx_vision import (
    INPUT_NAMES,
    METADATA_KEY,
    OUTPUT_NAME,
    compute_vision_side_inputs,
)
from stvgr1_edge.errors import BadInputError, require

logger = logging.getLogger(__name__)
ONNX_OPSET = 17


def _rotate_half(x: torch.Tensor) -> torch.Tensor:

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class VisionEncoderGraph(nn.Module):
    """The stock tower's forward with the grid-dependent tensors as inputs, reusing the tower's weights.

    The compute dtype is that of the tower's linear weights (fp32 or fp16); RMSNorm, rotary, softmax and
    the residual stream always run in fp32.
    """

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = tower
        config = tower.config
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.merged_hidden_size = tower.merger.hidden_size
        self.fullatt_block_indexes = set(config.fullatt_block_indexes)
        self.merge_unit = config.spatial_merge_size**2

    @staticmethod
    def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        weight = layer.weight
        return nn.functional.linear(x.to(weight.dtype), weight, layer.bias).float()

    @staticmethod
    def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight.float() * x

    def _attention(
        self,
        attn: nn.Module,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        gather: torch.Tensor,
        valid: torch.Tensor,
        scatter: torch.Tensor,
    ) -> torch.Tensor:
        n = x.shape[0]
        qkv = self._linear(attn.qkv, x).reshape(n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (N, H, D) fp32
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        dtype = attn.qkv.weight.dtype
        # (S, L, H, D) -> (S, H, L, D): one batch of padded segments
        q = (q * attn.scaling)[gather].transpose(1, 2).to(dtype)
        k = k[gather].transpose(1, 2).to(dtype)
        v = v[gather].transpose(1, 2).to(dtype)
        scores = torch.matmul(q, k.transpose(-1, -2)).float()
        scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1).to(dtype)
        out = torch.matmul(probs, v).float()  # (S, H, L, D)
        out = out.transpose(1, 2).reshape(-1, self.num_heads * self.head_dim)
        out = out.index_select(0, scatter)  # back to (N, H*D), sequence order
        return self._linear(attn.proj, out)

    def _mlp(self, mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
        gate = mlp.act_fn(self._linear(mlp.gate_proj, x))
        return self._linear(mlp.down_proj, gate * self._linear(mlp.up_proj, x))

    def forward(
        self,
        pixel_values,
        window_index,
        reverse_index,
        cos,
        sin,
        window_gather,
        window_valid,
        window_scatter,
        full_gather,
        full_valid,
        full_scatter,
    ):
        tower = self.tower
        conv = tower.patch_embed.proj  # kernel == stride == one patch: a linear map over the flat patch
        weight = conv.weight.reshape(conv.weight.shape[0], -1)
        x = nn.functional.linear(pixel_values.to(weight.dtype), weight).float()
        n, hidden = x.shape
        x = x.reshape(-1, self.merge_unit, hidden)[window_index].reshape(n, hidden)
        for layer_num, block in enumerate(tower.blocks):
            if layer_num in self.fullatt_block_indexes:
                segments = (full_gather, full_valid, full_scatter)
            else:
                segments = (window_gather, window_valid, window_scatter)
            x = x + self._attention(block.attn, self._rms_norm(block.norm1, x), cos, sin, *segments)
            x = x + self._mlp(block.mlp, self._rms_norm(block.norm2, x))
        merger = tower.merger
        x = self._rms_norm(merger.ln_q, x).reshape(-1, self.merged_hidden_size)
        x = self._linear(merger.mlp[2], merger.mlp[1](self._linear(merger.mlp[0], x)))
        return x[reverse_index]


def vision_encoder_graph(tower, dtype: Literal["fp32", "fp16"] = "fp32"):
    """The exportable ``nn.Module`` over ``tower`` (``model.model.visual``), in eval mode.

    fp32 shares the tower's weights; fp16 uses a half-precision copy of the linear weights (norm weights stay fp32).
    """

    if dtype not in ("fp32", "fp16"):
        raise BadInputError(f"unknown vision export dtype {dtype!r}: use fp32 or fp16")
    target = torch.float32 if dtype == "fp32" else torch.float16
    if next(tower.parameters()).dtype != target:
        tower = copy.deepcopy(tower).to(target)
    return VisionEncoderGraph(tower).eval()


def _vision_tower(model):
    """``model.model.visual`` of a ``Qwen2_5_VLForConditionalGeneration`` (or the tower itself)."""
    if hasattr(model, "blocks") and hasattr(model, "merger"):
        return model
    inner = getattr(model, "model", model)
    tower = getattr(inner, "visual", None)
    if tower is None:
        raise BadInputError(
            f"{type(model).__name__} has no vision tower at model.model.visual: pass a Qwen2.5-VL model"
        )
    return tower


def _example_inputs(vision_config, grid_thw: Sequence[int]):

    grid = torch.tensor([list(grid_thw)], dtype=torch.int64)
    patch_dim = vision_config.in_channels * vision_config.temporal_patch_size * vision_config.patch_size**2
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(int(grid.prod()), patch_dim, generator=generator)
    return (pixels, *compute_vision_side_inputs(grid, vision_config).as_tuple())


EXTERNAL_DATA_THRESHOLD_BYTES = 1 << 30
"""Towers whose weights exceed this are exported with external data (protobuf caps one file at 2 GB; a
Qwen2.5-VL-7B tower in fp32 is ~2.7 GB)."""


def external_data_path(onnx_path: str | os.PathLike) -> Path:
    """The side file holding the weights of an ONNX file saved with external data: ``<name>.onnx.data``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".data")


VISION_EXPORT_DTYPES = ("fp32", "fp16", "int8")
"""Weight formats of the exported vision graph (``stvg-edge export --vision-dtype``)."""


def _tower_bytes(tower: nn.Module, dtype: str) -> int:
    bytes_per_weight = {"fp32": 4, "fp16": 2, "int8": 1}[dtype]
    return sum(p.numel() for p in tower.parameters()) * bytes_per_weight


def export_vision_encoder(
    model,
    out_path: str | os.PathLike,
    dtype: Literal["fp32", "fp16", "int8"] = "fp32",
    example_grid_thw: Sequence[int] = (2, 16, 20),
    external_data: bool | None = None,
) -> Path:
    """Export ``model``'s vision tower (incl. the patch merger) to ``out_path`` as ONNX with dynamic patches.

    Uses the TorchScript exporter (``dynamo=False``, opset 17), which needs no extra package and gives a graph
    whose every size is symbolic; the vision config is stored in the model metadata for
    :class:`OnnxVisionEncoder`. ``example_grid_thw`` only shapes the trace: choose one with more than one window
    per frame and padded windows (the default 16x20 patches gives 2x3 windows, some partial).

    ``external_data``: write the weights to :func:`external_data_path` next to the graph (one side file) instead
    of inside it; ``None`` (default) does so when the weights exceed :data:`EXTERNAL_DATA_THRESHOLD_BYTES`.
    Load such a graph by path (``onnx.checker.check_model(path)``, ``onnxruntime.InferenceSession(path)``).

    ``dtype="int8"`` traces the fp32 graph, then quantizes its linear layers (see the module doc; needs
    onnxruntime at export time).
    """

    require("onnx", "export", "ONNX export")
    import onnx

    if dtype not in VISION_EXPORT_DTYPES:
        raise BadInputError(f"unknown vision export dtype {dtype!r}: use one of {', '.join(VISION_EXPORT_DTYPES)}")
    if dtype == "int8":
        require("onnxruntime", "export", "int8 vision export")
    tower = _vision_tower(model)
    config = tower.config
    if external_data is None:
        external_data = _tower_bytes(tower, dtype) > EXTERNAL_DATA_THRESHOLD_BYTES
    graph = vision_encoder_graph(tower, "fp16" if dtype == "fp16" else "fp32")
    device = next(graph.parameters()).device
    example = tuple(t.to(device) for t in _example_inputs(config, example_grid_thw))
    dynamic_axes = {
        "pixel_values": {0: "num_patches"},
        "window_index": {0: "num_merged"},
        "reverse_index": {0: "num_merged"},
        "cos": {0: "num_patches"},
        "sin": {0: "num_patches"},
        "window_gather": {0: "num_windows", 1: "window_len"},
        "window_valid": {0: "num_windows", 1: "window_len"},
        "window_scatter": {0: "num_patches"},
        "full_gather": {0: "num_frames", 1: "frame_len"},
        "full_valid": {0: "num_frames", 1: "frame_len"},
        "full_scatter": {0: "num_patches"},
        OUTPUT_NAME: {0: "num_merged"},
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data_path = external_data_path(out_path)
    # build in a scratch folder next to the output (the exporter itself spills > 2 GB graphs into one file per
    # tensor there), then move the data file and the graph into place, the graph last
    with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.", dir=out_path.parent) as scratch, torch.no_grad():
        traced = Path(scratch) / "traced.onnx"
        torch.onnx.export(
            graph,
            example,
            str(traced),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
        )
        proto = onnx.load(str(traced))  # pulls in any external data the exporter wrote
        meta = proto.metadata_props.add()
        meta.key, meta.value = METADATA_KEY, json.dumps(config.to_dict(), sort_keys=True, default=str)
        dtype_meta = proto.metadata_props.add()
        dtype_meta.key, dtype_meta.value = "weights_dtype", dtype
        final = Path(scratch) / out_path.name
        if dtype == "int8":
            _quantize_linears_int8(proto, Path(scratch), final, external_data)
        elif external_data:
            onnx.save_model(
                proto,
                str(final),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_path.name,
                size_threshold=1024,
            )
        else:
            onnx.save(proto, str(final))
        if external_data:
            os.replace(Path(scratch) / data_path.name, data_path)
        else:
            data_path.unlink(missing_ok=True)
        os.replace(final, out_path)
    logger.info(
        "exported vision encoder (%s, %d blocks%s) to %s",
        dtype,
        len(tower.blocks),
        ", external data" if external_data else "",
        out_path,
    )
    return out_path


def _quantize_linears_int8(proto, scratch: Path, final: Path, external_data: bool) -> None:
    """Write ``proto`` (the fp32 graph) to ``final`` with its linear layers (``Gemm``, and ``MatMul`` by a weight)
    int8 weight-quantized per output channel, inputs quantized per call; ``final``'s weights go to
    :func:`external_data_path` when ``external_data``. The quantizer keeps the graph's metadata (the vision config
    the runtime reads)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = scratch / "fp32.onnx"
    # the quantizer reads a path; a graph over protobuf's 2 GB goes through an external data file
    onnx.save_model(proto, str(fp32), save_as_external_data=True, location="fp32.onnx.data", size_threshold=1024)
    # the quantizer advises (on the root logger) its shape-inference pre-pass, which only matters for the op types
    # it cannot see the shapes of; ours are Gemm/MatMul by constant weights, so the advice is dropped
    advice = lambda record: not record.getMessage().startswith("Please consider to run pre-processing")  # noqa: E731
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(
            fp32,
            final,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
            use_external_data_format=external_data,
        )
    finally:
        logging.getLogger().removeFilter(advice)
