"""Binary masks as COCO run-length encoding (pycocotools), and the box/area arithmetic on them."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a (H, W) boolean mask as a JSON-ready COCO RLE: ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))  # no copy for a column-major uint8 mask
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def crop_to_rle(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """:func:`mask_to_rle` of the (height, width) mask that is ``crop`` at column ``x0``, row ``y0`` and empty
    elsewhere, without building the frame-sized mask (an object's box is a small part of a 720p frame).

    COCO RLE runs down columns, so only the crop's columns are laid out (at full height); the columns left and
    right of it add to the first and last run of zeros. pycocotools compresses the counts.
    """
    from pycocotools import mask as mask_utils

    crop_h, crop_w = crop.shape
    if not (0 <= x0 and x0 + crop_w <= width and 0 <= y0 and y0 + crop_h <= height):
        raise ValueError(f"crop {crop_w}x{crop_h} at ({x0}, {y0}) is not inside a {width}x{height} frame")
    columns = np.zeros((crop_w, height), np.uint8)
    columns[:, y0 : y0 + crop_h] = crop.T
    flat = columns.ravel()
    if not flat.any():
        counts = [height * width]
    else:
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
        if flat[0]:  # runs start with zeros
            runs.insert(0, 0)
        runs[0] += x0 * height
        after = (width - x0 - crop_w) * height
        if flat[-1]:
            runs.append(after)
        else:
            runs[-1] += after
        counts = runs if runs[-1] else runs[:-1]
    rle = mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _coco(rle: Mapping[str, Any]) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed string counts) to a (H, W) boolean mask."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode(_coco(rle)).astype(bool)


def rle_area(rle: dict) -> int:
    from pycocotools import mask as mask_utils

    return int(mask_utils.area(_coco(rle)))


def rle_iou(a: dict, b: dict) -> float:
    """Mask IoU of two RLEs of the same size."""
    from pycocotools import mask as mask_utils

    return float(mask_utils.iou([_coco(a)], [_coco(b)], [0])[0, 0])


def mask_to_box(mask: np.ndarray) -> list[float] | None:
    """Tight ``[x1, y1, x2, y2]`` box of a mask in pixel-edge coordinates (x2 = last column + 1), or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def box_iou(a, b) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes (continuous coordinates; 0 for empty boxes)."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a (N, 4)`` and ``b (M, 4)`` in xyxy."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
