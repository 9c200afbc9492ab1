"""SAM2.1 / EdgeTAM streaming video tracker (transformers ``Sam2VideoModel`` / ``EdgeTamVideoModel``).

Per tracked frame (the hot path, ``Sam2Tracker.step``):

1. preprocess the frame and propagate every object held by the model's inference session: the image encoder runs
   once per frame, and all objects go through memory attention, the mask decoder and the memory encoder in one
   batched forward (:mod:`.sam2_batched`; ``batched_objects=False``: transformers' per-object
   ``model(inference_session, frame=...)`` loop);
2. on a keyframe (every ``keyframe_interval`` tracked frames) run the detector, turn all its boxes into masks
   in one batched SAM decoder call on the frame's cached image features, let the :class:`IdManager` decide
   new / duplicate / contained / re-linked, and seed (or refresh) the chosen objects with those masks in one
   more ``model(...)`` call on the same frame;
3. upscale the masks to the frame, resolve overlaps per pixel by the highest mask logit (not last-writer-wins),
   and store boxes (tight boxes of the masks) + COCO RLE masks in the ``TrackSet``;
4. bound memory: keep only the current frame's pixels, the last ``recent_frames`` memories and
   ``conditioning_frames`` detector-seeded memories per object, and drop objects from the session after
   ``retire_after`` absent frames (the ID manager can still re-link them).

The session indexes *tracked* frames 0, 1, 2, … (not native indices), so SAM2's "previous frames" memory
means the previous tracked frames also when ``every > 1``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingWeightsError, require
from ..hub import hub_source
from ..masks import mask_to_box, mask_to_rle
from ..tracks import TrackSet
from ..video import Frame, VideoInfo
from .base import Detections, Detector, StreamingTracker, TrackerConfig
from .id_manager import IdManager, IdManagerConfig

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINTS = {"sam2": "facebook/sam2.1-hiera-tiny", "edgetam": "yonigozlan/EdgeTAM-hf"}
"""Hub ids used when a user names only the family."""


@dataclass(frozen=True)
class Sam2TrackerConfig(TrackerConfig):
    """SAM2/EdgeTAM tracker settings (plus ``every`` and ``keyframe_interval``)."""

    ids: IdManagerConfig = field(default_factory=IdManagerConfig)
    """Keyframe ID rules (STVG-R1 §2 thresholds, re-linking, refresh)."""
    mask_threshold: float = 0.0
    """Mask logit threshold (SAM2's own: 0)."""
    recent_frames: int | None = None
    """Non-conditioning memories kept per object; None = what the model can use
    (``max(num_maskmem, max_object_pointers_in_encoder)``, 16 for SAM2.1/EdgeTAM)."""
    conditioning_frames: int = 2
    """Detector-seeded (conditioning) memories kept per object, the most recent ones."""
    retire_after: int = 30
    """Drop an object from the model session after this many tracked frames without it (bounds per-frame cost)."""
    batched_objects: bool = True
    """Propagate all objects of a frame in one batched forward (``sam2_batched``: memory attention, mask decoder and
    memory encoder once per frame, not once per object). False: transformers' own per-object loop (the reference;
    same masks up to float rounding)."""


@dataclass(frozen=True)
class VideoSegmenter:
    """A loaded streaming video segmentation model and its processor (load once, share between trackers)."""

    model: Any
    processor: Any
    family: str
    device: str
    dtype: Any


def _looks_like_path(spec: str) -> bool:
    """A local folder rather than a hub id (``owner/name``)."""
    return (
        spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or os.sep != "/"
        and os.sep in spec
        or Path(spec).exists()
    )


def load_video_model(spec: str, family: str = "sam2", device: str = "cpu", dtype: Any = None) -> VideoSegmenter:
    """Load ``Sam2VideoModel``/``EdgeTamVideoModel`` + ``Sam2VideoProcessor`` from a hub id or local folder."""
    transformers = require("transformers", "gpu", "the SAM2/EdgeTAM tracker")
    import torch

    if family not in DEFAULT_CHECKPOINTS:
        raise MissingWeightsError(f"unknown tracker family {family!r}: use 'sam2' or 'edgetam'")
    model_cls = transformers.Sam2VideoModel if family == "sam2" else transformers.EdgeTamVideoModel
    path = Path(spec).expanduser()
    if _looks_like_path(spec) and not path.is_dir():
        raise MissingWeightsError(
            f"{family} model folder not found: {spec}: pass a folder saved with save_pretrained "
            f"or a hub id (e.g. {DEFAULT_CHECKPOINTS[family]})"
        )
    dtype = dtype if dtype is not None else torch.float32
    source, local_only = str(path), True
    if not path.is_dir():
        source, local_only = hub_source(spec, f"download it with  hf download {spec}  or pass a local folder")
    try:
        processor = transformers.Sam2VideoProcessor.from_pretrained(source, local_files_only=local_only)
        model = model_cls.from_pretrained(source, dtype=dtype, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise MissingWeightsError(
            f"cannot load {family} weights '{spec}' ({reason}): download them with  hf download "
            f"{spec if not path.is_dir() else DEFAULT_CHECKPOINTS[family]}  (needs internet once) or pass a local "
            "folder"
        ) from None
    if family == "edgetam" and model.config.vision_config.model_type == "edgetam_vision_model":
        require("timm", "gpu", "EdgeTAM's RepViT image encoder")
    model = model.to(device).eval()
    if family == "edgetam":
        _fix_edgetam_mask_prompt_scores(model)
    return VideoSegmenter(model, processor, family, str(device), dtype)


def _fix_edgetam_mask_prompt_scores(model) -> None:
    """Work around transformers 5.24's EdgeTAM returning mask-prompt object scores one dim short.

    Its ``_use_mask_as_output`` gives ``(B, 1)`` where the decoder path gives ``(B, 1, 1)``, so a frame
    holding both a mask-seeded and a propagated object fails in ``torch.cat``. SAM2's version adds the
    missing dim; we do the same on this model instance only.
    """
    original = model._use_mask_as_output

    def use_mask_as_output(*args, **kwargs):
        out = original(*args, **kwargs)
        if out.object_score_logits.dim() == 2:
            out.object_score_logits = out.object_score_logits.unsqueeze(-1)
        return out

    model._use_mask_as_output = use_mask_as_output


class Sam2Tracker(StreamingTracker):
    """Multi-object streaming tracker: detector-seeded SAM2.1 or EdgeTAM with consistent IDs."""

    config: Sam2TrackerConfig

    def __init__(
        self,
        model: str | VideoSegmenter,
        detector: Detector,
        config: Sam2TrackerConfig | None = None,
        device: str = "cpu",
        dtype: Any = None,
        family: str = "sam2",
    ):
        self.segmenter = model if isinstance(model, VideoSegmenter) else load_video_model(model, family, device, dtype)
        self.detector = detector
        self.config = config or Sam2TrackerConfig()
        if self.config.every < 1 or self.config.keyframe_interval < 1:
            raise ValueError("every and keyframe_interval must be >= 1")
        model_config = self.segmenter.model.config
        self.recent_frames = self.config.recent_frames or max(
            model_config.num_maskmem, model_config.max_object_pointers_in_encoder
        )
        self.ids = IdManager(self.config.ids)
        self._session: Any = None
        """transformers' video inference session of the current video (None between videos)."""
        self._tracks: TrackSet | None = None

    # -- StreamingTracker -------------------------------------------------------------------------
    def start(self, info: VideoInfo, always_track: frozenset[int] = frozenset()) -> None:
        self._schedule_video(always_track)
        seg = self.segmenter
        self._session = seg.processor.init_video_session(inference_device=seg.device, dtype=seg.dtype)
        self._size = (int(info.height), int(info.width))
        self._tracks = TrackSet(info.width, info.height, info.fps, info.num_frames)
        self.ids.reset()
        self._t = 0  # tracked-frame counter = session frame index
        self._absent: dict[int, int] = {}  # id -> consecutive tracked frames without it
        self._labels: dict[int, str] = {}

    def step(self, frame: Frame) -> None:
        if self._session is None:
            raise RuntimeError("Sam2Tracker.step called before start()")
        if not self.should_track(frame.index):
            return
        import torch

        seg, t = self.segmenter, self._t
        self._t += 1
        with torch.inference_mode():
            pixels = seg.processor(images=frame.image, return_tensors="pt")["pixel_values"][0].to(seg.device)
            ids, logits, scores = self._propagate(pixels, t)
            if t % self.config.keyframe_interval == 0:
                ids, logits, scores = self._keyframe(frame, pixels, t, ids, logits, scores)
            self._record(frame.index, ids, logits, scores)
        self._bound_memory(t)

    def finish(self) -> TrackSet:
        if self._tracks is None:
            raise RuntimeError("Sam2Tracker.finish called before start()")
        tracks, self._tracks, self._session = self._tracks, None, None
        return tracks

    # -- per-frame pieces ---------------------------------------------------------------------------
    def _propagate(self, pixels, t: int):
        """Run the model on frame ``t`` for every object in the session: ``(ids, low-res logits, scores)``."""
        session = self._session
        if session.get_obj_num() == 0:
            session.add_new_frame(pixels, t)
            return [], None, None
        if self.config.batched_objects:
            from .sam2_batched import propagate_objects

            out = propagate_objects(self.segmenter.model, session, pixels, t)
        else:
            out = self.segmenter.model(inference_session=session, frame=pixels, frame_idx=t)
        return list(out.object_ids), out.pred_masks[:, 0], out.object_score_logits.reshape(-1)

    def _keyframe(self, frame: Frame, pixels, t: int, ids, logits, scores):
        """Detect, decide IDs, seed new/refreshed/re-linked objects; returns the updated model outputs."""
        detections = self.detector(frame.image)
        if len(detections) == 0:
            return ids, logits, scores
        thr = self.config.mask_threshold
        det_masks = self._detection_masks(detections, t)  # (N, h, w) bool, model space
        tracked = {}
        if ids:
            low = (logits > thr).cpu().numpy()
            tracked = {i: low[k] for k, i in enumerate(ids) if float(scores[k]) > 0 and low[k].any()}
        plan = self.ids.plan_keyframe(frame.index, det_masks, detections.boxes, detections.scores, tracked)
        seeds = plan.seeds
        if not seeds:
            return ids, logits, scores
        for a in plan.assignments:
            if a.track_id is not None and a.track_id not in self._labels:
                self._labels[a.track_id] = detections.labels[a.detection]
        self._seed(pixels, t, {tid: det_masks[d] for tid, d in seeds.items()})
        return self._propagate(pixels, t)

    def _detection_masks(self, detections: Detections, t: int) -> np.ndarray:
        """Masks of all detections in the model's low-res mask space: the detector's own, else SAM from boxes."""
        import torch
        import torch.nn.functional as F

        model, thr = self.segmenter.model, self.config.mask_threshold
        h, w = model.prompt_encoder.mask_input_size
        if detections.masks is not None:
            masks = torch.from_numpy(np.asarray(detections.masks, dtype=np.float32))[:, None]
            return (F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)[:, 0] > 0.5).numpy()
        return (self._segment_boxes(detections.boxes, t) > thr).cpu().numpy()

    def _segment_boxes(self, boxes: np.ndarray, t: int):
        """Box prompts → low-res mask logits (N, h, w), all boxes in one SAM decoder call on frame ``t``'s features.

        Uses the model's own image-feature cache and single-frame decoder (the same calls the video
        model makes for a box prompt on a new object), so the frame is encoded only once.
        """
        import torch

        seg, session = self.segmenter, self._session
        model = seg.model
        n = len(boxes)
        feats, _ = model._prepare_vision_features(session, t, 1)
        sizes = model.backbone_feature_sizes
        high_res = [
            x.permute(1, 2, 0).reshape(1, x.size(2), *s).expand(n, -1, -1, -1) for x, s in zip(feats[:-1], sizes[:-1])
        ]
        top = (feats[-1] + model.no_memory_embedding).permute(1, 2, 0).reshape(1, -1, *sizes[-1]).expand(n, -1, -1, -1)
        encoded = seg.processor(original_sizes=[list(self._size)], input_boxes=[boxes.tolist()], return_tensors="pt")
        corners = encoded["input_boxes"].reshape(n, 1, 2, 2).to(seg.device, top.dtype)  # one box per batch row
        labels = torch.tensor([[[2, 3]]], dtype=torch.int32, device=seg.device).expand(n, 1, 2)
        out = model._single_frame_forward(
            input_points=corners, input_labels=labels, image_embeddings=high_res + [top], multimask_output=False
        )
        return out.pred_masks.reshape(n, *out.pred_masks.shape[-2:])

    def _seed(self, pixels, t: int, masks: dict[int, np.ndarray]) -> None:
        """(Re)initialise objects at frame ``t`` from masks; all of them go in one processor call."""
        import torch

        session = self._session
        for tid in masks:  # an object already propagated on this frame becomes a conditioning frame again
            if tid in session.obj_ids:
                idx = session.obj_id_to_idx(tid)
                session.frames_tracked_per_obj[idx].pop(t, None)
                session.output_dict_per_obj[idx]["non_cond_frame_outputs"].pop(t, None)
            self._absent[tid] = 0
        self.segmenter.processor.add_inputs_to_inference_session(
            session, frame_idx=t, obj_ids=list(masks), input_masks=[torch.from_numpy(m) for m in masks.values()]
        )

    def _record(self, index: int, ids: list[int], logits, scores) -> None:
        """Full-resolution masks (overlaps resolved by the highest logit) → boxes + RLE in the TrackSet."""
        import torch

        if not ids:
            return
        processor = self.segmenter.processor
        full = processor.post_process_masks(
            [logits[:, None].float()],
            original_sizes=[list(self._size)],
            binarize=False,
            apply_non_overlapping_constraints=True,
        )[0][:, 0]
        masks = (full > self.config.mask_threshold).cpu().numpy()
        probs = torch.sigmoid(scores.float()).cpu().numpy()
        present: dict[int, np.ndarray | list[float]] = {}
        for k, tid in enumerate(ids):
            box = mask_to_box(masks[k]) if float(scores[k]) > 0 else None
            if box is None:
                self._absent[tid] = self._absent.get(tid, 0) + 1
                continue
            self._absent[tid] = 0
            present[tid] = box
            assert self._tracks is not None  # set by start()
            self._tracks.add(tid, index, box, mask_to_rle(masks[k]), float(probs[k]), self._labels.get(tid, ""))
        self.ids.observe(index, present)

    def _bound_memory(self, t: int) -> None:
        """Forget what the model can no longer use, and retire long-absent objects from the session."""
        session = self._session
        keep_from = t - self.recent_frames
        for f in [f for f in session.processed_frames or {} if f != t]:
            del session.processed_frames[f]
        for idx, outputs in session.output_dict_per_obj.items():
            recent = outputs["non_cond_frame_outputs"]
            for f in [f for f in recent if f < keep_from]:
                del recent[f]
            cond = outputs["cond_frame_outputs"]
            for f in sorted(cond)[: -self.config.conditioning_frames]:
                del cond[f]
            tracked = session.frames_tracked_per_obj[idx]
            for f in [f for f in tracked if f < keep_from]:
                del tracked[f]
            session.point_inputs_per_obj[idx].clear()
            session.mask_inputs_per_obj[idx].clear()
        retired = [tid for tid in session.obj_ids if self._absent.get(tid, 0) >= self.config.retire_after]
        if retired:
            _drop_objects(session, retired)
            logger.debug("frame %d: retired objects %s from the model session", t, retired)


def _drop_objects(session, obj_ids: list[int]) -> None:
    """Remove objects from a transformers video inference session, re-indexing the remaining ones."""
    drop = set(obj_ids)
    keep = [oid for oid in session.obj_ids if oid not in drop]
    old_index = {oid: session.obj_id_to_idx(oid) for oid in keep}
    per_object = [
        session.point_inputs_per_obj,
        session.mask_inputs_per_obj,
        session.output_dict_per_obj,
        session.frames_tracked_per_obj,
    ]
    moved = [{new: store[old_index[oid]] for new, oid in enumerate(keep)} for store in per_object]
    for store, renumbered in zip(per_object, moved):
        store.clear()
        store.update(renumbered)
    session._obj_id_to_idx.clear()
    session._obj_idx_to_id.clear()
    for new, oid in enumerate(keep):
        session._obj_id_to_idx[oid] = new
        session._obj_idx_to_id[new] = oid
    session.obj_ids = list(keep)
    session.obj_with_new_inputs = [oid for oid in session.obj_with_new_inputs if oid not in drop]
