"""Qwen2.5-VL's 3-D rotary positions as the released checkpoints were trained with them.

Qwen2.5-VL gives each video token a (time, row, column) position and every text token one position on all three
axes. In Qwen's own code (and transformers 4.x, and vLLM) the text *after* a video starts one past the largest
position the video used on any axis. transformers 5.x starts it one past the video's largest *row/column* only,
ignoring time: on a 20 s clip at 2 fps (20 temporal grids 2 positions apart, 7x13 merged patches) the video spans
39 positions in time but 13 in width, so the prompt's closing tokens and every generated token sit 26 positions
early, where the model never saw them in training — and ``generate``'s next positions (last + 1) no longer agree
with the model's own ``rope_deltas`` (largest + 1 - length).

:func:`qwen2_5_vl_rope_index` is the original rule; :func:`use_trained_rope_index` installs it on a loaded model, so
that ``generate``, a plain forward (training) and the static engine all place tokens as in training. Temporal
positions are ``floor(grid index * seconds per grid * tokens_per_second)``, computed in floating point.
"""

from __future__ import annotations

import itertools
import types
from typing import Any, Iterator

import torch

TEXT, IMAGE, VIDEO = 0, 1, 2
"""``mm_token_type_ids`` values."""


def qwen2_5_vl_rope_index(
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    second_per_grid_ts: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    spatial_merge_size: int,
    tokens_per_second: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positions (3, batch, length), deltas (batch, 1))``: each block starts one past the largest position of the
    block before it; ``delta = largest position + 1 - length`` (so a generated token's position is its cache
    position + delta). Padding (``attention_mask == 0``) gets position 0."""
    batch, length = input_ids.shape
    positions = torch.zeros(3, batch, length, dtype=torch.long, device=input_ids.device)
    grids: dict[int, Iterator[Any]] = {
        IMAGE: iter(image_grid_thw if image_grid_thw is not None else []),
        VIDEO: iter(video_grid_thw if video_grid_thw is not None else []),
    }
    seconds = iter(second_per_grid_ts.tolist() if second_per_grid_ts is not None else [])
    deltas = []
    for b in range(batch):
        keep = attention_mask[b].bool() if attention_mask is not None else torch.ones(length, dtype=torch.bool)
        types_b = mm_token_type_ids[b][keep.to(mm_token_type_ids.device)].tolist()
        blocks = []
        next_position = 0
        for kind, run in itertools.groupby(types_b):
            size = len(list(run))
            if kind == TEXT:
                block = torch.arange(size).view(1, -1).expand(3, -1) + next_position
            else:
                t, h, w = (int(v) for v in next(grids[kind]))
                h, w = h // spatial_merge_size, w // spatial_merge_size
                step = next(seconds, 1.0) * tokens_per_second if kind == VIDEO else 0.0
                time = (torch.arange(t, dtype=torch.float64) * step).long()
                block = torch.stack(
                    [
                        time.view(-1, 1, 1).expand(t, h, w).flatten(),
                        torch.arange(h).view(1, -1, 1).expand(t, h, w).flatten(),
                        torch.arange(w).view(1, 1, -1).expand(t, h, w).flatten(),
                    ]
                )
                if block.shape[1] != size:
                    raise ValueError(f"{size} placeholder tokens for a {t}x{h}x{w} grid after merging")
                block = block + next_position
            blocks.append(block)
            next_position = int(block.max()) + 1
        merged = torch.cat(blocks, dim=1) if blocks else torch.zeros(3, 0, dtype=torch.long)
        positions[:, b, keep.to(positions.device)] = merged.to(positions.device)
        deltas.append(next_position - len(types_b))
    return positions, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def _trained_rope_index(
    self: Any,
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    vision = self.config.vision_config
    return qwen2_5_vl_rope_index(
        input_ids,
        mm_token_type_ids,
        image_grid_thw,
        video_grid_thw,
        second_per_grid_ts,
        attention_mask,
        vision.spatial_merge_size,
        vision.tokens_per_second,
    )


def use_trained_rope_index(model: Any) -> Any:
    """Give every ``Qwen2_5_VLModel`` inside ``model`` (a ``Qwen2_5_VLForConditionalGeneration``, or one wrapped by
    PEFT, DeepSpeed, ...) the original position rule, for these instances only; returns ``model``."""
    for module in model.modules():
        if type(module).__name__ == "Qwen2_5_VLModel" and hasattr(module, "get_rope_index"):
            module.get_rope_index = types.MethodType(_trained_rope_index, module)
    return model
