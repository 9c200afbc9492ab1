"""Stage 0b of the nano recipe: teach the language model to match the query with an object inventory (text only).

    python -m stvgr1_edge_train.recipes.nano.pretrain_text MODEL_DIR OUT_DIR [--steps N]

With ``describe_objects`` the SFT answer first lists what each marked object is ("Object 1: small red square. …"),
restates the query, then names the ID. After SFT on the video alone the inventory read the clips (colours,
sizes, object counts mostly right) but the 4-layer LM neither copied the query nor picked the inventory line it
describes: the ID stayed at chance. Both are text skills, and text costs nothing to make. So before SFT the LM is
trained on the answer's reasoning alone, without the video: the prompt (the real STVG-R1 text with a synthetic
query), the gold inventory given as context, and the loss on the rest of the answer — the restated query and the
ID — but not on the inventory (there is no video to read it from) nor on the times (likewise).

Episodes are drawn with ``stvgr1_edge.synth``'s own rules for attributes, distractors, phrases and query templates,
so the words and their statistics are the clips' (generating a real clip costs seconds; an episode microseconds).
IDs are 1..N as the tracker numbers tracks; a few inventory lines are "unclear", as tracker-only tracks are in the
training cache. The vision tower is not touched.

With ``check_attributes`` (the default) each word of a line carries a check tag ("Object 2: large+ pink+ circle+,
the target."; ``stvgr1_edge_train.sft.checked_label``). With one check at the line's end, the LM marked
lines by their shape alone, the word right before the check (text-only probe, 256 episodes: no line with the wrong
shape marked, 7-21% of those with the right shape and a wrong colour or size, 47-57% of the fully matching ones);
with a tag after every word each decision is about the word just written, and the last tag was right on all 517
lines of 128 probe episodes.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

logger = logging.getLogger("stvgr1_edge_train.recipes.nano.pretrain_text")

IGNORE = -100
"""Label of tokens the loss skips."""
REPORT = "pretrain_text.json"
"""The stage's report in its output folder (config, validation history, final scores)."""


@dataclass(frozen=True)
class TextPretrainConfig:
    """The text stage: synthetic episodes, the language model's reasoning on them (see the module doc)."""

    steps: int = 2000
    batch: int = 16
    """Episodes per step (2,000 x 16: 50 min on one shared CPU thread)."""
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    """Linear warm-up, then cosine decay to 10% of ``learning_rate``."""
    weight_decay: float = 0.01
    unclear_prob: float = 0.1
    """Chance of one extra "unclear" inventory line (a track the cache could not match to an object)."""
    seed: int = 20_000
    """Root of the episodes (disjoint from every clip seed of the recipe)."""
    val_episodes: int = 256
    eval_every: int = 250
    line_end_weight: float = 5.0
    """Loss weight of the tokens right after an unsupervised span: with ``mark_target``, each inventory line's end
    (", the target." or ".") or, with ``check_attributes``, each check tag: the line check itself. Its few tokens
    are outnumbered by the restated query's and the template's, which the LM learns first."""
    check_attributes: bool = True
    """With ``mark_target``: a check tag after each word of each line (``stvgr1_edge_train.sft.target_answer``); the
    tags are labelled, the words not."""
    mark_target: bool = True
    """The answer of ``stvgr1_edge_train.sft.target_answer(..., mark_target=True)`` (the query first, the target's
    line marked), as SFT then uses (``sft.yaml``); False: the plain describe-objects answer."""


# --- episodes ----------------------------------------------------------------------------------------
def text_episode(rng: np.random.Generator, config: TextPretrainConfig = TextPretrainConfig()) -> dict:
    """One synthetic grounding episode without pixels: ``query``, ``valid_ids``, ``object_labels`` ("size colour
    shape", "" when unclear), ``gt_id``, ``gt_start_s``, ``gt_end_s`` (random: there is no video to time)."""
    # synth's private planning helpers, on purpose: the episodes must follow the clips' rules exactly, and
    # generate_clip cannot be refactored around them without changing every recipe seed's clips
    from stvgr1_edge import synth

    cfg = synth.SynthConfig()
    num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    event = synth._pick(rng, synth.EVENTS)
    target = synth._pick_target_attributes(rng, event)
    attrs = [target] + [synth._pick_distractor_attributes(rng, cfg, target) for _ in range(num_objects - 1)]
    objects = [SimpleNamespace(colour=c, shape=s, size=z) for c, s, z in attrs]
    order = rng.permutation(num_objects)  # the target's ID tells nothing, as in the clips
    phrase = synth._attribute_phrase(objects[0], objects, cfg, rng)
    new_colour = synth._new_colour(rng, target[0]) if event == "changes_colour" else None
    query = synth._query(phrase, synth.ObjectEvent(event, 0, 0, new_colour), rng)
    labels = [f"{objects[i].size} {objects[i].colour} {objects[i].shape}" for i in order]
    gt_index = int(np.flatnonzero(order == 0)[0])
    if rng.random() < config.unclear_prob:
        at = int(rng.integers(len(labels) + 1))
        labels.insert(at, "")
        gt_index += at <= gt_index
    start = float(rng.uniform(0.0, 4.0))
    return {
        "query": query,
        "valid_ids": list(range(1, len(labels) + 1)),
        "object_labels": labels,
        "gt_id": gt_index + 1,
        "gt_start_s": round(start, 1),
        "gt_end_s": round(start + rng.uniform(0.5, 2.0), 1),
    }


