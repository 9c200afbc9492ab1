"""GRPO on cached STVG samples: TRL's ``GRPOTrainer`` with the video reaching every forward pass.

Stock TRL 1.16 builds multimodal inputs from ``image`` columns only; for a video prompt the loss forward gets
``input_ids`` full of ``<|video_pad|>`` tokens and no pixels, so the policy is trained on placeholder embeddings
and the vision tower never receives a gradient — silently. :class:`VideoGRPOTrainer` fixes that:

* each row names its cached tensors (``video_file``); ``_generate_and_score_completions`` loads them once per
  generation batch and carries them with the rows (``inputs["videos"]``: one :class:`VideoTensors` per row, so
  TRL's shuffling and splitting keep them aligned);
* ``_tokenize_prompts`` lays the prompt out exactly as the grounder does (``ClipProcessor.prepare_text``) and
  hands ``pixel_values_videos``/``video_grid_thw``/``second_per_grid_ts`` to ``generate``;
* ``_get_per_token_logps_and_entropies`` — used for the policy loss, old-policy log-probs (``num_iterations > 1``)
  and reference log-probs (``beta > 0``) — adds the rows' video tensors (patches concatenated, grids stacked)
  and ``mm_token_type_ids``, and **raises** when no video is attached or the placeholder count disagrees;
* with ``answer_template`` (off by default: STVG-R1 samples freely) every rollout is sampled inside the answer
  template the grounder decodes with (``stvgr1_edge.answer_template``: the thinking free, then ``<answer>Target ID:
  k, Time range: a to b</answer>``, ``k`` among the clip's drawn IDs), so the rewards judge the answers inference
  can give. Where the template left only some tokens to choose from, every log-prob (policy, old policy, reference)
  is the one of that choice: renormalised over those tokens, so a forced token has log-prob 0 and the KL and the
  ratio compare the distributions the rollouts were drawn from (the unmasked log-prob of a token the policy would
  not have chosen sends the KL estimate to thousands).

Run with ``stvg-edge train grpo --config train/configs/grpo_stvg_r1.yaml`` (single process) or
``accelerate launch --config_file train/configs/zero3.yaml -m stvgr1_edge_train grpo --config ...`` (DeepSpeed).
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from stvgr1_edge.answer_template import (
    AnswerConstraint,
    AnswerTemplate,
    AnswerTemplateLogitsProcessor,
    TokenStrings,
)
from stvgr1_edge.errors import BadInputError, MissingDependencyError
from stvgr1_edge.prepared import read_video_tensors
from stvgr1_edge.rope_index import use_trained_rope_index

from .checkpoint import ExactResumeMixin
from .rewards import RewardConfig, build_reward_funcs
from .video_inputs import ClipProcessor, VideoTensors, collate_videos, video_token_type_ids

logger = logging.getLogger(__name__)

VISION_SPECIAL_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
"""Never sampled: a generated placeholder would no longer match the video features in the next forward."""


class EpochSeededRepeatSampler(RepeatSampler):
    """TRL's ``RepeatSampler`` whose shuffle depends only on ``(seed, epoch)``.

    The stock sampler draws every epoch's permutation from one generator seeded once, so a run resumed in epoch
    ``e`` replays epoch 0's order (the Trainer does not re-iterate the finished epochs). ``set_epoch`` (called by
    the Trainer before each epoch) reseeds with ``seed + epoch``: resumed and uninterrupted runs see the same data.
    """

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.shuffle:
            self.generator.manual_seed((self.seed or 0) + self.epoch)


class MissingVideoError(RuntimeError):
    """A forward pass of a video sample was about to run without its video tensors."""


class VideoGRPOTrainer(ExactResumeMixin, GRPOTrainer):
    """``GRPOTrainer`` for rows ``{"prompt": STVG-R1 prompt text, "video_file": cached tensors, ...}``; resumes
    full-weight checkpoints exactly (:class:`~stvgr1_edge_train.checkpoint.ExactResumeMixin`)."""

    def __init__(self, *args: Any, video_cache_size: int = 64, answer_template: bool = False, **kwargs: Any) -> None:
        hooks = ("_tokenize_prompts", "_generate_single_turn", "_get_per_token_logps_and_entropies", "_compute_loss")
        if not all(hasattr(GRPOTrainer, h) for h in hooks):
            import trl

            raise MissingDependencyError(
                f"VideoGRPOTrainer hooks into TRL 1.16's GRPOTrainer; trl {trl.__version__} "
                f"lacks {[h for h in hooks if not hasattr(GRPOTrainer, h)]}: "
                f"pip install 'trl==1.16.*'"
            )
        processing_class = kwargs.get("processing_class")
        if processing_class is None or not hasattr(processing_class, "video_processor"):
            raise BadInputError(
                "VideoGRPOTrainer needs the model's processor (processing_class) with a video processor"
            )
        grpo_args = kwargs.get("args")
        if grpo_args is not None and (grpo_args.use_vllm or grpo_args.use_transformers_continuous_batching):
            raise BadInputError(
                "VideoGRPOTrainer generates with transformers `generate` (the video reaches it there): "
                "set grpo.use_vllm=false and grpo.use_transformers_continuous_batching=false"
            )
        if answer_template and grpo_args is not None:
            # generate applies its top-k/top-p/min-p filters before a caller's logits processors: they could leave
            # none of the tokens the template allows
            if (grpo_args.top_k or 0) > 0 or grpo_args.top_p < 1.0 or grpo_args.min_p:
                raise BadInputError(
                    "answer_template rollouts need grpo.top_k=0, grpo.top_p=1.0 and no grpo.min_p "
                    f"(got {grpo_args.top_k}, {grpo_args.top_p}, {grpo_args.min_p})"
                )
        tokenizer = processing_class.tokenizer
        suppress = [tokenizer.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS]
        if grpo_args is not None:
            gen = dict(grpo_args.generation_kwargs or {})
            gen["suppress_tokens"] = sorted(set(gen.get("suppress_tokens", [])) | set(suppress))
            grpo_args.generation_kwargs = gen
        super().__init__(*args, **kwargs)
        for model in (self.model, getattr(self, "ref_model", None)):  # the positions Qwen2.5-VL was trained with
            if model is not None:
                use_trained_rope_index(model)
        self.clip_processor = ClipProcessor(self.processing_class)
        self.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        self.merge_size = int(self.processing_class.video_processor.merge_size)
        self._active_videos: list[VideoTensors] | None = None
        self._active_rows: list[dict[str, Any]] | None = None
        self._active_restricted: list[dict[int, tuple[int, ...]]] | None = None
        self.answer_template = answer_template
        self._token_strings: TokenStrings | None = None
        self._video_cache: OrderedDict[str, VideoTensors] = OrderedDict()
        self._video_cache_size = video_cache_size
        self.seen_sample_ids: list[str] = []
        """Sample ids of every training generation batch, in order (one entry per row, i.e. per completion)."""

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if type(sampler) is not RepeatSampler:
            return sampler
        return EpochSeededRepeatSampler(
            sampler.data_source,
            sampler.mini_repeat_count,
            sampler.batch_size,
            sampler.repeat_count,
            sampler.shuffle,
            sampler.seed,
        )

    # --------------------------------------------------------------- video tensors per row
    def load_video(self, path: str) -> VideoTensors:
        video = self._video_cache.get(path)
        if video is None:
            video = read_video_tensors(path)
            self._video_cache[path] = video
            if len(self._video_cache) > self._video_cache_size:
                self._video_cache.popitem(last=False)
        else:
            self._video_cache.move_to_end(path)
        return video

    def _videos_for(self, num_rows: int) -> list[VideoTensors]:
        videos = self._active_videos
        if videos is None:
            raise MissingVideoError(
                "a forward pass ran without the rows' video tensors (pixel_values_videos, "
                "video_grid_thw, second_per_grid_ts): the model would see only <|video_pad|> "
                "placeholders; call it through VideoGRPOTrainer with inputs['videos']"
            )
        if len(videos) != num_rows:
            raise MissingVideoError(f"{len(videos)} videos attached to a batch of {num_rows} rows")
        return videos

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not inputs or "video_file" not in inputs[0]:
            raise MissingVideoError(
                "dataset rows have no 'video_file' column: build the dataset with "
                "stvgr1_edge_train.cache.load_cached_dataset"
            )
        videos = [self.load_video(row["video_file"]) for row in inputs]
        if self.model.training:
            self.seen_sample_ids.extend(str(row.get("sample_id", "")) for row in inputs)
        self._active_videos, self._active_rows = videos, inputs
        try:
            output = super()._generate_and_score_completions(inputs)
            if self.answer_template:  # one entry per row, so TRL's shuffling and splitting keep them aligned
                output["template_restricted"] = self._active_restricted
        finally:
            self._active_videos, self._active_rows, self._active_restricted = None, None, None
        output["videos"] = videos
        return output

    def _compute_loss(self, model, inputs):
        videos = inputs.get("videos")
        if videos is None:
            raise MissingVideoError("the loss batch carries no 'videos': the policy loss would ignore the video")
        self._active_videos = list(videos)
        self._active_restricted = inputs.get("template_restricted")
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._active_videos, self._active_restricted = None, None

    # --------------------------------------------------------------- prompts → generation inputs
    def _tokenize_prompts(self, prompts: list):
        videos = self._videos_for(len(prompts))
        prompt_ids, token_types = [], []
        for prompt, video in zip(prompts, videos):
            if not isinstance(prompt, str):
                raise BadInputError(
                    f"VideoGRPOTrainer prompts are the STVG-R1 prompt text (a string), got {type(prompt).__name__}"
                )
            text = self.clip_processor.prepare_text(prompt, video.num_visual_tokens(self.merge_size))
            prompt_ids.append(text["input_ids"][0].tolist())
            token_types.append(text["mm_token_type_ids"][0].tolist())
        multimodal_fields: dict[str, Any] = dict(collate_videos(videos))
        multimodal_fields["mm_token_type_ids"] = token_types
        return prompt_ids, None, multimodal_fields

    # --------------------------------------------------------------- rollouts inside the answer template
    def rollout_constraints(self, rows: Sequence[dict[str, Any]]) -> list[AnswerConstraint]:
        """One answer constraint per rollout row: the template its prompt asks for, IDs among its drawn IDs."""
        if self._token_strings is None:
            vocab_size = self.model.get_output_embeddings().out_features
            self._token_strings = TokenStrings(self.processing_class.tokenizer, vocab_size)
        constraints = []
        for row in rows:
            template = AnswerTemplate.for_prompt(row["prompt"], row.get("valid_ids"))
            constraint = AnswerConstraint(
                self._token_strings, template, self.eos_token_ids, self.args.max_completion_length
            )
            problem = constraint.cannot_finish()
            if problem:
                raise BadInputError(f"answer_template rollouts: {problem}")
            constraints.append(constraint)
        return constraints

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        generate = functools.partial(
            super()._generate_single_turn, prompt_ids, images, multimodal_fields, num_generations, has_tool_images
        )
        if not self.answer_template:
            return generate()
        rows = self._active_rows
        if rows is None or len(rows) != len(prompt_ids):
            raise RuntimeError("answer_template rollouts need the rows being generated for (one per prompt)")
        from transformers import LogitsProcessorList

        processor = AnswerTemplateLogitsProcessor(self.rollout_constraints(rows))
        # TRL's generate call takes no logits processor: the model TRL unwraps for generation gets one for the span
        # of this call (an instance attribute over the class's generate)
        model = self.accelerator.unwrap_model(self.model_wrapped)
        model.generate = functools.partial(model.generate, logits_processor=LogitsProcessorList([processor]))
        try:
            completions = generate()
        finally:
            del model.generate
        self._active_restricted = processor.restricted
        return completions

    def _log_probs_of_template_choices(
        self,
        model,
        hidden: torch.Tensor,
        logps: torch.Tensor,
        tokens: torch.Tensor,
        rows: Sequence[dict[int, tuple[int, ...]]],
    ) -> torch.Tensor:
        """``logps`` (rows, completion ``tokens``) where each token the template chose among a few has its log-prob
        among those instead: ``logit - logsumexp(logits of those)``, from the hidden state before it (``hidden``: the
        language model's last hidden states of the whole prompt + completion). A forced token gets exactly 0."""
        where, allowed = [], []
        start = hidden.size(1) - logps.size(1)  # the first completion token's position
        for r, steps in enumerate(rows):
            for step, choices in steps.items():
                if step < logps.size(1):
                    where.append((r, step))
                    allowed.append(choices)
        if not where:
            return logps
        r_index = torch.tensor([r for r, _ in where], device=logps.device)
        s_index = torch.tensor([s for _, s in where], device=logps.device)
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        states = hidden[r_index, start + s_index - 1].to(head.weight.dtype)
        logits = head(states).float() / self.temperature
        width = max(len(t) for t in allowed)
        choice_index = torch.tensor([list(t) + [t[0]] * (width - len(t)) for t in allowed], device=logps.device)
        padding = torch.tensor([[k >= len(t) for k in range(width)] for t in allowed], device=logps.device)
        among = logits.gather(1, choice_index).masked_fill(padding, -float("inf")).logsumexp(dim=1)
        chosen = logits.gather(1, tokens[r_index, s_index].unsqueeze(1)).squeeze(1)
        return logps.index_put((r_index, s_index), (chosen - among).to(logps.dtype))

    # --------------------------------------------------------------- every scoring forward
    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **multimodal,
    ):
        """Per-token log-probs of the completion tokens, with each row's video in the forward pass."""
        image_inputs = [k for k in ("pixel_values", "image_grid_thw") if multimodal.get(k) is not None]
        if image_inputs:
            raise BadInputError(f"image inputs {image_inputs} in a video GRPO batch: rows must carry video only")
        videos = self._videos_for(input_ids.size(0))
        batch_size = batch_size or input_ids.size(0)
        all_logps, all_entropies, all_aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids = input_ids[start:end]
            mask = attention_mask[start:end]
            chunk_videos = videos[start:end]
            expected = sum(v.num_visual_tokens(self.merge_size) for v in chunk_videos)
            found = int((ids == self.video_token_id).sum())
            if found != expected:
                raise MissingVideoError(
                    f"rows {start}..{end - 1} hold {found} <|video_pad|> tokens but their videos "
                    f"give {expected} visual tokens (truncated prompt?)"
                )
            model_inputs = {
                "input_ids": ids,
                "attention_mask": mask,
                "mm_token_type_ids": video_token_type_ids(ids, self.video_token_id),
                **collate_videos(chunk_videos, device=ids.device),
            }
            if compute_aux_loss:
                model_inputs["output_router_logits"] = True
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100
            restricted = None if self._active_restricted is None else self._active_restricted[start:end]
            hidden: list[torch.Tensor] = []  # the language model's last hidden states, for the template's choices
            hook = None
            if restricted is not None:
                decoder = self.accelerator.unwrap_model(model).get_decoder()
                hook = decoder.register_forward_hook(lambda m, a, out: hidden.append(out.last_hidden_state))
            try:
                with self.accelerator.autocast():
                    outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
                    logps = outputs.log_probs[:, -logits_to_keep:]
                    if restricted is not None:
                        completion = ids[:, -logits_to_keep:]
                        logps = self._log_probs_of_template_choices(model, hidden[-1], logps, completion, restricted)
            finally:
                if hook is not None:
                    hook.remove()
            all_logps.append(logps)
            if compute_entropy:
                all_entropies.append(outputs.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                all_aux.append(outputs.aux_loss)
        logps = torch.cat(all_logps, dim=0)
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        aux_loss = torch.stack(all_aux).mean() if compute_aux_loss else None
        return logps, entropies, aux_loss


# --- configuration -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoraSettings:
    """Optional LoRA / QLoRA adapters on the language model (the vision tower stays fully trainable or frozen
    as the base model is)."""

    enabled: bool = False
    """Train LoRA adapters instead of all weights."""
    r: int = 64
    """Adapter rank."""
    alpha: int = 128
    """LoRA alpha (scale = alpha / r)."""
    dropout: float = 0.05
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    """Regex of the adapted modules (the language model's projections)."""
    qlora: bool = False
    """Load the base model in 4-bit NF4 (bitsandbytes, CUDA) — QLoRA."""


@dataclass(frozen=True)
class GRPORunConfig:
    """A GRPO run: data, model, output, rewards, adapters, and TRL ``GRPOConfig`` fields (``grpo``)."""

    data: str | None = None
    """Training cache folder written by `stvg-edge train prepare`."""
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    """Hub id or folder of the Qwen2.5-VL model to fine-tune (STVG-R1 starts from the Instruct model)."""
    output_dir: str = "runs/grpo_stvg_r1"
    """Checkpoints and the final model go here."""
    resume_from_checkpoint: str | None = None
    """A checkpoint folder, or "latest" (the newest ``checkpoint-*`` in ``output_dir``)."""
    rewards: RewardConfig = RewardConfig()
    lora: LoraSettings = LoraSettings()
    grpo: dict[str, Any] = field(default_factory=dict)
    """``trl.GRPOConfig`` keyword arguments (paper defaults in ``train/configs/grpo_stvg_r1.yaml``)."""
    answer_template: bool = False
    """Sample the rollouts inside the grounder's answer template, IDs among each clip's drawn IDs (False: freely,
    as STVG-R1 was trained)."""


def _typed(cls, values: dict[str, Any] | None, where: str):
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise BadInputError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


@functools.cache
def _yaml_loader():
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent_float = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent_float, list("-+0123456789."))
    return Loader


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also reads YAML 1.2 floats: PyYAML follows YAML 1.1, where ``1e-5`` (no dot) is the
    string "1e-5", and a learning rate written that way would reach the optimizer as text."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


