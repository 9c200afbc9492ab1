"""`stvgr1_edge.answer.parse_answer`: STVG-R1.md §6 and the ways real model output goes wrong."""

from __future__ import annotations

import pytest

from stvgr1_edge.answer import GroundingAnswer, parse_answer


def wrap(inner: str, think: str = "The man in red stands up at 12.5 s; he is object 3.") -> str:
    return f"<think>{think}</think>\n<answer>{inner}</answer>"


# --- the contract format and its tolerated variants ------------------------------------------------
def test_reference_format_parses_exactly():
    text = wrap("Target ID: 1, Time range: 12.54 to 17.83")
    a = parse_answer(text, duration_s=20.0, valid_ids=[1, 2])
    assert a == GroundingAnswer(ids=(1,), start_s=12.54, end_s=17.83, parse_ok=True, reason="", warnings=(), raw=text)


@pytest.mark.parametrize(
    "inner, ids",
    [
        ("Target ID: 3, Time range: 1 to 2", (3,)),
        ("Target IDs: 3, 5, Time range: 1 to 2", (3, 5)),
        ("Target ID: 3 and 5, Time range: 1 to 2", (3, 5)),
        ("Target ID: [3], Time range: 1 to 2", (3,)),
        ("Target ID: [3, 5], Time range: 1 to 2", (3, 5)),
        ("Target ID: #3, Time range: 1 to 2", (3,)),
        ("Target ID: ID 3, Time range: 1 to 2", (3,)),
        ("ID 3, Time range: 1 to 2", (3,)),
        ("Object ID: 7, Time range: 1 to 2", (7,)),
        ("target id:3,time range:1 to 2", (3,)),
        ("TARGET ID = 12; TIME RANGE = 1 to 2", (12,)),
        ("Target IDs are 4 & 2 & 4, Time range: 1 to 2", (4, 2)),  # order kept, repeat dropped
        ("Target ID: 3 (the man in red, not person 2), Time range: 1 to 2", (3,)),
        ("Time range: 1 to 2, Target ID: 6", (6,)),
        ("Target ID: 0, Time range: 1 to 2", (0,)),
    ],
)
def test_id_forms(inner, ids):
    a = parse_answer(wrap(inner))
    assert a.parse_ok, a.reason
    assert a.ids == ids
    assert (a.start_s, a.end_s) == (1.0, 2.0)


@pytest.mark.parametrize(
    "inner, start, end",
    [
        ("Target ID: 3, Time range: 12.54 to 17.83", 12.54, 17.83),
        ("Target ID: 3, Time range: 12.5s to 17.8s", 12.5, 17.8),
        ("Target ID: 3, Time range: 12.5 s to 17.8 seconds", 12.5, 17.8),
        ("Target ID: 3, Time range: 12.5-17.8", 12.5, 17.8),
        ("Target ID: 3, Time range: 12.5 - 17.8", 12.5, 17.8),
        ("Target ID: 3, Time range: 12.5 – 17.8", 12.5, 17.8),
        ("Target ID: 3, Time range: 12.5—17.8", 12.5, 17.8),
        ("Target ID: 3, Time range: 12.5 ~ 17.8", 12.5, 17.8),
        ("Target ID: 3, Time range: from 12.5 to 17.8", 12.5, 17.8),
        ("Target ID: 3, Time range: between 12 and 17", 12.0, 17.0),
        ("Target ID: 3, Time range: 12 and 17", 12.0, 17.0),
        ("Target ID: 3, Time range: [12.5, 17.8]", 12.5, 17.8),
        ("Target ID: 3, Time range: [12.54 to 17.83].", 12.54, 17.83),
        ("Target ID: 3, Time range: .5 to 17", 0.5, 17.0),
        ("Target ID: 3, Time range: 00:12.5 to 00:17.8", 12.5, 17.8),
        ("Target ID: 3, Time range: 0:00:12 to 0:01:02.5", 12.0, 62.5),
        ("Target ID: 3, Time range: 1:05 to 1:10", 65.0, 70.0),
        ("Target ID: 3\nTime range: 12.54 to 17.83\n", 12.54, 17.83),
    ],
)
def test_time_forms(inner, start, end):
    a = parse_answer(wrap(inner))
    assert a.parse_ok, a.reason
    assert a.ids == (3,)
    assert (a.start_s, a.end_s) == (start, end)
    assert a.warnings == ()


