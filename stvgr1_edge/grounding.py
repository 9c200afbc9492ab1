"""The grounder: a Qwen2.5-VL checkpoint (STVG-R1 by default) that reads prompted frames and a prompt.

What reaches the model is exactly what the released checkpoint saw (`STVG-R1.md` §4, §5):

- one user message, **text first, then the video**, no system message (the chat template's default
  "You are a helpful assistant." applies);
- the sampled frames, resized by :func:`stvgr1_edge.sampling.resize_frames` to the clip's ``smart_resize``
  size (torchvision bicubic, antialiased, float 0..255 — qwen-vl-utils' own resize), handed to the processor as
  an already-sampled, already-resized video: ``do_sample_frames=False``, ``do_resize=False``. The processor
  then only rescales, normalises and patchifies. (Its ``cap_pixels_per_frame`` option is qwen-vl-utils'
  *default* 128k-token budget applied inside the processor's own resize; with ``do_resize=False`` it never
  runs, and the clip's 2048-token budget was already applied by qwen-vl-utils' rules upstream.)
- ``VideoMetadata`` describing the clip as ``T`` frames at ``clip.sample_fps``: transformers derives the
  temporal rotary spacing ``second_per_grid_ts = temporal_patch_size / metadata.sampled_fps`` and
  ``sampled_fps = len(frames_indices) / total_num_frames * fps`` = ``clip.sample_fps`` exactly. (Passing
  ``fps=`` to the processor as transformers 4.x code did no longer reaches this computation in 5.x: without
  metadata the processor silently assumes 24 fps.)

Timings: the vision encoder runs once per clip (:meth:`Grounder.encode_video`) and its output is handed to
``generate`` as ``mm_encoder_outputs``, so several queries on one clip reuse it (:meth:`Grounder.ground_many`);
prefill is the time to the first generated token, decode the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, Sequence

from .answer_mbr import SampledAnswers, choose_answer, sample_completions
from .answer_template import (
    AnswerConstraint,
    AnswerTemplate,
    AnswerTemplateLogitsProcessor,
    RepetitionStop,
    TokenStrings,
    is_repetition,
)
from .clip import PromptedClip
from .errors import BadInputError, MissingWeightsError, require
from .model_source import DEFAULT_MODEL, missing_weights_message, resolve_model_source
from .rope_index import use_trained_rope_index

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .backends.engine import PromptPass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrounderConfig:
    """How to load and run the grounding VLM. Defaults reproduce the STVG-R1 evaluation."""

    model: str = DEFAULT_MODEL
    """Hub id or local folder of a Qwen2.5-VL checkpoint (config.json + weights + processor files), or "nano"
    (the small model shipped in the package, trained on synthetic clips)."""
    device: str = "auto"
    """"auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"."""
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Weights/compute dtype. "auto": bf16 on CUDA with bf16 support, fp16 on older CUDA (e.g. Jetson Xavier),
    fp32 on CPU."""
    quant: Literal["none", "nf4"] = "none"
    """"nf4": 4-bit NormalFloat weights for the language model via bitsandbytes (CUDA, or CPU where the installed
    bitsandbytes has CPU 4-bit kernels, e.g. 0.50); the vision tower and lm_head stay in ``dtype``."""
    max_new_tokens: int = 1024
    """Most tokens generated per query (the training completion limit)."""
    min_new_tokens: int = 0
    """Tokens generated before end-of-sequence may stop decoding (benchmarks set it to ``max_new_tokens`` for a
    fixed decode length; 0 for real use)."""
    do_sample: bool = False
    """False: greedy decoding (deterministic). True: sample with ``temperature`` / ``top_p``."""
    temperature: float = 1.0
    """Sampling temperature (used only with ``do_sample``; training used 1.0)."""
    top_p: float = 1.0
    """Nucleus sampling mass (used only with ``do_sample``)."""
    attn_implementation: str = "sdpa"
    """Attention kernel: "sdpa", "eager" or "flash_attention_2" (needs flash-attn)."""
    stop_on_repetition: int = 64
    """Stop decoding once the last this many generated tokens are one short pattern (period <= 8) repeated: a
    degenerate answer ("small small small ...") would otherwise run to ``max_new_tokens`` and still not parse.
    With ``answer_template`` the thinking is closed there instead and the answer written. 0: never (the
    reference's behaviour)."""
    answer_template: bool = True
    """Keep decoding inside the answer template ``<think>…</think> <answer>Target ID: k, Time range: a to b</answer>``
    (:mod:`stvgr1_edge.answer_template`): the model's own token wherever the template allows it, so an answer in
    the template is unchanged and any other still parses; where the clip knows its drawn IDs, the answer names one
    of them. Not applied with ``min_new_tokens`` (fixed-length benchmark decoding). False: free decoding (the
    reference's behaviour)."""
    engine: Literal["hf", "static"] = "hf"
    """Decoder: "hf" (transformers' ``generate``) or "static" (:mod:`stvgr1_edge.backends.engine`: the same
    prefill, then a static KV cache and a compiled one-token step; greedy answers are ``generate``'s tokens)."""
    compile: bool = True
    """Engine "static": ``torch.compile`` the decode step (compiled steps are kept on disk, in
    ``~/.cache/stvg-edge/inductor`` or ``$STVG_EDGE_COMPILE_CACHE``). False: the same static loop, eager."""
    weights: Literal["fp", "int8", "int4", "fp32-ort"] = "fp"
    """The language model's linears, quantized at load (weight-only; either engine): "fp" as loaded, "int8"
    per-channel, "int4" group-wise (searched rounding). Pays off with the compiled static engine. "fp32-ort": an fp32
    model's own weights on onnxruntime's CPU kernel (:mod:`stvgr1_edge.backends.fp32_ort`)."""
    lm_head: Literal["fp", "int8", "int4", "fp32-ort"] = "fp"
    """The output projection's format (it reads a vocabulary-sized matrix per token: a large share of a small
    model's decode time)."""
    int4_group_size: int = 128
    """Group size of "int4" weights (32, 64, 128 or 256; a linear whose inputs do not split into groups stays fp)."""
    answer_samples: int = 0
    """0: the decoded answer. N > 0: N more answers are sampled (at ``sample_temperature``, inside the answer
    template) and the answer given is the one, of them and the decoded answer, whose IDs and time range the samples
    agree with most (mean tIoU over samples naming the same IDs: minimum Bayes risk, :mod:`stvgr1_edge.answer_mbr`).
    Greedy decoding writes a time's most likely digits one by one, which is neither the most likely range nor the
    best-scoring one."""
    sample_temperature: float = 1.0
    """Temperature of the ``answer_samples`` draws (training sampled at 1.0)."""
    sample_seed: int = 0
    """Seed of the ``answer_samples`` draws: the same answer every run."""


