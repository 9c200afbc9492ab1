"""How visible each event is: AUC of "this object is doing its event in this tube" against objects without an event,
per event class, from the objects' true drawing state (what the pixels can show) or from a model's video tokens.

    python -m stvgr1_edge_train.recipes.nano.probe_events truth [--width 224 --height 168 --seconds 6]
    python -m stvgr1_edge_train.recipes.nano.probe_events MODEL_DIR [--layers 0,2,4] [--clips 100] \
        [--width 308 --height 252 --seconds 8]

``truth``: every object's centre, radius, rotation (folded by its shape's symmetry) and colour at the §4-sampled
frames of fresh synthetic clips; an MLP on one tube's two frames ("tube") and one that also sees the neighbouring
tubes and the object's first look ("context") is fit on 600 clips (root seed 71) and scored on 200 (root 72). At
224x168, 6 s (5 minutes on 2 CPU cores): tube 0.911 (``jumps`` 0.69, ``shakes`` 0.83, the others 0.92-0.99), context
0.988 (``jumps`` 0.95, the others 0.97-1.00).

A model: ridge read-outs (fit on ``0.6 * clips`` vision-stage clips of root seed 33000, scored on 40 of
:data:`probe_lm.PROBE_SEED`) of the tower output (layer 0) and the language model's layers, on object tokens of the
middle tubes only: events sit mid-clip and the language model knows each token's time, so the first and last tubes
would let time stand in for the event. A stream-stage model (``--layers 0,2``, 2 minutes): tower 0.585, LM layer 2
0.659 -- far below what the drawing state shows (see :mod:`pretrain_vision`'s change heads). Single tokens are not
what holds it back: the packaged model's tower gives 0.591 per token, 0.593 with each object's tokens averaged per
tube (ridge and MLP alike), its last LM layer 0.601 / 0.622 / 0.607 (``--layers 0,-1``, 5 minutes).

Nor is comparing tubes: an MLP on each object's averaged tokens in its tube, the tubes around it and its first tube
(``objects context``, :func:`object_context`: what ``truth``'s context MLP sees, in the model's features) gains little.
At synth's default (``--layers 0,2 --width 308 --height 252 --seconds 8``; ``truth --width 320 --height 240 --seconds
8``: tube 0.920, context 0.984), the stream stage's last model (``stream_sft``'s docstring) scores with ``--clips 300``
(2 minutes) 0.635 / 0.659 per tube / in context at the tower and 0.649 / 0.717 after LM layer 2 (``blinks`` 0.96-0.99,
``stops`` 0.74-0.90, ``changes_colour`` 0.65-0.82, the other five 0.51-0.68; 0.604 / 0.647 and 0.613 / 0.681 with the
default 100). The features do not hold the objects' state that a comparison across tubes would need; the tower is where
the events are lost.

How much of the state they hold: ``objects state`` regresses each object's true tube state (centre, radius, folded
turn, colour in both frames; :func:`true_tube_state`) on its pooled tokens (ridge, :func:`read_states`) and scores its
R^2 on the test clips; ``state context`` is the context MLP on those read states instead of the tokens (what the
events look like through the state the tokens hold). At synth's default (``--layers 0 --width 308 --height 252
--seconds 8 --clips 300``, 4 minutes), the packaged tower: R^2 radius 0.76, colour 0.93, turn and centre 0.00 (the
tower's tokens carry no absolute position), state context 0.623 against 0.709 from the tokens; trained on the state
(:mod:`pretrain_vision`'s ``--state-weight``, 1,200 steps): radius 0.88, colour 0.96, state context 0.650 against
0.723 (``grows`` 0.64, ``shrinks`` 0.63, ``changes_colour`` 0.80, ``stops`` 0.60). A size read to R^2 0.88 still
leaves a growth's first tubes inside the spread between objects, and no turn is read at all.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Chance that a positive scores above a negative (ties count half); NaN without both."""
    from scipy.stats import rankdata

    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    ranks = rankdata(np.r_[positive, negative])
    return float(
        (ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative))
    )


