"""Training data preparation: annotations + videos → a cache of processor tensors and sample metadata.

Per video (one tracking pass serves every sample on it):

1. decode once, track every object (``make_tracker``), keep the frames the VLM will see (`STVG-R1.md` §4);
2. per sample, :func:`assign_gt_id`: the tracked object whose box best overlaps the GT box, by majority vote over
   the GT frames, with an IoU floor and a minimum vote share (the reference has neither). Samples that fail
   are **reported** (``report.json``: reason, votes), never silently dropped;
3. draw the ID markers on the sampled frames, run the grounder's preprocessing (:class:`ClipProcessor`) and
   write the tensors once per video plus one metadata JSON per sample (:mod:`stvgr1_edge.prepared`).

Resumable (complete samples are skipped) and parallel over videos (``concurrent.futures`` processes).
When the annotations carry the true target (synthetic data: ``target_id`` + ``gt_tracks``), every assignment
is also checked against a whole-video matching of tracked to true objects, and the agreement is reported.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from stvgr1_edge.dataset import STVGSample, load_annotations
from stvgr1_edge.errors import BadInputError, StvgError, write_json_atomic
from stvgr1_edge.gt_match import GTIdConfig, assign_gt_id
from stvgr1_edge.masks import box_iou_matrix
from stvgr1_edge.prepared import CachedSample, sample_is_complete, video_file_name, write_sample, write_video_tensors
from stvgr1_edge.sampling import SamplingConfig
from stvgr1_edge.tracks import TrackSet

from .video_inputs import ClipProcessor, VideoTensors

logger = logging.getLogger(__name__)


# --- GT ID assignment: stvgr1_edge.gt_match (shared with `stvg-edge eval`) ----------------------------


def match_tracks_to_gt(tracks: TrackSet, gt_tracks: TrackSet, min_mean_iou: float = 0.3) -> dict[int, int]:
    """Whole-video matching ``{true object id: tracked id}``: Hungarian assignment on the summed per-frame box
    IoU over all frames; a pair is kept if its IoU averaged over the true object's frames is ≥ ``min_mean_iou``.
    Independent of the GT-frame vote of :func:`assign_gt_id`: used to check it where the truth is known."""
    from scipy.optimize import linear_sum_assignment

    gt_ids, trk_ids = gt_tracks.ids, tracks.ids
    if not gt_ids or not trk_ids:
        return {}
    total = np.zeros((len(gt_ids), len(trk_ids)))
    for gi, gid in enumerate(gt_ids):
        gt_track = gt_tracks.tracks[gid]
        for ti, tid in enumerate(trk_ids):
            track = tracks.tracks[tid]
            common = sorted(set(gt_track.frames) & set(track.frames))
            if common:
                a = np.asarray([gt_track.box_at(f) for f in common])
                b = np.asarray([track.box_at(f) for f in common])
                total[gi, ti] = float(np.diagonal(box_iou_matrix(a, b)).sum())
    rows, cols = linear_sum_assignment(-total)
    matches = {}
    for r, c in zip(rows, cols):
        if total[r, c] / max(len(gt_tracks.tracks[gt_ids[r]]), 1) >= min_mean_iou:
            matches[int(gt_ids[r])] = int(trk_ids[c])
    return matches


# --- preparation ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareConfig:
    """What `stvg-edge train prepare` does."""

    tracker: str = "classical"
    """Tracker name for ``make_tracker`` (classical needs no weights)."""
    tracker_model: str | None = None
    """SAM2.1/EdgeTAM weights for ``--tracker sam2|edgetam``."""
    detector: str | None = None
    """Keyframe detector for sam2/edgetam."""
    device: str = "cpu"
    """Torch device for model trackers."""
    processor: str | None = None
    """Model id or folder whose processor makes the tensors; None: Qwen2.5-VL's constants (tiny tokenizer)."""
    gt_id: GTIdConfig = GTIdConfig()
    sampling: SamplingConfig = SamplingConfig()
    workers: int = 1
    """Worker processes (parallel over videos); 1 runs in this process."""


_WORKER_PROCESSOR: ClipProcessor | None = None


def load_clip_processor(source: str | None) -> ClipProcessor:
    """The processor of model ``source`` (folder, hub id or "nano", local files only) or Qwen2.5-VL's constants."""
    if source is None:
        from stvgr1_edge.tiny import build_processor, build_tokenizer

        return ClipProcessor(build_processor(build_tokenizer()))
    from transformers import AutoProcessor

    from stvgr1_edge.model_source import named_model_folder

    source = named_model_folder(source)  # "nano", as `run --model nano` takes it
    try:
        return ClipProcessor(AutoProcessor.from_pretrained(source, local_files_only=True))
    except OSError as exc:
        raise BadInputError(
            f"cannot load a processor from {source} ({str(exc).splitlines()[0]}): pass a Qwen2.5-VL checkpoint folder"
        ) from None


def _init_worker(processor_source: str | None) -> None:
    global _WORKER_PROCESSOR
    _WORKER_PROCESSOR = load_clip_processor(processor_source)


