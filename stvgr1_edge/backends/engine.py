"""A static-KV-cache decode engine for Qwen2.5-VL, beside transformers' ``generate`` (gpt-fast's decode loop).

Why: ``generate`` spends most of a decode step outside the matrix-vector products — Python dispatch through the
model's layers, a growing cache concatenated every step, a mask rebuilt every step. Decoding one token of one sequence
is bound by reading the weights, so that overhead is pure loss. Here:

- **prefill** runs through the HF model itself (vision features or pixels, ``get_rope_index``'s 3-D M-RoPE positions,
  every layer), so the prompt and the first token are exactly transformers'; its key/value states are then copied
  into a preallocated **static cache** (one ``(1, kv_heads, capacity, head_dim)`` buffer pair per layer, capacity =
  prompt + ``max_new_tokens`` rounded up to ``cache_block``, so most queries reuse one cache and one compiled step);
- **a decode step** (:class:`DecodeStep`) is one screen of explicit code over the HF modules' own weights: embed,
  per layer norm → q/k/v → RoPE → write k/v at the step's slot → attention over the cache → o_proj → MLP, then the
  head. Its position on all three M-RoPE axes is ``cache_position + rope_deltas`` — what HF's
  ``compute_3d_position_ids`` gives a generated (text) token. The shapes never change, so ``torch.compile`` builds
  it once (CUDA: ``reduce-overhead``, i.e. CUDA graphs; CPU: inductor's default), with inductor's on-disk caches in
  :func:`compile_cache_dir` so the next process loads the compiled step instead of building it again;
- **token choice** is HF's: fp32 logits, greedy argmax, or HF's own temperature / top-k / top-p warpers and
  ``torch.multinomial``; it stops at any EOS id of the model's ``generation_config``, on the grounder's repetition
  stop (:func:`~stvgr1_edge.answer_template.is_repetition`) or at ``max_new_tokens``, as ``generate`` does.

The linears are whatever the model holds: full precision (fp32/bf16/fp16), or weight-only int8/int4
(:mod:`.weight_only`, :mod:`.int4`); compiled, an int8 linear's dequantization fuses into its matrix-vector product.
Batch size is 1 (one query at a time, as the grounder asks).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .int4_mlas import DecodingThreads

logger = logging.getLogger(__name__)

COMPILE_CACHE_ENV = "STVG_EDGE_COMPILE_CACHE"


def compile_cache_dir() -> Path:
    """Where compiled decode steps are kept across processes: ``$STVG_EDGE_COMPILE_CACHE``, else
    ``$XDG_CACHE_HOME/stvg-edge/inductor`` (``~/.cache/stvg-edge/inductor``)."""
    if os.environ.get(COMPILE_CACHE_ENV):
        return Path(os.environ[COMPILE_CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "stvg-edge" / "inductor"


def use_compile_cache() -> Path:
    """Point inductor's on-disk caches (the FX graph cache: generated and compiled kernels; the AOT autograd cache:
    the traced graphs) at :func:`compile_cache_dir`, and turn both on. Process-wide: inductor reads one directory."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    folder = compile_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") != str(folder):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
        try:  # inductor memoises some paths under the old directory
            from torch._inductor.utils import clear_caches

            clear_caches()
        except ImportError:  # pragma: no cover - older torch
            pass
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return folder


@dataclass(frozen=True)
class EngineConfig:
    """How the static engine runs (the weight format is chosen when the model is loaded: :mod:`.weight_only`)."""

    compile: bool = True
    """``torch.compile`` the decode step (False: the same static loop, eager)."""
    compile_mode: str | None = None
    """``torch.compile`` mode; None: "reduce-overhead" (CUDA graphs) on CUDA, inductor's default on CPU."""
    cache_block: int = 256
    """The cache capacity is rounded up to a multiple of this, so that queries of similar length share one cache
    and one compiled step (a longer one grows the cache and compiles once more)."""


@dataclass(frozen=True)
class Sampling:
    """Token choice, as in a ``GenerationConfig``: greedy unless ``do_sample``."""

    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None

    def warpers(self) -> list[Callable]:
        """HF's own logits warpers, in ``generate``'s order (temperature, top-k, top-p), so a seeded sample draws the
        same token as ``generate`` from the same logits."""
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        out: list[Callable] = []
        if self.temperature is not None and self.temperature != 1.0:
            out.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k:
            out.append(TopKLogitsWarper(top_k=self.top_k))
        if self.top_p is not None and self.top_p < 1.0:
            out.append(TopPLogitsWarper(top_p=self.top_p))
        return out


