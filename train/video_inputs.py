"""The model inputs of one cached sample, and how several of them form one batch.

Preprocessing is the grounder's own: :class:`ClipProcessor` is :class:`stvgr1_edge.grounding.GroundingInputs`
(the model-free half of the ``Grounder``), so training sees exactly the tensors and token layout that inference
feeds the model.

Batches of several videos follow the processor's own convention: patches of all videos concatenated along dim 0,
one ``video_grid_thw`` row and one ``second_per_grid_ts`` entry per video, in row order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from stvgr1_edge.grounding import GroundingInputs
from stvgr1_edge.prepared import VideoTensors

if TYPE_CHECKING:  # pragma: no cover
    import torch

VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
"""The processor tensors every forward pass of a video sample needs."""


class ClipProcessor(GroundingInputs):
    """The grounder's input preparation (``prepare_video``, ``prepare_text``), plus the constants the cache checks."""

    def constants(self) -> dict[str, object]:
        """Preprocessing constants the cached tensors depend on (checked again at training time)."""
        vp = self.processor.video_processor
        return {
            "patch_size": int(vp.patch_size),
            "merge_size": int(vp.merge_size),
            "temporal_patch_size": int(vp.temporal_patch_size),
            "image_mean": [round(float(v), 6) for v in vp.image_mean],
            "image_std": [round(float(v), 6) for v in vp.image_std],
        }


def collate_videos(videos: Sequence[VideoTensors], device=None) -> dict[str, "torch.Tensor"]:
    """One batch's video kwargs: patches concatenated in row order, grids stacked, seconds-per-grid concatenated."""
    import torch

    if not videos:
        raise ValueError("collate_videos: no videos")
    batch = {
        "pixel_values_videos": torch.cat([v.pixel_values_videos for v in videos], dim=0),
        "video_grid_thw": torch.cat([v.video_grid_thw.reshape(-1, 3) for v in videos], dim=0),
        "second_per_grid_ts": torch.cat([v.second_per_grid_ts.reshape(-1) for v in videos], dim=0),
    }
    if device is not None:
        batch = {k: t.to(device) for k, t in batch.items()}
    return batch


def video_token_type_ids(input_ids: "torch.Tensor", video_token_id: int) -> "torch.Tensor":
    """``mm_token_type_ids`` for Qwen2.5-VL's 3-D rotary positions: 2 on ``<|video_pad|>`` tokens, 0 elsewhere."""
    return (input_ids == video_token_id).long() * 2
