"""A model that only repeats itself. Decoding freely (--free-answer) it stops early, and `run` says on stderr that no
answer was found (exit code 3 under --strict, the result written with parse_ok false either way); with the answer
template (the default) its thinking is closed at the same window and the answer parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stvgr1_edge.answer import parse_answer
from stvgr1_edge.answer_template import RepetitionStop, is_repetition
from stvgr1_edge.cli import NO_ANSWER_EXIT, main


@pytest.mark.parametrize(
    "tokens, window, expected",
    [
        ([5] * 10, 10, True),
        ([1, 2] * 5, 10, True),
        ([9, 1, 2, 3] + [1, 2, 3] * 2, 6, True),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9] * 2, 18, False),  # period 9 > 8: not called degenerate
        ([5] * 9, 10, False),  # shorter than the window
        ([5] * 9 + [6], 10, False),
        ([5] * 10, 0, False),  # off
    ],
)
def test_is_repetition(tokens, window, expected):
    assert is_repetition(tokens, window) is expected


def test_repetition_stop_looks_only_at_generated_tokens():
    prompt = [7] * 20  # a repetitive prompt must not stop anything
    stop = RepetitionStop(prompt_len=20, window=4)
    rows = torch.tensor([prompt + [1, 2, 3, 4], prompt + [3, 3, 3, 3]])
    assert stop(rows, None).tolist() == [False, True]


@pytest.fixture(scope="module")
def parrot(tmp_path_factory) -> Path:
    """A tiny Qwen2.5-VL whose head always picks token 300 (a model stuck in a loop)."""
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl, save_tiny_model

    model, processor = build_tiny_qwen2_5_vl(seed=0)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[300] = 1.0
        model.model.language_model.norm.weight.fill_(1.0)
    return save_tiny_model(tmp_path_factory.mktemp("parrot"), model=model, processor=processor)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset

    out = tmp_path_factory.mktemp("clip")
    write_synthetic_dataset(out, num=1, seed=3, config=SynthConfig(seconds=4.0, width=160, height=120))
    return out / json.loads((out / "annotations.json").read_text())["synth_s3_0000"]["video_path"]


def test_a_looping_model_stops_at_the_window_and_strict_run_exits_3(parrot, clip, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["run", str(clip), "a red circle blinks", "--model", str(parrot), "--device", "cpu", "-o", str(out)]
    args.append("--free-answer")
    rc = main([*args, "--max-new-tokens", "300", "--strict"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == NO_ANSWER_EXIT == 3
    assert len(err) == 2 and err[0].startswith("time (s): ") and "real-time factor" in err[0], err
    assert err[1].startswith("warning: no answer could be parsed for query 1"), err
    query = json.loads(out.read_text())["queries"][0]
    assert query["parse_ok"] is False
    assert query["num_generated_tokens"] == 64  # GrounderConfig.stop_on_repetition, not the 300 allowed
    assert main([*args, "--max-new-tokens", "300"]) == 0  # without --strict: a warning, exit 0


def test_with_the_answer_template_a_looping_model_is_closed_at_the_window_and_answers(parrot, clip, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["run", str(clip), "a red circle blinks", "--model", str(parrot), "--device", "cpu", "-o", str(out)]
    assert main([*args, "--max-new-tokens", "300", "--strict"]) == 0
    query = json.loads(out.read_text())["queries"][0]
    text = query["answer_text"]
    assert query["parse_ok"] is True and parse_answer(text).parse_ok, text
    thinking, answer = text.split("</think>")
    assert thinking.startswith("<think>") and answer.lstrip().startswith("<answer>Target ID: ")
    # the thinking is the model's own loop up to the repetition window (64 tokens incl. "<think>"'s), then the answer
    assert 64 < query["num_generated_tokens"] < 64 + 80, query["num_generated_tokens"]