def class_aucs(score: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """``all`` (every event against no event) and one AUC per event name; ``label``: 0 no event, k the k-th event of
    :data:`stvgr1_edge.synth.EVENTS` (1-based), negative: left out."""
    from stvgr1_edge.synth import EVENTS

    out = {"all": auc(score[label > 0], score[label == 0])}
    out.update({name: auc(score[label == k], score[label == 0]) for k, name in enumerate(EVENTS, start=1)})
    return out


def _object_state(obj, frame: int, width: int, height: int) -> np.ndarray:
    from stvgr1_edge.synth_motion import SYMMETRY_DEG

    turn = np.deg2rad(obj.angle_deg[frame] * 360.0 / SYMMETRY_DEG.get(obj.shape, 360.0))
    return np.r_[
        obj.center[frame] / width, 10 * obj.radius[frame] / height, np.sin(turn), np.cos(turn), obj.rgb[frame] / 255.0
    ]


STATE_COLUMNS = {"centre": (0, 1), "radius": (2,), "turn": (3, 4), "colour": (5, 6, 7)}
"""Columns of :func:`_object_state` (its row is repeated for the tube's second frame, then their difference)."""


def true_tube_state(obj, a: int, b: int, width: int, height: int) -> np.ndarray:
    """One object's drawing state in a tube of frames ``a``, ``b``: its state in each and their difference."""
    sa, sb = _object_state(obj, a, width, height), _object_state(obj, b, width, height)
    return np.r_[sa, sb, sb - sa]


def true_tube_states(clip, sampled) -> dict[tuple[int, int], np.ndarray]:
    """``(tube, object ID) -> true_tube_state`` of a clip at its sampled frames, where the object is in both."""
    cfg, out = clip.config, {}
    for t, g in enumerate(range(0, len(sampled) - 1, 2)):
        a, b = int(sampled[g]), int(sampled[g + 1])
        for obj in clip.objects:
            if obj.present[a] and obj.present[b]:
                out[t, obj.object_id] = true_tube_state(obj, a, b, cfg.width, cfg.height)
    return out


def ridge_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, l2: float = 10.0) -> np.ndarray:
    """A ridge regression of every column of ``train_y`` on standardised ``train_x``, applied to ``test_x``."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    y_mean = train_y.mean(0)
    coef = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ (train_y - y_mean))
    return b @ coef + y_mean


def state_r2(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """R^2 of predicted tube states per :data:`STATE_COLUMNS` group (both frames; the difference left out)."""
    width = truth.shape[1] // 3
    out = {}
    for name, columns in STATE_COLUMNS.items():
        cols = [j * width + c for j in range(2) for c in columns]
        error = ((predicted[:, cols] - truth[:, cols]) ** 2).sum()
        spread = ((truth[:, cols] - truth[:, cols].mean(0)) ** 2).sum()
        out[name] = float(1 - error / spread) if spread > 0 else float("nan")
    return out


def true_state_rows(clip, sampled) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per (object, tube) with the object present in both frames: ``(label, tube features, context
    features)``. Label 0: the object has no event; k: its event (k-th of ``EVENTS``) is on in the tube; -1: its event
    is elsewhere. Tube features: the state in both frames and their difference; context: those of this tube, of the
    tubes before and after (zeros where absent) and the difference from the object's first tube."""
    from stvgr1_edge.synth import EVENTS

    cfg = clip.config
    pairs = [tuple(sampled[g : g + 2]) for g in range(0, len(sampled) - 1, 2)]
    labels, tube_rows, context_rows = [], [], []
    for obj in clip.objects:
        per_tube, shown = [], []
        for a, b in pairs:
            per_tube.append(true_tube_state(obj, a, b, cfg.width, cfg.height))
            shown.append(bool(obj.present[a] and obj.present[b]))
        if not any(shown):
            continue
        states = {t: row for t, row in enumerate(per_tube) if shown[t]}
        for t, (a, b) in enumerate(pairs):
            if not shown[t]:
                continue
            event = obj.event
            if event is None:
                labels.append(0)
            else:
                on = event.start_frame <= b and a <= event.end_frame
                labels.append(EVENTS.index(event.name) + 1 if on else -1)
            tube_rows.append(per_tube[t])
            context_rows.append(object_context(states, t))
    return np.asarray(labels), np.asarray(tube_rows), np.asarray(context_rows)


def mlp_scores(train_x: np.ndarray, train_active: np.ndarray, test_x: np.ndarray, steps: int = 3000) -> np.ndarray:
    """Logits of a 2-hidden-layer MLP fit (balanced binary cross-entropy) on standardised ``train_x``."""
    import torch

    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.tensor((train_x - mean) / std, dtype=torch.float32)
    target = torch.tensor(train_active, dtype=torch.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 1),
    )
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    pos_weight = (1 - target).sum() / target.sum().clamp(min=1)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (512,))
        logits = net(x[batch]).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target[batch], pos_weight=pos_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return net(torch.tensor((test_x - mean) / std, dtype=torch.float32)).squeeze(-1).numpy()


