"""GRPO on video with a tiny random Qwen2.5-VL (train/grpo.py): steps run, the video reaches every forward pass,
the vision tower learns, checkpoints resume exactly; plus the SFT warm-start and the CLI."""

import re
import types

import pytest

pytest.importorskip("trl")
import torch
from _train_helpers import write_mixed_synthetic
from trl import GRPOTrainer

from stvgr1_edge_train.cache import load_cached_dataset
from stvgr1_edge_train.grpo import MissingVideoError, build_grpo_trainer, load_run_config, run_grpo
from stvgr1_edge_train.prepare import prepare_cache

TINY_GRPO = [
    "grpo.num_generations=2",
    "grpo.per_device_train_batch_size=4",
    "grpo.max_completion_length=16",
    "grpo.seed=0",
    "grpo.gradient_checkpointing=false",
    "grpo.save_steps=1000",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from stvgr1_edge.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("grpo")
    annotations = write_mixed_synthetic(root / "data", num_small=3, num_wide=2)
    report = prepare_cache(annotations, root / "cache")
    assert report["counts"] == {"cached": 5}
    model_dir = save_tiny_model(root / "tiny")
    return types.SimpleNamespace(root=root, cache=str(root / "cache"), model=str(model_dir))


def _run(setup, output, overrides=(), **kw):
    return load_run_config(
        None, TINY_GRPO + list(overrides), data=setup.cache, model=setup.model, output_dir=str(output), **kw
    )


def _visual_params(model):
    return [p for p in model.model.visual.parameters() if p.requires_grad]


def test_run_config_reads_exponent_floats_from_yaml_and_overrides(tmp_path):
    # PyYAML alone reads "1e-6" (YAML 1.1: no dot) as a string, which reached AdamW as the learning rate
    path = tmp_path / "run.yaml"
    path.write_text("grpo:\n  learning_rate: 1e-6\n  max_steps: 3\n  run_name: 5e\n")
    run = load_run_config(path, ["grpo.beta=4E-2", "rewards.id_weight=2"])
    assert run.grpo == {"learning_rate": 1e-6, "max_steps": 3, "run_name": "5e", "beta": 0.04}
    assert run.rewards.id_weight == 2


def test_two_grpo_steps_with_kl_and_old_policy_see_the_video_every_time(setup, tmp_path):
    run = _run(setup, tmp_path / "out", ["grpo.max_steps=2", "grpo.beta=0.04", "grpo.num_iterations=2"])
    trainer = build_grpo_trainer(run)
    calls = {"policy": 0, "reference": 0}
    trainer.model.model.visual.register_forward_hook(lambda *a: calls.__setitem__("policy", calls["policy"] + 1))
    trainer.ref_model.model.visual.register_forward_hook(
        lambda *a: calls.__setitem__("reference", calls["reference"] + 1)
    )
    trainer.train()
    assert trainer.state.global_step == 2
    # one generation (num_iterations=2 reuses it): generate + old-policy log-probs + 2 loss forwards; 1 reference
    assert calls == {"policy": 4, "reference": 1}
    assert [h["step"] for h in trainer.state.log_history if "kl" in h] == [1, 2]
    rewards = [h for h in trainer.state.log_history if "reward" in h]  # logged once per generation
    assert len(rewards) == 1 and {
        "rewards/temporal_iou_reward/mean",
        "rewards/id_match_reward/mean",
        "rewards/format_reward/mean",
    } <= set(rewards[0])
    assert len(trainer.seen_sample_ids) == 4 and len(set(trainer.seen_sample_ids)) == 2


def _mixed_grid_rows(trainer):
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); these tests call the loss directly
    rows = list(trainer.train_dataset)
    small = next(r for r in rows if "s11" in r["sample_id"])
    wide = next(r for r in rows if "s12" in r["sample_id"])
    return [small, small, wide, wide]


