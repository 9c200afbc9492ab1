"""The nano recipe's read-out probe (train/recipes/nano/probe_readout.py): forcing one head's look changes that head
only, at the asked positions only, and leaves the model as it was; the shifted look is the same cells later."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")
import torch

from stvgr1_edge.synth import SynthConfig
from stvgr1_edge_train.recipes.nano.probe_readout import (
    force_head,
    look_summary,
    probe_readout,
    sharpen_head,
    shifted_targets,
)

SMALL = SynthConfig(width=224, height=168, seconds=6.0)


@pytest.fixture(scope="module")
def clip_batch(saved_tiny, tmp_path_factory):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.recipes.nano.stream_sft import stream_clip
    from stvgr1_edge_train.sft import SFTCollator

    processor, source = load_processor(str(saved_tiny.folder))
    model = use_trained_rope_index(Qwen2_5_VLForConditionalGeneration.from_pretrained(source)).eval()
    collator = SFTCollator(processor, mark_target=True, check_attributes=True, attend_event_edges=True)
    clip = stream_clip(7, SMALL, processor, tmp_path_factory.mktemp("readout"))
    batch = collator.collate([clip.sample.to_row(Path())], [clip.video])
    queries = batch.pop("attention_queries")
    batch.pop("labels"), batch.pop("loss_weights", None)
    return model, batch, queries


def test_forcing_no_head_is_the_model_and_the_attention_is_restored(clip_batch):
    model, batch, _ = clip_batch
    config = model.model.language_model.config
    before = config._attn_implementation
    with torch.no_grad():
        own = model(**batch).logits
        with force_head(model, 0, 0, None):
            assert config._attn_implementation != before
            forced = model(**batch).logits
        again = model(**batch).logits
    assert torch.allclose(own, forced, atol=1e-4)
    assert config._attn_implementation == before and torch.equal(own, again)


def test_forced_head_looks_uniformly_at_the_targets_and_no_other_weight_moves(clip_batch):
    model, batch, queries = clip_batch
    layer, head = 0, 2  # the tiny model has two LM layers: force the first, watch the second
    with torch.no_grad():
        with force_head(model, layer, head, None):
            own_out = model(**batch, output_attentions=True)
        with force_head(model, layer, head, queries):
            forced_out = model(**batch, output_attentions=True)
    own, forced = own_out.attentions, forced_out.attentions
    asked = torch.cat([q for _, q, _ in queries]).tolist()
    for _, query_positions, targets in queries:
        for q in query_positions.tolist():
            expected = torch.zeros(own[layer].shape[-1])
            expected[targets] = 1.0 / len(targets)
            assert torch.allclose(forced[layer][0, head, q], expected)
    # the forced layer's other rows and heads are the model's own
    other_rows = [i for i in range(own[layer].shape[2]) if i not in asked]
    assert torch.allclose(forced[layer][0, head, other_rows], own[layer][0, head, other_rows], atol=1e-5)
    keep = [h for h in range(own[layer].shape[1]) if h != head]
    assert torch.allclose(forced[layer][0, keep], own[layer][0, keep], atol=1e-5)
    # ... and the look changes the answer where it is asked, nothing before it
    change = (forced_out.logits - own_out.logits)[0].abs().amax(dim=-1)
    assert change[asked].min() > 1e-4 and change[: min(asked)].max() < 1e-5


def test_forced_head_can_keep_its_own_weights_on_the_targets(clip_batch):
    model, batch, queries = clip_batch
    layer, head = 1, 1
    with torch.no_grad():
        with force_head(model, layer, head, None):
            own = model(**batch, output_attentions=True).attentions[layer][0, head]
        with force_head(model, layer, head, queries, keep_own=True):
            kept = model(**batch, output_attentions=True).attentions[layer][0, head]
    for _, query_positions, targets in queries:
        for q in query_positions.tolist():
            expected = torch.zeros_like(own[q])
            expected[targets] = own[q, targets] / own[q, targets].sum()
            assert torch.allclose(kept[q], expected, atol=1e-6)
            assert not torch.allclose(kept[q], own[q], atol=1e-3)  # the head looked elsewhere too


def test_shifted_targets_are_the_same_cells_half_the_clip_later():
    video_positions = torch.arange(100, 124)  # 4 tubes of 6 tokens
    queries = [(0, torch.tensor([3, 4]), torch.tensor([101, 102])), (0, torch.tensor([7]), torch.tensor([121]))]
    moved = shifted_targets(queries, video_positions, tubes=4, tokens_per_tube=6)
    assert [m[2].tolist() for m in moved] == [[113, 114], [109]]  # 2 tubes (12 tokens) later, wrapping round
    assert all(torch.equal(m[1], q[1]) for m, q in zip(moved, queries))


def test_look_summary_splits_the_mass_by_tube():
    video_positions = torch.arange(100, 124)  # 4 tubes of 6 tokens
    weights = torch.zeros(130)
    weights[5], weights[101], weights[115] = 0.25, 0.5, 0.25  # a text token, tube 0, tube 2
    look = look_summary(weights, torch.tensor([101, 102]), video_positions, tokens_per_tube=6)
    assert look["mass_on_targets"] == pytest.approx(0.5) and look["mass_on_video"] == pytest.approx(0.75)
    assert look["true_tube"] == 0 and look["peak_tube"] == 0
    assert look["mean_tube"] == pytest.approx(0.5 / 0.75)  # (0.5 * 0 + 0.25 * 2) / 0.75
    assert "mass_on_object" not in look
    # the object in tubes 0-2 (two cells each), its GT range tubes 0-1
    object_cells, range_cells = torch.tensor([101, 102, 107, 108, 113, 115]), torch.tensor([101, 102, 107, 108])
    look = look_summary(weights, torch.tensor([101, 102]), video_positions, 6, object_cells, range_cells)
    assert look["mass_on_object"] == pytest.approx(0.75)  # 101 and 115
    assert look["object_mass_in_range"] == pytest.approx(0.5 / 0.75) and look["object_cells_in_range"] == 4 / 6
    weights[101] = 0.0
    assert look_summary(weights, torch.tensor([101, 102]), video_positions, 6)["peak_tube"] == 2


def test_probe_reports_each_look(saved_tiny):
    report = probe_readout(saved_tiny.folder, clips=3, layer=1)  # the tiny model's last layer
    assert report["clips"] == 3 and report["mae_constant"] >= 0
    for name in ("own", "true", "shifted", "object"):
        r = report[name]["r_start_digit"]
        assert np.isnan(r) or -1.0 <= r <= 1.0
        assert 0.0 <= report[name]["mae_start_digit"] <= 9.0
        look = report[name]["look"]
        assert 0.0 <= look["mass_on_targets"] <= look["mass_on_video"] <= 1.0 + 1e-6
        assert look["mass_on_targets"] <= look["mass_on_object"] + 1e-6 and 0 < look["object_cells_in_range"] <= 1
    # the forced looks are the ones the report sees: all on the true targets, or all on cells half a clip later
    true, shifted = report["true"]["look"], report["shifted"]["look"]
    assert true["mass_on_targets"] == pytest.approx(1.0) and true["peak_on_true_tube"] == 1.0
    assert shifted["mass_on_targets"] == pytest.approx(0.0) and shifted["peak_on_true_tube"] == 0.0
    # the object look is the own look with its weight off the object dropped: all on the object, split the same way
    own, on_object = report["own"]["look"], report["object"]["look"]
    assert on_object["mass_on_object"] == pytest.approx(1.0) and own["mass_on_object"] < 0.99
    assert on_object["object_mass_in_range"] == pytest.approx(own["object_mass_in_range"], abs=1e-4)
    by_event = report["own_by_event"]
    assert sum(e["clips"] for e in by_event.values()) == 3
    weighted = sum(e["clips"] * e["mass_on_object"] for e in by_event.values()) / 3
    assert weighted == pytest.approx(own["mass_on_object"])


def test_probe_refuses_a_head_the_model_lacks(saved_tiny):
    from stvgr1_edge.errors import BadInputError

    with pytest.raises(BadInputError, match="attention_layer must be 0..1"):
        probe_readout(saved_tiny.folder, clips=1, layer=2)


def test_sharpened_head_looks_more_narrowly_and_the_others_do_not_move(clip_batch):
    import copy

    model, batch, _ = clip_batch
    sharp = copy.deepcopy(model)
    layer, head = 1, 2
    sharpen_head(sharp, layer, head, 4.0)
    with torch.no_grad():
        with force_head(model, layer, head, None):  # eager attention, which returns its weights
            own = model(**batch, output_attentions=True).attentions[layer][0]
        with force_head(sharp, layer, head, None):
            sharpened = sharp(**batch, output_attentions=True).attentions[layer][0]

    def entropy(weights):
        return -(weights * weights.clamp_min(1e-12).log()).sum(-1)

    rows = slice(8, None)  # rows that see more than a few keys
    assert (entropy(sharpened[head, rows]) < entropy(own[head, rows]) - 1e-4).float().mean() > 0.9
    assert (sharpened[head, rows].amax(-1) >= own[head, rows].amax(-1) - 1e-6).all()
    keep = [h for h in range(own.shape[0]) if h != head]
    assert torch.allclose(sharpened[keep], own[keep], atol=1e-5)


def test_probe_refuses_a_query_scale_that_is_not_positive(saved_tiny):
    from stvgr1_edge.errors import BadInputError

    with pytest.raises(BadInputError, match="query scale must be > 0"):
        probe_readout(saved_tiny.folder, clips=1, layer=1, query_scale=0.0)
