"""What our grounder feeds Qwen2.5-VL equals the reference path, exactly.

Reference: qwen-vl-utils' own ``process_vision_info``/``fetch_video`` (frame count with ``smart_nframes``,
indices with ``linspace(...).round()``, ``smart_resize`` under total_pixels = 2048·28·28 and
min_pixels = 16·28·28, torchvision bicubic antialiased resize), followed by the official Qwen2.5-VL processor
call for transformers 5 (video tensor + the video metadata qwen-vl-utils returns, ``do_sample_frames=False``).
The only thing replaced is the file decoder: ``torchvision.io.read_video`` is patched to return our in-memory
native frames, so every sampling and resizing step is the library's code.

Ours: :func:`stvgr1_edge.sampling.plan_sampling` on the same native video, markers drawn on the sampled
frames only, :class:`stvgr1_edge.grounding.Grounder` from a saved tiny model. We capture the tensors at the
model (forward pre-hooks on the vision tower and on the multimodal model) during ``Grounder.ground``.

Tolerance: none. ``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``, ``input_ids`` and
``mm_token_type_ids`` must be bit-identical, and so must the generated text.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stvgr1_edge.clip import PromptedClip
from stvgr1_edge.grounding import Grounder, GrounderConfig
from stvgr1_edge.markers import draw_id_markers
from stvgr1_edge.prompt import grounding_prompt
from stvgr1_edge.sampling import plan_sampling
from stvgr1_edge.tiny import save_tiny_model

NATIVE_FPS = 15.0
NUM_NATIVE_FRAMES = 45  # 3 s -> 6 sampled frames at 2 fps
HEIGHT, WIDTH = 150, 200  # not multiples of 28: smart_resize -> 140 x 196
QUERY = "The man in red walks to the left."


def _object_boxes(t: int) -> list[tuple[int, list[float]]]:
    """Two moving boxes (ID, xyxy) at native frame ``t``."""
    return [(1, [10 + 2 * t, 30, 60 + 2 * t, 110]), (7, [150 - t, 20, 195 - t, 90])]


def _native_video_with_markers() -> np.ndarray:
    """(N, H, W, 3) uint8: a textured background, two coloured boxes and their ID markers on every frame
    (the reference draws markers on every native frame)."""
    rng = np.random.default_rng(3)
    background = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = []
    for t in range(NUM_NATIVE_FRAMES):
        image = background.copy()
        objects = _object_boxes(t)
        for k, (_, (x1, y1, x2, y2)) in enumerate(objects):
            image[int(y1) : int(y2), int(x1) : int(x2)] = (40 + 80 * k, 200 - 60 * k, 90)
        image = draw_id_markers(image, [box for _, box in objects], [obj_id for obj_id, _ in objects])
        frames.append(image)
    return np.stack(frames)


@pytest.fixture(scope="module")
def grounder(tmp_path_factory) -> Grounder:
    folder = save_tiny_model(tmp_path_factory.mktemp("tiny_qwen"), seed=0)
    return Grounder.from_pretrained(GrounderConfig(model=str(folder), device="cpu", max_new_tokens=6))


@pytest.fixture(scope="module")
def native_video() -> np.ndarray:
    return _native_video_with_markers()


def _reference_inputs(processor, native: np.ndarray, prompt: str, monkeypatch) -> dict:
    """qwen-vl-utils + the official processor call, with only the file decoder replaced."""
    from qwen_vl_utils import vision_process

    def read_video_from_memory(path, start_pts=0.0, end_pts=None, pts_unit="sec", output_format="TCHW"):
        assert output_format == "TCHW"
        return torch.from_numpy(native).permute(0, 3, 1, 2).contiguous(), None, {"video_fps": NATIVE_FPS}

    monkeypatch.setattr(vision_process, "get_video_reader_backend", lambda: "torchvision")
    monkeypatch.setattr(vision_process.io, "read_video", read_video_from_memory, raising=False)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": prompt},
                {
                    "type": "video",
                    "video": "in-memory.mp4",
                    "fps": 2.0,
                    "total_pixels": 2048 * 28 * 28,
                    "min_pixels": 16 * 28 * 28,
                },
            ],
        }
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    _, videos, video_kwargs = vision_process.process_vision_info(
        messages, return_video_kwargs=True, return_video_metadata=True
    )
    videos, metadata = zip(*videos)
    inputs = processor(
        text=[text], videos=list(videos), video_metadata=list(metadata), return_tensors="pt", **video_kwargs
    )
    return dict(inputs), metadata[0]


def _our_clip(native: np.ndarray) -> PromptedClip:
    plan = plan_sampling(NUM_NATIVE_FRAMES, NATIVE_FPS, HEIGHT, WIDTH)
    # Markers drawn on the sampled frames only: the same pixels, because markers are per-frame.
    return PromptedClip(
        frames=native[list(plan.indices)],
        frame_indices=plan.indices,
        sample_fps=plan.sample_fps,
        resized_height=plan.resized_height,
        resized_width=plan.resized_width,
        video_fps=NATIVE_FPS,
        num_video_frames=NUM_NATIVE_FRAMES,
    )


def _capture_model_inputs(grounder: Grounder, run) -> tuple[dict, str]:
    """Call ``run()`` and record what the vision tower and the multimodal model receive at prefill.

    In ``generate``, transformers 5 runs the vision tower before prefill and turns ``video_grid_thw`` +
    ``second_per_grid_ts`` into 3-D rotary ``position_ids``: those are what the language model sees.
    """
    captured: dict = {}

    def on_visual(module, args, kwargs):
        captured.setdefault("pixel_values_videos", args[0].detach().clone())
        captured.setdefault("video_grid_thw", kwargs["grid_thw"].detach().clone())

    def on_model(module, args, kwargs):
        if "input_ids" not in captured:  # the prefill call
            for key in ("input_ids", "mm_token_type_ids", "second_per_grid_ts", "position_ids"):
                captured[key] = kwargs[key].detach().clone()

    handles = [
        grounder.model.model.visual.register_forward_pre_hook(on_visual, with_kwargs=True),
        grounder.model.model.register_forward_pre_hook(on_model, with_kwargs=True),
    ]
    try:
        text = run()
    finally:
        for handle in handles:
            handle.remove()
    return captured, text


def _generate_text(grounder: Grounder, inputs: dict) -> str:
    with torch.inference_mode():
        ids = grounder.model.generate(**inputs, **grounder.generation_kwargs())
    return grounder.processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_sampling_matches_qwen_vl_utils(grounder, native_video, monkeypatch):
    ref, metadata = _reference_inputs(grounder.processor, native_video, grounding_prompt(QUERY), monkeypatch)
    clip = _our_clip(native_video)
    assert list(clip.frame_indices) == [int(i) for i in metadata["frames_indices"]] == [0, 9, 18, 26, 35, 44]
    assert (clip.resized_height, clip.resized_width) == (140, 196)
    assert ref["video_grid_thw"].tolist() == [[3, 10, 14]]


def test_model_receives_exactly_the_reference_inputs(grounder, native_video, monkeypatch):
    prompt = grounding_prompt(QUERY)
    ref_inputs, _ = _reference_inputs(grounder.processor, native_video, prompt, monkeypatch)
    ref, ref_text = _capture_model_inputs(grounder, lambda: _generate_text(grounder, ref_inputs))
    clip = _our_clip(native_video)
    got, text = _capture_model_inputs(grounder, lambda: grounder.ground(clip, prompt).text)

    assert got["pixel_values_videos"].dtype == ref["pixel_values_videos"].dtype == torch.float32
    assert torch.equal(got["pixel_values_videos"], ref_inputs["pixel_values_videos"])
    assert torch.equal(got["pixel_values_videos"], ref["pixel_values_videos"])
    assert torch.equal(got["video_grid_thw"], ref["video_grid_thw"])
    # Temporal rotary spacing: 2 frames per temporal patch at the sampled fps (6 / 45 * 15 = 2.0 fps -> 1.0 s).
    assert got["second_per_grid_ts"].tolist() == ref["second_per_grid_ts"].tolist() == [1.0]
    assert torch.equal(got["input_ids"], ref["input_ids"])
    assert torch.equal(got["mm_token_type_ids"], ref["mm_token_type_ids"])
    assert torch.equal(got["position_ids"], ref["position_ids"])
    # 1 s per temporal patch x tokens_per_second 2 -> temporal positions step by 2 between the 3 patches.
    video = got["mm_token_type_ids"][0] == 2
    temporal = got["position_ids"][1, 0, video]
    assert sorted(set((temporal - temporal.min()).tolist())) == [0, 2, 4]
    assert text == ref_text


def test_non_integer_sample_fps_gives_the_same_temporal_spacing(grounder, monkeypatch):
    """37 native frames at 12.5 fps -> 4 frames at 4 / 37 * 12.5 fps: second_per_grid_ts is not round."""
    native = np.random.default_rng(5).integers(0, 256, (37, HEIGHT, WIDTH, 3), dtype=np.uint8)

    from qwen_vl_utils import vision_process

    def read(path, **kwargs):
        return torch.from_numpy(native).permute(0, 3, 1, 2).contiguous(), None, {"video_fps": 12.5}

    monkeypatch.setattr(vision_process, "get_video_reader_backend", lambda: "torchvision")
    monkeypatch.setattr(vision_process.io, "read_video", read, raising=False)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "q"},
                {
                    "type": "video",
                    "video": "x.mp4",
                    "fps": 2.0,
                    "total_pixels": 2048 * 28 * 28,
                    "min_pixels": 16 * 28 * 28,
                },
            ],
        }
    ]
    _, videos, video_kwargs = vision_process.process_vision_info(
        messages, return_video_kwargs=True, return_video_metadata=True
    )
    videos, metadata = zip(*videos)
    text = grounder.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ref = grounder.processor(
        text=[text], videos=list(videos), video_metadata=list(metadata), return_tensors="pt", **video_kwargs
    )

    plan = plan_sampling(37, 12.5, HEIGHT, WIDTH)
    clip = PromptedClip(
        native[list(plan.indices)], plan.indices, plan.sample_fps, plan.resized_height, plan.resized_width, 12.5, 37
    )
    ours = grounder.model_inputs(clip, "q")
    assert ours["second_per_grid_ts"].tolist() == ref["second_per_grid_ts"].tolist()
    assert ref["second_per_grid_ts"].item() == pytest.approx(2 / (4 / 37 * 12.5), rel=1e-6)
    assert torch.equal(ours["pixel_values_videos"], ref["pixel_values_videos"])
    assert torch.equal(ours["input_ids"], ref["input_ids"])
