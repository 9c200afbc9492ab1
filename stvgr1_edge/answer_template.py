"""Decoding that always ends in a readable answer:
``<think>…</think> <answer>Target ID: k, Time range: a to b</answer>``.

The released checkpoint was trained to answer in this template, and the reward of its training (`STVG-R1.md`
§7) paid for it; a small or quantized model still drifts out of it (an unclosed ``<think>``, a degenerate
repetition, ``.1.1.1``). :class:`AnswerConstraint` masks, at every decoding step, the tokens that would leave
the template, so the answer parses whatever the model is shown:

* the thinking is free text: the model's own token is kept, only end-of-sequence is held back until the answer
  is complete. It is closed for the model (``</think>`` written token by token) when the tokens left would not
  fit the longest answer, or when the thinking degenerates into a repetition (``stop_on_repetition``);
* after ``</think>``: up to two spaces or newlines, then ``<answer>Target ID: `` (or ``<answer>Time range: ``
  for time-only prompts), digits (given the clip's drawn IDs, one of those: an ID that is not drawn has no
  track, so no tube), ``, Time range: ``, a number with at most two decimals, `` to ``, a number,
  ``</answer>``, end-of-sequence. Where the template allows several tokens (a digit, the ID list's end), the
  model's own scores choose among them.

A model that answers in the template anyway (the STVG-R1 checkpoint, greedy) produces the same tokens with and
without the constraint. The character-level template (:class:`TemplateMachine`) is matched against the token
strings of a byte-level BPE vocabulary (Qwen2.5-VL's, and the packaged nano model's).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Any, Sequence

logger = logging.getLogger(__name__)

THINK_CLOSE = "</think>"
GAP_CHARS = " \n"
MAX_GAP = 2
MAX_ID_DIGITS = 6
MAX_IDS_MULTI = 16
"""Most IDs a multi-object answer may list."""
MAX_INT_DIGITS = 5
MAX_FRAC_DIGITS = 2
"""The prompt asks for "two decimal places"."""
DIGITS = "0123456789"


def is_repetition(tokens: Sequence[int], window: int, max_period: int = 8) -> bool:
    """Whether the last ``window`` tokens are one pattern of at most ``max_period`` tokens repeated."""
    if window <= 0 or len(tokens) < window:
        return False
    tail = list(tokens[-window:])
    periods = range(1, min(max_period, window // 2) + 1)  # a pattern must repeat at least twice
    return any(all(tail[i] == tail[i - p] for i in range(p, window)) for p in periods)


State = tuple[int, tuple]
"""(index of the template part being matched, that part's own position)."""


# --- the template's parts: each matches characters and knows how many it may still need ------------------------
class Literal:
    """Exactly ``text``. Position: characters matched."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.start: tuple = (0,)

    def step(self, pos: tuple, ch: str) -> tuple | None:
        n = pos[0]
        return (n + 1,) if n < len(self.text) and self.text[n] == ch else None

    def done(self, pos: tuple) -> bool:
        return pos[0] == len(self.text)

    full = done

    def min_left(self, pos: tuple) -> int:
        return len(self.text) - pos[0]

    max_left = min_left


class Thinking:
    """Any text up to and including ``</think>``. Position: (characters of ``</think>`` matched at the end of
    the text, forced): once forced, only the rest of ``</think>`` is accepted."""

    def __init__(self, close: str = THINK_CLOSE) -> None:
        self.close = close
        self.start: tuple = (0, False)
        # Knuth-Morris-Pratt fallback, so "<</think>" is found too
        self.fallback = [0] * len(close)
        k = 0
        for i in range(1, len(close)):
            while k and close[i] != close[k]:
                k = self.fallback[k - 1]
            k += close[i] == close[k]
            self.fallback[i] = k

    def step(self, pos: tuple, ch: str) -> tuple | None:
        k, forced = pos
        if k == len(self.close):
            return None
        if forced:
            return (k + 1, True) if ch == self.close[k] else None
        while k and ch != self.close[k]:
            k = self.fallback[k - 1]
        return (k + (ch == self.close[k]), False)

    def done(self, pos: tuple) -> bool:
        return pos[0] == len(self.close)

    full = done

    def min_left(self, pos: tuple) -> int:
        return len(self.close) - pos[0]

    max_left = min_left  # once closing is forced; free thinking has no bound of its own


class Gap:
    """Up to ``most`` characters of ``chars``. Position: characters matched."""

    def __init__(self, chars: str = GAP_CHARS, most: int = MAX_GAP) -> None:
        self.chars, self.most = chars, most
        self.start: tuple = (0,)

    def step(self, pos: tuple, ch: str) -> tuple | None:
        return (pos[0] + 1,) if pos[0] < self.most and ch in self.chars else None

    def done(self, pos: tuple) -> bool:
        return True

    def full(self, pos: tuple) -> bool:
        return pos[0] == self.most

    def min_left(self, pos: tuple) -> int:
        return 0

    def max_left(self, pos: tuple) -> int:
        return self.most - pos[0]


class IdList:
    """One to ``most`` IDs, each followed by ``", "``: ``3, `` or ``3, 5, ``. ``allowed``: the IDs that may be
    written (None: any of up to ``digits`` digits). Position: (IDs begun, digits of the current one so far ("" once
    its separator begins), characters of the separator matched)."""

    def __init__(
        self, most: int, digits: int = MAX_ID_DIGITS, separator: str = ", ", allowed: Sequence[int] | None = None
    ) -> None:
        self.allowed = frozenset(str(int(i)) for i in allowed) if allowed else None
        if self.allowed:
            digits = max(len(a) for a in self.allowed)
        self.most, self.digits, self.separator = most, digits, separator
        self.start: tuple = (0, "", 0)
        self.one = digits + len(separator)
        self.shortest = min(len(a) for a in self.allowed) if self.allowed else 1

    def _may_begin(self, digits: str) -> bool:
        return self.allowed is None or any(a.startswith(digits) for a in self.allowed)

    def _digits_to_finish(self, digits: str) -> int:
        if self.allowed is None:
            return 0
        return min((len(a) - len(digits) for a in self.allowed if a.startswith(digits)), default=0)

    def step(self, pos: tuple, ch: str) -> tuple | None:
        n, current, s = pos
        if ch in DIGITS:
            if current and len(current) < self.digits and self._may_begin(current + ch):
                return (n, current + ch, 0)
            if (n == 0 or s == len(self.separator)) and n < self.most and self._may_begin(ch):
                return (n + 1, ch, 0)
            return None
        whole = current and (self.allowed is None or current in self.allowed)  # its separator may begin
        if n and (whole or 0 < s < len(self.separator)) and ch == self.separator[s]:
            return (n, "", s + 1)
        return None

    def done(self, pos: tuple) -> bool:
        return pos[0] > 0 and pos[2] == len(self.separator)

    def full(self, pos: tuple) -> bool:
        return pos[0] == self.most and pos[2] == len(self.separator)

    def min_left(self, pos: tuple) -> int:
        n, current, s = pos
        if n == 0:
            return self.shortest + len(self.separator)
        return (self._digits_to_finish(current) if current else 0) + len(self.separator) - s

    def max_left(self, pos: tuple) -> int:
        n, current, s = pos
        if n == 0:
            return self.most * self.one
        current_left = (self.digits - len(current) if current else 0) + len(self.separator) - s
        return current_left + (self.most - n) * self.one


class Number:
    """A non-negative decimal: 1 to ``integer`` digits, then optionally ``.`` and 1 to ``fraction`` digits.
    Position: (integer digits, dot seen, fraction digits)."""

    def __init__(self, integer: int = MAX_INT_DIGITS, fraction: int = MAX_FRAC_DIGITS) -> None:
        self.integer, self.fraction = integer, fraction
        self.start: tuple = (0, False, 0)

    def step(self, pos: tuple, ch: str) -> tuple | None:
        i, dot, f = pos
        if ch in DIGITS:
            if not dot and i < self.integer:
                return (i + 1, False, 0)
            if dot and f < self.fraction:
                return (i, True, f + 1)
            return None
        if ch == "." and i and not dot and self.fraction:
            return (i, True, 0)
        return None

    def done(self, pos: tuple) -> bool:
        i, dot, f = pos
        return i > 0 and (not dot or f > 0)

    def full(self, pos: tuple) -> bool:
        return pos[1] and pos[2] == self.fraction

    def min_left(self, pos: tuple) -> int:
        i, dot, f = pos
        return 1 if i == 0 or (dot and f == 0) else 0

    def max_left(self, pos: tuple) -> int:
        i, dot, f = pos
        return self.fraction - f if dot else self.integer - i + (1 + self.fraction if self.fraction else 0)


# --- the template ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswerTemplate:
    """Which answer the prompt asks for: ``ids`` = 1 (STVG-R1: one target), more (``--multi``: a list of IDs) or
    0 (``--time-only``: no ID)."""

    ids: int = 1
    allowed_ids: tuple[int, ...] | None = None
    """The IDs an answer may name (the IDs drawn on the frames); None or empty: any."""

    @classmethod
    def for_prompt(cls, prompt_text: str, allowed_ids: Sequence[int] | None = None) -> "AnswerTemplate":
        """The template the prompt's own format sentence asks for (`stvgr1_edge.prompt`); one ID when it names none.
        ``allowed_ids``: the IDs the answer may name (the clip's drawn IDs)."""
        allowed = tuple(sorted({int(i) for i in allowed_ids})) if allowed_ids else None
        if 'format "Target ID: [ID, ID, ...]' in prompt_text:
            return cls(ids=MAX_IDS_MULTI, allowed_ids=allowed)
        if 'format "Time range: [start time to end time]"' in prompt_text:
            return cls(ids=0)
        return cls(ids=1, allowed_ids=allowed)

    def parts(self) -> list:
        answer_open = "<answer>Target ID: " if self.ids else "<answer>Time range: "
        return [
            Literal("<think>"),
            Thinking(),
            Gap(),
            Literal(answer_open),
            *([IdList(self.ids, allowed=self.allowed_ids), Literal("Time range: ")] if self.ids else []),
            Number(),
            Literal(" to "),
            Number(),
            Literal("</answer>"),
        ]


class TemplateMachine:
    """Matches text against an :class:`AnswerTemplate`, character by character, from a :data:`State`. A part that
    can take no more characters (``full``) hands over to the next at once, so free thinking is recognised as soon
    as ``<think>`` is written."""

    def __init__(self, template: AnswerTemplate) -> None:
        self.parts = template.parts()
        self.start: State = (0, self.parts[0].start)
        self.thinking = next(i for i, part in enumerate(self.parts) if isinstance(part, Thinking))
        # the fewest / most characters of the parts after part i, each from its start
        self.min_after = [sum(p.min_left(p.start) for p in self.parts[i + 1 :]) for i in range(len(self.parts))]
        self.max_after = [sum(p.max_left(p.start) for p in self.parts[i + 1 :]) for i in range(len(self.parts))]
        self.max_after_thinking = len(THINK_CLOSE) + self.max_after[self.thinking]
        """The most characters after any free token of the thinking: all of ``</think>`` and the longest answer."""
        alphabet = set(DIGITS + "." + GAP_CHARS + THINK_CLOSE)
        for part in self.parts:
            alphabet.update(getattr(part, "text", "") + getattr(part, "separator", ""))
        self.alphabet = "".join(sorted(alphabet))
        """Every character the template accepts outside the free thinking."""

    def feed(self, state: State | None, text: str) -> State | None:
        """The state after ``text``, or None when the template does not allow it."""
        for ch in text:
            if state is None:
                return None
            index, pos = state
            while True:
                part = self.parts[index]
                moved = part.step(pos, ch)
                if moved is not None:
                    if part.full(moved) and index + 1 < len(self.parts):  # the next character is the next part's
                        state = (index + 1, self.parts[index + 1].start)
                    else:
                        state = (index, moved)
                    break
                if not part.done(pos) or index + 1 == len(self.parts):
                    return None
                index, pos = index + 1, self.parts[index + 1].start
        return state

    def complete(self, state: State) -> bool:
        index, pos = state
        return all(p.done(p.start) for p in self.parts[index + 1 :]) and self.parts[index].done(pos)

    def min_left(self, state: State) -> int:
        index, pos = state
        return self.parts[index].min_left(pos) + self.min_after[index]

    def max_left(self, state: State) -> int:
        """The most characters still to write, with the thinking closed now."""
        index, pos = state
        return self.parts[index].max_left(pos) + self.max_after[index]

    def thinking_freely(self, state: State) -> bool:
        index, pos = state
        return index == self.thinking and not pos[1] and not self.parts[index].done(pos)

    def force_close(self, state: State) -> State:
        index, (k, _) = state
        return (index, (k, True))


# --- the vocabulary ----------------------------------------------------------------------------------------------
class TokenStrings:
    """Every token's text, sorted for prefix search. Byte-level BPE: a token that is part of a multi-byte
    character decodes to U+FFFD, which no template part accepts."""

    def __init__(self, tokenizer: Any, vocab_size: int | None = None) -> None:
        size = max(len(tokenizer), vocab_size or 0)
        ids = list(range(len(tokenizer)))
        texts = tokenizer.batch_decode(
            [[i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        self.text = texts + [""] * (size - len(texts))  # the model's rows past the tokenizer: never allowed
        by_text: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            if t:
                by_text.setdefault(t, []).append(i)
        self.sorted = sorted(by_text)
        self.ids_of = by_text
        # tokens that can complete "</think>" after some part of it: checked one by one in free thinking
        close = THINK_CLOSE
        self.containing_close = [i for text, group in by_text.items() if close in text for i in group]
        self.completing_close = {  # j: tokens that start with the rest of "</think>" after its first j characters
            j: [i for text, group in by_text.items() if text.startswith(close[j:]) for i in group]
            for j in range(1, len(close))
        }
        self.size = size

    def has_prefix(self, prefix: str) -> bool:
        at = bisect.bisect_left(self.sorted, prefix)
        return at < len(self.sorted) and self.sorted[at].startswith(prefix)

    def starting_with(self, prefix: str) -> list[str]:
        at = bisect.bisect_left(self.sorted, prefix)
        end = at
        while end < len(self.sorted) and self.sorted[end].startswith(prefix):
            end += 1
        return self.sorted[at:end]

    def spells(self, text: str) -> bool:
        """Whether single-character tokens can write ``text`` (so the template can always be finished)."""
        return all(ch in self.ids_of for ch in text)


# --- the constraint ----------------------------------------------------------------------------------------------
class AnswerConstraint:
    """Masks one generation's logits so that it ends in ``template``'s answer within ``max_new_tokens``.

    Call :meth:`mask` with the tokens generated so far and the next token's logits (batch 1); it returns the
    logits with every token outside the template at ``-inf``."""

    def __init__(
        self,
        vocabulary: TokenStrings,
        template: AnswerTemplate,
        eos_token_ids: Sequence[int],
        max_new_tokens: int,
        repetition_window: int = 0,
    ) -> None:
        self.vocabulary = vocabulary
        self.machine = TemplateMachine(template)
        self.eos = list(eos_token_ids)
        self.max_new_tokens = max_new_tokens
        self.repetition_window = repetition_window
        self.state: State | None = self.machine.start
        self.seen = 0
        self.forced_close = ""
        """Why the thinking was closed for the model ("" if it closed it, or has not): "budget" or "repetition"."""
        self.restricted_to: tuple[int, ...] | None = None
        """The tokens the last :meth:`mask` allowed, where it allowed only these (None: all but a few)."""

    def cannot_finish(self) -> str:
        """Why this constraint cannot promise a complete answer ("" when it can): every template character must
        be a token of its own, and ``max_new_tokens`` must hold the shortest answer one character per token."""
        if not self.vocabulary.spells(self.machine.alphabet):
            return "the tokenizer has no single-character token for some of the template's characters"
        needed = self.machine.min_left(self.machine.start) + 1
        if self.max_new_tokens < needed:
            return f"max_new_tokens {self.max_new_tokens} is below the {needed} tokens the shortest answer may need"
        return ""

    def _advance(self, tokens: Sequence[int]) -> None:
        for token in tokens[self.seen :]:
            if token in self.eos:
                break
            self.state = self.machine.feed(self.state, self.vocabulary.text[token])
        self.seen = len(tokens)

    def allowed(self, tokens: Sequence[int]) -> tuple[list[int], bool]:
        """(token ids, True): every token but these is allowed; (token ids, False): only these are."""
        self._advance(tokens)
        state = self.state
        if state is None:  # a token outside the template got through (a caller that ignored the mask)
            return self.eos, False
        left = self.max_new_tokens - len(tokens)  # including this one
        if self.machine.complete(state):
            return self.eos, False
        if self.machine.thinking_freely(state):
            if left <= self.machine.max_after_thinking + 1:
                self.forced_close = "budget"
            elif is_repetition(tokens, self.repetition_window):
                self.forced_close = "repetition"
            else:
                banned = list(self.eos)
                for token in self._may_close(state):
                    after = self.machine.feed(state, self.vocabulary.text[token])
                    if after is None or self.machine.min_left(after) + 1 > left - 1:
                        banned.append(token)
                return banned, True
            logger.debug("answer template: closing the thinking (%s) after %d tokens", self.forced_close, len(tokens))
            state = self.state = self.machine.force_close(state)
        return self._continuations(state, left - 1), False

    def _may_close(self, state: State) -> list[int]:
        """The tokens that would complete ``</think>`` from ``state`` (the characters matched so far, and each shorter
        match they fall back to)."""
        thinking, (k, _) = self.machine.parts[state[0]], state[1]
        tokens = list(self.vocabulary.containing_close)
        while k:
            tokens += self.vocabulary.completing_close[k]
            k = thinking.fallback[k - 1]
        return tokens

    def _continuations(self, state: State, left_after: int) -> list[int]:
        """Tokens whose whole text the template accepts from ``state`` and after which the rest still fits: a
        depth-first walk over the template's characters, pruned where no token starts with the text so far."""
        vocabulary, machine = self.vocabulary, self.machine
        found: list[int] = []

        def take(text: str, after: State) -> None:
            if text in vocabulary.ids_of and machine.min_left(after) + 1 <= left_after:
                found.extend(vocabulary.ids_of[text])

        stack: list[tuple[str, State]] = [("", state)]
        while stack:
            prefix, at = stack.pop()
            for ch in machine.alphabet:
                after = machine.feed(at, ch)
                text = prefix + ch
                if after is None or not vocabulary.has_prefix(text):
                    continue
                if machine.thinking_freely(after):  # "<think>" is complete: any text may follow in the same token
                    for longer in vocabulary.starting_with(text):
                        longer_after = machine.feed(after, longer[len(text) :])
                        if longer_after is not None:
                            take(longer, longer_after)
                    continue
                take(text, after)
                stack.append((text, after))
        return found or self.eos

    def mask(self, tokens: Sequence[int], logits: Any) -> Any:
        """``logits`` (1, vocab) with the tokens the template does not allow next at ``-inf``."""
        import torch

        ids, all_but = self.allowed(tokens)
        self.restricted_to = None if all_but else tuple(ids)
        index = torch.tensor(ids, dtype=torch.long, device=logits.device)
        if all_but:
            return logits.index_fill(1, index, -float("inf"))
        out = torch.full_like(logits, -float("inf"))
        out[:, index] = logits[:, index]
        return out


class AnswerTemplateLogitsProcessor:
    """:class:`AnswerConstraint` as a transformers ``LogitsProcessor``, one per row of ``generate``'s batch (the
    grounder's one answer, or GRPO's rollouts: rows of different clips, left-padded to one prompt length, which the
    first call reads off ``input_ids``). ``restricted[row][step]``: the tokens the template left to choose from at
    each step where it allowed only those."""

    def __init__(self, constraints: Sequence[AnswerConstraint]) -> None:
        self.constraints = list(constraints)
        self.prompt_len: int | None = None
        self.restricted: list[dict[int, tuple[int, ...]]] = [{} for _ in self.constraints]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if input_ids.shape[0] != len(self.constraints):
            raise ValueError(f"{input_ids.shape[0]} rows for {len(self.constraints)} answer constraints")
        if self.prompt_len is None:
            self.prompt_len = int(input_ids.shape[1])
        step = int(input_ids.shape[1]) - self.prompt_len
        rows = []
        for i, (constraint, row) in enumerate(zip(self.constraints, input_ids)):
            rows.append(constraint.mask(row[self.prompt_len :].tolist(), scores[i : i + 1]))
            if constraint.restricted_to is not None:
                self.restricted[i][step] = constraint.restricted_to
        return torch.cat(rows)


class RepetitionStop:
    """A transformers stopping criterion: True once the generated tokens end in a degenerate repetition."""

    def __init__(self, prompt_len: int, window: int) -> None:
        self.prompt_len, self.window = prompt_len, window

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = [is_repetition(row[self.prompt_len :].tolist(), self.window) for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
