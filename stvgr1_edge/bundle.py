"""Runtime side of a deployable bundle written by ``stvg-edge export``: read its manifest, build onnxruntime-backed
components.

A bundle folder holds ``manifest.json``, ``vision_encoder.onnx`` (+ ``vision_encoder.onnx.data`` when its weights
are external, + ``vision_encoder.engine`` for TensorRT), ``llm/`` (the language model + processor files:
unquantized ``save_pretrained``, int4 or NF4) and, optionally, ``tracker/`` (SAM2/EdgeTAM config, processor files
and only the weights that stay PyTorch, plus its ONNX graphs, see :mod:`export.tracker_onnx`).

What runs where:

- the grounder is a stock :class:`~stvgr1_edge.grounding.Grounder` whose ``vision_encoder`` hook is the bundle's
  TensorRT engine (:class:`export.tensorrt.TrtVisionEncoder`, when the bundle has one) or its ONNX vision tower
  (onnxruntime; TensorRT EP > CUDA EP > CPU EP, whichever is installed), and whose LLM is the bundle's; the
  PyTorch vision tower's weights are released (:func:`release_vision_tower`), so only one copy is in memory;
- the tracker is :class:`OnnxSam2Tracker`: the stock :class:`~stvgr1_edge.tracking.sam2.Sam2Tracker` (same
  detector / ID-manager code) on a model whose image encoder, prompt encoder, mask decoder, memory encoder and (SAM2)
  memory attention are swapped for onnxruntime graphs; the session bookkeeping (and EdgeTAM's spatial
  perceiver) stays transformers' PyTorch.

Decision on toolchain code: the ONNX vision runner (:class:`export.vision_onnx.OnnxVisionEncoder`) and the int4
loader (:func:`export.int4.load_int4`) live in the ``export`` package, which ships in the same wheel; they are
imported lazily here (only when a bundle needs them), with a one-line :class:`MissingDependencyError` if the
``export`` package or onnxruntime is missing. Nothing from ``export`` is imported at module import time.
"""

from __future__ import annotations

import logging
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import BadInputError, MissingDependencyError, read_json, require
from .tracking.base import Detector
from .tracking.sam2 import Sam2Tracker, Sam2TrackerConfig

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "stvg-edge-bundle/1"
"""``format`` field of a bundle manifest this runtime reads."""
TRACKER_SPEC_FILE = "tracker_onnx.json"
"""Written by :func:`export.tracker_onnx.export_tracker` (same name there)."""
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
TRACKER_EXPORTED_MODULES = ("vision_encoder", "mask_decoder", "memory_encoder", "memory_attention")
"""Top-level SAM2/EdgeTAM modules whose weights live in the ONNX graphs (not in the tracker folder's safetensors);
the runtime replaces them (:func:`attach_onnx_tracker`)."""


def _import_export(module: str, purpose: str):
    try:
        return __import__(f"export.{module}", fromlist=[module])
    except ImportError as exc:
        raise MissingDependencyError(f"{purpose} needs the `export` package of stvg-edge ({exc}): install the "
                                     "stvg-edge[export] wheel or run from the source checkout") from None


def available_providers(device: str = "cpu") -> list[str]:
    """onnxruntime execution providers to use, best first: TensorRT, CUDA (only for a CUDA ``device``), CPU."""
    ort = require("onnxruntime", "export", "running an exported bundle")
    installed = set(ort.get_available_providers())
    wanted = PROVIDER_PREFERENCE if str(device).startswith("cuda") else ("CPUExecutionProvider",)
    return [p for p in wanted if p in installed] or ["CPUExecutionProvider"]


# -- tracker: onnxruntime-backed modules swapped into a loaded SAM2/EdgeTAM model --------------------------
class _OrtGraph:
    """One ONNX graph: torch tensors in (graph input order), torch tensors out on ``device``."""

    def __init__(self, path: Path, providers: Sequence[str]) -> None:
        ort = require("onnxruntime", "export", "running the ONNX tracker")
        if not path.is_file():
            raise BadInputError(f"tracker graph missing: {path}: re-export the bundle with stvg-edge export")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: shape-merge notices are not for the user
        # the graphs alternate with small PyTorch ops: idle onnxruntime threads must not spin and starve them
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *tensors, device=None):
        import numpy as np
        import torch

        feed = {}
        for name, t in zip(self.input_names, tensors):
            array = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            if array.dtype in (np.float16, np.float64):  # the graphs are fp32
                array = array.astype(np.float32)
            feed[name] = np.ascontiguousarray(array)
        return [torch.from_numpy(o).to(device) for o in self.session.run(None, feed)]


