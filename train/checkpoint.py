"""Resuming from a full-weight checkpoint that actually restores the weights.

transformers 5's ``Trainer._load_from_checkpoint`` reads ``model.safetensors`` with
``model.load_state_dict(state_dict, strict=False)``. ``save_pretrained`` writes Qwen2.5-VL weights under their
original checkpoint names (``visual.*``, ``model.layers.*``) while the module tree is ``model.visual.*``,
``model.language_model.*``: every key misses, the load "succeeds" with two warnings, and a resumed run silently
continues from the *initial* weights. :class:`ExactResumeMixin` loads the checkpoint the way users load models
(``from_pretrained``, which applies the renaming) and copies it in with ``strict=True``. DeepSpeed, FSDP and PEFT
checkpoints keep the Trainer's own path (they do not go through ``model.safetensors``).
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


class ExactResumeMixin:
    """Put before ``Trainer`` (or a subclass) in the bases."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        import torch

        target = model if model is not None else self.model
        full_weights = any(
            os.path.isfile(os.path.join(resume_from_checkpoint, name))
            for name in ("model.safetensors", "model.safetensors.index.json")
        )
        special = (
            getattr(self, "is_deepspeed_enabled", False)
            or getattr(self, "is_fsdp_enabled", False)
            or hasattr(target, "peft_config")
        )
        if not full_weights or special:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(target.parameters()).dtype
        loaded = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype)
        with torch.no_grad():
            target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
        logger.info("restored the weights of %s", resume_from_checkpoint)
