"""A deployable bundle written by ``stvg-edge export``: read and validate its manifest, then build its grounder and
tracker from the runtime's backends (:mod:`stvgr1_edge.backends`). Nothing here imports the toolchain.

A bundle folder holds ``manifest.json``, ``vision_encoder.onnx`` (+ ``vision_encoder.onnx.data`` when its weights
are external, + ``vision_encoder.engine`` for TensorRT), ``llm/`` (the language model + processor files:
unquantized ``save_pretrained``, int4 or NF4) and, optionally, ``tracker/`` (SAM2/EdgeTAM config, processor files
and only the weights that stay PyTorch, plus its ONNX graphs).

What runs where:

- the grounder is a stock :class:`~stvgr1_edge.grounding.Grounder` whose ``vision_encoder`` hook is the bundle's
  TensorRT engine (when the bundle has one) or its ONNX vision tower (onnxruntime; TensorRT EP > CUDA EP > CPU EP,
  whichever is installed), and whose LLM is the bundle's (:func:`stvgr1_edge.backends.load_language_model`); the
  PyTorch vision tower's weights are released (:func:`release_vision_tower`), so only one copy is in memory;
- the tracker is :class:`~stvgr1_edge.backends.onnx_tracker.OnnxSam2Tracker`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .backends import LLM_QUANTS, check_vision_runtime, load_language_model, load_vision_encoder
from .backends.onnx_tracker import OnnxSam2Tracker, available_providers
from .errors import BadInputError, read_json
from .tracking.base import Detector
from .tracking.sam2 import Sam2TrackerConfig

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "stvg-edge-bundle/1"
"""``format`` field of a bundle manifest this runtime reads."""


def release_vision_tower(model) -> int:
    """Free the weights of ``model.model.visual`` (a Qwen2.5-VL) once an external vision encoder replaces it:
    every parameter becomes an empty tensor (same dtype and device, so ``model.device``/``dtype`` still work)
    and calling the tower raises. Returns the number of weights freed."""
    tower = model.model.visual
    freed = 0
    for param in tower.parameters():
        freed += param.numel()
        param.data = param.data.new_empty(0)

    def released(*_args, **_kwargs):
        raise RuntimeError(
            "this model's PyTorch vision tower was released for the bundle's exported encoder: "
            "call grounder.vision_encoder instead"
        )

    tower.forward = released
    logger.info("released the PyTorch vision tower (%d weights)", freed)
    return freed


# -- the bundle ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """A validated bundle folder and its manifest."""

    root: Path
    manifest: dict
    device: str

    @property
    def providers(self) -> tuple[str, ...]:
        """onnxruntime's execution providers for the ONNX parts, best first (asked only when an ONNX part loads: a
        bundle with a TensorRT engine and no ONNX tracker runs without onnxruntime)."""
        return tuple(available_providers(self.device))

    @property
    def has_tracker(self) -> bool:
        return self.manifest.get("tracker") is not None

    def grounder(
        self, max_new_tokens: int = 1024, dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto", **config_kwargs: Any
    ):
        """A :class:`Grounder` with the bundle's LLM and its exported vision encoder (TensorRT engine or ONNX);
        the LLM's own PyTorch vision tower is released."""
        from transformers import AutoProcessor

        from .grounding import Grounder, GrounderConfig, resolve_dtype

        info = self.manifest["grounder"]
        check_vision_runtime(info["vision"], self.device, f"bundle {self.root}")  # fail before loading anything
        if info["vision"].get("dtype") == "int8" and str(self.device).startswith("cuda"):
            logger.warning(
                "bundle %s has an int8 vision graph, made for CPUs: on CUDA its integer matmuls fall back to the "
                "CPU (export with --vision-dtype fp16 for a GPU)",
                self.root,
            )
        llm_dir = self.root / info["llm"]
        quant = info["llm_quant"]
        if quant not in LLM_QUANTS:
            raise BadInputError(f"{self.root / MANIFEST}: unknown llm_quant {quant!r}: re-export the bundle")
        model = load_language_model(llm_dir, quant, self.device, resolve_dtype(dtype, self.device))
        processor = AutoProcessor.from_pretrained(llm_dir, local_files_only=True)
        config = GrounderConfig(
            model=str(llm_dir), device=self.device, dtype=dtype, max_new_tokens=max_new_tokens, **config_kwargs
        )
        grounder = Grounder(model, processor, config)
        release_vision_tower(model)  # before the exported encoder loads its copy of the weights
        providers = () if info["vision"].get("engine") else self.providers  # an engine needs no onnxruntime
        encoder = load_vision_encoder(self.root, info["vision"], self.device, providers)
        compute_dtype = model.get_input_embeddings().weight.dtype  # the visual tokens join the text embeddings
        device = grounder.device

        def vision_encoder(pixel_values, grid_thw):
            return encoder(pixel_values, grid_thw, dtype=compute_dtype, device=device)

        grounder.vision_encoder = vision_encoder
        logger.info(
            "bundle grounder: llm %s (%s), vision %s", llm_dir, quant, getattr(encoder, "path", info["vision"]["onnx"])
        )
        return grounder

    def tracker(self, detector: Detector, config: Sam2TrackerConfig | None = None) -> OnnxSam2Tracker:
        """The bundle's ONNX SAM2/EdgeTAM tracker fed by ``detector``."""
        if not self.has_tracker:
            raise BadInputError(
                f"bundle {self.root} has no tracker: export it with --tracker onnx, or pick --tracker classical"
            )
        return OnnxSam2Tracker(
            self.root / self.manifest["tracker"]["folder"],
            detector,
            config,
            device=self.device,
            providers=self.providers,
        )


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_file_digests(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes", "sha256"}}`` of every file under ``root`` but the manifest (written at export,
    checked at load: an edited or damaged weight or graph file is found before it runs)."""
    root = Path(root)
    return {
        str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def verify_bundle_files(root: Path, recorded: Any) -> None:
    """One :class:`BadInputError` line for the first file that is missing or whose size or sha256 differs from the
    manifest's record."""
    if not isinstance(recorded, dict):
        raise BadInputError(f"{root / MANIFEST} has no file list: re-export the bundle")
    for rel, entry in recorded.items():
        path = root / rel
        if not isinstance(entry, dict) or not path.is_file():
            raise BadInputError(f"bundle {root} is incomplete ({rel} missing): re-export it")
        if path.stat().st_size != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
            raise BadInputError(
                f"bundle file {path} is not the one exported (size or sha256 differs): re-export the bundle"
            )


