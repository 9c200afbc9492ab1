"""The nano recipe's text stage (train/recipes/nano/pretrain_text.py): episodes whose query names one inventory line,
the grounder's prompt layout without the video, labels on the restated query and ID only, the LM trained alone."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("trl")
import torch

from stvgr1_edge_train.recipes.nano.pretrain_text import (
    IGNORE,
    TextEpisodeEncoder,
    TextPretrainConfig,
    _id_positions,
    collate,
    line_end_weights,
    pretrain_text,
    text_episode,
)


@pytest.fixture(scope="module")
def tiny(saved_tiny):
    return saved_tiny


def _phrase_words(query: str) -> set[str]:
    from stvgr1_edge.synth import PALETTE, SHAPES, SIZES

    words = query.lower().rstrip(".").split()
    # every phrase ends with the shape ("the small red star", "the red star", "the small star"); what follows is the
    # event, whose colour ("... turns orange") is the one turned to
    end = next(i for i, w in enumerate(words) if w in SHAPES)
    return {w for w in words[: end + 1] if w in PALETTE or w in SHAPES or w in SIZES}


def test_the_query_names_exactly_the_target_line():
    rng = np.random.default_rng(0)
    positions, unclear = [], 0
    for _ in range(400):
        e = text_episode(rng)
        labels, gt = e["object_labels"], e["gt_id"]
        assert e["valid_ids"] == list(range(1, len(labels) + 1)) and 3 <= sum(bool(x) for x in labels) <= 5
        words = _phrase_words(e["query"])
        assert len(words) >= 2  # at least two of size, colour, shape
        matching = [i + 1 for i, label in enumerate(labels) if label and words <= set(label.split())]
        assert matching == [gt], (e, words)
        assert e["gt_start_s"] < e["gt_end_s"]
        positions.append(gt / len(labels))
        unclear += "" in labels
    # the target is anywhere in the list, and some lists hold an unmatched track
    assert np.std(positions) > 0.2 and 10 <= unclear <= 80


@pytest.mark.parametrize("mark_target", [True, False])
def test_labels_cover_the_reasoning_but_not_what_the_video_would_tell(tiny, mark_target):
    from stvgr1_edge.grounding import GroundingInputs
    from stvgr1_edge.prompt import grounding_prompt

    encoder = TextEpisodeEncoder(tiny.processor, mark_target)
    tok = tiny.processor.tokenizer
    episode = {
        "query": "The small red star spins around.",
        "valid_ids": [1, 2, 3],
        "object_labels": ["large red star", "small red star", ""],
        "gt_id": 2,
        "gt_start_s": 1.2,
        "gt_end_s": 3.4,
    }
    ids, labels = encoder(episode)
    assert len(ids) == len(labels)
    # the prompt is the grounder's chat text (STVG-R1 prompt, then the video) with the video block left out
    chat = GroundingInputs(tiny.processor).chat_text(grounding_prompt(episode["query"]))
    prompt_len = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    assert tok.decode(ids[:prompt_len]) == chat.replace("<|vision_start|><|video_pad|><|vision_end|>", "")
    answer = tok.decode(ids[prompt_len:])
    supervised = "".join(tok.decode([t]) if t != IGNORE else "_" for t in labels[prompt_len:])
    if mark_target:
        assert answer.startswith(
            '<think>"the small red star spins around". Object 1: large red star. '
            'Object 2: small red star, the target. Object 3: unclear. The target is object ID "2"'
        )
        # each line's end is learnt (the check against the query), not what the line says the object is
        assert supervised.startswith('<think>"the small red star spins around".')
        assert supervised.count("_.") == 2 and supervised.count("_, the target.") == 1
        assert 'target is object ID "2"' in supervised
    else:
        assert answer.startswith("<think>Object 1: large red star. Object 2: small red star. Object 3: unclear.")
        assert 'the small red star spins around" is object ID "2"' in supervised
    assert "Target ID: 2" in supervised and supervised.endswith("<|im_end|>")
    assert not any(w in supervised for w in ("Object", "large", "unclear", "1.20", "3.40", "1", "3", "4"))
    batch = collate([(ids, labels)], tok.pad_token_id)
    pos = _id_positions(batch["labels"], tok)
    assert tok.decode(batch["labels"][0, pos[0]]) == "2"


def test_line_end_weight_lands_on_the_line_checks(tiny):
    tok = tiny.processor.tokenizer
    episode = {
        "query": "The small red star spins around.",
        "valid_ids": [1, 2, 3],
        "object_labels": ["large red star", "small red star", ""],
        "gt_id": 2,
        "gt_start_s": 1.2,
        "gt_end_s": 3.4,
    }
    batch = collate([TextEpisodeEncoder(tiny.processor)(episode)], tok.pad_token_id)
    weights = line_end_weights(batch["labels"], 5.0)
    labelled = batch["labels"] != IGNORE
    assert torch.all(weights[~labelled] == 0) and set(weights[labelled].tolist()) == {1.0, 5.0}
    heavy = [tok.decode([t]) for t in batch["input_ids"][0][weights[0] == 5.0]]
    # the three lines' ends first (the restated query right after the prompt is not one), then the words after the
    # other unlabelled spans (the word after the last line, the times)
    assert heavy[:4] == [".", ",", ".", " target"], heavy
    assert torch.equal(line_end_weights(batch["labels"], 1.0), labelled.float())


def test_check_tags_mark_exactly_the_target_line_and_only_the_tags_are_labelled(tiny):
    from stvgr1_edge_train.sft import checked_label, query_attributes

    assert query_attributes("The pink circle turns green.") == (None, "pink", "circle")
    assert query_attributes("the small star spins around") == ("small", None, "star")
    assert checked_label("large pink circle", (None, "pink", "circle")) == "large+ pink+ circle+"
    assert checked_label("large pink square", (None, "pink", "circle")) == "large+ pink+ square-"
    assert checked_label("small green circle", ("large", None, "circle")) == "small- green- circle-"  # "-" sticks
    assert checked_label("", (None, "pink", "circle")) == ""
    rng = np.random.default_rng(1)
    for _ in range(300):  # on the episodes: the last tag is "+" on the target's line alone
        e = text_episode(rng)
        wanted = query_attributes(e["query"])
        ends = [checked_label(label, wanted)[-1:] for label in e["object_labels"]]
        assert [i + 1 for i, end in enumerate(ends) if end == "+"] == [e["gt_id"]], e

    tok = tiny.processor.tokenizer
    episode = {
        "query": "The small red star spins around.",
        "valid_ids": [1, 2, 3],
        "object_labels": ["large red star", "small red star", ""],
        "gt_id": 2,
        "gt_start_s": 1.2,
        "gt_end_s": 3.4,
    }
    ids, labels = TextEpisodeEncoder(tiny.processor, check_attributes=True)(episode)
    prompt_len = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    assert tok.decode(ids[prompt_len:]).startswith(
        '<think>"the small red star spins around". Object 1: large- red- star-. Object 2: small+ red+ star+, the '
        'target. Object 3: unclear. The target is object ID "2"'
    )
    supervised = "".join(tok.decode([t]) if t != IGNORE else "_" for t in labels[prompt_len:])
    # the tags and each line's end are learnt, not the words (the video's) nor the IDs of the lines
    assert '"._-_-_-._+_+_+, the target._._ target is object ID "2"' in re.sub("_+", "_", supervised)
    after_query = supervised.split('spins around".')[1]
    assert not any(w in after_query for w in ("Object", "large", "small", "red", "unclear"))


def test_text_stage_trains_the_language_model_only(tiny, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = TextPretrainConfig(steps=3, batch=2, warmup_steps=1, val_episodes=4, eval_every=2)
    report = pretrain_text(tiny.folder, tmp_path / "out", config)
    assert [h["step"] for h in report["history"]] == [2, 3]
    assert all(0.0 <= report["final"][k] <= 1.0 for k in ("id_acc", "token_acc", "reasoning_acc", "line_end_acc"))
    before = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny.folder).state_dict()
    after = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("model.visual.") for k in changed)
    assert any(k.startswith("model.language_model.") for k in changed)


def test_tower_swap_takes_the_other_models_vision_and_keeps_the_language_model(tiny, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.tiny import save_tiny_model

    other = save_tiny_model(tmp_path / "other", seed=1)
    pretrain_text(tiny.folder, tmp_path / "out", TextPretrainConfig(steps=0, val_episodes=2), tower_dir=other)
    lm = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny.folder).state_dict()
    tower = Qwen2_5_VLForConditionalGeneration.from_pretrained(other).state_dict()
    out = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    visual = [k for k in out if k.startswith("model.visual.")]
    assert visual and all(torch.equal(out[k], tower[k]) for k in visual)
    assert any(not torch.equal(lm[k], tower[k]) for k in visual)  # the two models differ: the swap is visible
    assert all(torch.equal(out[k], lm[k]) for k in out if not k.startswith("model.visual."))
