"""The runtime package imports without the toolchains: a Jetson installs only `stvgr1_edge/`."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = r"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("train", "export", "stvgr1_edge_train", "stvgr1_edge_export", "trl", "peft",
                                  "deepspeed", "onnx", "onnxruntime", "bitsandbytes"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import stvgr1_edge
names = [m.name for m in pkgutil.walk_packages(stvgr1_edge.__path__, "stvgr1_edge.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def test_every_runtime_module_imports_without_train_export_or_their_dependencies():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip()) >= 20  # the walk really found the package's modules


def test_toolchain_commands_say_what_to_install_when_the_toolchain_is_missing(tmp_path):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('trl', 'onnx'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from stvgr1_edge.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for command, extra in (("train", "train"), ("export", "export")):
        proc = subprocess.run(
            [sys.executable, "-c", code, command, "--help"], capture_output=True, text=True, timeout=300
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and f"stvg-edge[{extra}]" in lines[0], proc.stderr


BLOCK_TOOLCHAIN = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("train", "export", "benchmarks", "stvgr1_edge_train", "stvgr1_edge_export"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
from stvgr1_edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_run_and_run_bundle_work_with_the_toolchain_unimportable(tmp_path):
    """The runtime runs a plain model and an int4 + ONNX bundle with `train`/`export` (and the installed
    `stvgr1_edge_train`/`stvgr1_edge_export`) unimportable: every loader a bundle needs is in the runtime."""
    import json

    pytest.importorskip("onnxruntime")
    from stvgr1_edge.cli import main
    from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset
    from stvgr1_edge.tiny import save_tiny_model

    write_synthetic_dataset(tmp_path / "clips", num=1, seed=3, config=SynthConfig(seconds=4.0, width=160, height=120))
    entry = next(iter(json.loads((tmp_path / "clips" / "annotations.json").read_text()).values()))
    video, query = str(tmp_path / "clips" / entry["video_path"]), entry["English"]
    model = save_tiny_model(tmp_path / "tiny", seed=0)
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "bundle"), "--llm", "int4"]) == 0

    for name, extra in (("plain", ["--model", str(model)]), ("bundle", ["--bundle", str(tmp_path / "bundle")])):
        out = tmp_path / f"{name}.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                BLOCK_TOOLCHAIN,
                "run",
                video,
                query,
                *extra,
                "-o",
                str(out),
                "--device",
                "cpu",
                "--max-new-tokens",
                "8",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        result = json.loads(out.read_text())
        assert result["queries"][0]["answer_text"], name
        if name == "bundle":
            assert result["config"]["grounder"]["quant"] == "int4"


def test_the_wheel_installs_only_the_projects_own_top_level_names(tmp_path):
    """No generic `train`/`export` in site-packages: the toolchain installs as `stvgr1_edge_train`/`_export`, and
    every package folder of the checkout is in the wheel."""
    import shutil
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # setuptools builds in the source folder: a copy keeps the checkout clean
    for name in ("stvgr1_edge", "export", "train"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    proc = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("stvg_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"stvgr1_edge", "stvgr1_edge_export", "stvgr1_edge_train"}
    packaged = {str(Path(n).parent) for n in names if n.endswith("/__init__.py")}
    folders = {"stvgr1_edge": "stvgr1_edge", "export": "stvgr1_edge_export", "train": "stvgr1_edge_train"}
    expected = set()
    for folder, installed in folders.items():
        for init in (root / folder).rglob("__init__.py"):
            expected.add(str(Path(installed) / init.parent.relative_to(root / folder)).rstrip("/."))
    assert expected == {p.rstrip("/.") for p in packaged}
    assert "stvgr1_edge/models/nano/model.safetensors" in names
    assert "stvgr1_edge_train/recipes/nano/sft.yaml" in names


# Which room may import which (ARCHITECTURE.md): the runtime imports no other room; the toolchains import the
# runtime only (train may use export's writers, export never train); benchmarks may import anything; nothing imports
# benchmarks.
ALLOWED_IMPORTS = {
    "stvgr1_edge": set(),
    "export": {"stvgr1_edge"},
    "train": {"stvgr1_edge", "export"},
}
ROOMS = {
    "stvgr1_edge": "stvgr1_edge",
    "stvgr1_edge_export": "export",
    "export": "export",
    "stvgr1_edge_train": "train",
    "train": "train",
    "benchmarks": "benchmarks",
}


def _imported_rooms(path) -> set[str]:
    import ast

    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names = [str(node.args[0].value)]
        rooms.update(ROOMS[n.split(".")[0]] for n in names if n.split(".")[0] in ROOMS)
    return rooms


def test_each_room_imports_only_the_rooms_it_may():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    wrong = []
    for room, allowed in ALLOWED_IMPORTS.items():
        for path in sorted((root / room).rglob("*.py")):
            for other in _imported_rooms(path) - allowed - {room}:
                wrong.append(f"{path.relative_to(root)} imports {other}")
    assert not wrong, wrong
