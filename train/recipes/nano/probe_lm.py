"""Linear probes on a nano model's hidden states: where the model knows *when*, and where it sees the event.

    python -m stvgr1_edge_train.recipes.nano.probe_lm WORK/sft_t6 [--clips 150] [--out probes.json]

Fresh vision-stage clips (:func:`pretrain_vision.labelled_clip`, root seed 20000, never trained on) go through the
model with the STVG-R1 prompt of each clip's own query. Every video token's state after each layer (0: the tower's
merged output, 1..N: the LM's layers) is probed by ridge regression, fit on the first 60% of the clips and scored on
the rest:

- ``tube``: the token's 2-frame tube (accuracy; chance 1/6 for 12 frames). The tower has no temporal position, so
  anything above chance comes from the LM (M-RoPE, causal attention).
- ``event``: on object tokens only, whether that object is doing its event in that tube (balanced accuracy, with
  its recall and false-positive rate). The answer's time range can only be as good as this. Events sit mid-clip,
  so after the LM's first layer, which knows each token's time, the balanced accuracy over the clip mostly scores
  that time; ``event_tube_balanced_acc`` (balanced accuracy within each tube, averaged) is what the token sees.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PROBE_SEED = 20_000
"""Root seed of the probe clips (training uses 0/1 and 10000/10001, validation 4000, held-out 5000)."""


def video_token_hidden_states(model, input_ids, video, video_token_id: int, device=None):
    """(layers + 1, video tokens, hidden) tensor of one clip: the merged tower output, then each LM layer's output
    (with autograd, as the caller's mode says)."""
    import torch

    from stvgr1_edge_train.video_inputs import collate_videos, video_token_type_ids

    input_ids = input_ids.to(device) if device is not None else input_ids
    out = model(
        input_ids=input_ids,
        mm_token_type_ids=video_token_type_ids(input_ids, video_token_id),
        output_hidden_states=True,
        **collate_videos([video], device=device),
    )
    return torch.stack(out.hidden_states)[:, 0, input_ids[0] == video_token_id]


def video_token_states(model, input_ids, video, video_token_id: int) -> np.ndarray:
    """:func:`video_token_hidden_states` as a float numpy array, without autograd."""
    import torch

    with torch.no_grad():
        return video_token_hidden_states(model, input_ids, video, video_token_id).float().numpy()


class PromptedLabelledClips:
    """``(VideoTensors, labels, input_ids)`` of the ``i``-th clip of a root seed: a fresh vision-stage clip
    (:func:`pretrain_vision.labelled_clip`; by default 224x168, 6 s) with the STVG-R1 prompt of its own query."""

    def __init__(self, processor, workdir: Path, vision_config=None) -> None:
        from stvgr1_edge_train.video_inputs import ClipProcessor

        from .pretrain_vision import VisionPretrainConfig

        self.processor, self.workdir = processor, workdir
        self.clip_processor = ClipProcessor(processor)
        self.vision_config = vision_config or VisionPretrainConfig()

    def __call__(self, root_seed: int, i: int):
        from stvgr1_edge.prompt import grounding_prompt
        from stvgr1_edge.synth import SynthConfig, generate_clip

        from .pretrain_vision import clip_seed, labelled_clip

        config = self.vision_config
        seed = clip_seed(root_seed, i)
        video_processor = self.processor.video_processor
        ((video, labels),) = labelled_clip(seed, video_processor, config, np.random.default_rng(seed), self.workdir)
        query = generate_clip(seed, SynthConfig(width=config.width, height=config.height, seconds=config.seconds)).query
        tokens = video.num_visual_tokens(video_processor.merge_size)
        return video, labels, self.clip_processor.prepare_text(grounding_prompt(query), tokens)["input_ids"]


def ridge_probe(
    features: np.ndarray, labels: np.ndarray, train: np.ndarray, l2: float = 10.0, balanced: bool = False
) -> np.ndarray:
    """Predicted class of every row: one-vs-rest ridge regression on the ``train`` rows (with ``balanced``, each
    class's rows weigh alike, so a rare class is not simply never predicted)."""
    x = np.c_[features, np.ones(len(features))]
    classes = np.unique(labels[train])
    targets = (labels[:, None] == classes[None]).astype(np.float64)
    weight = np.ones(len(features))
    if balanced:
        counts = {c: (labels[train] == c).sum() for c in classes}
        weight = np.array([train.sum() / (len(classes) * counts.get(c, 1)) for c in labels])
    xt, wt = x[train], weight[train][:, None]
    coef = np.linalg.solve(xt.T @ (xt * wt) + l2 * np.eye(x.shape[1]), xt.T @ (targets[train] * wt))
    return classes[(x @ coef).argmax(1)]


def token_tubes(video, merge_size: int) -> np.ndarray:
    """The 2-frame tube of each of a clip's video tokens (tokens run tube by tube, row by row)."""
    tokens = video.num_visual_tokens(merge_size)
    return np.arange(tokens) // (tokens // int(video.video_grid_thw[0, 0]))


def tube_balanced_accuracy(predicted: np.ndarray, truth: np.ndarray, tube: np.ndarray) -> float:
    """Balanced accuracy within each tube, averaged over the tubes that hold both classes (weighted by their tokens).
    Events sit mid-clip, so "positive in the middle tubes" scores well on balanced accuracy over the clip; any rule
    that only looks at the time scores 0.5 here."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    scores, weights = [], []
    for t in np.unique(tube):
        p, y = predicted[tube == t], truth[tube == t]
        if y.any() and (~y).any():
            scores.append((p[y].mean() + 1 - p[~y].mean()) / 2)
            weights.append(len(y))
    return float(np.average(scores, weights=weights)) if scores else float("nan")


def probe_model(model_dir: str, clips: int = 150, seed: int = PROBE_SEED) -> dict:
    """Per layer: ``tube_acc``, ``event_balanced_acc``, ``event_tube_balanced_acc``, ``event_recall``,
    ``event_false_positive_rate``."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge_train.grpo import load_processor

    processor, source = load_processor(model_dir)
    model = use_trained_rope_index(
        Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.float32).eval()
    )
    video_token_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    states, tubes, events, objects, clip_of = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="nano-probe-") as tmp:
        prompted_clip = PromptedLabelledClips(processor, Path(tmp))
        for i in range(clips):
            video, labels, input_ids = prompted_clip(seed, i)
            s = video_token_states(model, input_ids, video, video_token_id)
            states.append(s)
            tubes.append(token_tubes(video, processor.video_processor.merge_size))
            events.append(labels["event"].numpy())
            objects.append(labels["shape"].numpy() > 0)
            clip_of.append(np.full(s.shape[1], i))
            logger.info("probe clip %d/%d", i + 1, clips)
    x = np.concatenate(states, 1)
    tube, active, on_object = np.concatenate(tubes), np.concatenate(events) > 0, np.concatenate(objects)
    train = np.concatenate(clip_of) < int(0.6 * clips)
    layers = []
    for layer in range(x.shape[0]):
        tube_pred = ridge_probe(x[layer], tube, train)
        event_pred = ridge_probe(x[layer][on_object], active[on_object], train[on_object], balanced=True)
        test, truth = ~train[on_object], active[on_object]
        recall = float(event_pred[test & truth].mean())
        false_pos = float(event_pred[test & ~truth].mean())
        layers.append(
            {
                "layer": layer,
                "tube_acc": float((tube_pred == tube)[~train].mean()),
                "event_balanced_acc": (recall + 1 - false_pos) / 2,
                "event_tube_balanced_acc": tube_balanced_accuracy(event_pred[test], truth[test], tube[on_object][test]),
                "event_recall": recall,
                "event_false_positive_rate": false_pos,
            }
        )
    return {
        "model": model_dir,
        "clips": clips,
        "seed": seed,
        "test_clips": clips - int(0.6 * clips),
        "object_tokens": int(on_object.sum()),
        "event_tokens": int((on_object & active).sum()),
        "layers": layers,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="Model folder.")
    parser.add_argument("--clips", type=int, default=150, help="Probe clips (60%% fit, 40%% scored).")
    parser.add_argument("--out", default=None, help="Also write the scores to this JSON file.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    scores = probe_model(args.model, args.clips)
    for row in scores["layers"]:
        print(
            f"layer {row['layer']}: tube {row['tube_acc']:.3f}  event balanced {row['event_balanced_acc']:.3f} "
            f"(within tubes {row['event_tube_balanced_acc']:.3f}, recall {row['event_recall']:.3f}, "
            f"false positives {row['event_false_positive_rate']:.3f})"
        )
    if args.out:
        from stvgr1_edge.errors import write_json_atomic

        write_json_atomic(args.out, scores, indent=1)


if __name__ == "__main__":
    main()
