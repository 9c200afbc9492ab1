"""Write a deployable bundle: the ONNX (and TensorRT) vision encoder, the (quantized) LLM, the processor, the ONNX
tracker and ``manifest.json`` with versions, shapes, dtypes and the parity numbers measured at export time.

The bundle is built in a temporary folder next to ``--out`` and renamed into place at the end, so a failure
leaves no half-written bundle. Layout (read back by :mod:`stvgr1_edge.bundle`)::

    OUT/
      manifest.json
      vision_encoder.onnx          (+ vision_encoder.onnx.data: external weights of a large tower)
      vision_encoder.engine        (--vision trt; + vision_encoder.engine.json)
      llm/                         config + weights (save_pretrained / save_int4 / NF4) + processor files
      tracker/                     SAM2/EdgeTAM config + processor files, *.onnx graphs, tracker_onnx.json, and
                                   model.safetensors with only the weights that stay PyTorch (the graphs carry
                                   the rest)
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from stvgr1_edge.bundle import BUNDLE_FORMAT, MANIFEST, bundle_file_digests
from stvgr1_edge.errors import BadInputError, atomic_output_dir, write_json_atomic
from stvgr1_edge_export.vision_onnx import VISION_EXPORT_DTYPES

logger = logging.getLogger(__name__)

PARITY_GRID = (2, 16, 20)
"""Video patch grid (T, H, W) of the random input used for the vision parity numbers."""


@dataclass(frozen=True)
class BundleOptions:
    """What ``stvg-edge export`` builds."""

    model: str
    """Qwen2.5-VL checkpoint: hub id or local folder."""
    out: Path
    """Bundle folder to create (replaced if it already holds a bundle)."""
    vision: Literal["onnx", "trt"] = "onnx"
    """"onnx": vision_encoder.onnx; "trt": also a TensorRT engine built from it (needs NVIDIA's tensorrt)."""
    vision_dtype: Literal["fp32", "fp16", "int8"] = "fp32"
    """Weights/compute dtype of the exported vision graph (fp16 keeps norms, rotary and softmax in fp32; int8: linear
    layers on integer units, for CPUs)."""
    tracker: Literal["none", "onnx", "trt"] = "none"
    """"onnx": SAM2/EdgeTAM graphs; "trt": the same graphs, run through onnxruntime's TensorRT EP (needs tensorrt)."""
    tracker_model: str | None = None
    """SAM2/EdgeTAM weights (hub id or folder) for ``tracker != "none"``."""
    vision_external_data: bool | None = None
    """Write the vision graph's weights to ``vision_encoder.onnx.data``; None: only when over 1 GiB (a 7B tower)."""
    llm: Literal["none", "nf4", "int4"] = "none"
    """"none": an unquantized save_pretrained copy; "int4": gpt-fast weight-only int4; "nf4": bitsandbytes (CUDA)."""
    int4_group_size: int = 128
    """Group size of the int4 quantization."""
    int4_calibration: str | None = None
    """A ``train prepare`` cache whose clips calibrate GPTQ for ``llm="int4"``; None: searched rounding, no data."""
    int4_calibration_num: int = 32
    """Calibration clips taken from ``int4_calibration``."""
    device: str = "cpu"
    """Device the checkpoint is loaded on for export and parity measurement."""


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for package in ("stvg-edge", "torch", "transformers", "onnx", "onnxruntime"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def vision_parity(model, onnx_path: Path) -> dict[str, float]:
    """Max abs error and cosine of the ONNX vision encoder (onnxruntime CPU) vs PyTorch on random patches."""
    from stvgr1_edge.backends.onnx_vision import OnnxVisionEncoder

    grid = torch.tensor([PARITY_GRID])
    gen = torch.Generator().manual_seed(0)
    config = model.model.visual.config
    patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    pixels = torch.randn(int(grid.prod()), patch_dim, generator=gen)
    with torch.no_grad():
        want = (
            torch.cat(
                model.model.get_video_features(
                    pixels.to(model.device, model.dtype), grid.to(model.device), return_dict=True
                ).pooler_output
            )
            .float()
            .cpu()
        )
    got = torch.cat(OnnxVisionEncoder(onnx_path)(pixels, grid).pooler_output)
    return {"grid_thw": list(PARITY_GRID), "max_abs_err": float((got - want).abs().max()), "cosine": _cosine(got, want)}


def _parity_logits(model, processor) -> torch.Tensor:
    ids = processor.tokenizer(["Target ID: 2, Time range: 1.0 to 3.5 seconds."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids.to(model.device)).logits.float().cpu()


def tracker_iou(source: str, tracker_dir: Path, family: str) -> dict[str, Any]:
    """Mask IoU of the ONNX tracker vs the PyTorch tracker on a short synthetic clip with a scripted detector (the
    clip's own ground-truth boxes), objects forced present so every frame runs the memory path."""
    import numpy as np

    from stvgr1_edge.backends.onnx_tracker import OnnxSam2Tracker
    from stvgr1_edge.masks import rle_iou
    from stvgr1_edge.tracking.base import Detections, Detector
    from stvgr1_edge.tracking.sam2 import Sam2Tracker, Sam2TrackerConfig
    from stvgr1_edge.video import Frame, VideoInfo

    frames = [np.full((96, 128, 3), 50, np.uint8) for _ in range(6)]
    for i, image in enumerate(frames):
        image[20:60, 10 + 3 * i : 50 + 3 * i] = (220, 60, 60)
        image[30:80, 80:110] = (60, 200, 90)

    class BoxesDetector(Detector):
        def __call__(self, image):
            return Detections(np.array([[10, 20, 50, 60], [80, 30, 110, 80]], np.float32), np.array([0.9, 0.8]))

    info = VideoInfo(
        path="<synthetic>",
        width=128,
        height=96,
        num_frames=len(frames),
        fps=10.0,
        duration_s=0.6,
        codec="raw",
        frame_times_s=tuple(i / 10.0 for i in range(len(frames))),
    )
    config = Sam2TrackerConfig(keyframe_interval=3)

    def run(tracker):
        tracker.start(info)
        for i, image in enumerate(frames):
            tracker.step(Frame(i, i / 10.0, image))
        return tracker.finish()

    ref = run(Sam2Tracker(source, BoxesDetector(), config, family=family))
    got = run(OnnxSam2Tracker(tracker_dir, BoxesDetector(), config))
    ious = [rle_iou(a, b) for r, g in zip(ref, got) for a, b in zip(r.masks, g.masks)]
    same_ids = ref.ids == got.ids
    return {
        "frames": len(frames),
        "same_ids": same_ids,
        "masks_compared": len(ious),
        "min_mask_iou": float(min(ious)) if ious else None,
        "mean_mask_iou": float(np.mean(ious)) if ious else None,
    }


def _prepare_out(out: Path) -> Path:
    out = out.expanduser()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise BadInputError(f"--out {out} exists and is not a bundle: pass a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def export_bundle(options: BundleOptions, on_stage: Callable[[str], None] | None = None) -> Path:
    """Build the bundle described by ``options``; returns its folder."""
    from stvgr1_edge.grounding import Grounder, GrounderConfig

    stage = on_stage or (lambda _s: None)
    out = _prepare_out(Path(options.out))
    if options.vision not in ("onnx", "trt") or options.vision_dtype not in VISION_EXPORT_DTYPES:
        raise BadInputError(
            f"--vision {options.vision} --vision-dtype {options.vision_dtype}: use onnx|trt, fp32|fp16|int8"
        )
    if options.vision == "trt" and options.vision_dtype == "int8":
        raise BadInputError(
            "--vision-dtype int8 is onnxruntime's CPU graph, not one TensorRT builds: use --vision-dtype fp16 with "
            "--vision trt, or --vision onnx"
        )
    if options.tracker not in ("none", "onnx", "trt") or options.llm not in ("none", "nf4", "int4"):
        raise BadInputError(f"--tracker {options.tracker} --llm {options.llm}: use none|onnx|trt and none|nf4|int4")
    if options.tracker != "none" and not options.tracker_model:
        raise BadInputError(f"--tracker {options.tracker} needs --tracker-model (SAM2/EdgeTAM hub id or folder)")
    if "trt" in (options.vision, options.tracker):
        from stvgr1_edge.backends.tensorrt import import_tensorrt

        import_tensorrt()  # one-line MissingDependencyError before any work
    if options.llm == "nf4":
        from stvgr1_edge_export.nf4 import require_nf4_runtime

        require_nf4_runtime()
    if options.int4_calibration is not None:
        if options.llm != "int4":
            raise BadInputError(f"--int4-calibration calibrates the int4 LLM: add --llm int4 (got --llm {options.llm})")
        if not (Path(options.int4_calibration) / "samples").is_dir():
            raise BadInputError(
                f"--int4-calibration {options.int4_calibration} is not a training cache: "
                "run  stvg-edge train prepare ANNOTATIONS --out DIR  and pass DIR"
            )

    started = time.perf_counter()
    stage("loading the model")
    grounder = Grounder.from_pretrained(GrounderConfig(model=options.model, device=options.device, dtype="fp32"))
    model, processor = grounder.model, grounder.processor
    with atomic_output_dir(out) as tmp:
        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "source_model": options.model,
            "versions": _versions(),
            "options": {k: str(v) for k, v in asdict(options).items()},
        }
        manifest["grounder"], manifest["parity"] = _export_grounder(options, model, processor, tmp, stage)
        manifest["tracker"] = None
        if options.tracker != "none":
            stage("exporting the tracker")
            manifest["tracker"], manifest["parity"]["tracker"] = _export_tracker(options, tmp)
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        manifest["files"] = bundle_file_digests(tmp)  # verified when the bundle is loaded
        write_json_atomic(tmp / MANIFEST, manifest, indent=1)
    logger.info("wrote bundle %s", out)
    return out


def _export_grounder(options: BundleOptions, model, processor, tmp: Path, stage) -> tuple[dict, dict]:
    from stvgr1_edge_export.vision_onnx import export_vision_encoder, external_data_path

    parity: dict[str, Any] = {}
    stage("exporting the vision encoder")
    onnx_path = export_vision_encoder(
        model, tmp / "vision_encoder.onnx", dtype=options.vision_dtype, external_data=options.vision_external_data
    )
    parity["vision"] = vision_parity(model, onnx_path)
    vision_cfg = model.model.visual.config
    data_path = external_data_path(onnx_path)
    vision = {
        "onnx": onnx_path.name,
        "onnx_data": data_path.name if data_path.is_file() else None,
        "engine": None,
        "dtype": options.vision_dtype,
        "patch_dim": vision_cfg.in_channels * vision_cfg.temporal_patch_size * vision_cfg.patch_size**2,
        "out_hidden_size": vision_cfg.out_hidden_size,
        "spatial_merge_size": vision_cfg.spatial_merge_size,
    }
    if options.vision == "trt":
        from stvgr1_edge_export.tensorrt import build_vision_engine

        stage("building the TensorRT engine")
        engine = build_vision_engine(onnx_path, tmp / "vision_encoder.engine")
        vision["engine"] = "vision_encoder.engine"
        vision["engine_info"] = {k: str(v) for k, v in asdict(engine).items() if k != "vision_config"}
    llm_dir = tmp / "llm"
    stage(f"writing the language model ({options.llm})")
    text_cfg = getattr(model.config, "text_config", model.config)
    llm: dict[str, Any] = {
        "llm": "llm",
        "llm_quant": options.llm,
        "vision": vision,
        "hidden_size": text_cfg.hidden_size,
        "num_hidden_layers": text_cfg.num_hidden_layers,
        "vocab_size": text_cfg.vocab_size,
    }
    if options.llm == "int4":
        from stvgr1_edge_export.int4 import cache_calibration_inputs, decoder_layer_of, quantize_int4_, save_int4

        reference = _parity_logits(model, processor)
        calibration = None
        if options.int4_calibration is not None:
            stage(f"generating GPTQ calibration answers on {options.int4_calibration_num} clips")
            calibration = cache_calibration_inputs(
                model, processor, options.int4_calibration, num=options.int4_calibration_num
            )
        started = time.perf_counter()
        quantized = quantize_int4_(model, group_size=options.int4_group_size, calibration=calibration)
        seconds = time.perf_counter() - started
        layers = {decoder_layer_of(name) for name in quantized if ".layers." in name}
        parity["int4_logits_cosine"] = _cosine(_parity_logits(model, processor), reference)
        llm["int4"] = {
            "group_size": options.int4_group_size,
            "quantized_linears": len(quantized),
            "method": "searched rounding" if calibration is None else "GPTQ",
            "calibration": options.int4_calibration,
            "calibration_clips": None if calibration is None else len(calibration),
            # the cost of a full-depth export reads off this: seconds per decoder layer x its layers
            "quantize_seconds": round(seconds, 2),
            "quantize_seconds_per_layer": round(seconds / max(len(layers), 1), 2),
        }
        logger.info(
            "int4: %.1f s for %d decoder layers (%.1f s a layer)", seconds, len(layers), seconds / max(len(layers), 1)
        )
        save_int4(model, llm_dir, processor=processor)
    elif options.llm == "nf4":
        from stvgr1_edge_export.nf4 import quantize_nf4_to_folder

        source = Path(options.model).expanduser()
        if not source.is_dir():
            raise BadInputError("--llm nf4 needs --model to be a local checkpoint folder (download it first)")
        quantize_nf4_to_folder(source, llm_dir, device=options.device if options.device.startswith("cuda") else "cuda")
    else:
        model.save_pretrained(llm_dir)
        processor.save_pretrained(llm_dir)
        llm["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
    return llm, parity


def _export_tracker(options: BundleOptions, tmp: Path) -> tuple[dict, dict]:
    from stvgr1_edge.tracking.sam2 import load_video_model
    from stvgr1_edge_export.tracker_onnx import export_tracker_folder, tracker_parity

    folder = tmp / "tracker"
    spec = export_tracker_folder(options.tracker_model, folder)
    kept = drop_exported_tracker_weights(folder)
    parity = tracker_iou(options.tracker_model, folder, spec.family)
    parity["graph_max_abs_err"] = tracker_parity(
        load_video_model(options.tracker_model, family=spec.family).model, folder
    )
    entry = {"folder": "tracker", "runtime": options.tracker, "pytorch_tensors": kept, **asdict(spec)}
    return entry, parity


def drop_exported_tracker_weights(folder: Path) -> int:
    """Rewrite the tracker folder's safetensors without the weights its ONNX graphs carry (the modules in
    :data:`stvgr1_edge.backends.onnx_tracker.TRACKER_EXPORTED_MODULES`), as one ``model.safetensors``; returns the
    tensors kept."""
    from safetensors.torch import load_file, save_file

    from stvgr1_edge.backends.onnx_tracker import TRACKER_EXPORTED_MODULES

    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise BadInputError(f"{folder} has no safetensors weights: the tracker save_pretrained step failed")
    kept: dict[str, torch.Tensor] = {}
    dropped = 0
    for shard in shards:
        for name, tensor in load_file(str(shard)).items():
            if name.split(".", 1)[0] in TRACKER_EXPORTED_MODULES:
                dropped += 1
            else:
                kept[name] = tensor.contiguous()
    for shard in shards:
        shard.unlink()
    (folder / "model.safetensors.index.json").unlink(missing_ok=True)
    save_file(kept, str(folder / "model.safetensors"), metadata={"format": "pt"})
    logger.info("tracker folder: kept %d PyTorch tensors, dropped %d carried by the ONNX graphs", len(kept), dropped)
    return len(kept)
