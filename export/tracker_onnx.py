"""SAM2.1 / EdgeTAM video tracker (transformers ``Sam2VideoModel`` / ``EdgeTamVideoModel``) -> ONNX graphs.

The usual split, one graph per hot module, each with only tensor inputs (no Python control flow on data):

=====================  =======================================================  =================================
graph                  inputs -> outputs                                        replaces (runtime)
=====================  =======================================================  =================================
image_encoder          pixel_values (1,3,S,S) -> feat_s0, feat_s1, feat_top,    ``model.get_image_features``
                       pos_s0, pos_s1, pos_top (all NCHW, s0/s1 already
                       through the decoder's ``conv_s0``/``conv_s1``)
prompt_points          points (B,P,N,2), labels (B,P,N) int64 -> sparse          ``prompt_encoder`` (points path)
                       (B,P,N+1,C) (SAM's pad point appended)
prompt_mask            masks (B,1,4h,4w) -> dense (B,C,h,w)                      ``prompt_encoder`` (mask path)
mask_decoder           image_embeddings, image_pe, sparse, dense, feat_s0,       ``mask_decoder`` (all mask tokens;
                       feat_s1 -> masks (B,P,M,4h,4w), iou (B,P,M),             the multimask / stability choice
                       mask_tokens (B,P,M,C), object_score_logits (B,P,1)       is a few tensor ops in the runtime)
memory_encoder         pix_feat (B,C,h,w), mask (B,1,16h,16w) ->                 ``memory_encoder``
                       features (B,64,h,w), pos_enc (B,64,h,w)
memory_attention       current (HW,B,C), current_pos (HW,B,C),                   ``memory_attention``
                       memory (S*K+P,B,64), memory_pos (same), memory_valid
                       (S*K+P,) bool -> conditioned (1,B,HW,C)
=====================  =======================================================  =================================

The memory attention graph is static: a **fixed-size memory bank** of ``S`` memory-frame slots (``K`` tokens
each: ``HW`` for SAM2, the perceiver's 1D + 2D latents for EdgeTAM) followed by ``P`` object-pointer tokens,
filled from the front, with ``memory_valid`` marking the real tokens; invalid keys get ``-inf`` logits, so the
result equals the stock module on the unpadded memory. The 2D rotary embedding is real cos/sin tables (pairwise
rotation), computed once at export as constants: one per-slot key table repeated ``S`` times (SAM2: the query
table; EdgeTAM: identity for the 1D latents, its key-grid table for the 2D latents); pointer tokens get none.

EdgeTAM's spatial perceiver (which turns a memory-encoder output into the slot's latents) stays in PyTorch.

Everything else — the inference session, memory selection, object pointers, the ID manager — stays the stock
transformers / :mod:`stvgr1_edge.tracking.sam2` Python code; the runtime (:mod:`stvgr1_edge.bundle`) swaps the
modules above for onnxruntime-backed ones on a loaded model.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stvgr1_edge.backends.ort_threads import session_options
from stvgr1_edge.errors import BadInputError, atomic_output, require

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
GRAPH_FILES = {
    "image_encoder": "image_encoder.onnx",
    "prompt_points": "prompt_points.onnx",
    "prompt_mask": "prompt_mask.onnx",
    "mask_decoder": "mask_decoder.onnx",
    "memory_encoder": "memory_encoder.onnx",
    "memory_attention": "memory_attention.onnx",
}
"""File name of each graph inside the tracker folder."""
SPEC_FILE = "tracker_onnx.json"
"""The tracker folder's description of its graphs (read by :mod:`stvgr1_edge.bundle`)."""


@dataclass(frozen=True)
class TrackerGraphSpec:
    """What was exported, with the shapes the runtime needs (written to ``tracker_onnx.json``)."""

    family: str
    """"sam2" or "edgetam"."""
    graphs: dict[str, str]
    """Graph name -> file name (relative to the tracker folder)."""
    image_size: int
    """Square model input side."""
    memory_slots: int
    """Memory-frame slots ``S`` of the fixed memory bank."""
    tokens_per_slot: int
    """Tokens ``K`` of one memory frame (SAM2: ``h * w``; EdgeTAM: perceiver 1D + 2D latents)."""
    pointer_tokens: int
    """Object-pointer tokens ``P`` of the fixed memory bank (pointers x hidden/64)."""
    feature_size: tuple[int, int]
    """``(h, w)`` of the top-level feature map (``HW = h * w`` current-frame tokens)."""