def _onnx_get_image_features(graph: _OrtGraph):
    def get_image_features(pixel_values, **_kwargs):
        outs = graph(pixel_values.float(), device=pixel_values.device)
        flat = [o.flatten(2).permute(2, 0, 1) for o in outs]
        return types.SimpleNamespace(fpn_hidden_states=flat[:3], fpn_position_encoding=flat[3:],
                                     hidden_states=None, attentions=None)
    return get_image_features


def _make_modules():
    """The nn.Module proxies (built lazily so importing this module does not import torch)."""
    import torch
    from torch import nn

    class PromptEncoder(nn.Module):
        """Points and masks through ONNX; boxes (unused by the video path) through the original module."""

        def __init__(self, original: nn.Module, points: _OrtGraph, masks: _OrtGraph) -> None:
            super().__init__()
            self.fallback = original
            self.points, self.masks = points, masks
            self.mask_input_size = original.mask_input_size
            self.image_embedding_size = original.image_embedding_size
            self.input_image_size = original.input_image_size
            self.no_mask_embed = original.no_mask_embed

        def forward(self, input_points, input_labels, input_boxes, input_masks):
            if input_boxes is not None or input_points is None:
                return self.fallback(input_points, input_labels, input_boxes, input_masks)
            device = input_points.device
            (sparse,) = self.points(input_points.float(), input_labels.to(torch.int64), device=device)
            if input_masks is not None:
                (dense,) = self.masks(input_masks.float(), device=device)
            else:
                dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                    input_points.shape[0], -1, *self.image_embedding_size)
            return sparse, dense

    class MaskDecoder(nn.Module):
        """ONNX decoder (all mask tokens) + the stock single/multi-mask selection."""

        def __init__(self, original: nn.Module, graph: _OrtGraph) -> None:
            super().__init__()
            self.graph = graph
            self.dynamic_multimask_via_stability = original.dynamic_multimask_via_stability
            self.dynamic_multimask_stability_delta = original.dynamic_multimask_stability_delta
            self.dynamic_multimask_stability_thresh = original.dynamic_multimask_stability_thresh
            self.num_mask_tokens = original.num_mask_tokens
            cls = type(original)
            self._get_stability_scores = types.MethodType(cls._get_stability_scores, self)
            self._dynamic_multimask_via_stability = types.MethodType(cls._dynamic_multimask_via_stability, self)

        def forward(self, image_embeddings, image_positional_embeddings, sparse_prompt_embeddings,
                    dense_prompt_embeddings, multimask_output, high_resolution_features, **_kwargs):
            masks, iou_pred, mask_tokens, obj = self.graph(
                image_embeddings, image_positional_embeddings, sparse_prompt_embeddings, dense_prompt_embeddings,
                *high_resolution_features, device=image_embeddings.device)
            if multimask_output:
                mask_slice = slice(1, None)
                masks, iou_pred = masks[:, :, mask_slice], iou_pred[:, :, mask_slice]
            elif self.dynamic_multimask_via_stability:
                mask_slice = slice(0, 1)
                masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
            else:
                mask_slice = slice(0, 1)
                masks, iou_pred = masks[:, :, mask_slice], iou_pred[:, :, mask_slice]
            return masks, iou_pred, mask_tokens[:, :, mask_slice], obj

    class MemoryEncoder(nn.Module):
        def __init__(self, graph: _OrtGraph) -> None:
            super().__init__()
            self.graph = graph

        def forward(self, vision_features, masks):
            feats, pos = self.graph(vision_features.float(), masks.float(), device=vision_features.device)
            return feats.to(vision_features.dtype), pos.to(vision_features.dtype)

    class MemoryAttention(nn.Module):
        """The stock call signature over the fixed-size memory bank graph: pads memory and pointers, sets the
        validity mask."""

        def __init__(self, graph: _OrtGraph, slots: int, pointer_tokens: int, tokens_per_slot: int) -> None:
            super().__init__()
            self.graph, self.slots, self.pointer_tokens = graph, slots, pointer_tokens
            self.tokens_per_slot = int(tokens_per_slot)

        def forward(self, current_vision_features, memory, current_vision_position_embeddings=None,
                    memory_posision_embeddings=None, num_object_pointer_tokens: int = 0,
                    num_spatial_memory_tokens: int = -1):
            hw, n_ptr = self.tokens_per_slot, int(num_object_pointer_tokens)
            spatial = memory.shape[0] - n_ptr
            frames = spatial // hw
            if frames > self.slots or n_ptr > self.pointer_tokens or spatial % hw:
                raise RuntimeError(f"memory bank overflow: {frames} memory frames / {n_ptr} pointer tokens for a graph "
                                   f"exported with {self.slots} / {self.pointer_tokens}: re-export with more slots")
            batch, dim = memory.shape[1], memory.shape[2]
            length = self.slots * hw + self.pointer_tokens
            bank = memory.new_zeros(length, batch, dim, dtype=torch.float32)
            bank_pos = bank.clone()
            valid = torch.zeros(length, dtype=torch.bool)
            pointer_start = self.slots * hw
            bank[:spatial], bank_pos[:spatial] = memory[:spatial].float(), memory_posision_embeddings[:spatial].float()
            bank[pointer_start:pointer_start + n_ptr] = memory[spatial:].float()
            bank_pos[pointer_start:pointer_start + n_ptr] = memory_posision_embeddings[spatial:].float()
            valid[:spatial] = True
            valid[pointer_start:pointer_start + n_ptr] = True
            (out,) = self.graph(current_vision_features.float(), current_vision_position_embeddings.float(), bank,
                                bank_pos, valid, device=current_vision_features.device)
            return out.to(current_vision_features.dtype)

    return PromptEncoder, MaskDecoder, MemoryEncoder, MemoryAttention


