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
from typing import Callable

import numpy as np

from .errors import BadInputError, write_json_atomic
from .masks import mask_to_rle
from .synth_motion import event_effects, event_quantum, plan_motion, simulate
from .synth_render import (
    SHAPE_EXTENT,
    full_area,
    inside_frame,
    label_map,
    make_background,
    render_frames,
    visible_mask,
)
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


def _event_length(name: str, cfg: SynthConfig, rng) -> int | None:
    """Inclusive frame count of an event: uniform in the allowed range, rounded to whole cycles."""
    lo, hi = cfg.min_event_frames, cfg.max_event_frames
    q = event_quantum(name, cfg.fps)
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
    background = make_background(rng, cfg)
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
        effects = event_effects(event, colour, shape, base_radius, cfg, rng)
        reach = base_radius * effects.max_scale * SHAPE_EXTENT[shape]
        motion = plan_motion(rng, cfg, event)
        present, center = simulate(
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
        labels = label_map(objects, f, H, W)
        for obj in objects:
            if not obj.present[f]:
                continue
            mask, box = visible_mask(labels, obj, f)
            if box is None:
                continue
            visible_area[obj.object_id - 1, f] = int(np.count_nonzero(mask))
            gt.add(obj.object_id, f, box, mask_to_rle(mask), 1.0, label=obj.label)

    for obj in objects:  # everyone's event must be seen; the target's must be clearly seen
        if obj.event is None:
            continue
        min_fraction = cfg.min_target_visible_fraction if obj.object_id == target_id else 0.0
        for f in range(obj.event.start_frame, obj.event.end_frame + 1):
            if not (obj.present[f] and inside_frame(obj, f, H, W)):
                return None
            visible = visible_area[obj.object_id - 1, f]
            if visible == 0 or visible <= min_fraction * full_area(obj, f, H, W):
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
