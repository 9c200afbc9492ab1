"""What this machine can run: the library behind ``stvg-edge doctor``.

:func:`diagnose` looks at the Python packages, the GPU, the video stack and the optional backends, and returns a
:class:`DoctorReport`: typed :class:`Check` rows (what is installed and whether it works) and :class:`Verdict` rows
(which options of ``run``/``export``/``train`` will work here, and why not). Every module is imported here, inside
a function, and every failure becomes a row: a broken or missing package never raises out of :func:`diagnose`.

Kernels are tried, not assumed: the int4 rows run a small :class:`~stvgr1_edge.backends.int4.WeightOnlyInt4Linear`
through the kernel the runtime would pick and compare it with the dequantized reference, and the bitsandbytes row
quantizes a small matrix to NF4 and back.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import sys
import textwrap
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Literal, Sequence

logger = logging.getLogger(__name__)

Status = Literal["ok", "warn", "missing", "error"]

RUNTIME_IMPORT_NAMES = {
    "numpy": "numpy",
    "av": "av",
    "opencv-python-headless": "cv2",
    "scipy": "scipy",
    "pycocotools": "pycocotools",
    "typer": "typer",
    "rich": "rich",
    "pillow": "PIL",
    "torch": "torch",
    "torchvision": "torchvision",
    "transformers": "transformers",
    "qwen-vl-utils": "qwen_vl_utils",
    "safetensors": "safetensors",
    "accelerate": "accelerate",
}
"""Every runtime dependency of pyproject.toml (distribution name) and the module it is imported as."""

EXTRA_IMPORT_NAMES = {
    "train": {"trl": "trl", "peft": "peft", "accelerate": "accelerate", "pyyaml": "yaml"},
    "export": {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript", "accelerate": "accelerate"},
    "serve": {"fastapi": "fastapi", "uvicorn": "uvicorn"},
}
"""The optional extras whose commands the report covers (distribution name -> module)."""

HW_DECODERS = (
    "h264_cuvid",
    "hevc_cuvid",
    "h264_nvv4l2dec",
    "hevc_nvv4l2dec",
    "h264_nvmpi",
    "hevc_nvmpi",
    "h264_v4l2m2m",
    "hevc_v4l2m2m",
    "h264_qsv",
    "hevc_qsv",
)
"""FFmpeg's hardware H.264/HEVC decoders: NVDEC (cuvid), Jetson (nvv4l2dec, nvmpi), V4L2 mem2mem, Intel QSV."""

TENSORRT_MISSING = "TensorRT is not installed (it comes from NVIDIA's index or JetPack)"
ORT_GPU_HINT = "install onnxruntime-gpu (Jetson: NVIDIA's build; PyPI's aarch64 one is CPU-only)"
MAX_LINES = 60
"""``render`` fits one screen: at most this many lines."""


@dataclass(frozen=True)
class Check:
    """One thing looked at, in plain words."""

    area: str
    """What it belongs to: "python", "torch", "video", "packages", "onnx", "tensorrt", "int4", "nf4", "extras"."""
    name: str
    """Short label, unique in a report ("torch", "CUDA", "int4 CPU", ...)."""
    status: Status
    """ok: present and working; warn: present with a problem; missing: not installed or not here; error: installed
    but failing."""
    detail: str
    """Versions, devices, or what is wrong and what to do."""
    required: bool = False
    """The runtime cannot run at all without it (torch, transformers, PyAV)."""


@dataclass(frozen=True)
class Verdict:
    """Whether one option of the command line will work on this machine."""

    option: str
    works: bool
    reason: str