def load_bundle(folder: str | os.PathLike, device: str = "auto") -> Bundle:
    """Read and validate ``folder/manifest.json`` and the files it names (one-line errors)."""
    from .grounding import resolve_device

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise BadInputError(f"bundle folder not found: {root}: create one with  stvg-edge export --model M --out DIR")
    if not (root / MANIFEST).is_file():
        raise BadInputError(f"{root} is not a bundle (no {MANIFEST}): create one with  stvg-edge export")
    manifest = read_json(root / MANIFEST, what="bundle manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BadInputError(f"{root / MANIFEST} is not a {BUNDLE_FORMAT} manifest: re-export the bundle")
    grounder = manifest.get("grounder")
    vision = grounder.get("vision") if isinstance(grounder, dict) else None
    tracker = manifest.get("tracker")
    if not isinstance(grounder, dict) or not isinstance(vision, dict) or not isinstance(tracker, (dict, type(None))):
        raise BadInputError(
            f"{root / MANIFEST} does not describe a bundle (grounder/vision/tracker entries): re-export it"
        )
    needed = [vision.get("onnx"), grounder.get("llm")]
    needed += [vision[key] for key in ("onnx_data", "engine") if vision.get(key)]
    if manifest.get("tracker"):
        needed.append(manifest["tracker"].get("folder"))
    for rel in needed:
        if not isinstance(rel, str) or not rel or not (root / rel).exists():
            raise BadInputError(f"bundle {root} is incomplete ({rel or 'an entry'} missing): re-export it")
    verify_bundle_files(root, manifest.get("files"))
    device = resolve_device(device)
    return Bundle(root, manifest, device)
