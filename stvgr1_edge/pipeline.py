"""video + queries → tracks → prompted frames → answers → tubes, in one streaming decode pass.

The hot path, top to bottom (:meth:`GroundingPipeline.run`):

1. probe the video and plan the VLM's frame sampling (§4) before any pixel is decoded;
2. decode once: every frame goes to the tracker, the sampled ones are also kept (≤ 768 frames; past
   ``frame_memory_mb`` they wait in a temporary folder);
3. draw ID markers on the kept frames at native resolution (§3), shrink each to the VLM's size → ``PromptedClip``;
4. encode the clip's frames once, then answer each query (vision features are shared);
5. parse each answer (§6) and read its tube off the tracks.

Models (tracker, grounder) are built once and passed in; nothing is reloaded per video or query.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .answer import GroundingAnswer, parse_answer
from .clip import PromptedClip
from .errors import BadInputError
from .grounding import VideoGrounder
from .prompt import grounding_prompt, multi_object_prompt, normalize_query, time_only_prompt
from .prompted import track_and_prompt
from .sampling import FrameSampling, SamplingConfig, plan_sampling
from .tracking.base import StreamingTracker
from .tracks import TrackSet
from .tube import Tube, build_tube
from .video import Frame, VideoInfo, check_hw_decode, decode_ahead, iter_frames, probe_video

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline does between the models. Defaults reproduce STVG-R1's evaluation."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Frame sampling and resizing for the VLM (§4)."""
    time_only: bool = False
    """Temporal grounding only: no markers, no IDs, no tube (``--time-only``)."""
    multi_object: bool = False
    """Ask for every object ID involved (several targets); the tube is then the union box (``--multi``)."""
    normalize_query: bool = True
    """Lower-case the query and drop a final "." as training did (§5)."""
    interpolate: bool = True
    """Fill tube boxes on frames the tracker skipped (``--track-every`` > 1) by linear interpolation."""
    id_repair: bool = False
    """The reference evaluation's lenient ID repair when the answered ID is missing in a frame (§6)."""
    frame_memory_mb: float | None = 1024.0
    """The sampled frames wait at native resolution until tracking ends (the markers need the final tracks):
    past this many MB they wait in a temporary folder instead of memory (None: always in memory). 768 frames of
    1080p are 4.8 GB."""
    frame_spill_dir: str | None = None
    """Where that temporary folder goes (default: the system's temp folder)."""
    decode_ahead: int = 8
    """Frames decoded ahead in a background thread while the tracker works (0: decode in the caller's thread)."""
    hw_decode: str | None = None
    """FFmpeg hardware decoder device type (``cuda``, ``vaapi``, ...; see :func:`~stvgr1_edge.video.hw_decode_types`);
    None: software decoding."""


@dataclass
class QueryResult:
    """One query's answer and tube (the per-query object of the result JSON)."""

    query: str
    answer: GroundingAnswer
    tube: Tube
    warnings: list[str]
    timings_ms: dict[str, float]
    num_generated_tokens: int = 0
    answer_agreement: float | None = None
    """With ``answer_samples``: how far the sampled answers agree with this one (0-1; None: not sampled)."""

    def to_dict(self) -> dict:
        d = {"query": self.query, **self.answer.to_dict(), "tube": self.tube.boxes_json()}
        d["warnings"] = list(self.warnings)
        d["timings_ms"] = {k: round(v, 2) for k, v in self.timings_ms.items()}
        d["num_generated_tokens"] = self.num_generated_tokens
        if self.answer_agreement is not None:
            d["answer_agreement"] = round(self.answer_agreement, 4)
        return d


