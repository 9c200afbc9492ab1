"""onnxruntime's int4 kernel (MLAS ``MatMulNBits``) for CPU int4 linears.

Why: torch's CPU int4 kernel dequantizes every weight to bf16 and multiplies in bf16, which keeps it compute-bound
at ~10-14 GB/s on 2 Sapphire Rapids cores; MLAS quantizes the one activation row to int8 and multiplies with
VNNI/AMX integer dot products. The 28 matrices of a 4-layer 3B-wide decoder with norms and attention between them,
2 cores: 10.4 ms a token on the shared pool with torch on one thread, against 14.1 ms on torch's kernel; a 3B head
(151,936 x 2048, 156 MB in int4) 6.2-6.7 ms against 9.6-9.8 ms.

Threads: decoding calls these kernels between small torch ops (norms, rotary, attention on one row), and
onnxruntime's workers and torch's would take turns on the same cores; :class:`DecodingThreads` drops torch to one
thread while tokens are decoded, so the cores are onnxruntime's for the matrices. On onnxruntime's shared pool
(:func:`~.ort_threads.share_threads`, which ``stvg-edge run --weights int4`` turns on on a CPU) the workers also
stay warm between calls; with a pool per session each call wakes one.

The weights are the same codes, scales and zero points as the torch kernels' (:func:`~.int4.quantize_weight_int4`
keeps zero points on the integer grid, as ``MatMulNBits`` requires); only the activation is rounded to int8 (per
block, ``accuracy_level=4``), which moves a layer's output by about 0.5% (cosine to the dequantized product > 0.999).

Needs ``onnx`` (to build the one-node graph) and ``onnxruntime``; without them, or without
``torch.library.custom_op`` (torch < 2.4), the torch kernel is used. The call is a torch custom op, so a compiled
decode step treats it as one opaque kernel.
"""

from __future__ import annotations

import importlib.util
import weakref
from typing import Any

import numpy as np
import torch

from .ort_threads import session_options

ACCURACY_LEVEL = 4
"""``MatMulNBits``' ``accuracy_level``: 4 quantizes the activation to int8 (the VNNI/AMX path); 0 computes in fp32
and is ~2x slower than torch's kernel here."""

_kernels: "weakref.WeakValueDictionary[int, MlasInt4Kernel]" = weakref.WeakValueDictionary()
_next_key = 0
_op: Any = None


def mlas_available() -> bool:
    """Whether onnx, onnxruntime and torch custom ops are importable here."""
    return (
        hasattr(torch.library, "custom_op")
        and importlib.util.find_spec("onnx") is not None
        and importlib.util.find_spec("onnxruntime") is not None
    )


