"""The grounder end to end on a tiny random Qwen2.5-VL saved to disk and loaded back, plus the tiny builders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stvgr1_edge.clip import PromptedClip
from stvgr1_edge.errors import BadInputError, MissingDependencyError, MissingWeightsError
from stvgr1_edge.grounding import (
    Grounder,
    GrounderConfig,
    nf4_quantization_config,
    resolve_dtype,
)
from stvgr1_edge.prompt import grounding_prompt, time_only_prompt
from stvgr1_edge.tiny import (
    QWEN2_5_VL_SPECIAL_TOKENS,
    build_tokenizer,
    real_qwen2_5_vl_config,
    save_tiny_model,
    tiny_qwen2_5_vl_config,
)

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny_qwen"), seed=0)


@pytest.fixture(scope="module")
def grounder(model_dir) -> Grounder:
    return Grounder.from_pretrained(GrounderConfig(model=str(model_dir), device="cpu", max_new_tokens=NEW_TOKENS))


@pytest.fixture(scope="module")
def clip() -> PromptedClip:
    frames = np.random.default_rng(0).integers(0, 256, (4, 60, 90, 3), dtype=np.uint8)
    return PromptedClip(
        frames=frames,
        frame_indices=(0, 6, 13, 19),
        sample_fps=2.0,
        resized_height=56,
        resized_width=84,
        video_fps=10.0,
        num_video_frames=20,
    )


# ---------------------------------------------------------------- tokenizer and tiny configs
def test_tokenizer_round_trips_answers_and_prompt(tokenizer):
    for text in (
        "Target ID: 3, Time range: 1.50 to 4.00",
        "<think>from 12.54 to 17.83</think> <answer>Target ID: 12, Time range: 12.54 to 17.83</answer>",
        grounding_prompt("The woman in a Blue coat opens the door."),
        "ünïcödé 😀 42",
    ):
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    digits = tokenizer.convert_ids_to_tokens(tokenizer("1.50")["input_ids"])
    assert digits == ["1", ".", "5", "0"]


def test_tokenizer_has_qwen_special_tokens_as_single_ids(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(tok) for tok in QWEN2_5_VL_SPECIAL_TOKENS]
    assert ids == list(range(len(QWEN2_5_VL_SPECIAL_TOKENS)))
    text = "<|vision_start|><|video_pad|><|video_pad|><|vision_end|>"
    assert tokenizer(text)["input_ids"] == [ids[9], ids[13], ids[13], ids[10]]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_chat_template_puts_text_first_then_video_after_default_system_message(grounder):
    prompt = time_only_prompt("a dog runs")
    assert grounder.chat_text(prompt) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{prompt}<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tiny_config_mrope_sections_fit_head_dim(tokenizer):
    for hidden, heads in ((64, 4), (96, 4), (128, 2)):
        config = tiny_qwen2_5_vl_config(tokenizer, hidden_size=hidden, heads=heads, kv_heads=heads)
        section = config.text_config.rope_parameters["mrope_section"]
        assert sum(section) == hidden // heads // 2
        assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
        assert config.vision_config.out_hidden_size == hidden


def test_real_architectures_have_published_sizes():
    seven, three = real_qwen2_5_vl_config("7b"), real_qwen2_5_vl_config("3b")
    assert (seven.text_config.hidden_size, seven.text_config.num_hidden_layers, seven.text_config.vocab_size) == (
        3584,
        28,
        152064,
    )
    assert (three.text_config.hidden_size, three.text_config.num_hidden_layers, three.tie_word_embeddings) == (
        2048,
        36,
        True,
    )
    assert seven.vision_config.out_hidden_size == 3584 and seven.video_token_id == 151656
    with pytest.raises(ValueError):
        real_qwen2_5_vl_config("13b")


@pytest.mark.parametrize(
    "arch, total, vision", [("3b", 3_754_622_976, 668_684_288), ("7b", 8_292_166_656, 676_550_144)]
)
def test_real_architectures_have_published_parameter_counts(arch, total, vision):
    """Built on the meta device (no memory): 3.75 B and 8.29 B parameters, as published."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(real_qwen2_5_vl_config(arch), dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.model.visual.parameters()) == vision


