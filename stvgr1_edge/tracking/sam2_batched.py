"""All objects of a streamed frame through SAM2.1 / EdgeTAM in one batched forward.

transformers' ``Sam2VideoModel.forward`` / ``EdgeTamVideoModel.forward`` loop over the session's objects and run
``_run_single_frame_inference`` once per object (batch size 1): memory attention, the SAM mask decoder and (for
EdgeTAM) the memory encoder are launched N times per frame, so the per-frame cost grows linearly with the number
of objects even where the hardware could do them at once. :func:`propagate_objects` is a drop-in for
``model(inference_session=session, frame=pixels, frame_idx=t)`` that computes the same thing batched:

1. the image encoder runs once (the session's feature cache, exactly as transformers does);
2. objects that are merely *propagated* (no new prompt on this frame) each gather their own memory bank with the
   model's own helpers (conditioning memories, recent memories, object pointers); objects whose banks have the same
   layout (number of spatial memories, number of pointer tokens) are stacked into one batch and go through memory
   attention and the mask decoder together. Layouts differ only while banks fill up or after re-seeding, so on a
   steady stream all objects form one group. Grouping, not padding: a padded key sequence would change RoPE's
   repeat structure and the softmax sums, so results would no longer equal the reference (and the exported ONNX
   memory attention of ``backends/onnx_tracker.py`` takes one validity mask for the whole batch);
3. objects with a new prompt on this frame (detector seeding, re-seeding) take transformers' own per-object call
   (``_run_single_frame_inference``), unchanged: they are rare (keyframes) and their mask-as-output path calls the
   decoder in a way that is only correct for batch size 1;
4. memory encoding is batched (SAM2: transformers' own ``_batch_encode_memories`` over every object the frame
   computed, as its ``forward`` does; EdgeTAM: one batched ``_encode_new_memory`` for the propagated objects);
5. the session's per-object stores (``output_dict_per_obj``, ``frames_tracked_per_obj``, ``obj_with_new_inputs``)
   are written exactly as transformers writes them, so prompting through the processor, our memory bounds and
   object retirement keep working, and the reference path can take over at any frame.

The arithmetic is transformers' own, so the results are the per-object loop's up to float rounding: BLAS sums a
single row (the decoder's per-token heads at batch 1) in another order than a stack of rows, and oneDNN picks
convolution algorithms by batch size (EdgeTAM's memory encoder); about 1e-9 on the tiny test models. With those two
made batch-independent they are bit-identical in a fresh process (tests/test_sam2_tracker.py; BLAS's own kernel
choice can still vary later in a process). Streaming, forward in time only
(what ``Sam2Tracker`` runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NO_OBJ_SCORE = -1024.0
"""transformers' mask logit for "object absent" (``NO_OBJ_SCORE`` in both model files)."""


@dataclass
class PropagationOutput:
    """What ``model(inference_session, frame=...)`` returns, the fields ``Sam2Tracker`` reads."""

    object_ids: list[int]
    pred_masks: torch.Tensor
    """(N, 1, h, w) low-resolution mask logits, in session object order."""
    object_score_logits: torch.Tensor
    """(N,) object-presence logits."""
    frame_idx: int


@dataclass
class _Bank:
    """One object's memory bank for this frame, as ``_prepare_memory_conditioned_features`` builds it."""

    tokens: torch.Tensor
    """(L, 1, mem_dim) spatial memories then object pointers."""
    positions: torch.Tensor
    """(L, 1, mem_dim) their positional encodings."""
    num_spatial: int
    """Spatial memories (frames) in ``tokens`` (EdgeTAM's cross-attention RoPE needs the count)."""
    num_pointers: int
    """Object-pointer tokens at the end of ``tokens`` (excluded from RoPE)."""


def _is_edgetam(model) -> bool:
    # EdgeTAM compresses each spatial memory with a perceiver; SAM2 keeps the full feature map.
    return hasattr(model, "spatial_perceiver")


