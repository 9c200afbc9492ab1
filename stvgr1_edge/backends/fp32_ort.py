"""fp32 linears on onnxruntime's CPU matrix kernel (MLAS ``Gemm`` over a prepacked weight): the weight format
"fp32-ort" of :mod:`.weight_only` — the same fp32 weights as "fp", another kernel.

Why: torch's CPU fp32 matrix products can leave much of a machine's speed unused. On 2 AMD EPYC (Zen 4) cores, the
29 matrices of a 4-layer 3B-wide decoder and its head (2.48 GB in fp32) took 108 ms per token on torch's kernel
(22.8 GB/s) and 37 ms on this one (66 GB/s); one layer's prefill of 2,048 rows 1.59 s against 0.67 s. On Intel
Sapphire Rapids cores torch's fp32 decode already read at the copy bandwidth, and this kernel was not measured
there: measure with ``benchmarks/engine_decode.py`` before choosing it.

Memory: onnxruntime keeps its own prepacked copy of each weight and the torch module drops its own, so the model's
size does not grow — except a head tied to the input embedding (3B), whose table torch keeps for the embedding.
A layer converted here has no weight in its state dict: it is for running, not for saving.

Rows of any count go through the kernel (prefill too). The call is the custom op of :mod:`.int4_mlas`, so a compiled
decode step keeps it as one opaque kernel, and decoding runs under its :class:`~.int4_mlas.DecodingThreads`.
"""

from __future__ import annotations

import torch
from torch import nn

from .int4_mlas import OrtLinearKernel
from .ort_threads import session_options


class OrtFp32Kernel(OrtLinearKernel):
    """One onnxruntime session computing ``x @ W.T (+ b)`` in fp32 for a (out, in) weight ``W``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        out_features, in_features = weight.shape
        arrays = {"weight": weight.detach().to(torch.float32).contiguous().numpy()}
        if bias is not None:
            arrays["bias"] = bias.detach().to(torch.float32).contiguous().numpy()
        node = helper.make_node("Gemm", ["x", *arrays], ["y"], transB=1)
        graph = helper.make_graph(
            [node],
            "fp32_linear",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", in_features])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", out_features])],
            [_in_memory_initializer(name, array.shape) for name, array in arrays.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, onnx.IR_VERSION)
        options = session_options(torch.get_num_threads())
        # The weights go in from memory, not serialized into the graph (a 7B head is over protobuf's 2 GB); the
        # session copies them into its prepacked layout, so the torch tensors can be freed afterwards.
        options.add_external_initializers(list(arrays), [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()])
        self._open(model, out_features, options)

    def __reduce__(self):
        raise TypeError("an onnxruntime fp32 linear cannot be pickled: save the model before converting it")


def _in_memory_initializer(name: str, shape: tuple[int, ...]):
    """A graph initializer whose values come from ``add_external_initializers`` (no bytes in the graph)."""
    from onnx import TensorProto

    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="in-memory")
    return tensor


class OrtFp32Linear(nn.Module):
    """An fp32 ``nn.Linear`` computed by :class:`OrtFp32Kernel`; holds no torch copy of the weight."""

    kernel = "ort-fp32"  # the name engine_decode.json reports for the head

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.weight.dtype != torch.float32 or linear.weight.device.type != "cpu":
            raise ValueError(f"fp32-ort needs an fp32 CPU linear, got {linear.weight.dtype} on {linear.weight.device}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.has_bias = linear.bias is not None
        self._ort = OrtFp32Kernel(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = self._ort(x.reshape(-1, self.in_features))
        return out.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}"