def test_time_without_label_uses_first_range_with_a_warning():
    a = parse_answer(wrap("Target ID: 3, 12 to 17"))
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((3,), 12.0, 17.0, True)
    assert a.warnings == ("no 'Time range' label: used the first 'a to b' in the answer",)


# --- repairs: swapped, clamped, unknown IDs --------------------------------------------------------
def test_swapped_ends_are_swapped_back_with_a_warning():
    a = parse_answer(wrap("Target ID: 3, Time range: 17.83 to 12.54"), duration_s=20.0)
    assert (a.start_s, a.end_s, a.parse_ok) == (12.54, 17.83, True)
    assert a.warnings == ("start 17.83 s is after end 12.54 s: swapped them",)


def test_out_of_range_times_are_clamped_to_the_video():
    a = parse_answer(wrap("Target ID: 3, Time range: 5 to 31.5"), duration_s=20.0)
    assert (a.start_s, a.end_s, a.parse_ok) == (5.0, 20.0, True)
    assert a.warnings == ("end 31.50 s is after the video ends (20.00 s): clamped",)


def test_negative_start_is_clamped_to_zero_even_without_a_duration():
    a = parse_answer(wrap("Target ID: 3, Time range: -2.5 to 4"))
    assert (a.start_s, a.end_s, a.parse_ok) == (0.0, 4.0, True)
    assert a.warnings == ("start -2.50 s is before the video: clamped to 0",)


def test_negative_numbers_with_hyphen_separator():
    a = parse_answer(wrap("Target ID: 3, Time range: -3--1"), duration_s=10.0)
    assert (a.start_s, a.end_s) == (0.0, 0.0)
    assert "the time range is empty (0.00 to 0.00 s)" in a.warnings


def test_range_wholly_after_the_video_collapses_to_its_end_with_warnings():
    a = parse_answer(wrap("Target ID: 3, Time range: 30 to 40"), duration_s=20.0)
    assert (a.start_s, a.end_s, a.parse_ok) == (20.0, 20.0, True)
    assert a.warnings == (
        "start 30.00 s is after the video ends (20.00 s): clamped",
        "end 40.00 s is after the video ends (20.00 s): clamped",
        "the time range is empty (20.00 to 20.00 s)",
    )


def test_huge_numbers_are_clamped_and_infinite_ones_need_a_duration():
    huge = "9" * 400  # float() of this is inf
    a = parse_answer(wrap(f"Target ID: 3, Time range: 5 to {huge}"), duration_s=20.0)
    assert (a.start_s, a.end_s, a.parse_ok) == (5.0, 20.0, True)
    assert a.warnings == ("end inf s is after the video ends (20.00 s): clamped",)
    b = parse_answer(wrap(f"Target ID: 3, Time range: 5 to {huge}"))
    assert (b.start_s, b.end_s, b.parse_ok) == (None, None, False)
    assert b.reason == "the time range is not a finite number and the video length is unknown"
    c = parse_answer(wrap("Target ID: 3, Time range: 5 to 100000000000000000000"))
    assert (c.start_s, c.end_s, c.parse_ok) == (5.0, 1e20, True)


def test_unknown_id_is_kept_with_a_warning():
    a = parse_answer(wrap("Target IDs: 2, 9, Time range: 1 to 2"), valid_ids={1, 2, 3})
    assert (a.ids, a.parse_ok) == ((2, 9), True)
    assert a.warnings == ("ID 9 is not a tracked object (tracked IDs: 1, 2, 3)",)


def test_huge_id_is_an_unknown_id():
    a = parse_answer(wrap("Target ID: 123456789012345678, Time range: 1 to 2"), valid_ids=range(1, 40))
    assert a.ids == (123456789012345678,)
    assert a.parse_ok
    assert a.warnings == (
        "ID 123456789012345678 is not a tracked object (tracked IDs: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, …)",
    )


def test_absurdly_long_id_is_not_an_id():
    a = parse_answer(wrap("Target ID: " + "7" * 5000 + ", Time range: 1 to 2"))  # int() would refuse > 4300 digits
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((), 1.0, 2.0, False)
    assert a.reason == "the target ID has 5000 digits: not an object ID"