def sampling_of(generation_config: Any, **overrides: Any) -> Sampling:
    """The :class:`Sampling` a ``generation_config`` asks for, with ``overrides`` (None: keep the config's)."""
    values = {name: getattr(generation_config, name, None) for name in ("do_sample", "temperature", "top_k", "top_p")}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Sampling(
        do_sample=bool(values["do_sample"]),
        temperature=values["temperature"],
        top_k=values["top_k"],
        top_p=values["top_p"],
    )


def eos_ids_of(generation_config: Any) -> tuple[int, ...]:
    eos = getattr(generation_config, "eos_token_id", None)
    return () if eos is None else tuple(int(i) for i in ([eos] if isinstance(eos, int) else eos))


def prompt_positions(model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``get_rope_index``'s 3-D M-RoPE positions of the prompt ``inputs`` (text only: 1-D positions on all three
    axes) and its rope delta (1, 1): a token generated after the prompt sits at ``cache position + rope_delta``."""
    ids = inputs["input_ids"]
    if inputs.get("video_grid_thw") is not None or inputs.get("image_grid_thw") is not None:
        return model.model.get_rope_index(
            ids,
            inputs["mm_token_type_ids"],
            image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=inputs.get("video_grid_thw"),
            second_per_grid_ts=inputs.get("second_per_grid_ts"),
            attention_mask=inputs.get("attention_mask"),
        )
    positions = torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, 1, -1)
    return positions, torch.zeros(1, 1, dtype=torch.long, device=ids.device)


def cache_of(output: Any) -> Any:
    """The key/value cache a forward or ``generate`` returned (``cache``; ``past_key_values`` before transformers
    renamed it), or None."""
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


@dataclass
class PromptPass:
    """A prompt's pass through the model, which decoding continues from."""

    logits: torch.Tensor
    """The last prompt position's fp32 logits (1, vocab): the first token's scores."""
    cache: Any
    """The prompt's keys and values, and nothing after them (a transformers ``DynamicCache``)."""
    rope_delta: torch.Tensor
    """(1, 1): a token generated after the prompt sits at ``cache position + rope_delta`` on all three axes."""


def run_prompt(model: Any, inputs: dict[str, torch.Tensor], mm_encoder_outputs: dict | None) -> PromptPass:
    """The prompt through the HF model with :func:`prompt_positions`, as ``generate`` runs it."""
    positions, rope_delta = prompt_positions(model, inputs)
    kwargs = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    out = model(
        **kwargs, position_ids=positions, mm_encoder_outputs=mm_encoder_outputs, use_cache=True, logits_to_keep=1
    )
    return PromptPass(out.logits[:, -1].float(), cache_of(out), rope_delta)


class FirstLogits:
    """While active, keeps the last-position logits of the first forward through ``model``'s output layer: inside
    ``generate``, the prompt pass's raw logits (before any logits processor). ``output_logits=True`` would keep every
    step's (a 1,024-token answer over a 151,936-token vocabulary: 622 MB in fp32)."""

    def __init__(self, model: Any) -> None:
        self.module = model.get_output_embeddings()
        self.logits: torch.Tensor | None = None

    def __enter__(self) -> "FirstLogits":
        self.handle = self.module.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()

    def _keep(self, module: Any, args: Any, output: torch.Tensor) -> None:
        if self.logits is None:
            self.logits = output[:, -1].to(torch.float32, copy=True)


def generated_prompt_pass(
    model: Any, inputs: dict[str, torch.Tensor], output: Any, first_logits: torch.Tensor | None
) -> PromptPass | None:
    """The prompt's pass inside ``generate``'s ``output`` (``return_dict_in_generate=True``): its first raw logits
    (:class:`FirstLogits`) and the cache cut back to the prompt; None when ``generate`` kept no cache."""
    cache = cache_of(output)
    if cache is None or first_logits is None:
        return None
    extra = cache.get_seq_length() - inputs["input_ids"].shape[1]  # the answer's tokens but the last
    if extra > 0:
        cache.crop(-extra)  # a negative count: tokens removed from the end
    return PromptPass(first_logits, cache, prompt_positions(model, inputs)[1])


@dataclass
class EngineOutput:
    """Generated token ids (the last one is the EOS when one stopped it, as ``generate`` returns them) and times."""

    tokens: list[int]
    prefill_s: float
    """Prompt in, first token chosen."""
    decode_s: float
    """The remaining tokens (includes compiling the step when this call compiled it: see ``compile_s``)."""
    compile_s: float = 0.0
    """Time of the first decode step of a freshly built step (compile + one step); 0 when none was built."""
    first_logits: torch.Tensor | None = field(default=None, repr=False)
    """The prefill's last-position logits (fp32), for fidelity checks."""
    prompt: PromptPass | None = field(default=None, repr=False)
    """The prompt's pass (its own cache), kept when ``generate`` is asked to (``keep_prompt``)."""


