"""Drawing synthetic clips: the shapes (exact, unantialiased masks), the static floor, which object owns each
pixel (back to front by depth) and the frames. :mod:`stvgr1_edge.synth` plans clips and writes datasets with it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

import numpy as np

from .masks import mask_to_box

if TYPE_CHECKING:  # pragma: no cover
    from .synth import SynthClip, SynthConfig, SynthObject

# Unit shapes at angle 0 (y points down): vertices scaled by the object's radius. The circle has radius 1.
SHAPE_EXTENT = {
    "circle": 1.0,
    "square": 0.85 * math.sqrt(2),
    "triangle": 1.35,
    "star": 1.4,
    "cross": math.hypot(1.1, 0.38),
}
"""Distance of each shape's farthest point from its centre, in radii (for wall margins)."""


def _unit_polygon(shape: str) -> np.ndarray:
    if shape == "square":
        s = 0.85
        return np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    if shape == "triangle":
        a = np.deg2rad([-90.0, 30.0, 150.0])
        return 1.35 * np.stack([np.cos(a), np.sin(a)], axis=1)
    if shape == "star":
        a = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.4, 0.6)
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    if shape == "cross":
        L, w = 1.1, 0.38
        return np.array(
            [[-w, -L], [w, -L], [w, -w], [L, -w], [L, w], [w, w], [w, L], [-w, L], [-w, w], [-L, w], [-L, -w], [-w, -w]]
        )
    raise ValueError(f"no polygon for shape {shape!r}")


_UNIT_POLYGONS = {s: _unit_polygon(s) for s in ("square", "triangle", "star", "cross")}
_SHIFT = 4  # OpenCV sub-pixel bits: coordinates drawn with 1/16 pixel precision


def _polygon(obj: SynthObject, f: int) -> np.ndarray:
    """Vertices (pixel-edge coordinates) of a polygonal object at frame ``f``."""
    a = math.radians(float(obj.angle_deg[f]))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return _UNIT_POLYGONS[obj.shape] @ rot.T * float(obj.radius[f]) + obj.center[f]


def draw_object(canvas: np.ndarray, obj: SynthObject, f: int, value) -> None:
    """Fill the object's shape at frame ``f`` into ``canvas`` with ``value`` (no anti-aliasing: exact masks), as clips
    are rendered; also for scenes built outside :func:`~stvgr1_edge.synth.generate_clip` (small training crops)."""
    import cv2

    scale = 1 << _SHIFT
    if obj.shape == "circle":
        cx, cy = obj.center[f] - 0.5  # OpenCV puts pixel i's centre at coordinate i
        cv2.circle(
            canvas,
            (int(round(cx * scale)), int(round(cy * scale))),
            int(round(float(obj.radius[f]) * scale)),
            value,
            thickness=-1,
            lineType=cv2.LINE_8,
            shift=_SHIFT,
        )
    else:
        pts = np.round((_polygon(obj, f) - 0.5) * scale).astype(np.int32)
        cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_8, shift=_SHIFT)


