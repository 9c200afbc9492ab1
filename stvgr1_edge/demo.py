"""`stvg-edge demo`: one synthetic clip through the whole pipeline with the packaged nano model, offline.

:func:`run_demo` synthesizes a clip with known ground truth (:mod:`stvgr1_edge.synth`), tracks it with the
classical tracker, grounds its query with the nano Qwen2.5-VL shipped in the package, and writes
``result.json`` (the `run` result) and ``result.mp4`` (tracks + the answered tube). The returned
:class:`DemoResult` holds the answer next to the ground truth, so the CLI can print both.

The target's ID in the ground truth is the synthesizer's object ID; the answer names a *tracker* ID. They
are compared through :func:`tracker_id_of_target`: the tracker ID whose boxes overlap the GT target's
boxes best over the GT frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .errors import write_json_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """What `stvg-edge demo` does. Defaults match the clips the nano model was trained on."""

    out_dir: str = "stvg_demo"
    """Folder for the synthetic clip (``clip/``), ``result.json`` and ``result.mp4``."""
    seed: int = 5000
    """Synthesizer seed (5000+ are the nano model's held-out seeds, never trained on)."""
    model: str = "nano"
    """Grounding model: "nano" (packaged), a folder or a hub id."""
    width: int = 224
    """Frame width of the synthetic clip (the nano model was trained on 224x168)."""
    height: int = 168
    """Frame height of the synthetic clip."""
    seconds: float = 6.0
    """Clip length (the nano model was trained on 6 s clips at 10 fps)."""
    device: str = "cpu"
    """Torch device for the grounder."""
    max_new_tokens: int = 256
    """Most tokens generated (the nano model answers in 60-130 tokens, depending on its reasoning format)."""


@dataclass(frozen=True)
class DemoResult:
    """The demo's answer next to the clip's ground truth."""

    query: str
    answer_text: str
    answer_ids: tuple[int, ...]
    answer_start_s: float | None
    answer_end_s: float | None
    gt_tracker_id: int | None
    """Tracker ID of the GT target (None if no track overlaps it)."""
    gt_start_s: float
    gt_end_s: float
    tiou: float
    viou: float
    id_correct: bool
    result_json: Path
    result_mp4: Path


def tracker_id_of_target(tracks, gt_boxes: Mapping[int, Sequence[float]], min_mean_iou: float = 0.3) -> int | None:
    """The tracker ID whose boxes overlap ``gt_boxes`` best (mean IoU over the GT frames, 0 where the
    track is absent); None when no track reaches ``min_mean_iou``."""
    from .masks import box_iou

    best_id, best_iou = None, min_mean_iou
    for track_id in tracks.ids:
        track = tracks.tracks[track_id]
        total = 0.0
        for frame, gt_box in gt_boxes.items():
            box = track.box_at(int(frame))
            if box is not None:
                total += box_iou(box, gt_box)
        mean_iou = total / max(1, len(gt_boxes))
        if mean_iou >= best_iou:
            best_id, best_iou = track_id, mean_iou
    return best_id


def synthesize_demo_clip(config: DemoConfig):
    """Write one synthetic clip under ``out_dir/clip``; returns its :class:`~stvgr1_edge.dataset.STVGSample`."""
    from .dataset import load_annotations
    from .synth import SynthConfig, write_synthetic_dataset

    synth = SynthConfig(width=config.width, height=config.height, seconds=config.seconds)
    annotations = write_synthetic_dataset(Path(config.out_dir) / "clip", num=1, seed=config.seed, config=synth)
    return load_annotations(annotations)[0]


def run_demo(config: DemoConfig = DemoConfig(), pipeline=None) -> DemoResult:
    """Synthesize, track, ground, score; write ``result.json`` and ``result.mp4`` in ``out_dir``. ``pipeline``: an
    already built :class:`~stvgr1_edge.pipeline.GroundingPipeline` (default: built from ``config``, the way
    ``stvg-edge run`` builds one)."""
    from .metrics import evaluate
    from .run_config import RunConfig, build_pipeline
    from .vis import write_tube_video

    out = Path(config.out_dir)
    sample = synthesize_demo_clip(config)
    if pipeline is None:
        pipeline = build_pipeline(
            RunConfig(model=config.model, device=config.device, max_new_tokens=config.max_new_tokens)
        )
    result = pipeline.run(sample.video_path, [sample.query])
    result_json = out / "result.json"
    result_mp4 = out / "result.mp4"
    write_tube_video(sample.video_path, result, result_mp4)  # the video first: a failure leaves neither file
    write_json_atomic(result_json, result.to_dict(), indent=1)
    scores = evaluate(result.to_dict(), [sample], per_video=True)["per_video"][sample.key]
    answer = result.queries[0].answer
    gt_id = tracker_id_of_target(result.tracks, sample.gt_boxes)
    logger.info("demo seed %d: %r -> %r", config.seed, sample.query, answer.raw)
    return DemoResult(
        query=sample.query,
        answer_text=answer.raw,
        answer_ids=tuple(answer.ids),
        answer_start_s=answer.start_s if answer.has_time_range else None,
        answer_end_s=answer.end_s if answer.has_time_range else None,
        gt_tracker_id=gt_id,
        gt_start_s=float(sample.st_time),
        gt_end_s=float(sample.ed_time),
        tiou=float(scores["tIoU"]),
        viou=float(scores["vIoU"] or 0.0),
        id_correct=gt_id is not None and tuple(answer.ids) == (gt_id,),
        result_json=result_json,
        result_mp4=result_mp4,
    )
