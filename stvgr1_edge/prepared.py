"""Prepared clips (``stvg-edge train prepare``), the dataset format that training, evaluation and int4 calibration
read: tracked, prompted and preprocessed once, never decoded again. Per video one safetensors file of processor
tensors, per sample one JSON of metadata.

Layout of ``CACHE/``::

    videos/<video id>.safetensors   pixel_values_videos, video_grid_thw, second_per_grid_ts (one tracking pass)
    samples/<sample id>.json        prompt, GT id, GT time range (s), duration (s), the video file, ...
    report.json                     what `prepare` did: cached, skipped, failed (with reasons), GT-ID checks

A sample is complete when its JSON exists and names a video file that exists; the JSON is written last
(atomically), so an interrupted run leaves no half sample behind and a rerun skips what is complete.
Training reads only this folder: it never decodes video.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadInputError, atomic_output, read_json, write_json_atomic

if TYPE_CHECKING:  # pragma: no cover
    import torch

CACHE_VERSION = 1


@dataclass(frozen=True)
class VideoTensors:
    """One video's processor tensors (CPU)."""

    pixel_values_videos: "torch.Tensor"
    """(num_patches, C * temporal_patch * patch * patch)."""
    video_grid_thw: "torch.Tensor"
    """(1, 3) patch grid."""
    second_per_grid_ts: "torch.Tensor"
    """(1,) seconds per temporal patch."""

    @property
    def num_patches(self) -> int:
        return int(self.video_grid_thw.prod())

    def num_visual_tokens(self, merge_size: int) -> int:
        return self.num_patches // merge_size**2


def safe_id(key: str, readable: str | None = None) -> str:
    """A file-system-safe, unique name for a key: a readable prefix (``readable`` or the key) + a hash of the key."""
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", readable if readable is not None else key)[:80].strip("._") or "x"
    return f"{prefix}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class CachedSample:
    """Metadata of one training sample (the JSON next to the tensors)."""

    sample_id: str
    """The annotation key (e.g. the HCSTVG video file name, or ``<vid>#caption<i>``)."""
    video: str
    """The video as the annotations name it."""
    video_file: str
    """Tensor file, relative to the cache folder (``videos/<id>.safetensors``)."""
    query: str
    prompt: str
    """The STVG-R1 prompt text for this query (without chat template)."""
    gt_id: int
    """The tracked object ID whose track matches the GT boxes (see ``assign_gt_id``)."""
    gt_start_s: float
    gt_end_s: float
    """GT time range in seconds from the first frame."""
    duration_s: float
    """Video length in seconds."""
    num_visual_tokens: int
    valid_ids: tuple[int, ...]
    """All tracked IDs drawn into the video."""
    vote_share: float
    mean_iou: float
    object_labels: tuple[str, ...] = ()
    """What each of ``valid_ids`` is, where the annotations say (synthetic clips: "size colour shape" of the true
    object the track matches; "" where none matches). Empty for datasets without per-object labels."""
    processor: dict[str, Any] = field(default_factory=dict)
    """Preprocessing constants the tensors were made with."""
    frame_times_s: tuple[float, ...] = ()
    """Presentation time of each sampled frame (``VideoInfo.frame_times_s``), in tensor order; empty in caches
    written before it."""
    target_boxes: tuple[tuple[float, ...], ...] = ()
    """The annotated target box in each sampled frame, in tensor order, as fractions of the frame (x0, y0, x1, y1);
    ``()`` for a frame the annotations give no box (outside the GT range). Empty in caches written before it."""
    version: int = CACHE_VERSION

    def to_row(self, cache_dir: Path) -> dict[str, Any]:
        """A dataset row for the trainers (every column is passed to the reward functions)."""
        return {
            "prompt": self.prompt,
            "query": self.query,
            "sample_id": self.sample_id,
            "video_file": str(cache_dir / self.video_file),
            "gt_id": int(self.gt_id),
            "gt_start_s": float(self.gt_start_s),
            "gt_end_s": float(self.gt_end_s),
            "duration_s": float(self.duration_s),
            "valid_ids": list(self.valid_ids),
            "object_labels": list(self.object_labels) if self.object_labels else [""] * len(self.valid_ids),
            "frame_times_s": list(self.frame_times_s),
            "target_boxes": [list(box) for box in self.target_boxes],
        }