def load_run_config(path: str | Path | None, overrides: Sequence[str] = (), **top_level: Any) -> GRPORunConfig:
    """Read a run YAML, apply ``key=value`` overrides (``grpo.max_steps=2``, ``rewards.id_weight=0.5``,
    ``model=DIR``) and non-None keyword arguments (``data=``, ``model=``, ``output_dir=``)."""
    import yaml

    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"config file not found: {path}")
        try:
            raw = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise BadInputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise BadInputError(f"{path} must be a mapping of settings")
    for item in overrides:
        if "=" not in item:
            raise BadInputError(f"override {item!r} is not KEY=VALUE (e.g. grpo.max_steps=2)")
        key, value = item.split("=", 1)
        target = raw
        *parents, leaf = key.strip().split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = load_yaml(value)
    for key, value in top_level.items():
        if value is not None:
            raw[key] = value
    where = str(path) if path is not None else "config"
    raw["rewards"] = _typed(RewardConfig, raw.get("rewards"), f"{where}: rewards")
    raw["lora"] = _typed(LoraSettings, raw.get("lora"), f"{where}: lora")
    raw["grpo"] = dict(raw.get("grpo") or {})
    return _typed(GRPORunConfig, raw, where)


def load_processor(model: str):
    """The model's processor (local files only for folders; the offline setting decides for hub ids)."""
    from transformers import AutoProcessor

    from stvgr1_edge.errors import MissingWeightsError
    from stvgr1_edge.model_source import resolve_model_source

    source, local_only = resolve_model_source(model)
    try:
        return AutoProcessor.from_pretrained(source, local_files_only=local_only), source
    except OSError as exc:
        if Path(source).exists():
            raise BadInputError(f"cannot load a processor from {source} ({str(exc).splitlines()[0]})") from None
        raise MissingWeightsError(
            f"model {model!r} is not available locally: download it with  hf download {model}"
        ) from None


