"""Greedy answers of a model on a prepared cache, scored with the task's own terms (`STVG-R1.md` §7).

For model selection while training: the cache already holds the prompted clips' tensors and each sample's GT ID
and time range, so nothing is decoded or tracked again (``stvg-edge eval`` and ``benchmarks/accuracy.py`` run the
whole pipeline instead). Per sample: the answer's ID against ``gt_id``, its time range against the GT range (tIoU in
seconds), the format, and the weighted reward.

    python -m stvgr1_edge_train.evaluate MODEL CACHE [--num N]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from stvgr1_edge.answer import parse_answer

from .rewards import FORMAT_PATTERN, RewardConfig, interval_iou, total_reward

logger = logging.getLogger(__name__)


def evaluate_cache(
    model: str,
    cache: str | Path,
    num: int | None = None,
    max_new_tokens: int = 256,
    reward: RewardConfig = RewardConfig(),
    device: str = "cpu",
) -> dict[str, Any]:
    """Mean ID accuracy, tIoU, format rate and reward of ``model``'s greedy answers on the first ``num`` samples
    of ``cache`` (sorted by sample id), with the per-sample rows under ``"samples"``."""
    import torch

    from stvgr1_edge.grounding import Grounder, GrounderConfig
    from stvgr1_edge.prepared import cached_model_inputs, load_cached_samples

    grounder = Grounder.from_pretrained(
        GrounderConfig(model=str(model), device=device, dtype="fp32", max_new_tokens=max_new_tokens)
    )
    processor = grounder.processor
    samples = load_cached_samples(cache)[:num]
    rows = []
    for sample in samples:
        inputs = cached_model_inputs(grounder, cache, sample)
        inputs = {k: v.to(grounder.device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = grounder.model.generate(**inputs, **grounder.generation_kwargs())
        text = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        answer = parse_answer(text, duration_s=sample.duration_s)
        tiou = (
            interval_iou((answer.start_s, answer.end_s), (sample.gt_start_s, sample.gt_end_s))
            if answer.has_time_range
            else 0.0
        )
        rows.append(
            {
                "sample_id": sample.sample_id,
                "text": text,
                "gt_id": sample.gt_id,
                "ids": list(answer.ids),
                "id_correct": answer.ids == (sample.gt_id,),
                "tiou": tiou,
                "format_ok": bool(FORMAT_PATTERN.fullmatch(text)),
                "reward": total_reward(
                    text, sample.gt_id, sample.gt_start_s, sample.gt_end_s, sample.duration_s, reward
                ),
            }
        )
    n = max(len(rows), 1)
    return {
        "model": str(model),
        "cache": str(cache),
        "num_samples": len(rows),
        "id_accuracy": sum(r["id_correct"] for r in rows) / n,
        "mean_tiou": sum(r["tiou"] for r in rows) / n,
        "format_rate": sum(r["format_ok"] for r in rows) / n,
        "mean_reward": sum(r["reward"] for r in rows) / n,
        "samples": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="Model folder or hub id.")
    parser.add_argument("cache", help="Cache folder from `stvg-edge train prepare`.")
    parser.add_argument("--num", type=int, default=None, help="Evaluate only the first N samples.")
    parser.add_argument("--out", default=None, help="Also write the scores (with per-sample rows) to this JSON.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    scores = evaluate_cache(args.model, args.cache, args.num)
    if args.out:
        Path(args.out).write_text(json.dumps(scores, indent=1))
    print(json.dumps({k: v for k, v in scores.items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    main()