class TextEpisodeEncoder:
    """Episode → ``(input_ids, labels)``: the grounder's chat layout without the video, then the answer of
    :func:`stvgr1_edge_train.sft.target_answer`. Not labelled: what each inventory line says an object is (there is no
    video to read it from), the word after the last line (how many lines there are is the video's too) and the times."""

    def __init__(self, processor, mark_target: bool = True, check_attributes: bool = False) -> None:
        from stvgr1_edge.grounding import GroundingInputs

        self.check_attributes = check_attributes
        self.inputs = GroundingInputs(processor)
        self.tokenizer = processor.tokenizer
        self.mark_target = mark_target
        token = processor.video_token
        self.video_block = f"<|vision_start|>{token}<|vision_end|>"

    def prompt_text(self, query: str) -> str:
        """The grounder's chat text for ``query`` (:meth:`GroundingInputs.chat_text`) without the video block."""
        from stvgr1_edge.prompt import grounding_prompt

        text = self.inputs.chat_text(grounding_prompt(query))
        if self.video_block not in text:
            raise ValueError(f"the chat template does not place the video as {self.video_block!r}")
        return text.replace(self.video_block, "")

    def __call__(self, episode: dict) -> tuple[list[int], list[int]]:
        from stvgr1_edge_train.sft import check_tag_offsets, line_spans, target_answer

        objects = tuple(zip(episode["valid_ids"], episode["object_labels"]))
        answer = target_answer(
            episode["gt_id"],
            episode["gt_start_s"],
            episode["gt_end_s"],
            episode["query"],
            objects,
            self.mark_target,
            self.check_attributes,
        )
        answer += "<|im_end|>"
        spans = line_spans(answer, episode["valid_ids"])
        hidden = []  # each line but its check tags
        for start, end in spans:
            tags = check_tag_offsets(answer, (start, end))
            hidden += [(a, b) for a, b in zip([start] + [t + 1 for t in tags], tags + [end]) if a < b]
        after = answer.index(". ", spans[-1][1]) + 1  # the line's end, then the next line or the closing sentence
        hidden.append((after, after + 2))
        hidden += [m.span() for m in re.finditer(r"\d+\.\d\d", answer)]
        prompt_ids = self.tokenizer(self.prompt_text(episode["query"]), add_special_tokens=False)["input_ids"]
        encoded = self.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        labels = [
            IGNORE if any(a < hi and b > lo for lo, hi in hidden) else t
            for t, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])
        ]
        return prompt_ids + encoded["input_ids"], [IGNORE] * len(prompt_ids) + labels


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Encoded episodes → a right-padded batch (``stvgr1_edge_train.sft.pad_right``)."""
    from stvgr1_edge_train.sft import pad_right

    return pad_right([ids for ids, _ in pairs], [lab for _, lab in pairs], pad_id)


# --- training ----------------------------------------------------------------------------------------
def _id_positions(labels: torch.Tensor, tokenizer) -> torch.Tensor:
    """Per row, the position of the first supervised digit: the reasoning's ``is object ID "k"`` (queries have no
    digits and the times are not supervised)."""
    digits = torch.tensor([tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)])
    is_digit = torch.isin(labels, digits)
    if not is_digit.any(dim=1).all():
        raise ValueError("no ID in a labelled answer")
    return is_digit.int().argmax(dim=1)


def after_unsupervised(labels: torch.Tensor) -> torch.Tensor:
    """Mask of the supervised tokens right after an unsupervised one, past each row's first supervised token (the
    prompt is unsupervised too): with ``mark_target``, the inventory lines' ends."""
    keep = labels != IGNORE
    after = keep & ~torch.nn.functional.pad(keep, (1, 0))[:, :-1]
    first = keep.int().argmax(dim=1, keepdim=True)
    return after & (torch.arange(labels.shape[1]) > first)


def line_end_weights(labels: torch.Tensor, line_end_weight: float) -> torch.Tensor:
    """Per-token loss weights: 1 on the supervised tokens, ``line_end_weight`` on those of
    :func:`after_unsupervised`."""
    weights = (labels != IGNORE).float()
    weights[after_unsupervised(labels)] = line_end_weight
    return weights


