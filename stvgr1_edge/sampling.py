"""Which frames the VLM sees, and at what size — `STVG-R1.md` §4, using qwen-vl-utils' own rules.

The released checkpoint was trained and evaluated on exactly these choices, so the defaults of
:class:`SamplingConfig` reproduce them: 2 fps, 4..768 frames (even), a clip budget of 2048 visual
tokens, bicubic antialiased resizing to multiples of 28.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BadInputError


@dataclass(frozen=True)
class SamplingConfig:
    """Frame sampling and resizing for the VLM. Defaults are the STVG-R1 evaluation settings."""

    fps: float = 2.0
    """Frames per second sampled from the video (qwen-vl-utils ``fps``)."""
    min_frames: int = 4
    """Fewest frames sampled (rounded up to an even number)."""
    max_frames: int = 768
    """Most frames sampled (also capped by the video's frame count; rounded down to even)."""
    total_pixels: int = 2048 * 28 * 28
    """Pixel budget of the whole clip: about 2048 visual tokens after 2x2 patch merging and 2-frame tubes."""
    min_pixels: int = 16 * 28 * 28
    """Smallest frame area after resizing."""
    max_frame_pixels: int = 768 * 28 * 28
    """Largest frame area after resizing (qwen-vl-utils ``VIDEO_MAX_PIXELS``)."""
    patch_factor: int = 28
    """Resized sides are multiples of this (14-pixel patches, 2x2 merge)."""


@dataclass(frozen=True)
class FrameSampling:
    """The sampled frame indices (0-based, native), their effective fps, and the resized frame size."""

    indices: tuple[int, ...]
    sample_fps: float
    resized_height: int
    resized_width: int

    @property
    def num_frames(self) -> int:
        return len(self.indices)


def num_sampled_frames(total_frames: int, video_fps: float, cfg: SamplingConfig = SamplingConfig()) -> int:
    """``nframes`` of qwen-vl-utils' ``smart_nframes`` for ``fps`` sampling."""
    from qwen_vl_utils.vision_process import smart_nframes

    if total_frames < 2:
        raise BadInputError(f"video has {total_frames} frame(s): at least 2 are needed to sample a clip")
    if not video_fps or video_fps <= 0:
        raise BadInputError(f"video has no usable frame rate ({video_fps}): re-encode it with ffmpeg")
    ele = {"fps": cfg.fps, "min_frames": cfg.min_frames, "max_frames": min(cfg.max_frames, total_frames)}
    return int(smart_nframes(ele, total_frames=total_frames, video_fps=video_fps))


def sample_frame_indices(total_frames: int, video_fps: float, cfg: SamplingConfig = SamplingConfig()) -> np.ndarray:
    """``linspace(0, total_frames - 1, nframes).round()`` as in qwen-vl-utils (torch rounding: half to even)."""
    import torch

    n = num_sampled_frames(total_frames, video_fps, cfg)
    return torch.linspace(0, total_frames - 1, n).round().long().numpy()


def sampled_fps(num_frames: int, total_frames: int, video_fps: float) -> float:
    """Effective fps of the sampled clip; the processor must receive it as the video's fps."""
    return num_frames / max(total_frames, 1e-6) * video_fps


def frame_max_pixels(num_frames: int, cfg: SamplingConfig = SamplingConfig()) -> int | float:
    """Per-frame pixel cap: ``max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * 2), int(min_pixels * 1.05))``."""
    from qwen_vl_utils.vision_process import FRAME_FACTOR

    return max(min(cfg.max_frame_pixels, cfg.total_pixels / num_frames * FRAME_FACTOR), int(cfg.min_pixels * 1.05))


def resized_frame_size(
    height: int, width: int, num_frames: int, cfg: SamplingConfig = SamplingConfig()
) -> tuple[int, int]:
    """(height, width) after qwen-vl-utils' ``smart_resize`` under the clip's pixel budget."""
    from qwen_vl_utils.vision_process import smart_resize

    return smart_resize(
        height, width, factor=cfg.patch_factor, min_pixels=cfg.min_pixels, max_pixels=frame_max_pixels(num_frames, cfg)
    )


def plan_sampling(
    total_frames: int, video_fps: float, height: int, width: int, cfg: SamplingConfig = SamplingConfig()
) -> FrameSampling:
    """Everything §4 decides about a video before any pixel is read."""
    idx = sample_frame_indices(total_frames, video_fps, cfg)
    h, w = resized_frame_size(height, width, len(idx), cfg)
    return FrameSampling(tuple(int(i) for i in idx), sampled_fps(len(idx), total_frames, video_fps), h, w)


def _resize_video_uint8(video, height: int, width: int):
    """qwen-vl-utils' resize of a uint8 (T, 3, H, W) tensor: torchvision bicubic, antialiased, rounded to uint8.
    Frames already at the size come back as they are (which is also what torchvision does)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if tuple(video.shape[-2:]) == (height, width):
        return video
    return TF.resize(video, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)


def resize_frames(frames: np.ndarray, height: int, width: int):
    """Resize RGB frames ``(T, H, W, 3)`` uint8 to a float tensor ``(T, 3, height, width)`` exactly as
    qwen-vl-utils does (torchvision bicubic, antialiased, values kept in 0..255 floats). Frames that are
    already ``height x width`` (see :func:`resize_frame`) pass through unchanged."""
    import torch

    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return _resize_video_uint8(video, height, width).float()


def resize_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """One RGB frame ``(H, W, 3)`` uint8 resized as :func:`resize_frames` would, kept as ``(height, width, 3)``
    uint8 (the resize rounds to uint8 anyway, so nothing is lost; per frame equals per clip)."""
    import torch

    video = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return _resize_video_uint8(video, height, width)[0].permute(1, 2, 0).contiguous().numpy()
