"""The packaged nano model: shipped files, loading through the real ``from_pretrained`` path (``--model nano``),
and a parseable STVG-R1 answer on a held-out synthetic clip; the offline error for the default model points at it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stvgr1_edge.errors import MissingWeightsError
from stvgr1_edge.grounding import Grounder, GrounderConfig
from stvgr1_edge.model_source import DEFAULT_MODEL, packaged_model_dir
from stvgr1_edge.pipeline import GroundingPipeline
from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset
from stvgr1_edge.tracking.factory import make_tracker

NANO = packaged_model_dir()
ANSWER = re.compile(r"<answer>Target ID: \d+, Time range: \d+\.\d\d to \d+\.\d\d</answer>")


@pytest.fixture(scope="module")
def nano() -> Grounder:
    return Grounder.from_pretrained(GrounderConfig(model="nano", device="cpu", max_new_tokens=256))


def test_packaged_files_and_size():
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "chat_template.jinja",
        "MODEL_CARD.md",
    ):
        assert (NANO / name).is_file(), name
    assert (NANO / "model.safetensors").stat().st_size <= 25 * 2**20
    config = json.loads((NANO / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert "models/nano/*" in pyproject


def test_nano_resolves_to_the_package(nano):
    assert nano.model.config.model_type == "qwen2_5_vl"
    assert Path(nano.config.model) == Path("nano")
    # Qwen's special tokens with their roles, and the real chat layout (text first, then the video)
    tokenizer = nano.processor.tokenizer
    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|video_pad|>", "<|vision_end|>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    assert nano.model.config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    chat = nano.chat_text("PROMPT")
    assert chat.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nPROMPT")
    assert chat.endswith("<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n")


def test_nano_answers_in_the_stvg_r1_format(nano, tmp_path):
    ann = write_synthetic_dataset(tmp_path, num=1, seed=5001, config=SynthConfig(width=224, height=168, seconds=6))
    entry = next(iter(json.loads(ann.read_text()).values()))
    result = GroundingPipeline(make_tracker("classical"), nano).run(tmp_path / entry["video_path"], [entry["English"]])
    q = result.queries[0]
    assert ANSWER.search(q.answer.raw), q.answer.raw
    assert q.answer.parse_ok, q.answer.reason
    assert q.answer.ids and q.answer.ids[0] in result.tracks.ids
    assert 0.0 <= q.answer.start_s <= q.answer.end_s <= result.info.duration_s
    assert len(q.tube) > 0


def test_offline_default_model_points_at_nano(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: the hub model is not there
    with pytest.raises(MissingWeightsError) as info:
        Grounder.from_pretrained(GrounderConfig(model=DEFAULT_MODEL, device="cpu"))
    message = str(info.value)
    assert "\n" not in message
    assert "--model nano" in message and DEFAULT_MODEL in message
