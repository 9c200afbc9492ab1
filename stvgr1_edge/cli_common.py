"""What every `stvg-edge` command shares: the typer app, the root options (-v, --version), the model and tracker
options of `run`/`predict`/`serve` and the one way their values become a checked :class:`RunConfig`."""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any, Optional

import typer

from .errors import BadInputError

if TYPE_CHECKING:
    from .pipeline import PipelineConfig
    from .run_config import RunConfig

app = typer.Typer(
    name="stvg-edge",
    help="Spatio-temporal video grounding (STVG-R1) on edge GPUs: who does what, and when.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"stvg-edge {version('stvg-edge')}")
        except PackageNotFoundError:  # run from a checkout that is not installed
            from . import __version__

            typer.echo(f"stvg-edge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log library progress (INFO) to stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if not verbose:
        _quiet_third_party()


def _quiet_third_party() -> None:
    """Keep transformers' and the hub's progress bars and advice off the terminal: the CLI owns the output."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its HTTP retry chatter
    if "transformers" in sys.modules:  # already imported (e.g. main() called in-process): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


# --- options shared by run, predict and serve: the models and how they run -----------------------
MODEL_OPTION = typer.Option(
    None,
    "--model",
    help="Grounding VLM (Qwen2.5-VL): hub ID, local folder or nano \\[default: the STVG-R1 7B checkpoint].",
)
BUNDLE_OPTION = typer.Option(
    None,
    "--bundle",
    help="Exported bundle (stvg-edge export): its language model, vision encoder and tracker (if it has one).",
)
QUANT_OPTION = typer.Option(
    None,
    "--quant",
    help="none or nf4 (bitsandbytes 4-bit: CUDA, or CPU where bitsandbytes has CPU 4-bit kernels) \\[default: none].",
)
TRACKER_OPTION = typer.Option(None, "--tracker", help="classical (no weights), sam2 or edgetam \\[default: classical].")
TRACKER_MODEL_OPTION = typer.Option(
    None, "--tracker-model", help="SAM2.1/EdgeTAM weights (hub ID or folder) for --tracker sam2|edgetam."
)
DETECTOR_OPTION = typer.Option(
    None, "--detector", help="Keyframe detector for sam2/edgetam: hub ID, folder, or classical."
)
TRACK_EVERY_OPTION = typer.Option(
    None, "--track-every", help="Track every k-th frame; the VLM's sampled frames are always tracked \\[default: 1]."
)
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
DTYPE_OPTION = typer.Option(None, "--dtype", help="auto, bf16, fp16 or fp32 \\[default: auto].")
MAX_NEW_TOKENS_OPTION = typer.Option(1024, "--max-new-tokens", min=1, help="Most tokens generated per query.")
ENGINE_OPTION = typer.Option(
    None,
    "--engine",
    help="Decoder: hf (transformers generate) or static (static KV cache, compiled decode step) "
    "\\[default: static on CUDA, hf on CPU].",
)
WEIGHTS_OPTION = typer.Option(
    None,
    "--weights",
    help="The language model's linears quantized weight-only at load: fp, int8 or int4 (faster decoding, with "
    "--engine static most), or fp32-ort (an fp32 model's own weights on onnxruntime's CPU kernel) \\[default: fp].",
)
WEIGHT_FORMATS = ("fp", "int8", "int4", "fp32-ort")
"""--weights / --lm-head choices (backends.weight_only.WEIGHT_FORMATS, named here without importing torch)."""
LM_HEAD_OPTION = typer.Option(
    None, "--lm-head", help="The output projection at load: fp, int8, int4 or fp32-ort \\[default: fp]."
)
ANSWER_TEMPLATE_OPTION = typer.Option(
    True,
    "--answer-template/--free-answer",
    help="Keep decoding inside the answer template <think>…</think> <answer>Target ID: k, Time range: a to b</answer>, "
    "so every answer parses (the model's own token wherever the template allows it), or decode freely.",
)
ANSWER_SAMPLES_OPTION = typer.Option(
    0,
    "--answer-samples",
    help="Sample N more answers and give the one whose ID and time range they agree with most (minimum Bayes risk; "
    "a time written greedily, digit by digit, is not the best-scoring one): N more decodes per query, batched "
    "\\[default: 0, the decoded answer].",
)
HW_DECODE_OPTION = typer.Option(
    None,
    "--hw-decode",
    help="Decode the video on an FFmpeg hardware device (cuda, vaapi, ...; `stvg-edge doctor` lists this build's); "
    "a stream the device cannot decode falls back to software with a warning \\[default: software].",
)


NO_ANSWER_EXIT = 3
"""``run --strict``: at least one query's answer could not be parsed (the result is written all the same)."""


def check_choice(flag: str, value: Optional[str], choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise BadInputError(f"{flag} {value!r} is not one of {', '.join(choices)}")


def run_config_of(pipeline: "PipelineConfig", **options: Any) -> "RunConfig":
    """The :class:`~stvgr1_edge.run_config.RunConfig` of `run`/`predict` options, checked: a choice that is not one,
    or options that conflict, fail here, before any file is read."""
    from .run_config import RunConfig, check_run_config
    from .video import check_hw_decode

    check_hw_decode(pipeline.hw_decode)  # before any model loads
    check_choice("--quant", options.get("quant"), ("none", "nf4"))
    check_choice("--tracker", options.get("tracker"), ("classical", "sam2", "edgetam"))
    check_choice("--dtype", options.get("dtype"), ("auto", "bf16", "fp16", "fp32"))
    check_choice("--engine", options.get("engine"), ("hf", "static"))
    check_choice("--weights", options.get("weights"), WEIGHT_FORMATS)
    check_choice("--lm-head", options.get("lm_head"), WEIGHT_FORMATS)
    config = RunConfig(**options, pipeline=pipeline)  # the choices were checked, so the strings are the typed values
    check_run_config(config)
    apply_memory_settings(config.tracker or "classical")
    return config


def apply_memory_settings(tracker: str) -> None:
    """With the classical tracker, a long video's peak memory must not depend on how the heap fragments
    (:func:`~stvgr1_edge.memory.return_large_buffers_to_os`). Not with a learned tracker on the CPU: its torch
    temporaries would be mapped afresh, page by page, on every frame (SAM2 at 512 px, 10 objects: 2.2 -> 3.7 s per
    frame), and on a GPU the frames it keeps are not the host heap's problem."""
    from .memory import return_large_buffers_to_os

    if tracker == "classical":
        return_large_buffers_to_os()


def fps_column():  # a factory: rich is imported only when a command runs
    """A progress column with the frames per second the video is read at."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class FramesPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.0f} fps" if task.speed else "", style="progress.data.speed")

    return FramesPerSecond()
