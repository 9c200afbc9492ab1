"""Weight-only quantization of a loaded Qwen2.5-VL's language model at load time, for the decode engine
(:mod:`.engine`): the decoder's ``nn.Linear`` layers become :class:`~.int8.WeightOnlyInt8Linear` or
:class:`~.int4.WeightOnlyInt4Linear` (searched rounding, no calibration data), and ``lm_head`` optionally too.

Why weight-only: decoding one token is a matrix-vector product per layer, bound by how many bytes of weights are
read, not by arithmetic. Reading 1 byte (int8) or half a byte (int4) per weight instead of 2 (bf16) or 4 (fp32) is
what makes decoding faster. The vision tower is left alone (it runs once per clip, compute-bound); linears already
quantized (an int4 bundle's) are left as they are. On CPU both kernels compute in bf16 (their only fast path), so
an fp32 model's quantized linears take bf16 activations; the rest of the model keeps its dtype.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from torch import nn

from ..errors import BadInputError, require
from .int4 import (
    SUPPORTED_GROUP_SIZES,
    WeightOnlyInt4Linear,
    can_quantize,
    kernel_counts,
    quantize_weight_int4,
    set_submodule,
)
from .int8 import int8_linear_from

logger = logging.getLogger(__name__)

WEIGHT_FORMATS = ("fp", "int8", "int4", "fp32-ort")
"""Weight formats of the language model's linears: "fp" (as loaded), "int8" (per-channel), "int4" (group-wise),
"fp32-ort" (an fp32 model's own weights on onnxruntime's CPU kernel: :mod:`.fp32_ort`)."""
WeightFormat = Literal["fp", "int8", "int4", "fp32-ort"]


def int4_linear_of(linear: nn.Linear, group_size: int) -> WeightOnlyInt4Linear:
    """``linear`` as a :class:`WeightOnlyInt4Linear` packed for its device, codes from the searched rounding (the
    layer picks its kernel's compute dtype: bf16 for the CPU and CUDA kernels)."""
    codes, scales, zeros = quantize_weight_int4(linear.weight, group_size)
    return WeightOnlyInt4Linear(
        linear.in_features, linear.out_features, codes, scales, zeros, linear.bias, group_size, linear.weight.dtype
    )


def _quantized(linear: nn.Linear, fmt: str, group_size: int, name: str) -> nn.Module:
    if fmt == "fp32-ort":
        from .fp32_ort import OrtFp32Linear

        return OrtFp32Linear(linear)
    if fmt == "int8":
        return int8_linear_from(linear)
    if can_quantize(linear, group_size):
        return int4_linear_of(linear, group_size)
    shape = (linear.in_features, linear.out_features)
    logger.info("int4: keeping %s (%d -> %d) in floating point: shape does not fit the kernel", name, *shape)
    return linear


def quantize_language_model_(
    model: Any, weights: WeightFormat = "fp", lm_head: WeightFormat = "fp", group_size: int = 128
) -> dict[str, int]:
    """Swap, in place, the language model's ``nn.Linear`` layers to ``weights`` and ``lm_head`` to ``lm_head``
    (a Qwen2.5-VL: ``model.model.language_model``, ``model.lm_head``). Returns how many layers each format got.

    With tied embeddings (3B) the input embedding keeps its full-precision table: a decode step reads one row of it,
    while ``lm_head`` reads all of it."""
    for flag, value in (("weights", weights), ("lm_head", lm_head)):
        if value not in WEIGHT_FORMATS:
            raise BadInputError(f"unknown {flag} format {value!r}: use one of {', '.join(WEIGHT_FORMATS)}")
    if "int4" in (weights, lm_head) and group_size not in SUPPORTED_GROUP_SIZES:
        raise BadInputError(f"int4 group size {group_size} is not supported: use one of {SUPPORTED_GROUP_SIZES}")
    if "fp32-ort" in (weights, lm_head):
        check_fp32_ort(model)
    counts = {"int8": 0, "int4": 0, "fp32-ort": 0}
    targets = []
    if weights != "fp":
        body = model.model.language_model
        targets += [(f"model.language_model.{n}", m, weights) for n, m in body.named_modules() if type(m) is nn.Linear]
    if lm_head != "fp" and type(model.lm_head) is nn.Linear:
        targets.append(("lm_head", model.lm_head, lm_head))
    for name, linear, fmt in targets:
        new = _quantized(linear, fmt, group_size, name)
        if new is not linear:
            set_submodule(model, name, new)
            counts[fmt] += 1
    if targets:
        logger.info(
            "weight-only: %d int8, %d int4 (group %d; int4 kernels %s) and %d fp32-ort linears",
            counts["int8"],
            counts["int4"],
            group_size,
            kernel_counts(model),
            counts["fp32-ort"],
        )
    return counts


def check_fp32_ort(model: Any) -> None:
    """The "fp32-ort" format needs an fp32 language model on a CPU, onnxruntime and torch's custom ops: else one
    clear error."""
    weight = model.get_input_embeddings().weight  # the model's dtype and device (a quantized head has neither)
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        raise BadInputError(
            f"the fp32-ort format runs fp32 weights on a CPU, not {str(weight.dtype).removeprefix('torch.')} on "
            f"{weight.device.type}: add --dtype fp32 --device cpu, or use fp, int8 or int4"
        )
    require("onnx", "export", "the fp32-ort weight format")
    require("onnxruntime", "export", "the fp32-ort weight format")
    if not hasattr(torch.library, "custom_op"):
        raise BadInputError(f"the fp32-ort format needs torch >= 2.4 (this is {torch.__version__}): use fp")