@torch.inference_mode()
def propagate_objects(model, session, frame: torch.Tensor, frame_idx: int) -> PropagationOutput:
    """Propagate every object of ``session`` to the streamed ``frame`` (index ``frame_idx``), batched."""
    t = session.add_new_frame(frame, frame_idx)
    num_objects = session.get_obj_num()
    if num_objects == 0:
        raise ValueError("No objects are provided for tracking; please add inputs first.")
    edgetam = _is_edgetam(model)
    feats, feat_pos = model._prepare_vision_features(session, t, 1)  # encoder once, cached for the frame

    masks: list = [None] * num_objects
    scores: list = [None] * num_objects
    to_encode: dict[int, tuple] = {}  # SAM2's memory encoding, after all objects: idx -> (high-res, score, prompted)
    propagated: list[int] = []

    # Sort the objects as transformers' forward does, running prompted ones through its own per-object call.
    for idx in range(num_objects):
        obj_id = session.obj_idx_to_id(idx)
        has_new_inputs = obj_id in session.obj_with_new_inputs
        outputs = session.output_dict_per_obj[idx]
        if not has_new_inputs and t in outputs["cond_frame_outputs"]:  # seeded on this frame already: reuse
            masks[idx] = session.get_output(idx, t, "pred_masks", is_conditioning_frame=True)
            scores[idx] = session.get_output(idx, t, "object_score_logits", is_conditioning_frame=True)
            continue
        if not has_new_inputs:
            propagated.append(idx)
            continue
        is_init = t not in session.frames_tracked_per_obj[idx]
        points = session.point_inputs_per_obj[idx].get(t)
        mask_in = session.mask_inputs_per_obj[idx].get(t)
        if points is not None or mask_in is not None:
            session.obj_with_new_inputs.remove(obj_id)
        extra = {"run_mem_encoder": True} if edgetam else {}  # EdgeTAM encodes memory inside this call
        out = model._run_single_frame_inference(
            inference_session=session,
            frame_idx=t,
            obj_idx=idx,
            batch_size=1,
            is_init_cond_frame=is_init,
            point_inputs=points,
            mask_inputs=mask_in,
            reverse=False,
            streaming=True,
            **extra,
        )
        session.store_output(idx, t, output_value=out, is_conditioning_frame=is_init)
        masks[idx], scores[idx] = out["pred_masks"], out["object_score_logits"]
        if not edgetam:
            prompted = points is not None or mask_in is not None
            to_encode[idx] = (out["high_res_masks"], out["object_score_logits"], prompted)
        if not is_init:
            session.frames_tracked_per_obj[idx][t] = {"reverse": False}

    # Propagated objects: one batched memory attention + decoder (+ EdgeTAM's memory encoder) per memory layout.
    groups: dict[tuple[int, int], list[tuple[int, _Bank]]] = {}
    for idx in propagated:
        bank = _memory_bank(model, session, idx, t, feats[-1].device)
        groups.setdefault((bank.num_spatial, bank.num_pointers), []).append((idx, bank))
    sizes = model.backbone_feature_sizes[:-1]
    high_res = [x.permute(1, 2, 0).view(1, x.size(2), *s) for x, s in zip(feats[:-1], sizes)]  # (1, C, H, W)
    multimask = model._use_multimask(False, None)
    batches = [chunk for members in groups.values() for chunk in _cpu_sized(model, members, feats[-1])]
    for members in batches:
        conditioned = _condition_on_memory(model, feats[-1], feat_pos[-1], [bank for _, bank in members])
        out = _decode(model, high_res, conditioned, multimask)
        if edgetam:  # its forward stores the memory with the outputs, and no high-res masks
            high = out.pop("high_res_masks")
            if model.num_maskmem > 0:
                out["maskmem_features"], out["maskmem_pos_enc"] = _encode_edgetam(model, feats[-1], high, out)
        for row, (idx, _) in enumerate(members):
            current = {key: value[row : row + 1] for key, value in out.items()}
            session.store_output(idx, t, output_value=current, is_conditioning_frame=False)
            session.frames_tracked_per_obj[idx][t] = {"reverse": False}
            masks[idx], scores[idx] = current["pred_masks"], current["object_score_logits"]
            if not edgetam:
                to_encode[idx] = (current["high_res_masks"], current["object_score_logits"], False)

    if to_encode and model.num_maskmem > 0:
        # SAM2: transformers' own batched step over every object computed on this frame, as its forward calls it.
        # It binarizes every object's mask for memory when any object on the frame was prompted; kept, so that the
        # stores equal the reference.
        indices = sorted(to_encode)
        high, score, from_prompt = zip(*(to_encode[i] for i in indices))
        model._batch_encode_memories(session, t, indices, list(high), list(score), list(from_prompt))

    return PropagationOutput(
        object_ids=session.obj_ids.copy(),
        pred_masks=torch.cat(masks, dim=0),
        object_score_logits=torch.cat([s.squeeze(-1) for s in scores], dim=0),
        frame_idx=t,
    )