def test_long_garbage_is_parsed_quickly():
    import time

    text = ("<think>" + "Target ID: 1 to " * 20_000 + "12.5 " * 20_000) * 2 + "<answer>" + "9" * 100_000
    t0 = time.perf_counter()
    a = parse_answer(text)
    assert time.perf_counter() - t0 < 2.0
    assert a.parse_ok is False
    many = "<answer>Target IDs: " + ", ".join(str(i) for i in range(1, 50_001)) + ". Time range: 1 to 2</answer>"
    t0 = time.perf_counter()
    b = parse_answer(many)
    assert time.perf_counter() - t0 < 2.0
    assert len(b.ids) == 50_000 and b.ids[-1] == 50_000


# --- time-only mode --------------------------------------------------------------------------------
def test_time_only_needs_no_id_and_reads_none():
    a = parse_answer("<think>...</think><answer>Time range: 3.25 to 7.5</answer>", duration_s=10, time_only=True)
    assert (a.ids, a.start_s, a.end_s, a.parse_ok, a.reason) == ((), 3.25, 7.5, True, "")
    b = parse_answer(wrap("Target ID: 4, Time range: 3 to 7"), time_only=True)
    assert (b.ids, b.start_s, b.end_s, b.parse_ok) == ((), 3.0, 7.0, True)
    c = parse_answer("<answer>3.25 to 7.5</answer>", time_only=True)
    assert (c.start_s, c.end_s, c.parse_ok) == (3.25, 7.5, True)


def test_without_time_only_a_missing_id_fails_but_keeps_the_times():
    a = parse_answer("<answer>Time range: 3.25 to 7.5</answer>")
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((), 3.25, 7.5, False)
    assert a.reason == "no 'Target ID' in the answer"


# --- malformed model output ------------------------------------------------------------------------
def test_no_tags_falls_back_to_the_whole_text_with_a_warning():
    a = parse_answer("Target ID: 4, Time range: 1.5 to 3.5")
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((4,), 1.5, 3.5, True)
    assert a.warnings == ("no <answer> block: read the text outside <think>",)


def test_empty_answer_block():
    a = parse_answer("<think>hmm</think><answer>  \n </answer>")
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((), None, None, False)
    assert a.reason == "the <answer> block is empty"


def test_unclosed_answer_tag_is_read_with_a_warning():
    a = parse_answer("<think>ok</think><answer>Target ID: 2, Time range: 1 to 2")
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((2,), 1.0, 2.0, True)
    assert a.warnings == ("unclosed <answer> tag: read the text after it",)


def test_truncated_answer_fails_with_a_reason():
    a = parse_answer("<think>ok</think><answer>Target ID: 2, Time ra")
    assert (a.ids, a.parse_ok) == ((2,), False)
    assert a.reason == "no 'start to end' times after 'Time': 'ra'"


def test_the_last_of_several_answer_blocks_wins():
    text = wrap("Target ID: 1, Time range: 1 to 2") + "\n<answer>Target ID: 5, Time range: 3 to 4</answer>"
    a = parse_answer(text)
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((5,), 3.0, 4.0, True)
    assert a.warnings == ("2 <answer> blocks: used the last",)


def test_an_empty_last_block_is_not_replaced_by_an_earlier_one():
    a = parse_answer(wrap("Target ID: 1, Time range: 1 to 2") + "<answer></answer>")
    assert (a.ids, a.parse_ok, a.reason) == ((), False, "the <answer> block is empty")


def test_unclosed_block_after_a_complete_one_is_ignored_with_a_warning():
    a = parse_answer(wrap("Target ID: 1, Time range: 1 to 2") + "<answer>Target ID: 5, Time")
    assert (a.ids, a.start_s, a.parse_ok) == ((1,), 1.0, True)
    assert a.warnings == ("an unclosed <answer> after the last complete one was ignored",)


def test_tags_are_case_and_space_insensitive():
    a = parse_answer("<THINK>x</THINK><Answer >Target ID: 2, Time range: 1 to 2</ answer>")
    assert (a.ids, a.start_s, a.end_s, a.parse_ok, a.warnings) == ((2,), 1.0, 2.0, True, ())


