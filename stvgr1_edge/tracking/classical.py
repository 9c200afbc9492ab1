"""A weight-free detector and multi-object tracker for static-camera footage (and the synthetic clips).

Detector: a per-pixel median background (estimated from early frames, then updated by a running
average wherever no object is) → foreground by colour difference, shadows suppressed → morphology (an
opening against speckle, then the opened blobs grown back into the raw foreground they touch, so thin parts
survive; a closing) → outline pixels below half the object's contrast dropped (a coded video blurs each
edge over about a pixel) → connected components. Each component is one detection with its box and mask.
A component whose outline is an edge in the background but not in the frame is a "ghost" (an object baked
into the background estimate that has left): the background is healed there and no detection is made. The
same test repairs the estimate itself: an object that stood still for half the early frames is in their
median, and the frames where it is elsewhere show the spot as a ghost; the background there is their median
instead.

Tracker (one tracked frame, top to bottom in :meth:`ClassicalTracker._track_frame`):

1. detect (on the frame downscaled to ``max_side``); describe each detection by its box, mask area and
   an HSV colour histogram;
2. split merged blobs: a detection that covers most of the predicted boxes of two or more tracks, or
   of where they were last seen (they may have stopped, turned, or vanished into it; a lost one only if
   the blob has room for it or was found hidden in it the frame before), and is the detection covering
   each of them best, is divided pixel by pixel between them. Each member's last unsplit mask (its
   shape) is slid over the blob near its prior position (template matching: blob pixels of its colour
   for, pixels off the blob against), one after the other; pixels a placed shape explains are no
   evidence for the next, so two same-coloured objects do not land on the same pixels. Every order of
   placing them is tried (up to three members) and the one explaining the blob best near the priors wins:
   placed first, one of two identical objects crossing may take the other's spot. A pixel then goes to
   the member scoring highest on its colour likelihood (histogram back-projection) times closeness to its
   placed shape (1 inside the shape, decaying with distance outside), so covering shapes win and colour
   decides between them, though a strong colour match may outweigh a nearby shape's edge; a part too
   small to be the object means it is hidden, and so does a shape lying within a clearly larger
   same-coloured member's (indistinguishable from it): its track coasts. Each part goes to the track it
   was cut out for; split parts never change a track's size, colour or shape, but a well-fitting placed
   shape is where the whole object is: the track's box follows it, and its velocity follows it slowly
   (an object that turns while merged, bouncing off a wall, must not drift away on its old velocity);
   then split blobs by colour: a blob that no recently seen track already looks like (the whole blob)
   and that holds two or three clearly different saturated colours, each a compact piece, is divided
   into one detection per colour (2-means in Lab, seeded along the principal axis, colours that are
   far apart for their spread; objects touching when they first appear), each
   colour's main piece, thin stray pixels going to the neighbouring piece;
3. match recently seen and tentative tracks to detections (Hungarian assignment on box IoU, centre
   distance after constant-velocity prediction, colour and size; colour is not a veto for a detection
   where the track was predicted, or where track and detection are each other's nearest, so blinking
   and colour-changing objects keep their IDs); a matched detection much smaller than its track, with no
   other detection where the track was predicted, is a fragment of the object (fading into the floor,
   mostly hidden) and, like a split part, leaves the track's model as it was;
4. re-link lost tracks to the remaining detections near where they vanished (or would be by now) that
   look the same (same ID); a track lost for less than ``max_predict_s`` re-links whatever its colour
   to a same-size detection where it was predicted (colours fading through the floor's);
5. start tentative tracks from the rest. A tentative track gets the next ID (from 1, never reused)
   after ``min_hits`` consecutive detections, unless it turns out to be a lost track coming back.

Memory is bounded: per live track a few numbers, a histogram and its last mask crop; output masks are
stored as COCO RLE in the ``TrackSet`` at the video's native size. The only frames held are the first
``background_frames`` tracked frames (at the processing size) while the background is being estimated;
tracking of those frames waits until then.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..masks import box_iou_matrix, mask_to_rle
from ..tracks import TrackSet
from ..video import Frame, VideoInfo
from .base import Detections, Detector, StreamingTracker, TrackerConfig

logger = logging.getLogger(__name__)

# hue, saturation, value. Hue bins are 10 of OpenCV's 180 units wide: at 15 units, orange (hue 15) and yellow
# (hue 26) shared a bin, so a yellow object behind an orange one came back under the orange one's ID.
_HIST_BINS = (18, 4, 4)
_INVALID = 1e6


# ---------------------------------------------------------------------------------------------------
# Detector
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassicalDetectorConfig:
    """Background-subtraction detector settings (pixel values are 0–255)."""

    diff_threshold: float = 30.0
    """A pixel is foreground when its largest per-channel difference to the background exceeds this."""
    suppress_shadows: bool = True
    """Treat pixels that are a uniformly darker version of the background (a shadow) as background."""
    shadow_min_ratio: float = 0.5
    """Shadow: brightness / background brightness at least this ..."""
    shadow_max_ratio: float = 0.92
    """... and at most this ..."""
    shadow_max_chroma_shift: float = 0.035
    """... with the normalised colour (r, g, b) / (r + g + b) changing by at most this per channel."""
    background_rate: float = 0.02
    """Running-average update rate of the background where no object is (follows slow lighting changes)."""
    min_area_fraction: float = 0.0006
    """Connected components smaller than this fraction of the frame are noise."""
    max_area_fraction: float = 0.5
    """Components larger than this fraction of the frame are a global change (e.g. lighting), not objects."""
    ghost_edge_ratio: float = 0.5
    """A blob whose outline is this many times weaker an edge in the frame than in the background is a
    ghost (an object that was in the background estimate and left): the background is healed there. 0: off."""
    background_ghost_min_samples: int = 2
    """When the background is estimated, a spot that at least this many of the frames show as a ghost held an
    object standing still; the background there becomes the median of those frames. 0: off."""
    kernel_fraction: float = 1 / 100
    """Morphology kernel size as a fraction of the frame's short side (at least 3 pixels)."""
    restore_thin_parts: bool = True
    """After the 3x3 opening (which removes speckle), grow what survived back into the raw foreground it touches
    (geodesic reconstruction), so thin parts of an object (a star's tips, a person's arm) are kept. Off: the
    opening alone (40 held-out synthetic clips: small stars' mean box IoU 0.69 instead of 0.92)."""
    edge_contrast_fraction: float = 0.5
    """An outline pixel whose difference to the background is below this fraction of the strongest difference
    within 2 pixels inside the object is background: a compressed video blurs each edge over about one pixel,
    and the half-contrast point is where the edge is. 0: off (boxes about a pixel too large on each side)."""


