"""How each synthetic object moves and looks over time: a walk that bounces off the walls or enters and leaves through
the frame's edges, and its event's effect (jump, spin, grow, shrink, stop, colour change, blink, shake), as per-frame
arrays. :mod:`stvgr1_edge.synth` plans the clip and calls these."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .synth import ObjectEvent, SynthConfig


@dataclass(frozen=True)
class Motion:
    speed: float  # pixels per second
    heading: float  # radians, initial
    turn_rate: float  # radians per second (constant part)
    turn_wobble: float  # radians per second (sinusoidal part)
    turn_period_s: float
    turn_phase: float
    enter_frame: int | None  # None: present from frame 0
    enter_edge: str
    exit_frame: int | None  # walls switch off here and the object drifts out; None: stays


def plan_motion(rng, cfg: SynthConfig, event: ObjectEvent | None) -> Motion:
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
    return Motion(
        speed,
        float(rng.uniform(-math.pi, math.pi)),
        turn_rate,
        turn_wobble,
        float(rng.uniform(3.0, 6.0)),
        float(rng.uniform(0, 2 * math.pi)),
        enter_frame,
        ("left", "right", "top", "bottom")[int(rng.integers(4))],
        exit_frame,
    )


@dataclass(frozen=True)
class Effects:
    offset: np.ndarray  # (N, 2) added to the simulated centre
    scale: np.ndarray  # (N,)
    angle_deg: np.ndarray  # (N,)
    rgb: np.ndarray  # (N, 3) uint8
    moving: np.ndarray  # (N,) bool: the simulated centre advances into this frame
    extent: float  # largest offset (pixels), for wall margins
    max_scale: float


SYMMETRY_DEG = {"square": 90.0, "triangle": 120.0, "star": 72.0, "cross": 90.0}


def spin_rate(shape: str, duration_s: float, rng) -> float:
    """Degrees per second for a spin that ends looking as it started (whole turns of the shape's symmetry)
    and that 2-fps sampling cannot mistake for standing still: whether samples fall 0.45 or 0.6 s apart (the
    sampler spreads frames evenly over the clip), each step turns 20-80% of the shape's symmetry angle."""
    sym = SYMMETRY_DEG[shape]
    rates = []
    for turns in range(1, 20):
        omega = turns * sym / duration_s
        if 50.0 <= omega <= 140.0 and all(0.2 <= (dt * omega / sym) % 1.0 <= 0.8 for dt in (0.45, 0.5, 0.55, 0.6)):
            rates.append(omega)
    if not rates:  # no whole number of turns fits: spin at ~100 deg/s and stop wherever it stops
        return float(rng.uniform(90.0, 110.0))
    return float(rates[int(rng.integers(len(rates)))])


def event_effects(
    event: ObjectEvent | None, colour: str, shape: str, base_radius: float, cfg: SynthConfig, rng
) -> Effects:
    """Per-frame offsets, scale, rotation and colour that make the event happen (identity without one)."""
    n, fps = cfg.num_frames, cfg.fps
    offset = np.zeros((n, 2))
    scale = np.ones(n)
    angle = np.zeros(n)
    from .synth import BLINK_RGB, PALETTE  # the vocabulary (imported here: synth imports this module)

    rgb = np.tile(np.asarray(PALETTE[colour], np.float64), (n, 1))
    moving = np.ones(n, bool)
    extent, max_scale = 0.0, 1.0
    if event is None:
        return Effects(offset, scale, angle, rgb.astype(np.uint8), moving, extent, max_scale)
    st, ed = event.start_frame, event.end_frame
    k = np.arange(ed - st + 1)  # frames since the event started
    ramp = k / max(ed - st, 1)
    smooth = ramp * ramp * (3 - 2 * ramp)
    q = event_quantum(event.name, fps)
    if event.name == "jumps":
        extent = max(1.3 * base_radius, 0.08 * cfg.height)
        offset[st : ed + 1, 1] = -extent * np.abs(np.sin(np.pi * k / q))
    elif event.name == "shakes":
        extent = max(1.0 * base_radius, 0.05 * cfg.width)
        offset[st : ed + 1, 0] = extent * np.sin(2 * np.pi * k / q)
        moving[st + 1 : ed + 1] = False  # shakes in place
    elif event.name == "spins":
        omega = spin_rate(shape, (ed - st) / fps, rng) * (1 if rng.random() < 0.5 else -1)
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
    return Effects(offset, scale, angle, np.round(rgb).astype(np.uint8), moving, extent, max_scale)


def simulate(
    motion: Motion, margin: float, leave_distance: float, moving: np.ndarray, cfg: SynthConfig, rng
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


def event_quantum(name: str, fps: float) -> int:
    """Events made of repeated cycles last a whole number of cycles; this is the cycle in frames."""
    if name == "jumps":
        return max(2, int(round(1.0 * fps)))  # one hop per second: 2-fps samples land 1/2 hop apart
    if name == "shakes":
        return max(2, int(round(0.8 * fps)))
    if name == "blinks":
        return 2 * max(1, int(round(0.5 * fps)))  # dark half a second, normal half a second
    return 1