def true_state_aucs(width: int, height: int, seconds: float, train_clips: int = 600, test_clips: int = 200) -> dict:
    """:func:`class_aucs` of the tube and context MLPs (see the module doc)."""
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.synth import SynthConfig, generate_clip

    from .pretrain_vision import clip_seed

    config = SynthConfig(width=width, height=height, seconds=seconds)

    def rows(root: int, n: int):
        parts = []
        for i in range(n):
            clip = generate_clip(clip_seed(root, i), config)
            parts.append(true_state_rows(clip, plan_sampling(clip.num_frames, config.fps, height, width).indices))
        return [np.concatenate([p[k] for p in parts]) for k in range(3)]

    (train_y, train_tube, train_context), (test_y, test_tube, test_context) = (
        rows(71, train_clips),
        rows(72, test_clips),
    )
    keep_train, keep_test = train_y >= 0, test_y >= 0  # event objects outside their event are neither
    out = {"width": width, "height": height, "seconds": seconds, "train_clips": train_clips, "test_clips": test_clips}
    for name, train_x, test_x in (("tube", train_tube, test_tube), ("context", train_context, test_context)):
        score = mlp_scores(train_x[keep_train], train_y[keep_train] > 0, test_x[keep_test])
        out[name] = class_aucs(score, test_y[keep_test])
    return out


def probe_clip(seed: int, vision_config) -> tuple:
    """Vision-stage clip ``seed`` in ``vision_config``'s format (its objects only, not rendered) and its §4-sampled
    frame indices."""
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.synth import SynthConfig, generate_clip

    c = vision_config
    clip = generate_clip(seed, SynthConfig(width=c.width, height=c.height, seconds=c.seconds))
    return clip, plan_sampling(clip.num_frames, clip.config.fps, c.height, c.width).indices


def token_object_ids(clip, sampled, min_object_pixels: int) -> tuple[np.ndarray, dict[int, bool]]:
    """``(groups, rows, cols)`` synthetic object ID owning each token of a :func:`probe_clip` (0: none; the owners
    :func:`pretrain_vision.tube_object_labels` labels tokens by) and, per object, whether it has an event."""
    from stvgr1_edge.synth_render import object_label_map

    from .pretrain_vision import TEMPORAL_PATCH, token_owners

    owners = [
        token_owners([object_label_map(clip, int(f)) for f in sampled[g : g + TEMPORAL_PATCH]], min_object_pixels)[0]
        for g in range(0, len(sampled), TEMPORAL_PATCH)
    ]
    return np.stack(owners), {o.object_id: o.event is not None for o in clip.objects}