def label_map(objects, f: int, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 map of which object ID owns each pixel at frame ``f`` (0: floor), drawn back to front."""
    labels = np.zeros((height, width), np.uint8)
    for obj in sorted(objects, key=lambda o: o.depth):
        if obj.present[f]:
            draw_object(labels, obj, f, int(obj.object_id))
    return labels


def full_area(obj: SynthObject, f: int, height: int, width: int) -> int:
    """Pixels the object covers inside the frame at ``f`` with nothing in front of it."""
    canvas = np.zeros((height, width), np.uint8)
    draw_object(canvas, obj, f, 1)
    return int(canvas.sum())


def shape_bounds(obj: SynthObject, f: int) -> tuple[float, float, float, float]:
    """Geometric ``[x1, y1, x2, y2]`` of the object's shape at ``f`` (before occlusion and clipping)."""
    if obj.shape == "circle":
        (cx, cy), r = obj.center[f], float(obj.radius[f])
        return cx - r, cy - r, cx + r, cy + r
    pts = _polygon(obj, f)
    (x1, y1), (x2, y2) = pts.min(axis=0), pts.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def inside_frame(obj: SynthObject, f: int, height: int, width: int) -> bool:
    """The object's whole shape lies inside the frame at ``f``."""
    x1, y1, x2, y2 = shape_bounds(obj, f)
    return x1 >= 0.5 and y1 >= 0.5 and x2 <= width - 0.5 and y2 <= height - 0.5


def visible_mask(labels: np.ndarray, obj: SynthObject, f: int) -> tuple[np.ndarray, list[float] | None]:
    """The object's visible pixels at ``f`` (full-frame bool mask) and their tight box, looked up only
    in a window around the shape (rasterization never strays 2 pixels beyond it)."""
    H, W = labels.shape
    x1, y1, x2, y2 = shape_bounds(obj, f)
    c0, r0 = max(0, int(math.floor(x1)) - 2), max(0, int(math.floor(y1)) - 2)
    c1, r1 = min(W, int(math.ceil(x2)) + 2), min(H, int(math.ceil(y2)) + 2)
    mask = np.zeros((H, W), bool)
    if c1 <= c0 or r1 <= r0:
        return mask, None
    window = labels[r0:r1, c0:c1] == obj.object_id
    mask[r0:r1, c0:c1] = window
    box = mask_to_box(window)
    if box is None:
        return mask, None
    return mask, [box[0] + c0, box[1] + r0, box[2] + c0, box[3] + r0]


def make_background(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """A static floor of :class:`SynthConfig` size: vertical gradient, faint blotchy texture and tile lines, plus a
    few static rectangles."""
    import cv2

    H, W = cfg.height, cfg.width
    top = rng.uniform(195, 225) + rng.uniform(-8, 8, size=3)
    bottom = rng.uniform(180, 215) + rng.uniform(-8, 8, size=3)
    ramp = np.linspace(0.0, 1.0, H)[:, None, None]
    floor = (1 - ramp) * top + ramp * bottom + np.zeros((1, W, 1))
    noise = cv2.GaussianBlur(rng.normal(0.0, 6.0, size=(H, W)).astype(np.float32), (0, 0), 2.0)
    floor += noise[:, :, None]
    tile = int(rng.integers(32, 56))
    floor[::tile, :, :] -= 10
    floor[:, ::tile, :] -= 10
    img = np.clip(np.round(floor), 0, 255).astype(np.uint8)
    furniture = [(170, 150, 125), (140, 145, 155), (185, 175, 150), (125, 135, 120), (160, 140, 145)]
    for _ in range(int(rng.integers(cfg.min_furniture, cfg.max_furniture + 1))):
        w, h = int(rng.uniform(0.12, 0.3) * W), int(rng.uniform(0.1, 0.25) * H)
        x, y = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
        colour = tuple(int(c) for c in furniture[int(rng.integers(len(furniture)))])
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), colour, thickness=-1)
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), tuple(int(c * 0.75) for c in colour), thickness=2)
    return img


def object_label_map(clip: SynthClip, frame: int) -> np.ndarray:
    """(H, W) uint8 map of which object ID owns each pixel of ``frame`` (0: floor): the occlusion order the
    GT masks and :func:`render_frames` use. For per-pixel labels (e.g. teaching a vision encoder)."""
    return label_map(clip.objects, frame, clip.config.height, clip.config.width)


def render_frames(clip: SynthClip) -> Iterator[np.ndarray]:
    """The clip's frames as RGB ``uint8`` (H, W, 3) arrays: the same pixels the GT masks were taken from."""
    cfg = clip.config
    colour_of_label = np.zeros((len(clip.objects) + 1, 3), np.uint8)
    for f in range(clip.num_frames):
        labels = label_map(clip.objects, f, cfg.height, cfg.width)
        for obj in clip.objects:
            colour_of_label[obj.object_id] = obj.rgb[f]
        frame = clip.background.copy()
        drawn = labels > 0
        frame[drawn] = colour_of_label[labels[drawn]]
        yield frame
