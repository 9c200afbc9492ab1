"""Tiny random Qwen2.5-VL models and a locally built tokenizer, for tests, benchmarks and the nano model.

Nothing here downloads anything. The tokenizer is a small byte-level BPE trained in code on the STVG-R1
prompt, answer templates, digits and a domain vocabulary; it carries Qwen2.5-VL's special tokens and its
real chat template, so prompts are laid out exactly as for the released checkpoint (default system message,
one user turn, text first, then ``<|vision_start|><|video_pad|><|vision_end|>``). Byte-level BPE with one
token per digit round-trips any text, so "Target ID: 3, Time range: 1.50 to 4.00" decodes back unchanged.

``build_tiny_qwen2_5_vl`` makes a random-weight ``Qwen2_5_VLForConditionalGeneration`` whose special-token
ids match the tokenizer, plus a ``Qwen2_5_VLProcessor`` with Qwen2.5-VL's real preprocessing constants
(14-pixel patches, 2x2 merge, 2-frame tubes, CLIP mean/std). ``real_qwen2_5_vl_config`` gives the 3B/7B
architectures (published hyperparameters) for latency benchmarks with random weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

QWEN2_5_VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen2.5-VL's special tokens, in the order of their ids in the real vocabulary (151643..151656)."""

QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5-VL-Instruct's chat template (the released checkpoint's): default system message when none is given."""

DOMAIN_WORDS: tuple[str, ...] = (
    "man",
    "woman",
    "person",
    "people",
    "boy",
    "girl",
    "child",
    "old",
    "young",
    "the",
    "a",
    "an",
    "in",
    "on",
    "at",
    "to",
    "of",
    "and",
    "with",
    "his",
    "her",
    "their",
    "who",
    "is",
    "are",
    "walks",
    "walk",
    "runs",
    "run",
    "sits",
    "sit",
    "stands",
    "stand",
    "turns",
    "turn",
    "around",
    "down",
    "up",
    "left",
    "right",
    "front",
    "behind",
    "next",
    "picks",
    "puts",
    "holds",
    "takes",
    "gives",
    "looks",
    "talks",
    "opens",
    "closes",
    "door",
    "table",
    "chair",
    "car",
    "cup",
    "phone",
    "bag",
    "red",
    "blue",
    "green",
    "black",
    "white",
    "yellow",
    "shirt",
    "coat",
    "hat",
    "hair",
    "first",
    "then",
    "after",
    "before",
    "moves",
    "object",
    "ball",
    "box",
    "square",
    "circle",
    "time",
    "range",
    "seconds",
    "event",
    "video",
    "frame",
    "marked",
    "number",
    "target",
    "id",
    "think",
    "answer",
    "start",
    "end",
    "from",
    "until",
    "appears",
    "disappears",
    "enters",
    "leaves",
)
"""Words of typical STVG queries and answers; the BPE learns them as whole tokens."""


def _training_corpus(extra_words: Iterable[str]) -> list[str]:
    """Text the tiny BPE is trained on: prompts, answer templates, numbers, domain words."""
    from .prompt import STVG_R1_PROMPT, TIME_ONLY_PROMPT

    lines = [STVG_R1_PROMPT, TIME_ONLY_PROMPT, "You are a helpful assistant."]
    words = list(DOMAIN_WORDS) + [str(w) for w in extra_words]
    lines += [" ".join(words), " ".join(w.capitalize() for w in words)]
    for k in range(0, 100, 7):
        lines.append(
            f'<think>The event occurs from {k / 3:.2f} to {k / 2:.2f} seconds; object ID "{k % 9 + 1}" '
            f"is the target.</think> <answer>Target ID: {k % 9 + 1}, Time range: {k / 3:.2f} to {k / 2:.2f}</answer>"
        )
    lines.append("0123456789 .,:;!?\"'()[]{}<>/-+*=_ \n")
    return lines


def build_tokenizer(extra_words: Iterable[str] = ()):
    """A small byte-level BPE tokenizer with Qwen2.5-VL's special tokens and chat template.

    Digits are split one per token (as in Qwen2.5), every byte is in the alphabet, so decoding the
    encoding of any text gives the text back. ``extra_words`` are added to the training corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=1,
        special_tokens=list(QWEN2_5_VL_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_corpus(extra_words), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN2_5_VL_SPECIAL_TOKENS[1:]),
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer):
    """A ``Qwen2_5_VLProcessor`` with Qwen2.5-VL's real image/video preprocessing constants."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    common = dict(
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    image_processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056, **common)
    video_processor = Qwen2VLVideoProcessor(min_pixels=3136, max_pixels=12845056, **common)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )


def _token_ids(tokenizer) -> dict[str, int]:
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN2_5_VL_SPECIAL_TOKENS}
    return ids


def tiny_qwen2_5_vl_config(
    tokenizer,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 128,
    vision_hidden_size: int = 32,
    vision_depth: int = 2,
    vision_heads: int = 2,
    vision_intermediate_size: int = 64,
):
    """A small ``Qwen2_5_VLConfig`` whose vocabulary and special-token ids match ``tokenizer``.

    The multimodal rotary sections split ``head_dim / 2`` in Qwen's proportions (16:24:24 of 64).
    """
    from transformers import Qwen2_5_VLConfig

    head_dim = hidden_size // heads
    if hidden_size % heads or head_dim % 2:
        raise ValueError(f"hidden_size {hidden_size} must split into {heads} heads of even size")
    half = head_dim // 2
    t_section = max(1, half * 16 // 64)
    h_section = (half - t_section) // 2
    mrope_section = [t_section, h_section, half - t_section - h_section]
    ids = _token_ids(tokenizer)
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision_config = dict(
        depth=vision_depth,
        hidden_size=vision_hidden_size,
        intermediate_size=vision_intermediate_size,
        num_heads=vision_heads,
        out_hidden_size=hidden_size,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        tokens_per_second=2,
        window_size=112,
        fullatt_block_indexes=[vision_depth - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def real_qwen2_5_vl_config(arch: str):
    """The published Qwen2.5-VL-3B/7B-Instruct architectures (for random-weight latency benchmarks).

    Vocabulary and special-token ids are the real ones (151643.. for the special tokens).
    """
    from transformers import Qwen2_5_VLConfig

    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        tokens_per_second=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
    )
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
    if arch == "7b":
        text: dict[str, Any] = dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
        )
        tie = False
    elif arch == "3b":
        text = dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
        )
        tie = True
    else:
        raise ValueError(f"unknown Qwen2.5-VL architecture {arch!r}: use '3b' or '7b'")
    text.update(
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        rope_parameters=rope,
        bos_token_id=151643,
        eos_token_id=151645,
    )
    vision["out_hidden_size"] = text["hidden_size"]
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=tie,
    )


def build_truncated_qwen2_5_vl(
    arch: str = "3b", layers: int = 4, vision_depth: int = 4, tokenizer=None, seed: int = 0, dtype=None
):
    """``(model, processor)``: a random-weight Qwen2.5-VL-3B/7B cut to its first ``layers`` decoder layers and
    ``vision_depth`` vision blocks (the last one full attention). Each layer, the embedding and the vocabulary-sized
    head keep their real sizes, so one decode step reads what a real layer reads — for decode-speed benchmarks and
    tests at real widths in seconds. The special-token ids are pointed at ``tokenizer``'s (the small local one)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    config = real_qwen2_5_vl_config(arch)
    text, vision = config.text_config, config.vision_config
    text.num_hidden_layers, text.layer_types = layers, list(text.layer_types[:layers])
    vision.depth, vision.fullatt_block_indexes = vision_depth, [vision_depth - 1]
    ids = _token_ids(tokenizer)
    config.image_token_id, config.video_token_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
    config.vision_start_token_id, config.vision_end_token_id = ids["<|vision_start|>"], ids["<|vision_end|>"]
    text.bos_token_id, text.eos_token_id = ids["<|endoftext|>"], ids["<|im_end|>"]
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype or torch.float32).eval()
    _set_generation_defaults(model, tokenizer)
    return model, build_processor(tokenizer)


