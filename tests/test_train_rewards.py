"""Exact values of the STVG-R1 rewards (train/rewards.py)."""

import pytest

pytest.importorskip("trl")

from stvgr1_edge_train.rewards import (
    RewardConfig,
    boundary_penalty_reward,
    build_reward_funcs,
    format_reward,
    id_match_reward,
    interval_iou,
    temporal_iou_reward,
    total_reward,
)

GOOD = "<think>the cross shrinks between 2 and 6</think>\n<answer>Target ID: 3, Time range: 2.00 to 6.00</answer>"
COLS = dict(gt_id=[3], gt_start_s=[4.0], gt_end_s=[8.0], duration_s=[10.0])


def test_interval_iou_hand_computed():
    assert interval_iou((2.0, 6.0), (4.0, 8.0)) == pytest.approx(2.0 / 6.0)
    assert interval_iou((0.0, 1.0), (2.0, 3.0)) == 0.0
    assert interval_iou((1.0, 1.0), (1.0, 1.0)) == 0.0


def test_temporal_iou_reward_values():
    completions = [
        GOOD,
        "<answer>Target ID: 3, Time range: 6.00 to 2.00</answer>",  # swapped ends: fixed
        "<answer>Target ID: 3</answer>",
        "nothing to parse",
    ]
    cols = {k: v * 4 for k, v in COLS.items()}
    assert temporal_iou_reward(completions, **cols) == pytest.approx([1 / 3, 1 / 3, 0.0, 0.0])
    # clamped to the video: 8..15 -> 8..10, GT 4..8 -> no overlap; 3..15 -> 3..10 vs 4..8 = 4/7
    clamp = ["<answer>Target ID: 1, Time range: 3.00 to 15.00</answer>"]
    assert temporal_iou_reward(clamp, **COLS) == pytest.approx([4.0 / 7.0])


def test_id_match_reward_values():
    completions = [
        GOOD,
        "<answer>Target ID: 4, Time range: 1 to 2</answer>",
        "<answer>Target IDs: 3, 5, Time range: 1 to 2</answer>",
        "<think>Target ID: 3</think>",
    ]
    assert id_match_reward(completions, gt_id=[3] * 4) == [1.0, 0.0, 0.0, 0.0]


def test_format_reward_values():
    completions = [
        GOOD,
        "<think>a</think><answer>b</answer>",
        "<think>a</think> x <answer>b</answer>",
        "<answer>b</answer>",
        GOOD + " trailing",
        "<think>multi\nline</think>\n\n<answer>\nb\n</answer>",
    ]
    assert format_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_conversational_completions_are_read():
    assert format_reward([[{"role": "assistant", "content": GOOD}]]) == [1.0]


def test_boundary_penalty_values():
    # |2-4| + |6-8| = 4 over 10 s -> -0.4; unparsable -> -1
    assert boundary_penalty_reward(
        [GOOD, "no"], gt_start_s=[4.0, 4.0], gt_end_s=[8.0, 8.0], duration_s=[10.0, 10.0]
    ) == pytest.approx([-0.4, -1.0])


def test_total_reward_is_the_weighted_sum():
    assert total_reward(GOOD, 3, 4.0, 8.0, 10.0) == pytest.approx(1 / 3 + 1.0 + 1.0)
    cfg = RewardConfig(tiou_weight=2.0, id_weight=0.5, format_weight=0.0, boundary_weight=1.0)
    assert total_reward(GOOD, 3, 4.0, 8.0, 10.0, cfg) == pytest.approx(2 / 3 + 0.5 - 0.4)
    funcs, weights = build_reward_funcs(RewardConfig())
    assert [f.__name__ for f in funcs] == ["temporal_iou_reward", "id_match_reward", "format_reward"]
    assert weights == [1.0, 1.0, 1.0]
