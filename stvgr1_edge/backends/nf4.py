"""Loads a bitsandbytes NF4 folder written by ``stvg-edge export --llm nf4`` (its quantization config travels in
``config.json``; the vision tower and ``lm_head`` stay unquantized). bitsandbytes is imported lazily."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInputError, MissingDependencyError, require


def require_nf4_runtime() -> None:
    """Raise :class:`MissingDependencyError` unless bitsandbytes and CUDA are both available."""
    import torch

    require("bitsandbytes", "quant", "4-bit (nf4) quantization")
    if not torch.cuda.is_available():
        raise MissingDependencyError("nf4 (bitsandbytes 4-bit) needs a CUDA GPU: use --quant int4 on CPU")


def load_nf4(folder: str | os.PathLike, device: str = "cuda"):
    """Reload a folder written by :func:`quantize_nf4_to_folder` (its config carries the NF4 settings)."""
    import transformers

    require_nf4_runtime()
    folder = Path(folder)
    config = transformers.AutoConfig.from_pretrained(folder)
    if getattr(config, "quantization_config", None) is None:
        raise BadInputError(
            f"{folder} is not an nf4 folder (no quantization_config): create it with quantize_nf4_to_folder"
        )
    model_class = getattr(transformers, (config.architectures or ["Qwen2_5_VLForConditionalGeneration"])[0])
    return model_class.from_pretrained(folder, device_map=device).eval()
