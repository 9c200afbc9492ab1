"""Synthetic STVG clips: coloured shapes moving over a static floor, one of them doing something.

Each clip is a real (if small) spatio-temporal grounding task with exact ground truth:

* a static background (a light, textured floor with a few "furniture" rectangles), so that
  background subtraction works as on a static camera;
* 3-5 objects (colour x shape x size from small named vocabularies) moving smoothly - straight or
  gently curving, bouncing off the frame walls, some entering from or leaving through the edges -
  and crossing each other in a fixed depth order (brief occlusions);
* one *target* performs an *event* (jumps, spins, grows, ...) over a known frame range while fully
  inside the frame; *distractors* share its colour or shape, and some perform events too (a different
  one, or the same one at another time), so only the full description and the time range single the
  target out;
* a templated query ("The large red circle jumps up and down.") whose attribute phrase matches the
  target alone.

Everything is a pure function of the seed: :func:`generate_clip` builds the per-frame state of every
object and the GT tracks (tight box of the visible pixels after occlusion + COCO RLE mask), and
:func:`render_frames` draws the same frames the masks came from. :func:`write_synthetic_dataset`
writes ``videos/<key>.mp4`` and an HCSTVG-v2 style ``annotations.json`` (byte-identical per seed).

Coordinates: object centres are continuous pixel-edge coordinates (the top-left corner of the frame
is (0, 0), pixel (i, j) covers [i, i+1) x [j, j+1)); boxes are ``[x1, y1, x2, y2]`` with
``x2 = last column + 1`` as :func:`stvgr1_edge.masks.mask_to_box` gives them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import BadInputError, write_json_atomic
from .masks import mask_to_box, mask_to_rle
from .tracks import TrackSet

logger = logging.getLogger(__name__)

# --- vocabulary ----------------------------------------------------------------------------------
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 80, 220),
    "yellow": (245, 215, 30),
    "purple": (130, 50, 180),
    "orange": (245, 130, 20),
    "cyan": (20, 190, 210),
    "pink": (245, 110, 180),
}
"""Object colours (RGB). Saturated, unlike the floor and the furniture."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
SIZES: tuple[str, ...] = ("small", "large")
EVENTS: tuple[str, ...] = ("jumps", "spins", "grows", "shrinks", "stops", "changes_colour", "blinks", "shakes")

BLINK_RGB = (35, 35, 35)
"""Colour a blinking object flashes to (dark, so it stays visible on the light floor)."""

QUERY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "jumps": ("the {obj} jumps up and down", "the {obj} starts hopping", "the {obj} hops up and down"),
    "spins": ("the {obj} spins around", "the {obj} starts spinning", "the {obj} turns round and round"),
    "grows": ("the {obj} grows bigger", "the {obj} gets larger", "the {obj} expands"),
    "shrinks": ("the {obj} shrinks", "the {obj} gets smaller", "the {obj} becomes smaller"),
    "stops": ("the {obj} stops moving", "the {obj} stands still for a while", "the {obj} pauses"),
    "changes_colour": ("the {obj} turns {new}", "the {obj} changes colour to {new}", "the {obj} slowly becomes {new}"),
    "blinks": ("the {obj} blinks", "the {obj} flashes on and off", "the {obj} flickers"),
    "shakes": ("the {obj} shakes from side to side", "the {obj} wobbles left and right", "the {obj} trembles in place"),
}
"""Query templates per event; ``{obj}`` is the attribute phrase, ``{new}`` the colour turned to."""