def test_vision_tower_gets_a_gradient_and_stock_trl_gives_none(setup, tmp_path):
    trainer = build_grpo_trainer(_run(setup, tmp_path / "out", ["grpo.max_steps=1", "grpo.beta=0.0"]))
    model = trainer.model
    model.train()
    batch = trainer._generate_and_score_completions(_mixed_grid_rows(trainer))
    grids = torch.cat([v.video_grid_thw for v in batch["videos"]])
    assert len({tuple(g.tolist()) for g in grids}) == 2  # two videos of different grids in one batch
    batch["advantages"] = torch.tensor([1.0, -1.0, 0.5, -0.5])  # random-model rewards are all 0: give it a signal

    trainer.compute_loss(model, batch).backward()
    vision_grad = sum(float(p.grad.abs().sum()) for p in _visual_params(model) if p.grad is not None)
    assert vision_grad > 0

    model.zero_grad(set_to_none=True)
    stock = types.MethodType(GRPOTrainer._get_per_token_logps_and_entropies, trainer)
    trainer._get_per_token_logps_and_entropies = stock  # TRL's own loss forward: no video kwargs
    GRPOTrainer._compute_loss(trainer, model, batch).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in _visual_params(model))
    assert float(model.lm_head.weight.grad.abs().sum()) > 0  # the loss itself is live


def test_forward_without_video_fails_loudly(setup, tmp_path):
    trainer = build_grpo_trainer(_run(setup, tmp_path / "out", ["grpo.max_steps=1", "grpo.beta=0.0"]))
    batch = trainer._generate_and_score_completions(_mixed_grid_rows(trainer))
    del batch["videos"]
    with pytest.raises(MissingVideoError, match="video"):
        trainer._compute_loss(trainer.model, batch)
    ids = torch.ones((1, 4), dtype=torch.long)
    with pytest.raises(MissingVideoError, match="pixel_values_videos"):
        trainer._get_per_token_logps_and_entropies(trainer.model, ids, torch.ones_like(ids), 2)


def _rollout_answers(trainer, rows):
    from stvgr1_edge.answer import parse_answer

    batch = trainer._generate_and_score_completions(rows)
    texts = trainer.processing_class.tokenizer.batch_decode(
        [ids[mask.bool()] for ids, mask in zip(batch["completion_ids"], batch["completion_mask"])],
        skip_special_tokens=True,
    )
    return texts, [parse_answer(t, valid_ids=row["valid_ids"]) for t, row in zip(texts, rows)]


def test_answer_template_rollouts_all_parse_and_name_a_drawn_id(setup, tmp_path):
    from stvgr1_edge_train.rewards import format_reward

    settings = ["grpo.max_steps=1", "grpo.beta=0.0", "grpo.max_completion_length=96"]
    rows = _mixed_grid_rows(build_grpo_trainer(_run(setup, tmp_path / "free", settings)))
    free_texts, free = _rollout_answers(build_grpo_trainer(_run(setup, tmp_path / "free", settings)), rows)
    assert not all(a.parse_ok for a in free)  # a random model sampled freely does not answer in the template

    trainer = build_grpo_trainer(_run(setup, tmp_path / "template", [*settings, "answer_template=true"]))
    texts, answers = _rollout_answers(trainer, rows)
    assert all(a.parse_ok for a in answers), texts
    assert all(a.ids == (a.ids[0],) and a.ids[0] in row["valid_ids"] for a, row in zip(answers, rows)), texts
    assert format_reward(texts) == [1.0] * len(rows)
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    assert "generate" not in vars(model)  # the rollouts' processor does not outlive them