def kernel_op():
    """The custom op ``stvg_edge::ort_linear(x, key, out_features)``: ``x`` (rows, in) fp32 through the onnxruntime
    kernel registered under ``key`` (:func:`_register_kernel`), (rows, out) fp32. Defined on first use."""
    global _op
    if _op is None:

        @torch.library.custom_op("stvg_edge::ort_linear", mutates_args=())
        def ort_linear(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
            return _kernels[key].run(x)

        @ort_linear.register_fake
        def _(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
            return x.new_empty((x.shape[0], out_features), dtype=torch.float32)

        _op = ort_linear
    return _op


def _register_kernel(kernel: Any) -> int:
    """A key under which :func:`kernel_op` finds ``kernel`` (an object with ``run(x)``) while it is alive."""
    global _next_key
    key = _next_key
    _next_key += 1
    _kernels[key] = kernel
    return key


def uses_mlas(model: torch.nn.Module) -> bool:
    """Whether any of ``model``'s linears runs on onnxruntime: int4 on this kernel, or fp32 on
    :class:`~.fp32_ort.OrtFp32Linear`."""
    from .fp32_ort import OrtFp32Linear
    from .int4 import kernel_counts

    return "mlas" in kernel_counts(model) or any(isinstance(m, OrtFp32Linear) for m in model.modules())


class DecodingThreads:
    """torch's threads while ``model`` decodes tokens: one when it has onnxruntime linears (:func:`uses_mlas`: the
    cores are onnxruntime's for the matrices, see the module doc), else unchanged. A context manager: entering
    switches (with ``start_at_once=False`` only at :meth:`start`, e.g. once ``generate``'s first token is out, so that
    the prompt keeps all threads); leaving restores torch's count, also on an error."""

    saved: int  # torch's count when the block was entered

    def __init__(self, model: torch.nn.Module, start_at_once: bool = True) -> None:
        self.threads = 1 if uses_mlas(model) else None
        self.start_at_once = start_at_once

    def start(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    def __enter__(self) -> "DecodingThreads":
        self.saved = torch.get_num_threads()
        if self.start_at_once:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        torch.set_num_threads(self.saved)


def _pack_low_first(values: np.ndarray) -> np.ndarray:
    """(rows, n) uint8 values 0..15 -> (rows, ceil(n / 2)) bytes, even index in the low nibble (ONNX's order)."""
    if values.shape[1] % 2:
        values = np.concatenate([values, np.zeros((values.shape[0], 1), np.uint8)], axis=1)
    return (values[:, 0::2] | (values[:, 1::2] << 4)).astype(np.uint8)


class OrtLinearKernel:
    """A linear layer's product as one onnxruntime session: ``run(x)`` is ``x @ W.T`` in fp32, (rows, in) -> (rows,
    out); calling it goes through :func:`kernel_op`, so that ``torch.compile`` keeps it as one call. Copies of a model
    share the session (it is read-only)."""

    session: Any
    out_features: int
    key: int

    def _open(self, model: Any, out_features: int, options: Any = None) -> None:
        """Start the session of the ONNX ``model`` (built on ``options``, default :func:`session_options`'s)."""
        import onnxruntime as ort

        if options is None:
            options = session_options(torch.get_num_threads())
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.out_features = out_features
        self.key = _register_kernel(self)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        (y,) = self.session.run(None, {"x": x.detach().to(torch.float32).contiguous().numpy()})
        return torch.from_numpy(y)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return kernel_op()(x, self.key, self.out_features)

    def __deepcopy__(self, memo) -> "OrtLinearKernel":
        return self


class MlasInt4Kernel(OrtLinearKernel):
    """One ``MatMulNBits`` session holding a linear's int4 weight: ``run(x)`` is ``x @ W.T`` in fp32, (rows, in) ->
    (rows, out).

    ``codes_two_per_byte``: (out, in / 2) uint8, even input index in the high nibble (:func:`~.int4.pack_uint4x2`);
    ``scales``: (out, in / group_size); ``zero_points``: the same shape, integers 0..15 (``w = (q - zp) * scale``)."""

    def __init__(
        self, codes_two_per_byte: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, group_size: int
    ) -> None:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        packed = codes_two_per_byte.cpu().numpy()
        out_features, in_features = packed.shape[0], packed.shape[1] * 2
        blocks = in_features // group_size
        low_first = ((packed & 0x0F) << 4) | (packed >> 4)  # swap nibbles: ONNX puts the even index low
        initializers = [
            numpy_helper.from_array(low_first.reshape(out_features, blocks, group_size // 2), "codes"),
            numpy_helper.from_array(scales.float().cpu().numpy().reshape(-1), "scales"),
            numpy_helper.from_array(_pack_low_first(zero_points.cpu().numpy().astype(np.uint8)).reshape(-1), "zp"),
        ]
        node = helper.make_node(
            "MatMulNBits",
            ["x", "codes", "scales", "zp"],
            ["y"],
            domain="com.microsoft",
            K=in_features,
            N=out_features,
            bits=4,
            block_size=group_size,
            accuracy_level=ACCURACY_LEVEL,
        )
        graph = helper.make_graph(
            [node],
            "int4_linear",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", in_features])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", out_features])],
            initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        )
        model.ir_version = min(model.ir_version, onnx.IR_VERSION)
        self._open(model, out_features)

    def __reduce__(self):
        raise TypeError("an onnxruntime int4 kernel cannot be pickled: save the model with save_int4")