def evaluate_text(model, batches, tokenizer) -> dict[str, float]:
    """Teacher-forced scores: ``id_acc`` (the reasoning's ID token, given the gold reasoning before it),
    ``token_acc`` (all supervised tokens), ``reasoning_acc`` (rows whose every supervised token before the ID is
    right: the restated query and, with ``mark_target``, each line's end), ``line_end_acc`` (rows whose every
    supervised token right after an unsupervised one is right: with ``mark_target``, whether each line is the
    target)."""
    id_hits = tok_hits = tok_total = reasoning_hits = line_end_hits = rows = 0
    model.eval()
    with torch.no_grad():
        for batch in batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            pred, target = logits[:, :-1].argmax(-1), batch["labels"][:, 1:]
            keep = target != IGNORE
            tok_hits += int((pred[keep] == target[keep]).sum())
            tok_total += int(keep.sum())
            pos = _id_positions(target, tokenizer)
            id_hits += int((pred[torch.arange(len(pos)), pos] == target[torch.arange(len(pos)), pos]).sum())
            after_hidden = after_unsupervised(target)
            right = pred == target
            for i, p in enumerate(pos.tolist()):  # the supervised tokens before the ID
                span = keep[i, :p]
                reasoning_hits += bool(right[i, :p][span].all())
                first = int(keep[i].int().argmax())  # the answer's start follows the (unsupervised) prompt
                ends = after_hidden[i, first + 1 : p]
                line_end_hits += bool(right[i, first + 1 : p][ends].all())
            rows += len(pos)
    model.train()
    return {
        "id_acc": id_hits / rows,
        "token_acc": tok_hits / tok_total,
        "reasoning_acc": reasoning_hits / rows,
        "line_end_acc": line_end_hits / rows,
    }


def pretrain_text(
    model_dir: str | Path,
    out_dir: str | Path,
    config: TextPretrainConfig = TextPretrainConfig(),
    tower_dir: str | Path | None = None,
) -> dict:
    """Train ``model_dir``'s language model on text episodes; save the whole model (vision unchanged) and processor
    to ``out_dir`` after every evaluation. Returns the report (also ``out_dir/pretrain_text.json``).

    ``tower_dir``: take the vision tower (and merger) from that model instead. The text stage never reads or changes
    the tower, so this equals running the stage on ``tower_dir`` itself: it lets the two stages run side by side
    (``steps=0`` only swaps the tower in)."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge_train.sft import weighted_next_token_loss

    from .pretrain_vision import save_stage, warmup_cosine

    torch.manual_seed(config.seed)
    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32)
    if tower_dir is not None:
        tower = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tower_dir), dtype=torch.float32)
        model.model.visual.load_state_dict(tower.model.visual.state_dict())
        del tower
    model.model.visual.requires_grad_(False)
    model.train()
    encode = TextEpisodeEncoder(processor, config.mark_target, config.check_attributes)
    pad = processor.tokenizer.pad_token_id
    val_rng = np.random.default_rng([config.seed, 1])
    val_pairs = [encode(text_episode(val_rng, config)) for _ in range(config.val_episodes)]
    val_batches = [collate(val_pairs[i : i + config.batch], pad) for i in range(0, len(val_pairs), config.batch)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    rng = np.random.default_rng([config.seed, 0])
    history: list[dict] = []
    report: dict = {}
    start, running = time.perf_counter(), None
    for step in range(1, config.steps + 1):
        batch = collate([encode(text_episode(rng, config)) for _ in range(config.batch)], pad)
        labels = batch.pop("labels")
        loss = weighted_next_token_loss(model(**batch).logits, labels, line_end_weights(labels, config.line_end_weight))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            logger.info("step %d/%d  %.1f s  loss %.4f", step, config.steps, time.perf_counter() - start, running)
        if step % config.eval_every == 0 or step == config.steps:
            scores = evaluate_text(model, val_batches, processor.tokenizer)
            history.append(
                {"step": step, "seconds": round(time.perf_counter() - start, 1), "loss": round(running, 4), **scores}
            )
            logger.info("val at step %d: %s", step, {k: round(v, 3) for k, v in scores.items()})
            report = save_stage(model, processor, out_dir, config, history, REPORT)
    if config.steps == 0:
        report = save_stage(model, processor, out_dir, config, history, REPORT)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.recipes.nano.pretrain_text",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="Model folder to start from (the vision stage's output).")
    parser.add_argument("out", help="Output folder (whole model + processor).")
    parser.add_argument("--steps", type=int, default=TextPretrainConfig.steps)
    parser.add_argument("--batch", type=int, default=TextPretrainConfig.batch)
    parser.add_argument("--lr", type=float, default=TextPretrainConfig.learning_rate)
    parser.add_argument("--eval-every", type=int, default=TextPretrainConfig.eval_every)
    parser.add_argument(
        "--line-end-weight",
        type=float,
        default=TextPretrainConfig.line_end_weight,
        help="Loss weight of each inventory line's end (the line check).",
    )
    parser.add_argument(
        "--check-attributes",
        action=argparse.BooleanOptionalAction,
        default=TextPretrainConfig.check_attributes,
        help="A check tag after each word of each inventory line (stvgr1_edge_train.sft.target_answer).",
    )
    parser.add_argument(
        "--tower",
        default=None,
        help="Take the vision tower from this model folder (see pretrain_text); with --steps 0, only that.",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = TextPretrainConfig(
        steps=args.steps,
        batch=args.batch,
        learning_rate=args.lr,
        eval_every=args.eval_every,
        line_end_weight=args.line_end_weight,
        check_attributes=args.check_attributes,
    )
    report = pretrain_text(args.model, args.out, config, args.tower)
    print(json.dumps(report["final"], indent=1))


if __name__ == "__main__":
    main()
