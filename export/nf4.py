"""bitsandbytes NF4 (4-bit NormalFloat) for the language model, with the vision tower and ``lm_head`` unquantized,
saved with ``save_pretrained`` and reloaded as a folder (the quantization config travels in ``config.json``).

CUDA only: bitsandbytes' 4-bit kernels need a GPU. bitsandbytes is imported lazily.

Which modules stay in floating point is derived from the model's real module tree, not typed by hand: in
transformers 5 the tower is ``model.visual`` (language model ``model.language_model``, head ``lm_head``).
transformers matches ``llm_int8_skip_modules`` entries from the start of a module name up to a dot, or as a
name suffix (``quantizers_utils.should_convert_module``), so ``"visual"`` alone would *not* skip
``model.visual.blocks.0.attn.qkv``; the full prefix ``"model.visual"`` does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from stvgr1_edge.backends.nf4 import require_nf4_runtime
from stvgr1_edge.errors import BadInputError, atomic_output_dir, require

logger = logging.getLogger(__name__)


def _empty_model(config):
    """The model class named by ``config`` with meta (empty) parameters: only the module tree."""
    import transformers

    init_empty_weights = require("accelerate", "export", "NF4 quantization").init_empty_weights

    model_class = getattr(transformers, (config.architectures or ["Qwen2_5_VLForConditionalGeneration"])[0])
    with init_empty_weights():
        return model_class._from_config(config)


def nf4_skip_modules(model_or_config) -> list[str]:
    """Module-name prefixes to keep unquantized: the vision tower (the module ``model.model.visual``, by its
    qualified name) and the output head ``lm_head``. Accepts a model or its config."""
    model = model_or_config if hasattr(model_or_config, "named_modules") else _empty_model(model_or_config)
    tower = getattr(getattr(model, "model", model), "visual", None)
    if tower is None:
        raise BadInputError(f"{type(model).__name__} has no vision tower at model.visual: pass a Qwen2.5-VL model")
    names = [name for name, module in model.named_modules() if module is tower]
    if getattr(model, "lm_head", None) is not None:
        names.append("lm_head")
    return names


def nf4_config(skip_modules: list[str], compute_dtype: Literal["bf16", "fp16"] = "bf16"):
    """``BitsAndBytesConfig`` for NF4 weights (no double quantization) computing in ``compute_dtype``."""
    import torch

    require("bitsandbytes", "quant", "4-bit (nf4) quantization")
    from transformers import BitsAndBytesConfig

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[compute_dtype]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=False,
        llm_int8_skip_modules=list(skip_modules),
    )


def quantize_nf4_to_folder(
    source: str | os.PathLike,
    out_folder: str | os.PathLike,
    compute_dtype: Literal["bf16", "fp16"] = "bf16",
    device: str = "cuda",
) -> Path:
    """Load the checkpoint folder ``source`` with NF4 weights for the language model and save it (plus its
    processor files) to ``out_folder`` with ``save_pretrained``; written to a temporary folder, then renamed."""
    import torch
    import transformers

    require_nf4_runtime()
    source, out_folder = Path(source), Path(out_folder)
    if not (source / "config.json").is_file():
        raise BadInputError(f"{source} is not a model folder (no config.json): pass a Qwen2.5-VL checkpoint folder")
    config = transformers.AutoConfig.from_pretrained(source)
    skip = nf4_skip_modules(config)
    model_class = getattr(transformers, (config.architectures or ["Qwen2_5_VLForConditionalGeneration"])[0])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[compute_dtype]
    model = model_class.from_pretrained(
        source, quantization_config=nf4_config(skip, compute_dtype), dtype=dtype, device_map=device
    )
    with atomic_output_dir(out_folder) as tmp:
        model.save_pretrained(tmp)
        try:
            transformers.AutoProcessor.from_pretrained(source).save_pretrained(tmp)
        except (OSError, ValueError) as exc:  # a weights-only folder: the processor comes from elsewhere
            logger.warning("no processor saved with the nf4 model (%s)", exc)
    logger.info("saved nf4 model to %s (unquantized: %s)", out_folder, ", ".join(skip))
    return out_folder