def test_saved_folder_holds_model_and_processor(model_dir):
    names = {p.name for p in model_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "processor_config.json",
        "generation_config.json",
    } <= names
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"


# ---------------------------------------------------------------- generation
def test_ground_returns_text_and_timings(grounder, clip):
    out = grounder.ground(clip, grounding_prompt("the man walks"))
    assert isinstance(out.text, str)
    assert 1 <= out.num_generated_tokens <= NEW_TOKENS
    # 4 frames at 56x84 -> grid (2, 4, 6) -> 48 patches -> 12 merged visual tokens
    assert out.num_visual_tokens == 12
    assert set(out.timings_ms) == {"preprocess", "vision", "prefill", "decode", "total"}
    assert all(v >= 0 for v in out.timings_ms.values())
    assert out.timings_ms["vision"] > 0 and out.timings_ms["prefill"] > 0
    parts = sum(out.timings_ms[k] for k in ("preprocess", "vision", "prefill", "decode"))
    assert out.timings_ms["total"] == pytest.approx(parts, rel=1e-6)
    assert not out.vision_reused


def test_greedy_answer_is_the_argmax_token_at_every_step(grounder, model_dir, clip):
    """The grounder's default decoding is greedy: its answer is, token by token, the argmax of the model's
    next-token logits over the whole sequence so far (a full forward per step, no cache), up to EOS. The argmax
    changes from step to step, and a sampled run takes other tokens, so the comparison tells greedy apart."""
    prompt = grounding_prompt("the man walks")
    inputs = grounder.model_inputs(clip, prompt)
    eos = set(np.atleast_1d(grounder.model.generation_config.eos_token_id).tolist())
    ids, types = inputs["input_ids"], inputs["mm_token_type_ids"]
    chosen = []
    with torch.inference_mode():
        for _ in range(NEW_TOKENS):
            step = dict(inputs, input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types)
            token = int(grounder.model(**step).logits[0, -1].argmax())
            if token in eos:
                break
            chosen.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            types = torch.nn.functional.pad(types, (0, 1))
    assert len(set(chosen)) >= 3
    greedy = grounder.processor.tokenizer.decode(chosen, skip_special_tokens=True)
    assert grounder.ground(clip, prompt).text == greedy
    assert grounder.ground(clip, prompt).text == greedy  # and again: no state carried between calls
    sampler = Grounder.from_pretrained(
        GrounderConfig(model=str(model_dir), device="cpu", max_new_tokens=NEW_TOKENS, do_sample=True, temperature=1.5)
    )
    torch.manual_seed(0)
    assert sampler.ground(clip, prompt).text != greedy


def test_reused_vision_features_give_the_same_text(grounder, clip):
    prompts = [grounding_prompt("the man walks"), grounding_prompt("a red ball rolls")]
    fresh = [grounder.ground(clip, p).text for p in prompts]
    many = grounder.ground_many(clip, prompts)
    assert [o.text for o in many] == fresh
    assert [o.vision_reused for o in many] == [False, True]
    assert many[0].timings_ms["vision"] > 0 and many[1].timings_ms["vision"] == 0.0


def test_precomputed_features_match_the_pixel_path(grounder, clip):
    """Feeding pixels to ``generate`` (transformers encodes them) and feeding our cached features agree."""
    inputs = grounder.model_inputs(clip, grounding_prompt("the man walks"))
    with torch.inference_mode():
        ids = grounder.model.generate(**inputs, **grounder.generation_kwargs())
    text = grounder.processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text == grounder.ground(clip, grounding_prompt("the man walks")).text


def test_temporal_spacing_follows_sample_fps(grounder, clip):
    video = grounder.prepare_video(clip)
    assert video.second_per_grid_ts.tolist() == [1.0]  # 2 frames per temporal patch at 2 fps
    slow = PromptedClip(clip.frames, clip.frame_indices, 0.5, 56, 84, 10.0, 20)
    assert grounder.prepare_video(slow).second_per_grid_ts.tolist() == [4.0]


def test_clip_with_bad_resize_target_is_rejected(grounder, clip):
    bad = PromptedClip(clip.frames, clip.frame_indices, 2.0, 50, 84, 10.0, 20)
    with pytest.raises(BadInputError, match="multiple of 28"):
        grounder.ground(bad, "q")