@dataclass(frozen=True)
class VideoInputs:
    """The processor's video tensors for one clip (the same for every query on it)."""

    pixel_values_videos: "torch.Tensor"
    """(num_patches, 3 * temporal_patch * 14 * 14) normalised patches."""
    video_grid_thw: "torch.Tensor"
    """(1, 3): temporal, height, width patch grid."""
    second_per_grid_ts: "torch.Tensor"
    """(1,): seconds per temporal patch (= temporal_patch_size / sample_fps)."""
    num_visual_tokens: int
    """Number of ``<|video_pad|>`` tokens the clip occupies in the prompt (grid / merge_size**2)."""
    preprocess_ms: float
    """Time spent resizing and patchifying the frames."""


@dataclass(frozen=True)
class EncodedVideo:
    """A clip's processor tensors plus its vision-encoder output, reusable across queries."""

    inputs: VideoInputs
    features: Any
    """The vision encoder's ``BaseModelOutputWithPooling`` (``pooler_output``: merged visual tokens)."""
    vision_ms: float
    """Time the vision encoder took."""


@dataclass(frozen=True)
class GroundingOutput:
    """The model's answer text for one query, with where the time went."""

    text: str
    """Generated text (special tokens removed)."""
    timings_ms: dict[str, float]
    """"preprocess", "vision" (0 when reused), "prefill" (to the first token), "decode" (the rest, and the
    ``answer_samples`` draws), "total"."""
    num_generated_tokens: int
    """Tokens of the decoded answer."""
    tokens_per_s: float
    """The decoded answer's decode throughput: (tokens - 1) / its decode seconds (0 when fewer than 2 tokens)."""
    num_visual_tokens: int
    num_prompt_tokens: int
    vision_reused: bool
    samples: SampledAnswers | None = None
    """With ``answer_samples``: the sampled answers and which one ``text`` is (None: ``text`` is the decoded one)."""


