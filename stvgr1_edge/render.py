"""Human-facing visualisation of tracks: a box and an ID label per object, one distinct colour per ID.

This is for people looking at ``--vis`` videos. It is separate from the STVG-R1 §3 ID markers
(:mod:`stvgr1_edge.markers`), which are the exact pixels the grounding model was trained on.
"""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np

from .masks import rle_to_mask


def id_colour(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour for an ID; consecutive IDs get well separated hues (golden-ratio steps)."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_tracks(
    frame: np.ndarray, objects: Sequence[tuple[int, Sequence[float], dict | None]], mask_alpha: float = 0.35
) -> np.ndarray:
    """A copy of the RGB ``frame`` with each object's box, ID tab and (if given) tinted mask.

    ``objects`` is what :meth:`TrackSet.objects_at` returns: ``(id, [x1, y1, x2, y2], mask RLE or None)``. Boxes
    are drawn first and the tabs last, so no tab is hidden under a box; each tab takes the first place around its
    box (above, inside, below) that overlaps no tab already placed, and has a dark outline, so neighbouring tabs
    ("4" next to "5") never read as one number.
    """
    import cv2

    out = np.ascontiguousarray(frame, dtype=np.uint8).copy()
    height, width = out.shape[:2]
    scale = max(height, width) / 1000
    line = max(1, int(round(2 * scale)))
    font_scale = max(0.4, 0.7 * scale)
    for track_id, box, mask in objects:
        colour = id_colour(track_id)
        if mask is not None and mask_alpha > 0:
            m = rle_to_mask(mask)
            if m.shape == (height, width):
                out[m] = ((1 - mask_alpha) * out[m] + mask_alpha * np.array(colour)).astype(np.uint8)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, line, cv2.LINE_8)
    placed: list[tuple[int, int, int, int]] = []
    for track_id, box, _mask in sorted(objects, key=lambda o: (o[1][1], o[1][0])):
        label = str(int(track_id))
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, line)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        tab = place_label((x1, y1, x2, y2), tw + 4, th + base + 2, placed, width, height)
        placed.append(tab)
        tx1, ty1, tx2, ty2 = tab
        cv2.rectangle(out, (tx1, ty1), (tx2 - 1, ty2 - 1), id_colour(track_id), -1)
        cv2.rectangle(out, (tx1, ty1), (tx2 - 1, ty2 - 1), (0, 0, 0), 1)
        cv2.putText(
            out, label, (tx1 + 2, ty2 - 1 - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), line, cv2.LINE_AA
        )
    return out


def place_label(
    box: tuple[int, int, int, int],
    tab_w: int,
    tab_h: int,
    taken: Sequence[tuple[int, int, int, int]],
    width: int,
    height: int,
) -> tuple[int, int, int, int]:
    """Where a ``tab_w`` x ``tab_h`` label goes for ``box`` (all ``[x1, y1, x2, y2]``): the first of above-left,
    inside top-left, below-left, above-right and inside top-right that stays in the frame and overlaps no ``taken``
    tab (with a 1-pixel gap); else a spot shifted down past the tabs in the way."""
    x1, y1, x2, y2 = box
    candidates = [(x1, y1 - tab_h), (x1, y1), (x1, y2), (x2 - tab_w, y1 - tab_h), (x2 - tab_w, y1)]

    def fits(x: int, y: int) -> tuple[int, int, int, int] | None:
        x, y = min(max(x, 0), max(width - tab_w, 0)), min(max(y, 0), max(height - tab_h, 0))
        rect = (x, y, x + tab_w, y + tab_h)
        gap = 1
        if any(
            rect[0] < t[2] + gap and t[0] < rect[2] + gap and rect[1] < t[3] + gap and t[1] < rect[3] + gap
            for t in taken
        ):
            return None
        return rect

    for x, y in candidates:
        rect = fits(x, y)
        if rect is not None:
            return rect
    y = max(y1 - tab_h, 0)
    while y < height:  # slide down until free (the frame is full of tabs only in pathological cases)
        rect = fits(x1, y)
        if rect is not None:
            return rect
        y += tab_h + 1
    x, y = min(max(x1, 0), max(width - tab_w, 0)), min(max(y1, 0), max(height - tab_h, 0))
    return (x, y, x + tab_w, y + tab_h)