@dataclass(frozen=True)
class Facts:
    """What the verdicts are decided from (filled by :func:`diagnose`; :func:`what_will_work` is pure)."""

    cuda_device: str | None = None
    """Name of the first CUDA GPU; None when none is usable."""
    no_cuda_why: str = "no CUDA GPU"
    int4_cuda: bool = False
    """torch's tinygemm int4 kernel works on the GPU."""
    int4_cpu: bool = False
    """torch's CPU int4pack kernel works."""
    nf4_device: str | None = None
    """"cuda" or "cpu": where bitsandbytes 4-bit works (CUDA preferred); None: nowhere."""
    nf4_why: str = "bitsandbytes is not installed"
    onnxruntime: str | None = None
    """onnxruntime's version; None when it does not import."""
    ort_providers: tuple[str, ...] = ()
    tensorrt: str | None = None
    accelerate: str | None = None
    export_missing: tuple[str, ...] = ()
    """Modules of the export extra that do not import."""
    train_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class DoctorReport:
    """Every :class:`Check` and :class:`Verdict` of one :func:`diagnose`."""

    checks: tuple[Check, ...]
    verdicts: tuple[Verdict, ...]

    def check(self, name: str) -> Check:
        """The row called ``name`` (KeyError if there is none)."""
        for row in self.checks:
            if row.name == name:
                return row
        raise KeyError(name)

    def verdict(self, option: str) -> Verdict:
        """The verdict on ``option`` ("run --device cuda", ...; KeyError if there is none)."""
        for row in self.verdicts:
            if row.option == option:
                return row
        raise KeyError(option)

    @property
    def exit_code(self) -> int:
        """0, or 2 when the runtime cannot run at all (a required package does not import)."""
        return 2 if self.blocking else 0

    @property
    def blocking(self) -> tuple[Check, ...]:
        """The required rows that fail."""
        return tuple(c for c in self.checks if c.required and c.status in ("missing", "error"))

    def render(self, width: int = 100, max_lines: int = MAX_LINES) -> list[str]:
        """The report as lines of at most ``width`` columns, at most ``max_lines`` of them: details wrap onto up to
        three lines, fewer (then cut) when the report would not fit."""
        for lines_per_row in (3, 2, 1):
            lines = self._lines(width, lines_per_row)
            if len(lines) <= max_lines:
                return lines
        return lines[: max_lines - 1] + [_cut(f"... {len(lines) - max_lines + 1} more lines", width)]

    def _lines(self, width: int, lines_per_row: int) -> list[str]:
        name_width = max(len(c.name) for c in self.checks) if self.checks else 0
        option_width = max(len(v.option) for v in self.verdicts) if self.verdicts else 0
        lines = ["What this machine has"]
        for c in self.checks:
            lines += _row(f"  {c.status:<8} {c.name:<{name_width}}  ", c.detail, width, lines_per_row)
        lines += ["", "What will work here"]
        for v in self.verdicts:
            lines += _row(
                f"  {'yes' if v.works else 'no':<4} {v.option:<{option_width}}  ", v.reason, width, lines_per_row
            )
        if self.blocking:
            names = ", ".join(c.name for c in self.blocking)
            lines += ["", _cut(f"stvg-edge cannot run here until these rows are fixed: {names}", width)]
        return lines


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _row(head: str, text: str, width: int, max_lines: int) -> list[str]:
    """``head`` then ``text`` wrapped under itself, in at most ``max_lines`` lines of ``width`` columns."""
    room = max(width - len(head), 20)
    parts = textwrap.wrap(text, room) or [""]
    if len(parts) > max_lines:
        parts = parts[: max_lines - 1] + [_cut(" ".join(parts[max_lines - 1 :]), room)]
    return [_cut(head + parts[0], width)] + [_cut(" " * len(head) + p, width) for p in parts[1:]]


# ----------------------------------------------------------------------------------------------- helpers
def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return _cut(message, 90)


def _import(name: str) -> tuple[ModuleType | None, str]:
    """``(module, "")``, or ``(None, why)``: a broken install raises more than ImportError (OSError for a missing
    shared library, RuntimeError from an init), and each of those is a finding, not a crash."""
    try:
        return importlib.import_module(name), ""
    except Exception as exc:
        logger.debug("importing %s failed", name, exc_info=True)
        return None, _one_line(exc)