def attach_onnx_tracker(model, folder: str | os.PathLike, providers: Sequence[str]) -> dict[str, Any]:
    """Swap ``model``'s hot modules for the ONNX graphs in ``folder`` (in place); returns the graph spec.

    The replaced PyTorch modules are dropped, except the prompt encoder (kept for the box-prompt path, which the
    video tracker does not use). EdgeTAM's spatial perceiver is not exported and stays PyTorch."""
    folder = Path(folder)
    spec = read_json(folder / TRACKER_SPEC_FILE, what="tracker graph spec")
    graphs = {name: _OrtGraph(folder / file, providers) for name, file in spec["graphs"].items()}
    prompt_cls, decoder_cls, memenc_cls, memattn_cls = _make_modules()
    model.get_image_features = _onnx_get_image_features(graphs["image_encoder"])
    from torch import nn

    model.vision_encoder = nn.Identity()  # its weights are not needed any more
    model.prompt_encoder = prompt_cls(model.prompt_encoder, graphs["prompt_points"], graphs["prompt_mask"])
    model.mask_decoder = decoder_cls(model.mask_decoder, graphs["mask_decoder"])
    model.memory_encoder = memenc_cls(graphs["memory_encoder"])
    model.memory_attention = memattn_cls(graphs["memory_attention"], spec["memory_slots"], spec["pointer_tokens"],
                                         spec["tokens_per_slot"])
    return spec


class OnnxSam2Tracker(Sam2Tracker):
    """:class:`Sam2Tracker` (same detector / ID-manager / memory-bounding logic) on the ONNX graphs of a tracker
    folder written by ``stvg-edge export --tracker onnx``."""

    def __init__(self, folder: str | os.PathLike, detector: Detector, config: Sam2TrackerConfig | None = None,
                 device: str = "cpu", providers: Sequence[str] | None = None) -> None:
        from .tracking.sam2 import load_video_model

        folder = Path(folder)
        spec = read_json(folder / TRACKER_SPEC_FILE, what="tracker graph spec")
        # the folder holds no weights for the modules the graphs replace: transformers initialises them (and would
        # warn about it) only for attach_onnx_tracker to drop them right after
        with _transformers_errors_only():
            segmenter = load_video_model(str(folder), family=spec["family"], device=device)
        self.spec = attach_onnx_tracker(segmenter.model, folder, providers or available_providers(device))
        super().__init__(segmenter, detector, config, device=device, family=spec["family"])


def _transformers_errors_only():
    import contextlib

    from transformers.utils import logging as hf_logging

    @contextlib.contextmanager
    def scope():
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(previous)
    return scope()


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
        raise RuntimeError("this model's PyTorch vision tower was released for the bundle's exported encoder: "
                           "call grounder.vision_encoder instead")

    tower.forward = released
    logger.info("released the PyTorch vision tower (%d weights)", freed)
    return freed


