"""``stvg-edge export``: write a deployable bundle (see :mod:`stvgr1_edge_export.bundle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(name="stvg-edge export", add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)


@app.command()
def export(
    model: str = typer.Option(..., "--model", help="Qwen2.5-VL checkpoint: hub ID or local folder."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write (built next to it, renamed at the end)."),
    vision: str = typer.Option("onnx", "--vision", help="onnx, or trt (also a TensorRT engine; needs tensorrt)."),
    vision_dtype: str = typer.Option(
        "fp32", "--vision-dtype", help="fp32, fp16 (GPUs) or int8 (CPUs: linear layers on integer units) vision graph."
    ),
    tracker: str = typer.Option(
        "none",
        "--tracker",
        help="none, onnx (SAM2/EdgeTAM graphs) or trt (same graphs, TensorRT EP at run time; needs tensorrt).",
    ),
    tracker_model: Optional[str] = typer.Option(
        None, "--tracker-model", help="SAM2.1/EdgeTAM weights: hub ID or folder."
    ),
    external_data: Optional[bool] = typer.Option(
        None,
        "--external-data/--no-external-data",
        help="Vision graph weights in vision_encoder.onnx.data (default: only when over 1 GiB, e.g. a 7B tower).",
    ),
    llm: str = typer.Option("none", "--llm", help="none (unquantized copy), int4 (weight-only) or nf4 (CUDA)."),
    int4_group_size: int = typer.Option(128, "--int4-group-size", help="int4 group size: 32, 64, 128 or 256."),
    int4_calibration: Optional[Path] = typer.Option(
        None,
        "--int4-calibration",
        help="`stvg-edge train prepare` cache: its clips calibrate GPTQ for --llm int4 (default: searched rounding).",
    ),
    int4_calibration_num: int = typer.Option(32, "--int4-calibration-num", help="Calibration clips taken from it."),
    device: str = typer.Option("cpu", "--device", help="Device used to load the model for export (cpu, cuda)."),
) -> None:
    """Export the grounder (and tracker) into one bundle folder with manifest.json and parity numbers."""
    from rich.console import Console

    from stvgr1_edge.errors import check_output_dir

    from .bundle import BundleOptions, export_bundle

    check_output_dir(out.parent, "--out")  # the bundle is built next to it, then renamed into place

    console = Console(stderr=True)
    options = BundleOptions(
        model=model,
        out=out,
        vision=vision,
        vision_dtype=vision_dtype,
        tracker=tracker,
        tracker_model=tracker_model,
        llm=llm,
        device=device,
        vision_external_data=external_data,
        int4_group_size=int4_group_size,
        int4_calibration=None if int4_calibration is None else str(int4_calibration),
        int4_calibration_num=int4_calibration_num,
    )
    with console.status("exporting") as status:
        folder = export_bundle(options, on_stage=lambda s: status.update(s))
    typer.echo(f"wrote bundle {folder}")
