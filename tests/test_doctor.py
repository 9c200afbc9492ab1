"""What this machine can run (stvgr1_edge/doctor.py): the real report here, a runtime without torch, and the
verdicts and rendering as pure functions."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from stvgr1_edge.doctor import (
    MAX_LINES,
    RUNTIME_IMPORT_NAMES,
    Check,
    DoctorReport,
    Facts,
    Verdict,
    _cudnn_version,
    diagnose,
    what_will_work,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report() -> DoctorReport:
    return diagnose()


def _cpu_int4pack_works() -> bool:
    """Call torch's CPU int4 kernels directly (not through the runtime's module) on a small layer."""
    import torch

    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return False
    try:
        codes = torch.randint(0, 16, (32, 128), dtype=torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2)
        scales_and_zeros = torch.stack([torch.full((1, 32), 0.1), torch.zeros(1, 32)], dim=-1)
        x = torch.randn(2, 128)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 128, scales_and_zeros)
        reference = x @ ((codes.float() - 8) * 0.1).t()
        return bool(torch.allclose(y, reference, atol=1e-3, rtol=1e-3))
    except Exception:
        return False


def test_this_machine_can_run_the_runtime(report):
    assert report.exit_code == 0, report.blocking
    for name in ("Python", "torch", "transformers", "PyAV", "runtime deps"):
        assert report.check(name).status == "ok", report.check(name)


def test_cpu_int4pack_row_agrees_with_calling_the_kernel(report):
    row = report.check("int4 CPU")
    works = _cpu_int4pack_works()
    assert (row.status == "ok") == works, row
    verdict = report.verdict("run --bundle, int4 LLM")
    if works and report.check("int4 CUDA").status != "ok":
        assert "CPU int4pack" in verdict.reason


def test_missing_cuda_and_tensorrt_are_said_in_plain_words(report):
    import torch

    lines = "\n".join(report.render())
    if not torch.cuda.is_available():
        cuda = report.check("CUDA")
        assert cuda.status == "missing"
        assert cuda.detail.startswith("no CUDA GPU: torch ")
        build = torch.version.cuda
        assert (f"is a CUDA {build} build but no device is visible" if build else "CPU-only build") in cuda.detail
        assert not report.verdict("run --device cuda").works
        assert not report.verdict("run --bundle, ONNX vision, CUDA").works
        assert cuda.detail in " ".join(lines.split())  # the whole sentence is on screen, wrapped or not
    if importlib.util.find_spec("tensorrt") is None:
        assert report.check("TensorRT").detail == "TensorRT is not installed (it comes from NVIDIA's index or JetPack)"
        for option in ("run --bundle, TensorRT vision", "export --vision trt"):
            verdict = report.verdict(option)
            assert not verdict.works and "TensorRT is not installed" in verdict.reason
        assert "TensorRT is not installed" in lines


def test_the_report_fits_one_screen(report):
    lines = report.render()
    assert len(lines) <= MAX_LINES
    assert max(len(line) for line in lines) <= 100
    assert lines[0] == "What this machine has" and "What will work here" in lines


def test_without_torch_diagnose_reports_exit_code_2_and_names_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    report = diagnose()
    assert report.exit_code == 2
    assert report.check("torch").status in ("missing", "error")
    assert "torch" in [c.name for c in report.blocking]
    lines = report.render()
    assert any(line.split()[:2] in (["missing", "torch"], ["error", "torch"]) for line in lines)
    assert len(lines) <= MAX_LINES and max(map(len, lines)) <= 100


BLOCK_TORCH = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
from stvgr1_edge.doctor import diagnose
report = diagnose()
print("\n".join(report.render()))
sys.exit(report.exit_code)
"""


def test_a_fresh_process_without_torch_gets_rows_not_a_traceback():
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "blocked torch" in proc.stdout  # the torch row says why it does not import
    assert "cannot run here" in proc.stdout


def test_the_runtime_import_table_names_every_runtime_dependency_of_pyproject():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {dep.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for dep in dependencies}
    assert set(RUNTIME_IMPORT_NAMES) == names