CPU_BATCH_BYTES = 4 << 20
"""On the CPU, objects share a memory-attention batch only while one object's largest activation is under this size.
Batching pays where the per-object calls are overhead (small feature maps: 4-5x at 20 objects on the test configs);
at real sizes the CPU is busy computing either way, and a batch's activations of tens of MB are mapped afresh page by
page on every call (SAM2 at 512 px, 10 objects in one batch: 750k page faults, 2.7 s per frame against 2.2 s one by
one). The GPU batches everything."""


def _cpu_sized(model, members: list, feat: torch.Tensor) -> list[list]:
    """``members`` split into batches whose largest memory-attention activation fits :data:`CPU_BATCH_BYTES`
    (on the CPU; one batch elsewhere). Per object: the bank's tokens projected to the attention width, or the
    frame's tokens through the 8x-wide MLP, whichever is larger."""
    if feat.device.type != "cpu" or not members:
        return [members]
    tokens = max(members[0][1].tokens.shape[0], 8 * feat.shape[0])
    per_object = tokens * model.hidden_dim * feat.element_size()
    size = max(1, CPU_BATCH_BYTES // per_object)
    return [members[i : i + size] for i in range(0, len(members), size)]


def _memory_bank(model, session, idx: int, t: int, device) -> _Bank:
    """Steps 2-4 of ``_prepare_memory_conditioned_features`` for one object, with the model's own helpers."""
    if model.num_maskmem == 0:  # memory disabled: no bank (the features pass through unchanged)
        return _Bank(torch.empty(0), torch.empty(0), 0, 0)
    frames = model._gather_memory_frame_outputs(session, idx, t, False)
    tokens, positions = model._build_memory_attention_inputs(frames, device)
    num_spatial = len(tokens)
    offsets, pointers, max_pointers = model._get_object_pointers(
        session, idx, t, session.num_frames, device, False, streaming=True
    )
    num_pointers = 0
    if pointers:
        pointer_tokens, pointer_pos = model._process_object_pointers(
            offsets, pointers, max_pointers, 1, model.hidden_dim, device
        )
        tokens.append(pointer_tokens)
        positions.append(pointer_pos)
        num_pointers = pointer_tokens.shape[0]
    bank = torch.cat(tokens)
    if not _is_edgetam(model):  # SAM2 stores spatial memories in bfloat16 and casts the bank to the session dtype
        bank = bank.to(session.dtype)
    return _Bank(bank, torch.cat(positions), num_spatial, num_pointers)


def _condition_on_memory(model, feat, feat_pos, banks: list[_Bank]) -> torch.Tensor:
    """Memory attention for objects with same-layout banks: (B, C, H, W) memory-conditioned top-level features."""
    batch = len(banks)
    height, width = model.backbone_feature_sizes[-1]
    if model.num_maskmem == 0:
        return feat.permute(1, 2, 0).view(1, model.hidden_dim, height, width).expand(batch, -1, -1, -1)
    extra = {"num_spatial_memory_tokens": banks[0].num_spatial} if _is_edgetam(model) else {}
    out = model.memory_attention(
        current_vision_features=feat.expand(-1, batch, -1),  # the frame's (HW, 1, C) features, shared
        current_vision_position_embeddings=feat_pos.expand(-1, batch, -1),
        memory=torch.cat([b.tokens for b in banks], dim=1),  # (L, B, mem_dim): each object its own bank
        memory_posision_embeddings=torch.cat([b.positions for b in banks], dim=1),
        num_object_pointer_tokens=banks[0].num_pointers,
        **extra,
    )
    # (1, B, HW, C) -> (B, C, H, W); transformers' own reshape here (squeeze(1)) is only right for B = 1.
    return out[0].transpose(1, 2).view(batch, model.hidden_dim, height, width)


def _decode(model, high_res: list[torch.Tensor], conditioned: torch.Tensor, multimask: bool) -> dict:
    """The SAM head of ``_single_frame_forward`` for prompt-free propagation, batched over objects.

    Mirrors it op for op, except the best-of-multimask selection: transformers indexes with three broadcast index
    tensors, which for batch size B > 1 returns a (B, B, ...) cross product; here row i takes its own best mask.
    """
    batch, device, dtype = conditioned.shape[0], conditioned.device, conditioned.dtype
    image_pe = model.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)
    # No prompt: one padding point with label -1, as _single_frame_forward pads it.
    points = torch.zeros(batch, 1, 1, 2, dtype=dtype, device=device)
    labels = -torch.ones(batch, 1, 1, dtype=torch.int32, device=device)
    sparse, dense = model.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
    low_multi, iou, tokens, object_scores = model.mask_decoder(
        image_embeddings=conditioned,
        image_positional_embeddings=image_pe,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        high_resolution_features=[x.expand(batch, -1, -1, -1) for x in high_res],
    )
    appearing = object_scores > 0  # (B, 1, 1)
    low_multi = torch.where(appearing[:, None, None], low_multi, NO_OBJ_SCORE)  # hard "absent" for memory
    token = tokens[:, :, 0]
    if multimask:
        rows = torch.arange(batch, device=device)[:, None]  # (B, 1) with best (B, 1): one mask per row
        best = torch.argmax(iou, dim=-1)
        low = low_multi[rows, 0, best]
        if tokens.size(2) > 1:
            token = tokens[rows, 0, best]
    else:
        low = low_multi[:, :, 0]
    # Upscale only the chosen mask (transformers upscales all candidates, then picks: same values, planes are
    # interpolated independently).
    size = (model.image_size, model.image_size)
    high = F.interpolate(low.float(), size=size, mode="bilinear", align_corners=False).to(low.dtype)
    pointer = model.object_pointer_proj(token)
    weight = appearing.to(pointer.dtype)
    pointer = weight * pointer + (1 - weight) * model.no_object_pointer
    return {"pred_masks": low, "object_pointer": pointer, "high_res_masks": high, "object_score_logits": object_scores}