def test_answer_template_log_probs_are_those_of_the_choices_the_template_left(setup, tmp_path):
    """Every scoring forward gives a token the template chose among a few its log-prob renormalised over those
    (a forced token: 0), checked against a plain forward's full logits; other tokens keep the policy's own."""
    from stvgr1_edge_train.video_inputs import collate_videos, video_token_type_ids

    settings = ["grpo.max_steps=1", "grpo.beta=0.04", "grpo.max_completion_length=96", "answer_template=true"]
    trainer = build_grpo_trainer(_run(setup, tmp_path / "out", settings))
    batch = trainer._generate_and_score_completions(_mixed_grid_rows(trainer))
    restricted = batch["template_restricted"]
    assert any(len(tokens) == 1 for row in restricted for tokens in row.values())  # forced tokens
    assert any(len(tokens) > 1 for row in restricted for tokens in row.values())  # choices (ID, digits)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    keep = batch["completion_ids"].size(1)
    trainer._active_videos, trainer._active_restricted = batch["videos"], restricted
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep)
        video = collate_videos(batch["videos"])
        full = trainer.model(
            input_ids=ids, attention_mask=mask, mm_token_type_ids=video_token_type_ids(ids, trainer.video_token_id),
            **video,
        ).logits[:, -keep - 1 : -1].float().log_softmax(-1)  # fmt: skip
    expected = full.gather(2, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
    for r, row in enumerate(restricted):
        for step, tokens in row.items():
            expected[r, step] -= full[r, step, list(tokens)].logsumexp(0)
    live = batch["completion_mask"].bool()
    torch.testing.assert_close(logps[live], expected[live], atol=5e-3, rtol=0)  # TRL's fused head: ~2e-3 off
    forced = [(r, step) for r, row in enumerate(restricted) for step, t in row.items() if len(t) == 1 and live[r, step]]
    assert forced and all(float(logps[r, s]) == 0.0 for r, s in forced)
    assert float(expected[live].min()) < -1.0  # a random model: the choices are far from certain


def test_answer_template_rollouts_refuse_filters_that_could_empty_the_template(setup, tmp_path):
    from stvgr1_edge.errors import BadInputError

    for extra in ("grpo.top_k=50", "grpo.top_p=0.9"):
        with pytest.raises(BadInputError, match="top_k=0, grpo.top_p=1.0"):
            build_grpo_trainer(_run(setup, tmp_path / "out", ["answer_template=true", extra]))


class _KillAfterCheckpoint:
    """A callback that aborts training right after the checkpoint at ``step`` is written (a killed job)."""

    def __init__(self, step):
        self.step = step

    def __getattr__(self, name):  # TrainerCallback protocol: every other event is a no-op
        return lambda *a, **k: None

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("killed after checkpoint")


def test_resume_after_kill_continues_same_step_and_data_order(setup, tmp_path):
    """Killed right after the checkpoint at step 3 (mid-epoch: 5 samples, 2 prompts a step, 2 steps an epoch) and
    resumed: steps 4 and 5 (crossing into the next epoch) see the same samples, and end on the same weights."""
    # random-model rewards are all 0 (no policy gradient): decoupled weight decay at a large lr moves the weights
    # every step, so the final weights show whether weights, optimizer and schedule were restored
    steps = [
        "grpo.max_steps=5",
        "grpo.save_steps=3",
        "grpo.beta=0.0",
        "grpo.learning_rate=0.01",
        "grpo.weight_decay=0.5",
    ]
    full = run_grpo(_run(setup, tmp_path / "full", steps))
    per_step = len(full.seen_sample_ids) // 5

    with pytest.raises(KeyboardInterrupt):
        run_grpo(_run(setup, tmp_path / "killed", steps), callbacks=[_KillAfterCheckpoint(3)])
    assert (tmp_path / "killed" / "checkpoint-3").is_dir()
    resumed = run_grpo(_run(setup, tmp_path / "killed", steps, resume_from_checkpoint="latest"))

    assert resumed.state.global_step == 5
    assert [h["step"] for h in resumed.state.log_history if "loss" in h] == [1, 2, 3, 4, 5]  # 1-3 from the checkpoint
    assert resumed.seen_sample_ids == full.seen_sample_ids[3 * per_step :]
    from transformers import Qwen2_5_VLForConditionalGeneration

    initial = dict(Qwen2_5_VLForConditionalGeneration.from_pretrained(setup.model).named_parameters())
    full_params = dict(full.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p, full_params[name]), name
    moved = [n for n, p in resumed.model.named_parameters() if not torch.equal(p, initial[n])]
    assert "lm_head.weight" in moved and "model.visual.patch_embed.proj.weight" in moved


def test_sft_collator_supervises_only_the_answer_and_sft_runs(setup, tmp_path):
    from stvgr1_edge.prompt import normalize_query
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import SFTCollator, SFTRunConfig, run_sft, target_answer

    processor, _ = load_processor(setup.model)
    rows = list(load_cached_dataset(setup.cache))[:2]
    batch = SFTCollator(processor)(rows)
    for i, row in enumerate(rows):
        answer_ids = batch["labels"][i][batch["labels"][i] != -100]
        expected = target_answer(row["gt_id"], row["gt_start_s"], row["gt_end_s"]) + "<|im_end|>"
        assert processor.tokenizer.decode(answer_ids) == expected
    assert batch["video_grid_thw"].shape[0] == 2 and int((batch["mm_token_type_ids"] == 2).sum()) == sum(
        int(g.prod()) // 4 for g in batch["video_grid_thw"]
    )

    restated = SFTCollator(processor, restate_query=True)(rows)
    for i, row in enumerate(rows):
        text = processor.tokenizer.decode(restated["labels"][i][restated["labels"][i] != -100])
        # the query (as the prompt normalises it) comes right before the ID; the <answer> part is unchanged
        assert f'"{normalize_query(row["query"])}" is object ID "{row["gt_id"]}"' in text
        assert (
            text.split("</think>")[1]
            == target_answer(row["gt_id"], row["gt_start_s"], row["gt_end_s"]).split("</think>")[1] + "<|im_end|>"
        )
    described = SFTCollator(processor, describe_objects=True)(rows)
    for i, row in enumerate(rows):
        text = processor.tokenizer.decode(described["labels"][i][described["labels"][i] != -100])
        inventory = "".join(
            f"Object {k}: {label or 'unclear'}. " for k, label in zip(row["valid_ids"], row["object_labels"])
        )
        assert any(row["object_labels"]) and text.startswith(
            f'<think>{inventory}"{normalize_query(row["query"])}" is object ID'
        )
    marked = SFTCollator(processor, mark_target=True)(rows)
    for i, row in enumerate(rows):
        text = processor.tokenizer.decode(marked["labels"][i][marked["labels"][i] != -100])
        lines = [
            f"Object {k}: {label or 'unclear'}" + (", the target" if k == row["gt_id"] else "")
            for k, label in zip(row["valid_ids"], row["object_labels"])
        ]
        assert text.startswith(
            f'<think>"{normalize_query(row["query"])}". '
            + ". ".join(lines)
            + f'. The target is object ID "{row["gt_id"]}"'
        )
        assert text.count(", the target.") == 1
        assert (
            text.split("</think>")[1]
            == target_answer(row["gt_id"], row["gt_start_s"], row["gt_end_s"]).split("</think>")[1] + "<|im_end|>"
        )

    trainer = run_sft(
        SFTRunConfig(
            data=setup.cache,
            model=setup.model,
            output_dir=str(tmp_path / "sft"),
            max_steps=2,
            per_device_train_batch_size=2,
            gradient_checkpointing=False,
            save_steps=2,
        )
    )
    assert trainer.state.global_step == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)
    assert (tmp_path / "sft" / "config.json").is_file()
    # a checkpoint is a complete model folder: the grounder loads it with its processor
    from stvgr1_edge.grounding import Grounder, GrounderConfig

    checkpoint = Grounder.from_pretrained(GrounderConfig(model=str(tmp_path / "sft" / "checkpoint-2"), device="cpu"))
    assert checkpoint.processor.video_processor.merge_size == processor.video_processor.merge_size