class VideoGrounder(Protocol):
    """What the pipeline needs of a grounder: encode a prompted clip once, answer each query on it. Implemented by
    :class:`Grounder` (transformers; a bundle's grounder is one with an exported vision encoder)."""

    config: GrounderConfig

    def check_prompt_fits(self, prompt_text: str, num_visual_tokens: int) -> None:
        """Raise a one-line error if the prompt, the clip and the answer cannot fit the model's context."""

    def encode_video(self, clip: PromptedClip) -> EncodedVideo:
        """The clip's processor tensors and vision features, shared by every query on it."""

    def ground(self, clip: PromptedClip, prompt_text: str, encoded: EncodedVideo | None = None) -> GroundingOutput:
        """The model's answer text to ``prompt_text`` about ``clip``."""


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"device {device!r} requested but CUDA is not available: use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> "torch.dtype":
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype not in table:
        raise BadInputError(f"unknown dtype {dtype!r}: use auto, bf16, fp16 or fp32")
    return table[dtype]


def nf4_quantization_config(compute_dtype: "torch.dtype"):
    """bitsandbytes NF4 for the language model; ``model.visual`` (the whole vision tower) and ``lm_head`` stay
    unquantized. (Module names in transformers 5: ``model.visual.*``, ``model.language_model.*``, ``lm_head``;
    skip patterns match from the start of the name, so "visual" alone would not skip the tower.)"""
    require("bitsandbytes", "quant", "4-bit (nf4) grounding")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=False,
        llm_int8_skip_modules=["model.visual", "lm_head"],
    )


def bitsandbytes_4bit_on_cpu() -> bool:
    """Whether the installed bitsandbytes has CPU 4-bit kernels (recent releases; older ones are CUDA-only): an NF4
    round trip of one small CPU matrix is tried, rather than a version number read."""
    try:
        import bitsandbytes as bnb
        import torch

        weight = torch.linspace(-1.0, 1.0, 64 * 64).reshape(64, 64)
        packed, state = bnb.functional.quantize_4bit(weight, quant_type="nf4")
        restored = bnb.functional.dequantize_4bit(packed, state)
    except Exception:  # ImportError, or a CUDA-only build raising on CPU tensors
        return False
    return restored.shape == weight.shape and bool((restored - weight).abs().max() < 0.2)


ENGINES = ("hf", "static")


def check_engine_options(config: GrounderConfig) -> None:
    """One :class:`BadInputError` line for an unknown engine or weight format, or one that cannot run here."""
    from .backends.weight_only import WEIGHT_FORMATS

    if config.engine not in ENGINES:
        raise BadInputError(f"unknown engine {config.engine!r}: use one of {', '.join(ENGINES)}")
    for name in ("weights", "lm_head"):
        if getattr(config, name) not in WEIGHT_FORMATS:
            formats = ", ".join(WEIGHT_FORMATS)
            raise BadInputError(f"unknown {name} format {getattr(config, name)!r}: use one of {formats}")
    if config.quant == "nf4" and (config.engine == "static" or config.weights != "fp" or config.lm_head != "fp"):
        raise BadInputError(
            "--quant nf4 runs on transformers' generate with bitsandbytes weights: drop it to use the static engine "
            "or int8/int4 weights, or keep --engine hf"
        )


