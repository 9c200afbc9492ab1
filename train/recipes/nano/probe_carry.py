"""Does the time stage's look bring back the time it looks at?

    python -m stvgr1_edge_train.recipes.nano.probe_carry MODEL_DIR [--clips 200] [--distractors 2] [--out carry.json]

The time stage (:mod:`.pretrain_time`) trains one head (LM layer ``layer``, head ``head``) to look, at the positions
that write a time, at the target's tokens where it is first (last) shown. Writing the right time needs two more
links: the looked-at tokens must hold their time, and the look must bring it into the position's state. On held-out
time-reading clips (root seed :data:`CARRY_SEED`, with ``distractors`` other squares), the teacher answer is fed and:

- ``attention``: the head's mean attention mass, at the positions that write the reasoning's start and end, on the
  target's tokens in its first / last shown tube (``edge``, what the attention loss asks), on the target's tokens in
  any shown tube (``target``) and on the other squares' tokens while shown (``distractors``);
- ``clock_r2``: how well a ridge probe reads a token's time from the target's edge tokens' mean state at the layer's
  input (the time the look can bring);
- ``before`` / ``after`` / ``last``: ridge probes of the state at the position that writes the reasoning's start,
  before the layer, after it and after the last layer: the target's start beyond what the clip's length tells
  (``start_beyond_length``: the start minus its linear fit on the length), the start itself and the length.

Ridge probes are fit on the first 60% of the clips (the penalty chosen on the last quarter of those) and scored by
R² on the other 40%. ``clock_r2`` high and ``start_beyond_length`` no higher ``after`` than ``before`` means the
head finds the target but brings back something else than its time. Measured on the time stage's models: its
module doc (:mod:`.pretrain_time`).
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from .pretrain_time import SQUARE_PATTERNS

logger = logging.getLogger(__name__)

CARRY_SEED = 77_000
"""Root seed of the probe clips (the time stage trains on 40000 and is scored on 41000; the cache uses 42000)."""


def ridge_r2(features, target, fit_share: float = 0.6, alphas=(0.1, 1.0, 10.0, 100.0, 1000.0)) -> float:
    """R² on the last ``1 - fit_share`` of the rows of a ridge regression fit on the first ``fit_share`` (features
    standardised on the fit rows; the penalty is the one of ``alphas`` that scores best on the last quarter of the
    fit rows when fit on the rest of them)."""
    x, y = np.asarray(features, dtype=np.float64), np.asarray(target, dtype=np.float64)
    cut = int(fit_share * len(y))
    if cut < 4 or len(y) - cut < 2:
        raise ValueError(f"{len(y)} rows are too few for a ridge probe")
    mean, std = x[:cut].mean(0), x[:cut].std(0) + 1e-6
    z = np.column_stack([(x - mean) / std, np.ones(len(x))])

    def fit(rows: slice, alpha: float) -> np.ndarray:
        a = z[rows].T @ z[rows] + alpha * np.eye(z.shape[1])
        return np.linalg.solve(a, z[rows].T @ y[rows])

    def r2(weights: np.ndarray, rows: slice) -> float:
        residual = y[rows] - z[rows] @ weights
        return float(1.0 - (residual**2).sum() / ((y[rows] - y[rows].mean()) ** 2).sum())

    inner = int(0.75 * cut)
    alpha = max(alphas, key=lambda a: r2(fit(slice(0, inner), a), slice(inner, cut)))
    return r2(fit(slice(0, cut), alpha), slice(cut, None))


def probe_carry(
    model_dir, clips: int = 200, distractors: int = 2, layer: int = 2, head: int = 0, device: str = "cpu"
) -> dict:
    """The measurements of the module doc on ``clips`` held-out time-reading clips."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import (
        attention_log_masses,
        check_attention_head,
        event_edge_token_masks,
        model_inputs,
        time_token_positions,
    )

    from .pretrain_time import TimeReadingBatches, TimeReadingConfig, time_reading_clip
    from .pretrain_vision import clip_seed

    processor, source = load_processor(str(model_dir))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.float32).to(device).eval()
    model = use_trained_rope_index(model)
    check_attention_head(model.config.text_config, layer, head)
    config = TimeReadingConfig(distractors=distractors)
    batches = TimeReadingBatches(processor, config)
    vp = processor.video_processor
    merge, patch = int(vp.merge_size), int(vp.patch_size)
    states: dict[str, list[np.ndarray]] = {"before": [], "after": [], "last": []}
    masses: dict[str, list[float]] = {"edge": [], "target": [], "distractors": []}
    clock_states, clock_times, truth = [], [], []
    for i in range(clips):
        seed = clip_seed(CARRY_SEED, i)
        clip = time_reading_clip(seed, vp, config)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batches([clip]).items()}
        inputs = model_inputs(batch)
        grid = clip.video.video_grid_thw[0]
        edges = event_edge_token_masks(clip.target_boxes(patch), grid, merge)
        anywhere = event_edge_token_masks(clip.target_boxes(patch), grid, merge, span=True)
        assert edges is not None and anywhere is not None  # every time-reading clip shows its square
        others = torch.zeros_like(anywhere[0])
        for box, start_s, end_s in clip.distractors:
            shown = event_edge_token_masks(clip.square_boxes(box, start_s, end_s, patch), grid, merge, span=True)
            if shown is not None:
                others |= shown[0]
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
            video = torch.nonzero(batch["input_ids"][0] == batches.video_token_id).flatten().cpu()
            runs = time_token_positions(processor.tokenizer, batch["labels"][0].cpu())[:2]  # the reasoning's range
            for k, run in enumerate(runs):
                query_positions = torch.tensor(run) - 1
                for name, mask in (("edge", edges[k]), ("target", anywhere[0]), ("distractors", others & ~anywhere[0])):
                    if not mask.any():
                        masses[name].extend([0.0] * len(run))
                        continue
                    query = [(0, query_positions, video[mask])]
                    logs = attention_log_masses(model, inputs, out.hidden_states[layer], layer, head, query)
                    masses[name].extend(torch.exp(logs).tolist())
            writes_start = runs[0][0] - 1
            for name, index in (("before", layer), ("after", layer + 1), ("last", len(out.hidden_states) - 1)):
                states[name].append(out.hidden_states[index][0, writes_start].float().cpu().numpy())
            times = clip.token_times_s(merge)
            for mask in edges:
                clock_states.append(out.hidden_states[layer][0, video[mask].to(device)].mean(0).float().cpu().numpy())
                clock_times.append(float(times[mask][0]))
        truth.append((clip.start_s, clip.duration_s))
    start, length = np.array(truth).T
    beyond = start - np.polyval(np.polyfit(length, start, 1), length)
    report: dict = {
        "clips": clips,
        "distractors": distractors,
        "layer": layer,
        "head": head,
        "attention": {name: round(float(np.mean(v)), 3) for name, v in masses.items()},
        "clock_r2": round(ridge_r2(clock_states, clock_times), 3),
    }
    for name, rows in states.items():
        report[name] = {
            "start_beyond_length": round(ridge_r2(rows, beyond), 3),
            "start": round(ridge_r2(rows, start), 3),
            "length": round(ridge_r2(rows, length), 3),
        }
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.recipes.nano.probe_carry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="Model folder (a time-stage output).")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--distractors", type=int, default=2, choices=range(len(SQUARE_PATTERNS)))
    parser.add_argument("--layer", type=int, default=2, help="LM layer of the trained head.")
    parser.add_argument("--head", type=int, default=0, help="The trained head.")
    parser.add_argument("--out", default=None, help="Also write the report here (JSON).")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from stvgr1_edge.errors import StvgError, write_json_atomic

    from .pretrain_vision import exit_bad_input

    if args.clips < 10:
        exit_bad_input(f"--clips {args.clips} is too few for the ridge probes: pass 10 or more (200 by default)")
    try:
        report = probe_carry(args.model, args.clips, args.distractors, args.layer, args.head, args.device)
    except StvgError as error:
        exit_bad_input(str(error))
    if args.out:
        write_json_atomic(args.out, report, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
