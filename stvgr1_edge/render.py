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
    """A copy of the RGB ``frame`` with each object's box, ID label and (if given) tinted mask.

    ``objects`` is what :meth:`TrackSet.objects_at` returns: ``(id, [x1, y1, x2, y2], mask RLE or None)``.
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
        label = str(int(track_id))
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, line)
        ty = max(th + base, y1)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty), colour, -1)
        cv2.putText(out, label, (x1 + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), line, cv2.LINE_AA)
    return out
