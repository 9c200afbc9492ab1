"""Weight-only int8 linears, gpt-fast style: ``W ≈ q * scale`` with int8 codes ``q`` and one symmetric scale per
output channel (row of ``W``). Decoding one token reads every weight once, so one byte per weight instead of two
(bf16) or four (fp32) is what makes it faster — provided the dequantization never writes a full-precision copy.

Kernels, chosen by the device the module is built on (as for :mod:`.int4`):

- ``"cpu"``: ``torch.ops.aten._weight_int8pack_mm`` — torch's CPU weight-only int8 kernel, the one inductor itself
  lowers ``F.linear(x, q.to(x.dtype)) * scale`` to on CPU. Only its bf16-activation path is vectorised (fp32 runs
  ~30x slower), so activations are cast to bf16 for the product and back; it needs ``in_features % 16 == 0``
  (other shapes return garbage or crash).
- ``"linear"``: ``F.linear(x, q.to(x.dtype)) * scale``, gpt-fast's formulation, for CUDA (compiled, inductor fuses
  the cast into the matrix-vector product) and every other case. Eager, it materialises the dequantized matrix.

Nothing is saved to disk: the codes are cheap to compute at load (:func:`quantize_weight_int8`) and deterministic,
so there is no format to drift between a writer and this reader.
"""

from __future__ import annotations

import torch
from torch import nn


def quantize_weight_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, scales)``: int8 codes (out, in) in -127..127 and fp32 per-row scales, ``w ≈ codes * scale``.

    Symmetric, so zero stays exactly zero and no zero point is needed; -128 is left unused to keep the grid
    symmetric. The scale is the row's largest magnitude / 127 (rows of zeros get scale 1)."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1) / 127.0
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = (w / scales[:, None]).round().clamp(-127, 127).to(torch.int8)
    return codes, scales


def int8_kernel_for(device: torch.device, in_features: int) -> str:
    """ "cpu" (torch's int8 weight-only CPU kernel, bf16 activations) or "linear" (see the module doc)."""
    if device.type == "cpu" and in_features % 16 == 0 and hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        return "cpu"
    return "linear"


class WeightOnlyInt8Linear(nn.Module):
    """``y = (x @ codes.T) * scale + b``: an ``nn.Linear`` with int8 per-channel weights.

    Buffers: ``weight`` (out, in) int8, ``scales`` (out,) in the kernel's dtype (bf16 for "cpu", the model's
    otherwise), ``bias`` (or None). Outputs are in the input's dtype."""

    weight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.kernel = int8_kernel_for(codes.device, self.in_features)
        self.register_buffer("weight", codes.contiguous())
        self.register_buffer("scales", scales.to(torch.bfloat16 if self.kernel == "cpu" else dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "cpu":
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
            out = out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        else:
            out = nn.functional.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}, "
            f"bias={self.bias is not None}"
        )


def int8_linear_from(linear: nn.Linear) -> WeightOnlyInt8Linear:
    """Quantize ``linear`` (on its own device, in its own dtype) into a new :class:`WeightOnlyInt8Linear`."""
    codes, scales = quantize_weight_int8(linear.weight)
    return WeightOnlyInt8Linear(codes, scales, linear.bias, linear.weight.dtype)
