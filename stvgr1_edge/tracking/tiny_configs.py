"""Tiny random-weight models of the real tracking architectures, built locally (no download).

Tests and ``--tiny`` benchmarks save these with ``save_pretrained`` and load them back through the same
``from_pretrained`` path that real checkpoints take. Their outputs are meaningless; their shapes, APIs
and file layout are the real ones. ``real_*_config`` build the full-size architectures (random weights)
for latency measurements without downloading anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TINY_IMAGE_SIZE = 128
"""Input side of the tiny SAM2/EdgeTAM models (the real ones use 1024)."""

COCO_TINY_LABELS = ("person", "car", "dog", "ball")
"""Class names of the tiny RT-DETR (index 0 is ``person`` as in COCO)."""


# -- SAM2 / EdgeTAM video models ----------------------------------------------------------------
def _tiny_video_kwargs(image_size: int) -> dict:
    """Settings shared by the tiny SAM2 and EdgeTAM video configs (hidden 128: transformers needs it to be a multiple
    (>1) of the 64-wide memory, one memory-attention layer)."""
    feat = image_size // 4
    return dict(
        image_size=image_size,
        prompt_encoder_config=dict(hidden_size=128, image_size=image_size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=128, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
        ),
        num_maskmem=3,
        max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=128,
        memory_attention_num_layers=1,
        memory_attention_rope_feat_sizes=[feat // 4, feat // 4],
        memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64,  # transformers hard-codes 64 in memory attention
        mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=64,
    )


def _tiny_hiera_vision_config(image_size: int):
    from transformers import Sam2HieraDetConfig, Sam2VisionConfig

    feat = image_size // 4
    backbone = Sam2HieraDetConfig(
        hidden_size=8,
        image_size=[image_size, image_size],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[8, 4, 4, 2],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
    )
    return Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[feat, feat], [feat // 2, feat // 2], [feat // 4, feat // 4]],
        fpn_hidden_size=128,
    )


def tiny_video_config(family: str = "sam2", image_size: int = TINY_IMAGE_SIZE):
    """A tiny ``Sam2VideoConfig`` (``family="sam2"``) or ``EdgeTamVideoConfig`` (``"edgetam"``)."""
    from transformers import EdgeTamVideoConfig, Sam2VideoConfig

    kwargs = _tiny_video_kwargs(image_size)
    vision = _tiny_hiera_vision_config(image_size)
    if family == "sam2":
        return Sam2VideoConfig(vision_config=vision, memory_attention_feed_forward_hidden_size=128, **kwargs)
    if family == "edgetam":
        return EdgeTamVideoConfig(
            vision_config=vision,
            memory_attention_mlp_hidden_size=128,
            memory_attention_rope_k_sizes=[4, 4],
            perceiver_resampler_num_latents=16,
            perceiver_resampler_num_latents_2d=16,
            perceiver_resampler_hidden_size=64,
            perceiver_resampler_mlp_intermediate_size=32,
            perceiver_resampler_attention_head_dim=64,
            perceiver_resampler_num_layers=1,
            **kwargs,
        )
    raise ValueError(f"unknown video model family {family!r}: use 'sam2' or 'edgetam'")


def real_video_config(family: str = "sam2"):
    """The full-size architecture: SAM2.1 Hiera-tiny (the transformers defaults) or EdgeTAM (RepViT-M1, timm)."""
    from transformers import EdgeTamVideoConfig, Sam2VideoConfig

    if family == "sam2":
        return Sam2VideoConfig()
    if family == "edgetam":
        from transformers import EdgeTamVisionConfig, TimmWrapperConfig

        # Spelled out: transformers 5.24's default backbone_config misspells "architecture", which would
        # silently build timm's default model instead of RepViT-M1.
        backbone = TimmWrapperConfig(
            architecture="repvit_m1",
            do_pooling=False,
            model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]},
        )
        return EdgeTamVideoConfig(vision_config=EdgeTamVisionConfig(backbone_config=backbone))
    raise ValueError(f"unknown video model family {family!r}: use 'sam2' or 'edgetam'")


def video_processor(image_size: int):
    """A ``Sam2VideoProcessor`` for square ``image_size`` inputs (SAM2 and EdgeTAM share it)."""
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor, Sam2VideoVideoProcessor

    size = {"height": image_size, "width": image_size}
    mask = {"height": image_size // 4, "width": image_size // 4}
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size, mask_size=mask),
        video_processor=Sam2VideoVideoProcessor(size=size),
        target_size=image_size,
    )


def build_video_model(family: str = "sam2", real_size: bool = False, seed: int = 0):
    """``(model, processor)`` with random weights: tiny by default, the real architecture with ``real_size``."""
    import torch
    from transformers import EdgeTamVideoModel, Sam2VideoModel

    config = real_video_config(family) if real_size else tiny_video_config(family)
    torch.manual_seed(seed)
    model = (Sam2VideoModel if family == "sam2" else EdgeTamVideoModel)(config).eval()
    return model, video_processor(config.image_size)


def save_tiny_video_model(
    folder: str | os.PathLike, family: str = "sam2", object_score_bias: float | None = None
) -> Path:
    """Save a tiny random video model + processor to ``folder`` (``from_pretrained``-loadable).

    ``object_score_bias`` overrides the bias of the decoder's object-presence head: a large negative value
    makes every propagated frame "object absent" (only detector-seeded frames have masks), a large positive
    value makes every object always present. Random weights decide otherwise.
    """
    import torch

    model, processor = build_video_model(family)
    if object_score_bias is not None:
        head = model.mask_decoder.pred_obj_score_head
        last = head.proj_out if hasattr(head, "proj_out") else head.layers[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(object_score_bias)
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# -- detectors ---------------------------------------------------------------------------------
def save_tiny_rt_detr(folder: str | os.PathLike, labels: tuple[str, ...] = COCO_TINY_LABELS, seed: int = 0) -> Path:
    """A tiny random RT-DETR (ResNet backbone built in transformers, no timm) + image processor."""
    import torch
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )  # type: ignore[call-arg]  # in **kwargs
    config = RTDetrConfig(
        backbone_config=backbone,
        encoder_in_channels=[16, 32, 64],
        encoder_hidden_dim=16,
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        encoder_layers=1,
        d_model=16,
        decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=32,
        decoder_attention_heads=2,
        decoder_layers=1,
        decoder_n_points=2,
        num_queries=20,
        num_denoising=0,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = RTDetrForObjectDetection(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def _write_clip_vocab(folder: Path, words: tuple[str, ...]) -> tuple[Path, Path]:
    """A minimal byte-level BPE vocabulary (every byte symbol plus whole ``words``) for a CLIP tokenizer."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    extra = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]  # GPT-2 byte alphabet
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    merges = []
    for word in words:  # merge each word letter by letter into one token
        token = word[0]
        for ch in word[1:-1]:
            merges.append(f"{token} {ch}")
            token += ch
            vocab.setdefault(token, len(vocab))
        merges.append(f"{token} {word[-1]}</w>" if len(word) > 1 else "")
        vocab.setdefault(word + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(m for m in merges if m) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def save_tiny_owlv2(folder: str | os.PathLike, words: tuple[str, ...] = ("person", "ball"), seed: int = 0) -> Path:
    """A tiny random OWLv2 + processor with a locally written CLIP vocabulary."""
    import tempfile

    import torch
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = _write_clip_vocab(Path(tmp), words)
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), pad_token="!")
    config = Owlv2Config(
        text_config=dict(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer
    )
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