class ClassicalDetector(Detector):
    """Moving (or non-background) objects in a static-camera video, without weights.

    It learns the background from the stream: call :meth:`fit_background` with a few early frames
    (a per-pixel median), or let the first call take its frame as the background. Each call updates the
    background where nothing was detected.
    """

    def __init__(self, config: ClassicalDetectorConfig | None = None):
        self.config = config or ClassicalDetectorConfig()
        self.background: np.ndarray | None = None

    def reset(self) -> None:
        self.background = None

    def fit_background(self, images: Sequence[np.ndarray]) -> None:
        """Set the background to the per-pixel median of ``images`` (RGB uint8, same size), then repair
        it where it holds an object that stood still for much of that time (see :meth:`_repair_ghosts`)."""
        if len(images) == 0:
            raise ValueError("fit_background needs at least one frame")
        stack = np.stack(images)
        self.background = np.median(stack, axis=0).astype(np.float32)
        if self.config.background_ghost_min_samples > 0 and len(images) > 1:
            self._repair_ghosts(stack)

    def _repair_ghosts(self, stack: np.ndarray) -> None:
        """An object that stood still in ``stack`` for about half the time (or more) is in the median: in the
        frames where it is elsewhere, the spot shows up as a ghost (a blob whose outline is an edge in the
        background but not in the frame). Where at least ``background_ghost_min_samples`` frames show a ghost,
        the background becomes the median of those frames there (what is under the object)."""
        import cv2

        n, height, width = stack.shape[:3]
        ghost = np.zeros((n, height, width), bool)
        min_area = self.config.min_area_fraction * height * width
        max_area = self.config.max_area_fraction * height * width
        for k in range(n):
            fg = self.foreground_mask(stack[k])
            count, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
            for i in range(1, count):
                if min_area <= stats[i, cv2.CC_STAT_AREA] <= max_area and self._is_ghost(stack[k], labels, stats[i], i):
                    ghost[k] |= labels == i
        votes = ghost.sum(axis=0)
        repair = votes >= self.config.background_ghost_min_samples
        if not repair.any():
            return
        ys, xs = np.nonzero(repair)
        samples = stack[:, ys, xs].astype(np.float32)  # (n, P, 3)
        samples[~ghost[:, ys, xs]] = np.nan
        self.background[ys, xs] = np.nanmedian(samples, axis=0)
        logger.debug("background: repaired %d pixels that held a still object", len(ys))

    def foreground_mask(self, image: np.ndarray) -> np.ndarray:
        """Boolean (H, W) foreground after shadow suppression and morphology (no background update)."""
        import cv2

        cfg = self.config
        frame = image.astype(np.float32)
        bg = self.background
        difference = np.abs(frame - bg).max(axis=2)
        fg = difference > cfg.diff_threshold
        if cfg.suppress_shadows:  # tested only where the colour differs (the same result, a fraction of the work)
            ys, xs = np.nonzero(fg)
            f_px, b_px = frame[ys, xs], bg[ys, xs]
            brightness, bg_brightness = f_px.sum(axis=1) + 1.0, b_px.sum(axis=1) + 1.0
            ratio = brightness / bg_brightness
            chroma_shift = np.abs(f_px / brightness[:, None] - b_px / bg_brightness[:, None]).max(axis=1)
            shadow = (ratio >= cfg.shadow_min_ratio) & (ratio <= cfg.shadow_max_ratio) & (chroma_shift <= cfg.shadow_max_chroma_shift)
            fg[ys[shadow], xs[shadow]] = False
        k = max(3, int(round(min(image.shape[:2]) * cfg.kernel_fraction)) | 1)
        square3 = np.ones((3, 3), np.uint8)
        raw = fg.astype(np.uint8)
        fg_u8 = cv2.morphologyEx(raw, cv2.MORPH_OPEN, square3)
        if cfg.restore_thin_parts:  # reconstruction by dilation: the raw blobs the opening left any part of
            count, raw_labels = cv2.connectedComponents(raw, connectivity=8)
            touched = np.zeros(count, bool)
            touched[raw_labels[fg_u8 > 0]] = True  # never label 0: the opening lies within the raw foreground
            fg_u8 = touched[raw_labels].astype(np.uint8)
        fg_u8 = cv2.morphologyEx(fg_u8, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        if cfg.edge_contrast_fraction > 0:
            outline = fg_u8.astype(bool) & ~cv2.erode(fg_u8, square3).astype(bool)
            inside = cv2.dilate(difference * fg_u8, np.ones((5, 5), np.uint8))
            fg_u8[outline & (difference < cfg.edge_contrast_fraction * inside)] = 0
        return fg_u8.astype(bool)

    def update_background(self, image: np.ndarray, foreground: np.ndarray) -> None:
        """Blend ``image`` into the background wherever ``foreground`` is False."""
        import cv2

        rate = self.config.background_rate
        if rate <= 0:
            return
        k = max(3, int(round(min(image.shape[:2]) * self.config.kernel_fraction)) | 1)
        near_object = cv2.dilate(foreground.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
        free = ~near_object
        self.background[free] += rate * (image.astype(np.float32)[free] - self.background[free])

    def _is_ghost(self, image: np.ndarray, labels: np.ndarray, stat: np.ndarray, label: int) -> bool:
        """A "ghost" is an object baked into the background that has since moved away: the blob's outline
        is an edge in the background but not in the frame."""
        import cv2

        if self.config.ghost_edge_ratio <= 0:
            return False
        x, y, w, h = (int(v) for v in stat[:4])
        pad = 2
        y0, y1, x0, x1 = max(0, y - pad), min(image.shape[0], y + h + pad), max(0, x - pad), min(image.shape[1], x + w + pad)
        blob = (labels[y0:y1, x0:x1] == label).astype(np.uint8)
        outline = (blob - cv2.erode(blob, np.ones((3, 3), np.uint8))).astype(bool)
        if not outline.any():
            return False

        def edge_strength(rgb: np.ndarray) -> float:  # colour gradient: the strongest channel's
            gx = np.abs(cv2.Sobel(rgb, cv2.CV_32F, 1, 0, ksize=3)).max(axis=2)
            gy = np.abs(cv2.Sobel(rgb, cv2.CV_32F, 0, 1, ksize=3)).max(axis=2)
            return float(np.hypot(gx, gy)[outline].mean())

        frame_edges = edge_strength(image[y0:y1, x0:x1].astype(np.float32))
        background_edges = edge_strength(self.background[y0:y1, x0:x1])
        return frame_edges < self.config.ghost_edge_ratio * background_edges

    def _heal_if_ghost(self, image: np.ndarray, labels: np.ndarray, stat: np.ndarray, label: int) -> bool:
        """If the blob is a ghost (:meth:`_is_ghost`), heal the background there; True if a ghost."""
        import cv2

        if not self._is_ghost(image, labels, stat, label):
            return False
        x, y, w, h = (int(v) for v in stat[:4])
        pad = 2
        y0, y1, x0, x1 = max(0, y - pad), min(image.shape[0], y + h + pad), max(0, x - pad), min(image.shape[1], x + w + pad)
        blob = (labels[y0:y1, x0:x1] == label).astype(np.uint8)
        region = cv2.dilate(blob, np.ones((3, 3), np.uint8)).astype(bool)
        self.background[y0:y1, x0:x1][region] = image[y0:y1, x0:x1][region]
        logger.debug("healed a background ghost at %s", [x, y, x + w, y + h])
        return True

    def __call__(self, image: np.ndarray) -> Detections:
        import cv2

        if self.background is None or self.background.shape != image.shape:
            self.fit_background([image])
            return Detections.empty()
        fg = self.foreground_mask(image)
        self.update_background(image, fg)
        height, width = fg.shape
        count, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
        min_area = self.config.min_area_fraction * height * width
        max_area = self.config.max_area_fraction * height * width
        keep = [i for i in range(1, count) if min_area <= stats[i, cv2.CC_STAT_AREA] <= max_area]
        keep = [i for i in keep if not self._heal_if_ghost(image, labels, stats[i], i)]
        if not keep:
            return Detections.empty()
        boxes = np.array([[stats[i, cv2.CC_STAT_LEFT], stats[i, cv2.CC_STAT_TOP],
                           stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH],
                           stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT]] for i in keep], np.float32)
        masks = np.stack([labels == i for i in keep])
        scores = np.ones(len(keep), np.float32)
        return Detections(boxes, scores, ("object",) * len(keep), masks)


