"""Optional supervised warm-start on the same cache, for models that cannot produce the answer format yet.

The target is teacher-forced: ``<think>…</think><answer>Target ID: k, Time range: a to b</answer><|im_end|>``
(GT ID and time range of the sample); the loss covers the answer tokens only. Same inputs as GRPO (the grounder's
prompt layout, the cached video tensors), plain ``transformers.Trainer`` (checkpoints, resume, accelerate and
DeepSpeed as usual). STVG-R1 itself used no SFT; this is for small models trained from scratch (e.g. the nano model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from stvgr1_edge.errors import BadInputError
from stvgr1_edge.prompt import normalize_query

from .cache import read_video_tensors
from .checkpoint import ExactResumeMixin
from .video_inputs import ClipProcessor, collate_videos, video_token_type_ids

logger = logging.getLogger(__name__)


def object_line(object_id: int, label: str) -> str:
    """One inventory line of the describe-objects reasoning, without its end: ``Object 3: small red star``."""
    return f"Object {object_id}: {label or 'unclear'}"


def pad_right(sequences: Sequence[Sequence[int]], label_rows: Sequence[Sequence[int]],
              pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` (right-padded with ``pad_id``), ``labels`` (-100 on padding) and ``attention_mask``."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), length), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, (seq, lab) in enumerate(zip(sequences, label_rows)):
        input_ids[i, :len(seq)] = torch.tensor(seq)
        labels[i, :len(lab)] = torch.tensor(lab)
        attention_mask[i, :len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def target_answer(gt_id: int, start_s: float, end_s: float, query: str | None = None,
                  objects: Sequence[tuple[int, str]] = (), mark_target: bool = False) -> str:
    """The teacher-forced completion for one sample (the checkpoint's answer format, `STVG-R1.md` §5).

    With ``query``, the reasoning restates the event and names its object ID before the time range, so the ID is
    predicted right after the description it depends on. With ``objects`` ((ID, "what it is") pairs, e.g. from
    synthetic annotations) it first says what each marked object is: one supervised look at a marker per object
    instead of one per sample, after which finding the target is matching words (meant for small models trained
    from scratch, which otherwise get one ID token of signal per sample). With ``mark_target`` too, the query comes
    first and the target's line ends ", the target." (the others "."): each line is checked against the query as it
    is written, and the ID is then read off the marked line, instead of one match over all lines at the ID token.
    The ``<answer>`` part is the same in every case.
    """
    answer = f"<answer>Target ID: {gt_id}, Time range: {start_s:.2f} to {end_s:.2f}</answer>"
    if query is None:
        return (f"<think>The event occurs from {start_s:.2f} to {end_s:.2f} seconds; object ID \"{gt_id}\" "
                f"is the target.</think> {answer}")
    timing = f"the event occurs from {start_s:.2f} to {end_s:.2f} seconds.</think> {answer}"
    if mark_target and objects:
        lines = "".join(f"{object_line(i, label)}{', the target' if i == gt_id else ''}. " for i, label in objects)
        return f"<think>\"{normalize_query(query)}\". {lines}The target is object ID \"{gt_id}\"; {timing}"
    inventory = "".join(f"{object_line(i, label)}. " for i, label in objects)
    return f"<think>{inventory}\"{normalize_query(query)}\" is object ID \"{gt_id}\"; {timing}"


class FrozenVisionFeatures:
    """Each cached video's merged visual tokens, computed once by a frozen vision tower and reused every epoch.

    With ``freeze_vision`` the tower's output for a video never changes, so after the first epoch SFT only runs
    the language model (the tower's forward is most of a step for a small model on long clips). The features are
    fed as ``mm_encoder_outputs``, the model's own way of taking pre-encoded video."""

    def __init__(self, model) -> None:
        self.model = model
        self._features: dict[str, torch.Tensor] = {}

    def __call__(self, video_file: str, video) -> torch.Tensor:
        features = self._features.get(video_file)
        if features is None:
            device = next(self.model.parameters()).device
            with torch.no_grad():
                out = self.model.model.get_video_features(video.pixel_values_videos.to(device),
                                                          video.video_grid_thw.to(device), return_dict=True)
            features = self._features[video_file] = out.pooler_output[0].detach().cpu()
        return features


class SFTCollator:
    """Rows → ``input_ids`` (prompt + answer, right-padded), ``labels`` (answer only), video tensors (or, with
    ``vision_features``, the frozen tower's merged tokens as ``mm_encoder_outputs``)."""

    def __init__(self, processor, restate_query: bool = False, describe_objects: bool = False,
                 vision_features: FrozenVisionFeatures | None = None, mark_target: bool = False) -> None:
        self.vision_features = vision_features
        self.restate_query = restate_query or describe_objects or mark_target
        self.describe_objects = describe_objects or mark_target
        self.mark_target = mark_target
        self.clip_processor = ClipProcessor(processor)
        self.tokenizer = processor.tokenizer
        self.merge_size = int(processor.video_processor.merge_size)
        self.video_token_id = self.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        self.end_token = "<|im_end|>"

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        videos = [read_video_tensors(r["video_file"]) for r in rows]
        sequences, label_rows = [], []
        for row, video in zip(rows, videos):
            prompt = self.clip_processor.prepare_text(row["prompt"], video.num_visual_tokens(self.merge_size))
            prompt_ids = prompt["input_ids"][0].tolist()
            objects = ()
            if self.describe_objects and any(row.get("object_labels") or ()):
                objects = tuple(zip(row["valid_ids"], row["object_labels"]))
            answer = target_answer(int(row["gt_id"]), float(row["gt_start_s"]), float(row["gt_end_s"]),
                                   row.get("query") if self.restate_query else None, objects, self.mark_target)
            answer_ids = self.tokenizer(answer + self.end_token, add_special_tokens=False)["input_ids"]
            sequences.append(prompt_ids + answer_ids)
            label_rows.append([-100] * len(prompt_ids) + answer_ids)
        batch = pad_right(sequences, label_rows, self.tokenizer.pad_token_id)
        batch["mm_token_type_ids"] = video_token_type_ids(batch["input_ids"], self.video_token_id)
        batch.update(collate_videos(videos))
        if self.vision_features is not None:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            del batch["pixel_values_videos"]
            features = tuple(self.vision_features(r["video_file"], v) for r, v in zip(rows, videos))
            batch["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=features)}
        return batch


@dataclass(frozen=True)
class SFTRunConfig:
    """An SFT warm-start run."""

    data: str | None = None
    """Training cache folder (`stvg-edge train prepare`)."""
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    """Hub id or folder of the model."""
    output_dir: str = "runs/sft_stvg_r1"
    resume_from_checkpoint: str | None = None
    """A checkpoint folder or "latest"."""
    num_train_epochs: float = 1.0
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run ``num_train_epochs``)."""
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "linear"
    """``transformers`` scheduler name ("linear", "cosine", "constant_with_warmup", ...)."""
    warmup_steps: int = 0
    """Linear warm-up steps before the schedule."""
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    bf16: bool = True
    """bf16 on CUDA (ignored on CPU)."""
    gradient_checkpointing: bool = True
    save_steps: int = 500
    logging_steps: int = 1
    seed: int = 42
    restate_query: bool = False
    """Teach a reasoning that restates the query before naming the ID (see :func:`target_answer`)."""
    describe_objects: bool = False
    """Teach a reasoning that first says what each marked object is, where the cache knows (synthetic clips);
    implies ``restate_query``."""
    mark_target: bool = False
    """Like ``describe_objects``, with the query first and the target's line marked (see :func:`target_answer`);
    implies ``describe_objects``."""
    freeze_vision: bool = False
    """Train the language model only; the vision tower and its merger keep their weights (for a vision tower
    trained first, e.g. by the nano recipe's dense vision stage)."""


def run_sft(run: SFTRunConfig):
    """Fine-tune on teacher-forced answers; saves the model and processor to ``output_dir``."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Trainer, TrainingArguments

    from .cache import load_cached_dataset
    from .grpo import load_processor

    if not run.data:
        raise BadInputError("no training data: pass --data CACHE (a folder written by `stvg-edge train prepare`)")
    processor, source = load_processor(run.model)
    dataset = load_cached_dataset(run.data, ClipProcessor(processor).constants())
    cuda = torch.cuda.is_available()
    bf16 = bool(run.bf16 and cuda)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.bfloat16 if bf16 else torch.float32)
    if run.freeze_vision:
        model.model.visual.requires_grad_(False)
    args = TrainingArguments(
        output_dir=run.output_dir, num_train_epochs=run.num_train_epochs, max_steps=run.max_steps,
        learning_rate=run.learning_rate, lr_scheduler_type=run.lr_scheduler_type, warmup_steps=run.warmup_steps,
        per_device_train_batch_size=run.per_device_train_batch_size,
        gradient_accumulation_steps=run.gradient_accumulation_steps, bf16=bf16,
        gradient_checkpointing=run.gradient_checkpointing, save_steps=run.save_steps, logging_steps=run.logging_steps,
        seed=run.seed, report_to="none", remove_unused_columns=False, use_cpu=not cuda)
    trainer_cls = type("SFTTrainer", (ExactResumeMixin, Trainer), {})
    # processing_class: every checkpoint-N/ gets the processor files too, so it loads (and evaluates) on its own
    features = FrozenVisionFeatures(model) if run.freeze_vision else None
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=processor,
                          data_collator=SFTCollator(processor, run.restate_query, run.describe_objects, features,
                                                    run.mark_target))
    resume = run.resume_from_checkpoint
    if resume not in (None, "", "latest") and not Path(resume).is_dir():
        raise BadInputError(f"checkpoint folder not found: {resume}")
    logger.info("SFT on %d samples from %s, model %s -> %s", len(dataset), run.data, source, run.output_dir)
    trainer.train(resume_from_checkpoint=True if resume == "latest" else resume)
    trainer.save_model(run.output_dir)
    processor.save_pretrained(run.output_dir)
    return trainer