def _sample_result(sample: STVGSample, status: str, reason: str = "", **extra: Any) -> dict[str, Any]:
    return {"sample_id": sample.key, "video": sample.video, "status": status, "reason": reason, **extra}


def prepare_video_samples(
    video_path: str,
    samples: Sequence[STVGSample],
    out_dir: Path,
    config: PrepareConfig,
    processor: ClipProcessor | None = None,
) -> list[dict[str, Any]]:
    """Track one video once and cache every sample on it; returns one result dict per sample."""
    from stvgr1_edge.prompt import grounding_prompt
    from stvgr1_edge.prompted import track_and_prompt
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.tracking.factory import make_tracker
    from stvgr1_edge.video import iter_frames, probe_video

    processor = processor or _WORKER_PROCESSOR or load_clip_processor(config.processor)
    start = time.perf_counter()
    try:
        info = probe_video(video_path)
        sampling = plan_sampling(info.num_frames, info.fps, info.height, info.width, config.sampling)
        tracker = make_tracker(
            config.tracker, model=config.tracker_model, detector=config.detector, device=config.device
        )
        # past 1 GB, the sampled frames wait on disk
        tracked = track_and_prompt(iter_frames(video_path, info=info), info, tracker, sampling, frame_memory_mb=1024)
        tracks, clip = tracked.tracks, tracked.clip
    except (StvgError, ValueError) as exc:
        return [_sample_result(s, "failed", f"video {video_path}: {exc}") for s in samples]
    track_s = time.perf_counter() - start

    assignments = {s.key: assign_gt_id(tracks, s.gt_boxes, config.gt_id) for s in samples}
    truth = {}  # {true object id: tracked id}, where the annotations have every object's track (synthetic clips)
    if samples[0].gt_tracks is not None:
        truth = match_tracks_to_gt(tracks, samples[0].gt_trackset())
    results, tensors_written = [], False
    video_file = video_file_name(video_path)
    for s in samples:
        assignment = assignments[s.key]
        extra: dict[str, Any] = {
            "assignment": {k: v for k, v in asdict(assignment).items() if k != "track_id"},
            "gt_id": assignment.track_id,
            "num_tracks": len(tracks),
        }
        if s.target_id is not None and s.gt_tracks is not None:
            extra["true_track_id"] = truth.get(int(s.target_id))
            extra["agrees_with_truth"] = (
                assignment.track_id is not None and assignment.track_id == extra["true_track_id"]
            )
        if assignment.status != "ok":
            results.append(_sample_result(s, assignment.status, assignment.reason, **extra))
            continue
        if not tensors_written:
            video = processor.prepare_video(clip)
            write_video_tensors(
                out_dir / video_file,
                VideoTensors(video.pixel_values_videos, video.video_grid_thw, video.second_per_grid_ts),
                metadata={"video": str(video_path), "num_sampled_frames": str(clip.num_frames)},
            )
            num_visual_tokens, tensors_written = video.num_visual_tokens, True
        write_sample(
            out_dir,
            CachedSample(
                sample_id=s.key,
                video=s.video,
                video_file=video_file,
                query=s.query,
                prompt=grounding_prompt(s.query),
                gt_id=int(assignment.track_id),
                gt_start_s=float(s.st_time),
                gt_end_s=float(s.ed_time),
                duration_s=float(clip.duration_s),
                num_visual_tokens=int(num_visual_tokens),
                valid_ids=tuple(tracks.ids),
                vote_share=round(assignment.vote_share, 4),
                mean_iou=round(assignment.mean_iou, 4),
                object_labels=object_labels(s, truth, tracks.ids),
                processor=processor.constants(),
                frame_times_s=tuple(info.frame_times_s[i] for i in clip.frame_indices),
                target_boxes=target_boxes_in_frames(s, clip.frame_indices, (info.width, info.height)),
            ),
        )
        results.append(_sample_result(s, "cached", **extra))
    logger.info("%s: %d tracks, %d samples, tracked in %.2fs", video_path, len(tracks), len(samples), track_s)
    return results


def target_boxes_in_frames(
    sample: STVGSample, frame_indices: Sequence[int], video_size: tuple[int, int]
) -> tuple[tuple[float, ...], ...]:
    """The sample's GT box in each of ``frame_indices`` as fractions of the frame (x0, y0, x1, y1, rounded to 1e-4),
    ``()`` where the annotations give none. The boxes are in the annotations' frame size (``img_hw``), else the
    video's (``video_size``: width, height)."""
    width, height = (sample.width, sample.height) if sample.width and sample.height else video_size
    scale = (width, height, width, height)
    return tuple(
        tuple(round(float(v) / s, 4) for v, s in zip(sample.gt_boxes[i], scale)) if i in sample.gt_boxes else ()
        for i in frame_indices
    )


