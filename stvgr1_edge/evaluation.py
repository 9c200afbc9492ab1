"""Ground a set of annotated clips with one or more grounders and score them: each clip is decoded and tracked
once (classical tracker), every grounder then answers on the same prompted clip (the tracks are replayed), so
grounders differ only in the grounder. Used by ``benchmarks/accuracy.py`` and the nano training recipe.

ID accuracy: an answered ID is correct when it names the track assigned to the GT boxes
(:func:`stvgr1_edge.gt_match.assign_gt_id`, as ``stvg-edge eval`` scores it), over the clips where one is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable


def score_results(results: list[dict], samples: list, tracks: dict[str, Any]) -> dict[str, Any]:
    """evaluate() metrics, with the answers' IDs scored on the tracks they were given."""
    from stvgr1_edge.metrics import evaluate

    scored = evaluate(results, samples, tracks=tracks)
    metrics = {k: scored["metrics"][k] for k in ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "id_accuracy")}
    metrics["parse_ok"] = sum(r["queries"][0]["parse_ok"] for r in results) / len(results)
    metrics["num_samples"] = len(samples)
    metrics["num_id_assessed"] = scored["counts"]["id_assessed"]
    return metrics


def evaluate_grounders(
    samples: list, grounders: dict[str, Any], on_clip: Callable[[int], None] | None = None
) -> dict[str, dict[str, Any]]:
    """Run every grounder on every clip (tracking once per clip); metrics per variant name."""
    from stvgr1_edge.pipeline import GroundingPipeline
    from stvgr1_edge.tracking.factory import make_tracker
    from stvgr1_edge.tracking.replay import ReplayTracker

    results: dict[str, list[dict]] = {name: [] for name in grounders}
    seconds: dict[str, float] = {name: 0.0 for name in grounders}
    tracks_by_key: dict[str, Any] = {}
    for i, sample in enumerate(samples):
        tracks = None
        for name, grounder in grounders.items():
            tracker = make_tracker("classical") if tracks is None else ReplayTracker(tracks, source=sample.key)
            start = time.perf_counter()
            result = GroundingPipeline(tracker, grounder).run(sample.video_path, [sample.query])
            seconds[name] += time.perf_counter() - start
            if tracks is None:
                tracks = tracks_by_key[sample.key] = result.tracks
            results[name].append(result.to_dict())
        if on_clip is not None:
            on_clip(i)
    out = {}
    reference = next(iter(grounders), "")
    for name in grounders:
        out[name] = score_results(results[name], samples, tracks_by_key)
        out[name]["seconds_per_clip"] = seconds[name] / len(samples)
        same = sum(
            a["queries"][0]["answer_text"] == b["queries"][0]["answer_text"]
            for a, b in zip(results[name], results[reference])
        )
        out[name][f"answers_identical_to_{reference}"] = same / len(samples)
    return out


def evaluate_model_on_synth(model: str, folder: str | Path, num: int | None = None) -> dict[str, Any]:
    """Full-precision metrics of ``model`` on the clips in ``folder`` (used by the nano recipe)."""
    from stvgr1_edge.dataset import load_annotations
    from stvgr1_edge.grounding import Grounder, GrounderConfig

    samples = load_annotations(Path(folder) / "annotations.json")
    samples = samples[:num] if num else samples
    grounder = Grounder.from_pretrained(GrounderConfig(model=model, device="cpu", dtype="fp32", max_new_tokens=256))
    return evaluate_grounders(samples, {"fp32": grounder})["fp32"]
