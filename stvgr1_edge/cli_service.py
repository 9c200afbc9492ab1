"""`stvg-edge` commands about the machine and the model as a service: `doctor` and `serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_common import (
    ANSWER_SAMPLES_OPTION,
    ANSWER_TEMPLATE_OPTION,
    BUNDLE_OPTION,
    DETECTOR_OPTION,
    DEVICE_OPTION,
    DTYPE_OPTION,
    ENGINE_OPTION,
    HW_DECODE_OPTION,
    LM_HEAD_OPTION,
    MAX_NEW_TOKENS_OPTION,
    MODEL_OPTION,
    QUANT_OPTION,
    TRACK_EVERY_OPTION,
    TRACKER_MODEL_OPTION,
    TRACKER_OPTION,
    WEIGHTS_OPTION,
    app,
    run_config_of,
)


# --- doctor --------------------------------------------------------------------------------------
@app.command()
def doctor() -> None:
    """What this machine can run: torch/CUDA, GPU, onnxruntime, TensorRT, int4 kernels, codecs; and which options."""
    from rich.console import Console

    from .doctor import diagnose

    with Console(stderr=True).status("checking this machine"):
        report = diagnose()
    for line in report.render():
        typer.echo(line)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


# --- serve ---------------------------------------------------------------------------------------
@app.command()
def serve(
    model: Optional[str] = MODEL_OPTION,
    bundle: Optional[Path] = BUNDLE_OPTION,
    quant: Optional[str] = QUANT_OPTION,
    tracker: Optional[str] = TRACKER_OPTION,
    tracker_model: Optional[str] = TRACKER_MODEL_OPTION,
    detector: Optional[str] = DETECTOR_OPTION,
    track_every: Optional[int] = TRACK_EVERY_OPTION,
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    max_new_tokens: int = MAX_NEW_TOKENS_OPTION,
    engine: Optional[str] = ENGINE_OPTION,
    answer_template: bool = ANSWER_TEMPLATE_OPTION,
    answer_samples: int = ANSWER_SAMPLES_OPTION,
    weights: Optional[str] = WEIGHTS_OPTION,
    lm_head: Optional[str] = LM_HEAD_OPTION,
    hw_decode: Optional[str] = HW_DECODE_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="STVG_EDGE_API_KEY", help="Require this key (Authorization: Bearer KEY)."
    ),
    cache_videos: int = typer.Option(16, "--cache-videos", min=0, help="Keep the tracks of this many videos."),
) -> None:
    """Serve grounding over HTTP with the model loaded once: POST /ground, GET /health, GET /config."""
    from rich.console import Console

    from .errors import require
    from .pipeline import PipelineConfig
    from .run_config import build_pipeline
    from .serve import serve as serve_forever

    require("fastapi", "serve", "stvg-edge serve")
    require("uvicorn", "serve", "stvg-edge serve")
    config = run_config_of(
        pipeline=PipelineConfig(hw_decode=hw_decode),
        model=model,
        bundle=None if bundle is None else str(bundle),
        quant=quant,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
        engine=engine,
        answer_template=answer_template,
        answer_samples=answer_samples,
        weights=weights,
        lm_head=lm_head,
        tracker=tracker,
        tracker_model=tracker_model,
        detector=detector,
        every=track_every,
    )
    console = Console(stderr=True)
    with console.status(f"loading {bundle or model or 'the grounding model'}"):
        pipeline = build_pipeline(config)
    console.print(f"serving on http://{host}:{port} (POST /ground, GET /health, GET /config); Ctrl-C stops")
    serve_forever(pipeline, host, port, api_key=api_key, cache_size=cache_videos)
