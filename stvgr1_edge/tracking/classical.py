"""A weight-free multi-object tracker for static-camera footage (and the synthetic clips).

Detections come from :class:`~stvgr1_edge.tracking.background.ClassicalDetector` (background subtraction);
association is in :mod:`.association`, occlusion handling in :mod:`.merge_split`, the observation and track
state types in :mod:`.observations`.

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
from dataclasses import dataclass, field

import numpy as np

from ..masks import crop_to_rle, mask_to_rle
from ..tracks import TrackSet
from ..video import Frame, VideoInfo
from .association import assign, relink_cost
from .background import ClassicalDetector, ClassicalDetectorConfig
from .base import StreamingTracker, TrackerConfig
from .id_manager import IdCounter
from .merge_split import split_by_colour, split_merged
from .observations import (
    INVALID_COST,
    Observation,
    TrackState,
    VideoClock,
    centre,
    colour_hist,
    covered_fraction,
    crop_to_box,
    hsv_bins,
    shift_to_cover,
)

logger = logging.getLogger(__name__)

__all__ = ["ClassicalDetector", "ClassicalDetectorConfig", "ClassicalTracker", "ClassicalTrackerConfig"]


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
    :func:`.merge_split.place_members`); larger ones place the largest first."""
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


class ClassicalTracker(StreamingTracker):
    """Weight-free multi-object tracker for static cameras (see the module docstring)."""

    config: ClassicalTrackerConfig

    def __init__(self, config: ClassicalTrackerConfig | None = None):
        self.config = config or ClassicalTrackerConfig()
        self.detector = ClassicalDetector(self.config.detector)
        self._info: VideoInfo | None = None

    # -- StreamingTracker ---------------------------------------------------------------------------
    def start(self, info: VideoInfo, always_track: frozenset[int] = frozenset()) -> None:
        self._schedule_video(always_track)
        self._info = info
        self.detector.reset()
        self._tracks: list[TrackState] = []
        self._ids = IdCounter()
        self._buffer: list[Frame] = []
        self._ready = False
        self._prev_frame: int | None = None
        fps = info.fps if info.fps > 0 else 25.0
        self._clock = VideoClock(
            fps, max_predict_frames=self.config.max_predict_s * fps, max_lost_frames=self.config.max_lost_s * fps
        )
        self._result = TrackSet(info.width, info.height, info.fps, info.num_frames)
        long_side = max(info.width, info.height)
        self._scale = min(1.0, self.config.max_side / long_side) if self.config.max_side > 0 else 1.0
        self._size = (max(1, int(round(info.width * self._scale))), max(1, int(round(info.height * self._scale))))
        self._native_to_processing = tuple(
            _nearest_source(native, processing) for native, processing in zip((info.width, info.height), self._size)
        )

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

        assert self._info is not None  # step() checked it
        if image.shape[1] != self._info.width or image.shape[0] != self._info.height:
            raise ValueError(
                f"frame is {image.shape[1]}x{image.shape[0]}, video is {self._info.width}x{self._info.height}"
            )
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

    def _observations(self, image: np.ndarray, bins: np.ndarray) -> list[Observation]:
        dets = self.detector(image)
        obs = []
        for box, mask in zip(dets.boxes, dets.masks if dets.masks is not None else []):
            obs.append(Observation(box.astype(np.float32), mask, colour_hist(bins, mask), float(mask.sum())))
        return obs

    def _track_frame(self, frame: Frame) -> None:
        cfg = self.config
        f = frame.index
        bins = hsv_bins(frame.image)
        obs = self._observations(frame.image, bins)

        recent = [t for t in self._tracks if self._prev_frame is not None and t.last_frame == self._prev_frame]
        lost = [t for t in self._tracks if t.track_id is not None and t not in recent]
        clock = self._clock
        preds = {t.key: t.predict(f, clock.max_predict_frames) for t in self._tracks}

        confirmed = [t for t in self._tracks if t.track_id is not None]
        obs = split_merged(cfg, self._prev_frame, obs, confirmed, preds, bins, f)
        if cfg.colour_split:
            obs = split_by_colour(
                cfg,
                self.detector.config.min_area_fraction,
                obs,
                frame.image,
                bins,
                [t for t in recent if t.track_id is not None],
                preds,
            )

        # 1. recently seen (and tentative) tracks <-> detections
        matches, free_obs = assign(
            cfg, clock, recent, obs, preds, gate=cfg.match_gate, max_app=cfg.max_appearance_distance, frame=f
        )
        # 2. lost tracks <-> remaining detections, near where they vanished
        relinks, free_obs = assign(
            cfg, clock, lost, free_obs, preds, gate=None, max_app=cfg.relink_max_appearance_distance, frame=f
        )
        matches.extend(relinks)
        # 3. the rest start tentative tracks

        self._mark_fragments(matches, obs, preds)
        matched_tracks: set[int] = set()
        for track, ob in matches:
            self._update(track, ob, f)
            matched_tracks.add(track.key)
        for ob in free_obs:
            self._tracks.append(
                TrackState(
                    ob.box,
                    np.zeros(2, np.float32),
                    ob.hist,
                    ob.area,
                    f,
                    pending=[self._record(ob, f)],
                    shape=crop_to_box(ob.mask, ob.box),
                )
            )
            matched_tracks.add(self._tracks[-1].key)

        survivors = []
        for t in self._tracks:
            if t.key not in matched_tracks and t.track_id is None:
                continue  # a tentative track must be seen in consecutive tracked frames
            if t.track_id is not None and f - t.last_frame > clock.max_lost_frames:
                continue
            survivors.append(t)
        self._tracks = survivors
        self._prev_frame = f

    def _mark_fragments(
        self, matches: list[tuple[TrackState, Observation]], obs: list[Observation], preds: dict[int, np.ndarray]
    ) -> None:
        """A detection much smaller than the track it matched, with no other detection where the track was
        predicted, is a fragment of that object (fading into the floor's colour, mostly hidden): it only shows
        where the object is (as a split part does). With another detection there, the track was two objects
        that have come apart."""
        cfg = self.config
        for track, ob in matches:
            if ob.partial or track.track_id is None or ob.area >= cfg.fragment_max_fraction * track.area:
                continue
            pred = preds[track.key]
            if not any(o is not ob and covered_fraction(o.box, pred) > 0 for o in obs):
                ob.partial = True

    def _record(self, ob: Observation, frame: int) -> tuple:
        """An output observation ``(frame, box, mask RLE, score)`` at the video's native size."""
        import cv2

        box, mask = ob.box, ob.mask
        if self._scale == 1.0:
            return frame, [float(v) for v in box], mask_to_rle(mask), 0.5 if ob.partial else 1.0
        info = self._info
        assert info is not None  # set by start()
        box = box * np.array([info.width / self._size[0], info.height / self._size[1]] * 2, np.float32)
        # The native mask is the processing-size mask scaled up nearest-neighbour (cv2's pixels), built and encoded
        # only over the native rows and columns that map into the mask's bounding box: per object a crop, not a
        # frame-sized resize and RLE pass.
        x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask, dtype=np.uint8))
        cols, rows = self._native_to_processing
        x0, x1 = np.searchsorted(cols, [x, x + w])
        y0, y1 = np.searchsorted(rows, [y, y + h])
        crop = mask[np.ix_(rows[y0:y1], cols[x0:x1])]
        rle = crop_to_rle(crop, int(x0), int(y0), info.height, info.width)
        return frame, [float(v) for v in box], rle, 0.5 if ob.partial else 1.0

    def _update(self, track: TrackState, ob: Observation, frame: int) -> None:
        """Fold an observation into a track; confirm a tentative track after ``min_hits``."""
        dt = max(frame - track.last_frame, 1)
        if not ob.partial:  # a split part shows only what is visible: keep the object's model as it was
            if dt <= self._clock.max_predict_frames:
                step = ((centre(ob.box) - centre(track.box)) / dt).astype(np.float32)
                track.velocity = 0.5 * track.velocity + 0.5 * step if track.hits > 1 else step
            else:
                track.velocity = np.zeros(2, np.float32)
            track.hist = 0.7 * track.hist + 0.3 * ob.hist
            track.area = 0.5 * track.area + 0.5 * ob.area
        if ob.partial and ob.placed is not None:  # the whole object, found by its shape in a merge
            if dt <= self._clock.max_predict_frames:
                step = ((centre(ob.placed) - centre(track.box)) / dt).astype(np.float32)
                rate = self.config.split_motion_rate
                track.velocity = (1 - rate) * track.velocity + rate * step
            track.box = ob.placed
        elif ob.partial:  # keep the object's full extent: coast on the prediction, shifted to cover what is seen
            track.box = shift_to_cover(track.predict(frame, self._clock.max_predict_frames), ob.box)
        else:
            track.box = ob.box
            track.shape = crop_to_box(ob.mask, ob.box)
        track.last_frame = frame
        track.hits += 1
        record = self._record(ob, frame)
        if track.track_id is not None:
            self._result.add(track.track_id, *record)
            return
        track.pending.append(record)
        if track.hits >= self.config.min_hits:
            self._confirm(track, frame)

    def _confirm(self, track: TrackState, frame: int) -> None:
        """Give a tentative track an ID: a lost track's, if it is that object coming back, else the next."""
        first = track.pending[0][0]
        lost = [t for t in self._tracks if t.track_id is not None and t.last_frame < first]
        best, best_cost = None, INVALID_COST
        for old in lost:
            cost = relink_cost(self.config, self._clock, old, track.box, track.hist, track.area, first)
            if cost < best_cost:
                best, best_cost = old, cost
        if best is not None and best.track_id is not None:  # lost tracks all have IDs
            track_id = best.track_id
            self._tracks.remove(best)
            logger.debug("re-linked a reappearing object to ID %d", track_id)
        else:
            track_id = self._ids.new()
        track.track_id = track_id
        for record in track.pending:
            self._result.add(track_id, *record)
        track.pending = []


def _nearest_source(native: int, processing: int) -> np.ndarray:
    """For each native column (or row), the processing-size one ``cv2.resize(..., INTER_NEAREST)`` takes it from
    when scaling up: ``floor(i / (native / processing))``, computed as OpenCV does (non-decreasing in ``i``)."""
    step = 1.0 / (native / processing)
    return np.minimum(np.floor(np.arange(native) * step).astype(np.int64), processing - 1)