def _check_vision_runtime(root: Path, vision: dict, device: str) -> None:
    """One-line errors, before any loading, when the bundle's TensorRT engine cannot run here."""
    if vision.get("engine"):
        _import_export("tensorrt", "the bundle's TensorRT vision engine").import_tensorrt()  # where to get it
        if not str(device).startswith("cuda"):
            raise BadInputError(f"bundle {root} has a TensorRT vision engine, which needs a CUDA GPU: pass "
                                "--device cuda, or re-export the bundle with --vision onnx")


def _vision_encoder(root: Path, vision: dict, device: str, providers: Sequence[str]):
    """The bundle's TensorRT engine when the manifest names one (needs tensorrt + CUDA), else its ONNX graph."""
    _check_vision_runtime(root, vision, device)
    if vision.get("engine"):
        return _import_export("tensorrt", "the bundle's TensorRT vision engine").TrtVisionEncoder(
            root / vision["engine"], device=device)
    return _import_export("vision_onnx", "the bundle's ONNX vision encoder").OnnxVisionEncoder(
        root / vision["onnx"], providers=providers)


# -- the bundle ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """A validated bundle folder and its manifest."""

    root: Path
    manifest: dict
    device: str
    providers: tuple[str, ...]

    @property
    def has_tracker(self) -> bool:
        return self.manifest.get("tracker") is not None

    def grounder(self, max_new_tokens: int = 1024, dtype: str = "auto", **config_kwargs: Any):
        """A :class:`Grounder` with the bundle's LLM and its exported vision encoder (TensorRT engine or ONNX);
        the LLM's own PyTorch vision tower is released."""
        from transformers import AutoProcessor

        from .grounding import Grounder, GrounderConfig, resolve_dtype

        info = self.manifest["grounder"]
        _check_vision_runtime(self.root, info["vision"], self.device)  # fail before loading anything
        llm_dir = self.root / info["llm"]
        quant = info["llm_quant"]
        if quant == "int4":
            model = _import_export("int4", "an int4 bundle").load_int4(llm_dir, device=self.device)
        elif quant == "nf4":
            model = _import_export("nf4", "an nf4 bundle").load_nf4(llm_dir, device=self.device)
        elif quant == "none":
            from transformers import Qwen2_5_VLForConditionalGeneration

            torch_dtype = resolve_dtype(dtype, self.device)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(llm_dir, dtype=torch_dtype,
                                                                       local_files_only=True).to(self.device)
        else:
            raise BadInputError(f"{self.root / MANIFEST}: unknown llm_quant {quant!r}: re-export the bundle")
        model.eval()
        processor = AutoProcessor.from_pretrained(llm_dir, local_files_only=True)
        config = GrounderConfig(model=str(llm_dir), device=self.device, dtype=dtype, max_new_tokens=max_new_tokens,
                                **config_kwargs)
        grounder = Grounder(model, processor, config)
        release_vision_tower(model)  # before the exported encoder loads its copy of the weights
        encoder = _vision_encoder(self.root, info["vision"], self.device, self.providers)
        compute_dtype = model.get_input_embeddings().weight.dtype  # the visual tokens join the text embeddings
        device = grounder.device

        def vision_encoder(pixel_values, grid_thw):
            return encoder(pixel_values, grid_thw, dtype=compute_dtype, device=device)

        grounder.vision_encoder = vision_encoder
        logger.info("bundle grounder: llm %s (%s), vision %s", llm_dir, quant,
                    getattr(encoder, "path", info["vision"]["onnx"]))
        return grounder

    def tracker(self, detector: Detector, config: Sam2TrackerConfig | None = None) -> OnnxSam2Tracker:
        """The bundle's ONNX SAM2/EdgeTAM tracker fed by ``detector``."""
        if not self.has_tracker:
            raise BadInputError(f"bundle {self.root} has no tracker: export it with --tracker onnx, or pick "
                                "--tracker classical")
        return OnnxSam2Tracker(self.root / self.manifest["tracker"]["folder"], detector, config, device=self.device,
                               providers=self.providers)


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
    grounder = manifest.get("grounder") or {}
    vision = grounder.get("vision", {})
    needed = [vision.get("onnx"), grounder.get("llm")]
    needed += [vision[key] for key in ("onnx_data", "engine") if vision.get(key)]
    if manifest.get("tracker"):
        needed.append(manifest["tracker"].get("folder"))
    for rel in needed:
        if not rel or not (root / rel).exists():
            raise BadInputError(f"bundle {root} is incomplete ({rel or 'an entry'} missing): re-export it")
    device = resolve_device(device)
    return Bundle(root, manifest, device, tuple(available_providers(device)))