def peft_settings(lora: LoraSettings, bf16: bool):
    """(peft LoraConfig or None, quantization config or None)."""
    if not lora.enabled:
        if lora.qlora:
            raise BadInputError("lora.qlora needs lora.enabled: true")
        return None, None
    from stvgr1_edge.errors import require

    peft = require("peft", "train", "LoRA fine-tuning")
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    quant = None
    if lora.qlora:
        from stvgr1_edge.grounding import nf4_quantization_config

        quant = nf4_quantization_config(torch.bfloat16 if bf16 else torch.float16)
    return config, quant


def build_grpo_config(run: GRPORunConfig, weights: list[float]) -> GRPOConfig:
    kwargs = dict(run.grpo)
    kwargs.setdefault("report_to", "none")
    kwargs.setdefault("logging_steps", 1)
    kwargs.setdefault("remove_unused_columns", False)
    kwargs["reward_weights"] = weights
    kwargs["output_dir"] = run.output_dir
    if not torch.cuda.is_available():
        for flag in ("bf16", "fp16"):
            if kwargs.get(flag):
                logger.warning("%s requested but CUDA is not available: training in fp32 on CPU", flag)
                kwargs[flag] = False
        kwargs.setdefault("use_cpu", True)
    model_init = dict(kwargs.pop("model_init_kwargs", None) or {})
    model_init.setdefault("dtype", "bfloat16" if kwargs.get("bf16") else "float32")
    if not torch.cuda.is_available():
        model_init["dtype"] = "float32"
    kwargs["model_init_kwargs"] = model_init
    try:
        return GRPOConfig(**kwargs)
    except TypeError as exc:
        raise BadInputError(f"grpo settings: {exc}") from None
    except ValueError as exc:
        raise BadInputError(f"grpo settings: {exc}") from None


