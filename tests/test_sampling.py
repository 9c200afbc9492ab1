"""`stvgr1_edge.sampling` (STVG-R1.md §4): numbers worked out by hand, and equality with qwen-vl-utils."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stvgr1_edge.errors import BadInputError
from stvgr1_edge.sampling import (
    SamplingConfig,
    frame_max_pixels,
    num_sampled_frames,
    plan_sampling,
    resize_frames,
    resized_frame_size,
    sample_frame_indices,
    sampled_fps,
)


def visual_tokens(num_frames: int, height: int, width: int) -> int:
    """Qwen2.5-VL video tokens: 14-px patches, 2x2 spatial merge, 2-frame temporal patches."""
    return (num_frames // 2) * (height // 28) * (width // 28)


# --- number of frames and their indices ---------------------------------------------------------------
@pytest.mark.parametrize(
    "total, fps, expected",
    [
        (500, 25.0, 40),  # 20 s * 2 fps = 40
        (795, 10.0, 158),  # vtest.avi: 79.5 s * 2 = 159, floored to even
        (101, 10.0, 20),  # 20.2 → 20
        (10, 30.0, 4),  # 0.67 frames → at least 4
        (5, 25.0, 4),  # tiny: clamped up to 4
        (3, 25.0, 2),  # fewer than 4 frames: max_frames = floor_even(min(768, 3)) = 2 wins
        (2, 25.0, 2),
        (108_000, 30.0, 768),  # one hour: 7200 → capped at 768
    ],
)
def test_num_sampled_frames(total, fps, expected):
    assert num_sampled_frames(total, fps) == expected


def test_indices_500_frames_at_25_fps():
    idx = sample_frame_indices(500, 25.0).tolist()
    # linspace(0, 499, 40): step 499/39 = 12.7949 → 0, 12.79, 25.59, 38.38, 51.18, 63.97, ...
    assert idx[:6] == [0, 13, 26, 38, 51, 64]
    assert idx[-3:] == [473, 486, 499]  # 460.62 → ... 486.21, 499
    assert len(idx) == 40
    assert sampled_fps(40, 500, 25.0) == 2.0


def test_indices_vtest_795_frames_at_10_fps():
    idx = sample_frame_indices(795, 10.0).tolist()
    # step 794/157 = 5.0573: 0, 5.06, 10.11, 15.17, 20.23, 25.29 ...
    assert idx[:6] == [0, 5, 10, 15, 20, 25]
    assert idx[-3:] == [784, 789, 794]
    assert sampled_fps(158, 795, 10.0) == 158 / 795 * 10 == pytest.approx(1.98742138, abs=1e-8)


@pytest.mark.parametrize(
    "total, fps, indices, sample_fps",
    [
        (5, 25.0, [0, 1, 3, 4], 20.0),  # linspace(0, 4, 4) = 0, 1.33, 2.67, 4
        (10, 30.0, [0, 3, 6, 9], 12.0),
        (3, 25.0, [0, 2], 2 / 3 * 25),
        (2, 25.0, [0, 1], 25.0),
    ],
)
def test_tiny_videos(total, fps, indices, sample_fps):
    s = plan_sampling(total, fps, 48, 64)
    assert list(s.indices) == indices
    assert s.sample_fps == sample_fps
    assert all(type(i) is int for i in s.indices)


def test_long_video_is_capped_at_768_frames_and_rounds_like_torch_float32():
    idx = sample_frame_indices(108_000, 30.0).tolist()
    assert len(idx) == 768 and idx[0] == 0 and idx[-1] == 107_999
    assert idx[1:4] == [141, 282, 422]  # step 107999/767 = 140.807
    assert set(np.diff(idx).tolist()) <= {140, 141, 142}
    # qwen-vl-utils uses torch.linspace in float32: exact 412 * 107999 / 767 = 58012.5007 rounds to
    # 58013, but float32 gives 58012.5 → 58012 (half to even). We match qwen-vl-utils, not exact maths.
    assert idx[412] == 58012
    assert sampled_fps(768, 108_000, 30.0) == pytest.approx(0.213333333, abs=1e-9)


def test_unusable_videos_are_bad_input():
    with pytest.raises(BadInputError, match="at least 2"):
        plan_sampling(1, 25.0, 48, 64)
    with pytest.raises(BadInputError, match="frame rate"):
        plan_sampling(100, 0.0, 48, 64)


# --- pixels ---------------------------------------------------------------------------------------------
def test_frame_max_pixels_formula():
    # max(min(768*28*28, 2048*28*28 / nframes * 2), int(16*28*28 * 1.05))
    assert frame_max_pixels(4) == 768 * 784 == 602_112  # per-frame cap binds
    assert frame_max_pixels(40) == pytest.approx(80_281.6)  # 1,605,632 / 40 * 2
    assert frame_max_pixels(158) == pytest.approx(20_324.4557, abs=1e-3)
    assert frame_max_pixels(768) == int(12_544 * 1.05) == 13_171  # minimum binds (4181.3 < 13171)


def test_twenty_second_16_9_clip_is_40_frames_of_364x196_and_1820_tokens():
    for height, width in [(720, 1280), (1080, 1920)]:
        s = plan_sampling(500, 25.0, height, width)
        assert (s.num_frames, s.resized_height, s.resized_width, s.sample_fps) == (40, 196, 364, 2.0)
        assert visual_tokens(s.num_frames, s.resized_height, s.resized_width) == 1820


def test_resized_sizes_by_hand():
    # vtest.avi 768x576, 158 frames: cap 20324 px → beta = sqrt(442368 / 20324.46) = 4.665
    # → floor(123.5 / 28) * 28 = 112, floor(164.6 / 28) * 28 = 140
    assert resized_frame_size(576, 768, 158) == (112, 140)
    assert visual_tokens(158, 112, 140) == 1580
    # tiny frames are scaled *up* to min_pixels 12544: beta = sqrt(12544 / 3072) = 2.021
    # → ceil(97.0 / 28) * 28 = 112, ceil(129.3 / 28) * 28 = 140
    assert resized_frame_size(48, 64, 4) == (112, 140)
    # small enough already: sides rounded to multiples of 28
    assert resized_frame_size(180, 320, 4) == (168, 308)
    # one hour of 1080p: the per-frame minimum wins → 84x140
    assert resized_frame_size(1080, 1920, 768) == (84, 140)


def test_config_changes_the_budget():
    cfg = SamplingConfig(fps=1.0, total_pixels=1024 * 28 * 28)
    assert num_sampled_frames(500, 25.0, cfg) == 20
    assert frame_max_pixels(20, cfg) == pytest.approx(1024 * 784 / 20 * 2)


# --- resize_frames equals qwen-vl-utils' fetch_video ---------------------------------------------------
def qwen_fetch_video(frames: np.ndarray, monkeypatch) -> torch.Tensor:
    """qwen-vl-utils' own ``fetch_video`` on these (already sampled) frames.

    ``fetch_video`` on a video *file* reads it with a backend and then resizes the whole (T, C, H, W)
    tensor with torchvision — the path the checkpoint saw. We swap the backend's reader for one that
    returns our frames, so the resize arithmetic under test is qwen-vl-utils' own. (Its list-of-images
    input is *not* that path: it PIL-resizes every image first.)
    """
    from qwen_vl_utils import vision_process

    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()

    def reader(ele):
        return video, {"fps": 2.0, "frames_indices": list(range(len(video))), "total_num_frames": len(video)}, 2.0

    monkeypatch.setattr(vision_process, "get_video_reader_backend", lambda: "stvg-test")
    monkeypatch.setitem(vision_process.VIDEO_READER_BACKENDS, "stvg-test", reader)
    cfg = SamplingConfig()
    ele = {
        "video": "sampled-frames.mp4",
        "fps": cfg.fps,
        "min_pixels": cfg.min_pixels,
        "total_pixels": cfg.total_pixels,
    }
    return vision_process.fetch_video(ele)


@pytest.mark.parametrize("num_frames, height, width", [(4, 180, 320), (40, 360, 640), (6, 48, 64)])
def test_resize_frames_equals_qwen_vl_utils(monkeypatch, num_frames, height, width):
    rng = np.random.default_rng(num_frames)
    frames = rng.integers(0, 256, size=(num_frames, height, width, 3), dtype=np.uint8)
    expected = qwen_fetch_video(frames, monkeypatch)
    h, w = resized_frame_size(height, width, num_frames)
    assert tuple(expected.shape) == (num_frames, 3, h, w)
    ours = resize_frames(frames, h, w)
    assert ours.dtype == expected.dtype == torch.float32
    assert torch.equal(ours, expected)
