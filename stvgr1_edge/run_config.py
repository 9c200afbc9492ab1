"""One run configuration and one way to build the pipeline from it — for the CLI and the Python API alike.

:class:`RunConfig` is frozen and says everything a `run` needs: which grounder (a checkpoint, or an exported
bundle), which tracker (or tracks computed earlier), and what the pipeline does between them. An option left at
``None`` means "not chosen": :func:`build_pipeline` fills in the default, and rejects every combination where an
option would otherwise be ignored silently (one line, :class:`~stvgr1_edge.errors.BadInputError`, exit 2 in the CLI):

- ``bundle`` with ``model`` or ``quant`` (the bundle brings its own language model, in its own format);
- ``bundle`` with ``dtype`` when its language model is nf4 (bitsandbytes fixed the compute dtype at export);
- ``tracks`` with any tracker option (``tracker``, ``tracker_model``, ``detector``, ``every``,
  ``keyframe_interval``): the tracks are replayed, nothing is tracked;
- a bundle with an exported tracker together with ``tracker``/``tracker_model``;
- ``time_only`` with ``multi_object`` or any tracker option (time-only grounding tracks nothing).

:meth:`GroundingPipeline.describe` then records in every result what actually ran (the bundle's quantization,
the resolved device and dtype, the tracker that ran), not what was asked for.

::

    from stvgr1_edge.run_config import RunConfig, build_pipeline

    pipeline = build_pipeline(RunConfig(model="nano", device="cpu"))
    result = pipeline.run("clip.mp4", ["the small red circle that blinks"])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal

from .errors import BadInputError
from .pipeline import GroundingPipeline, PipelineConfig

logger = logging.getLogger(__name__)

DEFAULT_TRACKER = "classical"
DEFAULT_EVERY = 1
DEFAULT_KEYFRAME_INTERVAL = 15
"""Re-detect every this many tracked frames (the reference implementation's 15)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one `stvg-edge run` needs. ``None``: not chosen (the default applies; see the module doc)."""

    # the grounder
    model: str | None = None
    """Qwen2.5-VL checkpoint: hub id, local folder or "nano" (default: the STVG-R1 7B checkpoint)."""
    bundle: str | None = None
    """An exported bundle folder (``stvg-edge export``): its language model, vision encoder and tracker."""
    quant: Literal["none", "nf4"] | None = None
    """Language-model weights loaded from ``model``: none (default) or nf4 (bitsandbytes 4-bit)."""
    device: str = "auto"
    """"auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N" — for every model of the run."""
    dtype: Literal["auto", "bf16", "fp16", "fp32"] | None = None
    """Compute dtype of the grounder (default "auto": bf16 on CUDA, fp32 on CPU)."""
    max_new_tokens: int = 1024
    """Most tokens generated per query."""
    engine: Literal["hf", "static"] | None = None
    """Decoder: "hf" (transformers' generate) or "static" (static KV cache, compiled decode step); default
    :func:`default_engine`'s."""
    weights: Literal["fp", "int8", "int4", "fp32-ort"] | None = None
    """The language model's linears, quantized weight-only at load: fp (default, as saved), int8 or int4; or
    fp32-ort (fp32 weights on onnxruntime's CPU kernel)."""
    lm_head: Literal["fp", "int8", "int4", "fp32-ort"] | None = None
    """The output projection's weights at load: fp (default), int8, int4 or fp32-ort (a bundle's too)."""
    answer_template: bool = True
    """Keep decoding inside the answer template, so every answer parses (False: free decoding)."""
    answer_samples: int = 0
    """Sample this many more answers and give the one they agree with most (0: the decoded answer; see
    :attr:`~stvgr1_edge.grounding.GrounderConfig.answer_samples`)."""
    # the tracker
    tracker: Literal["classical", "sam2", "edgetam"] | None = None
    """classical (default, no weights), sam2 or edgetam."""
    tracker_model: str | None = None
    """SAM2.1 / EdgeTAM weights (hub id or folder) for ``tracker`` sam2/edgetam."""
    detector: str | None = None
    """Keyframe detector for sam2/edgetam: hub id, folder or "classical"."""
    every: int | None = None
    """Track every k-th frame (default 1); the frames the VLM sees are always tracked."""
    keyframe_interval: int | None = None
    """Re-detect every this many tracked frames (default 15; sam2/edgetam)."""
    tracks: str | None = None
    """A tracks JSON from ``stvg-edge track``, replayed instead of tracking again."""
    # between the models
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """Sampling, time-only / multi-object prompts, ID repair, frame memory."""

    def tracker_options(self) -> dict[str, object]:
        """The tracker options that were chosen (name -> value)."""
        names = ("tracker", "tracker_model", "detector", "every", "keyframe_interval")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def _flag(name: str) -> str:
    """The `run`/`predict` option of a field (``every`` is ``--track-every``: ``--every`` is the window step)."""
    return "--track-every" if name == "every" else "--" + name.replace("_", "-")


def default_engine(device: str, quant: str) -> Literal["hf", "static"]:
    """The decoder when none is asked for: the static engine on CUDA (H200, Qwen2.5-VL-7B widths: 3.8x generate's
    tokens/s in bf16, ``benchmarks/results/gpu_check/engine_decode.json``), generate on a CPU (there they are within
    8% of each other and the engine's first run compiles) and for nf4 weights (which the engine does not run)."""
    return "static" if device.startswith("cuda") and quant != "nf4" else "hf"


def check_run_config(config: RunConfig, bundle_manifest: dict | None = None) -> None:
    """Raise one :class:`BadInputError` line for the first conflicting combination (see the module doc)."""
    chosen_tracker = config.tracker_options()
    if config.pipeline.time_only and config.pipeline.multi_object:
        raise BadInputError("--time-only and --multi exclude each other: time-only answers have no IDs")
    if config.pipeline.time_only and (chosen_tracker or config.tracks):
        given = ", ".join(_flag(n) for n in chosen_tracker) or "--tracks"
        raise BadInputError(f"--time-only tracks nothing, so {given} would be ignored: drop it, or drop --time-only")
    if config.tracks is not None and chosen_tracker:
        given = ", ".join(_flag(n) for n in chosen_tracker)
        raise BadInputError(
            f"--tracks replays tracks computed earlier, so {given} would be ignored: drop "
            f"{given}, or drop --tracks to track again"
        )
    if config.bundle is not None:
        llm_flags = [_flag(n) for n in ("model", "quant") if getattr(config, n) is not None]
        if llm_flags:
            raise BadInputError(
                f"--bundle brings its own language model, so {' and '.join(llm_flags)} would be ignored: "
                "drop them, or drop --bundle"
            )
    if config.quant == "nf4" and (config.weights or config.lm_head) not in (None, "fp"):
        raise BadInputError("--quant nf4 already quantizes the language model: drop --weights/--lm-head, or --quant")
    if config.bundle is not None and config.weights not in (None, "fp"):
        raise BadInputError(
            "--bundle brings its language model's weights as exported, so --weights would be ignored: drop it "
            "(--lm-head still applies), or export with --llm none"
        )
    fp32_ort = [_flag(n) for n in ("weights", "lm_head") if getattr(config, n) == "fp32-ort"]
    if fp32_ort and (config.dtype in ("bf16", "fp16") or config.device.startswith("cuda")):
        raise BadInputError(
            f"{' and '.join(f + ' fp32-ort' for f in fp32_ort)}: fp32-ort runs fp32 weights on a CPU; add --dtype fp32 "
            "--device cpu, or use fp, int8 or int4"
        )
    if config.engine == "static" and config.quant == "nf4":
        raise BadInputError(
            "--engine static does not run nf4 (bitsandbytes) weights: drop --quant nf4, or use --engine hf"
        )
    if bundle_manifest is not None:
        quant = bundle_manifest["grounder"]["llm_quant"]
        if config.engine == "static" and quant == "nf4":
            raise BadInputError(
                "the bundle's language model is nf4 (bitsandbytes), which --engine static does not run: use --engine hf"
            )
        if config.dtype is not None and quant == "nf4":
            raise BadInputError(
                "the bundle's language model is nf4, whose compute dtype was fixed at export: drop --dtype"
            )
        exported = bundle_manifest.get("tracker")
        tracker_flags = [_flag(n) for n in ("tracker", "tracker_model") if getattr(config, n) is not None]
        if exported and tracker_flags and config.tracks is None:
            raise BadInputError(
                f"the bundle brings its own tracker ({exported.get('family', 'sam2')} on ONNX), so "
                f"{' and '.join(tracker_flags)} would be ignored: drop them, or export the bundle with "
                "--tracker none"
            )
    if config.every is not None and config.every < 1:
        raise BadInputError(f"--track-every must be >= 1, got {config.every}")
    if config.keyframe_interval is not None and config.keyframe_interval < 1:
        raise BadInputError(f"--keyframe-interval must be >= 1, got {config.keyframe_interval}")
    if config.max_new_tokens < 1:
        raise BadInputError(f"--max-new-tokens must be >= 1, got {config.max_new_tokens}")
    if config.answer_samples < 0:
        raise BadInputError(f"--answer-samples must be >= 0 (0: the decoded answer), got {config.answer_samples}")


def build_pipeline(config: RunConfig) -> GroundingPipeline:
    """Load the grounder and build the tracker ``config`` asks for, once (pass the pipeline around and call
    :meth:`~stvgr1_edge.pipeline.GroundingPipeline.run` per video). Conflicting options raise before any model
    loads."""
    from .grounding import Grounder, GrounderConfig, resolve_device
    from .model_source import DEFAULT_MODEL

    check_run_config(config)
    device = resolve_device(config.device)
    bundle = None
    if config.bundle is not None:
        from .bundle import load_bundle

        bundle = load_bundle(config.bundle, device=device)
        check_run_config(config, bundle.manifest)
    if config.tracks is not None:
        from .tracks import TrackSet

        TrackSet.load(config.tracks)  # a bad tracks file fails before the model loads

    llm_format = bundle.manifest["grounder"]["llm_quant"] if bundle is not None else config.weights
    if device == "cpu" and {"int4", "fp32-ort"} & {llm_format, config.lm_head}:
        from .backends.int4_mlas import mlas_available
        from .backends.ort_threads import share_threads

        if mlas_available():  # the linears run on onnxruntime: one warm pool for all of them (ort_threads)
            share_threads()
    dtype = config.dtype or "auto"
    if bundle is not None:
        grounder = bundle.grounder(
            max_new_tokens=config.max_new_tokens,
            dtype=dtype,
            engine=config.engine or default_engine(device, bundle.manifest["grounder"]["llm_quant"]),
            lm_head=config.lm_head or "fp",
            answer_template=config.answer_template,
            answer_samples=config.answer_samples,
        )
        llm = {
            "model": str(bundle.root / bundle.manifest["grounder"]["llm"]),
            "bundle": str(bundle.root),
            "quant": bundle.manifest["grounder"]["llm_quant"],
            "vision_encoder": "tensorrt" if bundle.manifest["grounder"]["vision"].get("engine") else "onnx",
        }
    else:
        grounder = Grounder.from_pretrained(
            GrounderConfig(
                model=config.model or DEFAULT_MODEL,
                device=device,
                dtype=dtype,
                quant=config.quant or "none",
                max_new_tokens=config.max_new_tokens,
                engine=config.engine or default_engine(device, config.quant or "none"),
                weights=config.weights or "fp",
                lm_head=config.lm_head or "fp",
                answer_template=config.answer_template,
                answer_samples=config.answer_samples,
            )
        )
        llm = {
            "model": config.model or DEFAULT_MODEL,
            "bundle": None,
            "quant": config.quant or "none",
            "vision_encoder": "pytorch",
        }
    tracker, tracker_info = _build_tracker(config, bundle, str(grounder.device))
    description = {
        "grounder": {
            **llm,
            "device": str(grounder.device),
            "dtype": str(grounder.model.dtype).removeprefix("torch."),
            "max_new_tokens": config.max_new_tokens,
            "engine": grounder.config.engine,
            "weights": grounder.config.weights,
            "lm_head": grounder.config.lm_head,
            "answer_template": grounder.config.answer_template,
            "answer_samples": grounder.config.answer_samples,
            "do_sample": grounder.config.do_sample,
        },
        "tracker": tracker_info,
    }
    return GroundingPipeline(tracker, grounder, config.pipeline, description=description)


def _build_tracker(config: RunConfig, bundle, device: str):
    """The tracker (or ``None`` for time-only grounding) and what it is, for the result's ``config``."""
    every = config.every or DEFAULT_EVERY
    keyframe_interval = config.keyframe_interval or DEFAULT_KEYFRAME_INTERVAL
    if config.pipeline.time_only:
        return None, {"name": "none"}
    if config.tracks is not None:
        from .tracking.replay import ReplayTracker
        from .tracks import TrackSet

        return ReplayTracker(TrackSet.load(config.tracks), source=str(config.tracks)), {
            "name": "replay",
            "tracks": str(config.tracks),
        }
    if bundle is not None and bundle.has_tracker:
        from .tracking.factory import make_detector
        from .tracking.sam2 import Sam2TrackerConfig

        detector = make_detector(config.detector, device=device)
        trk = bundle.tracker(detector, Sam2TrackerConfig(every=every, keyframe_interval=keyframe_interval))
        family = bundle.manifest["tracker"].get("family", "sam2")
        return trk, {
            "name": f"{family}-onnx",
            "model": str(bundle.root / bundle.manifest["tracker"]["folder"]),
            "detector": config.detector or "classical",
            "every": every,
            "keyframe_interval": keyframe_interval,
        }
    from .tracking.factory import make_tracker

    name = config.tracker or DEFAULT_TRACKER
    trk = make_tracker(
        name,
        model=config.tracker_model,
        detector=config.detector,
        device=device,
        every=every,
        keyframe_interval=keyframe_interval,
    )
    info: dict[str, object] = {"name": name, "every": every}
    if name != "classical":
        info.update(
            model=config.tracker_model, detector=config.detector or "classical", keyframe_interval=keyframe_interval
        )
    return trk, info


def run_config_from_dict(values: dict) -> RunConfig:
    """A :class:`RunConfig` from plain values (e.g. a JSON request); ``pipeline`` keys go to :class:`PipelineConfig`.
    Unknown keys are an error, never dropped."""
    known = {f for f in RunConfig.__dataclass_fields__ if f != "pipeline"}
    pipeline_known = set(PipelineConfig.__dataclass_fields__)
    unknown = set(values) - known - pipeline_known
    if unknown:
        raise BadInputError(f"unknown run option(s) {sorted(unknown)}: use {sorted(known | pipeline_known)}")
    pipeline = replace(PipelineConfig(), **{k: v for k, v in values.items() if k in pipeline_known})
    return RunConfig(**{k: v for k, v in values.items() if k in known}, pipeline=pipeline)
