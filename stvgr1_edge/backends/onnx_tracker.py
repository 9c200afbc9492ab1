"""The exported SAM2.1 / EdgeTAM tracker (``stvg-edge export --tracker onnx``): the stock
:class:`~stvgr1_edge.tracking.sam2.Sam2Tracker` (same detector / ID-manager code) on a model whose image encoder,
prompt encoder, mask decoder, memory encoder and (SAM2) memory attention are swapped for onnxruntime graphs; the
session bookkeeping (and EdgeTAM's spatial perceiver) stays transformers' PyTorch.
"""

from __future__ import annotations

import logging
import os
import types
from pathlib import Path
from typing import Any, Sequence

from ..errors import BadInputError, read_json, require
from ..tracking.base import Detector
from ..tracking.sam2 import Sam2Tracker, Sam2TrackerConfig
from .ort_threads import session_options

logger = logging.getLogger(__name__)

TRACKER_SPEC_FILE = "tracker_onnx.json"
"""The graph spec a tracker folder holds (written by the toolchain's ``export_tracker``)."""
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
TRACKER_EXPORTED_MODULES = ("vision_encoder", "mask_decoder", "memory_encoder", "memory_attention")
"""Top-level SAM2/EdgeTAM modules whose weights live in the ONNX graphs (not in the tracker folder's safetensors);
the runtime replaces them (:func:`attach_onnx_tracker`)."""


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
        # errors-only logging (shape-merge notices are not for the user); the graphs alternate with small PyTorch
        # ops, so a pool of their own must not spin and starve them
        options = session_options()
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
        return types.SimpleNamespace(
            fpn_hidden_states=flat[:3], fpn_position_encoding=flat[3:], hidden_states=None, attentions=None
        )

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
                    input_points.shape[0], -1, *self.image_embedding_size
                )
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
            cls: Any = type(original)  # the transformers mask decoder class, whose helpers are reused
            self._get_stability_scores = types.MethodType(cls._get_stability_scores, self)
            self._dynamic_multimask_via_stability = types.MethodType(cls._dynamic_multimask_via_stability, self)

        def forward(
            self,
            image_embeddings,
            image_positional_embeddings,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            multimask_output,
            high_resolution_features,
            **_kwargs,
        ):
            masks, iou_pred, mask_tokens, obj = self.graph(
                image_embeddings,
                image_positional_embeddings,
                sparse_prompt_embeddings,
                dense_prompt_embeddings,
                *high_resolution_features,
                device=image_embeddings.device,
            )
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

        def forward(
            self,
            current_vision_features,
            memory,
            current_vision_position_embeddings=None,
            memory_posision_embeddings=None,
            num_object_pointer_tokens: int = 0,
            num_spatial_memory_tokens: int = -1,
        ):
            hw, n_ptr = self.tokens_per_slot, int(num_object_pointer_tokens)
            spatial = memory.shape[0] - n_ptr
            frames = spatial // hw
            if frames > self.slots or n_ptr > self.pointer_tokens or spatial % hw:
                raise RuntimeError(
                    f"memory bank overflow: {frames} memory frames / {n_ptr} pointer tokens for a graph "
                    f"exported with {self.slots} / {self.pointer_tokens}: re-export with more slots"
                )
            batch, dim = memory.shape[1], memory.shape[2]
            length = self.slots * hw + self.pointer_tokens
            bank = memory.new_zeros(length, batch, dim, dtype=torch.float32)
            bank_pos = bank.clone()
            valid = torch.zeros(length, dtype=torch.bool)
            pointer_start = self.slots * hw
            bank[:spatial], bank_pos[:spatial] = memory[:spatial].float(), memory_posision_embeddings[:spatial].float()
            bank[pointer_start : pointer_start + n_ptr] = memory[spatial:].float()
            bank_pos[pointer_start : pointer_start + n_ptr] = memory_posision_embeddings[spatial:].float()
            valid[:spatial] = True
            valid[pointer_start : pointer_start + n_ptr] = True
            (out,) = self.graph(
                current_vision_features.float(),
                current_vision_position_embeddings.float(),
                bank,
                bank_pos,
                valid,
                device=current_vision_features.device,
            )
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
    model.memory_attention = memattn_cls(
        graphs["memory_attention"], spec["memory_slots"], spec["pointer_tokens"], spec["tokens_per_slot"]
    )
    return spec


class OnnxSam2Tracker(Sam2Tracker):
    """:class:`Sam2Tracker` (same detector / ID-manager / memory-bounding logic) on the ONNX graphs of a tracker
    folder written by ``stvg-edge export --tracker onnx``."""

    def __init__(
        self,
        folder: str | os.PathLike,
        detector: Detector,
        config: Sam2TrackerConfig | None = None,
        device: str = "cpu",
        providers: Sequence[str] | None = None,
    ) -> None:
        from ..tracking.sam2 import load_video_model

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