def ridge_scores(train_x: np.ndarray, train_active: np.ndarray, test_x: np.ndarray, l2: float = 10.0) -> np.ndarray:
    """Scores of a class-balanced ridge read-out (targets -1/+1) fit on standardised ``train_x``."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    active = train_active.astype(np.float64)
    weight = np.where(active > 0, (1 - active).sum() / max(active.sum(), 1.0), 1.0)
    coef = np.linalg.solve(a.T @ (a * weight[:, None]) + l2 * np.eye(a.shape[1]), a.T @ (weight * (2 * active - 1)))
    return b @ coef


def object_context(per_tube: dict[int, np.ndarray], t: int) -> np.ndarray:
    """One object's context row at tube ``t`` from its pooled token states per tube (``per_tube``: tube -> state,
    the tubes where it has tokens): the state there, at the tubes before and after (zeros where it has none), at its
    first tube, and the difference from that -- what ``truth``'s context MLP sees, in the model's features."""
    now, first = per_tube[t], per_tube[min(per_tube)]
    zeros = np.zeros_like(now)
    return np.concatenate([now, per_tube.get(t - 1, zeros), per_tube.get(t + 1, zeros), first, now - first], axis=-1)


def model_event_aucs(model_dir: str, clips: int = 100, layers: tuple[int, ...] = (0, -1), vision_config=None) -> dict:
    """:func:`class_aucs` of read-outs of ``layers`` (0: the tower's merged output), middle tubes, on clips of
    ``vision_config``'s format (a :class:`pretrain_vision.VisionPretrainConfig`; default 224x168, 6 s):

    - ``layers``: a balanced ridge read-out of single object tokens (an event object outside its event counts as
      no event);
    - ``objects``: ridge and MLP read-outs of each object's tokens averaged per tube, scored as ``truth``'s tube MLP
      is (one row per object and tube; event objects outside their event left out). A token sees a 28x28 corner
      of an object; the language model can look at all of them;
    - ``objects`` ``context``: an MLP on :func:`object_context` rows, scored as ``truth``'s context MLP is: the
      object's averaged tokens in its tube, the tubes around it and its first tube. High where single tubes are low
      means the features hold the object's state and comparing tubes is left to do."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge_train.grpo import load_processor

    from .pretrain_vision import VisionPretrainConfig, clip_seed
    from .probe_lm import PROBE_SEED, PromptedLabelledClips, token_tubes, video_token_states

    vision_config = vision_config or VisionPretrainConfig()
    processor, source = load_processor(model_dir)
    model = use_trained_rope_index(Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.float32))
    model.eval()
    video_token_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")

    def collect(prompted, root: int, n: int):
        states, events, pooled, contexts, pooled_events = [], [], [], [], []
        tubes: list[tuple[int, int, int, np.ndarray, np.ndarray | None]] = []  # (clip, object, tube, pooled, truth)
        keys: list[tuple[int, int, int]] = []  # (clip, object, tube) of each pooled row
        for i in range(n):
            video, labels, input_ids = prompted(root, i)
            s = video_token_states(model, input_ids, video, video_token_id)[list(layers)]
            groups = int(video.video_grid_thw[0, 0])
            tube = token_tubes(video, processor.video_processor.merge_size)
            shape, event = labels["shape"].numpy(), labels["event"].numpy()
            keep = (shape > 0) & (tube >= 1) & (tube <= groups - 2)
            states.append(s[:, keep])
            events.append(event[keep])
            clip, sampled = probe_clip(clip_seed(root, i), vision_config)
            owners, has_event = token_object_ids(clip, sampled, vision_config.min_object_pixels)
            owners = owners.reshape(-1)
            by_object: dict[int, dict[int, np.ndarray]] = {}  # object -> tube -> its averaged token states
            tube_events: dict[tuple[int, int], int] = {}  # (tube, object) -> its token event label
            for t in range(groups):
                for k in np.unique(owners[(tube == t) & (shape > 0)]):
                    where = (tube == t) & (shape > 0) & (owners == k)
                    by_object.setdefault(int(k), {})[t] = s[:, where].mean(1)
                    tube_events[t, int(k)] = int(event[where].max())
            truth = true_tube_states(clip, sampled)
            for k, per_tube in by_object.items():
                tubes.extend((i, k, t, state, truth.get((t, k))) for t, state in per_tube.items())
            for (t, k), e in tube_events.items():
                if 1 <= t <= groups - 2:
                    pooled.append(by_object[k][t])
                    contexts.append(object_context(by_object[k], t))
                    pooled_events.append(e if e > 0 else (-1 if has_event[k] else 0))
                    keys.append((i, k, t))
        return (
            np.concatenate(states, 1),
            np.concatenate(events),
            np.stack(pooled, 1),
            np.stack(contexts, 1),
            np.asarray(pooled_events),
            (tubes, keys),
        )

    with tempfile.TemporaryDirectory(prefix="nano-probe-events-") as tmp:
        prompted = PromptedLabelledClips(processor, Path(tmp), vision_config)
        train_x, train_y, train_px, train_cx, train_py, train_tubes = collect(prompted, 33_000, int(0.6 * clips))
        test_x, test_y, test_px, test_cx, test_py, test_tubes = collect(prompted, PROBE_SEED, 40)
    out: dict = {"model": model_dir, "train_clips": int(0.6 * clips), "test_clips": 40, "layers": {}, "objects": {}}
    keep_train, keep_test = train_py >= 0, test_py >= 0
    for i, layer in enumerate(layers):
        out["layers"][str(layer)] = class_aucs(ridge_scores(train_x[i], train_y > 0, test_x[i]), test_y)
        a, b = train_px[i][keep_train], test_px[i][keep_test]
        active = train_py[keep_train] > 0
        out["objects"][str(layer)] = {
            "ridge": class_aucs(ridge_scores(a, active, b), test_py[keep_test]),
            "mlp": class_aucs(mlp_scores(a, active, b), test_py[keep_test]),
            "context": class_aucs(
                mlp_scores(train_cx[i][keep_train], active, test_cx[i][keep_test]), test_py[keep_test]
            ),
        }
        train_rows, test_rows, r2 = read_states(train_tubes, test_tubes, i)
        out["objects"][str(layer)].update(
            state_r2=r2,
            **{
                "state context": class_aucs(
                    mlp_scores(train_rows[keep_train], active, test_rows[keep_test]), test_py[keep_test]
                )
            },
        )
    return out


