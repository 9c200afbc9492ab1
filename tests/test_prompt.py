"""`stvgr1_edge.prompt`: the STVG-R1 prompt byte for byte (STVG-R1.md §5) and query normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_all_real_hcstvg_v2_queries_format(fixtures):
    queries = json.loads((fixtures / "hcstvg_v2_queries.json").read_text(encoding="utf-8"))
    assert len(queries) == 2931
    head, tail = STVG_R1_PROMPT.split("[EVENT]")
    for video, query in queries.items():
        prompt = grounding_prompt(query)
        assert prompt.startswith(head) and prompt.endswith(tail), video
        event = prompt[len(head) : len(prompt) - len(tail)]
        assert event == event.lower() == event.strip()
        lowered = query.strip().lower()
        assert event == (lowered[:-1].rstrip() if lowered.endswith(".") else lowered), video
        assert event.count(".") <= query.count(".")
        assert time_only_prompt(query).count(event) == 1


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
