"""Runs weight-only int4 language models written by ``stvg-edge export --llm int4``: the gpt-fast-style
``nn.Linear`` swap (:class:`WeightOnlyInt4Linear`) with its kernels and packing, :func:`load_int4` for a saved
folder, and the searched rounding (:func:`quantize_weight_int4`) that chooses codes without calibration data (the
decode engine quantizes at load with it). GPTQ, which needs calibration data, is the toolchain's
(``stvgr1_edge_export.int4``).

The format is group-wise asymmetric: each row of ``W`` (out, in) is cut into groups of ``group_size`` inputs, each
with integer codes ``q`` in 0..15, a ``scale`` and a ``zero``; the kernels (torch's tinygemm ops) dequantize
``(q - 8) * scale + zero``. The rounding here puts ``zero = (8 - zp) * scale`` with an integer zero point ``zp`` (the
ONNX/GPTQ convention ``(q - zp) * scale``), which onnxruntime's kernel needs too.

Kernels, chosen by the device the module is packed on:

- ``"cuda"``: ``torch.ops.aten._weight_int4pack_mm`` (tinygemm, bf16 activations), weights packed by
  ``_convert_weight_to_int4pack`` from uint8 ``(out, in / 2)`` (even input index in the high nibble);
- ``"cpu"``: ``_weight_int4pack_mm_for_cpu`` with ``_convert_weight_to_int4pack_for_cpu`` (int32 codes);
- ``"mlas"``: a CPU layer with :data:`MLAS_FROM_IN_FEATURES` inputs or more whose zero points lie on the integer
  grid, where onnx and onnxruntime are installed:
  onnxruntime's ``MatMulNBits`` with int8 activations (:mod:`.int4_mlas`; decode under its
  :class:`~.int4_mlas.DecodingThreads`);
- ``"dequant"``: any other device (or a pre-Ampere GPU, or a torch without those ops): dequantize, then
  ``F.linear``.

The kernel layouts are device-specific, so the saved folder holds a portable form (codes packed two per byte,
scales and zeros) and loading packs for the target device. A packed model must not be moved across device
types; quantize or load it on the device it will run on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import BadInputError, read_json

SUPPORTED_GROUP_SIZES = (32, 64, 128, 256)
QUANT_FILE = "int4_quantization.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "stvg-edge-int4-v1"

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- packing
def dequantize_int4(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """fp32 (out, in) weight from group codes 0..15, per-group scales and zeros."""
    out_features, in_features = codes.shape
    groups = codes.float().reshape(out_features, in_features // group_size, group_size)
    weight = (groups - 8) * scales.float()[..., None] + zeros.float()[..., None]
    return weight.reshape(out_features, in_features)


def dequantize_packed_int4(
    packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`dequantize_int4` of :func:`pack_uint4x2` codes, cast to ``dtype`` (compiled, one pass: each element is
    the same fp32 value rounded once). ``scales``/``zeros``: (out, in / group_size)."""
    return dequantize_int4(unpack_uint4x2(packed), scales, zeros, group_size).to(dtype)


_fused_dequantize: object = None
""":func:`dequantize_packed_int4` compiled by inductor into one loop (CPU, 2048 x 11008: 120 -> 21 ms on 2 cores; in
eager every step writes a full fp32 temporary), built on first use; False once compiling failed here."""


