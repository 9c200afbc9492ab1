"""A nano recipe stage: teach the language model to see *when* an object does its event (dense labels on its
video tokens).

    python -m stvgr1_edge_train.recipes.nano.pretrain_event_lm MODEL_DIR OUT_DIR [--clips 800] [--device cuda]

Why: the time answer needs, at some token, "the named object is doing its event now". The tower sees one 2-frame
tube per token (two frames 0.5 s apart at 2 fps) and nothing of the others; the language model sees all the tubes,
so it can compare an object's tokens across them, but answer-level training never asked it to.

What: the tower stays frozen (``train_tower`` trains it too); the language model's layers and one linear head on every
object token's last-layer state learn "this object is doing its event in this tube" (binary cross-entropy, the rare
positives weighted by negatives / positives up to ``max_pos_weight``, over the clip or, with ``balance_per_tube``,
within each tube). One fresh labelled clip a step (:func:`pretrain_vision.labelled_clip`, root seed
``EventLMConfig.seed``) with the STVG-R1 prompt of its own query, under the trained M-RoPE rule; held-out clips
(:data:`probe_lm.PROBE_SEED`) are scored every ``eval_every`` clips: balanced accuracy over the clip, balanced
accuracy within each tube (:func:`probe_lm.tube_balanced_accuracy`), recall and false-positive rate of the head.

Events sit mid-clip, and the language model knows each token's time after its second layer, so balanced accuracy over
the clip rewards "the middle tubes". From a stream-stage model (2 CPU cores, ``--clips 600 --eval-every 150``, 3
minutes): 0.74-0.75 over the clip after 150-600 clips but 0.50-0.52 within tubes -- time alone. With
``--balance-per-tube`` time has nothing to win: 0.51-0.54 within tubes (LM only), 0.53-0.58 with ``--train-tower``
(``--clips 900``), 0.54-0.59 from a tower trained with :mod:`pretrain_vision`'s change heads. More clips do not close
it: from the stream stage's last model (``stream_sft``'s docstring), ``--clips 6000 --eval-every 750 --train-tower
--balance-per-tube`` scores 0.571 / 0.530 / 0.578 / 0.566 within tubes at its first four evaluations (750 to 3,000
clips, 27 minutes). The tower, not the language model, is what does not see the events (``probe_events``). The head is
thrown away; the model (language model changed, tower only with ``train_tower``) and ``pretrain_event_lm.json`` are
saved after every evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger("stvgr1_edge_train.recipes.nano.pretrain_event_lm")


@dataclass(frozen=True)
class EventLMConfig:
    clips: int = 800
    """Training clips (one optimizer step each)."""
    learning_rate: float = 3e-4
    max_pos_weight: float = 20.0
    """Cap of the positives' loss weight (negatives / positives of the clip)."""
    balance_per_tube: bool = False
    """Weigh positives against negatives within each tube, not over the clip: events sit mid-clip, so with clip-wide
    weights "the middle tubes" alone scores well and the tube's time is all a model learns."""
    eval_clips: int = 40
    """Held-out clips scored at every evaluation (root seed :data:`probe_lm.PROBE_SEED`)."""
    eval_every: int = 100
    train_tower: bool = False
    """Train the vision tower too (its features are what the head reads through the language model)."""
    seed: int = 30_000
    """Root seed of the training clips (training 0/1, vision stage 10000-10003, validation 4000, held-out 5000, probes
    20000)."""


def object_token_logits(model, head, video, input_ids, labels, video_token_id: int, device: str):
    """The head's logit on every object token's last-layer state, whether that object is doing its event, and the
    token's tube."""
    from .probe_lm import token_tubes, video_token_hidden_states

    states = video_token_hidden_states(model, input_ids, video, video_token_id, device=device)[-1]
    on_object = (labels["shape"] > 0).to(device)
    tube = torch.from_numpy(token_tubes(video, model.config.vision_config.spatial_merge_size)).to(device)
    return head(states).squeeze(-1)[on_object], (labels["event"] > 0).to(device)[on_object], tube[on_object]


def balanced_weights(active: torch.Tensor, groups: torch.Tensor, max_pos_weight: float) -> torch.Tensor:
    """Per-token loss weights: negatives 1, positives negatives / positives of their group (capped)."""
    weight = torch.ones(len(active), device=active.device)
    for g in groups.unique():
        pos, neg = active & (groups == g), ~active & (groups == g)
        weight[pos] = min(float(neg.sum()) / max(float(pos.sum()), 1.0), max_pos_weight)
    return weight


