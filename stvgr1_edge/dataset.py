"""Grounding annotations: one typed record per (video, query), loaders for the public formats, a writer.

Formats read by :func:`load_annotations` (detected from the JSON's shape):

* **HCSTVG-v2** -- ``{"<video file>": {"img_num", "img_hw" | "img_size" | "width"+"height", "st_frame",
  "ed_frame", "st_time", "ed_time", "bbox": [[x, y, w, h], ...], "English"}}``. This is also what
  ``stvg-edge synth`` writes, plus the optional ``fps``, ``target_id``, ``gt_tracks`` (tracks JSON of
  every object), ``video_path``.
* **HCSTVG-v1** -- the same dictionary, with ``width``/``height`` and the sentence under ``caption``
  (no ``English``).
* **VidSTG** -- a list of VidOR-style entries ``{"vid", "frame_count", "fps", "width", "height",
  "temporal_gt": {"begin_fid", "end_fid"}, "subject/objects": [{"tid", "category"}], "trajectories":
  [[{"tid", "bbox": {"xmin", "ymin", "xmax", "ymax"}}, ...] per frame], "captions" / "questions":
  [{"target_id", "description"}]}``; one sample per sentence, keyed ``<vid>#caption<i>`` /
  ``<vid>#question<i>``.
* **Query list** -- ``{"<video file>": "<sentence>"}`` (e.g. ``shared/data/hcstvg_v2_queries.json``):
  samples with a query and no ground truth.

Frame convention (the decision every consumer relies on): frame indices in an :class:`STVGSample`
are **0-based native frame numbers**, and ``st_frame..ed_frame`` is **inclusive**, with one GT box per
frame of that range. How each format maps onto it:

* HCSTVG-v2 / synthetic: ``st_frame`` is the 0-based index of ``bbox[0]`` (this is how TubeDETR's
  ``hcstvg_eval.py`` and the STVG-R1 reference script index decoded frames with it);
  ``bbox[i]`` belongs to frame ``st_frame + i``, so ``ed_frame = st_frame + len(bbox) - 1``. A file's
  ``ed_frame`` may be inclusive (``len(bbox) == ed - st + 1``, what ``synth`` writes) or exclusive
  (``len(bbox) == ed - st``); any other box count is an error.
* HCSTVG-v1: ``st_frame`` counts from 1 (STCAT subtracts one; TubeDETR's preprocessing notes "starts
  with 1"), so it is shifted down by one. ``hcstvg_first_frame`` overrides either default.
* VidSTG: ``temporal_gt.end_fid`` is exclusive (TubeDETR checks ``end_fid - 1`` against the
  trajectory), so ``ed_frame = end_fid - 1``; ``trajectories[i]`` is frame ``i`` (or frame
  ``used_segment.begin_fid + i`` when the list covers only the used segment).
* Times: ``st_time``/``ed_time`` are seconds of the first/last GT frame; where a file has none they
  are ``frame / fps``. HC-STVG files carry no fps: :meth:`STVGSample.frame_rate` then assumes the
  dataset's 20-second clips (``img_num / 20``), as TubeDETR does.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import AnnotationError, atomic_output, read_json

logger = logging.getLogger(__name__)

HCSTVG_CLIP_SECONDS = 20.0
"""HC-STVG clips are treated as 20 s long when no fps is known (TubeDETR: ``video_fps = frame_count / 20``)."""

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class STVGSample:
    """One grounding query on one video, with its ground truth (absent for query-only lists).

    Frames are 0-based native indices; ``st_frame..ed_frame`` is inclusive; boxes are absolute pixel
    ``(x1, y1, x2, y2)``; times are seconds from the first frame.
    """

    key: str
    """Unique key of this sample in its file: the HCSTVG video file name, or ``<vid>#caption<i>`` for VidSTG."""
    video: str
    """The video as the dataset names it (file name or id); predictions may be keyed by its stem."""
    query: str
    """The sentence describing the event."""
    video_path: str | None = None
    """Absolute path of the video file when known."""
    num_frames: int | None = None
    """Number of native frames of the video."""
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    """Native frame rate when the file states it (HC-STVG does not; see :meth:`frame_rate`)."""
    st_frame: int | None = None
    """First GT frame (0-based, inclusive)."""
    ed_frame: int | None = None
    """Last GT frame (0-based, inclusive)."""
    st_time: float | None = None
    """Start of the GT event in seconds."""
    ed_time: float | None = None
    """End of the GT event in seconds."""
    gt_boxes: Mapping[int, Box] = field(default_factory=dict)
    """GT box per native frame, xyxy pixels (converted from the files' xywh)."""
    target_id: int | None = None
    """ID of the target among ``gt_tracks`` (synthetic data) or the VidSTG ``tid``."""
    gt_tracks: Mapping[str, Any] | None = None
    """Every object's GT track in the ``TrackSet.to_dict()`` format, when the file has them."""
    dataset: str = "hcstvg-v2"
    """Format the sample was read from: hcstvg-v2, hcstvg-v1, vidstg or queries."""
    extras: Mapping[str, Any] = field(default_factory=dict)
    """Fields of the source entry that have no slot above (kept so that writing preserves them)."""

    @property
    def has_ground_truth(self) -> bool:
        return self.st_frame is not None and self.ed_frame is not None and self.num_frames is not None

    @property
    def video_stem(self) -> str:
        """The video name without folder or extension (``3_5MxjqHfkWFI.mkv`` -> ``3_5MxjqHfkWFI``)."""
        return Path(self.video).stem if Path(self.video).suffix else Path(self.video).name

    def frame_rate(self) -> float:
        """Native fps: the stated one, else ``num_frames / 20`` (HC-STVG clips are 20 s)."""
        if self.fps:
            return float(self.fps)
        if not self.num_frames:
            raise AnnotationError(f"sample '{self.key}' has neither fps nor num_frames: cannot map seconds to frames")
        return self.num_frames / HCSTVG_CLIP_SECONDS

    def gt_trackset(self):
        """``gt_tracks`` as a :class:`~stvgr1_edge.tracks.TrackSet` (None when absent)."""
        from .tracks import TrackSet

        return (
            None
            if self.gt_tracks is None
            else TrackSet.from_dict(dict(self.gt_tracks), source=f"sample '{self.key}' gt_tracks")
        )


