"""Property-based tests (hypothesis): the answer parser and the annotation/prediction readers take any input without
an unexpected exception, and what they accept obeys their invariants."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from stvgr1_edge.answer import parse_answer
from stvgr1_edge.dataset import load_annotations
from stvgr1_edge.errors import StvgError
from stvgr1_edge.metrics import parse_prediction

# text near the answer grammar, so that many draws get far into the parser
PIECES = st.sampled_from(
    [
        "<answer>",
        "</answer>",
        "<think>",
        "</think>",
        "Target ID:",
        "Time range:",
        " to ",
        " and ",
        ", ",
        "-",
        ".",
        "s",
        "ID",
        "1",
        "2",
        "17",
        "12.54",
        "3.5",
        "0",
        "-4",
        "1e9",
        "nan",
        "  ",
        "\n",
        "target id",
        "[",
        "]",
    ]
)
ANSWERS = st.one_of(st.text(max_size=200), st.lists(PIECES, max_size=30).map("".join))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(ANSWERS, st.floats(min_value=0.5, max_value=600), st.booleans())
def test_parse_answer_never_raises_and_its_answers_are_valid(text, duration, time_only):
    answer = parse_answer(text, duration_s=duration, valid_ids=None, time_only=time_only)
    assert answer.raw == text
    if answer.has_time_range:
        assert answer.start_s is not None and answer.end_s is not None
        assert 0.0 <= answer.start_s <= answer.end_s <= duration
    if answer.parse_ok:
        assert answer.has_time_range and (time_only or len(answer.ids) > 0)
        assert all(isinstance(i, int) and i >= 0 for i in answer.ids)
    else:
        assert answer.reason


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_the_prediction_reader_accepts_or_refuses_in_one_line(obj):
    try:
        pred = parse_prediction(obj, "pred.json: video 'v'")
    except StvgError as exc:
        assert "\n" not in str(exc)
        return
    if pred.start_s is not None and pred.end_s is not None:
        assert pred.start_s <= pred.end_s


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), JSON, max_size=3) | JSON)
def test_the_annotation_reader_accepts_or_refuses_in_one_line(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("ann") / "annotations.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    try:
        samples = load_annotations(path)
    except StvgError as exc:
        assert "\n" not in str(exc)
        return
    for sample in samples:
        if sample.has_ground_truth:
            assert sample.st_frame is not None and sample.ed_frame is not None
            assert 0 <= sample.st_frame <= sample.ed_frame


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.data(),
)
def test_crop_rle_equals_the_frame_sized_mask_rle(height, width, data):
    import numpy as np

    from stvgr1_edge.masks import crop_to_rle, mask_to_rle

    crop_h, crop_w = data.draw(st.integers(0, height)), data.draw(st.integers(0, width))
    y0, x0 = data.draw(st.integers(0, height - crop_h)), data.draw(st.integers(0, width - crop_w))
    bits = data.draw(st.lists(st.booleans(), min_size=crop_h * crop_w, max_size=crop_h * crop_w))
    crop = np.array(bits, bool).reshape(crop_h, crop_w)
    frame = np.zeros((height, width), bool)
    frame[y0 : y0 + crop_h, x0 : x0 + crop_w] = crop
    assert crop_to_rle(crop, x0, y0, height, width) == mask_to_rle(frame)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_hsv_bins_table_gives_the_per_pixel_formula(seed):
    import cv2
    import numpy as np

    from stvgr1_edge.tracking.observations import HIST_BINS, hsv_bins

    image = np.random.default_rng(seed).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int64)
    hb, sb, vb = HIST_BINS
    h = np.minimum(hsv[..., 0] * hb // 180, hb - 1)
    expected = (h * sb + hsv[..., 1] * sb // 256) * vb + hsv[..., 2] * vb // 256
    assert np.array_equal(hsv_bins(image), expected)