def resolve_checkpoint(run: GRPORunConfig) -> str | bool | None:
    if run.resume_from_checkpoint in (None, "", False):
        return None
    if run.resume_from_checkpoint in ("latest", True):
        return True
    path = Path(str(run.resume_from_checkpoint))
    if not path.is_dir():
        raise BadInputError(f"checkpoint folder not found: {path}")
    return str(path)


def build_grpo_trainer(run: GRPORunConfig, callbacks: list | None = None) -> VideoGRPOTrainer:
    """Processor, cached dataset, rewards, ``GRPOConfig``, adapters → a ready :class:`VideoGRPOTrainer`."""
    from .cache import load_cached_dataset

    if not run.data:
        raise BadInputError("no training data: pass --data CACHE (a folder written by `stvg-edge train prepare`)")
    processor, source = load_processor(run.model)
    dataset = load_cached_dataset(run.data, ClipProcessor(processor).constants())
    funcs, weights = build_reward_funcs(run.rewards)
    args = build_grpo_config(run, weights)
    peft_config, quant = peft_settings(run.lora, bool(args.bf16))
    kwargs: dict[str, Any] = {}
    if quant is not None:
        kwargs["quantization_config"] = quant
    logger.info("GRPO on %d samples from %s, model %s -> %s", len(dataset), run.data, source, run.output_dir)
    return VideoGRPOTrainer(
        model=source,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
        answer_template=run.answer_template,
        **kwargs,
    )


def run_grpo(run: GRPORunConfig, callbacks: list | None = None) -> VideoGRPOTrainer:
    """Train (resuming when asked), then save the final model and processor to ``output_dir``."""
    trainer = build_grpo_trainer(run, callbacks)
    trainer.train(resume_from_checkpoint=resolve_checkpoint(run))
    trainer.save_model(run.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(run.output_dir)
    return trainer
