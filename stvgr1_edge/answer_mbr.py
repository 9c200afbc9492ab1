"""Minimum-Bayes-risk answers: sample the model's answers, give the one the others agree with most.

Why: the model writes its time range digit by digit, so greedy decoding takes the most likely first digit, then the
most likely next one given it, and so on -- neither the most likely range nor the range that scores best. Where the
model is unsure whether a start lies at 1 or at 4 s, greedy writes ``1.…`` whenever 1 is the single most likely
digit, however much mass lies above it. The packaged nano model shows it plainly: at synth's default clip format its
greedy ranges cluster at 1.0-4.4 s and score below the best constant range.

What: :func:`sample_completions` draws ``n`` answers from the model in one batch (continuing the decoded answer's
pass over the prompt when it is given; its key/value cache is repeated per answer), each kept inside the answer
template when one applies. :func:`choose_answer` scores every candidate (the samples and the decoded answer) by its
mean agreement with the samples -- the tIoU of their ranges, counted only where they name the same IDs (an answer
scores on vIoU only with the right ID) -- and gives the best one: a whole answer the model wrote, reasoning, ID and
time together (the minimum-Bayes-risk rule for an answer scored by a metric). Off by default
(``GrounderConfig.answer_samples = 0``): the STVG-R1 evaluation decodes greedily.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .answer import GroundingAnswer
from .metrics import temporal_iou_seconds

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .backends.engine import PromptPass


@dataclass(frozen=True)
class SampledAnswers:
    """What an answer was chosen from: the sampled answers' texts and the choice."""

    texts: tuple[str, ...]
    """The sampled answers (special tokens removed)."""
    chosen: int
    """Index into ``texts`` of the answer given, or -1: the decoded answer was kept."""
    agreement: float
    """The chosen answer's mean agreement with the samples (:func:`agreement`): 1 when they all give its IDs and
    range, near 0 when they scatter."""


def agreement(a: GroundingAnswer, b: GroundingAnswer) -> float:
    """How far answer ``b`` agrees with answer ``a``: the tIoU of their time ranges where both name the same IDs
    (time-only answers name none), else 0; 0 when either has no range."""
    if a.start_s is None or a.end_s is None or b.start_s is None or b.end_s is None:
        return 0.0
    if tuple(sorted(a.ids)) != tuple(sorted(b.ids)):
        return 0.0
    return temporal_iou_seconds((a.start_s, a.end_s), (b.start_s, b.end_s))


def choose_answer(candidates: Sequence[GroundingAnswer], samples: Sequence[GroundingAnswer]) -> tuple[int, float]:
    """The index of the candidate with the highest mean :func:`agreement` with ``samples``, and that mean. Ties go
    to the earlier candidate."""
    if not candidates or not samples:
        raise ValueError("choose_answer needs at least one candidate and one sample")
    scores = [sum(agreement(c, s) for s in samples) / len(samples) for c in candidates]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return best, scores[best]


def sample_completions(
    model: Any,
    inputs: dict[str, "torch.Tensor"],
    features: Any,
    num_samples: int,
    temperature: float,
    eos_ids: Sequence[int],
    generator: "torch.Generator",
    max_new_tokens: int,
    constraints: Sequence[Callable[[list[int], "torch.Tensor"], "torch.Tensor"]] | None = None,
    prompt: "PromptPass | None" = None,
) -> list[list[int]]:
    """``num_samples`` completions of the prompt ``inputs`` (its video as encoder ``features``), sampled at
    ``temperature``; each ends at an EOS id or after ``max_new_tokens`` tokens.

    The samples continue ``prompt``, the prompt's pass that decoding the answer already made (its cache is consumed),
    or, without it, a pass of their own (:func:`~stvgr1_edge.backends.engine.run_prompt`, as the static engine runs
    it); its key/value cache is repeated ``num_samples`` times and each step decodes all samples together, every one
    at the text position ``cache position + rope delta`` that ``generate`` gives a new token.
    ``constraints[i](tokens, logits)`` masks sample ``i``'s next-token logits given its tokens so far (one answer
    template each: they keep state)."""
    import torch

    from .backends.engine import cache_of, run_prompt

    if constraints is not None and len(constraints) != num_samples:
        raise ValueError(f"{len(constraints)} constraints for {num_samples} samples")
    device = inputs["input_ids"].device
    eos = {int(e) for e in eos_ids}
    filler = min(eos) if eos else 0  # fed to finished samples, whose outputs are no longer read
    generated: list[list[int]] = [[] for _ in range(num_samples)]
    finished = [False] * num_samples
    with torch.inference_mode():
        prompt = prompt if prompt is not None else run_prompt(model, inputs, {"video": features})
        cache, rope_delta = prompt.cache, prompt.rope_delta.to(device)
        cache.batch_repeat_interleave(num_samples)
        cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        logits = prompt.logits.expand(num_samples, -1)
        length = inputs["input_ids"].shape[1]
        for step in range(max_new_tokens):
            active = [row for row in range(num_samples) if not finished[row]]
            if constraints is None:
                step_logits = logits[active]
            else:
                step_logits = torch.cat([constraints[row](generated[row], logits[row : row + 1]) for row in active])
            draws = torch.multinomial(torch.softmax(step_logits / temperature, dim=-1), 1, generator=generator)
            chosen = [filler] * num_samples
            for row, token in zip(active, draws.view(-1).tolist()):
                generated[row].append(token)
                finished[row] = token in eos
                chosen[row] = token
            if all(finished) or step == max_new_tokens - 1:
                break
            position = (length + step + rope_delta).view(1, 1, 1).expand(3, num_samples, 1)
            out = model(
                input_ids=torch.tensor(chosen, device=device).view(num_samples, 1),
                position_ids=position,
                use_cache=True,
                **{cache_argument: cache},
            )
            cache = cache_of(out)
            logits = out.logits[:, -1].float()
    return generated