# ---------------------------------------------------------------- loading errors
def test_missing_folder_is_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        Grounder.from_pretrained(GrounderConfig(model=str(tmp_path / "nope"), device="cpu"))


def test_folder_without_config_is_bad_input(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInputError, match="not a model folder"):
        Grounder.from_pretrained(GrounderConfig(model=str(tmp_path), device="cpu"))


def test_folder_without_weights_is_missing_weights(tmp_path, model_dir):
    (tmp_path / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(MissingWeightsError, match="hf download"):
        Grounder.from_pretrained(GrounderConfig(model=str(tmp_path), device="cpu"))


def test_folder_with_another_model_type_is_bad_input(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BadInputError, match="'llama' model, not Qwen2.5-VL"):
        Grounder.from_pretrained(GrounderConfig(model=str(tmp_path), device="cpu"))


def test_uncached_hub_id_offline_is_missing_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="hf download"):
        Grounder.from_pretrained(GrounderConfig(model="stvg-edge-tests/no-such-model", device="cpu"))


def test_nf4_on_cpu_without_cpu_kernels_is_a_clear_error(model_dir, monkeypatch):
    import stvgr1_edge.grounding as grounding

    monkeypatch.setattr(grounding, "bitsandbytes_4bit_on_cpu", lambda: False)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        expected = MissingDependencyError  # the install hint comes first
    else:
        expected = BadInputError
    with pytest.raises(expected, match="stvg-edge\\[quant\\]|CPU 4-bit kernels"):
        Grounder.from_pretrained(GrounderConfig(model=str(model_dir), device="cpu", quant="nf4"))


def test_nf4_on_cpu_quantizes_the_language_model_only(model_dir, grounder):
    from stvgr1_edge.grounding import bitsandbytes_4bit_on_cpu

    if not bitsandbytes_4bit_on_cpu():
        pytest.skip("this bitsandbytes has no CPU 4-bit kernels")
    import bitsandbytes as bnb

    nf4 = Grounder.from_pretrained(
        GrounderConfig(model=str(model_dir), device="cpu", quant="nf4", max_new_tokens=NEW_TOKENS)
    )
    quantized = {n: m for n, m in nf4.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    reference = dict(grounder.model.named_modules())
    language = [
        n for n, m in reference.items() if isinstance(m, torch.nn.Linear) and n.startswith("model.language_model.")
    ]
    assert sorted(quantized) == sorted(language)  # every LM linear, nothing of the tower, not the head
    qkv = "model.visual.blocks.0.attn.qkv"
    assert torch.equal(dict(nf4.model.named_modules())[qkv].weight, reference[qkv].weight)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in language:
            x = torch.randn(5, reference[name].in_features, generator=generator)
            got, want = quantized[name](x), reference[name](x)
            error = float((got - want).norm() / want.norm())
            assert 0.0 < error < 0.2, (name, error)  # NF4 precision: close, and not the fp32 weights themselves


# ---------------------------------------------------------------- dtype and quantization settings
def test_auto_dtype_on_cpu_is_fp32():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(BadInputError):
        resolve_dtype("int3", "cpu")


def test_nf4_skip_patterns_keep_the_vision_tower_unquantized(grounder):
    from transformers.quantizers.quantizers_utils import should_convert_module

    names = [name for name, module in grounder.model.named_modules() if isinstance(module, torch.nn.Linear)]
    vision = [n for n in names if n.startswith("model.visual.")]
    language = [n for n in names if n.startswith("model.language_model.")]
    assert vision and language and "lm_head" in names
    skip = ["model.visual", "lm_head"]
    assert not any(should_convert_module(n, skip) for n in vision + ["lm_head"])
    assert all(should_convert_module(n, skip) for n in language)
    # The bare name "visual" would not have matched the tower's modules.
    assert any(should_convert_module(n, ["visual"]) for n in vision)


def test_nf4_config_needs_bitsandbytes():
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="stvg-edge\\[quant\\]"):
            nf4_quantization_config(torch.bfloat16)
    else:
        config = nf4_quantization_config(torch.bfloat16)
        assert config.bnb_4bit_quant_type == "nf4" and config.llm_int8_skip_modules == ["model.visual", "lm_head"]
