"""`stvg-edge predict`: ground every query of an annotation file over a folder of videos, one JSONL line per query.

Built for benchmark-sized sets that take hours:

* **Resumable.** Each finished query is appended to the output as one line (a single ``write`` followed by
  ``fsync``), so a killed run loses at most the video it was on. Rerunning skips every key already in the file;
  a last line cut short by the kill is dropped first. Beside the output, ``<output>.config.json`` records what
  produced it, and a rerun with another model or other settings is refused rather than mixed in.
* **Track once per video.** The queries of one video are answered together (one decode, one tracking pass, one
  vision encoding), and the video's tracks are kept in ``<output stem>.tracks/`` at full precision: a resumed
  video replays them instead of tracking again (and answers exactly as an uninterrupted run), and
  ``stvg-edge eval`` reads them to score answered IDs (each line's ``tracks_file``).
* **Sharded.** ``Shard(i, n)`` takes every n-th video (sorted by name, so the n shards partition the set and
  never share a video) and writes ``<stem>-0000i-of-0000n.jsonl``; under ``torchrun`` / ``accelerate launch``
  the shard comes from ``RANK`` / ``WORLD_SIZE``. ``stvg-edge eval pred.jsonl`` merges the shard files.
* **Failures are data.** A video that cannot be read (missing file, undecodable stream) gets one line per query
  with its ``error``; the run goes on. Genuine bugs still stop it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .dataset import STVGSample
from .errors import BadInputError, StvgError, read_json, write_json_atomic
from .metrics import shard_file_name
from .pipeline import GroundingPipeline
from .tracking.replay import ReplayTracker
from .tracks import TrackSet

logger = logging.getLogger(__name__)


# --- shards -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise BadInputError(f"shard {self.index}/{self.count}: need 0 <= i < n, e.g. --shard 0/4 ... --shard 3/4")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"i/n"`` (``--shard``)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise BadInputError(f"--shard {text!r} is not i/n (e.g. --shard 0/4 for the first of four shards)")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def from_environment(cls) -> "Shard | None":
        """The shard of this process under ``torchrun`` or ``accelerate launch`` (``RANK`` of ``WORLD_SIZE``)."""
        world, rank = os.environ.get("WORLD_SIZE"), os.environ.get("RANK")
        if world is None or rank is None:
            return None
        try:
            return cls(int(rank), int(world))
        except ValueError:
            raise BadInputError(f"RANK={rank!r} / WORLD_SIZE={world!r} are not integers") from None

    def output_path(self, path: str | os.PathLike) -> Path:
        return shard_file_name(path, self.index, self.count)


# --- videos -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoJob:
    """The samples of one video (in annotation order) and where the video file is."""

    video: str
    path: Path | None
    samples: tuple[STVGSample, ...]
    candidates: int = 1
    """Files under the video folder that could be it (more than one: ambiguous, the video fails)."""


def plan_videos(samples: Sequence[STVGSample], video_dir: str | os.PathLike | None) -> list[VideoJob]:
    """Group samples by video, sorted by video name. A video is the file of that name anywhere under ``video_dir``
    (sub-folders included), else the one file with its stem (annotations name ``.mp4`` files that are ``.mkv`` on
    disk, among others), else the annotation's own ``video_path``."""
    groups: dict[str, list[STVGSample]] = {}
    for s in samples:
        groups.setdefault(s.video, []).append(s)
    by_name: dict[str, list[Path]] = {}
    by_stem: dict[str, list[Path]] = {}
    if video_dir is not None:
        for folder, _dirs, files in os.walk(str(video_dir)):
            for file_name in files:
                file_path = Path(folder) / file_name
                by_name.setdefault(file_name, []).append(file_path)
                by_stem.setdefault(file_path.stem, []).append(file_path)
    jobs = []
    for video in sorted(groups):
        name, stem = Path(video).name, Path(video).stem
        found = by_name.get(name) or by_stem.get(stem) or []
        path: Path | None = found[0] if len(found) == 1 else None
        if path is None and not found and groups[video][0].video_path:
            path = Path(str(groups[video][0].video_path))
        jobs.append(
            VideoJob(video, path if path is not None and path.is_file() else None, tuple(groups[video]), len(found))
        )
    return jobs