class KVCache(nn.Module):
    """One layer's keys and values for ``capacity`` positions, as buffers (so CUDA graphs see fixed addresses)."""

    k: torch.Tensor
    v: torch.Tensor

    def __init__(self, kv_heads: int, capacity: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        shape = (1, kv_heads, capacity, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class DecodeStep(nn.Module):
    """One token through a Qwen2.5-VL language model with a static cache: ``(token (1, 1), slot (1,), rope_delta
    (1, 1)) -> fp logits (1, vocab)``. Uses the model's own modules (norms, linears of any weight format, MLP,
    rotary embedding), so the weights exist once."""

    slots: torch.Tensor

    def __init__(self, model: Any, capacity: int) -> None:
        super().__init__()
        text: Any = model.model.language_model  # transformers' modules: typed loosely
        config = text.config
        self.embed, self.layers, self.norm, self.rotary = text.embed_tokens, text.layers, text.norm, text.rotary_emb
        self.lm_head = model.lm_head
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.hidden_size // self.heads  # as Qwen2_5_VLAttention computes it
        self.capacity = capacity
        weight = self.embed.weight
        self.caches = nn.ModuleList(
            KVCache(self.kv_heads, capacity, self.head_dim, weight.dtype, weight.device) for _ in self.layers
        )
        self.register_buffer("slots", torch.arange(capacity, device=weight.device), persistent=False)

    def forward(self, token: torch.Tensor, slot: torch.Tensor, rope_delta: torch.Tensor) -> torch.Tensor:
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        x = self.embed(token)  # (1, 1, hidden)
        # A generated token is text: its three M-RoPE ids (time, height, width) are all cache position + rope delta.
        cos, sin = self.rotary(x, (slot + rope_delta).view(1, 1, 1).expand(3, 1, 1))
        cos, sin = cos[:, None], sin[:, None]  # (1, 1, 1, head_dim): the same rotation for every head
        visible = (self.slots <= slot).view(1, 1, 1, -1)  # the prompt and the tokens so far, this one included
        layers: Any = self.layers
        caches: Any = self.caches
        for layer, cache in zip(layers, caches):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(1, 1, heads, dim).transpose(1, 2)  # (1, heads, 1, dim)
            k = attn.k_proj(h).view(1, 1, kv_heads, dim).transpose(1, 2)
            v = attn.v_proj(h).view(1, 1, kv_heads, dim).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            cache.k.index_copy_(2, slot, k)
            cache.v.index_copy_(2, slot, v)
            # Grouped-query attention without repeating the cache: the heads sharing a key/value head are its rows.
            q = q.reshape(1, kv_heads, heads // kv_heads, dim)
            o = nn.functional.scaled_dot_product_attention(q, cache.k, cache.v, attn_mask=visible, scale=attn.scaling)
            x = x + attn.o_proj(o.reshape(1, 1, heads * dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x))[:, -1]


class StaticEngine:
    """Prefill through the HF model, then decode token by token with :class:`DecodeStep` (compiled once per cache
    capacity). One engine per model; not thread-safe (the cache is shared by its calls)."""

    def __init__(self, model: Any, config: EngineConfig = EngineConfig()) -> None:
        from ..errors import BadInputError

        if any(type(m).__module__.startswith("bitsandbytes") for m in model.modules()):
            raise BadInputError(
                "the static engine does not run bitsandbytes (nf4) weights: use --engine hf, or int8/int4 weights"
            )
        self.model, self.config = model, config
        self.device = next(model.parameters()).device
        self.step: DecodeStep | None = None
        self._step_fn: Callable | None = None
        self._fresh = False  # the step was just built: its first call compiles it
        self._compile_failed = False  # compiling failed here once: later steps are built eager

    # ---------------------------------------------------------------------------------------------- the cache
    def _prepare(self, needed: int) -> None:
        """Make sure the cache holds ``needed`` positions (a new step, compiled on its first call, when not)."""
        if self.step is not None and self.step.capacity >= needed:
            return
        block = self.config.cache_block
        self.step = None  # free the old cache first
        self.step = DecodeStep(self.model, -(-needed // block) * block)
        self._step_fn = self.step
        if self.config.compile and not self._compile_failed:
            cache_dir = use_compile_cache()
            mode = self.config.compile_mode or ("reduce-overhead" if self.device.type == "cuda" else None)
            self._step_fn = torch.compile(self.step, mode=mode, fullgraph=True, dynamic=False)
            logger.info("decode step: capacity %d, compiled (%s), cache %s", self.step.capacity, mode, cache_dir)
        self._fresh = True

    # ---------------------------------------------------------------------------------------------- prefill
    def prefill(self, inputs: dict[str, torch.Tensor], mm_encoder_outputs: dict | None) -> PromptPass:
        """The prompt through the HF model (:func:`run_prompt`); its key/values are copied into the static cache."""
        assert self.step is not None
        length = inputs["input_ids"].shape[1]
        prompt = run_prompt(self.model, inputs, mm_encoder_outputs)
        statics: Any = self.step.caches
        for layer, static in zip(prompt.cache.layers, statics):
            static.k[:, :, :length].copy_(layer.keys)
            static.v[:, :, :length].copy_(layer.values)
        prompt.rope_delta = prompt.rope_delta.to(self.device)
        return prompt

    def _first_call(self, token: torch.Tensor, slot: torch.Tensor, rope_delta: torch.Tensor) -> torch.Tensor:
        try:
            return self._step_fn(token, slot, rope_delta)  # type: ignore[misc]
        except Exception as exc:
            if self._step_fn is self.step:
                raise
            # e.g. a Jetson torch without Triton, or a CPU without a C++ compiler: the same static loop, eager
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning("decode step: compiling failed (%s): decoding eagerly", reason)
            assert self.step is not None
            self._step_fn, self._compile_failed = self.step, True
            return self.step(token, slot, rope_delta)

    # ---------------------------------------------------------------------------------------------- the loop
    @torch.no_grad()
    def generate(
        self,
        inputs: dict[str, torch.Tensor],
        mm_encoder_outputs: dict | None = None,
        max_new_tokens: int = 1024,
        min_new_tokens: int = 0,
        sampling: Sampling | None = None,
        eos_token_ids: Sequence[int] | None = None,
        stop: Callable[[list[int]], bool] | None = None,
        constrain: Callable[[list[int], torch.Tensor], torch.Tensor] | None = None,
        keep_prompt: bool = False,
    ) -> EngineOutput:
        """Generate for one prompt (batch 1): ``inputs`` as for ``model.generate`` (on the model's device).

        ``sampling`` and ``eos_token_ids`` default to the model's ``generation_config``; ``stop(tokens)`` is asked
        after every token (e.g. the repetition stop); ``min_new_tokens`` keeps EOS out until that many tokens;
        ``constrain(tokens, logits)`` masks the next token's logits before the choice (e.g. the answer template);
        ``keep_prompt`` keeps the prompt's pass in the output (e.g. to sample more answers from it)."""
        generation_config = self.model.generation_config
        sampling = sampling if sampling is not None else sampling_of(generation_config)
        eos = tuple(eos_token_ids if eos_token_ids is not None else eos_ids_of(generation_config))
        warpers = sampling.warpers() if sampling.do_sample else []
        eos_index = torch.tensor(eos, dtype=torch.long, device=self.device)

        def choose(logits: torch.Tensor, tokens: list[int]) -> int:  # logits: fp32 (1, vocab)
            if constrain is not None:
                logits = constrain(tokens, logits)
            if len(tokens) < min_new_tokens and len(eos):
                logits = logits.index_fill(1, eos_index, -float("inf"))
            if not sampling.do_sample:
                return int(logits.argmax(dim=-1))
            for warp in warpers:
                logits = warp(None, logits)
            return int(torch.multinomial(logits.softmax(dim=-1), num_samples=1))

        def finished(tokens: list[int]) -> bool:
            return tokens[-1] in eos or len(tokens) >= max_new_tokens or (stop is not None and stop(tokens))

        length = inputs["input_ids"].shape[1]
        self._prepare(length + max_new_tokens)
        start = time.perf_counter()
        prompt = self.prefill(inputs, mm_encoder_outputs)
        first_logits, rope_delta = prompt.logits, prompt.rope_delta
        tokens = [choose(first_logits, [])]
        first = time.perf_counter()
        compile_s = 0.0
        token = torch.tensor([[tokens[-1]]], device=self.device)
        slot = torch.tensor([length], device=self.device)
        cuda_graphs = self.config.compile and self.device.type == "cuda"
        with DecodingThreads(self.model):  # onnxruntime int4 linears: torch on one thread (int4_mlas)
            while not finished(tokens):
                step_start = time.perf_counter()
                if cuda_graphs and self._step_fn is not self.step:  # the last step's output buffer is reused now
                    torch.compiler.cudagraph_mark_step_begin()
                if self._fresh:  # compiles, or loads the compiled step from the cache
                    logits = self._first_call(token, slot, rope_delta)
                    compile_s, self._fresh = time.perf_counter() - step_start, False
                else:
                    logits = self._step_fn(token, slot, rope_delta)  # type: ignore[misc]
                tokens.append(choose(logits.float(), tokens))
                token.fill_(tokens[-1])
                slot += 1
        end = time.perf_counter()
        return EngineOutput(
            tokens, first - start, end - first, compile_s, first_logits, prompt if keep_prompt else None
        )
