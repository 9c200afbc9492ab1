"""The prompt text the STVG-R1 checkpoint was trained on (`STVG-R1.md` §5), byte for byte.

Training lower-cased the query and removed a final "." — :func:`normalize_query` does the same.
"""

from __future__ import annotations

from .errors import BadInputError

STVG_R1_PROMPT = (
    "Each object in the video is marked with a red number at its center, representing its object ID. "
    'To accurately pinpoint the event "[EVENT]" in the video:\n\n'
    "1.Determine the precise time period of the event occurs.\n\n"
    "2.Identify which object ID is corresponding to the described event.\n\n"
    "Output your thought process within the <think> </think> tags, including both a temporal analysis "
    '(e.g., specific timestamps "xx.xx" or time ranges "xx.xx to xx.xx") and a spatial analysis '
    '(e.g., object ID "xx").\n\n'
    "Then, provide the start and end times (in seconds, precise to two decimal places), and object ID in the "
    'format "Target ID: [ID], Time range: [start time to end time]" within the <answer> </answer> tags. '
    'For example: "Target ID: 1, Time range: 12.54 to 17.83".'
)

# Temporal-only grounding (no markers needed): the same answer discipline without the ID question.
# Not part of the released checkpoint's training prompt; used by `--time-only`.
TIME_ONLY_PROMPT = (
    'To accurately pinpoint the event "[EVENT]" in the video, determine the precise time period of the '
    "event occurs.\n\n"
    "Output your thought process within the <think> </think> tags, including a temporal analysis "
    '(e.g., specific timestamps "xx.xx" or time ranges "xx.xx to xx.xx").\n\n'
    "Then, provide the start and end times (in seconds, precise to two decimal places) in the format "
    '"Time range: [start time to end time]" within the <answer> </answer> tags. '
    'For example: "Time range: 12.54 to 17.83".'
)


# Several targets ("the two men shake hands"): the same prompt, asking for every involved ID. Not part of the
# released checkpoint's training; used by `--multi`. The answer parser reads "Target ID: 3, 5".
MULTI_OBJECT_PROMPT = (
    STVG_R1_PROMPT.replace(
        "2.Identify which object ID is corresponding to the described event.",
        "2.Identify which object IDs are corresponding to the described event (there may be more than one).",
    )
    .replace(
        'object ID in the format "Target ID: [ID], Time range: [start time to end time]"',
        'object IDs in the format "Target ID: [ID, ID, ...], Time range: [start time to end time]"',
    )
    .replace(
        'For example: "Target ID: 1, Time range: 12.54 to 17.83".',
        'For example: "Target ID: 1, 4, Time range: 12.54 to 17.83".',
    )
)


def normalize_query(query: str) -> str:
    """As in training: strip, lower-case, drop one final '.'. Empty queries are a user error."""
    q = "" if query is None else str(query).strip().lower()
    if q.endswith("."):
        q = q[:-1].rstrip()
    if not q:
        raise BadInputError('the query is empty: describe the target and its action, e.g. "the man in blue sits down"')
    return q


def grounding_prompt(query: str, normalize: bool = True) -> str:
    """The STVG-R1 prompt for ``query`` (ID + time range)."""
    return STVG_R1_PROMPT.replace("[EVENT]", normalize_query(query) if normalize else query)


def time_only_prompt(query: str, normalize: bool = True) -> str:
    """Prompt for temporal grounding only (``--time-only``)."""
    return TIME_ONLY_PROMPT.replace("[EVENT]", normalize_query(query) if normalize else query)


def multi_object_prompt(query: str, normalize: bool = True) -> str:
    """Prompt asking for every object ID involved in the event (``--multi``)."""
    return MULTI_OBJECT_PROMPT.replace("[EVENT]", normalize_query(query) if normalize else query)