def _unavailable(area: str, name: str, module: str, why: str, hint: str, required: bool = False) -> Check:
    """The row of a module that does not import: "missing" when it is not installed, "error" when it is but its
    import fails (a missing shared library, a dependency that does not import)."""
    if why.startswith(f"ModuleNotFoundError: No module named '{module}'"):
        return Check(area, name, "missing", f"not installed: {hint}", required)
    return Check(area, name, "error", f"does not import ({why}): {hint}", required)


def _version(module: ModuleType) -> str:
    return str(getattr(module, "__version__", "?"))


def _base_version(version: str) -> str:
    """``2.14.1+cu130`` -> ``2.14.1``."""
    return version.split("+")[0]


def _declared_requirements(extra: str | None) -> dict[str, Any]:
    """``{distribution: SpecifierSet}`` that the installed stvg-edge declares for ``extra`` (None: the runtime);
    empty when stvg-edge is not installed as a package or ``packaging`` is missing."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        from packaging.requirements import Requirement

        lines = requires("stvg-edge") or []
    except (ImportError, PackageNotFoundError):
        return {}
    declared = {}
    for line in lines:
        req = Requirement(line)
        marker = req.marker
        names_an_extra = marker is not None and "extra" in str(marker)
        if extra is None:
            in_scope = not names_an_extra and (marker is None or marker.evaluate())
        else:
            in_scope = names_an_extra and marker is not None and marker.evaluate({"extra": extra})
        if in_scope:
            declared[req.name.lower()] = req.specifier
    return declared


def _outside_range(declared: dict[str, Any]) -> list[str]:
    """``"name version (spec)"`` for each installed distribution whose version is outside its declared range.
    Pre-releases count as inside (NVIDIA's Jetson torch is ``2.5.0a0+...``), as pip treats installed ones."""
    from importlib.metadata import PackageNotFoundError, version

    outside = []
    for name, spec in declared.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue
        if not spec.contains(installed, prereleases=True):
            outside.append(f"{name} {installed} ({spec})")
    return outside


# ----------------------------------------------------------------------------------------------- checks
def _python_row() -> Check:
    ok = sys.version_info >= (3, 10)
    detail = f"{platform.python_version()} on {platform.system()} {platform.machine()}"
    return Check("python", "Python", "ok" if ok else "error", detail if ok else f"{detail}: stvg-edge needs 3.10+")


def _torch_rows() -> tuple[list[Check], ModuleType | None, str | None, str]:
    """torch, CUDA, cuDNN and GPU rows; the torch module (or None), the first GPU's name (or None), and why CUDA
    is not usable in plain words."""
    torch, why = _import("torch")
    if torch is None:
        no_torch = "torch does not import"
        rows = [
            _unavailable("torch", "torch", "torch", why, "install torch (Jetson: NVIDIA's wheel)", required=True),
            Check("torch", "CUDA", "missing", no_torch),
        ]
        return rows, None, None, no_torch
    version = _base_version(_version(torch))
    cuda_build = getattr(torch.version, "cuda", None)
    build = f"CUDA {cuda_build} build" if cuda_build else "CPU-only build"
    if getattr(torch.version, "hip", None):
        build = f"ROCm {torch.version.hip} build"
    rows = [Check("torch", "torch", "ok", f"{_version(torch)} ({build})", True)]

    gpus: list[tuple[str, float, tuple[int, int]]] = []
    problem = ""  # what torch said about CUDA (an old driver, a failed init), if anything
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if torch.cuda.is_available():
                for i in range(torch.cuda.device_count()):
                    props = torch.cuda.get_device_properties(i)
                    gpus.append((props.name, props.total_memory / 2**30, (props.major, props.minor)))
        except Exception as exc:  # a broken driver install
            gpus, problem = [], _one_line(exc)
    if caught and not problem:
        problem = str(caught[0].message).strip().splitlines()[0] if str(caught[0].message).strip() else ""
    if gpus:
        rows.append(Check("torch", "CUDA", "ok", f"CUDA {cuda_build}, {len(gpus)} GPU(s) visible"))
        no_cuda_why = ""
    else:
        if not cuda_build:
            no_cuda_why = f"no CUDA GPU: torch {version} is a CPU-only build (install a CUDA build of torch)"
        else:
            no_cuda_why = f"no CUDA GPU: torch {version} is a CUDA {cuda_build} build but no device is visible"
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None:
                no_cuda_why += f" (CUDA_VISIBLE_DEVICES={visible!r})"
            if problem:
                no_cuda_why += f": {_cut(problem, 100)}"
        rows.append(Check("torch", "CUDA", "missing", no_cuda_why))

    try:
        if torch.backends.cudnn.is_available():
            version_text = _cudnn_version(torch.backends.cudnn.version())
            rows.append(Check("torch", "cuDNN", "ok", version_text + ("" if gpus else " (unused without a CUDA GPU)")))
        else:
            rows.append(Check("torch", "cuDNN", "missing", "not in this torch build"))
    except Exception as exc:
        rows.append(Check("torch", "cuDNN", "error", _one_line(exc)))

    # identical GPUs share a row, so that an 8-GPU node stays on one screen
    groups: dict[tuple[str, float, tuple[int, int]], list[int]] = {}
    for i, gpu in enumerate(gpus):
        groups.setdefault((gpu[0], round(gpu[1], 1), gpu[2]), []).append(i)
    for (name, memory, (major, minor)), ids in groups.items():
        label = f"GPU {ids[0]}" if len(ids) == 1 else f"GPU {ids[0]}-{ids[-1]}"
        old = (major, minor) < (8, 0)
        detail = f"{name}, {memory:.1f} GiB, compute capability {major}.{minor}"
        detail += " (older than Ampere: no bf16, no int4 tinygemm)" if old else ""
        rows.append(Check("torch", label, "warn" if old else "ok", detail))
    return rows, torch, gpus[0][0] if gpus else None, no_cuda_why


def _cudnn_version(number: int | None) -> str:
    """``92400`` -> ``9.24.0`` (cuDNN 9 numbers versions as major*10000 + minor*100 + patch, cuDNN 8 as
    major*1000 + minor*100 + patch)."""
    if not number:
        return "present (version unknown)"
    major, rest = divmod(number, 10000) if number >= 90000 else divmod(number, 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def _transformers_row() -> Check:
    module, why = _import("transformers")
    if module is None:
        return _unavailable("packages", "transformers", "transformers", why, "pip install stvg-edge", required=True)
    return Check("packages", "transformers", "ok", _version(module), True)


def _video_rows(cuda_device: str | None) -> list[Check]:
    av, why = _import("av")
    if av is None:
        return [_unavailable("video", "PyAV", "av", why, "pip install stvg-edge", required=True)]
    rows = [Check("video", "PyAV", "ok", _version(av), True)]
    ffmpeg = getattr(av, "ffmpeg_version_info", None)
    libavcodec = ".".join(str(v) for v in getattr(av, "library_versions", {}).get("libavcodec", ()))
    rows.append(Check("video", "FFmpeg", "ok", f"{ffmpeg or 'version unknown'} (libavcodec {libavcodec or '?'})"))

    def has(name: str, mode: str) -> bool:
        try:
            av.codec.Codec(name, mode)
            return True
        except Exception:
            return False

    missing = [label for name, mode, label in _CODECS if not has(name, mode)]
    if missing:
        rows.append(Check("video", "codecs", "warn", f"missing: {', '.join(missing)}: use a PyAV wheel from PyPI"))
    else:
        rows.append(Check("video", "codecs", "ok", "H.264 and HEVC decoders, libx264 encoder (for --vis)"))

    available = set(getattr(av, "codecs_available", ()))
    decoders = [name for name in HW_DECODERS if name in available and has(name, "r")]
    if decoders:
        note = "built in, unused: stvg-edge decodes in software"
        if any("cuvid" in d for d in decoders) and cuda_device is None:
            note += "; cuvid would need a CUDA GPU"
        rows.append(Check("video", "hw decoders", "ok", f"{' '.join(decoders)}: {note}"))
    else:
        rows.append(
            Check("video", "hw decoders", "missing", "none in this FFmpeg build (stvg-edge decodes in software)")
        )
    try:
        from av.codec.hwaccel import hwdevices_available

        devices = list(hwdevices_available())
        detail = " ".join(devices) + " (device types this FFmpeg can open)" if devices else "none in this FFmpeg build"
        rows.append(Check("video", "hwaccel", "ok" if devices else "missing", detail))
    except ImportError:
        rows.append(Check("video", "hwaccel", "missing", f"PyAV {_version(av)} has no av.codec.hwaccel (PyAV 14+)"))
    return rows


_CODECS = (("h264", "r", "H.264 decoder"), ("hevc", "r", "HEVC decoder"), ("libx264", "w", "libx264 encoder"))


def _runtime_packages_row() -> Check:
    """The runtime dependencies without a row of their own: they import, and their versions are in range."""
    name = "runtime deps"
    broken: list[str] = []
    for module_name in RUNTIME_IMPORT_NAMES.values():
        if module_name in ("torch", "transformers", "av"):  # reported on their own rows
            continue
        module, why = _import(module_name)
        if module is None:
            broken.append(module_name if broken else f"{module_name} ({why})")
        elif module_name == "cv2" and not _version(module).startswith("4."):
            version = _version(module)
            detail = f"OpenCV {version}: ID markers need OpenCV 4's glyphs: pip install 'opencv-python-headless<5'"
            return Check("packages", name, "warn", detail)
    if broken:
        return Check("packages", name, "missing", f"not importable: {', '.join(broken)}: pip install stvg-edge", True)
    declared = _declared_requirements(None)
    if not declared:
        return Check("packages", name, "warn", "all import; versions unchecked (stvg-edge is not installed)")
    outside = _outside_range(declared)
    if outside:
        return Check("packages", name, "warn", f"outside pyproject's ranges: {', '.join(outside)}")
    return Check("packages", name, "ok", f"all {len(declared)} import, versions within pyproject's ranges")


def _onnx_rows() -> tuple[list[Check], ModuleType | None]:
    """onnx (export) and onnxruntime (every bundle) with its execution providers."""
    rows = []
    onnx, why = _import("onnx")
    if onnx is None:
        rows.append(_unavailable("onnx", "onnx", "onnx", why, "`export` needs it: pip install 'stvg-edge[export]'"))
    else:
        rows.append(Check("onnx", "onnx", "ok", _version(onnx)))
    ort, why = _import("onnxruntime")
    if ort is None:
        rows.append(_unavailable("onnx", "onnxruntime", "onnxruntime", why, f"every bundle needs it; {ORT_GPU_HINT}"))
        return rows, None
    providers = [p.removesuffix("ExecutionProvider") for p in ort.get_available_providers()]
    detail = f"{_version(ort)}, providers: {', '.join(providers)}"
    if "CUDA" not in providers:
        detail += " (CPU-only build: no CUDA provider)"
    rows.append(Check("onnx", "onnxruntime", "ok", detail))
    return rows, ort


def _tensorrt_row() -> tuple[Check, str | None]:
    trt, why = _import("tensorrt")
    if trt is None:
        row = _unavailable("tensorrt", "TensorRT", "tensorrt", why, "bundles with an engine and `export --vision trt`")
        return (Check("tensorrt", "TensorRT", "missing", TENSORRT_MISSING) if row.status == "missing" else row), None
    return Check("tensorrt", "TensorRT", "ok", _version(trt)), _version(trt)


def _int4_relative_error(torch: ModuleType, device: Any) -> tuple[str, float]:
    """Run a 32x256 int4 layer (group 128) through the kernel the runtime picks on ``device``; return the kernel's
    name and its largest error relative to the dequantized reference."""
    from .backends.int4 import WeightOnlyInt4Linear, dequantize_int4

    generator = torch.Generator().manual_seed(0)
    out_features, in_features, group = 32, 256, 128
    codes = torch.randint(0, 16, (out_features, in_features), generator=generator, dtype=torch.uint8)
    scales = torch.rand(out_features, in_features // group, generator=generator) * 0.01 + 0.001
    zeros = torch.randn(out_features, in_features // group, generator=generator) * 0.01
    x = torch.randn(4, in_features, generator=generator)
    layer = WeightOnlyInt4Linear(
        in_features, out_features, codes.to(device), scales.to(device), zeros.to(device), None, group, torch.float32
    )
    y = layer(x.to(device)).float().cpu()
    reference = torch.nn.functional.linear(x, dequantize_int4(codes, scales, zeros, group))
    return layer.kernel, float((y - reference).abs().max() / reference.abs().max())


def _int4_rows(torch: ModuleType | None, cuda_device: str | None) -> tuple[list[Check], bool, bool]:
    """The CUDA (tinygemm) and CPU (int4pack) rows, and whether each works."""
    if torch is None:
        rows = [Check("int4", name, "missing", "torch does not import") for name in ("int4 CUDA", "int4 CPU")]
        return rows, False, False
    version = _base_version(_version(torch))
    rows = []
    cuda_ok = cpu_ok = False
    if cuda_device is None:
        rows.append(Check("int4", "int4 CUDA", "missing", "tinygemm (_weight_int4pack_mm) needs a CUDA GPU: none here"))
    else:
        try:
            kernel, error = _int4_relative_error(torch, torch.device("cuda"))
            if kernel != "cuda":
                major, minor = torch.cuda.get_device_capability()
                detail = (
                    f"{cuda_device} is compute capability {major}.{minor}: tinygemm needs 8.0+ (int4 is dequantized)"
                )
                rows.append(Check("int4", "int4 CUDA", "missing", detail))
            elif error > 0.05:  # tinygemm computes in bf16
                rows.append(Check("int4", "int4 CUDA", "error", f"tinygemm gives wrong results (error {error:.2g})"))
            else:
                cuda_ok = True
                rows.append(Check("int4", "int4 CUDA", "ok", f"tinygemm (_weight_int4pack_mm) works on {cuda_device}"))
        except Exception as exc:
            rows.append(Check("int4", "int4 CUDA", "error", f"tinygemm test call failed: {_one_line(exc)}"))
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        detail = f"torch {version} has no _weight_int4pack_mm_for_cpu: int4 layers are dequantized per call (slow)"
        rows.append(Check("int4", "int4 CPU", "missing", detail))
    else:
        try:
            kernel, error = _int4_relative_error(torch, torch.device("cpu"))
            if kernel == "cpu" and error < 0.05:  # bf16 activations, as with tinygemm
                cpu_ok = True
                rows.append(Check("int4", "int4 CPU", "ok", "int4pack (_weight_int4pack_mm_for_cpu) works"))
            else:
                detail = f"int4pack gives wrong results (error {error:.2g}): int4 bundles will answer wrongly on CPU"
                rows.append(Check("int4", "int4 CPU", "error", detail))
        except Exception as exc:
            detail = f"int4pack exists but a test call failed ({_one_line(exc)}): int4 bundles will fail on CPU"
            rows.append(Check("int4", "int4 CPU", "error", detail))
    return rows, cuda_ok, cpu_ok


def _nf4_row(torch: ModuleType | None, cuda_device: str | None) -> tuple[Check, str | None]:
    """bitsandbytes' version and where its 4-bit (NF4) round trip works: the GPU, else the CPU."""
    bnb, why = _import("bitsandbytes")
    if bnb is None:
        hint = "`--quant nf4` needs it: pip install 'stvg-edge[quant]' (not on Jetson: use an int4 bundle)"
        return _unavailable("nf4", "bitsandbytes", "bitsandbytes", why, hint), None
    version = _version(bnb)
    if torch is None:
        return Check("nf4", "bitsandbytes", "error", f"{version}: torch does not import"), None
    cuda_problem = ""
    if cuda_device is not None:
        try:
            weight = torch.linspace(-1.0, 1.0, 64 * 64, device="cuda").reshape(64, 64)
            packed, state = bnb.functional.quantize_4bit(weight, quant_type="nf4")
            restored = bnb.functional.dequantize_4bit(packed, state)
            if float((restored - weight).abs().max()) < 0.2:
                return Check("nf4", "bitsandbytes", "ok", f"{version}: 4-bit (nf4) works on {cuda_device}"), "cuda"
            cuda_problem = "wrong 4-bit results on the GPU"
        except Exception as exc:
            cuda_problem = f"4-bit fails on the GPU ({_one_line(exc)})"
    from .grounding import bitsandbytes_4bit_on_cpu

    on_cpu = bitsandbytes_4bit_on_cpu()
    if cuda_device is not None:
        status: Status = "warn" if on_cpu else "error"
        where = "; it works on the CPU only" if on_cpu else ""
        return Check("nf4", "bitsandbytes", status, f"{version}: {cuda_problem}{where}"), "cpu" if on_cpu else None
    if on_cpu:
        return Check("nf4", "bitsandbytes", "ok", f"{version}: 4-bit (nf4) works on the CPU (no CUDA GPU)"), "cpu"
    return Check("nf4", "bitsandbytes", "missing", f"{version}: no CUDA GPU and no CPU 4-bit kernels"), None


def _extra_row(extra: str) -> tuple[Check, tuple[str, ...]]:
    """Whether the modules of ``extra`` import (and their versions are in its declared ranges)."""
    found, missing = [], []
    for dist, module_name in EXTRA_IMPORT_NAMES[extra].items():
        module, _why = _import(module_name)
        if module is None:
            missing.append(module_name)
        else:
            found.append(f"{dist} {_version(module)}")
    name = f"{extra} extra"
    if missing:
        detail = f"not importable: {', '.join(missing)}: pip install 'stvg-edge[{extra}]'"
        return Check("extras", name, "missing", detail), tuple(missing)
    outside = _outside_range(_declared_requirements(extra))
    if outside:
        return Check("extras", name, "warn", f"outside the extra's ranges: {', '.join(outside)}"), ()
    return Check("extras", name, "ok", ", ".join(found)), ()


# ----------------------------------------------------------------------------------------------- verdicts
def what_will_work(facts: Facts) -> tuple[Verdict, ...]:
    """Which options work here, and why not, from ``facts`` alone."""
    cuda = facts.cuda_device is not None
    no_cuda = [] if cuda else ["no CUDA GPU"]  # the CUDA row and the first verdict say why
    no_trt = [] if facts.tensorrt else [TENSORRT_MISSING]
    # every bundle goes through onnxruntime (its provider list), whatever its vision encoder is
    no_ort = [] if facts.onnxruntime else [f"onnxruntime is not installed: {ORT_GPU_HINT}"]
    no_export = [f"pip install 'stvg-edge[export]' (missing: {', '.join(facts.export_missing)})"]
    no_export = no_export if facts.export_missing else []

    def verdict(option: str, missing: list[str], reason: str) -> Verdict:
        return Verdict(option, not missing, "; ".join(missing) if missing else reason)

    if facts.nf4_device == "cuda":
        nf4 = Verdict("run --quant nf4", True, "bitsandbytes 4-bit works on the GPU")
    elif facts.nf4_device == "cpu":
        nf4 = Verdict(
            "run --quant nf4", True, "bitsandbytes 4-bit works on the CPU" + ("" if cuda else " (no CUDA GPU)")
        )
    else:
        nf4 = Verdict("run --quant nf4", False, facts.nf4_why)

    if cuda and facts.int4_cuda:
        int4_kernel = "tinygemm int4 kernel on the GPU"
    elif facts.int4_cpu:
        int4_kernel = "CPU int4pack kernel" + ("" if cuda else " (no CUDA GPU for tinygemm)")
    else:
        int4_kernel = "slowly: no int4 kernel here, each layer is dequantized per call"
    no_accelerate = [] if facts.accelerate else ["the int4 loader needs accelerate: pip install accelerate"]
    no_cuda_provider = []
    if facts.onnxruntime and "CUDAExecutionProvider" not in facts.ort_providers:
        no_cuda_provider = [f"onnxruntime {facts.onnxruntime} has no CUDA provider: {ORT_GPU_HINT}"]
    train_reason = "the train extra imports" + ("" if cuda else " (CPU only: no CUDA GPU)")

    return (
        Verdict("run --device cuda", cuda, f"CUDA GPU: {facts.cuda_device}" if cuda else facts.no_cuda_why),
        nf4,
        verdict("run --bundle, int4 LLM", no_ort + no_accelerate, int4_kernel),
        verdict("run --bundle, ONNX vision, CUDA", no_ort + no_cuda_provider + no_cuda, "onnxruntime's CUDA provider"),
        verdict("run --bundle, ONNX vision, CPU", no_ort, "onnxruntime's CPU provider"),
        verdict("run --bundle, TensorRT vision", no_trt + no_cuda + no_ort, f"TensorRT {facts.tensorrt} on the GPU"),
        verdict("export --vision trt", no_export + no_trt + no_cuda, f"TensorRT {facts.tensorrt} builds the engine"),
        verdict("export --llm int4", no_export, "the export extra imports"),
        verdict(
            "train",
            [f"pip install 'stvg-edge[train]' (missing: {', '.join(facts.train_missing)})"]
            if facts.train_missing
            else [],
            train_reason,
        ),
    )


# ----------------------------------------------------------------------------------------------- entry point
def diagnose() -> DoctorReport:
    """Look at this machine; never raises for a missing or broken package (each becomes a row)."""
    checks: list[Check] = [_python_row()]
    torch_rows, torch, cuda_device, no_cuda_why = _torch_rows()
    checks += torch_rows
    checks.append(_transformers_row())
    checks += _guarded("video", "PyAV", lambda: _video_rows(cuda_device))
    checks += _guarded("packages", "other runtime", lambda: [_runtime_packages_row()])
    onnx_rows, ort = _onnx_rows()
    checks += onnx_rows
    trt_row, tensorrt = _tensorrt_row()
    checks.append(trt_row)
    int4_rows, int4_cuda, int4_cpu = _int4_rows(torch, cuda_device)
    checks += int4_rows
    nf4_row, nf4_device = _nf4_row(torch, cuda_device)
    checks.append(nf4_row)
    extras = {extra: _extra_row(extra) for extra in EXTRA_IMPORT_NAMES}
    checks += [row for row, _missing in extras.values()]
    accelerate, _why = _import("accelerate")
    facts = Facts(
        cuda_device=cuda_device,
        no_cuda_why=no_cuda_why,
        int4_cuda=int4_cuda,
        int4_cpu=int4_cpu,
        nf4_device=nf4_device,
        nf4_why=f"bitsandbytes: {nf4_row.detail}",
        onnxruntime=_version(ort) if ort is not None else None,
        ort_providers=tuple(ort.get_available_providers()) if ort is not None else (),
        tensorrt=tensorrt,
        accelerate=_version(accelerate) if accelerate is not None else None,
        export_missing=extras["export"][1],
        train_missing=extras["train"][1],
    )
    report = DoctorReport(tuple(checks), what_will_work(facts))
    logger.info("doctor: %d checks, %d blocking", len(report.checks), len(report.blocking))
    return report


def _guarded(area: str, name: str, make_rows: Callable[[], Sequence[Check]]) -> Sequence[Check]:
    """``make_rows()``, or one error row if a library raised something no check foresaw."""
    try:
        return make_rows()
    except Exception as exc:
        logger.debug("doctor check %s failed", name, exc_info=True)
        return [Check(area, name, "error", f"check failed: {_one_line(exc)}")]
