"""Minimum-Bayes-risk answers: the agreement between answers, the choice among them, and the batched sampler that
draws them from one prompt pass (its cache repeated per sample)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from stvgr1_edge.answer import GroundingAnswer, parse_answer
from stvgr1_edge.answer_mbr import agreement, choose_answer, sample_completions
from stvgr1_edge.backends.engine import eos_ids_of
from stvgr1_edge.clip import PromptedClip
from stvgr1_edge.grounding import Grounder, GrounderConfig
from stvgr1_edge.prompt import grounding_prompt, time_only_prompt


def answer(ids: tuple[int, ...], start: float | None, end: float | None) -> GroundingAnswer:
    return GroundingAnswer(ids, start, end, start is not None, "", (), "")


def test_agreement_is_the_tiou_of_answers_naming_the_same_ids():
    assert agreement(answer((2,), 1.0, 3.0), answer((2,), 2.0, 4.0)) == pytest.approx(1 / 3)
    assert agreement(answer((2,), 1.0, 3.0), answer((5,), 1.0, 3.0)) == 0.0  # same range, another object
    assert agreement(answer((), 1.0, 3.0), answer((), 1.0, 3.0)) == 1.0  # time-only answers
    assert agreement(answer((1, 2), 0.0, 2.0), answer((2, 1), 0.0, 2.0)) == 1.0  # an ID list in any order
    assert agreement(answer((2,), None, None), answer((2,), 1.0, 3.0)) == 0.0


def test_the_answer_the_samples_agree_with_wins_over_the_decoded_one():
    samples = [answer((2,), 2.0, 5.0), answer((2,), 2.5, 5.5), answer((2,), 1.5, 4.5), answer((7,), 1.0, 3.0)]
    decoded = answer((7,), 1.0, 3.0)  # what greedy wrote: one sample agrees with it
    index, score = choose_answer([*samples, decoded], samples)
    assert index == 0
    expected = np.mean([agreement(samples[0], s) for s in samples])
    assert score == pytest.approx(expected)
    assert score > np.mean([agreement(decoded, s) for s in samples])
    # ties go to the earlier candidate
    assert choose_answer([answer((1,), 0.0, 1.0), answer((1,), 0.0, 1.0)], [answer((1,), 0.0, 1.0)]) == (0, 1.0)
    with pytest.raises(ValueError):
        choose_answer([], samples)


@pytest.fixture(scope="module")
def clip(random_prompted_clip) -> PromptedClip:
    return random_prompted_clip


@pytest.fixture(scope="module")
def tiny_model():
    """A random tiny model whose attention is sharp: its queries and keys scaled up, so that what a token attends to,
    and its logits, depend on the positions (a random model's near-uniform attention hardly does)."""
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    model, processor = build_tiny_qwen2_5_vl(seed=0)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    return model, processor


def _prompt_inputs(grounder: Grounder, clip: PromptedClip, prompt: str):
    encoded = grounder.encode_video(clip)
    return grounder.query_inputs(encoded.inputs, prompt), encoded.features


@pytest.mark.parametrize("prompt", [grounding_prompt("the man walks to the door"), time_only_prompt("a ball rolls")])
def test_cold_samples_are_the_decoded_answer_token_for_token(tiny_model, clip, prompt):
    """At a near-zero temperature every sample is the argmax path. The samples share one prompt pass and a repeated
    cache, and decode at positions the sampler computes itself: any slip in the cache or the M-RoPE positions would
    change a random model's tokens against ``generate``'s."""
    model, processor = tiny_model
    grounder = Grounder(model, processor, GrounderConfig(model="tiny", device="cpu", max_new_tokens=100))
    decoded = grounder.ground(clip, prompt)
    inputs, features = _prompt_inputs(grounder, clip, prompt)
    constraints = [grounder.answer_constraint(prompt) for _ in range(3)]
    rows = sample_completions(
        model,
        inputs,
        features,
        3,
        1e-6,
        eos_ids_of(model.generation_config),
        torch.Generator().manual_seed(0),
        100,
        constraints=[c.mask for c in constraints],  # type: ignore[union-attr]
    )
    texts = [grounder.decode_text(r) for r in rows]
    assert texts == [decoded.text] * 3
    assert parse_answer(decoded.text, time_only="Target ID" not in prompt).parse_ok


def test_samples_that_end_early_leave_the_others_decoding_as_before(tiny_model, clip):
    """Samples of different histories leaving the batch at different steps: each must be what it is when sampled
    alone, and the free one the decoded answer, token for token (the cache keeps the right rows for the others)."""
    model, processor = tiny_model
    prompt = grounding_prompt("the man walks to the door")
    grounder = Grounder(model, processor, GrounderConfig(model="tiny", device="cpu", max_new_tokens=100))
    decoded = grounder.ground(clip, prompt)
    inputs, features = _prompt_inputs(grounder, clip, prompt)
    eos = eos_ids_of(model.generation_config)

    def sampled_as(end_after: int | None, turn_from: int | None = None):
        """The answer template, ending after ``end_after`` tokens, and from ``turn_from`` tokens on never the argmax
        token where the template allows another (a history of its own)."""
        template = grounder.answer_constraint(prompt)
        assert template is not None

        def constrain(tokens, logits):
            logits = template.mask(tokens, logits)
            if turn_from is not None and len(tokens) >= turn_from and (logits > -1e30).sum() > 1:
                logits = logits.index_fill(1, logits.argmax(dim=-1), -float("inf"))
            if end_after is not None and len(tokens) == end_after:
                logits = torch.full_like(logits, -float("inf"))
                logits[:, eos[0]] = 0.0
            return logits

        return constrain

    kinds = [(30, None), (None, None), (60, 10)]

    def sample(specs):
        return sample_completions(
            model, inputs, features, len(specs), 1e-6, eos, torch.Generator().manual_seed(0), 100,
            constraints=[sampled_as(*spec) for spec in specs],
        )  # fmt: skip

    rows = sample(kinds)
    assert rows == [sample([kind])[0] for kind in kinds]
    text = grounder.decode_text(rows[1])
    assert text == decoded.text and len(rows[1]) > 61
    assert rows[0] == rows[1][:30] + [eos[0]]
    assert len(rows[2]) == 61 and rows[2][:10] == rows[1][:10] and rows[2] != rows[1][:60] + [eos[0]]


def test_the_grounder_gives_the_answer_its_samples_agree_with(tiny_model, clip):
    model, processor = tiny_model
    prompt = grounding_prompt("a dog runs")
    drawn = dataclasses.replace(clip, drawn_ids=(2, 17))
    config = GrounderConfig(model="tiny", device="cpu", max_new_tokens=100, answer_samples=6, sample_temperature=1.5)
    grounder = Grounder(model, processor, config)
    out = grounder.ground(drawn, prompt)
    again = grounder.ground(drawn, prompt)
    decoded = Grounder(model, processor, dataclasses.replace(config, answer_samples=0)).ground(drawn, prompt)
    assert out.samples is not None and len(out.samples.texts) == 6
    assert out.text == again.text and out.samples.texts == again.samples.texts  # seeded: the same every run
    assert len(set(out.samples.texts)) > 1  # sampled, not six copies of the argmax
    answers = [parse_answer(t, clip.duration_s) for t in out.samples.texts]  # clamped to the clip's 2 s, as scored
    assert all(a.parse_ok and set(a.ids) <= {2, 17} for a in answers)  # each inside the template, drawn IDs only
    index, score = choose_answer([*answers, parse_answer(decoded.text, clip.duration_s)], answers)
    assert out.text == (decoded.text if index == len(answers) else out.samples.texts[index])
    assert out.samples.chosen == (-1 if index == len(answers) else index)
    assert out.samples.agreement == pytest.approx(score)
    assert decoded.samples is None


@pytest.mark.parametrize("engine", ["hf", "static"])
def test_samples_continue_the_decoded_answers_prompt_pass(tiny_model, clip, engine, monkeypatch):
    """The samples continue the prompt pass that decoding the answer made (generate's, its cache cut back to the
    prompt, or the static engine's): no second pass over the prompt, and the very samples a fresh pass gives."""
    import stvgr1_edge.backends.engine as engine_module

    model, processor = tiny_model
    prompt = grounding_prompt("a dog runs")
    config = GrounderConfig(
        model="tiny", device="cpu", engine=engine, compile=False, max_new_tokens=100, answer_samples=4,
        sample_temperature=1.5,
    )  # fmt: skip
    grounder = Grounder(model, processor, config)
    encoded = grounder.encode_video(clip)
    passes = []
    run_prompt = engine_module.run_prompt
    monkeypatch.setattr(engine_module, "run_prompt", lambda *a: passes.append(1) or run_prompt(*a))
    out = grounder.ground(clip, prompt, encoded)
    assert len(passes) == (1 if engine == "static" else 0)  # the engine's own prefill; generate's is not counted
    inputs = grounder.query_inputs(encoded.inputs, prompt)
    constraints = [grounder.answer_constraint(prompt) for _ in range(4)]
    rows = sample_completions(
        model, inputs, encoded.features, 4, 1.5, eos_ids_of(model.generation_config), torch.Generator().manual_seed(0),
        100, constraints=[c.mask for c in constraints],  # type: ignore[union-attr]
    )  # fmt: skip
    assert len(passes) == (2 if engine == "static" else 1)  # without a pass given, the sampler makes its own
    assert out.samples is not None and out.samples.texts == tuple(grounder.decode_text(r) for r in rows)
    assert len(set(out.samples.texts)) > 1
    # the kept pass's scores are the prompt's last position's (the template forces the first token, so the samples
    # above do not show them)
    decode = grounder._generate_static if engine == "static" else grounder._generate_hf
    kept = decode(inputs, encoded.features, None, keep_prompt=True)[3]
    assert kept is not None
    torch.testing.assert_close(kept.logits, run_prompt(model, inputs, {"video": encoded.features}).logits)


def test_run_takes_answer_samples_and_records_them(saved_tiny, tmp_path):
    """The CLI path: `run --answer-samples N` reaches the grounder, its answer parses, and the result says how it was
    decoded and how far the samples agree with it (nothing of the kind without samples)."""
    from stvgr1_edge.cli import main
    from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", num=1, seed=3, config=SynthConfig(seconds=4.0, width=160, height=120))
    video = tmp_path / "data" / "videos" / "synth_s3_0000.mp4"
    out = tmp_path / "r.json"
    args = ["run", str(video), "a red circle blinks", "--model", str(saved_tiny.folder), "--device", "cpu"]
    assert main([*args, "--answer-samples", "3", "--max-new-tokens", "100", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["grounder"]["answer_samples"] == 3
    query = result["queries"][0]
    assert query["parse_ok"] is True
    assert 0.0 <= query["answer_agreement"] <= 1.0
    plain = tmp_path / "plain.json"
    assert main([*args, "--max-new-tokens", "100", "-o", str(plain)]) == 0
    assert "answer_agreement" not in json.loads(plain.read_text())["queries"][0]