@dataclass
class RunResult:
    """Everything one `run` produced (see ARCHITECTURE.md, result JSON)."""

    video: str
    info: VideoInfo
    sampling: FrameSampling
    tracks: TrackSet
    queries: list[QueryResult]
    timings_ms: dict[str, float]
    config: dict

    def to_dict(self) -> dict:
        return {
            "video": self.video,
            "fps": self.info.fps,
            "num_frames": self.info.num_frames,
            "width": self.info.width,
            "height": self.info.height,
            "duration_s": round(self.info.duration_s, 4),
            "sampled_frames": list(self.sampling.indices),
            "sample_fps": self.sampling.sample_fps,
            "num_tracks": len(self.tracks),
            "queries": [q.to_dict() for q in self.queries],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "real_time_factor": round(self.real_time_factor, 4),
            "config": self.config,
        }

    @property
    def real_time_factor(self) -> float:
        """Wall time of the whole run over the video's duration: below 1, it keeps up with the video."""
        return self.timings_ms.get("total", 0.0) / 1e3 / max(self.info.duration_s, 1e-9)

    def timing_line(self) -> str:
        """Per-stage wall time in one line, with the real-time factor."""
        t = self.timings_ms
        stages = ("decode", "track", "markers", "resize", "vision", "prefill", "decode_tokens")
        parts = ", ".join(f"{k} {t[k] / 1e3:.2f}" for k in stages if k in t)
        return (
            f"time (s): {parts}; total {t.get('total', 0.0) / 1e3:.2f} for {self.info.duration_s:.1f} s of video "
            f"(real-time factor {self.real_time_factor:.2f})"
        )