def test_sft_line_end_weight_weighs_each_inventory_lines_end_and_nothing_else(setup):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.prompt import normalize_query
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import (
        SFTCollator,
        WeightedLossMixin,
        checked_label,
        model_inputs,
        query_attributes,
        weighted_next_token_loss,
    )

    processor, _ = load_processor(setup.model)
    tok = processor.tokenizer
    rows = list(load_cached_dataset(setup.cache))[:2]
    plain = SFTCollator(processor, mark_target=True)(rows)
    assert "loss_weights" not in plain  # weight 1.0: the model's own loss, as before
    weighted = SFTCollator(processor, mark_target=True, line_end_weight=4.0)(rows)
    assert torch.equal(weighted["input_ids"], plain["input_ids"])
    weights, labels = weighted["loss_weights"], weighted["labels"]
    assert torch.all(weights[labels == -100] == 0) and set(weights[labels != -100].tolist()) == {1.0, 4.0}
    for i, row in enumerate(rows):
        ends = [tok.decode([t]) for t in weighted["input_ids"][i][weights[i] == 4.0]]
        # one per line, right after what the line says: "," (of ", the target") on the target's line, "." elsewhere
        assert ends == ["," if k == row["gt_id"] else "." for k in row["valid_ids"]], ends

    checked = SFTCollator(processor, mark_target=True, check_attributes=True, line_end_weight=4.0)(rows)
    for i, row in enumerate(rows):
        text = tok.decode(checked["labels"][i][checked["labels"][i] != -100])
        wanted = query_attributes(row["query"])
        lines = [
            f"Object {k}: {checked_label(label, wanted) or 'unclear'}" + (", the target" if k == row["gt_id"] else "")
            for k, label in zip(row["valid_ids"], row["object_labels"])
        ]
        assert text.startswith(f'<think>"{normalize_query(row["query"])}". ' + ". ".join(lines) + ". The target is")
        heavy = [tok.decode([t]) for t in checked["input_ids"][i][checked["loss_weights"][i] == 4.0]]
        # every check tag, then the line's end: "," after the target's last "+", "." elsewhere
        expected = []
        for line in lines:
            expected += re.findall(r"[+-]", line) + ["," if line.endswith("the target") else "."]
        assert heavy == expected and "+" in expected and "-" in expected

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(setup.model)
    with torch.no_grad():
        own = model(**plain).loss
        inputs = model_inputs(weighted)
        logits = model(**inputs).logits
    ones = (labels != -100).float()
    assert torch.allclose(weighted_next_token_loss(logits, labels, ones), own, atol=1e-6)
    only_ends = (weights == 4.0).float()
    end_loss = weighted_next_token_loss(logits, labels, only_ends)
    mixed = weighted_next_token_loss(logits, labels, weights)
    assert min(own, end_loss) < mixed < max(own, end_loss)  # pulled from the plain mean toward the line ends

    class OwnLoss:  # what Trainer.compute_loss does here: the model's own loss
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return model(**inputs).loss

    trainer = type("T", (WeightedLossMixin, OwnLoss), {})()
    with torch.no_grad():
        assert torch.allclose(trainer.compute_loss(model, dict(weighted)), mixed, atol=1e-6)
        assert torch.allclose(trainer.compute_loss(model, dict(plain)), own, atol=1e-6)


