"""Reading the VLM's answer — `STVG-R1.md` §6 — tolerantly, and saying what could not be read.

The checkpoint answers ``<think>…</think><answer>Target ID: 3, Time range: 12.54 to 17.83</answer>``.
:func:`parse_answer` follows the reference (the **last** complete ``<answer>`` block, case-insensitive)
and goes further where models drift:

* IDs: ``Target ID: 3``, ``Target IDs: 3, 5``, ``3 and 5``, ``[3]``, ``#3``, ``ID 3``, ``Object ID: 3``.
  An ID must be a non-negative integer written in digits (``3.5`` or ``-3`` is not an ID).
* Times: ``12.54 to 17.83``, ``12.5s to 17.8s``, ``12.5-17.8``, ``12.5 – 17.8``, ``from 12.5 to 17.8``,
  ``between 12 and 17``, ``[12.5, 17.8]``, and clock forms ``00:12.5`` (m:ss) / ``0:00:12.5`` (h:mm:ss).
  Scientific notation, ``nan`` and ``inf`` are not times. Without a ``Time range`` label, the first
  ``a to b`` pair in the answer is used (with a warning).
* Unicode: text is NFKC-normalised (full-width digits and colons become ASCII), and any Unicode decimal
  digit is read as its value.

Decisions (documented, tested):

* Swapped ends are swapped back; times outside ``[0, duration_s]`` are clamped; both with a warning.
* An ID not in ``valid_ids`` is **kept** (the answer records what the model said) with a warning; the
  tube builder finds no boxes for it, or repairs it when asked (`STVG-R1.md` §6 ID repair).
* No ``<answer>`` block: an unclosed trailing ``<answer>`` (a truncated generation) is read, else the
  text outside ``<think>`` blocks — a "Target ID" inside the model's thinking is never taken as the answer.
* ``parse_ok`` is True only when everything asked for was read (a time range, and unless ``time_only``
  at least one ID). Whatever *was* read is still filled in, so a caller can score the time range of an
  answer whose ID was unreadable; ``reason`` says what was missing.
* In ``time_only`` mode IDs are not read at all (``ids == ()``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Collection

MAX_ID_DIGITS = 18
"""Longer digit runs are not object IDs (and would not fit a JSON consumer's int64)."""

# --- answer blocks ------------------------------------------------------------------------------
_OPEN = r"<\s*answer\s*>"
_CLOSE = r"<\s*/\s*answer\s*>"
_ANSWER_BLOCK = re.compile(_OPEN + r"(.*?)" + _CLOSE, re.IGNORECASE | re.DOTALL)
_ANSWER_OPEN = re.compile(_OPEN, re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<\s*think\s*>.*?(?:<\s*/\s*think\s*>|$)", re.IGNORECASE | re.DOTALL)
_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)

# --- IDs ------------------------------------------------------------------------------------------
# Labels, most specific first; the ID list is read right after the first label found.
_ID_LABELS = (
    re.compile(r"\btarget\s*(?:object\s*)?ids?\b", re.IGNORECASE),
    re.compile(r"\bobject\s*ids?\b", re.IGNORECASE),
    re.compile(r"\btarget\b", re.IGNORECASE),
    re.compile(r"\bids?\b", re.IGNORECASE),
)
_ID_LABEL_TAIL = re.compile(r"\s*(?:[:=]|\bis\b|\bare\b)?\s*", re.IGNORECASE)
# One ID: optional "#" or "ID"/"object" prefix, digits not part of a decimal or a longer word.
# An ID is never the start of a time range ("3 to 5", "3-5", "3s").
_ID_ITEM = re.compile(
    r"(?:#\s*|(?:object\s*)?ids?\s*[:#]?\s*)?(\d+)(?![\d.]*\d)(?!\w)"
    r"(?!\s*(?:to|until|till|through)\b|\s*[-–—−~]\s*\.?\d)",
    re.IGNORECASE,
)
_ID_SEPARATOR = re.compile(r"(?:\s|[,;/&+()\[\]]|\band\b|\bor\b)*", re.IGNORECASE)
_ID_LIST_OPEN = re.compile(r"[\s\[(]*")
_NOT_AN_ID = re.compile(r"[\[(#\s]*(-\s*\d|\d+\.\d)")

# --- times ----------------------------------------------------------------------------------------
_TIME_LABEL = re.compile(r"\btime\s*(?:range|span|period|interval|window|stamps?)?\b\s*(?:[:=]|\bis\b)?", re.IGNORECASE)
_NUMBER = r"(?:\d+:)?(?:\d+:)?\d+(?:\.\d+)?|\.\d+"
_UNIT = r"(?:\s*(?:seconds?|secs?|s)\b)?"
_TIME = rf"(?<![\w.])-?(?:{_NUMBER}){_UNIT}(?![\w:])"
_RANGE_WITH_COMMA = re.compile(
    rf"(?P<a>{_TIME})\s*(?:to|and|until|till|through|[-–—−~,])\s*(?P<b>{_TIME})", re.IGNORECASE
)
_RANGE = re.compile(rf"(?P<a>{_TIME})\s*(?:to|and|until|till|through|[-–—−~])\s*(?P<b>{_TIME})", re.IGNORECASE)
_UNIT_SUFFIX = re.compile(r"\s*(?:seconds?|secs?|s)$", re.IGNORECASE)


@dataclass(frozen=True)
class GroundingAnswer:
    """What the VLM answered: target ID(s) and a time range in seconds from the first frame.

    ``start_s``/``end_s`` are None when no time range was read; ``ids`` is empty when no ID was read
    (or in time-only mode). ``parse_ok`` says everything asked for was read; otherwise ``reason`` says
    what was missing. ``warnings`` list every repair made (swapped, clamped, unknown ID, no tags, …);
    ``raw`` is the model's text unchanged.
    """

    ids: tuple[int, ...]
    start_s: float | None
    end_s: float | None
    parse_ok: bool
    reason: str = ""
    warnings: tuple[str, ...] = ()
    raw: str = ""

    @property
    def has_time_range(self) -> bool:
        return self.start_s is not None and self.end_s is not None

    def to_dict(self) -> dict:
        """The answer part of the result JSON's per-query object (ARCHITECTURE.md)."""
        return {
            "answer_text": self.raw,
            "ids": list(self.ids),
            "start_s": self.start_s,
            "end_s": self.end_s,
            "parse_ok": self.parse_ok,
            "warnings": list(self.warnings),
        }


def _always_match(pattern: "re.Pattern[str]", text: str, pos: int) -> int:
    """End of ``pattern`` matched at ``pos``; for the patterns that may match the empty string, so always match."""
    match = pattern.match(text, pos)
    assert match is not None
    return match.end()


def parse_answer(
    text: str,
    duration_s: float | None = None,
    valid_ids: Collection[int] | None = None,
    time_only: bool = False,
) -> GroundingAnswer:
    """Parse the model's text into a :class:`GroundingAnswer` (never raises on model output).

    ``duration_s``: the video length; times are clamped into ``[0, duration_s]``. ``valid_ids``: the
    tracked IDs; others are kept but warned about. ``time_only``: read the time range only.
    """
    raw = "" if text is None else str(text)
    warnings: list[str] = []
    problems: list[str] = []

    body, in_tags = _answer_body(unicodedata.normalize("NFKC", raw), warnings)
    if not body.strip():
        problems.append("the <answer> block is empty" if in_tags else "no <answer> block and no text outside <think>")
        return GroundingAnswer((), None, None, False, "; ".join(problems), tuple(warnings), raw)

    ids: tuple[int, ...] = ()
    id_span: tuple[int, int] | None = None
    if not time_only:
        ids, id_span, id_problem = _read_ids(body)
        if id_problem:
            problems.append(id_problem)
        elif valid_ids is not None:
            known = {int(i) for i in valid_ids}
            for i in ids:
                if i not in known:
                    warnings.append(f"ID {i} is not a tracked object (tracked IDs: {_id_summary(known)})")

    times, time_problem = _read_time_range(body, id_span, warnings)
    start_s = end_s = None
    if time_problem:
        problems.append(time_problem)
    else:
        start_s, end_s = _validate_times(times[0], times[1], duration_s, warnings)
        if start_s is None:
            problems.append("the time range is not a finite number and the video length is unknown")

    return GroundingAnswer(ids, start_s, end_s, not problems, "; ".join(problems), tuple(warnings), raw)


# --- steps ----------------------------------------------------------------------------------------
def _answer_body(text: str, warnings: list[str]) -> tuple[str, bool]:
    """(text of the last complete <answer> block, True), or the best fallback (with a warning) and
    whether it came from an <answer> tag."""
    blocks = list(_ANSWER_BLOCK.finditer(text))
    if blocks:
        if len(blocks) > 1:
            warnings.append(f"{len(blocks)} <answer> blocks: used the last")
        body = blocks[-1].group(1)
        nested = list(_ANSWER_OPEN.finditer(body))
        if nested:  # "<answer> a <answer> b </answer>": the innermost opening tag starts the answer
            body = body[nested[-1].end() :]
        if _ANSWER_OPEN.search(text, blocks[-1].end()):
            warnings.append("an unclosed <answer> after the last complete one was ignored")
        return body, True
    opens = list(_ANSWER_OPEN.finditer(text))
    if opens:
        warnings.append("unclosed <answer> tag: read the text after it")
        return text[opens[-1].end() :], True
    warnings.append("no <answer> block: read the text outside <think>")
    outside = _THINK_BLOCK.sub(" ", text)
    closes = list(_THINK_CLOSE.finditer(outside))  # "<think>" pre-filled by the chat template
    return (outside[closes[-1].end() :] if closes else outside), False


def _read_ids(body: str) -> tuple[tuple[int, ...], tuple[int, int] | None, str]:
    """IDs after the first ID label: (ids, span of the label + list in ``body``, problem or "")."""
    label = None
    for pattern in _ID_LABELS:
        label = pattern.search(body)
        if label:
            break
    if label is None:
        return (), None, "no 'Target ID' in the answer"
    pos = _always_match(_ID_LABEL_TAIL, body, label.end())
    pos = _always_match(_ID_LIST_OPEN, body, pos)
    ids: list[int] = []
    seen: set[int] = set()
    while True:
        item = _ID_ITEM.match(body, pos)
        if item is None:
            break
        digits = item.group(1)
        if len(digits) > MAX_ID_DIGITS:
            return (), None, f"the target ID has {len(digits)} digits: not an object ID"
        value = int(digits)
        if value not in seen:
            seen.add(value)
            ids.append(value)
        pos = item.end()
        after = _always_match(_ID_SEPARATOR, body, pos)
        if _ID_ITEM.match(body, after) is None:
            break
        pos = after
    if not ids:
        after_label = _always_match(_ID_LABEL_TAIL, body, label.end())
        shown = body[after_label : after_label + 30].strip()
        if _NOT_AN_ID.match(body, after_label):
            return (), None, f"the target ID is not a non-negative integer: {shown!r}"
        return (), None, f"no ID number after '{label.group(0)}': {shown!r}"
    return tuple(ids), (label.start(), pos), ""


def _read_time_range(body: str, id_span: tuple[int, int] | None, warnings: list[str]):
    """((start, end) as floats, problem or "")."""
    label = _TIME_LABEL.search(body)
    if label is not None:
        segment = body[label.end() :]
        match = _RANGE_WITH_COMMA.search(segment)
        if match is None:
            name = re.sub(r"[\s:=]+$", "", label.group(0))
            found = _single_time(segment)
            if found:
                return None, f"only one time after '{name}' ({found!r}): expected 'start to end'"
            return None, f"no 'start to end' times after '{name}': {segment.strip()[:40]!r}"
    else:
        rest = body if id_span is None else body[: id_span[0]] + " " * (id_span[1] - id_span[0]) + body[id_span[1] :]
        match = _RANGE.search(rest)
        if match is None:
            return None, "no time range in the answer"
        warnings.append("no 'Time range' label: used the first 'a to b' in the answer")
    return (_seconds(match.group("a")), _seconds(match.group("b"))), ""


def _single_time(segment: str) -> str:
    m = re.search(_TIME, segment, re.IGNORECASE)
    return m.group(0) if m else ""


def _seconds(token: str) -> float:
    """'12.5', '12.5s', '-3', '01:02.5', '1:00:02' → seconds (may be huge or infinite)."""
    token = _UNIT_SUFFIX.sub("", token.strip())
    sign = -1.0 if token.startswith("-") else 1.0
    parts = token.lstrip("-").split(":")
    value = 0.0
    for part in parts:  # h:mm:ss / m:ss / s
        value = value * 60.0 + float(part)
    return sign * value


def _validate_times(
    start: float, end: float, duration_s: float | None, warnings: list[str]
) -> tuple[float | None, float | None]:
    """Swap reversed ends, clamp into [0, duration_s]; (None, None) if a time is infinite and the
    video length is unknown."""
    if start > end:
        warnings.append(f"start {_fmt(start)} s is after end {_fmt(end)} s: swapped them")
        start, end = end, start
    upper = math.inf if duration_s is None else float(duration_s)
    clamped = []
    for name, value in (("start", start), ("end", end)):
        if value < 0:
            warnings.append(f"{name} {_fmt(value)} s is before the video: clamped to 0")
            value = 0.0
        elif value > upper:
            warnings.append(f"{name} {_fmt(value)} s is after the video ends ({_fmt(upper)} s): clamped")
            value = upper
        if not math.isfinite(value):
            return None, None
        clamped.append(float(value))
    start, end = clamped
    if start == end:
        warnings.append(f"the time range is empty ({_fmt(start)} to {_fmt(end)} s)")
    return start, end


def _fmt(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) and abs(x) < 1e9 else f"{x:.3g}"


def _id_summary(ids: set[int]) -> str:
    ordered = sorted(ids)
    if not ordered:
        return "none"
    if len(ordered) > 12:
        return ", ".join(map(str, ordered[:12])) + ", …"
    return ", ".join(map(str, ordered))
