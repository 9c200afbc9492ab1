"""STVG-R1 §3 ID markers: anchors, style, the 1/3 area filter and pixel-exact drawing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stvgr1_edge.markers import (
    MARKER_COLOR_RGB,
    as_mask,
    box_to_mask,
    draw_id_markers,
    markable_objects,
    marker_anchor,
    marker_style,
)
from stvgr1_edge.masks import mask_to_rle


def _rect(h, w, y1, y2, x1, x2):
    """Mask with rows y1..y2 and columns x1..x2 set (inclusive)."""
    m = np.zeros((h, w), bool)
    m[y1 : y2 + 1, x1 : x2 + 1] = True
    return m


def _drawn_one(height: int, width: int) -> np.ndarray:
    """ID 1 drawn by draw_id_markers on a black frame of this size: the red channel as ink in [0, 1]."""
    box = [width // 4, height // 4, 3 * width // 4, 3 * height // 4]
    drawn = draw_id_markers(np.zeros((height, width, 3), np.uint8), [box], [1])
    assert not drawn[..., 1:].any()  # pure red on black
    return drawn[..., 0] / 255.0


@pytest.mark.parametrize(
    "long_side, scale, thickness",
    [
        (336, 20 / 30, 2),
        (640, (20 / 30) * 640 / 336, 2),
        (800, (20 / 30) * 800 / 336, 3),
        (1280, (20 / 30) * 1280 / 336, 5),
        (1920, (20 / 30) * 1920 / 336, 7),
    ],
)
def test_marker_style_scale_and_thickness(long_side, scale, thickness):
    """§3's style, and the digits drawn with it: a Hershey simplex "1" is 21 font units tall, a stroke of
    ``thickness`` pixels with round ends and an anti-aliased rim; its lower half is the vertical stem alone, so
    the ink across one row of it is the stroke width (plus the rim)."""
    for height, width in ((long_side * 3 // 4, long_side), (long_side, long_side // 2)):  # landscape, portrait
        assert marker_style(height, width) == (pytest.approx(scale, abs=1e-12), thickness)
        ink = _drawn_one(height, width)
        rows = np.nonzero(ink.any(axis=1))[0]
        glyph_height = rows[-1] - rows[0] + 1
        low, high = 21 * scale + thickness, 21 * scale + thickness + 5
        assert low <= glyph_height <= high, f"{height}x{width}: a {glyph_height}-px digit, not {low:.1f}..{high:.1f}"
        stem = ink[rows[0] + glyph_height // 2 : rows[-1] - glyph_height // 4].sum(axis=1)
        assert len(stem) >= 3
        width_ok = (stem >= thickness + 1).all() and (stem <= thickness + 3).all()
        assert width_ok, f"{height}x{width}: stem {stem.min():.2f}..{stem.max():.2f} px, thickness {thickness}"


def test_drawn_markers_equal_the_recorded_opencv4_hershey_pixels(fixtures):
    """The checkpoint saw OpenCV 4's Hershey stroke digits. ``markers_opencv4_hershey.npz`` holds the reference's
    drawing of filled boxes' IDs (putText on the BGR frame, (0, 0, 255), LINE_AA, §3's scale and thickness, at
    §3's anchor) at five frame sizes, rendered with OpenCV 4 (fixtures/README.md): draw_id_markers must give
    exactly those pixels."""
    reference = np.load(fixtures / "markers_opencv4_hershey.npz")
    cases = sorted({name.split("_")[0] for name in reference.files})
    assert len(cases) == 5
    for case in cases:
        height, width = reference[f"{case}_frame"].tolist()
        objects = reference[f"{case}_objects"].tolist()
        drawn = draw_id_markers(
            np.zeros((height, width, 3), np.uint8), [box for _, *box in objects], [obj_id for obj_id, *_ in objects]
        )
        red, (y0, x0) = reference[f"{case}_red"], reference[f"{case}_origin"].tolist()
        expected = np.zeros_like(drawn)
        expected[y0 : y0 + red.shape[0], x0 : x0 + red.shape[1], 0] = red
        differing = int((drawn != expected).any(axis=-1).sum())
        assert differing == 0, f"{case} ({height}x{width}): {differing} pixels differ from OpenCV 4's Hershey digits"


@pytest.mark.parametrize(
    "height, width, scale, thickness",
    [(252, 336, 20 / 30, 2), (720, 1280, 20 / 30 * 1280 / 336, 5), (1920, 1080, 20 / 30 * 1920 / 336, 7)],
)
def test_drawn_digits_have_the_specified_size_and_stroke(height, width, scale, thickness):
    """The pixels draw_id_markers writes are exactly putText's with the §3 style for that frame size (the values
    worked out by hand above), and the glyphs grow with the frame's long side."""
    frame = np.zeros((height, width, 3), np.uint8)
    box = [width // 4, height // 4, 3 * width // 4, 3 * height // 4]
    drawn = draw_id_markers(frame, [box], [48])
    expected = frame.copy()
    cv2.putText(
        expected,
        "48",
        marker_anchor(box_to_mask(box, height, width)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 0, 0),
        thickness,
        cv2.LINE_AA,
    )
    assert np.array_equal(drawn, expected)


def test_drawn_digits_grow_with_the_long_side_not_the_short_one():
    def glyph_height(height, width):
        box = [width // 4, height // 4, 3 * width // 4, 3 * height // 4]
        ys, _ = np.nonzero(draw_id_markers(np.zeros((height, width, 3), np.uint8), [box], [48])[..., 0])
        return ys.max() - ys.min() + 1

    small, large = glyph_height(252, 336), glyph_height(720, 1280)
    assert large / small == pytest.approx(1280 / 336, rel=0.15)
    assert glyph_height(1280, 720) == pytest.approx(large, abs=2)  # portrait: the same long side, the same digits


def test_marker_style_values_by_hand():
    # 1280: 0.6667 * 3.8095 = 2.5397 -> int(5.079) = 5; 1920: 3.8095 -> int(7.619) = 7
    assert marker_style(720, 1280)[0] == pytest.approx(2.5396825, abs=1e-6)
    assert marker_style(1080, 1920)[0] == pytest.approx(3.8095238, abs=1e-6)


def test_anchor_rectangle_uses_int_of_row_mean():
    m = _rect(12, 12, 2, 7, 3, 8)  # rows 2..7 -> cy = int(4.5) = 4; row 4 x = 3..8 -> mean 5.5 -> 5
    assert marker_anchor(m) == (5, 4)


def test_anchor_uses_pixels_of_middle_row_not_box_centre():
    m = np.zeros((10, 20), bool)
    m[0:9, 0:2] = True  # tall thin bar: rows 0..8 -> cy = 4
    m[4, 10:19] = True  # row 4 also has x = 10..18
    # row 4 x: 0, 1, 10..18 -> mean = (1 + 126) / 11 = 11.545 -> 11; box centre would be int(18 / 2) = 9
    assert marker_anchor(m) == (11, 4)


def test_anchor_empty_middle_row_falls_back_to_box_centre():
    m = np.zeros((10, 20), bool)
    m[0:2, 2:4] = True  # rows 0..1, x 2..3
    m[7:9, 10:16] = True  # rows 7..8, x 10..15  -> ymin 0, ymax 8, cy = 4 (empty row)
    assert marker_anchor(m) == (int((2 + 15) / 2), 4) == (8, 4)


def test_anchor_of_empty_mask_is_none():
    assert marker_anchor(np.zeros((5, 5), bool)) is None


def test_markable_objects_drops_below_one_third_keeps_exactly_one_third():
    assert markable_objects([300, 100, 99, 150]) == [0, 1, 3]  # 100 == 300/3 kept, 99 < 100 dropped
    assert markable_objects([9, 3, 2]) == [0, 1]
    assert markable_objects([0, 0]) == []
    assert markable_objects([]) == []


def test_box_to_mask_is_filled_rectangle_clipped():
    m = box_to_mask([2, 1, 5, 4], 6, 6)
    assert m.sum() == 9 and m[1:4, 2:5].all()
    assert box_to_mask([-3, -3, 2, 2], 4, 4).sum() == 4


def _reference_draw(rgb, items):
    """Draw as the reference does: BGR frame, BGR red (0, 0, 255), then back to RGB."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = rgb.shape[:2]
    scale = (20 / 30) * (max(h, w) / 336)
    thickness = max(2, int(scale * 2))
    for text, (x, y) in items:
        cv2.putText(bgr, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 255), thickness, cv2.LINE_AA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_draw_matches_reference_bgr_pixels_exactly():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    original = frame.copy()
    a = _rect(240, 320, 20, 119, 30, 109)  # area 100*80 = 8000, anchor cy=int(139/2)=69, cx=int(69.5)=69
    b = _rect(240, 320, 130, 229, 200, 279)  # 8000, cy=179, cx=239
    tiny = _rect(240, 320, 5, 14, 290, 299)  # 100 < 8000/3: not drawn
    out = draw_id_markers(frame, [a, mask_to_rle(b), tiny], [3, 12, 7])
    expected = _reference_draw(frame, [("3", (69, 69)), ("12", (239, 179))])
    assert np.array_equal(out, expected)
    assert not np.array_equal(out, frame)
    assert np.array_equal(frame, original)  # the input is not drawn on


def test_draw_with_boxes_equals_draw_with_rectangle_masks():
    frame = np.full((120, 160, 3), 90, np.uint8)
    boxes = [[10, 10, 70, 90], [80, 20, 150, 100]]
    masks = [box_to_mask(b, 120, 160) for b in boxes]
    assert np.array_equal(draw_id_markers(frame, boxes, [1, 2]), draw_id_markers(frame, masks, [1, 2]))


def test_drawn_colour_is_red_in_rgb():
    frame = np.zeros((336, 336, 3), np.uint8)
    out = draw_id_markers(frame, [_rect(336, 336, 100, 240, 100, 240)], [8])
    drawn = out.reshape(-1, 3)[out.reshape(-1, 3).any(axis=1)]
    assert len(drawn) > 50
    assert drawn[:, 1].max() == 0 and drawn[:, 2].max() == 0 and drawn[:, 0].max() == 255
    assert MARKER_COLOR_RGB == (255, 0, 0)


def test_draw_returns_copy_and_rejects_size_mismatch():
    frame = np.zeros((50, 60, 3), np.uint8)
    out = draw_id_markers(frame, [[5, 5, 40, 40]], [1])
    assert out is not frame and frame.max() == 0 and out.max() > 0
    with pytest.raises(ValueError):
        draw_id_markers(frame, [np.ones((10, 10), bool)], [1])
    with pytest.raises(ValueError):
        draw_id_markers(frame, [[5, 5, 40, 40]], [1, 2])


# --- the fast path draws the reference's pixels --------------------------------------------------------------
def _full_frame_reference_draw(frame: np.ndarray, masks_or_boxes, ids) -> np.ndarray:
    """The reference arithmetic written out plainly: a full-frame mask per object, its pixel count, the anchor
    from the coordinates of every mask pixel (STVG-R1 §3)."""
    height, width = frame.shape[:2]
    out = frame.copy()
    masks = [as_mask(m, height, width) for m in masks_or_boxes]
    areas = [int(m.sum()) for m in masks]
    largest = max(areas) if areas else 0
    font_scale, thickness = marker_style(height, width)
    for mask, area, object_id in zip(masks, areas, ids):
        if area == 0 or 3 * area < largest:
            continue
        ys, xs = np.nonzero(mask)
        cy = int((int(ys.min()) + int(ys.max())) / 2)
        row = np.nonzero(mask[cy])[0]
        cx = int(np.mean(row)) if len(row) else int((int(xs.min()) + int(xs.max())) / 2)
        cv2.putText(out, str(object_id), (cx, cy), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 0, 0), thickness, 16)
    return out


@settings(max_examples=60, deadline=None)
@given(
    boxes=st.lists(st.tuples(*[st.floats(-40, 200, allow_nan=False) for _ in range(4)]), min_size=1, max_size=6),
    blobs=st.lists(
        st.tuples(st.integers(0, 90), st.integers(0, 150), st.integers(1, 40), st.integers(1, 40)), max_size=3
    ),
    as_rle=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_draw_id_markers_draws_the_reference_pixels(boxes, blobs, as_rle, seed):
    """Boxes (fractional, reversed, partly or wholly outside the frame) and masks (with holes, split rows; as
    arrays or RLE): the fast path draws exactly what the full-frame reference draws."""
    height, width = 96, 160
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    objects: list = [list(b) for b in boxes]
    for y, x, h, w in blobs:
        mask = np.zeros((height, width), bool)
        mask[y : y + h, x : x + w] = True
        mask &= rng.random((height, width)) > 0.3  # holes: rows and columns with gaps
        objects.append(mask_to_rle(mask) if as_rle else mask)
    ids = list(range(1, len(objects) + 1))
    assert np.array_equal(draw_id_markers(frame, objects, ids), _full_frame_reference_draw(frame, objects, ids))