def test_decoy_target_id_inside_think_is_ignored():
    think = "Maybe Target ID: 9, Time range: 0.00 to 1.00? No: the man is 3."
    a = parse_answer(wrap("Target ID: 3, Time range: 4 to 6", think=think))
    assert (a.ids, a.start_s, a.end_s) == ((3,), 4.0, 6.0)
    b = parse_answer(f"<think>{think}</think> Target ID: 3, Time range: 4 to 6")
    assert (b.ids, b.start_s, b.end_s, b.parse_ok) == ((3,), 4.0, 6.0, True)


def test_only_a_think_block_is_not_an_answer():
    a = parse_answer("<think>Target ID: 9, Time range: 1 to 2</think>")
    assert (a.ids, a.start_s, a.parse_ok) == ((), None, False)
    assert a.reason == "no <answer> block and no text outside <think>"
    b = parse_answer("<think>Target ID: 9, Time range: 1 to 2 and then the generation was cut")
    assert (b.ids, b.parse_ok) == ((), False)


def test_text_after_a_stray_closing_think_is_the_answer():
    a = parse_answer("Target ID: 9, Time range: 1 to 2 is wrong.</think>Target ID: 4, Time range: 5 to 6")
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((4,), 5.0, 6.0, True)


def test_garbage():
    a = parse_answer("lorem ipsum dolor sit amet")
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((), None, None, False)
    assert a.reason == "no 'Target ID' in the answer; no time range in the answer"
    assert parse_answer("").reason == "no <answer> block and no text outside <think>"
    assert parse_answer(None).parse_ok is False  # type: ignore[arg-type]


def test_template_copied_literally():
    a = parse_answer(wrap("Target ID: [ID], Time range: [start time to end time]"))
    assert a.parse_ok is False
    assert a.reason == (
        "no ID number after 'Target ID': '[ID], Time range: [start time'; "
        "no 'start to end' times after 'Time range': '[start time to end time]'"
    )


@pytest.mark.parametrize("inner", ["Target ID: 3.5, Time range: 1 to 2", "Target ID: -3, Time range: 1 to 2"])
def test_non_integer_ids_are_rejected(inner):
    a = parse_answer(wrap(inner))
    assert (a.ids, a.parse_ok) == ((), False)
    assert a.reason.startswith("the target ID is not a non-negative integer")
    assert (a.start_s, a.end_s) == (1.0, 2.0)


def test_only_one_time():
    a = parse_answer(wrap("Target ID: 3, Time range: 12.54"))
    assert (a.ids, a.start_s, a.parse_ok) == ((3,), None, False)
    assert a.reason == "only one time after 'Time range' ('12.54'): expected 'start to end'"


@pytest.mark.parametrize("times", ["nan to nan", "NaN to 5", "inf to 5", "1e5 to 2e5", "soon to later"])
def test_non_numeric_times_are_not_times(times):
    a = parse_answer(wrap(f"Target ID: 3, Time range: {times}"))
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((3,), None, None, False)
    assert "after 'Time range'" in a.reason


def test_unicode_digits_and_fullwidth_punctuation():
    a = parse_answer(wrap("Target ID：３，Time range：１２.５ to １７.８"))  # full-width, NFKC-normalised
    assert (a.ids, a.start_s, a.end_s, a.parse_ok) == ((3,), 12.5, 17.8, True)
    b = parse_answer(wrap("Target ID: ٣, Time range: ١٢ to ١٧"))  # Arabic-Indic digits
    assert (b.ids, b.start_s, b.end_s, b.parse_ok) == ((3,), 12.0, 17.0, True)
    c = parse_answer(wrap("Target ID: 3, Time range: 12.5 − 17.8"))  # U+2212 minus sign as a dash
    assert (c.start_s, c.end_s) == (12.5, 17.8)


def test_raw_text_is_kept_unchanged_and_to_dict_matches_the_result_json():
    text = wrap("Target ID：３，Time range：１２.５ to １７.８")
    a = parse_answer(text)
    assert a.raw == text
    assert a.to_dict() == {
        "answer_text": text,
        "ids": [3],
        "start_s": 12.5,
        "end_s": 17.8,
        "parse_ok": True,
        "warnings": [],
    }
