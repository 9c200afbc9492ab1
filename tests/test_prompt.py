"""`stvgr1_edge.prompt`: the STVG-R1 prompt byte for byte (STVG-R1.md §5) and query normalisation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stvgr1_edge.answer import parse_answer
from stvgr1_edge.errors import BadInputError
from stvgr1_edge.prompt import STVG_R1_PROMPT, TIME_ONLY_PROMPT, grounding_prompt, normalize_query, time_only_prompt

REFERENCE_PROMPT = Path(__file__).resolve().parent / "fixtures" / "stvg_r1_prompt.txt"
"""STVG-R1.md §5's code block, byte for byte (see fixtures/README.md)."""

# The §5 text, typed out again here line by line, so the test does not depend on the module's own string.
EXPECTED_LINES = [
    "Each object in the video is marked with a red number at its center, representing its object ID. "
    'To accurately pinpoint the event "[EVENT]" in the video:',
    "",
    "1.Determine the precise time period of the event occurs.",
    "",
    "2.Identify which object ID is corresponding to the described event.",
    "",
    "Output your thought process within the <think> </think> tags, including both a temporal analysis "
    '(e.g., specific timestamps "xx.xx" or time ranges "xx.xx to xx.xx") and a spatial analysis '
    '(e.g., object ID "xx").',
    "",
    "Then, provide the start and end times (in seconds, precise to two decimal places), and object ID in the "
    'format "Target ID: [ID], Time range: [start time to end time]" within the <answer> </answer> tags. '
    'For example: "Target ID: 1, Time range: 12.54 to 17.83".',
]


def test_template_matches_the_reference_document_exactly():
    assert STVG_R1_PROMPT.encode("utf-8") == REFERENCE_PROMPT.read_bytes()


def test_template_lines_and_newlines():
    assert STVG_R1_PROMPT == "\n".join(EXPECTED_LINES)
    assert STVG_R1_PROMPT.count("\n") == 8
    assert STVG_R1_PROMPT.count("\n\n") == 4
    assert not STVG_R1_PROMPT.startswith((" ", "\n")) and not STVG_R1_PROMPT.endswith((" ", "\n"))
    assert STVG_R1_PROMPT.count("[EVENT]") == 1
    assert STVG_R1_PROMPT.isascii()


def test_grounding_prompt_for_a_real_query_exactly():
    prompt = grounding_prompt("The man in blue clothes stands up and raises his hand.")
    expected = "\n".join(EXPECTED_LINES).replace("[EVENT]", "the man in blue clothes stands up and raises his hand")
    assert prompt == expected
    assert prompt.splitlines()[0].endswith(
        'To accurately pinpoint the event "the man in blue clothes stands up and raises his hand" in the video:'
    )


def test_time_only_prompt_exactly():
    assert time_only_prompt("A Dog jumps.") == (
        'To accurately pinpoint the event "a dog jumps" in the video, determine the precise time period of the '
        "event occurs.\n\n"
        "Output your thought process within the <think> </think> tags, including a temporal analysis "
        '(e.g., specific timestamps "xx.xx" or time ranges "xx.xx to xx.xx").\n\n'
        "Then, provide the start and end times (in seconds, precise to two decimal places) in the format "
        '"Time range: [start time to end time]" within the <answer> </answer> tags. '
        'For example: "Time range: 12.54 to 17.83".'
    )
    assert "ID" not in TIME_ONLY_PROMPT


# --- normalisation --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query, normalized",
    [
        ("The man sits down.", "the man sits down"),
        ("  The man sits down.  ", "the man sits down"),
        ("The woman speaks to the standing woman .", "the woman speaks to the standing woman"),  # HCSTVG spacing
        ("He stops..", "he stops."),  # only one final "." is removed
        ("He asks: why?", "he asks: why?"),
        ("NO PERIOD", "no period"),
        ('She says "hi" to [EVENT] 3.', 'she says "hi" to [event] 3'),
        ("Der Mann öffnet die TÜR.", "der mann öffnet die tür"),
        ("ΈΝΑΣ ΆΝΤΡΑΣ ΚΆΘΕΤΑΙ.", "ένας άντρας κάθεται"),
        ("穿蓝衣服的男人站起来。", "穿蓝衣服的男人站起来。"),  # the ideographic full stop is not ".", kept
        ("The man 🙂 waves.", "the man 🙂 waves"),
    ],
)
def test_normalize_query(query, normalized):
    assert normalize_query(query) == normalized


@pytest.mark.parametrize("query", ["", "   ", "\n\t", None, ".", " . "])
def test_empty_queries_are_bad_input(query):
    with pytest.raises(BadInputError, match="query is empty"):
        normalize_query(query)
    with pytest.raises(BadInputError):
        grounding_prompt(query)