def dequantize_for_prefill(
    packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`dequantize_packed_int4`, fused by inductor where it compiles (the kernels are kept in the engine's
    compile cache), else eager."""
    global _fused_dequantize
    if _fused_dequantize is None:
        from .engine import use_compile_cache

        use_compile_cache()
        _fused_dequantize = torch.compile(dequantize_packed_int4, dynamic=False)
    if _fused_dequantize is not False:
        try:
            return _fused_dequantize(packed, scales, zeros, group_size, dtype)  # type: ignore[operator]
        except Exception as exc:  # no C++ compiler, or inductor cannot build here: the same values, eagerly
            logger.warning("int4 prefill: dequantizing eagerly (compiling failed: %s)", str(exc).splitlines()[0])
            _fused_dequantize = False
    return dequantize_packed_int4(packed, scales, zeros, group_size, dtype)


def pack_uint4x2(codes: torch.Tensor) -> torch.Tensor:
    """(out, in) codes 0..15 -> (out, in / 2) uint8, even input index in the high nibble (tinygemm's input)."""
    codes = codes.to(torch.uint8)
    return (codes[:, ::2] << 4) | codes[:, 1::2]


def unpack_uint4x2(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_uint4x2`."""
    return torch.stack([packed >> 4, packed & 0xF], dim=-1).reshape(packed.shape[0], -1)


def pack_scales_and_zeros(scales: torch.Tensor, zeros: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(in / group, out, 2) tensor the tinygemm ops take."""
    return torch.stack([scales.t(), zeros.t()], dim=-1).to(dtype).contiguous()


def inner_k_tiles_for(in_features: int) -> int | None:
    """Largest tinygemm ``innerKTiles`` (8, 4, 2) with ``in_features % (16 * tiles) == 0``; None if none fits."""
    for tiles in (8, 4, 2):
        if in_features % (16 * tiles) == 0:
            return tiles
    return None


def kernel_for(device: torch.device) -> str:
    """ "cuda" (tinygemm), "cpu" (torch's CPU int4 kernel) or "dequant" (fallback) for ``device``."""
    if device.type == "cuda":  # tinygemm needs Ampere or newer (Jetson Orin yes, Xavier no)
        return "cuda" if torch.cuda.get_device_capability(device) >= (8, 0) else "dequant"
    if device.type == "cpu" and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return "cpu"
    return "dequant"


# ----------------------------------------------------------------------------------------------- rounding
RANGE_SHRINKS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)
"""Candidate shrinks of a group's ``[min, max]`` (1.0: plain min/max rounding). The extremes otherwise stretch the 16
levels over a range most of the group's weights do not use; the shrink with the least squared error is kept (nano
model's decoder, group 32: 5% less squared weight error than min/max)."""


def _round_to_range(groups: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Codes (float, 0..15), scales and grid starts of ``groups`` on the grid ``[lo, hi]``, widened to hold 0 and
    moved by less than half a step so that 0 is one of its levels (an integer zero point ``zp = -lo / scale``, the
    ONNX/GPTQ convention: onnxruntime's int8-activation kernel (:mod:`.int4_mlas`) reads the same codes only
    then), and each group's squared error."""
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)  # a group of one sign: [0, max] or [min, 0], not a clamped grid
    scales = ((hi - lo) / 15).clamp(min=1e-6)
    lo = -(-lo / scales).round().clamp(0, 15) * scales
    codes = ((groups - lo[..., None]) / scales[..., None]).round().clamp(0, 15)
    error = ((codes * scales[..., None] + lo[..., None] - groups) ** 2).sum(dim=-1)
    return codes, scales, lo, error


def search_int4_range(
    groups: torch.Tensor, range_shrinks: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float codes, scales and range starts ``lo`` of ``groups`` (..., group_size): each group keeps the shrink of
    its ``[min, max]`` whose codes reconstruct it with the least squared error."""
    full_lo, full_hi = groups.amin(dim=-1), groups.amax(dim=-1)
    first, *rest = range_shrinks
    codes, scales, best_lo, error = _round_to_range(groups, full_lo * first, full_hi * first)
    for shrink in rest:  # one shrink at a time: a (shrinks, out, in) stack would not fit for a 7B model's linears
        c, sc, lo, e = _round_to_range(groups, full_lo * shrink, full_hi * shrink)
        better = e < error
        codes = torch.where(better[..., None], c, codes)
        scales, best_lo = torch.where(better, sc, scales), torch.where(better, lo, best_lo)
        error = torch.where(better, e, error)
    return codes, scales, best_lo


QUANTIZE_ROWS = 4096
"""Rows quantized (and packed for the CPU kernel) at a time: the range search keeps several fp32 copies of what it
works on, which for a whole 151,936-row head were ~5 GB at once. A multiple of 64: the CPU packing lays rows out in
blocks of 64, so only such blocks pack to the same bytes apart as together."""


def quantize_weight_int4(
    weight: torch.Tensor, group_size: int, range_shrinks: Sequence[float] = RANGE_SHRINKS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes, scales, zeros)``: uint8 codes (out, in) in 0..15 and fp32 (out, in / group_size) scales and
    tinygemm zeros, so that ``w ≈ (codes - 8) * scale + zero``. Each group keeps the range ``[lo, hi] * s``
    (``s`` from ``range_shrinks``) whose codes reconstruct it with the least squared error."""
    out_features, in_features = weight.shape
    codes, scales, zeros = [], [], []
    for start in range(0, out_features, QUANTIZE_ROWS):  # rows are independent: bounded temporaries
        rows = weight[start : start + QUANTIZE_ROWS].detach().float()
        groups = rows.reshape(rows.shape[0], in_features // group_size, group_size)
        c, sc, lo = search_int4_range(groups, range_shrinks)
        codes.append(c.to(torch.uint8).reshape(rows.shape[0], in_features))
        scales.append(sc)
        zeros.append(lo + 8 * sc)
    return torch.cat(codes), torch.cat(scales), torch.cat(zeros)


def can_quantize(linear: nn.Linear, group_size: int) -> bool:
    """Shapes the kernels accept: ``in`` a multiple of the group and of 32, ``out`` a multiple of 8 (tinygemm) or
    of 16 (the CPU kernel's packing refuses others, e.g. the nano model's 1016-token head)."""
    rows = 16 if kernel_for(linear.weight.device) == "cpu" else 8
    return (
        linear.in_features % group_size == 0
        and inner_k_tiles_for(linear.in_features) is not None
        and linear.out_features % rows == 0
    )


# ----------------------------------------------------------------------------------------------- the module
DENSE_FROM_ROWS = {"cpu": 128, "mlas": 128, "cuda": 64}
"""Per kernel: inputs of this many rows (a prefill) go through one dense matmul over the weight dequantized once
(:func:`dequantize_for_prefill`) instead of the int4 kernel, whose cost grows with every row. Where the two cross
(``benchmarks/int4_prefill_rows.py``, a 7B MLP matrix in bf16): 2 CPU cores, ~128 rows (its 34 MB of codes
dequantize in ~95 ms; the kernel takes 0.8 ms a row); H200, between 32 and 64 rows (tinygemm 0.33 ms at 64 rows and
19 ms at 4096, dense 0.25 and 0.9 ms); onnxruntime's kernel takes the CPU's crossover (a 3B head: 1.9 ms a row at
512 rows). Decoding (one row) stays on the int4 kernel. Costs the codes a second time (half a byte per weight,
where the kernel's weights are)."""


MLAS_FROM_IN_FEATURES = 1024
"""CPU int4 linears with at least this many inputs run on onnxruntime's kernel (:mod:`.int4_mlas`); narrower ones
(the packaged nano model's 192-512) keep torch's, whose per-call cost is lower: nano's int4 answers took 0.54 s a
clip on onnxruntime's kernel against 0.37 s on torch's (``benchmarks/accuracy.py``, 2 CPU cores). Every
Qwen2.5-VL-3B/7B language-model linear has 2048 inputs or more."""

ZERO_POINT_TOLERANCE = 0.1
"""How far ``8 - zero / scale`` may be from an integer for a zero point to count as on the grid (bf16-saved scales
and zeros move it by up to ~0.03; zeros from a float range start are off it by up to 0.5)."""


def integer_zero_points(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor | None:
    """uint8 zero points ``zp`` with ``zero == (8 - zp) * scale`` (``w = (q - zp) * scale``), or None when some
    group's zero is off the integer grid."""
    zero_points = 8 - zeros.float() / scales.float()
    rounded = zero_points.round()
    if (rounded < 0).any() or (rounded > 15).any() or ((zero_points - rounded).abs() > ZERO_POINT_TOLERANCE).any():
        return None
    return rounded.to(torch.uint8)


class WeightOnlyInt4Linear(nn.Module):
    """``y = x @ dequant(W).T + b`` with int4 group-quantized ``W`` held in the kernel's packed layout.

    Buffers: ``weight`` (kernel layout), ``scales_and_zeros`` ((in / group, out, 2), the activation dtype the
    kernel computes in: bf16 with the CUDA and CPU kernels, the model dtype with the dequantizing fallback),
    ``bias`` (or None).
    """

    weight: torch.Tensor
    scales_and_zeros: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        codes: torch.Tensor,
        scales: torch.Tensor,
        zeros: torch.Tensor,
        bias: torch.Tensor | None,
        group_size: int,
        compute_dtype: torch.dtype,
        keep_codes: bool = False,
    ) -> None:
        super().__init__()
        if group_size not in SUPPORTED_GROUP_SIZES:
            raise BadInputError(f"int4 group size {group_size} is not supported: use one of {SUPPORTED_GROUP_SIZES}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        device = codes.device
        self.kernel = kernel_for(device)
        self.inner_k_tiles = inner_k_tiles_for(in_features) or 2
        if self.kernel in ("cuda", "cpu"):
            # tinygemm computes in bf16; the CPU kernel is vectorised for bf16 activations only (with fp32 ones a
            # 3B-wide decode step took ~10x longer than the fp32 model's own)
            compute_dtype = torch.bfloat16
        two_per_byte = pack_uint4x2(codes).contiguous()  # the portable form: tinygemm's input, and what is kept
        self._mlas: Any = None
        if self.kernel == "cpu" and in_features >= MLAS_FROM_IN_FEATURES:  # onnxruntime's, where it reads them
            from .int4_mlas import MlasInt4Kernel, mlas_available

            zero_points = integer_zero_points(scales, zeros)
            if zero_points is not None and mlas_available():
                # the scales as the module keeps (and saves) them, so a reloaded model computes the same values
                kept_scales = scales.to(compute_dtype)
                self.kernel, self._mlas = "mlas", MlasInt4Kernel(two_per_byte, kept_scales, zero_points, group_size)
            else:
                logger.debug(
                    "int4: %d-output layer on torch's CPU kernel (%s)",
                    out_features,
                    "zero points off the integer grid" if zero_points is None else "onnx/onnxruntime not installed",
                )
        if self.kernel == "mlas":  # the session holds the kernel's layout; the module keeps the portable codes
            packed = two_per_byte
        elif self.kernel == "cuda":
            packed = torch.ops.aten._convert_weight_to_int4pack(two_per_byte, self.inner_k_tiles)
        elif self.kernel == "cpu":  # rows pack independently: int32 copies of a block at a time
            packed = torch.cat(
                [
                    torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                        codes[start : start + QUANTIZE_ROWS].to(torch.int32).contiguous(), self.inner_k_tiles
                    )
                    for start in range(0, self.out_features, QUANTIZE_ROWS)
                ]
            )
        else:
            packed = two_per_byte
        self.register_buffer("weight", packed)
        self.register_buffer("scales_and_zeros", pack_scales_and_zeros(scales, zeros, compute_dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        # Export keeps the codes (half a byte per weight, outside the state dict) for saving them: reading them back
        # out of a kernel layout costs a (in x in) @ (in x out) int4 matmul per layer, hours for a 3B model on a CPU.
        # The CPU and CUDA kernels keep them too (where the weight is), for prefill: their cost grows with the input
        # rows, so a long prompt is far cheaper as one dense matmul over the weight dequantized once
        # (:data:`DENSE_FROM_ROWS`).
        if self.kernel in DENSE_FROM_ROWS:
            self._kept_codes: torch.Tensor | None = two_per_byte
        else:
            self._kept_codes = two_per_byte.cpu() if keep_codes else None

    def _mm(self, x: torch.Tensor, weight: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor:
        if self.kernel == "cuda":
            return torch.ops.aten._weight_int4pack_mm(x, weight, self.group_size, scales_and_zeros)
        if self.kernel == "cpu":
            return torch.ops.aten._weight_int4pack_mm_for_cpu(x, weight, self.group_size, scales_and_zeros)
        scales, zeros = scales_and_zeros[..., 0].t(), scales_and_zeros[..., 1].t()
        dense = dequantize_int4(unpack_uint4x2(weight), scales, zeros, self.group_size)
        return nn.functional.linear(x, dense.to(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features)
        dense_from = DENSE_FROM_ROWS.get(self.kernel)
        if dense_from is not None and flat.shape[0] >= dense_from and self._kept_codes is not None:
            flat = flat.to(self.scales_and_zeros.dtype)
            scales, zeros = self.scales_and_zeros[..., 0].t(), self.scales_and_zeros[..., 1].t()
            dense = dequantize_for_prefill(self._kept_codes, scales, zeros, self.group_size, flat.dtype)
            out = nn.functional.linear(flat, dense)
        elif self.kernel == "mlas":  # takes the activation in fp32 (and rounds it to int8 itself)
            out = self._mlas(flat)
        else:
            out = self._mm(flat.to(self.scales_and_zeros.dtype), self.weight, self.scales_and_zeros)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def codes(self) -> torch.Tensor:
        """The uint8 (out, in) codes 0..15, recovered from any kernel layout.

        For the packed kernels: multiply the identity by the weight with scale 1 and zero 8, which dequantizes
        ``(q - 8) * 1 + 8 = q`` exactly (small integers are exact in bf16/fp32)."""
        if self._kept_codes is not None:
            return unpack_uint4x2(self._kept_codes).to(self.weight.device)
        if self.kernel == "dequant":
            return unpack_uint4x2(self.weight)
        groups = self.in_features // self.group_size
        dtype = self.scales_and_zeros.dtype
        unit = torch.stack(
            [torch.ones(groups, self.out_features), torch.full((groups, self.out_features), 8.0)], dim=-1
        ).to(device=self.weight.device, dtype=dtype)
        eye = torch.eye(self.in_features, device=self.weight.device, dtype=dtype)
        return self._mm(eye, self.weight, unit).t().round().to(torch.uint8)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
            f"kernel={self.kernel}, bias={self.bias is not None}"
        )


def kernel_counts(model: nn.Module) -> dict[str, int]:
    """How many of ``model``'s int4 linears run on each kernel (e.g. ``{"mlas": 28}``)."""
    counts: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, WeightOnlyInt4Linear):
            counts[module.kernel] = counts.get(module.kernel, 0) + 1
    return counts


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


@dataclass(frozen=True)
class Int4ModuleSpec:
    """One quantized linear in the saved folder."""

    in_features: int
    out_features: int
    group_size: int
    has_bias: bool
    compute_dtype: str
    """Activation dtype of the kernel ("float32", "bfloat16", "float16"); CUDA packing always uses bf16."""


def load_int4(
    folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """Rebuild a model saved by :func:`save_int4` on ``device`` (int4 layers packed for its kernel), in eval mode.

    The model is built with empty (meta) parameters, then every tensor is assigned from the file, so nothing is
    initialised twice and no full-precision copy of the quantized layers ever exists. ``dtype``: the compute dtype
    of everything around the int4 layers (embeddings, norms, attention, an unquantized head; default: as saved). The
    CPU and CUDA int4 kernels compute in bf16 whatever it is, so bf16 saves a cast around every quantized layer and
    puts the rest on bf16 matrix units.
    """
    import transformers
    from accelerate import init_empty_weights
    from safetensors.torch import load_file

    folder = Path(folder)
    spec = read_json(folder / QUANT_FILE, what="int4 quantization file")
    if spec.get("format") != FORMAT:
        raise BadInputError(f"{folder / QUANT_FILE} is not a {FORMAT} file: re-save the model with save_int4")
    device = torch.device(device)
    config = transformers.AutoConfig.from_pretrained(folder)
    model_class = getattr(transformers, (config.architectures or ["Qwen2_5_VLForConditionalGeneration"])[0])
    with init_empty_weights(include_buffers=False):
        model = model_class._from_config(config)
    tensors = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    for name, info in spec["modules"].items():
        module_spec = Int4ModuleSpec(**info)
        pop = lambda suffix: tensors.pop(f"{name}.{suffix}")  # noqa: E731
        codes = unpack_uint4x2(pop("codes_uint4x2")).to(device)
        scales, zeros = pop("scales").to(device), pop("zeros").to(device)
        bias = pop("bias").to(device) if module_spec.has_bias else None
        compute_dtype = getattr(torch, module_spec.compute_dtype)
        set_submodule(
            model,
            name,
            WeightOnlyInt4Linear(
                module_spec.in_features,
                module_spec.out_features,
                codes,
                scales,
                zeros,
                bias,
                module_spec.group_size,
                compute_dtype,
            ),
        )
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [k for k in missing if k not in spec["tied"] and k.rpartition(".")[0] not in spec["modules"]]
    if missing or unexpected:
        raise BadInputError(
            f"{folder} does not match its config ({len(missing)} missing, {len(unexpected)} "
            f"unexpected tensors, e.g. {(missing + unexpected)[:3]}): re-save it with save_int4"
        )
    for alias, source in spec["tied"].items():
        module_name, _, attr = alias.rpartition(".")
        source_module, _, source_attr = source.rpartition(".")
        setattr(model.get_submodule(module_name), attr, getattr(model.get_submodule(source_module), source_attr))
    if dtype is not None:
        # parameters only: the int4 layers hold buffers, and the rotary tables (buffers) stay fp32 as
        # from_pretrained(dtype=...) leaves them
        for param in model.parameters():
            if param.is_floating_point():
                param.data = param.data.to(dtype)
    logger.info("int4: %s", ", ".join(f"{n} linears on the {k!r} kernel" for k, n in kernel_counts(model).items()))
    return model.to(device).eval()
