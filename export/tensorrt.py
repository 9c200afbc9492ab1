"""Build a TensorRT engine from the exported vision-encoder ONNX (:mod:`stvgr1_edge_export.vision_onnx`).

- **Strongly typed network**: precisions come from the ONNX graph itself, so an fp16 ONNX (fp16 linears and
  attention matmuls, fp32 norms/rotary/softmax/residual) builds an engine with exactly that split, and the fp32
  ONNX an fp32 engine. TensorRT is not free to demote the sensitive parts, which is where parity is lost.
- **One optimization profile** over the dynamic patch axis, given as a box of video grids (T, H, W in
  patches): every graph input's min/opt/max shape is that input's shape at the min/opt/max grid (all side-input
  sizes grow monotonically with T, H and W). Clips must have grids inside the box, componentwise.
- **Timing cache** file, reused and updated across builds (much faster rebuilds on the same GPU).
- **Metadata JSON** next to the engine: GPU name, TensorRT version, profile shapes, source ONNX and the vision
  config (which :class:`TrtVisionEncoder` needs to build the side inputs).

At run time :class:`stvgr1_edge.backends.tensorrt.TrtVisionEncoder` executes the engine (the runtime needs nothing
from this module).

TensorRT is NVIDIA's: on Jetson it ships with JetPack; elsewhere ``pip install tensorrt`` from NVIDIA's index.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from stvgr1_edge.backends.tensorrt import (
    EngineInfo,
    engine_info_path,
    import_tensorrt,
)
from stvgr1_edge.errors import BadInputError, atomic_output, write_json_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisionEngineProfile:
    """The range of video grids (patches: T, H, W; H and W multiples of 2) the engine accepts."""

    min_grid: tuple[int, int, int] = (1, 4, 4)
    """Smallest grid: 2 frames of 56x56 pixels."""
    opt_grid: tuple[int, int, int] = (8, 24, 32)
    """Grid TensorRT tunes kernels for: 16 frames at 336x448 (1536 visual tokens)."""
    max_grid: tuple[int, int, int] = (8, 32, 32)
    """Largest grid: 8192 patches (2048 visual tokens) in 8 temporal patches of 448x448 pixels."""
    workspace_gib: float = 4.0
    """TensorRT builder workspace limit, GiB."""


def profile_shapes(vision_config, profile: VisionEngineProfile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``{input name: (min shape, opt shape, max shape)}`` for every graph input."""
    import torch

    from .vision_onnx import INPUT_NAMES, compute_vision_side_inputs

    patch_dim = vision_config.in_channels * vision_config.temporal_patch_size * vision_config.patch_size**2
    per_grid = []
    for grid in (profile.min_grid, profile.opt_grid, profile.max_grid):
        side = compute_vision_side_inputs(torch.tensor([grid]), vision_config)
        num_patches = grid[0] * grid[1] * grid[2]
        per_grid.append([(num_patches, patch_dim)] + [tuple(t.shape) for t in side.as_tuple()])
    shapes = {}
    for i, name in enumerate(INPUT_NAMES):
        low, opt, high = (per_grid[k][i] for k in range(3))
        if any(a > b for a, b in zip(low, opt)) or any(a > b for a, b in zip(opt, high)):
            raise BadInputError(f"engine profile grids must grow componentwise (min <= opt <= max): {profile}")
        shapes[name] = (low, opt, high)
    return shapes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_vision_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    profile: VisionEngineProfile = VisionEngineProfile(),
    timing_cache: str | os.PathLike | None = None,
) -> EngineInfo:
    """Build ``engine_path`` (and ``<engine>.json`` metadata) from an exported vision-encoder ONNX file.

    ``timing_cache`` defaults to ``<engine>.timing-cache`` next to the engine.
    """
    trt = import_tensorrt()
    import torch

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise BadInputError(f"ONNX file not found: {onnx_path}: export it with export_vision_encoder first")
    vision_config = _vision_config_from_onnx(onnx_path)
    shapes = profile_shapes(vision_config, profile)
    timing_cache = Path(timing_cache) if timing_cache else engine_path.with_suffix(".timing-cache")

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BadInputError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(profile.workspace_gib * (1 << 30)))
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    optimization_profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        optimization_profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimization_profile)

    logger.info("building TensorRT engine from %s (this takes minutes)", onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BadInputError(f"TensorRT could not build an engine from {onnx_path}: see the TensorRT log above")
    with atomic_output(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_output(timing_cache) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "unknown"
    info = EngineInfo(
        engine=engine_path.name,
        onnx=onnx_path.name,
        onnx_sha256=_sha256(onnx_path),
        gpu=gpu,
        tensorrt_version=trt.__version__,
        strongly_typed=True,
        profile={name: [list(s) for s in triple] for name, triple in shapes.items()},
        vision_config=vision_config.to_dict(),
    )
    write_json_atomic(engine_info_path(engine_path), asdict(info), indent=1)
    logger.info("TensorRT engine written to %s", engine_path)
    return info


def _vision_config_from_onnx(onnx_path: Path):
    """The Qwen2.5-VL vision config stored in the ONNX metadata by ``export_vision_encoder``."""
    import json

    import onnx
    from transformers import Qwen2_5_VLVisionConfig

    from .vision_onnx import METADATA_KEY

    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta:
        raise BadInputError(f"{onnx_path} has no {METADATA_KEY!r} metadata: re-export it with export_vision_encoder")
    return Qwen2_5_VLVisionConfig(**json.loads(meta[METADATA_KEY]))