def _encode_edgetam(model, feat, high_res_masks, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """EdgeTAM's ``_encode_new_memory`` for a batch of propagated objects, op for op.

    transformers runs it per object inside ``_run_single_frame_inference``; called with a batch it fails in the
    spatial perceiver (``_forward_2d`` views an expanded tensor), hence this copy with a batch-safe perceiver.
    Propagated objects have no prompt, so their masks go in as sigmoid probabilities (``is_mask_from_pts=False``).
    """
    batch = high_res_masks.shape[0]
    height, width = model.backbone_feature_sizes[-1]
    pix_feat = feat.expand(-1, batch, -1).permute(1, 2, 0).view(batch, model.hidden_dim, height, width)
    mask_for_mem = torch.sigmoid(high_res_masks)
    mask_for_mem = mask_for_mem * model.config.sigmoid_scale_for_mem_enc
    mask_for_mem = mask_for_mem + model.config.sigmoid_bias_for_mem_enc
    features, positions = model.memory_encoder(pix_feat, mask_for_mem)
    if model.occlusion_spatial_embedding_parameter is not None:  # a learnt "occluded" code where the object is absent
        appearing = (out["object_score_logits"] > 0).float()
        occluded = model.occlusion_spatial_embedding_parameter[..., None, None].expand(*features.shape)
        features += (1 - appearing[..., None]) * occluded
    positions = positions.to(high_res_masks.dtype)
    perceiver = model.spatial_perceiver  # compresses the (C, H, W) memory into 1-d + 2-d latent tokens
    latents, latent_positions = [], []
    if perceiver.num_latents_1d > 0:
        one_d, one_d_pos = perceiver._forward_1d(features, positions)
        latents.append(one_d)
        latent_positions.append(one_d_pos)
    if perceiver.num_latents_2d > 0:
        two_d, two_d_pos = _perceive_2d(perceiver, features)
        latents.append(two_d)
        latent_positions.append(two_d_pos)
    dtype = high_res_masks.dtype
    return torch.cat(latents, dim=1).to(dtype), torch.cat(latent_positions, dim=1).to(dtype)


def _perceive_2d(perceiver, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``EdgeTamVideoPerceiverResampler._forward_2d`` with ``reshape`` where it has ``view`` (batch > 1 safe)."""
    from transformers.models.edgetam_video.modeling_edgetam_video import window_partition

    batch, channels, height, width = hidden_states.shape
    latents = perceiver.latents_2d.unsqueeze(0).expand(batch, -1, -1).reshape(-1, 1, channels)  # one per window
    per_side = int(math.sqrt(perceiver.num_latents_2d))
    windows, _ = window_partition(hidden_states.permute(0, 2, 3, 1), height // per_side)
    windows = windows.flatten(1, 2)
    for layer in perceiver.layers:
        latents = layer(latents, windows, positional_encoding=None)
    latents = latents.view(batch, per_side, per_side, channels).permute(0, 3, 1, 2)
    positions = perceiver.positional_encoding(latents.shape, latents.device, latents.dtype).to(hidden_states.dtype)
    positions = positions.permute(0, 2, 3, 1).flatten(1, 2)
    latents = perceiver.layer_norm(latents.permute(0, 2, 3, 1).flatten(1, 2))
    return latents, positions