def tracks_file_name(video: str) -> str:
    """A file name for a video's tracks that is unique per video name (stems may repeat across folders)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(video).stem)[:80] or "video"
    return f"{stem}-{hashlib.sha1(video.encode()).hexdigest()[:8]}.json"


# --- the output file ----------------------------------------------------------------------------------
class PredictionLog:
    """The JSONL output, opened for appending: the keys already written, and :meth:`append` for one more line."""

    def __init__(self, path: str | os.PathLike, resume: bool = True):
        self.path = Path(path)
        self.done: set[str] = set()
        self.failed: set[str] = set()
        if self.path.exists() and not resume:
            self.path.unlink()
        if self.path.exists():
            self._read_existing()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _read_existing(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]  # a line cut short by a kill has no newline yet
        if len(complete) < len(data):
            logger.warning(
                "%s: dropping an incomplete last line (the previous run was stopped while writing it)", self.path
            )
            os.truncate(self.path, len(complete))
        for number, line in enumerate(complete.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                key = obj["key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise BadInputError(
                    f"{self.path}: line {number} is not a prediction line; is -o pointing at another file?"
                ) from None
            (self.failed if obj.get("error") is not None else self.done).add(str(key))

    def drop_failed(self) -> None:
        """Remove the lines of failed videos (to try them again); the rest is rewritten atomically."""
        if not self.failed:
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line).get("error") is None
        ]
        os.close(self._fd)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.path)
        self.failed.clear()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, obj: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "PredictionLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SETTINGS_THAT_DO_NOT_CHANGE_ANSWERS = {
    ("grounder", "device"),
    ("grounder", "engine"),  # the static engine's greedy tokens are generate's (tests/test_engine.py)
    ("pipeline", "decode_ahead"),
    ("pipeline", "frame_memory_mb"),
    ("pipeline", "frame_spill_dir"),
}


def _answer_settings(description: dict) -> dict[str, Any]:
    """``{"part.key": value}`` of a pipeline description, without the settings that do not change answers."""
    flat: dict[str, Any] = {}
    for part, values in description.items():
        for key, value in values.items() if isinstance(values, dict) else [(None, values)]:
            if (part, key) not in _SETTINGS_THAT_DO_NOT_CHANGE_ANSWERS:
                flat[part if key is None else f"{part}.{key}"] = value
    return flat


def check_config_file(path: Path, description: dict, resume: bool) -> None:
    """Write what produces the predictions beside them; refuse to append to predictions of another setup."""
    if resume and path.exists():
        before, now = _answer_settings(read_json(path, "predictions config")), _answer_settings(description)
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if changed:
            raise BadInputError(
                f"{path.name} says these predictions were made with other settings ({', '.join(changed)}): write to "
                "another -o, or start over with --no-resume"
            )
    write_json_atomic(path, description, indent=1)


# --- the loop -----------------------------------------------------------------------------------------
@dataclass
class PredictSummary:
    output: Path
    queries: int
    """Queries in this shard."""
    already_done: int
    predicted: int = 0
    failed: int = 0
    failed_videos: int = 0
    seconds: float = 0.0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def predict_dataset(
    samples: Sequence[STVGSample],
    video_dir: str | os.PathLike | None,
    pipeline: GroundingPipeline,
    output: str | os.PathLike,
    shard: Shard = Shard(),
    resume: bool = True,
    retry_failed: bool = False,
    on_start: Callable[[PredictSummary], None] | None = None,
    on_video: Callable[[int], None] | None = None,
) -> PredictSummary:
    """Ground every sample of this shard not yet in the output; ``on_video(n)`` after each video (n: its queries).

    ``output`` is the unsharded name; shard ``i`` of ``n`` writes :meth:`Shard.output_path`."""
    output = Path(output)
    out_path = shard.output_path(output)
    tracks_dir = output.with_name(output.stem + ".tracks")
    jobs = plan_videos(samples, video_dir)[shard.index :: shard.count]
    check_config_file(out_path.with_name(out_path.name + ".config.json"), pipeline.describe(), resume)
    start = time.perf_counter()
    with PredictionLog(out_path, resume=resume) as log:
        if retry_failed:
            log.drop_failed()
        finished = log.done | log.failed
        summary = PredictSummary(
            out_path, sum(len(j.samples) for j in jobs), sum(s.key in finished for j in jobs for s in j.samples)
        )
        if on_start is not None:
            on_start(summary)
        for job in jobs:
            todo = [s for s in job.samples if s.key not in finished]
            if not todo:
                continue
            lines = _predict_video(job, todo, pipeline, tracks_dir, out_path.parent)
            for line in lines:
                log.append(line)
            failed = sum("error" in line for line in lines)
            summary.failed += failed
            summary.failed_videos += failed > 0
            summary.predicted += len(lines) - failed
            if on_video is not None:
                on_video(len(lines))
    summary.seconds = time.perf_counter() - start
    return summary


def _predict_video(
    job: VideoJob, todo: list[STVGSample], pipeline: GroundingPipeline, tracks_dir: Path, out_dir: Path
) -> list[dict[str, Any]]:
    """One line per sample of ``todo``: the answer, or the video's error."""
    time_only = pipeline.config.time_only
    tracks_file = tracks_dir / tracks_file_name(job.video)
    try:
        if job.path is None and job.candidates > 1:
            raise BadInputError(f"{job.candidates} files under the video folder could be '{job.video}': rename them")
        if job.path is None:
            raise BadInputError(
                f"video file not found for '{job.video}' (looked under the video folder and video_path)"
            )
        if not time_only and tracks_file.exists():  # tracked before this run was stopped: replay, exactly
            replay = ReplayTracker(TrackSet.load(tracks_file), source=str(tracks_file))
            pipeline = GroundingPipeline(replay, pipeline.grounder, pipeline.config, pipeline.description)
        result = pipeline.run(job.path, [s.query for s in todo])
        if not time_only and not tracks_file.exists():
            tracks_dir.mkdir(parents=True, exist_ok=True)
            result.tracks.save(tracks_file, decimals=None)
    except (StvgError, OSError) as exc:
        logger.warning("%s: %s", job.video, _one_line(exc))
        return [{"key": s.key, "video": job.video, "query": s.query, "error": _one_line(exc)} for s in todo]
    video = {
        "fps": result.info.fps,
        "num_frames": result.info.num_frames,
        "duration_s": round(result.info.duration_s, 4),
        "num_tracks": len(result.tracks),
        "tracks_file": None if time_only else os.path.relpath(tracks_file, out_dir),
    }
    lines = []
    for sample, q in zip(todo, result.queries):
        answer = q.to_dict()
        answer.pop("query")
        lines.append({"key": sample.key, "video": job.video, "query": sample.query, **answer, **video})
    return lines