# ---------------------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassicalTrackerConfig(TrackerConfig):
    """Classical tracker settings (times in seconds of video, distances in units of the box diagonal)."""

    detector: ClassicalDetectorConfig = field(default_factory=ClassicalDetectorConfig)
    """Settings of the background-subtraction detector."""
    max_side: int = 640
    """Frames are tracked downscaled to at most this long side (0: native size); outputs are native."""
    background_frames: int = 80
    """Tracked frames held at the start (at the processing size) to estimate the background; their
    tracking waits until then. Longer windows are fooled less by objects that pause."""
    background_samples: int = 40
    """At most this many of those frames, evenly spaced, enter the per-pixel median."""
    min_hits: int = 3
    """Consecutive detections before a new object gets an ID (filters flicker)."""
    max_lost_s: float = 8.0
    """A lost track is kept this long for re-linking, then forgotten."""
    max_predict_s: float = 1.0
    """Constant-velocity prediction runs at most this long past the last observation."""
    match_gate: float = 1.0
    """A recently seen track matches a detection only if they overlap or their centres are closer than this."""
    relink_gate: float = 1.5
    """A lost track re-links to a detection within this distance of its prediction ..."""
    relink_gate_growth_per_s: float = 0.5
    """... plus this much per second lost (a hidden object may have moved)."""
    max_appearance_distance: float = 0.6
    """Bhattacharyya distance of colour histograms above which a match is refused."""
    relink_max_appearance_distance: float = 0.45
    """The same bound for re-linking a lost track (stricter: position evidence is weaker)."""
    relink_appearance_free_distance: float = 0.5
    """A track lost for at most ``max_predict_s`` re-links whatever its colour to a detection this close to its
    prediction whose size is within ``relink_max_size_change`` (objects change colour or fade into the floor
    colour for a few frames)."""
    relink_max_size_change: float = 0.4
    """|log(area ratio)| up to which a detection near a recently lost track's prediction counts as the same size."""
    appearance_free_iou: float = 0.3
    """A recently seen track overlapping a detection by at least this IoU may match it whatever its colour ..."""
    appearance_free_distance: float = 0.5
    """... and so may one whose predicted centre is this close to the detection's, or which is the
    detection's nearest track while the detection is its nearest (within ``match_gate``): unambiguous by motion."""
    distance_weight: float = 0.5
    """Weight of the centre distance in the matching cost (box IoU has weight 1)."""
    appearance_weight: float = 1.0
    """Weight of the colour-histogram distance in the matching cost."""
    size_weight: float = 0.3
    """Weight of |log(area ratio)| in the matching cost."""
    merge_min_cover: float = 0.5
    """A detection is a merge of several tracks if it covers at least this much of each one's predicted box ..."""
    merge_min_extra_area: float = 0.5
    """... and, if one of them was lost, its area exceeds the largest one's by this fraction of the second one's."""
    engulf_min_overlap: float = 0.9
    """When splitting a merge, a member whose placed shape lies this much inside the placed shapes of members
    at least ``engulf_min_area_ratio`` times its size and of the same colour (``engulf_max_appearance_distance``)
    is hidden: indistinguishable from them, it coasts."""
    engulf_min_area_ratio: float = 1.5
    """How much larger an engulfing member must be (two alike objects overlapping engulf neither)."""
    engulf_max_appearance_distance: float = 0.3
    """Bhattacharyya distance of colour histograms up to which two members count as the same colour."""
    fragment_max_fraction: float = 0.5
    """A detection matched to a track but smaller than this fraction of its usual area, with no other detection
    where the track was predicted, is a fragment of it (the object fading into the floor's colour, or mostly
    hidden): like a split part, it shows where the object is but does not change its size, colour, shape or
    velocity model."""
    min_visible_fraction: float = 0.2
    """After splitting a merge, a part smaller than this fraction of its track's usual area counts as hidden."""
    split_search_fraction: float = 0.35
    """When splitting a merge, each member's last seen shape is slid over the blob up to this fraction of
    its size (plus its speed) around its prior position to find where it is (template matching)."""
    split_max_orders_members: int = 3
    """Merges of up to this many members try every order of placing their shapes (see
    ``ClassicalTracker._place_members``); larger ones place the largest first."""
    split_motion_min_fit: float = 0.6
    """A member's shape placed in a merge with at least this fit per shape pixel (1: every shape pixel on
    the blob, in its colour) shows where the whole object is: its track's box follows the placed shape and
    its velocity follows the placed shape's motion (at ``split_motion_rate``). Otherwise the track coasts on
    its prediction. Without this, an object that turned while merged (bounced off a wall) keeps its old
    velocity for as long as the merge lasts and drifts away from itself."""
    split_motion_rate: float = 0.3
    """Weight of a placed shape's frame-to-frame motion in the track's velocity (a full detection has 0.5)."""
    colour_split: bool = True
    """Split a blob no track explains that holds two or three clearly different saturated colours (objects
    that touch when they first appear) into one detection per colour, by 2-means clustering in Lab."""
    colour_split_min_chroma: float = 25.0
    """Pixels with Lab chroma (OpenCV 8-bit a, b) below this are not colour evidence (floor, dark, edges)."""
    colour_split_min_share: float = 0.2
    """Each colour must cover at least this share of the blob's coloured pixels ..."""
    colour_split_min_distance: float = 20.0
    """... and the colours' Lab centres (OpenCV 8-bit units) must be at least this far apart (blue and purple
    are 28.6 apart, every other pair of the synthetic palette 60 or more) ..."""
    colour_split_min_separation: float = 4.0
    """... and that many robust standard deviations of either colour along the line between them (two flat
    colours, not one colour's noise or gradient cut in half) ..."""
    colour_split_min_compactness: float = 0.8
    """... and each colour's largest connected piece must hold this share of it (objects, not texture)."""


