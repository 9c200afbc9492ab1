"""The visual prompt of STVG-R1 §3: each object's integer ID drawn in red at its centre.

The released checkpoint was trained on exactly these pixels, so the arithmetic follows the reference:

- per frame, objects whose mask area is < 1/3 of the largest mask area in that frame are not marked;
- anchor ``cy = int((ymin + ymax) / 2)`` (inclusive pixel rows of the mask), ``cx = int(mean x of the
  mask pixels on row cy)``, or ``int((xmin + xmax) / 2)`` when that row of the mask is empty;
- ``cv2.putText(str(id), (cx, cy), FONT_HERSHEY_SIMPLEX, font_scale, red, thickness, LINE_AA)`` with
  ``font_scale = (20 / 30) * (max(H, W) / 336)`` and ``thickness = max(2, int(font_scale * 2))``, at the
  frame's native resolution. The point is the text's bottom-left corner. No box, no mask tint.

The reference draws BGR (0, 0, 255) on BGR frames; our frames are RGB, so we draw (255, 0, 0): the
same pixels.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np

from .masks import rle_area, rle_to_mask

MARKER_COLOR_RGB: tuple[int, int, int] = (255, 0, 0)
"""Red in RGB (the reference's BGR (0, 0, 255))."""
MIN_AREA_FRACTION_NUMERATOR, MIN_AREA_FRACTION_DENOMINATOR = 1, 3
"""Objects with area < 1/3 of the frame's largest mask area are not marked."""

MaskOrBox = Union[np.ndarray, dict, Sequence[float]]


def marker_style(height: int, width: int) -> tuple[float, int]:
    """``(font_scale, thickness)`` for a frame of this native size (STVG-R1 §3)."""
    font_scale = (20 / 30) * (max(height, width) / 336)
    thickness = max(2, int(font_scale * 2))
    return font_scale, thickness


def marker_anchor(mask: np.ndarray) -> tuple[int, int] | None:
    """The ``(cx, cy)`` text origin for a boolean (H, W) mask, or None for an empty mask.

    The mask's row and column extents come from its projections (``any`` per row/column), not from the
    coordinates of every pixel: the same numbers at a fraction of the cost on a full-resolution frame."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    ymin, ymax = int(rows[0]), int(rows[-1])
    cy = int((ymin + ymax) / 2)
    row = np.nonzero(mask[cy])[0]
    if len(row) > 0:
        cx = int(np.mean(row))
    else:  # a non-convex mask can miss its own middle row
        cols = np.flatnonzero(mask.any(axis=0))
        cx = int((int(cols[0]) + int(cols[-1])) / 2)
    return cx, cy


def markable_objects(areas: Sequence[int]) -> list[int]:
    """Indices of the objects that get a marker: area >= 1/3 of the largest area (and non-empty).

    An object at exactly 1/3 of the largest is kept ("< 1/3 dropped"); integer arithmetic, no rounding.
    """
    areas = [int(a) for a in areas]
    if not areas:
        return []
    largest = max(areas)
    return [
        i
        for i, a in enumerate(areas)
        if a > 0 and a * MIN_AREA_FRACTION_DENOMINATOR >= largest * MIN_AREA_FRACTION_NUMERATOR
    ]


def _box_extent(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """Rows ``r0:r1`` and columns ``c0:c1`` that :func:`box_to_mask` fills (empty when ``r0 >= r1`` or ``c0 >= c1``)."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    return max(0, y1), max(0, min(height, y2)), max(0, x1), max(0, min(width, x2))


def box_to_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """A filled-rectangle mask for an xyxy box (pixel-edge coordinates, rounded, clipped to the frame)."""
    r0, r1, c0, c1 = _box_extent(box, height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _box_area_and_anchor(box: Sequence[float], height: int, width: int) -> tuple[int, tuple[int, int] | None]:
    """:func:`box_to_mask`'s area and :func:`marker_anchor` of it, without building the frame-sized mask."""
    r0, r1, c0, c1 = _box_extent(box, height, width)
    if r0 >= r1 or c0 >= c1:
        return 0, None
    cy = int((r0 + (r1 - 1)) / 2)
    cx = int(np.mean(np.arange(c0, c1, dtype=np.intp)))  # the mean of the row's pixel columns, as for a mask
    return (r1 - r0) * (c1 - c0), (cx, cy)


def as_mask(obj: MaskOrBox, height: int, width: int) -> np.ndarray:
    """A boolean (H, W) mask from a mask array, a COCO RLE dict, or an xyxy box."""
    if isinstance(obj, dict):
        mask = rle_to_mask(obj)
    else:
        arr = np.asarray(obj)
        if arr.ndim == 1 and arr.shape[0] == 4:
            return box_to_mask(arr.tolist(), height, width)
        mask = arr.astype(bool)
    if mask.shape != (height, width):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, frame is {width}x{height}")
    return mask


def _area_and_anchor(obj: MaskOrBox, height: int, width: int) -> tuple[int, Callable[[], tuple[int, int] | None]]:
    """An object's marker area now, and its anchor on demand (only marked objects need one): a box is pure
    arithmetic, an RLE is counted without decoding (decoded only when marked), a mask array is used as is."""
    if isinstance(obj, dict):
        if [int(v) for v in obj["size"]] != [height, width]:
            raise ValueError(f"mask is {obj['size'][1]}x{obj['size'][0]}, frame is {width}x{height}")
        return rle_area(obj), lambda: marker_anchor(rle_to_mask(obj))
    arr = np.asarray(obj)
    if arr.ndim == 1 and arr.shape[0] == 4:
        area, anchor = _box_area_and_anchor(arr.tolist(), height, width)
        return area, lambda: anchor
    mask = as_mask(arr, height, width)
    return int(np.count_nonzero(mask)), lambda: marker_anchor(mask)


def draw_id_markers(frame: np.ndarray, masks_or_boxes: Sequence[MaskOrBox], ids: Sequence[int]) -> np.ndarray:
    """A copy of the RGB ``frame`` with each object's ID drawn at its anchor (STVG-R1 §3).

    ``masks_or_boxes[i]`` is a (H, W) bool mask, a COCO RLE dict or an xyxy box (a filled rectangle),
    and belongs to object ``ids[i]``.
    """
    import cv2

    if len(masks_or_boxes) != len(ids):
        raise ValueError("draw_id_markers: masks_or_boxes and ids differ in length")
    height, width = frame.shape[:2]
    out = np.array(frame, dtype=np.uint8, order="C", copy=True)
    objects = [_area_and_anchor(m, height, width) for m in masks_or_boxes]
    font_scale, thickness = marker_style(height, width)
    for i in markable_objects([area for area, _ in objects]):
        anchor = objects[i][1]()
        if anchor is None:
            continue
        cv2.putText(
            out,
            str(int(ids[i])),
            anchor,
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            MARKER_COLOR_RGB,
            thickness,
            cv2.LINE_AA,
        )
    return out