def _set_generation_defaults(model, tokenizer) -> None:
    """Stop on ``<|im_end|>`` or ``<|endoftext|>`` and pad with ``<|endoftext|>``, as Qwen2.5-VL does."""
    ids = _token_ids(tokenizer)
    gen = model.generation_config
    gen.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    gen.pad_token_id = ids["<|endoftext|>"]
    gen.bos_token_id = ids["<|endoftext|>"]
    gen.do_sample = False
    gen.temperature = None
    gen.top_p = None
    gen.top_k = None


def build_tiny_qwen2_5_vl(
    tokenizer=None, seed: int = 0, hidden_size: int = 64, layers: int = 2, vision_depth: int = 2, **config_kwargs: Any
):
    """``(model, processor)``: a random-weight Qwen2.5-VL (fp32, eval mode) and its processor.

    Weights are drawn with ``torch.manual_seed(seed)``, so the same arguments give the same model.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    config = tiny_qwen2_5_vl_config(
        tokenizer, hidden_size=hidden_size, layers=layers, vision_depth=vision_depth, **config_kwargs
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    _set_generation_defaults(model, tokenizer)
    return model, build_processor(tokenizer)


def save_tiny_model(directory: str | os.PathLike, model=None, processor=None, seed: int = 0, **kwargs: Any) -> Path:
    """Save a tiny model and its processor (``save_pretrained``) to ``directory``; build them if not given."""
    if model is None or processor is None:
        model, processor = build_tiny_qwen2_5_vl(seed=seed, **kwargs)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