class _TokenClock:
    """A ``generate`` streamer that records when the first new token arrives (the end of prefill).

    ``generate`` puts the prompt first, then each new token once it is on the host. ``on_first_token`` is called
    then (the rest is decoding)."""

    def __init__(self, on_first_token: Callable[[], None] | None = None) -> None:
        self.calls = 0
        self.first_token_s: float | None = None
        self.on_first_token = on_first_token

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first_token_s = time.perf_counter()
            if self.on_first_token is not None:
                self.on_first_token()

    def end(self) -> None:
        pass


class GroundingInputs:
    """The model inputs of one query, from the processor alone (no model).

    Inference (:class:`Grounder`) and training (``train/``) both build their inputs here, so the tensors and the
    token layout a fine-tuned model learns from are exactly the ones it is later asked with.
    """

    def __init__(self, processor) -> None:
        self.processor = processor
        if getattr(processor, "chat_template", None) is None:
            from .tiny import QWEN2_5_VL_CHAT_TEMPLATE

            logger.info("processor has no chat template; using Qwen2.5-VL-Instruct's")
            processor.chat_template = QWEN2_5_VL_CHAT_TEMPLATE

    def chat_text(self, prompt_text: str) -> str:
        """The rendered chat: default system message, one user turn with the text first, then the video."""
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt_text}, {"type": "video"}]}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _video_processor_call(self, clip: PromptedClip, text: str):
        from transformers.video_utils import VideoMetadata

        from .sampling import resize_frames

        factor = self.processor.video_processor.patch_size * self.processor.video_processor.merge_size
        if clip.resized_height % factor or clip.resized_width % factor:
            raise BadInputError(
                f"clip resize target {clip.resized_height}x{clip.resized_width} is not a multiple of "
                f"{factor}: build the clip with stvgr1_edge.sampling.plan_sampling"
            )
        if clip.frames.ndim != 4 or clip.frames.shape[-1] != 3 or len(clip.frames) != clip.num_frames:
            raise BadInputError(f"clip frames must be (T, H, W, 3) with T = {clip.num_frames}, got {clip.frames.shape}")
        frames = resize_frames(clip.frames, clip.resized_height, clip.resized_width)
        num_frames = len(frames)
        metadata = VideoMetadata(
            total_num_frames=num_frames, fps=clip.sample_fps, frames_indices=list(range(num_frames))
        )
        return self.processor(
            text=[text],
            videos=[frames],
            video_metadata=[metadata],
            do_sample_frames=False,
            do_resize=False,
            cap_pixels_per_frame=False,
            return_tensors="pt",
        )

    def prepare_video(self, clip: PromptedClip) -> VideoInputs:
        """Resize and patchify the clip's frames once (the video half of the model inputs)."""
        start = time.perf_counter()
        batch = self._video_processor_call(clip, f"{self.processor.video_token}")
        merge = self.processor.video_processor.merge_size
        grid = batch["video_grid_thw"]
        return VideoInputs(
            pixel_values_videos=batch["pixel_values_videos"],
            video_grid_thw=grid,
            second_per_grid_ts=batch["second_per_grid_ts"],
            num_visual_tokens=int(grid.prod()) // merge**2,
            preprocess_ms=(time.perf_counter() - start) * 1e3,
        )

    def prepare_text(self, prompt_text: str, num_visual_tokens: int) -> dict[str, "torch.Tensor"]:
        """Token ids for the chat with the video placeholder expanded to ``num_visual_tokens`` tokens — what
        the processor does when it is given the video, without re-processing the pixels."""
        import torch

        token = self.processor.video_token
        text = self.chat_text(prompt_text).replace(token, token * num_visual_tokens)
        encoded = self.processor.tokenizer([text], return_tensors="pt")
        mm_types = torch.tensor(self.processor.create_mm_token_type_ids(encoded["input_ids"]))
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "mm_token_type_ids": mm_types,
        }

    def model_inputs(self, clip_or_video: PromptedClip | VideoInputs, prompt_text: str) -> dict[str, "torch.Tensor"]:
        """Everything ``model.generate`` receives for one query (on CPU)."""
        video = clip_or_video if isinstance(clip_or_video, VideoInputs) else self.prepare_video(clip_or_video)
        inputs = self.prepare_text(prompt_text, video.num_visual_tokens)
        inputs.update(
            pixel_values_videos=video.pixel_values_videos,
            video_grid_thw=video.video_grid_thw,
            second_per_grid_ts=video.second_per_grid_ts,
        )
        return inputs


