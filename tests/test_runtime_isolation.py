"""The runtime package imports without the toolchains: a Jetson installs only `stvgr1_edge/`."""

from __future__ import annotations

import subprocess
import sys

CHECK = r"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("train", "export", "trl", "peft", "deepspeed", "onnx", "onnxruntime", "bitsandbytes"):
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
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('trl', 'onnx'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from stvgr1_edge.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    for command, extra in (("train", "train"), ("export", "export")):
        proc = subprocess.run([sys.executable, "-c", code, command, "--help"], capture_output=True, text=True, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and f"stvg-edge[{extra}]" in lines[0], proc.stderr
