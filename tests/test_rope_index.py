"""Qwen2.5-VL's 3-D positions as trained (stvgr1_edge/rope_index.py): the text after a video starts one past the
video's largest position on any axis, the model's rope delta agrees with where generation puts the next token, and
with it HF generate, a plain forward and the static engine place a long video's answer alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stvgr1_edge.clip import PromptedClip
from stvgr1_edge.grounding import Grounder, GrounderConfig
from stvgr1_edge.prompt import grounding_prompt
from stvgr1_edge.rope_index import qwen2_5_vl_rope_index, use_trained_rope_index


def test_text_after_a_video_starts_past_its_last_time_position():
    # 3 text tokens, a video of 3 temporal grids (2 positions apart: 1 s per grid, 2 tokens per second) of 2x2
    # merged patches, 2 text tokens
    types = torch.tensor([[0, 0, 0] + [2] * 12 + [0, 0]])
    positions, delta = qwen2_5_vl_rope_index(
        torch.zeros_like(types), types, None, torch.tensor([[3, 4, 4]]), torch.tensor([1.0]), None, 2, 2
    )
    t, h, w = positions[:, 0].tolist()
    assert t[:3] == h[:3] == w[:3] == [0, 1, 2]
    assert t[3:15] == [3] * 4 + [5] * 4 + [7] * 4
    assert h[3:15] == [3, 3, 4, 4] * 3 and w[3:15] == [3, 4, 3, 4] * 3
    assert t[15:] == h[15:] == w[15:] == [8, 9]  # one past the largest (time) position, 7
    assert delta.tolist() == [[10 - 17]]  # so the next token (cache position 17) goes to 10


def test_fractional_seconds_per_grid_and_left_padding():
    types = torch.tensor([[0, 0, 0, 0] + [2] * 4, [0, 0, 0, 0] + [2] * 4])
    mask = torch.tensor([[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]])
    grid = torch.tensor([[4, 2, 2], [4, 2, 2]])  # 4 grids of one merged patch
    positions, delta = qwen2_5_vl_rope_index(
        torch.zeros_like(types), types, None, grid, torch.tensor([1.25, 0.75]), mask, 2, 2
    )
    assert positions[0, 0].tolist() == [0, 1, 2, 3, 4, 6, 9, 11]  # floor(k * 2.5) + 4
    assert positions[0, 1].tolist() == [0, 0, 0, 1, 2, 3, 5, 6]  # padding at 0; floor(k * 1.5) + 2
    assert delta.tolist() == [[12 - 8], [7 - 6]]


def test_where_time_does_not_outrun_the_frame_the_rule_is_transformers_own():
    """An image (one temporal grid): transformers 5's positions and deltas, unchanged."""
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    model, _ = build_tiny_qwen2_5_vl(seed=0)
    inner = model.model
    types = torch.tensor([[0] * 5 + [1] * 6 + [0] * 4])
    ids = torch.zeros_like(types)
    grid = torch.tensor([[1, 4, 6]])
    expected = inner.get_rope_index(ids, types, image_grid_thw=grid)
    use_trained_rope_index(model)
    got = inner.get_rope_index(ids, types, image_grid_thw=grid)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.fixture(scope="module")
def long_clip() -> PromptedClip:
    """16 frames: 8 temporal grids 2 positions apart (14) against a 2x3 merged frame: time outruns the frame."""
    frames = np.random.default_rng(1).integers(0, 256, (16, 60, 90, 3), dtype=np.uint8)
    return PromptedClip(frames, tuple(range(0, 80, 5)), 2.0, 56, 84, 10.0, 80)


def test_generate_forward_and_engine_agree_on_a_long_video(long_clip):
    from stvgr1_edge.backends.engine import EngineConfig, Sampling, StaticEngine
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    model, processor = build_tiny_qwen2_5_vl(seed=0)
    grounder = Grounder(model, processor, GrounderConfig(model="tiny", device="cpu", answer_template=False))
    encoded = grounder.encode_video(long_clip)
    inputs = grounder.prepare_text(grounding_prompt("a man sits down"), encoded.inputs.num_visual_tokens)
    inputs.update(video_grid_thw=encoded.inputs.video_grid_thw, second_per_grid_ts=encoded.inputs.second_per_grid_ts)
    assert int(encoded.inputs.video_grid_thw[0, 0]) == 8
    video = {"video": encoded.features}
    length = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        out = model.generate(
            **inputs, mm_encoder_outputs=video, max_new_tokens=12, do_sample=False, temperature=None, top_p=None,
            top_k=None, output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
        generated = out.sequences[0, length:].tolist()
        # a plain forward over prompt + 3 generated tokens (how training sees them) predicts the 4th as generate did
        ids = torch.cat([inputs["input_ids"], torch.tensor([generated[:3]])], dim=1)
        types = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, 3, dtype=inputs["mm_token_type_ids"].dtype)], 1)
        full = dict(inputs, input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types)
        logits = model(**full, mm_encoder_outputs=video, use_cache=False).logits[0, -1]
    torch.testing.assert_close(logits, out.scores[3][0], rtol=1e-4, atol=1e-4)
    # generate used the trained rule: its next position is one past the video's last time position
    positions, delta = qwen2_5_vl_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], None, inputs["video_grid_thw"],
        inputs["second_per_grid_ts"], None, 2, model.config.vision_config.tokens_per_second,
    )  # fmt: skip
    assert torch.equal(model.model.rope_deltas, delta) and int(positions.max()) == int(positions[0, 0, -1])
    # the engine's decode steps see the same positions: its logits on generate's tokens are generate's
    engine = StaticEngine(model, EngineConfig(compile=False))
    assert engine.generate(inputs, video, max_new_tokens=12, sampling=Sampling()).tokens == generated
    with torch.no_grad():
        engine._prepare(length + 12)
        rope_delta = engine.prefill(inputs, video).rope_delta
        slot = torch.tensor([length])
        for i, token in enumerate(generated[:-1]):
            step_logits = engine.step(torch.tensor([[token]]), slot, rope_delta).float()[0]
            torch.testing.assert_close(step_logits, out.scores[i + 1][0], rtol=1e-4, atol=1e-4)
            slot += 1


def test_grounders_and_wrapped_models_get_the_trained_rule():
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    model, processor = build_tiny_qwen2_5_vl(seed=0)
    Grounder(model, processor, GrounderConfig(model="tiny", device="cpu"))
    assert model.model.get_rope_index.__func__.__name__ == "_trained_rope_index"

    class Wrapper(torch.nn.Module):  # e.g. a PEFT or DeepSpeed wrapper
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

    other, _ = build_tiny_qwen2_5_vl(seed=1)
    use_trained_rope_index(Wrapper(other))
    assert other.model.get_rope_index.__func__.__name__ == "_trained_rope_index"