class GroundingPipeline:
    """Ties a tracker and a grounder together (build one from a :class:`~stvgr1_edge.run_config.RunConfig` with
    :func:`~stvgr1_edge.run_config.build_pipeline`). ``tracker`` may be None for time-only grounding.

    ``description`` is what the models are (set by ``build_pipeline``: the grounder's source, quantization, device
    and dtype, the tracker that runs); every result's ``config`` records it next to the pipeline settings."""

    def __init__(
        self,
        tracker: StreamingTracker | None,
        grounder: VideoGrounder,
        config: PipelineConfig = PipelineConfig(),
        description: dict | None = None,
    ):
        if tracker is None and not config.time_only:
            raise BadInputError("a pipeline without a tracker can only ground time ranges: set time_only")
        self.tracker = tracker
        self.grounder = grounder
        self.config = config
        self.description = description

    def describe(self) -> dict:
        """The result's ``config``: what ran (models, as built) and how (the pipeline settings)."""
        models = self.description
        if models is None:  # assembled by hand: say what the objects are
            grounder_config = getattr(self.grounder, "config", None)
            models = {
                "grounder": _jsonable(asdict(grounder_config)) if grounder_config is not None else None,
                "tracker": {"name": type(self.tracker).__name__ if self.tracker is not None else "none"},
            }
        return {**models, "pipeline": _jsonable(asdict(self.config))}

    def prompts_for(self, queries: Sequence[str]) -> list[str]:
        if self.config.time_only and self.config.multi_object:
            raise BadInputError("--time-only and --multi exclude each other: time-only answers have no IDs")
        make = (
            time_only_prompt
            if self.config.time_only
            else multi_object_prompt
            if self.config.multi_object
            else grounding_prompt
        )
        return [make(q, normalize=self.config.normalize_query) for q in queries]

    def run(
        self,
        video: str | Path,
        queries: Sequence[str],
        on_frame: Callable[[Frame], None] | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Ground every query in ``video`` with one decode and one tracking pass."""
        self._check_queries(queries)  # before any decoding
        check_hw_decode(self.config.hw_decode)
        started = time.perf_counter()
        info = probe_video(video)
        sampling = plan_sampling(info.num_frames, info.fps, info.height, info.width, self.config.sampling)
        frames = iter_frames(video, info=info, keep=self._frames_used(sampling), hw_decode=self.config.hw_decode)
        if self.config.decode_ahead > 0:
            frames = decode_ahead(frames, self.config.decode_ahead)
        with closing(frames):  # stops the decoding thread, also when tracking fails
            result = self.run_frames(frames, info, queries, on_frame, on_stage, sampling)
        result.timings_ms["total"] = (time.perf_counter() - started) * 1e3
        return result

    def run_frames(
        self,
        frames: Iterable[Frame],
        info: VideoInfo,
        queries: Sequence[str],
        on_frame: Callable[[Frame], None] | None = None,
        on_stage: Callable[[str], None] | None = None,
        sampling: FrameSampling | None = None,
    ) -> RunResult:
        """Ground every query in a clip given as decoded frames (a live window, say): ``frames`` are indexed
        ``0..info.num_frames - 1`` and ``info`` says their size, rate and times, as :func:`probe_video` would.
        ``sampling``: the VLM's frames, when the caller planned them already (default: planned from ``info``)."""
        prompts = self._check_queries(queries)
        stage = on_stage or (lambda name: None)
        t_total = time.perf_counter()
        timings: dict[str, float] = {
            "decode": 0.0,
            "track": 0.0,
            "render": 0.0,
            "vision": 0.0,
            "prefill": 0.0,
            "decode_tokens": 0.0,
        }

        # 1. plan
        if sampling is None:
            sampling = plan_sampling(info.num_frames, info.fps, info.height, info.width, self.config.sampling)
        self._check_prompt_lengths(prompts, sampling, info)

        # 2-3. one decode pass: track every frame, keep the sampled ones, then draw their markers and resize them
        stage("track")
        tracked = track_and_prompt(
            frames,
            info,
            None if self.config.time_only else self.tracker,
            sampling,
            draw_markers=not self.config.time_only,
            frame_memory_mb=self.config.frame_memory_mb,
            frame_spill_dir=self.config.frame_spill_dir,
            on_frame=on_frame,
        )
        timings.update(tracked.timings_ms)
        clip, tracks = tracked.clip, tracked.tracks

        # 4-5. ground, parse, build tubes
        stage("ground")
        results = self._ground_all(queries, prompts, clip, tracks, info, timings)
        timings["total"] = (time.perf_counter() - t_total) * 1e3
        return RunResult(info.path, info, sampling, tracks, results, timings, self.describe())

    def _frames_used(self, sampling: FrameSampling) -> Callable[[int], bool]:
        """The frames anything looks at: the sampled ones and the ones the tracker's schedule tracks (the rest are
        decoded, never converted to arrays)."""
        sampled = frozenset(sampling.indices)
        every = 0 if self.config.time_only or self.tracker is None else self.tracker.config.every
        return lambda index: index in sampled or (every > 0 and index % every == 0)

    def _check_queries(self, queries: Sequence[str]) -> list[str]:
        if not queries:
            raise BadInputError("no query given: pass at least one sentence describing the target")
        for q in queries:
            normalize_query(q)  # empty queries fail here, before any decoding
        return self.prompts_for(queries)

    def _ground_all(
        self, queries, prompts, clip: PromptedClip, tracks: TrackSet, info: VideoInfo, timings: dict[str, float]
    ) -> list[QueryResult]:
        time_only = self.config.time_only
        if not time_only and len(tracks) == 0:
            warning = "no objects were detected or tracked in the video, so there is no ID to answer with"
            logger.warning(warning)
            return [
                QueryResult(q, GroundingAnswer((), None, None, False, warning), Tube((), None, None), [warning], {})
                for q in queries
            ]
        encoded = self.grounder.encode_video(clip)
        timings["vision"] = encoded.vision_ms + encoded.inputs.preprocess_ms
        results = []
        for query, prompt in zip(queries, prompts):
            out = self.grounder.ground(clip, prompt, encoded)
            timings["prefill"] += out.timings_ms["prefill"]
            timings["decode_tokens"] += out.timings_ms["decode"]
            answer = parse_answer(
                out.text, duration_s=info.duration_s, valid_ids=None if time_only else tracks.ids, time_only=time_only
            )
            tube = (
                Tube(answer.ids, answer.start_s, answer.end_s)
                if time_only
                else build_tube(
                    answer,
                    tracks,
                    info.frame_times_s,
                    interpolate=self.config.interpolate,
                    id_repair=self.config.id_repair,
                )
            )
            warnings = list(answer.warnings) + list(tube.warnings)
            if not answer.parse_ok:
                warnings.append(f"could not parse the model's answer: {answer.reason}")
            results.append(
                QueryResult(
                    query,
                    answer,
                    tube,
                    warnings,
                    {"prefill": out.timings_ms["prefill"], "decode": out.timings_ms["decode"]},
                    out.num_generated_tokens,
                    out.samples.agreement if out.samples is not None else None,
                )
            )
        return results

    def _check_prompt_lengths(self, prompts: Sequence[str], sampling: FrameSampling, info: VideoInfo) -> None:
        """A query that cannot fit the model's context is a user error, caught before decoding."""
        limit_fn = self.grounder.check_prompt_fits
        # tokens the clip will occupy: one per merged 28x28 patch of every 2-frame tube
        factor = self.config.sampling.patch_factor
        t = -(-sampling.num_frames // 2)
        num_visual = t * (sampling.resized_height // factor) * (sampling.resized_width // factor)
        for prompt in prompts:
            limit_fn(prompt, num_visual)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in sorted(obj)] if isinstance(obj, (set, frozenset)) else [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