def sample_path(cache_dir: Path, sample_id: str) -> Path:
    return Path(cache_dir) / "samples" / f"{safe_id(sample_id)}.json"


def video_file_name(video_path: str) -> str:
    """``videos/<file stem>-<hash of the full path>.safetensors``."""
    return f"videos/{safe_id(str(video_path), Path(video_path).stem)}.safetensors"


def write_video_tensors(path: Path, video: VideoTensors, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "pixel_values_videos": video.pixel_values_videos.contiguous(),
        "video_grid_thw": video.video_grid_thw.contiguous(),
        "second_per_grid_ts": video.second_per_grid_ts.contiguous(),
    }
    with atomic_output(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_video_tensors(path: str | Path) -> VideoTensors:
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
    except Exception as exc:  # OSError, or safetensors' own error type for a corrupt file
        raise BadInputError(
            f"cannot read cached video tensors {path} ({exc}): rerun `stvg-edge train prepare`"
        ) from None
    return VideoTensors(t["pixel_values_videos"], t["video_grid_thw"], t["second_per_grid_ts"])


def write_sample(cache_dir: Path, sample: CachedSample) -> Path:
    path = sample_path(cache_dir, sample.sample_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = asdict(sample)
    d["valid_ids"] = list(sample.valid_ids)
    d["object_labels"] = list(sample.object_labels)
    d["frame_times_s"] = list(sample.frame_times_s)
    d["target_boxes"] = [list(box) for box in sample.target_boxes]
    write_json_atomic(path, d, indent=1)
    return path


def sample_is_complete(cache_dir: Path, sample_id: str) -> bool:
    path = sample_path(cache_dir, sample_id)
    if not path.exists():
        return False
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("version") == CACHE_VERSION and (Path(cache_dir) / meta.get("video_file", "")).is_file()


def load_cached_samples(cache_dir: str | Path) -> list[CachedSample]:
    """Every complete sample in ``cache_dir``, sorted by sample id (a stable dataset order)."""
    cache_dir = Path(cache_dir)
    folder = cache_dir / "samples"
    if not folder.is_dir():
        raise BadInputError(
            f"{cache_dir} is not a training cache (no samples/ folder): "
            f"run  stvg-edge train prepare ANNOTATIONS --videos DIR --out {cache_dir}"
        )
    samples = []
    for path in sorted(folder.glob("*.json")):
        meta = read_json(path, "cached sample")
        meta["valid_ids"] = tuple(meta.get("valid_ids", ()))
        meta["object_labels"] = tuple(meta.get("object_labels", ()))
        meta["frame_times_s"] = tuple(meta.get("frame_times_s", ()))
        meta["target_boxes"] = tuple(tuple(box) for box in meta.get("target_boxes", ()))
        sample = CachedSample(**meta)
        if not (cache_dir / sample.video_file).is_file():
            raise BadInputError(f"{path} names {sample.video_file}, which is missing: rerun `stvg-edge train prepare`")
        samples.append(sample)
    if not samples:
        raise BadInputError(f"{cache_dir} holds no prepared samples: check {cache_dir}/report.json for failures")
    return sorted(samples, key=lambda s: s.sample_id)


def cached_model_inputs(inputs_for, cache_dir: str | Path, sample: CachedSample) -> dict[str, Any]:
    """Everything ``model.generate`` receives for a cached sample: its stored video tensors and its prompt, laid out
    by ``inputs_for`` (a :class:`stvgr1_edge.grounding.GroundingInputs`, e.g. a Grounder), on CPU."""
    from .grounding import VideoInputs

    video = read_video_tensors(Path(cache_dir) / sample.video_file)
    merge = int(inputs_for.processor.video_processor.merge_size)
    return inputs_for.model_inputs(
        VideoInputs(
            video.pixel_values_videos,
            video.video_grid_thw,
            video.second_per_grid_ts,
            video.num_visual_tokens(merge),
            0.0,
        ),
        sample.prompt,
    )