class Grounder(GroundingInputs):
    """A loaded Qwen2.5-VL model + processor. Load once per process and pass it around."""

    def __init__(self, model, processor, config: GrounderConfig = GrounderConfig()) -> None:
        """``config.weights``/``lm_head`` other than "fp" quantize ``model``'s language model in place."""
        super().__init__(processor)
        check_engine_options(config)
        self.model = use_trained_rope_index(model)
        self.config = config
        self.device = next(model.parameters()).device
        if config.weights != "fp" or config.lm_head != "fp":
            from .backends.weight_only import quantize_language_model_

            quantize_language_model_(model, config.weights, config.lm_head, config.int4_group_size)
        self._engine: Any = None
        self._token_strings: TokenStrings | None = None
        self._template_warnings: set[str] = set()
        self.vision_encoder: Any = None
        """Optional external vision encoder (e.g. an ONNX one from :mod:`stvgr1_edge.bundle`): a callable
        ``(pixel_values, grid_thw) -> `` what ``model.model.get_video_features(..., return_dict=True)`` returns."""

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, config: GrounderConfig = GrounderConfig()) -> "Grounder":
        """Load processor and model by hub id or local folder (never downloads when ``HF_HUB_OFFLINE`` is set)."""
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        source, local_only = resolve_model_source(config.model)
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        kwargs: dict[str, Any] = dict(
            dtype=dtype, attn_implementation=config.attn_implementation, local_files_only=local_only
        )
        if device.startswith("cuda"):
            kwargs["device_map"] = {"": device}  # load straight onto the GPU
        if config.quant == "nf4":
            if not device.startswith("cuda") and not bitsandbytes_4bit_on_cpu():
                require("bitsandbytes", "quant", "4-bit (nf4) grounding")
                raise BadInputError(
                    "--quant nf4 on CPU needs a bitsandbytes with CPU 4-bit kernels (e.g. 0.50): "
                    "upgrade it, use a CUDA GPU, or use --quant none"
                )
            kwargs["quantization_config"] = nf4_quantization_config(dtype)
        elif config.quant != "none":
            raise BadInputError(f"unknown quantization {config.quant!r}: use none or nf4")
        try:
            processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, **kwargs)
        except OSError as exc:
            if Path(source).exists():
                raise BadInputError(
                    f"cannot load the model in {source} ({str(exc).splitlines()[0]}): "
                    f"pass a complete Qwen2.5-VL checkpoint folder"
                ) from None
            raise MissingWeightsError(missing_weights_message(config.model)) from None
        if "device_map" not in kwargs:
            model = model.to(device)  # type: ignore[arg-type]  # transformers types .to as its decorated self
        model.eval()
        logger.info("loaded %s on %s (%s, quant=%s)", config.model, device, dtype, config.quant)
        return cls(model, processor, config)

    # ------------------------------------------------------------------ limits
    def check_prompt_fits(self, prompt_text: str, num_visual_tokens: int) -> None:
        """Raise a one-line :class:`BadInputError` if prompt + video + ``max_new_tokens`` exceed the context."""
        text_cfg = getattr(self.model.config, "text_config", self.model.config)
        limit = int(getattr(text_cfg, "max_position_embeddings", 0) or 0)
        if limit <= 0:
            return
        num_text = len(self.processor.tokenizer(self.chat_text(prompt_text))["input_ids"]) - 1  # minus the video slot
        total = num_text + num_visual_tokens + self.config.max_new_tokens
        if total > limit:
            raise BadInputError(
                f"the query is too long for the model: {num_text} prompt tokens + {num_visual_tokens} video tokens + "
                f"up to {self.config.max_new_tokens} generated = {total} > its context of {limit} tokens; shorten "
                "the query"
            )

    # ------------------------------------------------------------------ running
    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def encode_video(self, clip: PromptedClip) -> EncodedVideo:
        """Run the vision encoder once; pass the result to :meth:`ground` for every query on this clip."""
        import torch

        video = self.prepare_video(clip)
        pixels = video.pixel_values_videos.to(self.device)
        grid = video.video_grid_thw.to(self.device)
        self._sync()
        start = time.perf_counter()
        with torch.inference_mode():
            if self.vision_encoder is not None:
                features = self.vision_encoder(pixels, grid)
            else:
                features = self.model.model.get_video_features(pixels, grid, return_dict=True)
        self._sync()
        return EncodedVideo(video, features, (time.perf_counter() - start) * 1e3)

    def generation_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = dict(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample)
        if cfg.min_new_tokens:
            kwargs["min_new_tokens"] = cfg.min_new_tokens
        if cfg.do_sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    @property
    def token_strings(self) -> TokenStrings:
        """The token texts the answer template is matched against, built on first use."""
        if self._token_strings is None:
            vocab_size = self.model.get_output_embeddings().out_features  # the logits' width (int4/int8 heads too)
            self._token_strings = TokenStrings(self.processor.tokenizer, vocab_size)
        return self._token_strings

    def answer_constraint(self, prompt_text: str, drawn_ids: Sequence[int] | None = None) -> AnswerConstraint | None:
        """The constraint for one generation from ``prompt_text`` (the template its format sentence asks for, its
        IDs among ``drawn_ids`` when some are given), or None when ``answer_template`` is off or ``min_new_tokens``
        fixes the length."""
        from .backends.engine import eos_ids_of

        cfg = self.config
        eos = eos_ids_of(self.model.generation_config)
        if not cfg.answer_template or cfg.min_new_tokens or not eos:
            return None
        constraint = AnswerConstraint(
            self.token_strings,
            AnswerTemplate.for_prompt(prompt_text, drawn_ids),
            eos,
            cfg.max_new_tokens,
            repetition_window=cfg.stop_on_repetition,
        )
        problem = constraint.cannot_finish()
        if problem:
            if problem not in self._template_warnings:
                self._template_warnings.add(problem)
                logger.warning("answer template not applied: %s", problem)
            return None
        return constraint

    def _generate_hf(
        self,
        inputs: dict[str, Any],
        features: Any,
        constraint: AnswerConstraint | None = None,
        keep_prompt: bool = False,
    ) -> tuple[list[int], float, float, PromptPass | None]:
        """New token ids, seconds to the first one and seconds for the rest, by transformers' ``generate``; and, with
        ``keep_prompt``, the prompt's pass it made (its first raw logits and its cache cut back to the prompt)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from .backends.engine import FirstLogits, generated_prompt_pass
        from .backends.int4_mlas import DecodingThreads

        decode_threads = DecodingThreads(self.model, start_at_once=False)  # the prompt on all of torch's threads
        clock = _TokenClock(on_first_token=decode_threads.start)
        prompt_len = inputs["input_ids"].shape[1]
        window = self.config.stop_on_repetition
        stops = [RepetitionStop(prompt_len, window)] if window > 0 and constraint is None else []
        processors = [AnswerTemplateLogitsProcessor([constraint])] if constraint is not None else []
        start = time.perf_counter()
        with decode_threads, torch.inference_mode(), FirstLogits(self.model) as first_logits:
            output = self.model.generate(
                **inputs,
                mm_encoder_outputs={"video": features},
                streamer=clock,
                stopping_criteria=StoppingCriteriaList(stops),
                logits_processor=LogitsProcessorList(processors),
                return_dict_in_generate=keep_prompt,
                **self.generation_kwargs(),
            )
        self._sync()
        end = time.perf_counter()
        first = clock.first_token_s if clock.first_token_s is not None else end
        if not keep_prompt:
            return output[0, prompt_len:].tolist(), first - start, end - first, None
        prompt = generated_prompt_pass(self.model, inputs, output, first_logits.logits)
        return output.sequences[0, prompt_len:].tolist(), first - start, end - first, prompt

    @property
    def engine(self):
        """The static decode engine (:class:`~stvgr1_edge.backends.engine.StaticEngine`), built on first use."""
        if self._engine is None:
            from .backends.engine import EngineConfig, StaticEngine

            self._engine = StaticEngine(self.model, EngineConfig(compile=self.config.compile))
        return self._engine

    def _generate_static(
        self,
        inputs: dict[str, Any],
        features: Any,
        constraint: AnswerConstraint | None = None,
        keep_prompt: bool = False,
    ) -> tuple[list[int], float, float, PromptPass | None]:
        """:meth:`_generate_hf`'s result by the static engine, with the same token choice and stops."""
        from .backends.engine import Sampling, sampling_of

        cfg, window = self.config, self.config.stop_on_repetition
        sampling = (
            sampling_of(self.model.generation_config, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
            if cfg.do_sample
            else Sampling()
        )
        out = self.engine.generate(
            inputs,
            {"video": features},
            max_new_tokens=cfg.max_new_tokens,
            min_new_tokens=cfg.min_new_tokens,
            sampling=sampling,
            stop=(lambda tokens: is_repetition(tokens, window)) if window > 0 and constraint is None else None,
            constrain=constraint.mask if constraint is not None else None,
            keep_prompt=keep_prompt,
        )
        self._sync()
        return out.tokens, out.prefill_s, out.decode_s, out.prompt

    def query_inputs(self, video: VideoInputs, prompt_text: str) -> dict[str, Any]:
        """What ``generate`` receives for one prompt about an encoded clip (on the model's device): the prompt's
        tokens and the video's grid and temporal spacing; its features are passed alongside."""
        inputs = {k: v.to(self.device) for k, v in self.prepare_text(prompt_text, video.num_visual_tokens).items()}
        inputs.update(
            video_grid_thw=video.video_grid_thw.to(self.device),
            second_per_grid_ts=video.second_per_grid_ts.to(self.device),
        )
        return inputs

    def decode_text(self, token_ids: Sequence[int]) -> str:
        """Generated tokens as the answer's text (special tokens removed)."""
        return self.processor.tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def ground(self, clip: PromptedClip, prompt_text: str, encoded: EncodedVideo | None = None) -> GroundingOutput:
        """Answer one prompt about ``clip``; reuses ``encoded`` (from :meth:`encode_video`) when given."""
        reused = encoded is not None
        encoded = encoded if encoded is not None else self.encode_video(clip)
        video = encoded.inputs
        inputs = self.query_inputs(video, prompt_text)
        self._sync()
        generate = self._generate_static if self.config.engine == "static" else self._generate_hf
        constraint = self.answer_constraint(prompt_text, clip.drawn_ids)
        with_samples = self.config.answer_samples > 0  # they continue the decoded answer's pass over the prompt
        new_ids, prefill_s, decode_s, prompt = generate(inputs, encoded.features, constraint, keep_prompt=with_samples)
        prompt_len = inputs["input_ids"].shape[1]
        text = self.decode_text(new_ids)
        samples, sampling_s = None, 0.0
        if with_samples:
            sampling_start = time.perf_counter()
            samples = self.sample_answers(inputs, encoded.features, text, prompt_text, clip, prompt)
            self._sync()
            sampling_s = time.perf_counter() - sampling_start
            if samples.chosen >= 0:
                text = samples.texts[samples.chosen]
        num_new = len(new_ids)
        prefill_ms, decode_ms = prefill_s * 1e3, (decode_s + sampling_s) * 1e3
        vision_ms = 0.0 if reused else encoded.vision_ms
        preprocess_ms = 0.0 if reused else video.preprocess_ms
        timings = {
            "preprocess": preprocess_ms,
            "vision": vision_ms,
            "prefill": prefill_ms,
            "decode": decode_ms,
            "total": preprocess_ms + vision_ms + prefill_ms + decode_ms,
        }
        tokens_per_s = (num_new - 1) / decode_s if num_new > 1 and decode_s > 0 else 0.0  # the decoded answer's
        return GroundingOutput(
            text=text,
            timings_ms=timings,
            num_generated_tokens=num_new,
            tokens_per_s=tokens_per_s,
            num_visual_tokens=video.num_visual_tokens,
            num_prompt_tokens=prompt_len,
            vision_reused=reused,
            samples=samples,
        )

    def sample_answers(
        self,
        inputs: dict[str, Any],
        features: Any,
        decoded: str,
        prompt_text: str,
        clip: PromptedClip,
        prompt: PromptPass | None = None,
    ) -> SampledAnswers:
        """``answer_samples`` answers to ``inputs`` about ``clip`` (continuing ``prompt``, the decoded answer's pass,
        when given), and which of them, or the ``decoded`` answer (-1), the samples agree with most
        (:func:`~stvgr1_edge.answer_mbr.choose_answer`), their ranges clamped to the clip as the answer's will be."""
        import torch

        from .answer import parse_answer
        from .backends.engine import eos_ids_of

        cfg = self.config
        time_only = AnswerTemplate.for_prompt(prompt_text).ids == 0
        constraints = [self.answer_constraint(prompt_text, clip.drawn_ids) for _ in range(cfg.answer_samples)]
        rows = sample_completions(
            self.model,
            inputs,
            features,
            cfg.answer_samples,
            cfg.sample_temperature,
            eos_ids_of(self.model.generation_config),
            torch.Generator(device=self.device).manual_seed(cfg.sample_seed),
            cfg.max_new_tokens,
            constraints=None if None in constraints else [c.mask for c in constraints],  # type: ignore[union-attr]
            prompt=prompt,
        )
        texts = tuple(self.decode_text(row) for row in rows)
        answers = [parse_answer(t, clip.duration_s, time_only=time_only) for t in texts]
        chosen, score = choose_answer([*answers, parse_answer(decoded, clip.duration_s, time_only=time_only)], answers)
        return SampledAnswers(texts, -1 if chosen == len(answers) else chosen, score)

    def ground_many(self, clip: PromptedClip, prompts: Sequence[str]) -> list[GroundingOutput]:
        """Answer several prompts about one clip, encoding its frames once. The first output carries the
        preprocess and vision time; the others report them as 0 and ``vision_reused=True``."""
        encoded = self.encode_video(clip)
        outputs = []
        for i, prompt in enumerate(prompts):
            out = self.ground(clip, prompt, encoded)
            if i == 0:
                timings = dict(out.timings_ms, preprocess=encoded.inputs.preprocess_ms, vision=encoded.vision_ms)
                timings["total"] += encoded.inputs.preprocess_ms + encoded.vision_ms
                out = dataclasses.replace(out, timings_ms=timings, vision_reused=False)
            outputs.append(out)
        return outputs