def pretrain_event_lm(
    model_dir: str | Path, out_dir: str | Path, config: EventLMConfig = EventLMConfig(), device="cpu"
):
    """Train ``model_dir``'s language model on the event labels (see the module doc); returns the report."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge_train.grpo import load_processor

    from .pretrain_vision import save_stage
    from .probe_lm import PROBE_SEED, PromptedLabelledClips, tube_balanced_accuracy

    torch.manual_seed(config.seed)
    processor, source = load_processor(str(model_dir))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.float32).to(device)
    model = use_trained_rope_index(model)
    model.model.visual.requires_grad_(config.train_tower)
    video_token_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    head = torch.nn.Linear(model.config.text_config.hidden_size, 1).to(device)
    params = [*model.model.language_model.parameters(), *head.parameters()]
    params += list(model.model.visual.parameters()) if config.train_tower else []
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)

    def evaluate(clips: PromptedLabelledClips) -> dict[str, float]:
        model.eval()
        predicted, truth, tubes = [], [], []
        with torch.no_grad():
            for i in range(config.eval_clips):
                video, labels, input_ids = clips(PROBE_SEED, i)
                logits, active, tube = object_token_logits(
                    model, head, video, input_ids, labels, video_token_id, device
                )
                predicted.append((logits > 0).cpu())
                truth.append(active.cpu())
                tubes.append(tube.cpu())
        model.train()
        p, t = torch.cat(predicted), torch.cat(truth)
        recall, false_pos = float(p[t].float().mean()), float(p[~t].float().mean())
        return {
            "event_balanced_acc": (recall + 1 - false_pos) / 2,
            "event_tube_balanced_acc": tube_balanced_accuracy(p.numpy(), t.numpy(), torch.cat(tubes).numpy()),
            "recall": recall,
            "false_positive_rate": false_pos,
        }

    history: list[dict] = []
    report: dict = {}
    running = None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nano-event-lm-") as tmp:
        clips = PromptedLabelledClips(processor, Path(tmp))
        model.train()
        for step in range(config.clips):
            video, labels, input_ids = clips(config.seed, step)
            logits, active, tube = object_token_logits(model, head, video, input_ids, labels, video_token_id, device)
            if len(active):
                groups = tube if config.balance_per_tube else torch.zeros_like(tube)
                weight = balanced_weights(active, groups, config.max_pos_weight)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, active.float(), weight=weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            if (step + 1) % config.eval_every == 0 or step + 1 == config.clips:
                scores = evaluate(clips)
                seconds = round(time.perf_counter() - start, 1)
                history.append({"step": step + 1, "seconds": seconds, "loss": running, **scores})
                logger.info("clip %d: %s", step + 1, {k: round(v, 3) for k, v in scores.items()})
                report = save_stage(model, processor, out_dir, config, history, report_name="pretrain_event_lm.json")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.recipes.nano.pretrain_event_lm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="Model folder to start from (e.g. the packaged nano model or an SFT output).")
    parser.add_argument("out", help="Output folder (whole model + processor).")
    parser.add_argument("--clips", type=int, default=EventLMConfig.clips)
    parser.add_argument("--lr", type=float, default=EventLMConfig.learning_rate)
    parser.add_argument("--eval-clips", type=int, default=EventLMConfig.eval_clips)
    parser.add_argument("--eval-every", type=int, default=EventLMConfig.eval_every)
    parser.add_argument("--train-tower", action="store_true", help="Train the vision tower too.")
    parser.add_argument(
        "--balance-per-tube", action="store_true", help="Weigh positives against negatives within each tube."
    )
    parser.add_argument("--seed", type=int, default=EventLMConfig.seed, help="Root seed of the training clips.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = EventLMConfig(
        clips=args.clips,
        learning_rate=args.lr,
        eval_clips=args.eval_clips,
        eval_every=args.eval_every,
        train_tower=args.train_tower,
        balance_per_tube=args.balance_per_tube,
        seed=args.seed,
    )
    report = pretrain_event_lm(args.model, args.out, config, device=args.device)
    print(json.dumps(report["final"], indent=1))


if __name__ == "__main__":
    main()
