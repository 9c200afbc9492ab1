"""Occlusion handling of the classical tracker (step 2): blobs holding several tracked objects are divided
between them pixel by pixel, and blobs of several clearly different colours that no track follows are cut into
one detection per colour. See :mod:`stvgr1_edge.tracking.classical` for the whole procedure."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from ..masks import box_iou_matrix
from .observations import Observation, TrackState, colour_hist, covered_fraction, hist_distance, two_means

if TYPE_CHECKING:  # pragma: no cover
    from .classical import ClassicalTrackerConfig

logger = logging.getLogger(__name__)


def _shape_of(track: TrackState) -> np.ndarray:
    """The shape of a track that was placed (only tracks with a shape are)."""
    assert track.shape is not None
    return track.shape


def split_merged(
    cfg: ClassicalTrackerConfig,
    prev_frame: int | None,
    obs: list[Observation],
    tracks: list[TrackState],
    preds: dict[int, np.ndarray],
    bins: np.ndarray,
    frame: int,
) -> list[Observation]:
    """Divide detections that hold several tracked objects (occlusion) between those objects.

    A track is in a detection if the detection covers most of its predicted box or of the box where
    it was last seen (an object that stopped, turned, or vanished into a blob is still there), and
    no other detection covers it better.
    """
    if len(tracks) < 2 or not obs:
        return obs
    # how well each detection covers each track: its predicted box or where it was last seen (it may
    # have stopped or turned - jumps, shakes - or vanished into the blob)
    cover = np.zeros((len(tracks), len(obs)))
    prior_of = {}
    for i, t in enumerate(tracks):
        candidates = [preds[t.key], t.box]
        for j, ob in enumerate(obs):
            covers = [covered_fraction(c, ob.box) for c in candidates]
            best = int(np.argmax(covers))
            cover[i, j], prior_of[i, j] = covers[best], candidates[best]
    # a track is inside at most one blob: the one covering it best
    inside = (cover >= cfg.merge_min_cover) & (cover == cover.max(axis=1, keepdims=True))
    out: list[Observation] = []
    for j, ob in enumerate(obs):
        members = [t for i, t in enumerate(tracks) if inside[i, j]]
        priors = {t.key: prior_of[i, j] for i, t in enumerate(tracks) if inside[i, j]}
        if len(members) < 2:
            out.append(ob)
            continue
        if any(t.last_frame != prev_frame and t.hidden_frame != prev_frame for t in members):
            # a lost member is only believed to be inside if the blob has room for it, unless it was
            # found hidden in this merge the frame before (an object behind another stays there)
            areas = sorted((t.area for t in members), reverse=True)
            if ob.area < areas[0] + cfg.merge_min_extra_area * areas[1]:
                out.append(ob)
                continue
        out.extend(split_blob(cfg, ob, members, priors, bins, frame))
    return out


def split_blob(
    cfg: ClassicalTrackerConfig,
    ob: Observation,
    members: list[TrackState],
    priors: dict[int, np.ndarray],
    bins: np.ndarray,
    frame: int,
) -> list[Observation]:
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
    # place the shapes one by one (in the order that explains the blob best, see place_members)
    placements, fits = place_members(cfg, members, priors, ob.mask, bins)
    # each placed shape as a mask over the blob's box
    shape_masks: dict[int, np.ndarray] = {}
    for t in members:
        corner = placements[t.key]
        if corner is None:
            continue
        shape = _shape_of(t)
        (px, py), (th, tw) = corner, shape.shape
        inside = np.zeros((y2 - y1, x2 - x1), np.uint8)
        ax1, ay1, ax2, ay2 = max(px, x1), max(py, y1), min(px + tw, x2), min(py + th, y2)
        if ax2 > ax1 and ay2 > ay1:
            inside[ay1 - y1 : ay2 - y1, ax1 - x1 : ax2 - x1] = shape[ay1 - py : ay2 - py, ax1 - px : ax2 - px]
        shape_masks[t.key] = inside
    # a shape that lies within a larger same-coloured one is indistinguishable from it: that object is
    # hidden (it coasts), not a part of the other's pixels
    engulfed = set()
    for t in members:
        own = shape_masks.get(t.key)
        if own is None or not (own.astype(bool) & crop_mask).any():
            continue
        others = np.zeros_like(crop_mask)
        for u in members:
            if (
                u is not t
                and u.key in shape_masks
                and u.area >= cfg.engulf_min_area_ratio * t.area
                and hist_distance(t.hist, u.hist) <= cfg.engulf_max_appearance_distance
            ):
                others |= shape_masks[u.key].astype(bool)
        on_blob = own.astype(bool) & crop_mask
        if (on_blob & others).sum() >= cfg.engulf_min_overlap * on_blob.sum():
            engulfed.add(t.key)
    scores = []
    for t in members:
        colour = t.hist[crop_bins] / max(float(t.hist.max()), 1e-6)
        placed = placements[t.key]
        if t.key in engulfed:
            scores.append(np.zeros(crop_mask.shape))
            continue
        if placed is None:  # no shape: a box-shaped prior at the prior box
            p = priors[t.key]
            cx, cy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
            sx, sy = max((p[2] - p[0]) / 2, 1.0), max((p[3] - p[1]) / 2, 1.0)
            d = np.maximum(np.abs(xs + 0.5 - cx) / sx, np.abs(ys + 0.5 - cy) / sy)
            spatial = np.where(d <= 1, 1.0 - 1e-3 * d, np.exp(-3.0 * (d - 1)))
        else:
            px, py = placed
            th, tw = _shape_of(t).shape
            inside = shape_masks[t.key]
            if inside.any():
                gap = cv2.distanceTransform((1 - inside).astype(np.uint8), cv2.DIST_L2, 3)
            else:
                gap = np.hypot(
                    np.maximum(np.maximum(px - xs, xs - (px + tw)), 0),
                    np.maximum(np.maximum(py - ys, ys - (py + th)), 0),
                )
            radius = max(min(th, tw) / 2, 1.0)
            centre_d = np.hypot(xs + 0.5 - (px + tw / 2), ys + 0.5 - (py + th / 2)) / radius
            spatial = np.where(inside > 0, 1.0 - 1e-3 * centre_d, np.exp(-3.0 * gap / radius))
        scores.append((colour + 0.05) * spatial)
    score_maps = np.stack(scores)
    owner = score_maps.argmax(axis=0)
    parts = []
    for k, t in enumerate(members):
        part = crop_mask & (owner == k) & (score_maps[k] > 1e-3)
        area = float(part.sum())
        if area < cfg.min_visible_fraction * t.area:
            t.hidden_frame = frame  # hidden behind the others: its track coasts on its prediction
            continue
        pys, pxs = np.nonzero(part)
        box = np.array([pxs.min() + x1, pys.min() + y1, pxs.max() + 1 + x1, pys.max() + 1 + y1], np.float32)
        full = np.zeros_like(ob.mask)
        full[y1:y2, x1:x2] = part
        whole: np.ndarray | None = None  # the whole object's box, where its shape fits the blob well
        fit, corner = fits[t.key], placements[t.key]
        if fit is not None and corner is not None and fit >= cfg.split_motion_min_fit:
            (px, py), (th, tw) = corner, _shape_of(t).shape
            whole = np.array([px, py, px + tw, py + th], np.float32)
        parts.append(Observation(box, full, colour_hist(bins, full), area, partial=True, owner=t, placed=whole))
    return parts


def place_members(
    cfg: ClassicalTrackerConfig,
    members: list[TrackState],
    priors: dict[int, np.ndarray],
    blob: np.ndarray,
    bins: np.ndarray,
) -> tuple[dict[int, tuple[int, int] | None], dict[int, float | None]]:
    """Where each member's last seen shape lies in ``blob``: top-left corners and fits per shape pixel
    (None for a member without a shape), keyed by ``track.key``.

    Shapes are placed one by one; blob pixels a placed shape explains are no evidence for the next
    (same-coloured objects must not land on the same pixels, and a small object in front of or behind
    a large one is looked for where the large one leaves the blob unexplained). The order matters when
    the members look alike (two identical objects crossing: the first placed takes the better-fitting
    spot, which may be the other's), so for up to ``split_max_orders_members`` members every order is
    tried and the one explaining the blob best near the members' priors wins (ties: largest first).
    """
    from itertools import permutations

    by_size = sorted(members, key=lambda m: -m.area)
    orders = permutations(by_size) if len(members) <= cfg.split_max_orders_members else [by_size]
    best, best_total = None, -math.inf
    for order in orders:
        claimed = np.zeros_like(blob)
        placements: dict[int, tuple[int, int] | None] = {}
        fits: dict[int, float | None] = {}
        total = 0.0
        for t in order:
            fit = place_shape(cfg, t, priors[t.key], blob, claimed, bins)
            placements[t.key] = None if fit is None else fit[0]
            fits[t.key] = None if fit is None else fit[1]
            if fit is None:
                continue
            shape = _shape_of(t)
            total += fit[1] * float(shape.sum())
            (px, py), (th, tw) = fit[0], shape.shape
            fx0, fy0 = max(px, 0), max(py, 0)
            fx1, fy1 = min(px + tw, claimed.shape[1]), min(py + th, claimed.shape[0])
            if fx1 > fx0 and fy1 > fy0:
                claimed[fy0:fy1, fx0:fx1] |= shape[fy0 - py : fy1 - py, fx0 - px : fx1 - px]
        if total > best_total + 1e-6:
            if best is not None:
                logger.debug(
                    "merge split: placing tracks %s in this order explains the blob better", [t.track_id for t in order]
                )
            best, best_total = (placements, fits), total
    assert best is not None  # every order was scored, and a total beats -inf
    return best


def split_by_colour(
    cfg: ClassicalTrackerConfig,
    min_area_fraction: float,
    obs: list[Observation],
    image: np.ndarray,
    bins: np.ndarray,
    tracks: list[TrackState],
    preds: dict[int, np.ndarray],
) -> list[Observation]:
    """Split each blob that no track has been seeing whole and that holds several clearly different
    colours into one observation per colour (objects touching when they first appear)."""
    out = []
    ious = box_iou_matrix(np.array([preds[t.key] for t in tracks]), np.array([ob.box for ob in obs]))  # (tracks, obs)
    for j, ob in enumerate(obs):
        if ob.owner is not None or any(
            ious[i, j] >= 0.5 and hist_distance(t.hist, ob.hist) <= 0.3 for i, t in enumerate(tracks)
        ):
            out.append(ob)  # a split part, or a (multi-coloured) object a track already follows
            continue
        parts = colour_parts(cfg, min_area_fraction, ob, image)
        if len(parts) < 2:
            out.append(ob)
            continue
        logger.debug("split a %d-colour blob at %s", len(parts), ob.box.tolist())
        for part in parts:
            pys, pxs = np.nonzero(part)
            box = np.array([pxs.min(), pys.min(), pxs.max() + 1, pys.max() + 1], np.float32)
            out.append(Observation(box, part, colour_hist(bins, part), float(part.sum())))
    return out


def colour_parts(
    cfg: ClassicalTrackerConfig, min_area_fraction: float, ob: Observation, image: np.ndarray
) -> list[np.ndarray]:
    """Full-frame masks of ``ob``'s colour parts (2 or 3), or [] if it is one colour (or not compact)."""
    import cv2
    from scipy import ndimage

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
        new_groups: list[np.ndarray] = []
        for g in groups:
            halves = two_means(pixels[g], cfg.colour_split_min_distance, cfg.colour_split_min_separation)
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
    min_area = min_area_fraction * image.shape[0] * image.shape[1]
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


def place_shape(
    cfg: ClassicalTrackerConfig,
    track: TrackState,
    prior: np.ndarray,
    blob: np.ndarray,
    claimed: np.ndarray,
    bins: np.ndarray,
) -> tuple[tuple[int, int], float] | None:
    """Top-left corner (x, y) where ``track``'s last seen shape fits ``blob`` best, searching around the
    centre of ``prior``, and the fit per shape pixel; None if the track has no shape. Blob pixels in
    ``claimed`` (explained by another object) count as neither for nor against."""
    import cv2

    shape = track.shape
    if shape is None or shape.size == 0 or not shape.any():
        return None
    th, tw = shape.shape
    speed = float(np.hypot(*track.velocity))
    radius = int(math.ceil(cfg.split_search_fraction * max(th, tw) + speed))
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
    evidence[fy0 - ry0 : fy1 - ry0, fx0 - rx0 : fx1 - rx0] = np.where(sub_blob, support, -1.0)
    fit = cv2.matchTemplate(evidence, shape.astype(np.float32), cv2.TM_CCORR)  # (2r+1, 2r+1)
    oy, ox = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    fit = fit - 0.25 * float(shape.sum()) * ((ox**2 + oy**2) / max(radius, 1) ** 2)  # stay near the prior
    dy, dx = np.unravel_index(int(np.argmax(fit)), fit.shape)
    return (px0 + int(dx) - radius, py0 + int(dy) - radius), float(fit[dy, dx]) / float(shape.sum())