@pytest.mark.parametrize("number, text", [(92400, "9.24.0"), (90100, "9.1.0"), (8902, "8.9.2"), (8700, "8.7.0")])
def test_cudnn_version_numbers(number, text):
    assert _cudnn_version(number) == text


ORIN = Facts(
    cuda_device="Orin",
    no_cuda_why="",
    int4_cuda=True,
    int4_cpu=False,
    nf4_device=None,
    nf4_why="bitsandbytes: 0.45.0: no CUDA GPU and no CPU 4-bit kernels",
    onnxruntime="1.20.0",
    ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    tensorrt="10.3.0",
    accelerate="1.0.1",
    export_missing=("onnx", "onnxscript"),
    train_missing=("trl", "peft"),
)


def test_verdicts_for_a_jetson_with_the_runtime_onnxruntime_gpu_and_tensorrt():
    verdicts = {v.option: v for v in what_will_work(ORIN)}
    assert verdicts["run --device cuda"] == Verdict("run --device cuda", True, "CUDA GPU: Orin")
    assert verdicts["run --bundle, int4 LLM"] == Verdict(
        "run --bundle, int4 LLM", True, "tinygemm int4 kernel on the GPU"
    )
    assert verdicts["run --bundle, ONNX vision, CUDA"].works
    assert verdicts["run --bundle, TensorRT vision"] == Verdict(
        "run --bundle, TensorRT vision", True, "TensorRT 10.3.0 on the GPU"
    )
    assert not verdicts["run --quant nf4"].works and "no CPU 4-bit kernels" in verdicts["run --quant nf4"].reason
    assert not verdicts["export --vision trt"].works  # TensorRT is there, the export toolchain is not
    assert "stvg-edge[export]" in verdicts["export --vision trt"].reason
    assert verdicts["train"].reason == "pip install 'stvg-edge[train]' (missing: trl, peft)"


def test_verdicts_without_onnxruntime_or_accelerate_refuse_every_bundle():
    bare = Facts(no_cuda_why="no CUDA GPU: torch 2.5.0 is a CPU-only build (install a CUDA build of torch)")
    verdicts = {v.option: v for v in what_will_work(bare)}
    assert verdicts["run --device cuda"].reason == bare.no_cuda_why
    for option in [o for o in verdicts if o.startswith("run --bundle")]:
        assert not verdicts[option].works and "onnxruntime is not installed" in verdicts[option].reason
    with_ort = {v.option: v for v in what_will_work(Facts(onnxruntime="1.32.0", int4_cpu=True))}
    assert with_ort["run --bundle, ONNX vision, CPU"].works
    assert not with_ort["run --bundle, int4 LLM"].works
    assert "accelerate" in with_ort["run --bundle, int4 LLM"].reason
    slow = {v.option: v for v in what_will_work(Facts(onnxruntime="1.32.0", accelerate="1.0"))}
    assert slow["run --bundle, int4 LLM"].works and "dequantized" in slow["run --bundle, int4 LLM"].reason


def test_render_stays_on_one_screen_however_long_the_report():
    checks = tuple(Check("extras", f"row {i}", "warn", "a long explanation " * 12) for i in range(60))
    verdicts = tuple(Verdict(f"option {i}", False, "because " * 30) for i in range(9))
    short = DoctorReport(checks[:3], verdicts[:2]).render()
    assert len(short) == 3 + 3 * 3 + 2 * 3  # two headers, a blank line, three lines per wrapped row
    cut = DoctorReport(checks[:40], verdicts).render()
    assert len(cut) == 3 + 40 + 9  # one line per row: the rest of each detail is cut
    assert all(line.endswith("...") for line in cut[1:41])
    too_many = DoctorReport(checks, verdicts).render()
    assert len(too_many) == MAX_LINES and too_many[-1] == "... 13 more lines"
    for lines in (short, cut, too_many):
        assert max(len(line) for line in lines) <= 100


@pytest.mark.slow
def test_the_doctor_command_prints_one_screen_and_exits_0_here(capsys):
    from stvgr1_edge.cli import main

    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 10 < len(lines) <= MAX_LINES and max(len(line) for line in lines) <= 100
    assert any(line.startswith("What will work here") for line in lines)
    assert any("TensorRT is not installed" in line for line in lines)
