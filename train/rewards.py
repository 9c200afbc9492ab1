"""STVG-R1 task rewards (`STVG-R1.md` §7) as plain TRL reward functions ``f(completions, **columns) -> list[float]``.

Each function reads the dataset columns it needs (``gt_id``, ``gt_start_s``, ``gt_end_s``, ``duration_s``) from
``columns``; TRL passes every dataset column of the rows the completions belong to. The reference reward is the
unweighted sum of :func:`temporal_iou_reward`, :func:`id_match_reward` and :func:`format_reward` (each in [0, 1]);
:func:`build_reward_funcs` returns them with their weights (``GRPOConfig.reward_weights``) and optionally adds a
Time-R1-style boundary penalty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from stvgr1_edge.answer import parse_answer

FORMAT_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
"""The whole completion must match this (``re.fullmatch``) for the format reward."""


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or a conversational ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def interval_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """IoU of two closed time intervals in seconds (0 when the union is empty)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def temporal_iou_reward(
    completions: Sequence[Any],
    gt_start_s: Sequence[float],
    gt_end_s: Sequence[float],
    duration_s: Sequence[float] | None = None,
    **_: Any,
) -> list[float]:
    """tIoU (seconds) between the answered time range and the GT range; 0 when no time range can be read.
    Answers are parsed with :func:`stvgr1_edge.answer.parse_answer` (swapped ends fixed, clamped to the video)."""
    rewards = []
    for i, completion in enumerate(completions):
        duration = None if duration_s is None else float(duration_s[i])
        answer = parse_answer(completion_text(completion), duration_s=duration)
        if not answer.has_time_range:
            rewards.append(0.0)
            continue
        rewards.append(interval_iou((answer.start_s, answer.end_s), (float(gt_start_s[i]), float(gt_end_s[i]))))
    return rewards


def id_match_reward(completions: Sequence[Any], gt_id: Sequence[int], **_: Any) -> list[float]:
    """1.0 when the answer names exactly the GT target ID (one ID, equal to ``gt_id``), else 0.0."""
    rewards = []
    for i, completion in enumerate(completions):
        answer = parse_answer(completion_text(completion))
        rewards.append(1.0 if answer.ids == (int(gt_id[i]),) else 0.0)
    return rewards


def format_reward(completions: Sequence[Any], **_: Any) -> list[float]:
    """1.0 when the whole completion is ``<think>…</think>`` then ``<answer>…</answer>`` (whitespace between)."""
    return [1.0 if FORMAT_PATTERN.fullmatch(completion_text(c)) else 0.0 for c in completions]


def boundary_penalty_reward(
    completions: Sequence[Any],
    gt_start_s: Sequence[float],
    gt_end_s: Sequence[float],
    duration_s: Sequence[float],
    **_: Any,
) -> list[float]:
    """Time-R1-style boundary term: ``-(|start - gt_start| + |end - gt_end|) / duration`` (≤ 0; 0 when exact);
    -1.0 when no time range can be read. Combine with a small positive weight."""
    rewards = []
    for i, completion in enumerate(completions):
        duration = float(duration_s[i])
        answer = parse_answer(completion_text(completion), duration_s=duration)
        if not answer.has_time_range or duration <= 0:
            rewards.append(-1.0)
            continue
        error = abs(answer.start_s - float(gt_start_s[i])) + abs(answer.end_s - float(gt_end_s[i]))
        rewards.append(-min(1.0, error / duration))
    return rewards


@dataclass(frozen=True)
class RewardConfig:
    """Which reward terms are used and how they are weighted (the reference: 1, 1, 1, no boundary term)."""

    tiou_weight: float = 1.0
    """Weight of the temporal IoU reward."""
    id_weight: float = 1.0
    """Weight of the ID-match reward (1.0 for the GT ID)."""
    format_weight: float = 1.0
    """Weight of the format reward."""
    boundary_weight: float = 0.0
    """Weight of the Time-R1 boundary penalty; 0 leaves it out."""


def build_reward_funcs(config: RewardConfig = RewardConfig()) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """(reward functions, weights) for ``GRPOTrainer(reward_funcs=...)`` and ``GRPOConfig(reward_weights=...)``."""
    funcs: list[Callable[..., list[float]]] = [temporal_iou_reward, id_match_reward, format_reward]
    weights = [config.tiou_weight, config.id_weight, config.format_weight]
    if config.boundary_weight:
        funcs.append(boundary_penalty_reward)
        weights.append(config.boundary_weight)
    return funcs, weights


def total_reward(
    completion: str,
    gt_id: int,
    gt_start_s: float,
    gt_end_s: float,
    duration_s: float,
    config: RewardConfig = RewardConfig(),
) -> float:
    """The weighted sum for one completion (what GRPO's advantage is computed from)."""
    funcs, weights = build_reward_funcs(config)
    columns = dict(gt_id=[gt_id], gt_start_s=[gt_start_s], gt_end_s=[gt_end_s], duration_s=[duration_s])
    return sum(w * f([completion], **columns)[0] for f, w in zip(funcs, weights))
