"""Runs a TensorRT vision engine built by ``stvg-edge export --vision trt`` on torch CUDA tensors (no pycuda): every
input's shape is set per call, the tensors' ``data_ptr()`` bound with ``set_tensor_address``, and
``execute_async_v3`` enqueued on the current torch CUDA stream. Same call contract as
:class:`~stvgr1_edge.backends.onnx_vision.OnnxVisionEncoder`.

TensorRT is NVIDIA's: on Jetson it ships with JetPack; elsewhere ``pip install tensorrt`` from NVIDIA's index.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError, MissingDependencyError, read_json
from .onnx_vision import INPUT_NAMES, OUTPUT_NAME, compute_vision_side_inputs, grid_key, split_per_video

TENSORRT_MISSING = (
    "a TensorRT engine needs the 'tensorrt' package, which comes from NVIDIA: use the one "
    "in JetPack on Jetson, or  pip install tensorrt --extra-index-url https://pypi.nvidia.com"
)


def import_tensorrt():
    """``tensorrt``, or :class:`MissingDependencyError` with one line saying where to get it."""
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(TENSORRT_MISSING) from None
    return tensorrt


@dataclass(frozen=True)
class EngineInfo:
    """What was built, written as JSON next to the engine."""

    engine: str
    onnx: str
    onnx_sha256: str
    gpu: str
    tensorrt_version: str
    strongly_typed: bool
    profile: dict
    """Input name -> [min, opt, max] shapes."""
    vision_config: dict
    """The Qwen2.5-VL vision config (from the ONNX metadata)."""


def engine_info_path(engine_path: str | os.PathLike) -> Path:
    """``<engine>.json``: the :class:`EngineInfo` written next to an engine."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


class TrtVisionEncoder:
    """Runs a vision engine from :func:`build_vision_engine` on the GPU; the same call contract as
    :class:`~stvgr1_edge.backends.onnx_vision.OnnxVisionEncoder` (a drop-in for ``model.model.get_video_features``).

    Grids must lie inside the engine's optimization profile (``<engine>.json``); side inputs are cached per grid
    as CUDA tensors. Needs ``tensorrt`` and a CUDA GPU.
    """

    def __init__(self, engine_path: str | os.PathLike, device: str = "cuda", cache_size: int = 8) -> None:
        import torch
        from transformers import Qwen2_5_VLVisionConfig

        trt = import_tensorrt()
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise BadInputError(f"TensorRT engine not found: {engine_path}: build it with build_vision_engine")
        if not torch.cuda.is_available():
            raise BadInputError(
                f"the TensorRT engine {engine_path.name} needs a CUDA GPU: run with --device cuda on "
                "a machine with one, or use the bundle's ONNX vision encoder"
            )
        info = read_json(engine_info_path(engine_path), what="TensorRT engine metadata")
        self.config = Qwen2_5_VLVisionConfig(**info["vision_config"])
        self.device = torch.device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BadInputError(
                f"TensorRT cannot load {engine_path} (built by TensorRT {info.get('tensorrt_version')} "
                f"on {info.get('gpu')}): rebuild the engine on this machine"
            )
        self.context = self.engine.create_execution_context()
        to_torch = {
            trt.DataType.FLOAT: torch.float32,
            trt.DataType.HALF: torch.float16,
            trt.DataType.INT64: torch.int64,
            trt.DataType.INT32: torch.int32,
            trt.DataType.BOOL: torch.bool,
        }
        self.dtypes = {name: to_torch[self.engine.get_tensor_dtype(name)] for name in (*INPUT_NAMES, OUTPUT_NAME)}
        self.input_names, self.output_name = INPUT_NAMES, OUTPUT_NAME
        self.path = engine_path
        self.side_inputs = functools.lru_cache(maxsize=cache_size)(self._side_inputs)
        """``grid key -> tuple of CUDA tensors`` (graph dtypes), cached per grid."""

    def _side_inputs(self, key):
        import torch

        side = compute_vision_side_inputs(torch.tensor(key, dtype=torch.int64), self.config)
        return tuple(
            t.to(self.device, self.dtypes[name]).contiguous() for name, t in zip(self.input_names[1:], side.as_tuple())
        )

    def run(self, pixel_values, grid_thw):
        """(M, out_hidden_size) CUDA tensor of merged visual tokens (the engine's output dtype), processor order."""
        import torch

        key = grid_key(grid_thw)
        pixels = torch.as_tensor(pixel_values).to(self.device, self.dtypes["pixel_values"]).contiguous()
        inputs = (pixels, *self.side_inputs(key))
        for name, tensor in zip(self.input_names, inputs):
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise BadInputError(
                    f"video grid {list(key)} is outside the TensorRT engine's profile ({name} "
                    f"{tuple(tensor.shape)}): rebuild the engine with a larger max_grid"
                )
            self.context.set_tensor_address(name, tensor.data_ptr())
        shape = tuple(self.context.get_tensor_shape(self.output_name))
        output = torch.empty(shape, dtype=self.dtypes[self.output_name], device=self.device)
        self.context.set_tensor_address(self.output_name, output.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.path} failed: see the TensorRT log above")
        return output  # ordered on ``stream``; the inputs stay alive in the cache / caller until it is used

    def __call__(self, pixel_values, grid_thw, dtype=None, device=None):
        """Like ``get_video_features(pixel_values, grid_thw)`` (see :class:`OnnxVisionEncoder`)."""
        import torch

        grid = torch.as_tensor(grid_thw, dtype=torch.int64).reshape(-1, 3).cpu()
        tokens = self.run(pixel_values, grid)
        return split_per_video(
            tokens,
            grid,
            self.config.spatial_merge_size,
            dtype or torch.float32,
            device if device is not None else self.device,
        )
