"""``PromptedClip``: the frames the VLM sees (the seam between tracking/rendering and grounding)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PromptedClip:
    """Sampled frames with ID markers already drawn (or not, for ``--time-only``).

    ``frames`` (T, H, W, 3) uint8 RGB, at native resolution or already resized to ``resized_height x
    resized_width`` (the markers are drawn at native resolution either way, §3); ``frame_indices`` their
    0-based native indices; ``sample_fps`` the effective fps of the sampled clip (what the processor must be
    told); ``resized_height/width`` the `smart_resize` target (multiples of 28) the grounder resizes to;
    ``drawn_ids`` the IDs drawn on the frames (None: not known), the only ones an answer can name with a tube.
    """

    frames: np.ndarray
    frame_indices: tuple[int, ...]
    sample_fps: float
    resized_height: int
    resized_width: int
    video_fps: float
    num_video_frames: int
    drawn_ids: tuple[int, ...] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    @property
    def duration_s(self) -> float:
        return self.num_video_frames / self.video_fps
