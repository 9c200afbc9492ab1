"""What the classical tracker reasons with: observations, track states, their boxes and colours.

Boxes are ``[x1, y1, x2, y2]`` at the processing size; colours are normalised HSV histograms over
:data:`HIST_BINS`, compared by Bhattacharyya distance.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

# hue, saturation, value. Hue bins are 10 of OpenCV's 180 units wide: at 15 units, orange (hue 15) and yellow
# (hue 26) shared a bin, so a yellow object behind an orange one came back under the orange one's ID.
HIST_BINS = (18, 4, 4)
INVALID_COST = 1e6
"""Assignment cost of a pair that must not be matched."""
_TRACK_KEYS = itertools.count()


@dataclass(frozen=True)
class VideoClock:
    """One video's frame rate and the tracker's time limits in frames."""

    fps: float
    max_predict_frames: float
    """A track's constant-velocity prediction stops after this many frames."""
    max_lost_frames: float
    """A lost track is forgotten after this many frames."""


@dataclass(eq=False)
class Observation:
    """One detection (or one part of a split blob) at the processing size."""

    box: np.ndarray
    mask: np.ndarray
    hist: np.ndarray
    area: float
    partial: bool = False
    """Came from splitting a merged blob (box and area are only the visible part)."""
    owner: "TrackState | None" = None
    """The track a split part was cut out for: it goes to that track and to no other."""
    placed: np.ndarray | None = None
    """For a split part: the box of its track's shape where it fits the merged blob well (the whole
    object's extent, hidden parts included), or None."""


@dataclass(eq=False)
class TrackState:
    """What the tracker knows about one object (tentative until ``track_id`` is set)."""

    box: np.ndarray
    velocity: np.ndarray
    hist: np.ndarray
    area: float
    last_frame: int
    hits: int = 1
    track_id: int | None = None
    pending: list = field(default_factory=list)
    shape: np.ndarray | None = None
    """The mask of the last unsplit detection, cropped to its box (the object's shape, for splitting merges)."""
    hidden_frame: int | None = None
    """The last frame a merge split found this track hidden inside it (too little of it visible)."""
    key: int = field(default_factory=lambda: next(_TRACK_KEYS))
    """A unique integer naming this track state in per-frame tables (predictions, placements), assigned at
    creation; unlike ``track_id`` it exists before the track is confirmed."""

    def predict(self, frame: int, max_predict_frames: float) -> np.ndarray:
        dt = min(frame - self.last_frame, max_predict_frames)
        vx, vy = self.velocity
        return self.box + np.array([vx, vy, vx, vy], np.float32) * dt


def centre(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], axis=-1)


def diagonal(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(np.hypot(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]), 1.0)


def covered_fraction(box: np.ndarray, cover: np.ndarray) -> float:
    """Share of ``box``'s area inside ``cover``."""
    iw = min(box[2], cover[2]) - max(box[0], cover[0])
    ih = min(box[3], cover[3]) - max(box[1], cover[1])
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1.0)
    return float(max(iw, 0.0) * max(ih, 0.0) / area)


def shift_to_cover(box: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``box`` moved (not resized) by the least amount that makes it cover ``part`` along each axis."""
    shifted = box.copy()
    for lo, hi in ((0, 2), (1, 3)):
        if part[lo] < shifted[lo] and part[hi] <= shifted[hi]:
            shifted[[lo, hi]] -= shifted[lo] - part[lo]
        elif part[hi] > shifted[hi] and part[lo] >= shifted[lo]:
            shifted[[lo, hi]] += part[hi] - shifted[hi]
    return shifted


def crop_to_box(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``mask`` cropped to the integer pixel box covering ``box``."""
    x1, y1 = int(box[0]), int(box[1])
    return mask[y1 : int(math.ceil(box[3])), x1 : int(math.ceil(box[2]))].copy()


def _hsv_bin_table() -> np.ndarray:
    """(256, 1, 3) uint16: each HSV channel value's share of the flat bin index, ``(h * sb + s) * vb + v``."""
    hb, sb, vb = HIST_BINS
    x = np.arange(256)
    h, s, v = np.minimum(x * hb // 180, hb - 1), x * sb // 256, x * vb // 256
    return np.stack([h * sb * vb, s * vb, v], axis=-1).astype(np.uint16).reshape(256, 1, 3)


HSV_BIN_TABLE = _hsv_bin_table()


def hsv_bins(image_rgb: np.ndarray) -> np.ndarray:
    """Flat histogram bin index (uint16) of every pixel (H, W) for the HSV histogram."""
    import cv2

    hsv = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2HSV)
    shares = cv2.LUT(hsv, HSV_BIN_TABLE)  # one table lookup per channel instead of integer arithmetic per pixel
    return shares[..., 0] + shares[..., 1] + shares[..., 2]


def colour_hist(bins: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hist = np.bincount(bins[mask], minlength=int(np.prod(HIST_BINS))).astype(np.float32)
    return hist / max(hist.sum(), 1.0)


def two_means(
    points: np.ndarray, min_distance: float, min_separation: float = 0.0, iterations: int = 8
) -> tuple[np.ndarray, np.ndarray] | None:
    """Indices of the two clusters of ``points`` (N, 3) by 2-means, or None if they are not two colours.

    Seeds: the points at the 10th and 90th percentile along the principal axis (deterministic). Seeding
    with the farthest-apart extremes instead lets a few blended fringe pixels capture one cluster, so two
    close colours (blue and purple) never come apart. Two colours means the centres are at least
    ``min_distance`` apart and at least ``min_separation`` robust standard deviations (1.4826 x the median
    absolute deviation along the line between the centres, the larger of the two clusters'): a single
    colour with a spread (compression noise, a gradient) cut in two halves fails the second test.
    """
    if len(points) < 2:
        return None
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(points) // 2000)], full_matrices=False)
    proj = centred @ vt[0]
    lo, hi = np.percentile(proj, [10, 90])
    centres = np.stack([points[np.argmin(np.abs(proj - lo))], points[np.argmin(np.abs(proj - hi))]])
    for _ in range(iterations):
        nearest = np.linalg.norm(points[:, None] - centres[None], axis=2).argmin(axis=1)
        if nearest.min() == nearest.max():
            return None
        centres = np.stack([points[nearest == k].mean(axis=0) for k in range(2)])
    distance = float(np.linalg.norm(centres[0] - centres[1]))
    if distance < max(min_distance, 1e-6):
        return None
    if min_separation > 0:
        axis = (centres[1] - centres[0]) / distance
        spread = 0.0
        for k in range(2):
            along = points[nearest == k] @ axis
            spread = max(spread, 1.4826 * float(np.median(np.abs(along - np.median(along)))))
        if distance < min_separation * max(spread, 1.0):
            return None
    return np.nonzero(nearest == 0)[0], np.nonzero(nearest == 1)[0]


def hist_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two normalised histograms, in [0, 1]."""
    bc = float(np.sqrt(a * b).sum())
    return math.sqrt(max(0.0, 1.0 - min(bc, 1.0)))