@dataclass(eq=False)
class _Observation:
    box: np.ndarray
    mask: np.ndarray
    hist: np.ndarray
    area: float
    partial: bool = False
    """Came from splitting a merged blob (box and area are only the visible part)."""
    owner: "_TrackState | None" = None
    """The track a split part was cut out for: it goes to that track and to no other."""
    placed: np.ndarray | None = None
    """For a split part: the box of its track's shape where it fits the merged blob well (the whole
    object's extent, hidden parts included), or None."""


@dataclass(eq=False)
class _TrackState:
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

    def predict(self, frame: int, max_predict_frames: float) -> np.ndarray:
        dt = min(frame - self.last_frame, max_predict_frames)
        vx, vy = self.velocity
        return self.box + np.array([vx, vy, vx, vy], np.float32) * dt


def _centre(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], axis=-1)


def _diagonal(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(np.hypot(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]), 1.0)


def _covered_fraction(box: np.ndarray, cover: np.ndarray) -> float:
    """Share of ``box``'s area inside ``cover``."""
    iw = min(box[2], cover[2]) - max(box[0], cover[0])
    ih = min(box[3], cover[3]) - max(box[1], cover[1])
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1.0)
    return float(max(iw, 0.0) * max(ih, 0.0) / area)


def _shift_to_cover(box: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``box`` moved (not resized) by the least amount that makes it cover ``part`` along each axis."""
    shifted = box.copy()
    for lo, hi in ((0, 2), (1, 3)):
        if part[lo] < shifted[lo] and part[hi] <= shifted[hi]:
            shifted[[lo, hi]] -= shifted[lo] - part[lo]
        elif part[hi] > shifted[hi] and part[lo] >= shifted[lo]:
            shifted[[lo, hi]] += part[hi] - shifted[hi]
    return shifted


def _crop(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``mask`` cropped to the integer pixel box covering ``box``."""
    x1, y1 = int(box[0]), int(box[1])
    return mask[y1:int(math.ceil(box[3])), x1:int(math.ceil(box[2]))].copy()


def _hsv_bins(image_rgb: np.ndarray) -> np.ndarray:
    """Flat histogram bin index of every pixel (H, W) for the HSV histogram."""
    import cv2

    hsv = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2HSV)
    hb, sb, vb = _HIST_BINS
    h = np.minimum(hsv[..., 0].astype(np.int32) * hb // 180, hb - 1)
    s = hsv[..., 1].astype(np.int32) * sb // 256
    v = hsv[..., 2].astype(np.int32) * vb // 256
    return (h * sb + s) * vb + v


def _colour_hist(bins: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hist = np.bincount(bins[mask], minlength=int(np.prod(_HIST_BINS))).astype(np.float32)
    return hist / max(hist.sum(), 1.0)


def _two_means(points: np.ndarray, min_distance: float, min_separation: float = 0.0,
               iterations: int = 8) -> tuple[np.ndarray, np.ndarray] | None:
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
    _, _, vt = np.linalg.svd(centred[::max(1, len(points) // 2000)], full_matrices=False)
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


def _hist_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two normalised histograms, in [0, 1]."""
    bc = float(np.sqrt(a * b).sum())
    return math.sqrt(max(0.0, 1.0 - min(bc, 1.0)))


class ClassicalTracker(StreamingTracker):
    """Weight-free multi-object tracker for static cameras (see the module docstring)."""

    def __init__(self, config: ClassicalTrackerConfig | None = None):
        self.config = config or ClassicalTrackerConfig()
        self.detector = ClassicalDetector(self.config.detector)
        self._info: VideoInfo | None = None

    # -- StreamingTracker ---------------------------------------------------------------------------
    def start(self, info: VideoInfo, always_track: frozenset[int] = frozenset()) -> None:
        self._schedule_video(always_track)
        self._info = info
        self.detector.reset()
        self._tracks: list[_TrackState] = []
        self._next_id = 1
        self._buffer: list[Frame] = []
        self._ready = False
        self._prev_frame: int | None = None
        fps = info.fps if info.fps > 0 else 25.0
        self._fps = fps
        self._max_lost_frames = self.config.max_lost_s * fps
        self._max_predict_frames = self.config.max_predict_s * fps
        self._result = TrackSet(info.width, info.height, info.fps, info.num_frames)
        long_side = max(info.width, info.height)
        self._scale = min(1.0, self.config.max_side / long_side) if self.config.max_side > 0 else 1.0
        self._size = (max(1, int(round(info.width * self._scale))), max(1, int(round(info.height * self._scale))))

    def step(self, frame: Frame) -> None:
        if self._info is None:
            raise RuntimeError("ClassicalTracker.step called before start()")
        if not self.should_track(frame.index):
            return
        frame = Frame(frame.index, frame.time_s, self._to_processing_size(frame.image))
        if self._ready:
            self._track_frame(frame)
            return
        self._buffer.append(frame)
        if len(self._buffer) >= self.config.background_frames:
            self._flush_buffer()

    def finish(self) -> TrackSet:
        if self._info is None:
            raise RuntimeError("ClassicalTracker.finish called before start()")
        if not self._ready:
            self._flush_buffer()
        result = self._result
        logger.info("classical tracker: %d tracks", len(result))
        self._info, self._tracks, self._buffer = None, [], []
        return result

    # -- internals ----------------------------------------------------------------------------------
    def _to_processing_size(self, image: np.ndarray) -> np.ndarray:
        import cv2

        if image.shape[1] != self._info.width or image.shape[0] != self._info.height:
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, video is {self._info.width}x{self._info.height}")
        if self._scale == 1.0:
            return image
        return cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)

    def _flush_buffer(self) -> None:
        """Estimate the background from the held frames, then track them in order."""
        if self._buffer:
            n = len(self._buffer)
            picks = np.unique(np.linspace(0, n - 1, min(n, self.config.background_samples)).round().astype(int))
            self.detector.fit_background([self._buffer[i].image for i in picks])
        self._ready = True
        buffer, self._buffer = self._buffer, []
        for frame in buffer:
            self._track_frame(frame)

    def _observations(self, image: np.ndarray, bins: np.ndarray) -> list[_Observation]:
        dets = self.detector(image)
        obs = []
        for box, mask in zip(dets.boxes, dets.masks if dets.masks is not None else []):
            obs.append(_Observation(box.astype(np.float32), mask, _colour_hist(bins, mask), float(mask.sum())))
        return obs

    def _track_frame(self, frame: Frame) -> None:
        cfg = self.config
        f = frame.index
        bins = _hsv_bins(frame.image)
        obs = self._observations(frame.image, bins)

        recent = [t for t in self._tracks if self._prev_frame is not None and t.last_frame == self._prev_frame]
        lost = [t for t in self._tracks if t.track_id is not None and t not in recent]
        preds = {id(t): t.predict(f, self._max_predict_frames) for t in self._tracks}

        obs = self._split_merged(obs, [t for t in self._tracks if t.track_id is not None], preds, bins, f)
        if cfg.colour_split:
            obs = self._split_by_colour(obs, frame.image, bins, [t for t in recent if t.track_id is not None], preds)

        # 1. recently seen (and tentative) tracks <-> detections
        matches, free_obs = self._assign(recent, obs, preds, gate=cfg.match_gate,
                                         max_app=cfg.max_appearance_distance, frame=f)
        # 2. lost tracks <-> remaining detections, near where they vanished
        relinks, free_obs = self._assign(lost, free_obs, preds, gate=None,
                                         max_app=cfg.relink_max_appearance_distance, frame=f)
        matches.extend(relinks)
        # 3. the rest start tentative tracks

        self._mark_fragments(matches, obs, preds)
        matched_tracks = set()
        for track, ob in matches:
            self._update(track, ob, f)
            matched_tracks.add(id(track))
        for ob in free_obs:
            self._tracks.append(_TrackState(ob.box, np.zeros(2, np.float32), ob.hist, ob.area, f,
                                            pending=[self._record(ob, f)], shape=_crop(ob.mask, ob.box)))
            matched_tracks.add(id(self._tracks[-1]))

        survivors = []
        for t in self._tracks:
            if id(t) not in matched_tracks and t.track_id is None:
                continue  # a tentative track must be seen in consecutive tracked frames
            if t.track_id is not None and f - t.last_frame > self._max_lost_frames:
                continue
            survivors.append(t)
        self._tracks = survivors
        self._prev_frame = f

    def _mark_fragments(self, matches: list[tuple[_TrackState, _Observation]], obs: list[_Observation], preds: dict) -> None:
        """A detection much smaller than the track it matched, with no other detection where the track was
        predicted, is a fragment of that object (fading into the floor's colour, mostly hidden): it only shows
        where the object is (as a split part does). With another detection there, the track was two objects
        that have come apart."""
        cfg = self.config
        for track, ob in matches:
            if ob.partial or track.track_id is None or ob.area >= cfg.fragment_max_fraction * track.area:
                continue
            pred = preds[id(track)]
            if not any(o is not ob and _covered_fraction(o.box, pred) > 0 for o in obs):
                ob.partial = True

    def _record(self, ob: _Observation, frame: int) -> tuple:
        """An output observation ``(frame, box, mask RLE, score)`` at the video's native size."""
        import cv2

        box, mask = ob.box, ob.mask
        if self._scale != 1.0:
            info = self._info
            box = box * np.array([info.width / self._size[0], info.height / self._size[1]] * 2, np.float32)
            mask = cv2.resize(mask.astype(np.uint8), (info.width, info.height), interpolation=cv2.INTER_NEAREST).astype(bool)
        return frame, [float(v) for v in box], mask_to_rle(mask), 0.5 if ob.partial else 1.0

    def _update(self, track: _TrackState, ob: _Observation, frame: int) -> None:
        """Fold an observation into a track; confirm a tentative track after ``min_hits``."""
        dt = max(frame - track.last_frame, 1)
        if not ob.partial:  # a split part shows only what is visible: keep the object's model as it was
            if dt <= self._max_predict_frames:
                step = ((_centre(ob.box) - _centre(track.box)) / dt).astype(np.float32)
                track.velocity = 0.5 * track.velocity + 0.5 * step if track.hits > 1 else step
            else:
                track.velocity = np.zeros(2, np.float32)
            track.hist = 0.7 * track.hist + 0.3 * ob.hist
            track.area = 0.5 * track.area + 0.5 * ob.area
        if ob.partial and ob.placed is not None:  # the whole object, found by its shape in a merge
            if dt <= self._max_predict_frames:
                step = ((_centre(ob.placed) - _centre(track.box)) / dt).astype(np.float32)
                rate = self.config.split_motion_rate
                track.velocity = (1 - rate) * track.velocity + rate * step
            track.box = ob.placed
        elif ob.partial:  # keep the object's full extent: coast on the prediction, shifted to cover what is seen
            track.box = _shift_to_cover(track.predict(frame, self._max_predict_frames), ob.box)
        else:
            track.box = ob.box
            track.shape = _crop(ob.mask, ob.box)
        track.last_frame = frame
        track.hits += 1
        record = self._record(ob, frame)
        if track.track_id is not None:
            self._result.add(track.track_id, *record)
            return
        track.pending.append(record)
        if track.hits >= self.config.min_hits:
            self._confirm(track, frame)

    def _confirm(self, track: _TrackState, frame: int) -> None:
        """Give a tentative track an ID: a lost track's, if it is that object coming back, else the next."""
        first = track.pending[0][0]
        lost = [t for t in self._tracks if t.track_id is not None and t.last_frame < first]
        best, best_cost = None, _INVALID
        for old in lost:
            cost = self._relink_cost(old, track.box, track.hist, track.area, first)
            if cost < best_cost:
                best, best_cost = old, cost
        if best is not None:
            track.track_id = best.track_id
            self._tracks.remove(best)
            logger.debug("re-linked a reappearing object to ID %d", best.track_id)
        else:
            track.track_id = self._next_id
            self._next_id += 1
        for record in track.pending:
            self._result.add(track.track_id, *record)
        track.pending = []

    def _relink_cost(self, track: _TrackState, box: np.ndarray, hist: np.ndarray, area: float, frame: int) -> float:
        cfg = self.config
        # where it would be if it kept moving, or where it vanished (it may have stopped, hidden)
        dist = min(float(np.linalg.norm(_centre(c) - _centre(box)) / _diagonal(c))
                   for c in (track.predict(frame, self._max_predict_frames), track.box))
        lost_s = (frame - track.last_frame) / self._fps
        if dist > cfg.relink_gate + cfg.relink_gate_growth_per_s * lost_s:
            return _INVALID
        app = _hist_distance(track.hist, hist)
        size = min(abs(math.log(max(area, 1.0) / max(track.area, 1.0))), 2.0)
        if app > cfg.relink_max_appearance_distance:
            where_predicted = (frame - track.last_frame <= self._max_predict_frames
                               and dist <= cfg.relink_appearance_free_distance and size <= cfg.relink_max_size_change)
            if not where_predicted:
                return _INVALID
        return cfg.appearance_weight * app + cfg.distance_weight * dist + cfg.size_weight * size

    def _assign(self, tracks: list[_TrackState], obs: list[_Observation], preds: dict, gate: float | None,
                max_app: float, frame: int) -> tuple[list[tuple[_TrackState, _Observation]], list[_Observation]]:
        """Hungarian assignment; ``gate=None`` means re-linking lost tracks (:meth:`_relink_cost`)."""
        from scipy.optimize import linear_sum_assignment

        if not tracks or not obs:
            return [], list(obs)
        cfg = self.config
        cost = np.full((len(tracks), len(obs)), _INVALID)
        ob_boxes = np.stack([o.box for o in obs])
        if gate is None:
            for i, t in enumerate(tracks):
                for j, o in enumerate(obs):
                    if o.owner is not None:
                        cost[i, j] = 0.0 if o.owner is t else _INVALID
                    else:
                        cost[i, j] = self._relink_cost(t, o.box, o.hist, o.area, frame)
        else:
            pred_boxes = np.stack([preds[id(t)] for t in tracks])
            iou = box_iou_matrix(pred_boxes, ob_boxes)
            dist = np.linalg.norm(_centre(pred_boxes)[:, None] - _centre(ob_boxes)[None], axis=2) / _diagonal(pred_boxes)[:, None]
            mutual_nearest = (dist == dist.min(axis=1, keepdims=True)) & (dist == dist.min(axis=0, keepdims=True))
            for i, t in enumerate(tracks):
                for j, o in enumerate(obs):
                    if o.owner is not None:  # a split part belongs to the track it was cut out for
                        cost[i, j] = 0.0 if o.owner is t else _INVALID
                        continue
                    if iou[i, j] <= 0 and dist[i, j] > gate:
                        continue
                    app = _hist_distance(t.hist, o.hist)
                    where_predicted = (iou[i, j] >= cfg.appearance_free_iou or dist[i, j] <= cfg.appearance_free_distance
                                       or (mutual_nearest[i, j] and dist[i, j] <= gate))
                    if app > max_app and not where_predicted:
                        continue  # being where predicted wins over colour (objects blink, change colour)
                    size = 0.0 if o.partial else min(abs(math.log(max(o.area, 1.0) / max(t.area, 1.0))), 2.0)
                    cost[i, j] = (1 - iou[i, j]) + cfg.distance_weight * dist[i, j] + cfg.appearance_weight * app + cfg.size_weight * size
        rows, cols = linear_sum_assignment(cost)
        matches = [(tracks[r], obs[c]) for r, c in zip(rows, cols) if cost[r, c] < _INVALID]
        used = {c for r, c in zip(rows, cols) if cost[r, c] < _INVALID}
        return matches, [o for j, o in enumerate(obs) if j not in used]

    def _split_merged(self, obs: list[_Observation], tracks: list[_TrackState], preds: dict,
                      bins: np.ndarray, frame: int) -> list[_Observation]:
        """Divide detections that hold several tracked objects (occlusion) between those objects.

        A track is in a detection if the detection covers most of its predicted box or of the box where
        it was last seen (an object that stopped, turned, or vanished into a blob is still there), and
        no other detection covers it better.
        """
        cfg = self.config
        if len(tracks) < 2 or not obs:
            return obs
        # how well each detection covers each track: its predicted box or where it was last seen (it may
        # have stopped or turned - jumps, shakes - or vanished into the blob)
        cover = np.zeros((len(tracks), len(obs)))
        prior_of = {}
        for i, t in enumerate(tracks):
            candidates = [preds[id(t)], t.box]
            for j, ob in enumerate(obs):
                covers = [_covered_fraction(c, ob.box) for c in candidates]
                best = int(np.argmax(covers))
                cover[i, j], prior_of[i, j] = covers[best], candidates[best]
        # a track is inside at most one blob: the one covering it best
        inside = (cover >= cfg.merge_min_cover) & (cover == cover.max(axis=1, keepdims=True))
        out: list[_Observation] = []
        for j, ob in enumerate(obs):
            members = [t for i, t in enumerate(tracks) if inside[i, j]]
            priors = {id(t): prior_of[i, j] for i, t in enumerate(tracks) if inside[i, j]}
            if len(members) < 2:
                out.append(ob)
                continue
            if any(t.last_frame != self._prev_frame and t.hidden_frame != self._prev_frame for t in members):
                # a lost member is only believed to be inside if the blob has room for it, unless it was
                # found hidden in this merge the frame before (an object behind another stays there)
                areas = sorted((t.area for t in members), reverse=True)
                if ob.area < areas[0] + cfg.merge_min_extra_area * areas[1]:
                    out.append(ob)
                    continue
            out.extend(self._split(ob, members, priors, bins, frame))
        return out

    def _split(self, ob: _Observation, members: list[_TrackState], priors: dict, bins: np.ndarray,
               frame: int) -> list[_Observation]:
        """Divide one blob's pixels between the tracks inside it.

        Each member's last seen shape is placed where it fits the blob best near its prior box (template
        matching: blob pixels of the member's colour count for it, pixels off the blob against it). A blob
        pixel goes to the member with the highest colour likelihood times closeness to its placed shape
        (1 inside it, decaying outside): in effect to the shape covering it, colour deciding where shapes
        overlap, else to the nearest shape.
        """
        import cv2

        x1, y1 = int(ob.box[0]), int(ob.box[1])
        x2, y2 = int(math.ceil(ob.box[2])), int(math.ceil(ob.box[3]))
        crop_mask = ob.mask[y1:y2, x1:x2]
        crop_bins = bins[y1:y2, x1:x2]
        ys, xs = np.mgrid[y1:y2, x1:x2]
        # place the shapes one by one (in the order that explains the blob best, see _place_members)
        placements, fits = self._place_members(members, priors, ob.mask, bins)
        # each placed shape as a mask over the blob's box
        shape_masks: dict[int, np.ndarray] = {}
        for t in members:
            if placements[id(t)] is None:
                continue
            (px, py), (th, tw) = placements[id(t)], t.shape.shape
            inside = np.zeros((y2 - y1, x2 - x1), np.uint8)
            ax1, ay1, ax2, ay2 = max(px, x1), max(py, y1), min(px + tw, x2), min(py + th, y2)
            if ax2 > ax1 and ay2 > ay1:
                inside[ay1 - y1:ay2 - y1, ax1 - x1:ax2 - x1] = t.shape[ay1 - py:ay2 - py, ax1 - px:ax2 - px]
            shape_masks[id(t)] = inside
        # a shape that lies within a larger same-coloured one is indistinguishable from it: that object is
        # hidden (it coasts), not a part of the other's pixels
        cfg = self.config
        engulfed = set()
        for t in members:
            own = shape_masks.get(id(t))
            if own is None or not (own.astype(bool) & crop_mask).any():
                continue
            others = np.zeros_like(crop_mask)
            for u in members:
                if u is not t and id(u) in shape_masks and u.area >= cfg.engulf_min_area_ratio * t.area and _hist_distance(t.hist, u.hist) <= cfg.engulf_max_appearance_distance:
                    others |= shape_masks[id(u)].astype(bool)
            on_blob = own.astype(bool) & crop_mask
            if (on_blob & others).sum() >= cfg.engulf_min_overlap * on_blob.sum():
                engulfed.add(id(t))
        scores = []
        for t in members:
            colour = t.hist[crop_bins] / max(float(t.hist.max()), 1e-6)
            placed = placements[id(t)]
            if id(t) in engulfed:
                scores.append(np.zeros(crop_mask.shape))
                continue
            if placed is None:  # no shape: a box-shaped prior at the prior box
                p = priors[id(t)]
                cx, cy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
                sx, sy = max((p[2] - p[0]) / 2, 1.0), max((p[3] - p[1]) / 2, 1.0)
                d = np.maximum(np.abs(xs + 0.5 - cx) / sx, np.abs(ys + 0.5 - cy) / sy)
                spatial = np.where(d <= 1, 1.0 - 1e-3 * d, np.exp(-3.0 * (d - 1)))
            else:
                px, py = placed
                th, tw = t.shape.shape
                inside = shape_masks[id(t)]
                if inside.any():
                    gap = cv2.distanceTransform((1 - inside).astype(np.uint8), cv2.DIST_L2, 3)
                else:
                    gap = np.hypot(np.maximum(np.maximum(px - xs, xs - (px + tw)), 0), np.maximum(np.maximum(py - ys, ys - (py + th)), 0))
                radius = max(min(th, tw) / 2, 1.0)
                centre_d = np.hypot(xs + 0.5 - (px + tw / 2), ys + 0.5 - (py + th / 2)) / radius
                spatial = np.where(inside > 0, 1.0 - 1e-3 * centre_d, np.exp(-3.0 * gap / radius))
            scores.append((colour + 0.05) * spatial)
        scores = np.stack(scores)
        owner = scores.argmax(axis=0)
        parts = []
        for k, t in enumerate(members):
            part = crop_mask & (owner == k) & (scores[k] > 1e-3)
            area = float(part.sum())
            if area < self.config.min_visible_fraction * t.area:
                t.hidden_frame = frame  # hidden behind the others: its track coasts on its prediction
                continue
            pys, pxs = np.nonzero(part)
            box = np.array([pxs.min() + x1, pys.min() + y1, pxs.max() + 1 + x1, pys.max() + 1 + y1], np.float32)
            full = np.zeros_like(ob.mask)
            full[y1:y2, x1:x2] = part
            placed = None
            if fits[id(t)] is not None and fits[id(t)] >= cfg.split_motion_min_fit:  # placed, and well
                (px, py), (th, tw) = placements[id(t)], t.shape.shape
                placed = np.array([px, py, px + tw, py + th], np.float32)
            parts.append(_Observation(box, full, _colour_hist(bins, full), area, partial=True, owner=t, placed=placed))
        return parts

    def _place_members(self, members: list[_TrackState], priors: dict, blob: np.ndarray,
                       bins: np.ndarray) -> tuple[dict, dict]:
        """Where each member's last seen shape lies in ``blob``: top-left corners and fits per shape pixel
        (None for a member without a shape), keyed by ``id(track)``.

        Shapes are placed one by one; blob pixels a placed shape explains are no evidence for the next
        (same-coloured objects must not land on the same pixels, and a small object in front of or behind
        a large one is looked for where the large one leaves the blob unexplained). The order matters when
        the members look alike (two identical objects crossing: the first placed takes the better-fitting
        spot, which may be the other's), so for up to ``split_max_orders_members`` members every order is
        tried and the one explaining the blob best near the members' priors wins (ties: largest first).
        """
        from itertools import permutations

        by_size = sorted(members, key=lambda m: -m.area)
        orders = permutations(by_size) if len(members) <= self.config.split_max_orders_members else [by_size]
        best, best_total = None, -math.inf
        for order in orders:
            claimed = np.zeros_like(blob)
            placements: dict[int, tuple[int, int] | None] = {}
            fits: dict[int, float | None] = {}
            total = 0.0
            for t in order:
                fit = self._place_shape(t, priors[id(t)], blob, claimed, bins)
                placements[id(t)] = None if fit is None else fit[0]
                fits[id(t)] = None if fit is None else fit[1]
                if fit is None:
                    continue
                total += fit[1] * float(t.shape.sum())
                (px, py), (th, tw) = fit[0], t.shape.shape
                fx0, fy0 = max(px, 0), max(py, 0)
                fx1, fy1 = min(px + tw, claimed.shape[1]), min(py + th, claimed.shape[0])
                if fx1 > fx0 and fy1 > fy0:
                    claimed[fy0:fy1, fx0:fx1] |= t.shape[fy0 - py:fy1 - py, fx0 - px:fx1 - px]
            if total > best_total + 1e-6:
                if best is not None:
                    logger.debug("merge split: placing tracks %s in this order explains the blob better",
                                 [t.track_id for t in order])
                best, best_total = (placements, fits), total
        return best

    def _split_by_colour(self, obs: list[_Observation], image: np.ndarray, bins: np.ndarray,
                         tracks: list[_TrackState], preds: dict) -> list[_Observation]:
        """Split each blob that no track has been seeing whole and that holds several clearly different
        colours into one observation per colour (objects touching when they first appear)."""
        out = []
        for ob in obs:
            if ob.owner is not None or any(
                    box_iou_matrix(preds[id(t)][None], ob.box[None])[0, 0] >= 0.5
                    and _hist_distance(t.hist, ob.hist) <= 0.3 for t in tracks):
                out.append(ob)  # a split part, or a (multi-coloured) object a track already follows
                continue
            parts = self._colour_parts(ob, image)
            if len(parts) < 2:
                out.append(ob)
                continue
            logger.debug("split a %d-colour blob at %s", len(parts), ob.box.tolist())
            for part in parts:
                pys, pxs = np.nonzero(part)
                box = np.array([pxs.min(), pys.min(), pxs.max() + 1, pys.max() + 1], np.float32)
                out.append(_Observation(box, part, _colour_hist(bins, part), float(part.sum())))
        return out

    def _colour_parts(self, ob: _Observation, image: np.ndarray) -> list[np.ndarray]:
        """Full-frame masks of ``ob``'s colour parts (2 or 3), or [] if it is one colour (or not compact)."""
        import cv2
        from scipy import ndimage

        cfg = self.config
        x1, y1 = int(ob.box[0]), int(ob.box[1])
        x2, y2 = int(math.ceil(ob.box[2])), int(math.ceil(ob.box[3]))
        blob = ob.mask[y1:y2, x1:x2]
        lab = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2LAB).astype(np.float32)
        chroma = np.hypot(lab[..., 1] - 128, lab[..., 2] - 128)
        coloured = blob & (chroma >= cfg.colour_split_min_chroma)
        n = int(coloured.sum())
        if n < 0.5 * blob.sum():
            return []
        pixels = lab[coloured]
        groups = [np.arange(n)]
        for _ in range(2):  # up to three colours: split the groups once more
            new_groups = []
            for g in groups:
                halves = _two_means(pixels[g], cfg.colour_split_min_distance, cfg.colour_split_min_separation)
                if halves is not None and all(len(h) >= cfg.colour_split_min_share * n for h in halves):
                    new_groups.extend(g[h] for h in halves)
                else:
                    new_groups.append(g)
            if len(new_groups) == len(groups):
                break
            groups = new_groups
        if len(groups) < 2:
            return []
        labels = np.zeros(blob.shape, np.int32)  # 0: not yet assigned
        cy, cx = np.nonzero(coloured)
        for k, g in enumerate(groups, start=1):
            labels[cy[g], cx[g]] = k
        # uncoloured blob pixels (outlines, dark or faded parts) go to the nearest coloured one
        _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        labels = np.where(blob, labels[iy, ix], 0)
        min_area = self.detector.config.min_area_fraction * image.shape[0] * image.shape[1]
        cores = np.zeros(blob.shape, np.int32)
        for k in range(1, len(groups) + 1):
            part = labels == k
            count, cc = cv2.connectedComponents(part.astype(np.uint8), connectivity=8)
            sizes = np.bincount(cc[part]) if part.any() else np.zeros(1, np.int64)
            if part.sum() < min_area or sizes.max() < cfg.colour_split_min_compactness * part.sum():
                return []
            # each object is its colour's main piece without thin strays (blended edge pixels of a
            # neighbour, compression fringes); the strays go to the nearest object
            opened = cv2.morphologyEx(part.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
            count, cc = cv2.connectedComponents(opened, connectivity=8)
            if count > 1:
                cores[cc == 1 + int(np.argmax(np.bincount(cc[cc > 0])[1:]))] = k
        if len(np.unique(cores[cores > 0])) < len(groups):
            return []
        _, (iy, ix) = ndimage.distance_transform_edt(cores == 0, return_indices=True)
        labels = np.where(blob, cores[iy, ix], 0)
        parts = []
        for k in range(1, len(groups) + 1):
            full = np.zeros_like(ob.mask)
            full[y1:y2, x1:x2] = labels == k
            parts.append(full)
        return parts

    def _place_shape(self, track: _TrackState, prior: np.ndarray, blob: np.ndarray, claimed: np.ndarray,
                     bins: np.ndarray) -> tuple[tuple[int, int], float] | None:
        """Top-left corner (x, y) where ``track``'s last seen shape fits ``blob`` best, searching around the
        centre of ``prior``, and the fit per shape pixel; None if the track has no shape. Blob pixels in
        ``claimed`` (explained by another object) count as neither for nor against."""
        import cv2

        shape = track.shape
        if shape is None or shape.size == 0 or not shape.any():
            return None
        th, tw = shape.shape
        speed = float(np.hypot(*track.velocity))
        radius = int(math.ceil(self.config.split_search_fraction * max(th, tw) + speed))
        cx, cy = (prior[0] + prior[2]) / 2, (prior[1] + prior[3]) / 2
        px0, py0 = int(round(cx - tw / 2)), int(round(cy - th / 2))
        # evidence image around the search window: + for blob pixels (more for the track's colour),
        # - for pixels off the blob, 0 outside the frame (the object may be partly out of view)
        rx0, ry0 = px0 - radius, py0 - radius
        rw, rh = tw + 2 * radius, th + 2 * radius
        evidence = np.zeros((rh, rw), np.float32)
        height, width = blob.shape
        fx0, fy0, fx1, fy1 = max(rx0, 0), max(ry0, 0), min(rx0 + rw, width), min(ry0 + rh, height)
        if fx1 <= fx0 or fy1 <= fy0:
            return (px0, py0), 0.0
        sub_blob = blob[fy0:fy1, fx0:fx1]
        colour = track.hist[bins[fy0:fy1, fx0:fx1]] / max(float(track.hist.max()), 1e-6)
        support = np.where(claimed[fy0:fy1, fx0:fx1], 0.0, 0.5 + 0.5 * np.minimum(colour, 1.0))
        evidence[fy0 - ry0:fy1 - ry0, fx0 - rx0:fx1 - rx0] = np.where(sub_blob, support, -1.0)
        fit = cv2.matchTemplate(evidence, shape.astype(np.float32), cv2.TM_CCORR)  # (2r+1, 2r+1)
        oy, ox = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        fit = fit - 0.25 * float(shape.sum()) * ((ox ** 2 + oy ** 2) / max(radius, 1) ** 2)  # stay near the prior
        dy, dx = np.unravel_index(int(np.argmax(fit)), fit.shape)
        return (px0 + int(dx) - radius, py0 + int(dy) - radius), float(fit[dy, dx]) / float(shape.sum())