def test_sft_time_weight_weighs_exactly_the_digits_of_both_time_ranges(setup):
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import SFTCollator

    processor, _ = load_processor(setup.model)
    tok = processor.tokenizer
    rows = list(load_cached_dataset(setup.cache))[:2]
    for kwargs in ({}, {"mark_target": True, "check_attributes": True, "line_end_weight": 4.0}):
        timed = SFTCollator(processor, time_weight=3.0, **kwargs)(rows)
        weights = timed["loss_weights"]
        for i, row in enumerate(rows):
            heavy = "".join(tok.decode([t]) for t in timed["input_ids"][i][weights[i] == 3.0])
            times = f"{row['gt_start_s']:.2f}{row['gt_end_s']:.2f}"
            assert heavy == times * 2, heavy  # the reasoning's range, then the <answer>'s; nothing else
            if kwargs:  # the line checks keep their own weight
                assert (weights[i] == 4.0).sum() == len(
                    re.findall(
                        r"[+-]", tok.decode(timed["labels"][i][timed["labels"][i] != -100]).split("The target is")[0]
                    )
                ) + len(row["valid_ids"])


def test_sft_event_timeline_tags_each_tube_by_its_sampled_frames_and_weighs_the_tags(setup):
    import json

    from stvgr1_edge.errors import BadInputError
    from stvgr1_edge.sampling import sample_frame_indices
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import SFTCollator

    processor, _ = load_processor(setup.model)
    tok = processor.tokenizer
    rows = list(load_cached_dataset(setup.cache))
    gt = json.loads((setup.root / "data" / "annotations.json").read_text())
    batch = SFTCollator(processor, mark_target=True, check_attributes=True, time_weight=3.0, event_timeline=True)(rows)
    seen = set()
    for i, row in enumerate(rows):
        labels = batch["labels"][i]
        text = tok.decode(labels[labels != -100])
        timeline = re.search(r"its event in time: ([^;]*);", text).group(1).split(", ")
        num_tubes = int(batch["video_grid_thw"][i, 0])
        assert len(timeline) == num_tubes  # one tag per 2-frame tube
        # each tag from the frames the sampler really took (native index / fps), not from the approximation
        entry = gt[row["sample_id"]]
        fps, total = entry["fps"], entry["img_num"]
        times = sample_frame_indices(total, fps) / fps
        expected = [
            "+" if any(row["gt_start_s"] <= t <= row["gt_end_s"] for t in times[2 * j : 2 * j + 2]) else "-"
            for j in range(num_tubes)
        ]
        assert [t[-1] for t in timeline] == expected
        assert "".join(expected).strip("-").count("-") == 0  # one event: a single run of "+"
        seen |= set(expected)
        # the tags weigh like the range's digits; the tube times (one decimal) do not
        heavy = "".join(tok.decode([t]) for t in batch["input_ids"][i][batch["loss_weights"][i] == 3.0])
        times_text = f"{row['gt_start_s']:.2f}{row['gt_end_s']:.2f}"
        assert heavy == "".join(expected) + times_text * 2, heavy
    assert seen == {"+", "-"}
    plain = SFTCollator(processor, mark_target=True, check_attributes=True, time_weight=3.0)(rows)
    assert "its event in time" not in tok.decode(plain["labels"][0][plain["labels"][0] != -100])
    old_cache_row = dict(rows[0], frame_times_s=[])  # a cache written before the times were recorded
    with pytest.raises(BadInputError, match="rerun `stvg-edge train prepare`"):
        SFTCollator(processor, mark_target=True, event_timeline=True)([old_cache_row])


