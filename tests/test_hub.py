"""Model sources: cached hub ids load without the network; unreachable, uncached ones fail at once."""

from __future__ import annotations

import time

import pytest

from stvgr1_edge import hub
from stvgr1_edge.errors import MissingWeightsError


def test_uncached_model_with_hub_offline_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as err:
        hub.hub_source("someone/not-cached-model-xyz", "download it with  hf download someone/x")
    assert "HF_HUB_OFFLINE" in str(err.value) and "\n" not in str(err.value)


def test_unreachable_hub_fails_fast_instead_of_retrying(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens there
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError, match="cannot be reached"):
        hub.hub_source("someone/not-cached-model-xyz", "pass --model DIR")
    assert time.perf_counter() - start < 5.0


def test_cached_model_loads_locally_without_network(monkeypatch, tmp_path):
    # a fake cache entry in huggingface_hub's layout: models--org--name/snapshots/<rev>/config.json + refs/main
    repo = tmp_path / "models--org--cached-model"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hub.hub_source("org/cached-model", "unused") == ("org/cached-model", True)
