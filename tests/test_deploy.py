"""deploy/: the Dockerfiles copy what exists, the Jetson pins cover the runtime, the resolve check is wired into CI.
(The resolve itself needs PyPI: CI runs `bash deploy/check_jetson_resolve.sh`; here only its command is checked.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
JETSON_PINS = DEPLOY / "constraints-jetson-py310.txt"
DOCKERFILES = ("Dockerfile.jetson", "Dockerfile.workstation")
NVIDIA_SUPPLIED = {"torch", "torchvision"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_dependencies() -> dict[str, str]:
    """pyproject's runtime dependencies: normalized name -> the requirement as written."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {normalize(re.match(r"[A-Za-z0-9._-]+", dep).group(0)): dep for dep in deps}


def jetson_pins() -> dict[str, str]:
    pins = {}
    for line in JETSON_PINS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"not an exact pin: {line!r}"
            pins[normalize(name)] = version.strip()
    return pins


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (DEPLOY / dockerfile).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copied_path_and_constraint_file_of_the_dockerfiles_exists(dockerfile):
    copied: set[PurePosixPath] = set()
    copies = 0
    for keyword, rest in instructions(dockerfile):
        if keyword != "COPY":
            continue
        args = [a for a in shlex.split(rest) if not a.startswith("--")]
        *sources, destination = args
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}: not in the repository"
            # where it lands, relative to the working directory (COPY . and folder copies keep their layout)
            target = PurePosixPath(destination.rstrip("/"))
            copied.add(target / PurePosixPath(source).name if destination.endswith("/") else target)
        copies += 1
    assert copies >= 4
    runs = " ".join(rest for keyword, rest in instructions(dockerfile) if keyword == "RUN")
    pip_installs = [command for command in re.split(r"&&|;", runs) if "pip install" in command]
    constraint_files = [path for command in pip_installs for path in re.findall(r"\s-c\s+\"?([^\s\"]+)", command)]
    assert constraint_files, f"{dockerfile} installs nothing with pinned versions"
    for path in constraint_files:
        if path.startswith("/"):  # written by the build itself: an earlier redirect must create it
            written = runs.find(f"> {path}")
            assert 0 <= written < runs.index(f"-c {path}"), f"{dockerfile}: {path} is not written before its use"
        else:
            assert (ROOT / path).is_file(), f"{dockerfile}: -c {path}: not in the repository"
            assert PurePosixPath(path) in {PurePosixPath(str(p).removeprefix("./")) for p in copied}, (
                f"{dockerfile}: -c {path} is not copied into the image"
            )


def test_jetson_image_installs_the_runtime_only_from_an_l4t_base():
    steps = instructions("Dockerfile.jetson")
    assert [rest for keyword, rest in steps if keyword == "FROM"][0].startswith("dustynv/l4t-pytorch:r36.")
    runs = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    assert "[export]" not in runs and "[train]" not in runs and "bitsandbytes" not in runs
    assert "-c deploy/constraints-jetson-py310.txt" in runs


def test_jetson_pins_cover_every_runtime_dependency_but_nvidias_torch():
    pins = jetson_pins()
    wanted = set(runtime_dependencies()) - NVIDIA_SUPPLIED
    assert wanted <= set(pins), f"not pinned for the Jetson: {sorted(wanted - set(pins))}"
    assert not NVIDIA_SUPPLIED & set(pins), "torch/torchvision must come from NVIDIA, not from these pins"


def test_jetson_pins_leave_out_bitsandbytes():
    assert "bitsandbytes" not in jetson_pins()


def test_jetson_pins_satisfy_pyprojects_ranges():
    from packaging.requirements import Requirement

    pins = jetson_pins()
    for name, requirement in runtime_dependencies().items():
        if name not in NVIDIA_SUPPLIED:
            assert Requirement(requirement).specifier.contains(pins[name]), f"{name}=={pins[name]} vs {requirement}"


def test_resolve_check_prints_an_aarch64_python_310_command_with_every_runtime_dependency():
    proc = subprocess.run(
        ["bash", str(DEPLOY / "check_jetson_resolve.sh"), "--print-command"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout)
    assert words[1:5] == ["-m", "pip", "install", "--dry-run"]
    assert "--python-version" in words and words[words.index("--python-version") + 1] == "3.10"
    platforms = [words[i + 1] for i, w in enumerate(words) if w == "--platform"]
    assert platforms and all(p.endswith("aarch64") for p in platforms)
    assert {"manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_35_aarch64"} <= set(platforms)
    assert words[words.index("-c") + 1] == "deploy/constraints-jetson-py310.txt"
    requested = {normalize(re.match(r"[A-Za-z0-9._-]+", w).group(0)) for w in words[words.index("-c") + 2 :]}
    # what needs torch is checked on its own (its wheel, no dependencies): together, every runtime dependency
    torch_dependent = re.search(r"TORCH_DEPENDENT=\(([^)]*)\)", (DEPLOY / "check_jetson_resolve.sh").read_text())
    assert torch_dependent is not None
    separately = {normalize(n) for n in torch_dependent.group(1).split()}
    assert requested | (separately & set(runtime_dependencies())) == set(runtime_dependencies()) - NVIDIA_SUPPLIED
    assert not requested & separately


def test_resolve_check_refuses_unknown_options():
    proc = subprocess.run(["bash", str(DEPLOY / "check_jetson_resolve.sh"), "--nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_ci_runs_the_jetson_resolve_after_the_lint_steps_and_before_pytest():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    position = lines.index("bash deploy/check_jetson_resolve.sh")
    assert lines.index("mypy") < position < lines.index("python -m pytest -q")