def test_normalize_false_inserts_the_query_verbatim():
    assert 'the event "The Man." in the video' in grounding_prompt("The Man.", normalize=False)


def test_non_ascii_query_is_inserted_once_and_intact():
    prompt = grounding_prompt("Die Frau mit dem Hut öffnet die Tür.")
    assert prompt == STVG_R1_PROMPT.replace("[EVENT]", "die frau mit dem hut öffnet die tür")
    assert prompt.count("die frau mit dem hut öffnet die tür") == 1
    assert prompt.encode("utf-8").decode("utf-8") == prompt


def test_real_hcstvg_v2_queries_format(fixtures):
    """Real HCSTVG-v2 queries (a sample cut with its rare forms kept, see fixtures/README.md) go into the prompt
    lower-cased with one final "." removed, and nothing else changed."""
    queries = json.loads((fixtures / "hcstvg_v2_queries_sample.json").read_text(encoding="utf-8"))
    assert len(queries) == 85
    # the forms normalisation has to handle are in the sample
    assert sum(not q.endswith(".") for q in queries.values()) >= 5
    assert sum(q.endswith(" .") for q in queries.values()) >= 5  # HCSTVG's space before the final "."
    assert sum(q.rstrip(". ").count(".") >= 1 for q in queries.values()) >= 5  # "." inside, kept
    assert sum(q.endswith("..") or q.endswith(". .") for q in queries.values()) >= 2  # only the last "." goes
    assert sum(q[:1].islower() for q in queries.values()) >= 5
    head, tail = STVG_R1_PROMPT.split("[EVENT]")
    for video, query in queries.items():
        prompt = grounding_prompt(query)
        assert prompt.startswith(head) and prompt.endswith(tail), video
        event = prompt[len(head) : len(prompt) - len(tail)]
        assert event == event.lower() == event.strip()
        lowered = query.strip().lower()
        assert event == (lowered[:-1].rstrip() if lowered.endswith(".") else lowered), video
        assert event.count(".") == query.count(".") - query.endswith("."), video
        assert time_only_prompt(query).count(event) == 1


def test_answer_the_prompt_asks_for_is_read_as_the_reference_reads_it(fixtures):
    """The prompt's own example and reference-format completions (``stvg_r1_answer.json``: STVG-R1.md §5's
    example, §6's patterns, §7's format pattern) give the same ID and times through ``parse_answer`` as
    through the reference's patterns, and the completions the format reward accepts are exactly those marked."""
    reference = json.loads((fixtures / "stvg_r1_answer.json").read_text(encoding="utf-8"))
    assert f'For example: "{reference["example"]}".' in REFERENCE_PROMPT.read_text(encoding="utf-8")
    id_pattern = re.compile(reference["id_pattern"], re.IGNORECASE)
    time_pattern = re.compile(reference["time_pattern"], re.IGNORECASE)
    format_pattern = re.compile(reference["format_pattern"], re.DOTALL)

    def read_as_reference(text: str) -> tuple[int, float, float]:
        block = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)[-1]  # the last answer block
        times = time_pattern.search(block)
        return int(id_pattern.search(block).group(1)), float(times.group(1)), float(times.group(2))

    example = reference["example_values"]
    assert read_as_reference(f"<answer>{reference['example']}</answer>") == (
        example["id"],
        example["start_s"],
        example["end_s"],
    )
    assert len(reference["completions"]) >= 5
    for case in reference["completions"]:
        text, expected = case["text"], (case["id"], case["start_s"], case["end_s"])
        assert read_as_reference(text) == expected, text
        answer = parse_answer(text, duration_s=20.0)
        assert (answer.ids, answer.start_s, answer.end_s, answer.parse_ok) == ((case["id"],), *expected[1:], True)
        assert bool(format_pattern.fullmatch(text)) == case["format_ok"], text
    assert {case["format_ok"] for case in reference["completions"]} == {True, False}


def test_multi_object_prompt_changes_only_the_id_question_and_format():
    from stvgr1_edge.prompt import grounding_prompt, multi_object_prompt

    single, multi = grounding_prompt("the two men shake hands."), multi_object_prompt("the two men shake hands.")
    assert multi.count("object IDs") == 2 and "Target ID: 1, 4, Time range" in multi
    # everything else is the training prompt, untouched
    assert single.split("2.Identify")[0] == multi.split("2.Identify")[0]
    assert (
        single.split("Output your thought")[1].split("Then, provide")[0]
        == multi.split("Output your thought")[1].split("Then, provide")[0]
    )