# --- field checks (every message: "<file>: video '<key>': field '<name>' ...") -------------------------
class _Entry:
    """Typed access to one annotation entry with one-line errors naming the file, the video and the field."""

    def __init__(self, source: str, key: str, data: Any):
        self.source, self.key = source, key
        if not isinstance(data, dict):
            self.fail(None, f"is a {type(data).__name__}, expected an object")
        self.data = data

    def fail(self, name: str | None, what: str):
        where = f"{self.source}: video '{self.key}'"
        raise AnnotationError(f"{where}: field '{name}' {what}" if name else f"{where}: {what}")

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        if name not in self.data or self.data[name] is None:
            self.fail(name, "is missing")
        return self.data[name]

    def integer(self, name: str, minimum: int | None = None) -> int:
        v = self.raw(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
            self.fail(name, f"is {v!r}, expected an integer")
        if minimum is not None and v < minimum:
            self.fail(name, f"is {int(v)}, expected >= {minimum}")
        return int(v)

    def number(self, name: str, positive: bool = False) -> float:
        v = self.raw(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(name, f"is {v!r}, expected a number")
        if positive and v <= 0:
            self.fail(name, f"is {v}, expected a positive number")
        return float(v)

    def text(self, *names: str) -> str:
        for name in names:
            if isinstance(self.data.get(name), str):
                return self.data[name]
        self.fail(names[0], "is missing or not text")
        raise AssertionError  # unreachable

    def optional_float(self, name: str) -> float | None:
        return self.number(name) if self.has(name) else None

    def optional_int(self, name: str) -> int | None:
        return self.integer(name) if self.has(name) else None


def _xywh_to_xyxy(entry: _Entry, box: Any, index: int) -> Box:
    if (
        not isinstance(box, (list, tuple))
        or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    ):
        entry.fail("bbox", f"entry {index} is {box!r}, expected [x, y, w, h]")
    x, y, w, h = (float(v) for v in box)
    if w < 0 or h < 0:
        entry.fail("bbox", f"entry {index} has a negative width or height: {box!r}")
    return (x, y, x + w, y + h)


def _image_size(entry: _Entry) -> tuple[int, int]:
    """(height, width) from ``img_hw`` / ``img_size`` ([H, W] or [H, W, C]) or ``height`` + ``width``."""
    for name in ("img_hw", "img_size"):
        if entry.has(name):
            hw = entry.raw(name)
            if (
                not isinstance(hw, (list, tuple))
                or len(hw) not in (2, 3)
                or not all(isinstance(v, (int, float)) and v > 0 for v in hw[:2])
            ):
                entry.fail(name, f"is {hw!r}, expected [height, width]")
            return int(hw[0]), int(hw[1])
    if entry.has("height") and entry.has("width"):
        return entry.integer("height", 1), entry.integer("width", 1)
    entry.fail("img_hw", "is missing (also looked for 'img_size' and 'height'/'width')")
    raise AssertionError  # unreachable


def _resolve_video(annotation_dir: Path, video: str, explicit: str | None) -> str | None:
    if explicit:
        p = Path(explicit)
        return str((p if p.is_absolute() else annotation_dir / p).resolve())
    for candidate in (annotation_dir / "videos" / video, annotation_dir / video):
        if candidate.is_file():
            return str(candidate.resolve())
    return None


# --- HCSTVG -------------------------------------------------------------------------------------------
_HCSTVG_FIELDS = {
    "img_num",
    "img_hw",
    "img_size",
    "height",
    "width",
    "st_frame",
    "ed_frame",
    "st_time",
    "ed_time",
    "bbox",
    "English",
    "caption",
    "fps",
    "target_id",
    "gt_tracks",
    "video_path",
}


def _hcstvg_sample(entry: _Entry, version: str, first_frame: int, annotation_dir: Path) -> STVGSample:
    num_frames = entry.integer("img_num", 1)
    height, width = _image_size(entry)
    boxes = entry.raw("bbox")
    if not isinstance(boxes, list) or not boxes:
        entry.fail("bbox", "is empty or not a list, expected one [x, y, w, h] per GT frame")
    st_frame = entry.integer("st_frame", first_frame) - first_frame
    ed_frame = st_frame + len(boxes) - 1
    if entry.has("ed_frame"):
        stated_end = entry.integer("ed_frame", first_frame) - first_frame
        if stated_end < st_frame:
            entry.fail("ed_frame", f"is {stated_end + first_frame}, before st_frame {st_frame + first_frame}")
        if len(boxes) not in (stated_end - st_frame + 1, stated_end - st_frame):
            entry.fail(
                "bbox", f"has {len(boxes)} boxes, expected {stated_end - st_frame + 1} (ed_frame - st_frame + 1)"
            )
    if ed_frame >= num_frames:
        entry.fail(
            "bbox",
            f"runs to frame {ed_frame} (st_frame + {len(boxes)} boxes - 1), past the last frame {num_frames - 1} "
            "(img_num - 1)",
        )
    gt_boxes = {st_frame + i: _xywh_to_xyxy(entry, b, i) for i, b in enumerate(boxes)}
    fps = entry.number("fps", positive=True) if entry.has("fps") else None
    frame_rate = fps or num_frames / HCSTVG_CLIP_SECONDS
    st_time = entry.optional_float("st_time")
    ed_time = entry.optional_float("ed_time")
    st_time = st_frame / frame_rate if st_time is None else st_time
    ed_time = ed_frame / frame_rate if ed_time is None else ed_time
    if ed_time < st_time:
        entry.fail("ed_time", f"is {ed_time}, before st_time {st_time}")
    gt_tracks = None
    if entry.has("gt_tracks"):
        from .tracks import TrackSet

        gt_tracks = entry.raw("gt_tracks")
        TrackSet.from_dict(gt_tracks, source=f"{entry.source}: video '{entry.key}': field 'gt_tracks'")
    target_id = entry.optional_int("target_id")
    if target_id is not None and gt_tracks is not None and str(target_id) not in gt_tracks["tracks"]:
        entry.fail("target_id", f"is {target_id}, which is not a track in 'gt_tracks'")
    explicit_path = entry.data.get("video_path")
    if explicit_path is not None and not isinstance(explicit_path, str):
        entry.fail("video_path", f"is {explicit_path!r}, expected a path")
    return STVGSample(
        key=entry.key,
        video=entry.key,
        query=entry.text("English", "caption"),
        video_path=_resolve_video(annotation_dir, entry.key, explicit_path),
        num_frames=num_frames,
        height=height,
        width=width,
        fps=fps,
        st_frame=st_frame,
        ed_frame=ed_frame,
        st_time=st_time,
        ed_time=ed_time,
        gt_boxes=gt_boxes,
        target_id=target_id,
        gt_tracks=gt_tracks,
        dataset=version,
        extras={k: v for k, v in entry.data.items() if k not in _HCSTVG_FIELDS},
    )


def load_hcstvg(
    data: Mapping[str, Any],
    source: str = "annotations",
    version: str = "hcstvg-v2",
    first_frame: int | None = None,
    annotation_dir: str | os.PathLike = ".",
) -> list[STVGSample]:
    """Samples from an HCSTVG dictionary (v2, v1 or synthetic), in the file's order.

    ``first_frame`` is the number the file gives the video's first frame (default 0 for v2, 1 for v1).
    """
    if version not in ("hcstvg-v2", "hcstvg-v1"):
        raise ValueError(f"unknown HCSTVG version {version!r}")
    base = first_frame if first_frame is not None else (1 if version == "hcstvg-v1" else 0)
    return [
        _hcstvg_sample(_Entry(source, key, entry), version, base, Path(annotation_dir)) for key, entry in data.items()
    ]


# --- VidSTG -------------------------------------------------------------------------------------------
def _vidstg_samples(entry: _Entry, annotation_dir: Path) -> list[STVGSample]:
    num_frames = entry.integer("frame_count", 1)
    fps = entry.number("fps", positive=True)
    height, width = entry.integer("height", 1), entry.integer("width", 1)
    temporal = entry.raw("temporal_gt")
    if not isinstance(temporal, dict) or not all(isinstance(temporal.get(k), int) for k in ("begin_fid", "end_fid")):
        entry.fail("temporal_gt", f"is {temporal!r}, expected {{'begin_fid': int, 'end_fid': int}}")
    st_frame, ed_frame = temporal["begin_fid"], temporal["end_fid"] - 1  # end_fid is exclusive
    if not 0 <= st_frame <= ed_frame < num_frames:
        entry.fail(
            "temporal_gt", f"is [{st_frame}, {temporal['end_fid']}), outside 0..{num_frames} (frame_count) or empty"
        )
    trajectories = entry.raw("trajectories")
    if not isinstance(trajectories, list):
        entry.fail("trajectories", "is not a list of per-frame box lists")
    offset = 0
    segment = entry.data.get("used_segment")
    if (
        isinstance(segment, dict)
        and isinstance(segment.get("begin_fid"), int)
        and len(trajectories) == segment.get("end_fid", -1) - segment["begin_fid"] != num_frames
    ):
        offset = segment["begin_fid"]
    boxes_by_tid: dict[int, dict[int, Box]] = {}
    for i, frame_boxes in enumerate(trajectories):
        if not isinstance(frame_boxes, list):
            entry.fail("trajectories", f"frame {i} is not a list of boxes")
        for ann in frame_boxes:
            try:
                b = ann["bbox"]
                box = (float(b["xmin"]), float(b["ymin"]), float(b["xmax"]), float(b["ymax"]))
                tid = int(ann["tid"])
            except (KeyError, TypeError, ValueError):
                entry.fail(
                    "trajectories",
                    f"frame {i} has {ann!r}, expected {{'tid', 'bbox': {{'xmin', 'ymin', 'xmax', 'ymax'}}}}",
                )
            boxes_by_tid.setdefault(tid, {})[offset + i] = box
    extras = {k: v for k, v in entry.data.items() if k in ("used_segment", "subject/objects")}
    samples = []
    for kind in ("captions", "questions"):
        sentences = entry.data.get(kind) or []
        if not isinstance(sentences, list):
            entry.fail(kind, "is not a list")
        for i, sentence in enumerate(sentences):
            if (
                not isinstance(sentence, dict)
                or not isinstance(sentence.get("description"), str)
                or not isinstance(sentence.get("target_id"), int)
            ):
                entry.fail(kind, f"entry {i} is {sentence!r}, expected {{'target_id': int, 'description': str}}")
            tid = sentence["target_id"]
            if tid not in boxes_by_tid:
                entry.fail(kind, f"entry {i} has target_id {tid}, which has no trajectory")
            track = boxes_by_tid[tid]
            samples.append(
                STVGSample(
                    key=f"{entry.key}#{kind[:-1]}{i}",
                    video=entry.key,
                    query=sentence["description"],
                    video_path=_resolve_video(annotation_dir, entry.key + ".mp4", entry.data.get("video_path")),
                    num_frames=num_frames,
                    height=height,
                    width=width,
                    fps=fps,
                    st_frame=st_frame,
                    ed_frame=ed_frame,
                    st_time=st_frame / fps,
                    ed_time=ed_frame / fps,
                    gt_boxes={f: track[f] for f in range(st_frame, ed_frame + 1) if f in track},
                    target_id=tid,
                    dataset="vidstg",
                    extras={**extras, "sentence_type": kind[:-1]},
                )
            )
    if not samples:
        entry.fail("captions", "is empty and so is 'questions': no sentence to ground")
    return samples


def load_vidstg(
    entries: Iterable[Any], source: str = "annotations", annotation_dir: str | os.PathLike = "."
) -> list[STVGSample]:
    """Samples from VidSTG entries (one per caption and question)."""
    samples: list[STVGSample] = []
    for n, data in enumerate(entries):
        key = str(data.get("vid", f"#{n}")) if isinstance(data, dict) else f"#{n}"
        samples.extend(_vidstg_samples(_Entry(source, key, data), Path(annotation_dir)))
    return samples


# --- query lists --------------------------------------------------------------------------------------
def load_query_list(data: Mapping[str, str], source: str = "queries") -> list[STVGSample]:
    """Query-only samples from ``{video: sentence}`` (no ground truth)."""
    samples = []
    for video, sentence in data.items():
        if not isinstance(sentence, str) or not sentence.strip():
            raise AnnotationError(f"{source}: video '{video}': query is {sentence!r}, expected a non-empty sentence")
        samples.append(STVGSample(key=video, video=video, query=sentence, dataset="queries"))
    return samples


# --- detection ----------------------------------------------------------------------------------------
def detect_format(data: Any) -> str:
    """``hcstvg-v2``, ``hcstvg-v1``, ``vidstg`` or ``queries`` from the JSON's shape; ``unknown`` otherwise."""
    if isinstance(data, dict) and "vid" in data and "temporal_gt" in data:
        return "vidstg"
    if isinstance(data, list):
        return "vidstg" if data and all(isinstance(e, dict) and "vid" in e for e in data) else "unknown"
    if not isinstance(data, dict) or not data:
        return "unknown"
    values = list(data.values())
    if all(isinstance(v, str) for v in values):
        return "queries"
    if all(isinstance(v, dict) for v in values) and "bbox" in values[0] and "st_frame" in values[0]:
        first = values[0]
        if "English" not in first and "caption" in first and "img_hw" not in first and "img_size" not in first:
            return "hcstvg-v1"
        return "hcstvg-v2"
    return "unknown"


def load_annotations(path: str | os.PathLike, hcstvg_first_frame: int | None = None) -> list[STVGSample]:
    """Read an annotation file of any supported format (see the module docstring) into samples."""
    path = Path(path)
    data = read_json(path, "annotation file")
    source, directory = path.name, path.parent
    fmt = detect_format(data)
    logger.info("%s: %s annotations", path, fmt)
    if fmt == "hcstvg-v2" or fmt == "hcstvg-v1":
        return load_hcstvg(data, source, fmt, hcstvg_first_frame, directory)
    if fmt == "vidstg":
        return load_vidstg([data] if isinstance(data, dict) else data, source, directory)
    if fmt == "queries":
        return load_query_list(data, source)
    if isinstance(data, dict) and not data:
        raise AnnotationError(f"{source}: annotation file has no videos")
    raise AnnotationError(
        f"{source}: unrecognised annotation format (expected HCSTVG {{video: {{st_frame, bbox, ...}}}}, "
        f"a VidSTG list of {{vid, temporal_gt, ...}}, or a {{video: sentence}} query list)"
    )


# --- writer -------------------------------------------------------------------------------------------
def _hcstvg_entry(sample: STVGSample, out_dir: Path) -> dict:
    if not sample.has_ground_truth:
        raise AnnotationError(
            f"sample '{sample.key}' has no ground truth: HCSTVG-v2 needs st_frame, ed_frame and boxes"
        )
    assert sample.st_frame is not None and sample.ed_frame is not None  # has_ground_truth
    missing = [f for f in range(sample.st_frame, sample.ed_frame + 1) if f not in sample.gt_boxes]
    if missing:
        raise AnnotationError(
            f"sample '{sample.key}' has no GT box at frame(s) {missing[:5]}: HCSTVG-v2 needs one per GT frame"
        )
    entry: dict[str, Any] = dict(sample.extras)
    entry.update(
        {
            "img_num": sample.num_frames,
            "img_hw": [sample.height, sample.width],
            "st_frame": sample.st_frame,
            "ed_frame": sample.ed_frame,
            "st_time": sample.st_time,
            "ed_time": sample.ed_time,
            "bbox": [
                [x1, y1, x2 - x1, y2 - y1]
                for x1, y1, x2, y2 in (sample.gt_boxes[f] for f in range(sample.st_frame, sample.ed_frame + 1))
            ],
            "English": sample.query,
        }
    )
    if sample.fps is not None:
        entry["fps"] = sample.fps
    if sample.target_id is not None:
        entry["target_id"] = sample.target_id
    if sample.gt_tracks is not None:
        entry["gt_tracks"] = sample.gt_tracks
    if sample.video_path is not None:
        entry["video_path"] = os.path.relpath(sample.video_path, out_dir.resolve())
    return entry


def write_hcstvg_v2(samples: Iterable[STVGSample], path: str | os.PathLike) -> Path:
    """Write samples as an HCSTVG-v2 dictionary keyed by ``sample.key`` (atomically); returns the path.

    0-based inclusive ``st_frame``/``ed_frame``, xywh boxes, plus ``fps``, ``target_id``, ``gt_tracks``
    and ``video_path`` (relative to the file) when the samples have them.
    """
    path = Path(path)
    out: dict[str, Any] = {}
    for s in samples:
        if s.key in out:
            raise AnnotationError(f"two samples share the key '{s.key}': HCSTVG-v2 files hold one query per video")
        out[s.key] = _hcstvg_entry(s, path.parent)
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False)
            f.write("\n")
    return path