def object_labels(sample: STVGSample, truth: dict[int, int], track_ids: Sequence[int]) -> tuple[str, ...]:
    """ "size colour shape" of the true object each tracked ID matches (``truth``: true id → tracked id), "" where
    none does; () when the annotations carry no per-object labels (only ``stvg-edge synth`` files do)."""
    objects = sample.extras.get("objects")
    if not objects or not truth:
        return ()
    by_track = {tid: objects.get(str(gid)) for gid, tid in truth.items()}
    return tuple(
        " ".join(str(o[k]) for k in ("size", "colour", "shape")) if (o := by_track.get(t)) else "" for t in track_ids
    )


def _resolve_video_path(sample: STVGSample, videos_dir: Path | None) -> str | None:
    if videos_dir is not None:
        for name in (sample.video, Path(sample.video).name):
            candidate = videos_dir / name
            if candidate.is_file():
                return str(candidate.resolve())
    return sample.video_path if sample.video_path and Path(sample.video_path).is_file() else None


def prepare_cache(
    annotations: str | Path,
    out_dir: str | Path,
    videos_dir: str | Path | None = None,
    config: PrepareConfig = PrepareConfig(),
    on_video: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Prepare every sample of ``annotations`` into ``out_dir``; writes and returns ``out_dir/report.json``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"--out {out_dir} exists and is not a folder")
    videos_dir = Path(videos_dir) if videos_dir is not None else None
    if videos_dir is not None and not videos_dir.is_dir():
        raise BadInputError(f"--videos {videos_dir} is not a folder")
    if config.workers < 1:
        raise BadInputError(f"--workers must be at least 1, got {config.workers}")
    samples = load_annotations(annotations)
    out_dir.mkdir(parents=True, exist_ok=True)

    results: list[dict[str, Any]] = []
    groups: dict[str, list[STVGSample]] = defaultdict(list)
    for s in samples:
        if not s.has_ground_truth or not s.gt_boxes or s.st_time is None or s.ed_time is None:
            results.append(_sample_result(s, "failed", "no ground truth (time range and boxes) in the annotations"))
            continue
        path = _resolve_video_path(s, videos_dir)
        if path is None:
            results.append(
                _sample_result(
                    s,
                    "failed",
                    f"video {s.video!r} not found"
                    + (f" in {videos_dir}" if videos_dir else "")
                    + ": pass --videos DIR",
                )
            )
            continue
        if sample_is_complete(out_dir, s.key):
            results.append(_sample_result(s, "skipped_existing"))
            continue
        groups[path].append(s)

    start = time.perf_counter()
    if config.workers == 1 or len(groups) <= 1:
        processor = load_clip_processor(config.processor) if groups else None
        for path, group in groups.items():
            results.extend(prepare_video_samples(path, group, out_dir, config, processor))
            if on_video is not None:
                on_video(path)
    else:
        import multiprocessing

        # "spawn": forking a process that already holds torch/tokenizers threads can crash the children
        with ProcessPoolExecutor(
            max_workers=config.workers,
            initializer=_init_worker,
            initargs=(config.processor,),
            mp_context=multiprocessing.get_context("spawn"),
        ) as pool:
            futures = {
                pool.submit(prepare_video_samples, path, group, out_dir, config): path for path, group in groups.items()
            }
            for future in as_completed(futures):
                results.extend(future.result())
                if on_video is not None:
                    on_video(futures[future])
    report = build_report(results, annotations, out_dir, config, time.perf_counter() - start)
    write_json_atomic(out_dir / "report.json", report, indent=1)
    return report


def build_report(
    results: list[dict[str, Any]], annotations, out_dir: Path, config: PrepareConfig, seconds: float
) -> dict[str, Any]:
    """Counts by status, the failures with reasons, every assignment, and the truth check where possible."""
    results = sorted(results, key=lambda r: r["sample_id"])
    counts = Counter(r["status"] for r in results)
    checked = [r for r in results if "agrees_with_truth" in r]
    report: dict[str, Any] = {
        "annotations": str(annotations),
        "cache": str(out_dir),
        "tracker": config.tracker,
        "gt_id_config": asdict(config.gt_id),
        "seconds": round(seconds, 2),
        "num_samples": len(results),
        "counts": dict(sorted(counts.items())),
        "failures": [r for r in results if r["status"] not in ("cached", "skipped_existing")],
        "samples": results,
    }
    if checked:
        assigned = [r for r in checked if r["gt_id"] is not None]
        agree = sum(bool(r["agrees_with_truth"]) for r in assigned)
        report["truth_check"] = {
            "num_checked": len(checked),
            "num_assigned": len(assigned),
            "num_agree": agree,
            "agreement": round(agree / len(assigned), 4) if assigned else None,
            "disagreements": [
                {"sample_id": r["sample_id"], "gt_id": r["gt_id"], "true_track_id": r["true_track_id"]}
                for r in assigned
                if not r["agrees_with_truth"]
            ],
            "unassigned": [
                {
                    "sample_id": r["sample_id"],
                    "status": r["status"],
                    "true_track_id": r["true_track_id"],
                    "reason": r["reason"],
                }
                for r in checked
                if r["gt_id"] is None
            ],
        }
    return report
