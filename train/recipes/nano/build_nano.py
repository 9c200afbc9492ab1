"""Build the randomly initialised nano Qwen2.5-VL (the SFT starting point) and its processor.

    python -m stvgr1_edge_train.recipes.nano.build_nano runs/nano/init

The tokenizer is :func:`stvgr1_edge.tiny.build_tokenizer` trained on the STVG-R1 prompt, the answer format and the
synthetic domain's vocabulary (colours, shapes, sizes, events, query templates); the architecture is Qwen2.5-VL's
(window-attention ViT with 14-pixel patches, 2x2 merge, 2-frame tubes, M-RoPE LM) at a small size.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

NANO_ARCH = dict(
    hidden_size=192,
    layers=4,
    heads=6,
    kv_heads=2,
    intermediate_size=512,
    vision_hidden_size=192,
    vision_depth=4,
    vision_heads=3,
    vision_intermediate_size=512,
)
"""The nano architecture (about 4.6 M parameters, ~18 MB fp32 safetensors)."""


def synthetic_domain_words() -> list[str]:
    """Every word the synthetic queries use (colours, shapes, sizes, events, templates)."""
    from stvgr1_edge.synth import EVENTS, PALETTE, QUERY_TEMPLATES, SHAPES, SIZES

    words = set(PALETTE) | set(SHAPES) | set(SIZES) | {e.replace("_", " ") for e in EVENTS}
    for templates in QUERY_TEMPLATES.values():
        for template in templates:
            words |= set(re.findall(r"[a-z]+", template.replace("{obj}", " ").replace("{new}", " ")))
    return sorted(w for part in words for w in part.split())


def build_nano(out_dir: str | Path, seed: int = 0) -> Path:
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl, build_tokenizer, save_tiny_model

    tokenizer = build_tokenizer(synthetic_domain_words())
    arch = dict(NANO_ARCH)
    model, processor = build_tiny_qwen2_5_vl(
        tokenizer,
        seed=seed,
        hidden_size=arch.pop("hidden_size"),
        layers=arch.pop("layers"),
        vision_depth=arch.pop("vision_depth"),
        **arch,
    )
    return save_tiny_model(out_dir, model, processor)


if __name__ == "__main__":
    out = build_nano(sys.argv[1] if len(sys.argv) > 1 else "runs/nano/init")
    print(f"wrote {out}")
