"""Shared pytest fixtures. Area-specific fixtures live in their own test modules."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

# Tests never download anything.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped, with that reason, where there is none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="marked gpu: needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def per_session_onnxruntime_pools():
    """A CPU int4 run turns on onnxruntime's shared pool for the rest of its process (``backends/ort_threads.py``),
    after which onnxruntime refuses sessions with pools of their own: in this one test process that would leak from
    one test into the next. So it stays off here; the test of it runs in a fresh interpreter."""
    from stvgr1_edge.backends import ort_threads

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ort_threads, "share_threads", lambda threads=None: False)
        yield


FIXTURES = Path(__file__).resolve().parent / "fixtures"
"""Real data the tests need, copied into the repo with its provenance (``fixtures/README.md``)."""


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


def write_two_box_clip(path: Path, num_frames: int, width: int, height: int, wobble_a: int, wobble_b: int) -> Path:
    """Two grey boxes on a dark floor (for the SAM2/EdgeTAM trackers): the left edge of box a moves right by
    ``i % wobble_a`` pixels in frame i, that of box b left by ``i % wobble_b`` (1: still)."""
    from stvgr1_edge.video import VideoWriter

    with VideoWriter(path, 10.0, width, height) as writer:
        for i in range(num_frames):
            img = np.full((height, width, 3), 60, np.uint8)
            img[8:28, 8 + i % wobble_a : 24] = 200
            img[12:40, 36 - i % wobble_b : 56] = 120
            writer.write(img)
    return path


def write_test_video(path: Path, num_frames: int = 20, width: int = 64, height: int = 48, fps: float = 10.0) -> Path:
    """A small H.264 clip whose frame i has red channel value 8*i (handy for checking indices)."""
    from stvgr1_edge.video import VideoWriter

    with VideoWriter(path, fps, width, height) as w:
        for i in range(num_frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = (8 * i) % 256
            img[..., 1] = 60
            w.write(img)
    return path


@pytest.fixture(scope="session")
def random_prompted_clip():
    """Four random 56x84 frames as a prompted clip (a 2 s, 10 fps video sampled at 2 fps): what a grounder needs."""
    from stvgr1_edge.clip import PromptedClip

    frames = np.random.default_rng(0).integers(0, 256, (4, 60, 90, 3), dtype=np.uint8)
    return PromptedClip(frames, (0, 6, 13, 19), 2.0, 56, 84, 10.0, 20)


@pytest.fixture(scope="session")
def saved_tiny(tmp_path_factory):
    """A tiny random Qwen2.5-VL saved with ``save_pretrained`` (``folder``) and its processor loaded back."""
    import types

    from transformers import AutoProcessor

    from stvgr1_edge.tiny import save_tiny_model

    folder = save_tiny_model(tmp_path_factory.mktemp("saved_tiny") / "model")
    return types.SimpleNamespace(folder=folder, processor=AutoProcessor.from_pretrained(folder))


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/{name}.py`` as a module (the scripts put their folder on ``sys.path`` to import each other)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
