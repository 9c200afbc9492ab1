"""Backends: everything that loads and runs an artefact, behind two small interfaces.

- a **vision encoder** (:class:`VisionEncoder`) replaces Qwen2.5-VL's PyTorch vision tower: the ONNX graph
  (:mod:`.onnx_vision`, onnxruntime) or a TensorRT engine (:mod:`.tensorrt`); :func:`load_vision_encoder` picks
  the one a bundle's manifest names;
- a **language model** is a ``Qwen2_5_VLForConditionalGeneration`` with full-precision, weight-only int4
  (:mod:`.int4`) or bitsandbytes NF4 (:mod:`.nf4`) linears; :func:`load_language_model` loads a folder of each.

The exported SAM2/EdgeTAM tracker is :class:`.onnx_tracker.OnnxSam2Tracker`. The toolchain (``stvgr1_edge_export``)
writes these artefacts and imports this package; nothing here imports the toolchain. Heavy dependencies
(onnxruntime, tensorrt, bitsandbytes, accelerate) are imported on use, with a one-line error when missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

from ..errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

LLM_QUANTS = ("none", "int4", "nf4")
"""Language-model weight formats a folder can hold (the bundle manifest's ``llm_quant``)."""


class VisionEncoder(Protocol):
    """Drop-in for ``model.model.get_video_features``: processor patches and their (videos, 3) grid in, an output
    whose ``pooler_output`` holds one (tokens, hidden) tensor per video, cast to ``dtype`` on ``device``."""

    def __call__(
        self,
        pixel_values: "torch.Tensor",
        grid_thw: "torch.Tensor",
        dtype: "torch.dtype | None" = None,
        device: Any = None,
    ) -> Any: ...


def check_vision_runtime(vision: dict, device: str, where: str) -> None:
    """One-line errors, before anything loads, when a TensorRT vision engine cannot run here."""
    if vision.get("engine"):
        from .tensorrt import import_tensorrt

        import_tensorrt()  # says where to get TensorRT when it is missing
        if not str(device).startswith("cuda"):
            raise BadInputError(
                f"{where} has a TensorRT vision engine, which needs a CUDA GPU: pass --device cuda, "
                "or re-export the bundle with --vision onnx"
            )


def load_vision_encoder(root: Path, vision: dict, device: str, providers: Sequence[str]) -> VisionEncoder:
    """The TensorRT engine when ``vision`` (a manifest's vision entry) names one, else its ONNX graph."""
    check_vision_runtime(vision, device, str(root))
    if vision.get("engine"):
        from .tensorrt import TrtVisionEncoder

        return TrtVisionEncoder(root / vision["engine"], device=device)
    from .onnx_vision import OnnxVisionEncoder

    return OnnxVisionEncoder(root / vision["onnx"], providers=providers)


def load_language_model(
    folder: str | os.PathLike, quant: Literal["none", "int4", "nf4"], device: str, dtype: "torch.dtype | None" = None
):
    """A Qwen2.5-VL model from ``folder`` in eval mode on ``device``: ``save_pretrained`` weights (``quant`` none),
    an int4 folder (its unquantized parts in ``dtype``) or an NF4 folder."""
    from ..safetensors_check import check_safetensors_weights

    check_safetensors_weights(folder)
    if quant == "int4":
        from .int4 import load_int4

        return load_int4(folder, device=device, dtype=dtype)
    if quant == "nf4":
        from .nf4 import load_nf4

        return load_nf4(folder, device=device)
    if quant == "none":
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=dtype, local_files_only=True)
        return model.to(device).eval()  # type: ignore[arg-type]  # transformers types .to as its decorated self
    raise BadInputError(f"unknown language-model format {quant!r}: use one of {', '.join(LLM_QUANTS)}")