def read_states(train, test, layer: int):
    """The drawing state read from each object's pooled tokens (``layer``), in :func:`object_context` rows: a ridge
    regression of the tube's true state (:func:`true_tube_state`) on its pooled tokens, fit on the training clips'
    tubes (their own rows predicted two-fold, each half by a fit on the other half, so that they are as noisy as the
    test clips'), and its R^2 on the test clips' tubes. ``train``/``test``: ``collect``'s ``(tubes, keys)``. Returns
    the context rows of each side's keys and the R^2 (:func:`state_r2`)."""

    def split(tubes):
        x = np.stack([state[layer] for *_, state, _ in tubes])
        known = np.asarray([truth is not None for *_, truth in tubes])
        y = np.stack([truth for *_, truth in tubes if truth is not None])
        return x, known, y

    (train_tubes, train_keys), (test_tubes, test_keys) = train, test
    x, known, y = split(train_tubes)
    clip_of = np.asarray([c for c, *_ in train_tubes])
    half = clip_of % 2 == 0  # whole clips per fold: tubes of one object are alike
    predicted = np.empty((len(x), y.shape[1]))
    rows_known = np.flatnonzero(known)
    for fold in (half, ~half):
        fit = rows_known[~fold[rows_known]]
        predicted[fold] = ridge_predict(x[fit], y[np.searchsorted(rows_known, fit)], x[fold])
    tx, t_known, ty = split(test_tubes)
    test_predicted = ridge_predict(x[known], y, tx)
    r2 = state_r2(test_predicted[t_known], ty)

    def context_rows(tubes, keys, states):
        per_object: dict[tuple[int, int], dict[int, np.ndarray]] = {}
        for (c, k, t, *_), state in zip(tubes, states):
            per_object.setdefault((c, k), {})[t] = state
        return np.stack([object_context(per_object[c, k], t) for c, k, t in keys])

    return (
        context_rows(train_tubes, train_keys, predicted),
        context_rows(test_tubes, test_keys, test_predicted),
        r2,
    )


def _line(name: str, scores: dict[str, float]) -> str:
    return f"{name}: all {scores['all']:.3f}  " + "  ".join(f"{k} {v:.2f}" for k, v in scores.items() if k != "all")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.recipes.nano.probe_events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="'truth' (the objects' drawing state) or a model folder.")
    parser.add_argument("--width", type=int, default=224, help="Clip width (a model probe: a 28-multiple).")
    parser.add_argument("--height", type=int, default=168, help="Clip height (a model probe: a 28-multiple).")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clips", type=int, default=100, help="Model probe: clips of the read-out fit / 0.6.")
    parser.add_argument("--layers", default="0,-1", help="Model probe: hidden-state layers (0: tower output).")
    parser.add_argument("--out", default=None, help="Also write the scores to this JSON file.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.source == "truth":
        scores = true_state_aucs(args.width, args.height, args.seconds)
        lines = [_line(name, scores[name]) for name in ("tube", "context")]
    else:
        from .pretrain_vision import VisionPretrainConfig, exit_bad_input

        clip_format = VisionPretrainConfig(width=args.width, height=args.height, seconds=args.seconds)
        problem = clip_format.clip_format_error()
        if problem:
            exit_bad_input(problem)
        layers = tuple(int(v) for v in args.layers.split(","))
        scores = model_event_aucs(args.source, args.clips, layers, clip_format)
        scores["clip_format"] = [args.width, args.height, args.seconds]
        lines = [_line(f"layer {k} tokens", v) for k, v in scores["layers"].items()]
        for k, v in scores["objects"].items():
            names = ("ridge", "mlp", "context", "state context")
            lines += [_line(f"layer {k} objects {name}", v[name]) for name in names]
            lines.append(f"layer {k} objects state R^2: " + "  ".join(f"{n} {r:.2f}" for n, r in v["state_r2"].items()))
    print("\n".join(lines))
    if args.out:
        from stvgr1_edge.errors import write_json_atomic

        write_json_atomic(args.out, scores, indent=1)


if __name__ == "__main__":
    main()
