"""`stvg-edge demo`: one synthetic clip through the whole pipeline with the packaged nano model, offline.

:func:`run_demo` synthesizes a clip with known ground truth (:mod:`stvgr1_edge.synth`), tracks it with the
classical tracker, grounds its query with the nano Qwen2.5-VL shipped in the package, and writes
``result.json`` (the `run` result) and ``result.mp4`` (tracks + the answered tube). The returned
:class:`DemoResult` holds the answer next to the ground truth, so the CLI can print both.

The target's ID in the ground truth is the synthesizer's object ID; the answer names a *tracker* ID. The
answer is compared with the track :func:`~stvgr1_edge.gt_match.assign_gt_id` gives the GT boxes, as
``stvg-edge eval`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

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
    from .gt_match import assign_gt_id
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
    gt_id = assign_gt_id(result.tracks, sample.gt_boxes).track_id
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