def test_covered_cells_are_those_the_box_covers_by_more_than_half_or_the_most_covered_one():
    from stvgr1_edge_train.sft import covered_cells

    # a 4x6 grid of cells: a box over cells (1, 2), (1, 3) whole and half of (2, 2), (2, 3) -> the two whole ones
    mask = covered_cells((2 / 6, 1 / 4, 4 / 6, 2.5 / 4), rows=4, cols=6).view(4, 6)
    assert mask.nonzero().tolist() == [[1, 2], [1, 3]]
    # a box over three quarters of (0, 0) and a quarter of (0, 1)
    assert covered_cells((0.0, 0.0, 1.25 / 6, 1 / 4), 4, 6).view(4, 6).nonzero().tolist() == [[0, 0]]
    # a small object inside one cell's lower right corner, no cell covered by half: the cell it sits in
    assert covered_cells((4.6 / 6, 2.6 / 4, 4.9 / 6, 2.9 / 4), 4, 6).view(4, 6).nonzero().tolist() == [[2, 4]]


def test_sft_attention_queries_point_the_times_at_the_targets_box_at_its_ranges_edges(setup):
    from stvgr1_edge.errors import BadInputError
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import SFTCollator

    processor, _ = load_processor(setup.model)
    tok, merge = processor.tokenizer, processor.video_processor.merge_size
    rows = list(load_cached_dataset(setup.cache))
    collator = SFTCollator(processor, mark_target=True, check_attributes=True, attend_event_edges=True)
    batch = collator(rows)
    assert torch.equal(batch["loss_weights"], (batch["labels"] != -100).float())
    queries = batch["attention_queries"]
    assert [row for row, _, _ in queries] == [i for i in range(len(rows)) for _ in range(4)]
    for k, (i, query_positions, target_positions) in enumerate(queries):
        row, (tubes, grid_rows, grid_cols) = rows[i], batch["video_grid_thw"][i].tolist()
        # the positions predict the characters of the k-th time written: start, end, start, end
        written = tok.decode(batch["input_ids"][i, query_positions + 1]).strip()
        assert written == f"{row['gt_start_s'] if k % 2 == 0 else row['gt_end_s']:.2f}"
        # the targets are visual tokens of one tube: the first (a start) or last (an end) with a frame in range
        video_positions = torch.nonzero(batch["input_ids"][i] == collator.video_token_id).flatten().tolist()
        cols, per_tube = grid_cols // merge, grid_rows * grid_cols // merge**2
        index = [video_positions.index(p) for p in target_positions.tolist()]
        in_range = [
            j
            for j in range(tubes)
            if any(row["gt_start_s"] <= t <= row["gt_end_s"] for t in row["frame_times_s"][2 * j : 2 * j + 2])
        ]
        tube = in_range[0] if k % 2 == 0 else in_range[-1]
        assert index and {n // per_tube for n in index} == {tube}
        # ... and the cells of the target's box there: the one under its centre, none outside it
        boxes = [b for b in row["target_boxes"][2 * tube : 2 * tube + 2] if b]
        cells = {divmod(n % per_tube, cols) for n in index}
        x0, y0, x1, y1 = boxes[0]
        grid = (grid_rows // merge, cols)
        assert (int((y0 + y1) / 2 * grid[0]), int((x0 + x1) / 2 * grid[1])) in cells
        for r, c in cells:
            assert any(
                b[0] * grid[1] < c + 1 and b[2] * grid[1] > c and b[1] * grid[0] < r + 1 and b[3] * grid[0] > r
                for b in boxes
            )
    old_cache_row = dict(rows[0], target_boxes=[])  # a cache written before the boxes were recorded
    with pytest.raises(BadInputError, match="rerun `stvg-edge train prepare`"):
        collator([old_cache_row])


def test_sft_attention_span_points_both_times_at_the_target_in_every_tube_of_its_range(setup):
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import SFTCollator, event_edge_token_masks

    processor, _ = load_processor(setup.model)
    merge = processor.video_processor.merge_size
    rows = list(load_cached_dataset(setup.cache))
    edges = SFTCollator(processor, attend_event_edges=True)(rows)["attention_queries"]
    span = SFTCollator(processor, attend_event_edges=True, attention_span=True)(rows)
    assert [(i, q.tolist()) for i, q, _ in span["attention_queries"]] == [(i, q.tolist()) for i, q, _ in edges]
    for (i, _, spanned), (_, _, edge) in zip(span["attention_queries"], edges):
        row, (tubes, grid_rows, grid_cols) = rows[i], span["video_grid_thw"][i].tolist()
        per_tube = grid_rows * grid_cols // merge**2
        video_positions = torch.nonzero(
            span["input_ids"][i] == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        )
        index = [video_positions.flatten().tolist().index(p) for p in spanned.tolist()]
        in_range = {j for j in range(tubes) if any(row["target_boxes"][2 * j : 2 * j + 2])}
        # every tube with a box in range holds targets, no other tube does, and the edge's targets are among them
        assert {n // per_tube for n in index} == in_range and len(in_range) > 1
        assert set(edge.tolist()) < set(spanned.tolist())
        start, end = event_edge_token_masks(row["target_boxes"], (tubes, grid_rows, grid_cols), merge, span=True)
        assert torch.equal(start, end) and int(start.sum()) == len(index)


def test_sft_attention_weight_adds_the_attention_mass_loss_and_reaches_the_update(setup, tmp_path):
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.errors import BadInputError
    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import (
        SFTCollator,
        SFTRunConfig,
        WeightedLossMixin,
        attention_mass_loss,
        model_inputs,
        run_sft,
        weighted_next_token_loss,
    )

    processor, _ = load_processor(setup.model)
    model = use_trained_rope_index(Qwen2_5_VLForConditionalGeneration.from_pretrained(setup.model)).eval()
    batch = SFTCollator(processor, attend_event_edges=True)(list(load_cached_dataset(setup.cache))[:2])
    scorer = type("Scorer", (WeightedLossMixin,), {"attention_weight": 0.5, "attention_layer": 1, "attention_head": 3})
    with torch.no_grad():
        loss = scorer().compute_loss(model, dict(batch))
        inputs = model_inputs(batch)
        out = model(**inputs, output_hidden_states=True)
        answer = weighted_next_token_loss(out.logits, batch["labels"], batch["loss_weights"])
        attention = attention_mass_loss(model, inputs, out.hidden_states[1], 1, 3, batch["attention_queries"])
    assert attention > 0.1 and torch.allclose(loss, answer + 0.5 * attention)
    # a batch with queries but no token weights keeps its attention term (every answer token weighs 1)
    unweighted = {k: v for k, v in batch.items() if k != "loss_weights"}
    with torch.no_grad():
        assert torch.allclose(scorer().compute_loss(model, unweighted), loss)

    def final_weights(name, **kw):
        trainer = run_sft(
            SFTRunConfig(
                data=setup.cache,
                model=setup.model,
                output_dir=str(tmp_path / name),
                max_steps=2,
                per_device_train_batch_size=2,
                gradient_checkpointing=False,
                save_steps=100,
                learning_rate=1e-3,
                **kw,
            )
        )
        logged = [h["attention_loss"] for h in trainer.state.log_history if "loss" in h]
        assert len(logged) == 2 and all(value > 0 for value in logged)  # the auxiliary term is logged each step
        return load_file(str(tmp_path / name / "model.safetensors"))

    # the same runs but for the layer whose attention is trained: the auxiliary loss is what moves the weights apart
    first, second = (final_weights(f"layer{n}", attention_weight=1.0, attention_layer=n) for n in (0, 1))
    assert any(not torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(BadInputError, match="attention_layer must be"):
        final_weights("bad", attention_weight=1.0, attention_layer=99)


def test_cli_train_grpo_and_prepare(setup, tmp_path, capsys):
    from stvgr1_edge.cli import main as stvg_main
    from stvgr1_edge_train.cli import main as train_main

    out = tmp_path / "cli"
    code = stvg_main(
        [
            "train",
            "grpo",
            "--config",
            "train/configs/grpo_stvg_r1.yaml",
            "--data",
            setup.cache,
            "--model",
            setup.model,
            "--output",
            str(out),
            "grpo.max_steps=1",
            "grpo.num_generations=2",
            "grpo.per_device_train_batch_size=2",
            "grpo.gradient_accumulation_steps=1",
            "grpo.max_completion_length=8",
            "grpo.gradient_checkpointing=false",
        ]
    )
    assert code == 0 and "trained 1 steps" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file()
    assert train_main(["prepare", str(setup.root / "data" / "annotations.json"), "--out", setup.cache]) == 0
    assert "skipped_existing 5" in capsys.readouterr().out
    assert train_main(["grpo", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    # the attention loss's options reach the run: a layer the model does not have is refused before training
    sft_args = ["sft", "--data", setup.cache, "--model", setup.model, "--output", str(tmp_path / "sft")]
    assert train_main([*sft_args, "--attention-weight", "1", "--attention-layer", "9"]) == 2
    assert "attention_layer must be 0..1" in capsys.readouterr().err