# -- graph modules ----------------------------------------------------------------------------------------
class ImageEncoderGraph(nn.Module):
    """Vision backbone + FPN neck + the decoder's ``conv_s0``/``conv_s1`` projections, NCHW outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.vision_encoder = model.vision_encoder
        self.conv_s0 = model.mask_decoder.conv_s0
        self.conv_s1 = model.mask_decoder.conv_s1

    def forward(self, pixel_values):
        out = self.vision_encoder(pixel_values, return_dict=True)
        feats, pos = list(out.fpn_hidden_states), list(out.fpn_position_encoding)
        return (self.conv_s0(feats[0]), self.conv_s1(feats[1]), feats[2], pos[0], pos[1], pos[2])


class PromptPointsGraph(nn.Module):
    """Point prompts (boxes are two corner points, labels 2/3) -> sparse embeddings, with SAM's pad point."""

    def __init__(self, prompt_encoder: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder

    def forward(self, points, labels):
        return self.prompt_encoder._embed_points(points, labels, pad=True)


class PromptMaskGraph(nn.Module):
    """Mask prompt (low-res logits space) -> dense embeddings."""

    def __init__(self, prompt_encoder: nn.Module) -> None:
        super().__init__()
        self.mask_embed = prompt_encoder.mask_embed

    def forward(self, masks):
        return self.mask_embed(masks)


class MaskDecoderGraph(nn.Module):
    """SAM's two-way transformer decoder returning *all* mask tokens (the single/multi-mask choice is made
    outside, exactly as the stock ``forward`` does after this point)."""

    def __init__(self, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = mask_decoder

    def forward(
        self,
        image_embeddings,
        image_positional_embeddings,
        sparse_prompt_embeddings,
        dense_prompt_embeddings,
        feat_s0,
        feat_s1,
    ):
        dec = self.decoder
        batch_size, num_channels, height, width = image_embeddings.shape
        point_batch_size = sparse_prompt_embeddings.shape[1]
        output_tokens = torch.cat([dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.repeat(batch_size, point_batch_size, 1, 1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=2)
        image_embeddings = (image_embeddings + dense_prompt_embeddings).repeat_interleave(point_batch_size, dim=0)
        image_positional_embeddings = image_positional_embeddings.repeat_interleave(point_batch_size, 0)
        point_embeddings, image_embeddings = dec.transformer(
            point_embeddings=tokens,
            image_embeddings=image_embeddings,
            image_positional_embeddings=image_positional_embeddings,
            attention_similarity=None,
            target_embedding=None,
        )
        iou_token_out = point_embeddings[:, :, 1, :]
        mask_tokens_out = point_embeddings[:, :, 2 : (2 + dec.num_mask_tokens), :]
        image_embeddings = image_embeddings.transpose(2, 3).reshape(
            batch_size * point_batch_size, num_channels, height, width
        )
        feat_s0 = feat_s0.repeat_interleave(point_batch_size, dim=0)
        feat_s1 = feat_s1.repeat_interleave(point_batch_size, dim=0)
        upscaled = dec.activation(dec.upscale_layer_norm(dec.upscale_conv1(image_embeddings) + feat_s1))
        upscaled = dec.activation(dec.upscale_conv2(upscaled) + feat_s0)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, :, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=2
        )
        _, channels, up_h, up_w = upscaled.shape
        upscaled = upscaled.reshape(batch_size, point_batch_size, channels, up_h * up_w)
        masks = (hyper_in @ upscaled).reshape(batch_size, point_batch_size, -1, up_h, up_w)
        iou_pred = dec.iou_prediction_head(iou_token_out)
        object_score_logits = dec.pred_obj_score_head(point_embeddings[:, :, 0, :])
        return masks, iou_pred, mask_tokens_out, object_score_logits


class MemoryEncoderGraph(nn.Module):
    """Current top-level features + (scaled) mask -> memory features and their sine position encoding."""

    def __init__(self, memory_encoder: nn.Module) -> None:
        super().__init__()
        self.memory_encoder = memory_encoder

    def forward(self, pix_feat, mask):
        return self.memory_encoder(pix_feat, mask)


def _rotate_pairwise(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): SAM2's pairwise rotary rotation, real arithmetic."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(x.shape)


def tokens_per_memory_slot(model: nn.Module) -> int:
    """Tokens of one memory frame: the top feature map (SAM2) or the perceiver's 1D + 2D latents (EdgeTAM)."""
    config = model.config
    if model_family(model) == "edgetam":
        return int(config.perceiver_resampler_num_latents + config.perceiver_resampler_num_latents_2d)
    h, w = model.backbone_feature_sizes[-1]
    return int(h * w)


class MemoryAttentionGraph(nn.Module):
    """SAM2 / EdgeTAM memory attention over a fixed-size memory bank (``slots`` x ``K`` tokens + ``pointer_tokens``),
    invalid tokens masked out. Same math as ``Sam2VideoMemoryAttention`` / ``EdgeTamVideoMemoryAttention`` (eval)."""

    def __init__(self, memory_attention: nn.Module, slots: int, pointer_tokens: int, tokens_per_slot: int) -> None:
        super().__init__()
        self.attention = memory_attention
        self.slots, self.pointer_tokens = slots, pointer_tokens

        def table(position_ids):
            with torch.no_grad():
                cos, sin = memory_attention.rotary_emb(torch.empty(0), position_ids)
            return cos.reshape(cos.shape[-2], cos.shape[-1]).float(), sin.reshape(sin.shape[-2], sin.shape[-1]).float()

        cos, sin = table(memory_attention.position_ids)
        if hasattr(memory_attention, "position_ids_k"):  # EdgeTAM: [1D latents: no rotation | 2D latents: key grid]
            cos_k, sin_k = table(memory_attention.position_ids_k)
            unrotated = tokens_per_slot - cos_k.shape[0]
            cos_k = torch.cat([torch.ones(unrotated, cos_k.shape[1]), cos_k])
            sin_k = torch.cat([torch.zeros(unrotated, sin_k.shape[1]), sin_k])
        else:
            cos_k, sin_k = cos, sin
        if cos_k.shape[0] != tokens_per_slot:
            raise BadInputError(f"memory slot of {tokens_per_slot} tokens but a {cos_k.shape[0]}-token rotary table")
        self.register_buffer("cos", cos.clone(), persistent=False)
        self.register_buffer("sin", sin.clone(), persistent=False)
        self.register_buffer("cos_k", cos_k.repeat(slots, 1).clone(), persistent=False)
        self.register_buffer("sin_k", sin_k.repeat(slots, 1).clone(), persistent=False)

    def _attend(self, attn: nn.Module, query, key, value, key_bias, rope_keys: int | None):
        """``attn`` (a ``Sam2VideoRoPEAttention``) with rotary on q and the first ``rope_keys`` keys (all when
        None), plus an additive key bias (0 / -inf)."""
        batch = query.shape[0]
        heads, head_dim = attn.num_attention_heads, attn.head_dim
        q = attn.q_proj(query).reshape(batch, -1, heads, head_dim).transpose(1, 2)
        k = attn.k_proj(key).reshape(batch, -1, heads, head_dim).transpose(1, 2)
        v = attn.v_proj(value).reshape(batch, -1, heads, head_dim).transpose(1, 2)
        q = q * self.cos + _rotate_pairwise(q) * self.sin
        if rope_keys is None:
            k = k * self.cos + _rotate_pairwise(k) * self.sin
        else:
            k_rot, k_pass = k[:, :, :rope_keys], k[:, :, rope_keys:]
            k = torch.cat([k_rot * self.cos_k + _rotate_pairwise(k_rot) * self.sin_k, k_pass], dim=2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scaling
        if key_bias is not None:
            scores = scores + key_bias
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return attn.o_proj(out.transpose(1, 2).reshape(batch, -1, heads * head_dim))

    def forward(self, current, current_pos, memory, memory_pos, memory_valid):
        module = self.attention
        output = (current + 0.1 * current_pos).transpose(0, 1)  # (B, HW, C)
        memory = memory.transpose(0, 1)  # (B, L, 64)
        memory_pos = memory_pos.transpose(0, 1)
        key_bias = torch.zeros(memory_valid.shape, dtype=output.dtype).masked_fill(~memory_valid, float("-inf"))
        spatial = self.cos_k.shape[0]
        for layer in module.layers:
            query = layer.layer_norm1(output)
            output = output + self._attend(layer.self_attn, query, query, query, None, None)
            query = layer.layer_norm2(output)
            output = output + self._attend(
                layer.cross_attn_image, query, memory + memory_pos, memory, key_bias, spatial
            )
            query = layer.layer_norm3(output)
            if hasattr(layer, "mlp"):  # EdgeTAM
                output = output + layer.mlp(query)
            else:
                output = output + layer.linear2(layer.activation(layer.linear1(query)))
        return module.layer_norm(output).unsqueeze(0)  # (1, B, HW, C) like the stock module


# -- export -----------------------------------------------------------------------------------------------
def memory_bank_size(config, conditioning_frames: int = 2) -> tuple[int, int]:
    """``(memory slots, pointer tokens)`` that hold everything the model can attend to: the kept conditioning
    frames plus ``num_maskmem - 1`` recent frames; the conditioning frames' pointers plus
    ``max_object_pointers_in_encoder - 1`` recent ones, each split into ``hidden / 64`` tokens."""
    mem_dim = config.memory_encoder_output_channels
    hidden = config.memory_attention_hidden_size
    slots = conditioning_frames + config.num_maskmem - 1
    pointers = (conditioning_frames + config.max_object_pointers_in_encoder - 1) * max(1, hidden // mem_dim)
    return slots, pointers


def example_inputs(
    model: nn.Module,
    name: str,
    num_objects: int = 1,
    num_points: int = 2,
    slots: int = 0,
    pointer_tokens: int = 0,
    filled_slots: int | None = None,
    filled_pointers: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes for graph ``name`` (tests use them with different sizes)."""
    gen = torch.Generator().manual_seed(seed)
    config = model.config
    size = config.image_size
    hidden = config.memory_attention_hidden_size
    sizes = model.backbone_feature_sizes
    h, w = sizes[-1]
    b = num_objects
    randn = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    if name == "image_encoder":
        return (randn(1, 3, size, size),)
    if name == "prompt_points":
        points = torch.rand(b, 1, num_points, 2, generator=gen) * size
        labels = torch.randint(0, 4, (b, 1, num_points), generator=gen)
        return points, labels
    if name == "prompt_mask":
        mh, mw = model.prompt_encoder.mask_input_size
        return (randn(b, 1, mh, mw),)
    if name == "mask_decoder":
        s0 = model.mask_decoder.conv_s0.out_channels
        s1 = model.mask_decoder.conv_s1.out_channels
        return (
            randn(b, hidden, h, w),
            randn(b, hidden, h, w),
            randn(b, 1, num_points + 1, hidden),
            randn(b, hidden, h, w),
            randn(b, s0, *sizes[0]),
            randn(b, s1, *sizes[1]),
        )
    if name == "memory_encoder":
        mh, mw = model.prompt_encoder.mask_input_size
        return randn(b, hidden, h, w), torch.rand(b, 1, mh * 4, mw * 4, generator=gen) * 20 - 10
    if name == "memory_attention":
        mem_dim = config.memory_encoder_output_channels
        k = tokens_per_memory_slot(model)
        length = slots * k + pointer_tokens
        filled_slots = slots if filled_slots is None else filled_slots
        filled_pointers = pointer_tokens if filled_pointers is None else filled_pointers
        valid = torch.zeros(length, dtype=torch.bool)
        valid[: filled_slots * k] = True
        valid[slots * k : slots * k + filled_pointers] = True
        memory, memory_pos = randn(length, b, mem_dim), randn(length, b, mem_dim)
        memory[~valid], memory_pos[~valid] = 0, 0
        return randn(h * w, b, hidden), randn(h * w, b, hidden), memory, memory_pos, valid
    raise ValueError(f"unknown tracker graph {name!r}")


_IO = {
    "image_encoder": (["pixel_values"], ["feat_s0", "feat_s1", "feat_top", "pos_s0", "pos_s1", "pos_top"], {}),
    "prompt_points": (
        ["points", "labels"],
        ["sparse_embeddings"],
        {
            "points": {0: "batch", 1: "prompts", 2: "points"},
            "labels": {0: "batch", 1: "prompts", 2: "points"},
            "sparse_embeddings": {0: "batch", 1: "prompts", 2: "tokens"},
        },
    ),
    "prompt_mask": (["masks"], ["dense_embeddings"], {"masks": {0: "batch"}, "dense_embeddings": {0: "batch"}}),
    "mask_decoder": (
        [
            "image_embeddings",
            "image_positional_embeddings",
            "sparse_embeddings",
            "dense_embeddings",
            "feat_s0",
            "feat_s1",
        ],
        ["masks", "iou_scores", "mask_tokens", "object_score_logits"],
        {
            "image_embeddings": {0: "batch"},
            "image_positional_embeddings": {0: "batch"},
            "sparse_embeddings": {0: "batch", 1: "prompts", 2: "tokens"},
            "dense_embeddings": {0: "batch"},
            "feat_s0": {0: "batch"},
            "feat_s1": {0: "batch"},
            "masks": {0: "batch", 1: "prompts"},
            "iou_scores": {0: "batch", 1: "prompts"},
            "mask_tokens": {0: "batch", 1: "prompts"},
            "object_score_logits": {0: "batch", 1: "prompts"},
        },
    ),
    "memory_encoder": (
        ["pix_feat", "mask"],
        ["maskmem_features", "maskmem_pos_enc"],
        {
            "pix_feat": {0: "batch"},
            "mask": {0: "batch"},
            "maskmem_features": {0: "batch"},
            "maskmem_pos_enc": {0: "batch"},
        },
    ),
    "memory_attention": (
        ["current", "current_pos", "memory", "memory_pos", "memory_valid"],
        ["conditioned"],
        {
            "current": {1: "batch"},
            "current_pos": {1: "batch"},
            "memory": {1: "batch"},
            "memory_pos": {1: "batch"},
            "conditioned": {1: "batch"},
        },
    ),
}


def graph_module(model: nn.Module, name: str, slots: int = 0, pointer_tokens: int = 0) -> nn.Module:
    """The exportable module for graph ``name`` over ``model``'s weights, in eval mode."""
    modules = {
        "image_encoder": lambda: ImageEncoderGraph(model),
        "prompt_points": lambda: PromptPointsGraph(model.prompt_encoder),
        "prompt_mask": lambda: PromptMaskGraph(model.prompt_encoder),
        "mask_decoder": lambda: MaskDecoderGraph(model.mask_decoder),
        "memory_encoder": lambda: MemoryEncoderGraph(model.memory_encoder),
        "memory_attention": lambda: MemoryAttentionGraph(
            model.memory_attention, slots, pointer_tokens, tokens_per_memory_slot(model)
        ),
    }
    return modules[name]().eval()


def model_family(model: nn.Module) -> str:
    return "edgetam" if "EdgeTam" in type(model).__name__ else "sam2"


def export_tracker(model: nn.Module, out_dir: str | os.PathLike, conditioning_frames: int = 2) -> TrackerGraphSpec:
    """Export ``model``'s graphs into ``out_dir`` (each checked with ``onnx.checker``) + ``tracker_onnx.json``."""
    require("onnx", "export", "ONNX export")
    import onnx

    model = model.float().eval()
    family = model_family(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(GRAPH_FILES)
    slots, pointers = memory_bank_size(model.config, conditioning_frames)
    for name in names:
        module = graph_module(model, name, slots, pointers)
        example = example_inputs(model, name, slots=slots, pointer_tokens=pointers)
        inputs, outputs, dynamic = _IO[name]
        path = out_dir / GRAPH_FILES[name]
        with atomic_output(path, suffix=".onnx") as tmp, torch.no_grad():
            torch.onnx.export(
                module,
                example,
                str(tmp),
                dynamo=False,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
            )
            onnx.checker.check_model(str(tmp))
        logger.info("exported tracker graph %s -> %s", name, path)
    spec = TrackerGraphSpec(
        family=family,
        graphs={n: GRAPH_FILES[n] for n in names},
        image_size=int(model.config.image_size),
        memory_slots=slots,
        tokens_per_slot=tokens_per_memory_slot(model),
        pointer_tokens=pointers,
        feature_size=tuple(int(x) for x in model.backbone_feature_sizes[-1]),
    )
    with atomic_output(out_dir / SPEC_FILE) as tmp:
        tmp.write_text(json.dumps(asdict(spec), indent=1) + "\n", encoding="utf-8")
    return spec


def export_tracker_folder(model_spec: str, out_dir: str | os.PathLike, family: str | None = None) -> TrackerGraphSpec:
    """Load a SAM2/EdgeTAM model (hub id or folder), save it (``save_pretrained``: config, the small non-exported
    weights, processor) into ``out_dir`` and export its graphs next to it."""
    from stvgr1_edge.tracking.sam2 import load_video_model

    family = family or _family_from_folder(model_spec)
    segmenter = load_video_model(model_spec, family=family, device="cpu")
    out_dir = Path(out_dir)
    segmenter.model.save_pretrained(out_dir)
    segmenter.processor.save_pretrained(out_dir)
    return export_tracker(segmenter.model, out_dir)


def _family_from_folder(model_spec: str) -> str:
    config = Path(model_spec) / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
        if model_type.startswith("edgetam"):
            return "edgetam"
        if model_type.startswith("sam2"):
            return "sam2"
        raise BadInputError(
            f"{model_spec} holds a {model_type!r} model, not SAM2/EdgeTAM video: pass a "
            "Sam2VideoModel or EdgeTamVideoModel folder"
        )
    return "edgetam" if "edgetam" in model_spec.lower() else "sam2"


def torch_reference(model: nn.Module, name: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The *stock* transformers modules' outputs for graph ``name`` on ``inputs`` (unpadded memory for the
    memory attention), for parity checks."""
    with torch.no_grad():
        if name == "image_encoder":
            out = model.vision_encoder(inputs[0], return_dict=True)
            f, p = list(out.fpn_hidden_states), list(out.fpn_position_encoding)
            return (model.mask_decoder.conv_s0(f[0]), model.mask_decoder.conv_s1(f[1]), f[2], p[0], p[1], p[2])
        if name == "prompt_points":
            sparse, _ = model.prompt_encoder(
                input_points=inputs[0], input_labels=inputs[1], input_boxes=None, input_masks=None
            )
            return (sparse,)
        if name == "prompt_mask":
            pts = torch.zeros(inputs[0].shape[0], 1, 1, 2)
            no_labels = -torch.ones(pts.shape[:3], dtype=torch.int64)
            _, dense = model.prompt_encoder(
                input_points=pts, input_labels=no_labels, input_boxes=None, input_masks=inputs[0]
            )
            return (dense,)
        if name == "mask_decoder":
            return tuple(graph_module(model, name)(*inputs))  # stock forward selects tokens; compared separately
        if name == "memory_encoder":
            return tuple(model.memory_encoder(*inputs))
        if name == "memory_attention":
            current, current_pos, memory, memory_pos, valid = inputs
            pointers = _pointer_count(model)
            n_ptr = int(valid[-pointers:].sum()) if pointers else 0
            kwargs = {}
            if model_family(model) == "edgetam":
                kwargs["num_spatial_memory_tokens"] = (int(valid.sum()) - n_ptr) // tokens_per_memory_slot(model)
            out = model.memory_attention(
                current_vision_features=current,
                memory=memory[valid],
                current_vision_position_embeddings=current_pos,
                memory_posision_embeddings=memory_pos[valid],
                num_object_pointer_tokens=n_ptr,
                **kwargs,
            )
            return (out,)
    raise ValueError(f"unknown tracker graph {name!r}")


def _pointer_count(model: nn.Module) -> int:
    return memory_bank_size(model.config)[1]


def tracker_parity(model: nn.Module, folder: str | os.PathLike, seed: int = 0) -> dict[str, Any]:
    """Max abs error of every exported graph (onnxruntime, CPU) vs the stock PyTorch modules on random inputs."""
    ort = require("onnxruntime", "export", "checking the exported tracker graphs")
    folder = Path(folder)
    spec = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    errors: dict[str, float] = {}
    for name, file in spec["graphs"].items():
        session = ort.InferenceSession(str(folder / file), session_options(), providers=["CPUExecutionProvider"])
        inputs = example_inputs(
            model,
            name,
            slots=spec["memory_slots"],
            pointer_tokens=spec["pointer_tokens"],
            filled_slots=max(1, spec["memory_slots"] - 1),
            seed=seed,
        )
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
        got = session.run(None, feed)
        want = torch_reference(model, name, inputs)
        errors[name] = max(float((torch.from_numpy(g) - w.float()).abs().max()) for g, w in zip(got, want))
    return errors