# Unit shapes at angle 0 (y points down): vertices scaled by the object's radius. The circle has radius 1.
_SHAPE_EXTENT = {
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


_UNIT_POLYGONS = {s: _unit_polygon(s) for s in SHAPES if s != "circle"}
_SHIFT = 4  # OpenCV sub-pixel bits: coordinates drawn with 1/16 pixel precision


# --- configuration -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthConfig:
    """How synthetic clips look and behave. Sizes and speeds are fractions of the frame, so other
    resolutions keep the same scene."""

    width: int = 320
    """Frame width in pixels (even: H.264 yuv420p needs even sizes)."""
    height: int = 240
    """Frame height in pixels (even)."""
    fps: float = 10.0
    """Frame rate of the clip."""
    seconds: float = 8.0
    """Clip length; the clip has ``round(seconds * fps)`` frames."""
    min_objects: int = 3
    """Fewest objects per clip (target included)."""
    max_objects: int = 5
    """Most objects per clip (target included)."""
    small_radius: float = 0.045
    """Radius of a "small" object, as a fraction of ``min(width, height)``."""
    large_radius: float = 0.08
    """Radius of a "large" object, as a fraction of ``min(width, height)``."""
    min_speed: float = 0.08
    """Slowest object speed, in frame widths per second."""
    max_speed: float = 0.2
    """Fastest object speed, in frame widths per second."""
    curved_motion_prob: float = 0.6
    """Chance that an object moves on gentle curves instead of straight lines (both bounce off the walls)."""
    enter_prob: float = 0.3
    """Chance that an object enters through a frame edge after the clip starts."""
    exit_prob: float = 0.3
    """Chance that an object leaves through a frame edge before the clip ends."""
    min_furniture: int = 2
    """Fewest static rectangles ("furniture") on the floor."""
    max_furniture: int = 4
    """Most static rectangles on the floor."""
    events: tuple[str, ...] = EVENTS
    """Events the target and distractors may perform (a subset of :data:`EVENTS`)."""
    min_event_s: float = 1.8
    """Shortest event, in seconds: the VLM's 2-fps sampling spreads its frames evenly over the clip, up to
    0.6 s apart, so 1.8 s always holds at least 3 sampled frames."""
    max_event_s: float = 4.0
    """Longest event, in seconds."""
    max_event_fraction: float = 0.6
    """Longest event as a fraction of the clip."""
    event_margin_s: float = 0.5
    """Events start at least this long after the clip starts and end this long before it ends."""
    distractor_event_prob: float = 0.6
    """Chance that a distractor performs an event of its own."""
    same_event_prob: float = 0.5
    """Chance that a distractor's event is the target's event at another (non-overlapping) time."""
    shared_attribute_prob: float = 0.85
    """Chance that a distractor shares the target's colour and/or shape (it never shares all three attributes)."""
    full_phrase_prob: float = 0.5
    """Chance that the query names all three attributes even when fewer identify the target."""
    min_target_visible_fraction: float = 0.3
    """During its event the target is inside the frame and at least this share of it is unoccluded."""
    video_crf: int = 18
    """x264 constant rate factor of the written MP4 (lower: better colours, larger files)."""
    video_preset: str = "veryfast"
    """x264 preset of the written MP4."""
    max_attempts: int = 100
    """Scenes that break a constraint (target occluded or outside during its event) are redrawn up to this often."""

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise BadInputError(
                f"frame size {self.width}x{self.height} is unusable: use even sizes of at least 64 pixels"
            )
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise BadInputError(f"fps must be positive, got {self.fps}")
        if not 1 <= self.min_objects <= self.max_objects <= 20:
            raise BadInputError(
                f"object counts {self.min_objects}..{self.max_objects} are unusable: use 1 <= min <= max <= 20"
            )
        unknown = sorted(set(self.events) - set(EVENTS))
        if unknown or not self.events:
            raise BadInputError(f"unknown or no events {unknown}: choose from {', '.join(EVENTS)}")
        if self.max_event_frames < self.min_event_frames:
            raise BadInputError(
                f"a {self.seconds:g} s clip at {self.fps:g} fps has no room for a {self.min_event_s:g} s event: "
                f"use --seconds of at least {self.min_event_s / self.max_event_fraction + 2 * self.event_margin_s:.1f}"
            )

    @property
    def num_frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def min_event_frames(self) -> int:
        """Fewest frames in an event range (inclusive count)."""
        return max(3, int(math.ceil(self.min_event_s * self.fps - 1e-9)))

    @property
    def max_event_frames(self) -> int:
        """Most frames in an event range: capped by ``max_event_s``, ``max_event_fraction`` and the margins."""
        margin = int(round(self.event_margin_s * self.fps))
        return min(
            int(self.max_event_s * self.fps + 1e-9),
            int(self.max_event_fraction * self.num_frames + 1e-9),
            self.num_frames - 2 * margin,
        )


# --- clip containers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectEvent:
    """What one object does, over frames ``start_frame..end_frame`` (0-based, inclusive)."""

    name: str
    start_frame: int
    end_frame: int
    new_colour: str | None = None
    """The colour turned to (``changes_colour`` only)."""

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame + 1


@dataclass(frozen=True)
class SynthObject:
    """One object: attributes, optional event, and its per-frame drawing state (arrays of length ``num_frames``)."""

    object_id: int
    colour: str
    shape: str
    size: str
    depth: int
    """Drawing order: higher depth is drawn later, i.e. in front."""
    event: ObjectEvent | None
    present: np.ndarray
    """(N,) bool: drawn at this frame (entered and not yet gone)."""
    center: np.ndarray
    """(N, 2) float: centre (x, y) in pixel-edge coordinates."""
    radius: np.ndarray
    """(N,) float: radius in pixels (base size times the grow/shrink scale)."""
    angle_deg: np.ndarray
    """(N,) float: rotation, clockwise in the image."""
    rgb: np.ndarray
    """(N, 3) uint8: fill colour per frame (changes when blinking or changing colour)."""

    @property
    def label(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class SynthClip:
    """A generated clip: background, objects, the target's query and event, and the GT tracks."""

    key: str
    seed: int
    config: SynthConfig
    background: np.ndarray
    """(H, W, 3) uint8 static floor."""
    objects: tuple[SynthObject, ...]
    """By increasing ID (IDs start at 1)."""
    target_id: int
    phrase: str
    """The attribute phrase of the query (matches the target alone), e.g. "large red circle"."""
    query: str
    gt_tracks: TrackSet = field(repr=False)

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    @property
    def target(self) -> SynthObject:
        return self.objects[self.target_id - 1]

    @property
    def event(self) -> ObjectEvent:
        assert self.target.event is not None
        return self.target.event


# --- planning: attributes, events, motion --------------------------------------------------------
def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return str(options[int(rng.integers(len(options)))])


def _event_compatible(event: str, shape: str, size: str) -> bool:
    if event == "spins":
        return shape != "circle"  # a spinning circle looks still
    if event == "grows":
        return size == "small"
    if event == "shrinks":
        return size == "large"
    return True


def _pick_target_attributes(rng, event: str) -> tuple[str, str, str]:
    while True:
        colour, shape, size = _pick(rng, PALETTE), _pick(rng, SHAPES), _pick(rng, SIZES)
        if _event_compatible(event, shape, size):
            return colour, shape, size


def _pick_distractor_attributes(rng, cfg: SynthConfig, target: tuple[str, str, str]) -> tuple[str, str, str]:
    """Random attributes, often sharing the target's colour and/or shape; never all three of the target's."""
    t_colour, t_shape, t_size = target
    share = ""
    if rng.random() < cfg.shared_attribute_prob:
        share = _pick(rng, ("colour", "shape", "colour+shape", "colour+size", "shape+size"))
    while True:
        colour = (
            t_colour if "colour" in share else _pick(rng, [c for c in PALETTE if c != t_colour] if share else PALETTE)
        )
        shape = t_shape if "shape" in share else _pick(rng, [s for s in SHAPES if s != t_shape] if share else SHAPES)
        size = (
            t_size if "size" in share else _pick(rng, [s for s in SIZES if s != t_size] if share.count("+") else SIZES)
        )
        if (colour, shape, size) != target:
            return colour, shape, size


def _event_quantum(name: str, fps: float) -> int:
    """Events made of repeated cycles last a whole number of cycles; this is the cycle in frames."""
    if name == "jumps":
        return max(2, int(round(1.0 * fps)))  # one hop per second: 2-fps samples land 1/2 hop apart
    if name == "shakes":
        return max(2, int(round(0.8 * fps)))
    if name == "blinks":
        return 2 * max(1, int(round(0.5 * fps)))  # dark half a second, normal half a second
    return 1


def _event_length(name: str, cfg: SynthConfig, rng) -> int | None:
    """Inclusive frame count of an event: uniform in the allowed range, rounded to whole cycles."""
    lo, hi = cfg.min_event_frames, cfg.max_event_frames
    q = _event_quantum(name, cfg.fps)
    if name == "blinks":  # dark blocks at both ends: (2m - 1) half-cycles
        half = q // 2
        valid = [(2 * m - 1) * half for m in range(1, hi // half + 2) if lo <= (2 * m - 1) * half <= hi]
    elif q > 1:  # whole cycles: zero offset at both ends
        valid = [m * q + 1 for m in range(1, hi // q + 1) if lo <= m * q + 1 <= hi]
    else:
        valid = list(range(lo, hi + 1))
    if not valid:
        return None
    return int(valid[int(rng.integers(len(valid)))])


def _place_event(
    name: str, cfg: SynthConfig, rng, avoid: ObjectEvent | None = None, new_colour: str | None = None
) -> ObjectEvent | None:
    """An event of this kind at a random time inside the clip's margins (and clear of ``avoid``), or None."""
    length = _event_length(name, cfg, rng)
    if length is None:
        return None
    margin = int(round(cfg.event_margin_s * cfg.fps))
    starts = np.arange(margin, cfg.num_frames - margin - length + 1)
    if avoid is not None:
        gap = margin
        ends = starts + length - 1
        starts = starts[(ends < avoid.start_frame - gap) | (starts > avoid.end_frame + gap)]
    if len(starts) == 0:
        return None
    st = int(starts[int(rng.integers(len(starts)))])
    return ObjectEvent(name, st, st + length - 1, new_colour)


@dataclass(frozen=True)
class _Motion:
    speed: float  # pixels per second
    heading: float  # radians, initial
    turn_rate: float  # radians per second (constant part)
    turn_wobble: float  # radians per second (sinusoidal part)
    turn_period_s: float
    turn_phase: float
    enter_frame: int | None  # None: present from frame 0
    enter_edge: str
    exit_frame: int | None  # walls switch off here and the object drifts out; None: stays


def _plan_motion(rng, cfg: SynthConfig, event: ObjectEvent | None) -> _Motion:
    n, fps = cfg.num_frames, cfg.fps
    speed = float(rng.uniform(cfg.min_speed, cfg.max_speed) * cfg.width)
    curved = rng.random() < cfg.curved_motion_prob
    turn_rate = float(rng.uniform(-0.3, 0.3)) if curved else 0.0
    turn_wobble = float(rng.uniform(0.2, 0.6)) if curved else 0.0
    # Entering and leaving keep clear of the object's own event: the object is inside throughout it.
    enter_lo, enter_hi = 0, int(0.6 * n)
    exit_lo, exit_hi = int(0.3 * n), int(0.85 * n)  # time left to drift out
    if event is not None:
        enter_hi = min(enter_hi, event.start_frame - int(round(3.0 * fps)))
        exit_lo = max(exit_lo, event.end_frame + 1)
    enter_frame = None
    if enter_hi >= enter_lo and rng.random() < cfg.enter_prob:
        enter_frame = int(rng.integers(enter_lo, enter_hi + 1))
    lo = max(exit_lo, (enter_frame or 0) + int(round(2.5 * fps)))
    exit_frame = int(rng.integers(lo, exit_hi + 1)) if exit_hi >= lo and rng.random() < cfg.exit_prob else None
    return _Motion(
        speed,
        float(rng.uniform(-math.pi, math.pi)),
        turn_rate,
        turn_wobble,
        float(rng.uniform(3.0, 6.0)),
        float(rng.uniform(0, 2 * math.pi)),
        enter_frame,
        _pick(rng, ("left", "right", "top", "bottom")),
        exit_frame,
    )


@dataclass(frozen=True)
class _Effects:
    offset: np.ndarray  # (N, 2) added to the simulated centre
    scale: np.ndarray  # (N,)
    angle_deg: np.ndarray  # (N,)
    rgb: np.ndarray  # (N, 3) uint8
    moving: np.ndarray  # (N,) bool: the simulated centre advances into this frame
    extent: float  # largest offset (pixels), for wall margins
    max_scale: float


_SYMMETRY_DEG = {"square": 90.0, "triangle": 120.0, "star": 72.0, "cross": 90.0}


def _spin_rate(shape: str, duration_s: float, rng) -> float:
    """Degrees per second for a spin that ends looking as it started (whole turns of the shape's symmetry)
    and that 2-fps sampling cannot mistake for standing still: whether samples fall 0.45 or 0.6 s apart (the
    sampler spreads frames evenly over the clip), each step turns 20-80% of the shape's symmetry angle."""
    sym = _SYMMETRY_DEG[shape]
    rates = []
    for turns in range(1, 20):
        omega = turns * sym / duration_s
        if 50.0 <= omega <= 140.0 and all(0.2 <= (dt * omega / sym) % 1.0 <= 0.8 for dt in (0.45, 0.5, 0.55, 0.6)):
            rates.append(omega)
    if not rates:  # no whole number of turns fits: spin at ~100 deg/s and stop wherever it stops
        return float(rng.uniform(90.0, 110.0))
    return float(rates[int(rng.integers(len(rates)))])


def _event_effects(
    event: ObjectEvent | None, colour: str, shape: str, base_radius: float, cfg: SynthConfig, rng
) -> _Effects:
    """Per-frame offsets, scale, rotation and colour that make the event happen (identity without one)."""
    n, fps = cfg.num_frames, cfg.fps
    offset = np.zeros((n, 2))
    scale = np.ones(n)
    angle = np.zeros(n)
    rgb = np.tile(np.asarray(PALETTE[colour], np.float64), (n, 1))
    moving = np.ones(n, bool)
    extent, max_scale = 0.0, 1.0
    if event is None:
        return _Effects(offset, scale, angle, rgb.astype(np.uint8), moving, extent, max_scale)
    st, ed = event.start_frame, event.end_frame
    k = np.arange(ed - st + 1)  # frames since the event started
    ramp = k / max(ed - st, 1)
    smooth = ramp * ramp * (3 - 2 * ramp)
    q = _event_quantum(event.name, fps)
    if event.name == "jumps":
        extent = max(1.3 * base_radius, 0.08 * cfg.height)
        offset[st : ed + 1, 1] = -extent * np.abs(np.sin(np.pi * k / q))
    elif event.name == "shakes":
        extent = max(1.0 * base_radius, 0.05 * cfg.width)
        offset[st : ed + 1, 0] = extent * np.sin(2 * np.pi * k / q)
        moving[st + 1 : ed + 1] = False  # shakes in place
    elif event.name == "spins":
        omega = _spin_rate(shape, (ed - st) / fps, rng) * (1 if rng.random() < 0.5 else -1)
        angle[st : ed + 1] = omega * k / fps
        angle[ed + 1 :] = angle[ed]
    elif event.name in ("grows", "shrinks"):
        target = 1.6 if event.name == "grows" else 0.6
        scale[st : ed + 1] = 1 + (target - 1) * smooth
        scale[ed + 1 :] = target
        max_scale = max(1.0, target)
    elif event.name == "stops":
        moving[st + 1 : ed + 1] = False
    elif event.name == "changes_colour":
        assert event.new_colour is not None  # drawn with the event
        new = np.asarray(PALETTE[event.new_colour], np.float64)
        rgb[st : ed + 1] = (1 - ramp)[:, None] * rgb[st : ed + 1] + ramp[:, None] * new
        rgb[ed + 1 :] = new
    elif event.name == "blinks":
        dark = (k // (q // 2)) % 2 == 0  # dark, normal, dark, ..., dark
        rgb[st : ed + 1][dark] = BLINK_RGB
    return _Effects(offset, scale, angle, np.round(rgb).astype(np.uint8), moving, extent, max_scale)


def _simulate(
    motion: _Motion, margin: float, leave_distance: float, moving: np.ndarray, cfg: SynthConfig, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate the centre frame by frame: bounce off walls ``margin`` inside the frame while inside,
    enter from an edge, drift out once walls switch off. Returns (present (N,), centre (N, 2))."""
    n, dt, W, H = cfg.num_frames, 1.0 / cfg.fps, cfg.width, cfg.height
    present = np.zeros(n, bool)
    center = np.zeros((n, 2))
    lo_x, hi_x, lo_y, hi_y = margin, W - margin, margin, H - margin
    heading = motion.heading
    if motion.enter_frame is None:
        x, y = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
        phase = "inside"
    else:
        along = float(rng.uniform(0.0, 1.0))
        inward = {"left": 0.0, "right": math.pi, "top": math.pi / 2, "bottom": -math.pi / 2}[motion.enter_edge]
        heading = inward + float(rng.uniform(-0.4, 0.4))
        if motion.enter_edge in ("left", "right"):
            x = -leave_distance if motion.enter_edge == "left" else W + leave_distance
            y = lo_y + along * (hi_y - lo_y)
        else:
            y = -leave_distance if motion.enter_edge == "top" else H + leave_distance
            x = lo_x + along * (hi_x - lo_x)
        phase = "waiting"
    for f in range(n):
        if phase == "waiting" and motion.enter_frame is not None and f >= motion.enter_frame:
            phase = "entering"
        if phase in ("inside", "entering") and motion.exit_frame is not None and f >= motion.exit_frame:
            phase = "leaving"
        if phase == "waiting":
            center[f] = (x, y)
            continue
        if phase != "entering":  # straight in, then gentle curves
            t = f * dt
            wobble = math.sin(2 * math.pi * t / motion.turn_period_s + motion.turn_phase)
            heading += (motion.turn_rate + motion.turn_wobble * wobble) * dt
        if moving[f]:
            x += motion.speed * math.cos(heading) * dt
            y += motion.speed * math.sin(heading) * dt
        if phase == "entering" and lo_x <= x <= hi_x and lo_y <= y <= hi_y:
            phase = "inside"
        if phase == "inside":
            if (x < lo_x and math.cos(heading) < 0) or (x > hi_x and math.cos(heading) > 0):
                heading = math.pi - heading
            if (y < lo_y and math.sin(heading) < 0) or (y > hi_y and math.sin(heading) > 0):
                heading = -heading
        outside = x < -leave_distance or x > W + leave_distance or y < -leave_distance or y > H + leave_distance
        if phase == "leaving" and outside:
            phase = "gone"
        center[f] = (x, y)
        present[f] = phase != "gone"
    return present, center


# --- drawing -------------------------------------------------------------------------------------
def _polygon(obj: SynthObject, f: int) -> np.ndarray:
    """Vertices (pixel-edge coordinates) of a polygonal object at frame ``f``."""
    a = math.radians(float(obj.angle_deg[f]))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return _UNIT_POLYGONS[obj.shape] @ rot.T * float(obj.radius[f]) + obj.center[f]


def _draw_object(canvas: np.ndarray, obj: SynthObject, f: int, value) -> None:
    """Fill the object's shape at frame ``f`` into ``canvas`` with ``value`` (no anti-aliasing: exact masks)."""
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


def _label_map(objects, f: int, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 map of which object ID owns each pixel at frame ``f`` (0: floor), drawn back to front."""
    labels = np.zeros((height, width), np.uint8)
    for obj in sorted(objects, key=lambda o: o.depth):
        if obj.present[f]:
            _draw_object(labels, obj, f, int(obj.object_id))
    return labels


def _full_area(obj: SynthObject, f: int, height: int, width: int) -> int:
    """Pixels the object covers inside the frame at ``f`` with nothing in front of it."""
    canvas = np.zeros((height, width), np.uint8)
    _draw_object(canvas, obj, f, 1)
    return int(canvas.sum())


def _shape_bounds(obj: SynthObject, f: int) -> tuple[float, float, float, float]:
    """Geometric ``[x1, y1, x2, y2]`` of the object's shape at ``f`` (before occlusion and clipping)."""
    if obj.shape == "circle":
        (cx, cy), r = obj.center[f], float(obj.radius[f])
        return cx - r, cy - r, cx + r, cy + r
    pts = _polygon(obj, f)
    (x1, y1), (x2, y2) = pts.min(axis=0), pts.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def _inside_frame(obj: SynthObject, f: int, height: int, width: int) -> bool:
    """The object's whole shape lies inside the frame at ``f``."""
    x1, y1, x2, y2 = _shape_bounds(obj, f)
    return x1 >= 0.5 and y1 >= 0.5 and x2 <= width - 0.5 and y2 <= height - 0.5


def _visible_mask(labels: np.ndarray, obj: SynthObject, f: int) -> tuple[np.ndarray, list[float] | None]:
    """The object's visible pixels at ``f`` (full-frame bool mask) and their tight box, looked up only
    in a window around the shape (rasterization never strays 2 pixels beyond it)."""
    H, W = labels.shape
    x1, y1, x2, y2 = _shape_bounds(obj, f)
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


def _make_background(rng, cfg: SynthConfig) -> np.ndarray:
    """A light floor: vertical gradient, faint blotchy texture and tile lines, plus a few static rectangles."""
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


def draw_object(canvas: np.ndarray, obj: SynthObject, frame: int, value) -> None:
    """Fill ``obj``'s shape at ``frame`` into ``canvas`` with ``value``, exactly as clips are rendered (no
    anti-aliasing). For scenes built outside :func:`generate_clip` (e.g. small training crops)."""
    _draw_object(canvas, obj, frame, value)


def make_background(rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """A static floor as clips have (:class:`SynthConfig` size), drawn from ``rng``."""
    return _make_background(rng, config)


def object_label_map(clip: SynthClip, frame: int) -> np.ndarray:
    """(H, W) uint8 map of which object ID owns each pixel of ``frame`` (0: floor): the occlusion order the
    GT masks and :func:`render_frames` use. For per-pixel labels (e.g. teaching a vision encoder)."""
    return _label_map(clip.objects, frame, clip.config.height, clip.config.width)


def render_frames(clip: SynthClip) -> Iterator[np.ndarray]:
    """The clip's frames as RGB ``uint8`` (H, W, 3) arrays: the same pixels the GT masks were taken from."""
    cfg = clip.config
    colour_of_label = np.zeros((len(clip.objects) + 1, 3), np.uint8)
    for f in range(clip.num_frames):
        labels = _label_map(clip.objects, f, cfg.height, cfg.width)
        for obj in clip.objects:
            colour_of_label[obj.object_id] = obj.rgb[f]
        frame = clip.background.copy()
        drawn = labels > 0
        frame[drawn] = colour_of_label[labels[drawn]]
        yield frame


# --- the query -----------------------------------------------------------------------------------
def _matches(obj: SynthObject, attrs: dict[str, str]) -> bool:
    return all(getattr(obj, k) == v for k, v in attrs.items())


def _attribute_phrase(target: SynthObject, objects, cfg: SynthConfig, rng) -> str:
    """The shortest attribute phrase naming the target alone (sometimes the full one anyway)."""
    full = {"size": target.size, "colour": target.colour, "shape": target.shape}
    candidates = [{"colour": target.colour, "shape": target.shape}, {"size": target.size, "shape": target.shape}]
    if rng.random() < 0.5:
        candidates.reverse()
    if rng.random() >= cfg.full_phrase_prob:
        for attrs in candidates:
            if sum(_matches(o, attrs) for o in objects) == 1:
                return " ".join(attrs[k] for k in ("size", "colour", "shape") if k in attrs)
    return " ".join(full[k] for k in ("size", "colour", "shape"))


def _query(phrase: str, event: ObjectEvent, rng) -> str:
    template = _pick(rng, QUERY_TEMPLATES[event.name])
    text = template.format(obj=phrase, new=event.new_colour or "")
    return text[0].upper() + text[1:] + "."


# --- generation ----------------------------------------------------------------------------------
def generate_clip(seed: int, config: SynthConfig = SynthConfig(), key: str = "synth") -> SynthClip:
    """Build one clip from ``seed``: scene, motions, events, query and GT tracks (no pixels rendered yet
    beyond the masks). Deterministic: the same seed and config give the same clip."""
    if not _feasible_events(config):
        raise BadInputError(
            f"none of the events {', '.join(config.events)} fits a {config.seconds:g} s clip at {config.fps:g} fps: "
            "use longer clips or other events"
        )
    rng = np.random.default_rng(int(seed))
    for _attempt in range(config.max_attempts):
        clip = _try_clip(rng, int(seed), config, key)
        if clip is not None:
            return clip
    raise BadInputError(
        f"could not place a visible target in {config.max_attempts} tries for {config.width}x{config.height}: "
        "use a larger frame, fewer or smaller objects, or a lower min_target_visible_fraction"
    )


def _try_clip(rng, seed: int, cfg: SynthConfig, key: str) -> SynthClip | None:
    H, W, n = cfg.height, cfg.width, cfg.num_frames
    background = _make_background(rng, cfg)
    num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))

    # Target: event first, then attributes that can show it.
    target_event_name = _pick(rng, _feasible_events(cfg))
    t_attrs = _pick_target_attributes(rng, target_event_name)
    new_colour = _new_colour(rng, t_attrs[0]) if target_event_name == "changes_colour" else None
    target_event = _place_event(target_event_name, cfg, rng, new_colour=new_colour)
    if target_event is None:
        return None
    attrs = [t_attrs] + [_pick_distractor_attributes(rng, cfg, t_attrs) for _ in range(num_objects - 1)]
    events: list[ObjectEvent | None] = [target_event]
    for colour, shape, size in attrs[1:]:
        events.append(_distractor_event(rng, cfg, target_event, colour, shape, size))

    # Shuffle so that the target's ID tells nothing; depth order is random too.
    order = rng.permutation(num_objects)
    depths = rng.permutation(num_objects)
    objects: list[SynthObject] = []
    target_id = 0
    step = cfg.max_speed * W / cfg.fps
    for new_index, old_index in enumerate(order):
        colour, shape, size = attrs[old_index]
        event = events[old_index]
        base_radius = (cfg.small_radius if size == "small" else cfg.large_radius) * min(W, H)
        effects = _event_effects(event, colour, shape, base_radius, cfg, rng)
        reach = base_radius * effects.max_scale * _SHAPE_EXTENT[shape]
        motion = _plan_motion(rng, cfg, event)
        present, center = _simulate(
            motion, reach + effects.extent + step, reach + effects.extent + 1.0, effects.moving, cfg, rng
        )
        objects.append(
            SynthObject(
                object_id=new_index + 1,
                colour=colour,
                shape=shape,
                size=size,
                depth=int(depths[new_index]),
                event=event,
                present=present,
                center=center + effects.offset,
                radius=base_radius * effects.scale,
                angle_deg=effects.angle_deg,
                rgb=effects.rgb,
            )
        )
        if old_index == 0:
            target_id = new_index + 1

    gt = TrackSet(W, H, cfg.fps, n)
    visible_area = np.zeros((len(objects), n), np.int64)
    for f in range(n):
        labels = _label_map(objects, f, H, W)
        for obj in objects:
            if not obj.present[f]:
                continue
            mask, box = _visible_mask(labels, obj, f)
            if box is None:
                continue
            visible_area[obj.object_id - 1, f] = int(np.count_nonzero(mask))
            gt.add(obj.object_id, f, box, mask_to_rle(mask), 1.0, label=obj.label)

    for obj in objects:  # everyone's event must be seen; the target's must be clearly seen
        if obj.event is None:
            continue
        min_fraction = cfg.min_target_visible_fraction if obj.object_id == target_id else 0.0
        for f in range(obj.event.start_frame, obj.event.end_frame + 1):
            if not (obj.present[f] and _inside_frame(obj, f, H, W)):
                return None
            visible = visible_area[obj.object_id - 1, f]
            if visible == 0 or visible <= min_fraction * _full_area(obj, f, H, W):
                return None

    target = objects[target_id - 1]
    phrase = _attribute_phrase(target, objects, cfg, rng)
    query = _query(phrase, target_event, rng)
    return SynthClip(key, seed, cfg, background, tuple(objects), target_id, phrase, query, gt)


def _feasible_events(cfg: SynthConfig) -> list[str]:
    """The configured events whose whole cycles fit the clip's event-length limits."""
    probe = np.random.default_rng(0)
    return [name for name in cfg.events if _event_length(name, cfg, probe) is not None]


def _new_colour(rng, colour: str) -> str:
    return _pick(rng, [c for c in PALETTE if c != colour])


def _distractor_event(
    rng, cfg: SynthConfig, target_event: ObjectEvent, colour: str, shape: str, size: str
) -> ObjectEvent | None:
    """Maybe an event for a distractor: the target's event at another time, or a different event at any time."""
    if rng.random() >= cfg.distractor_event_prob:
        return None
    if rng.random() < cfg.same_event_prob and _event_compatible(target_event.name, shape, size):
        new = _new_colour(rng, colour) if target_event.name == "changes_colour" else None
        event = _place_event(target_event.name, cfg, rng, avoid=target_event, new_colour=new)
        if event is not None:
            return event
    others = [e for e in _feasible_events(cfg) if e != target_event.name and _event_compatible(e, shape, size)]
    if not others:
        return None
    name = _pick(rng, others)
    return _place_event(name, cfg, rng, new_colour=_new_colour(rng, colour) if name == "changes_colour" else None)


# --- annotations and the dataset -----------------------------------------------------------------
def clip_annotation(clip: SynthClip, video_path: str) -> dict:
    """The clip's HCSTVG-v2 annotation (``img_num``, ``img_hw``, ``st_frame``, ``ed_frame``, ``st_time``,
    ``ed_time``, ``bbox`` as xywh per event frame, ``English``) plus ``video_path``, ``fps``, ``target_id``,
    ``event``, ``label``, ``phrase``, ``objects`` and every object's ``gt_tracks`` (``TrackSet.to_dict()``)."""
    cfg, event = clip.config, clip.event
    target_track = clip.gt_tracks.tracks[clip.target_id]
    bbox = []
    for f in range(event.start_frame, event.end_frame + 1):
        box = target_track.box_at(f)
        assert box is not None  # the target is observed in every event frame (the generator guarantees it)
        x1, y1, x2, y2 = box
        bbox.append([int(x1), int(y1), int(x2 - x1), int(y2 - y1)])  # tight mask boxes are whole pixels
    objects = {}
    for obj in clip.objects:
        e = obj.event
        objects[str(obj.object_id)] = {
            "colour": obj.colour,
            "shape": obj.shape,
            "size": obj.size,
            "depth": obj.depth,
            "event": None
            if e is None
            else {
                "name": e.name,
                "st_frame": e.start_frame,
                "ed_frame": e.end_frame,
                **({"new_colour": e.new_colour} if e.new_colour else {}),
            },
        }
    return {
        "img_num": clip.num_frames,
        "img_hw": [cfg.height, cfg.width],
        "st_frame": event.start_frame,
        "ed_frame": event.end_frame,
        "st_time": event.start_frame / cfg.fps,
        "ed_time": event.end_frame / cfg.fps,
        "bbox": bbox,
        "English": clip.query,
        "video_path": video_path,
        "fps": float(cfg.fps),
        "target_id": clip.target_id,
        "event": event.name,
        "label": clip.target.label,
        "phrase": clip.phrase,
        "objects": objects,
        "gt_tracks": clip.gt_tracks.to_dict(),
        "seed": clip.seed,
    }


def clip_key(seed: int, index: int) -> str:
    return f"synth_s{seed}_{index:04d}"


def clip_seeds(seed: int, num: int) -> list[int]:
    """Independent per-clip seeds: ``SeedSequence(seed).spawn(num)``, each as one 32-bit integer."""
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(int(seed)).spawn(int(num))]


def write_clip_video(clip: SynthClip, path: str | os.PathLike) -> Path:
    """Render the clip and encode it to an H.264 MP4 at ``path`` (atomically)."""
    from .video import VideoWriter

    cfg = clip.config
    with VideoWriter(path, cfg.fps, cfg.width, cfg.height, crf=cfg.video_crf, preset=cfg.video_preset) as writer:
        writer.write_all(render_frames(clip))
    return Path(path)


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    num: int,
    seed: int,
    config: SynthConfig = SynthConfig(),
    on_clip: Callable[[str], None] | None = None,
) -> Path:
    """Write ``num`` clips to ``OUT_DIR/videos/<key>.mp4`` and their annotations to ``OUT_DIR/annotations.json``.

    Keys are ``synth_s{seed}_{i:04d}``. The annotations are byte-identical for the same seed and config.
    ``on_clip(key)`` is called after each clip is written. Returns the annotations path.
    """
    if num < 1:
        raise BadInputError(f"--num must be at least 1, got {num}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"output path exists and is not a folder: {out}")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    annotations = {}
    for i, clip_seed in enumerate(clip_seeds(seed, num)):
        key = clip_key(seed, i)
        t0 = time.perf_counter()
        clip = generate_clip(clip_seed, config, key)
        t1 = time.perf_counter()
        rel = f"videos/{key}.mp4"
        write_clip_video(clip, out / rel)
        annotations[key] = clip_annotation(clip, rel)
        logger.info(
            "%s: %s [%d-%d] generated in %.2fs, rendered+encoded in %.2fs",
            key,
            clip.query,
            clip.event.start_frame,
            clip.event.end_frame,
            t1 - t0,
            time.perf_counter() - t1,
        )
        if on_clip is not None:
            on_clip(key)
    path = out / "annotations.json"
    write_json_atomic(path, annotations)
    return path
