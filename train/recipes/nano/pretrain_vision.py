"""Stage 0 of the nano recipe: teach the random vision tower to see markers, objects and events (dense labels).

    python -m stvgr1_edge_train.recipes.nano.pretrain_vision INIT_DIR OUT_DIR [--steps N]

A 4.7 M-parameter VLM trained from scratch on the STVG answer alone gets one supervised ID token per clip. Trained
that way it never learned to read the markers: its video features hardly varied from token to token. So the vision tower
(patch embedding, blocks and the patch merger, whose outputs the language model reads) is trained first on a dense
per-token objective. Linear heads on each merged visual token (28x28 pixels x 2 frames) predict:

- ``digit``: the ID most of whose §3 marker pixels fall in the token (0: none). Besides the objects' markers, a
  few markers with random IDs are drawn anywhere in each tube, so that reading a marker cannot be replaced by
  recognising the object it sits on;
- ``colour``, ``shape``, ``size``: of the object covering most of the token (0: no object; the colour it shows,
  "dark" only when it is blinking dark in both frames);
- ``event``: what that object is doing in those two frames (0: nothing, or no object);
- ``dx``, ``dy``, ``scale``, ``turn``, ``recolour`` (with ``change_weight`` > 0): how that object changes from the
  tube's first frame to its second: moved left/right, up/down (still, a few pixels, far), shrank/grew, turned (not
  for circles), changed colour. Every object token gets these labels, not only the few during an event.

Why the change heads: events are made of such changes, and one tube shows most of them. ``probe_events truth`` (an
MLP on the objects' true centre, radius, rotation and colour in a tube's two frames) tells event tubes from objects
without an event at AUC 0.91 (``jumps`` 0.69, the others 0.83-0.99); ``probe_events MODEL --layers 0`` (a read-out of
the tower, middle tubes) gives 0.585 for a stream-stage tower (``blinks`` 0.87, ``stops`` 0.66, the others
0.41-0.58). From that tower, 2,400 clip steps (``--steps 2400 --lr 3e-4``, 20 minutes on 2 CPU cores): 0.654 with
``--change-weight 1 --event-weight 5`` against 0.626 with ``--event-weight 5`` alone; 2,000 more scene steps with
``--scene-changes`` and 400 clip steps: 0.643 (the heads read the direction of a move on 0.59 of clip tokens, up from
0.42, but spins, growths and colour changes stay at 0.39-0.61). The tower sees far less than its pixels hold.

More steps do not close that gap. From the packaged tower (``--glyph-steps 0 --scene-steps 0 --steps 6000 --lr 3e-4
--change-weight 1 --event-weight 5``, 55 minutes; its saves probed): 0.591 at the start, 0.664 / 0.686 / 0.694 after
2,000 / 4,000 / 6,000 steps, and 0.695 after 3,000 more on fresh clips (``--train-seed 11000``). Its heads then:
``turn`` "turns" recall 0.00, ``scale`` "shrinks" 0.00 and "grows" 0.21, against direction of a move 0.63-0.76 and
``recolour`` "changes" 0.78; by event, ``blinks`` 0.91 and ``stops`` 0.71 but ``spins`` 0.00. What a token can see
is one reason: an object moves more than its own radius between the two frames of a tube in 77% of tubes
(median 15 px at 224x168, a token is 28), so a 2-frame patch rarely shows the same part of the object twice. A blink,
a stop or a colour change shows within one token; a turn or a growth must be matched across tokens. Neither full
attention in every block (0.688 after 3,000 steps; "turns" recall 0.00) nor small scenes help: 800 ``--scene-changes``
steps on 56x56 crops leave ``turn`` at balanced accuracy 0.50 (it answers "turns" everywhere) and ``scale`` at 0.41
of 3 classes. Motion is what hides them: on crops whose objects keep their place (``--scene-changes --scene-still``)
the 9,000-step tower learns both, ``turn`` 0.56 / 0.69 / 0.72 and ``scale`` 0.76 / 0.79 / 0.83 after 600 / 1,600 / 2,100
steps (shape 0.67 / 0.66 / 0.72), but that skill does not carry over to moving objects: scored on moving crops the
still-trained tower gives ``turn`` 0.55 and ``scale`` 0.47, and 800 moving scene steps from it 0.52 and 0.47. At
synth's default grid (``probe_events MODEL --width 308 --height 252 --seconds 8``) the 6,000-step tower gives 0.623,
the packaged one 0.574.
Trained at that grid (from the stream stage's last model, ``--glyph-steps 0 --scene-steps 0 --steps 800 --lr 3e-4
--change-weight 1 --event-weight 5 --width 308 --height 252 --seconds 8 --train-seed 11500``, 16 minutes, then 1,200
more on fresh clips, ``--train-seed 11600``, 27 minutes), the tower's read-out of each object in context (``probe_events
MODEL --layers 0 --width 308 --height 252 --seconds 8 --clips 300``, ``objects context``; the drawing state gives 0.984)
rises from 0.659 to 0.735 and 0.743, one tube's from 0.635 to 0.650 and 0.676: ``stops`` 0.94, ``changes_colour`` 0.85,
``jumps`` 0.73 in context, but ``grows`` 0.50 and ``spins`` 0.65, and the ``scale`` and ``turn`` heads still never
answer a growth, a shrink or a turn.

A token cannot tell a growth or a turn within its tube, but the language model can compare the object's state across
tubes if each token holds it: the ``state`` head (``--state-weight``, :data:`STATE_NAMES`) regresses the token's
object's offset from the token, log radius, folded turn and colour in each of the tube's frames. Linearly
(``--freeze-tower``, 300 head steps at synth's default grid) the packaged tower gives R^2 offset 0.16, radius 0.62, turn
-0.31, colour 0.80. From it, 1,200 clip steps (``--glyph-steps 0 --scene-steps 0 --steps 1200 --eval-every 400 --lr 3e-4
--change-weight 1 --event-weight 5 --state-weight 5 --width 308 --height 252 --seconds 8 --train-seed 11700``, 26
minutes): offset 0.51 / 0.63 / 0.66, radius 0.85 / 0.88 / 0.89, colour 0.90 / 0.93 / 0.94 after 400 / 800 / 1,200 steps,
turn -0.07 / -0.03 / -0.02 (objects turn only while they spin). The read-out of each object in context hardly moves
(``probe_events``, ``objects context``: 0.710 to 0.723; ``grows`` 0.49 to 0.58), see :mod:`probe_events` for why. Nor
does the language model make use of it: ``stream_sft`` from that model with the tower frozen (``--steps 300
--freeze-tower --eval-every 100 --seed 50100``, 55 minutes) scores on its 72 held-out clips tIoU 0.359 / 0.289 / 0.301
and ID 0.74 / 0.76 / 0.71 after 100 / 200 / 300 steps, against the packaged model's 0.344 and 0.69 (prior 0.509; the new
tower under the packaged language model: 0.308, 0.64). Turns stay unseen even where every object is turned: 600
``--scene-changes`` steps (random angles on every crop) then 200 clip steps leave turn R^2 at -0.01 on the crops and
-0.09 on clips.

The heads are thrown away afterwards and the language model is not touched, so the features the LM later reads are
ones from which these facts are a linear read-out. Clips are drawn fresh for every step (root seed
``VisionPretrainConfig.seed``, disjoint from the recipe's training, validation and held-out seeds) in the recipe's
clip format. Each is rendered, encoded to H.264 and decoded like the real data; §3 markers are drawn from the GT
masks with tracker-like IDs (1..N by first appearance; sometimes shuffled or offset, as tracker ID switches leave
them); the grounder's own input preparation (:class:`stvgr1_edge.grounding.GroundingInputs`) turns them into
``pixel_values_videos``. The pixels are thus those the model sees in training and at inference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NoReturn, Sequence

import numpy as np
import torch

logger = logging.getLogger("stvgr1_edge_train.recipes.nano.pretrain_vision")

MERGED_PX = 28
"""Side of one merged visual token in pixels (14-pixel patches, 2x2 merge)."""
TEMPORAL_PATCH = 2
"""Frames per visual token (Qwen2.5-VL's 2-frame tubes)."""
MAX_DISPLAY_ID = 15
"""Largest marker ID drawn (the digit head has classes 0..15)."""
IGNORE = -100
"""Label of tokens the loss skips (``F.cross_entropy``'s ignore index)."""


def label_classes() -> dict[str, list[str]]:
    """Class names of each head; index 0 is "none" everywhere."""
    from stvgr1_edge.synth import EVENTS, PALETTE, SHAPES, SIZES

    return {
        "digit": ["none"] + [str(i) for i in range(1, MAX_DISPLAY_ID + 1)],
        "colour": ["none", *PALETTE, "dark"],
        "shape": ["none", *SHAPES],
        "size": ["none", *SIZES],
        "event": ["none", *EVENTS],
        "dx": ["none", "far_left", "left", "still", "right", "far_right"],
        "dy": ["none", "far_up", "up", "still", "down", "far_down"],
        "scale": ["none", "shrinks", "same", "grows"],
        "turn": ["none", "same", "turns"],
        "recolour": ["none", "same", "changes"],
    }


CHANGE_HEADS = ("dx", "dy", "scale", "turn", "recolour")
"""Heads that label how a token's object changes between the tube's two frames (see the module doc)."""
STILL_PX, FAR_PX = 3.0, 12.0
"""A move of under ``STILL_PX`` pixels along an axis is "still"; from ``FAR_PX`` on it is "far"."""
SCALE_CHANGE = 0.06
"""A radius ratio beyond 1 ± this between the two frames is a shrink or a growth."""
TURN_DEG = 8.0
"""A rotation (folded by the shape's symmetry) beyond this is a turn."""
RECOLOUR_RGB = 25.0
"""An RGB distance beyond this between the two frames is a colour change (blinking dark included)."""
RARE_CHANGES, RARE_CHANGE_WEIGHT = ("shrinks", "grows", "turns", "changes"), 5.0
"""Change classes that few tokens show, and their loss weight against the others."""


def change_labels(first, second, shape: str) -> dict[str, int]:
    """Class indices (in :func:`label_classes`) of how an object changes from ``first`` to ``second``, each
    ``(centre (x, y), radius, angle_deg, rgb)`` in pixels; IGNORE for a circle's turn."""
    classes = label_classes()
    (c0, r0, a0, rgb0), (c1, r1, a1, rgb1) = first, second

    def move(d: float, negative: str, positive: str) -> str:
        if abs(d) < STILL_PX:
            return "still"
        side = negative if d < 0 else positive
        return f"far_{side}" if abs(d) >= FAR_PX else side

    ratio = float(r1) / max(float(r0), 1e-6)
    out = {
        "dx": classes["dx"].index(move(float(c1[0] - c0[0]), "left", "right")),
        "dy": classes["dy"].index(move(float(c1[1] - c0[1]), "up", "down")),
        "scale": classes["scale"].index(
            "grows" if ratio > 1 + SCALE_CHANGE else "shrinks" if ratio < 1 - SCALE_CHANGE else "same"
        ),
        "turn": IGNORE,
        "recolour": classes["recolour"].index(
            "changes"
            if np.linalg.norm(np.asarray(rgb1, np.float64) - np.asarray(rgb0, np.float64)) > RECOLOUR_RGB
            else "same"
        ),
    }
    from stvgr1_edge.synth_motion import SYMMETRY_DEG  # the rotation that maps each shape onto itself

    if shape in SYMMETRY_DEG:
        sym = SYMMETRY_DEG[shape]
        turned = (float(a1) - float(a0)) % sym
        out["turn"] = classes["turn"].index("turns" if min(turned, sym - turned) > TURN_DEG else "same")
    return out


STATE_NAMES = ("offset_x", "offset_y", "log_radius", "turn_sin", "turn_cos", "red", "green", "blue")
"""What the ``state`` head regresses per frame of a token's tube (so ``2 * len(STATE_NAMES)`` outputs): the
object's centre relative to the token's centre (in tokens), its log radius (against :data:`STATE_RADIUS_PX`), its
rotation folded by the shape's symmetry (sine, cosine; not for circles) and its colour (0-1, centred)."""
STATE_RADIUS_PX = 10.0
STATE_GROUPS = {"offset": (0, 1), "radius": (2,), "turn": (3, 4), "colour": (5, 6, 7)}
"""Indices of :data:`STATE_NAMES` scored together (``state_r2_{group}`` over both frames)."""


def state_features(state, shape: str, row: int, col: int) -> np.ndarray:
    """:data:`STATE_NAMES` of one object in one frame, ``state`` ``(centre (x, y), radius, angle_deg, rgb)`` in
    pixels, for the token at ``(row, col)``; NaN for what the loss skips (an absent object: ``state`` None; a
    circle's rotation)."""
    from stvgr1_edge.synth_motion import SYMMETRY_DEG

    out = np.full(len(STATE_NAMES), np.nan, np.float32)
    if state is None:
        return out
    centre, radius, angle_deg, rgb = state
    out[0] = (float(centre[0]) - (col + 0.5) * MERGED_PX) / MERGED_PX
    out[1] = (float(centre[1]) - (row + 0.5) * MERGED_PX) / MERGED_PX
    out[2] = math.log(max(float(radius), 1e-3) / STATE_RADIUS_PX)
    if shape in SYMMETRY_DEG:
        folded = math.radians(float(angle_deg) * 360.0 / SYMMETRY_DEG[shape])
        out[3], out[4] = math.sin(folded), math.cos(folded)
    out[5:8] = np.asarray(rgb, np.float64) / 255.0 - 0.5
    return out


@dataclass(frozen=True)
class VisionPretrainConfig:
    """The dense vision stage: small scenes first (reading digits and shapes), then whole clips (events, context)."""

    glyph_steps: int = 2500
    """Optimizer steps on :func:`glyph_crop` crops (first)."""
    glyph_batch: int = 256
    """Crops per step."""
    scene_steps: int = 800
    """Optimizer steps on :func:`small_scene` crops (next)."""
    scene_batch: int = 64
    """Crops per step."""
    scene_tokens: int = 2
    """Crop side in merged tokens (2: 56x56 pixels)."""
    scene_changes: bool = False
    """Scene objects change between the two frames as clip objects do in a tube (moves of up to 20 pixels or none,
    growth or shrinking, turns, a colour change or a blink), so the change heads learn from thousands of crops a
    step; without it they move a few pixels and turn a little."""
    scene_still: bool = False
    """Scene objects keep their place between the two frames (with ``scene_changes``: they only turn, grow, shrink,
    change colour or blink), so each change shows within the tokens the object covers."""
    steps: int = 300
    """Optimizer steps on whole clips, after the scenes."""
    batch_clips: int = 2
    """Clips per step."""
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    """Linear warm-up, then cosine decay to 10% of ``learning_rate``."""
    weight_decay: float = 0.01
    digit_weight: float = 4.0
    """Weight of the token classes that hold a marker (rare: a few of 48 tokens per frame pair)."""
    event_weight: float = 1.0
    """Weight of the event classes (rare too: one object's tokens during its event). At 1.0 the event head
    answers "none" on almost every event token (held-out clip accuracy 0.009); the packaged nano model's tower
    was finished with 5 (``--event-weight 5``, accuracy 0.237)."""
    change_weight: float = 0.0
    """Weight of the :data:`CHANGE_HEADS` losses (0: those heads are not trained)."""
    state_weight: float = 0.0
    """Weight of the ``state`` regression (:data:`STATE_NAMES` in both frames of each object token, smooth L1; 0: not
    trained). The change heads ask a token to match the object across the tube's frames, which it rarely sees twice
    when the object moves; the state in each frame is there in one frame's pixels, and comparing it across tubes is
    left to the language model."""
    min_object_pixels: int = 30
    """A token belongs to an object when the object covers at least this many of its 2 x 28 x 28 pixels ..."""
    min_object_share: float = 0.2
    """... and this share of the object's pixels in the tube (else the token is not labelled for the object heads)."""
    seed: int = 10_000
    """Root seed of the pretraining clips (the recipe trains on 0 and 1, validates on 4000, holds out 5000)."""
    train_seed: int | None = None
    """Root seed of the training streams (None: ``seed``). Validation stays on ``seed + 1`` .. ``seed + 3``, so a
    run that continues a tower on fresh clips (another ``train_seed``) is scored on the same clips as the first."""
    val_clips: int = 24
    """Clips (root seed ``seed + 1``) scored at the end and every ``eval_every`` steps."""
    eval_every: int = 250
    variants_per_clip: int = 2
    """Training items per generated clip, each with other marker IDs (generating the clip costs the most)."""
    data_workers: int = 1
    """Processes generating clips while the model trains (0: in the training process)."""
    train_tower: bool = True
    """False: the tower stays as loaded and only the heads learn (how much of each label is a linear read-out of
    that tower: the baseline for training it further)."""
    shuffle_ids_prob: float = 0.5
    """Chance that a clip's marker IDs are a random permutation instead of the order of first appearance."""
    extra_markers_per_frame: int = 2
    """Markers with random IDs (1..9) drawn at random places of each tube, besides the objects' own: within a clip
    an object's ID and its looks go together, which a head can learn instead of reading the digits."""
    offset_ids_prob: float = 0.2
    """Chance that a clip's IDs start above 1 (IDs consumed by earlier tracks, as after ID switches)."""
    width: int = 224
    height: int = 168
    """Clip size: multiples of 28 that §4 keeps as they are (token labels are per 28x28 pixels), e.g. 308x252,
    the size §4 resizes synth's default 320x240 to."""
    seconds: float = 6.0

    def clip_format_error(self) -> str | None:
        """Why this clip format cannot be labelled per token (None: it can)."""
        from stvgr1_edge.errors import BadInputError
        from stvgr1_edge.sampling import plan_sampling
        from stvgr1_edge.synth import SynthConfig

        try:
            synth = SynthConfig(width=self.width, height=self.height, seconds=self.seconds)
        except BadInputError as error:  # synth's own limits (a clip too short for its events, ...)
            return str(error)
        frames = max(1, round(synth.seconds * synth.fps))
        sampling = plan_sampling(frames, synth.fps, synth.height, synth.width)
        resized = (sampling.resized_width, sampling.resized_height)
        if resized != (self.width, self.height):
            return (
                f"clip size {self.width}x{self.height}: §4 resizes it to {resized[0]}x{resized[1]}, and token labels "
                f"need the size the model sees; use --width {resized[0]} --height {resized[1]}"
            )
        if len(sampling.indices) % TEMPORAL_PATCH:
            odd = len(sampling.indices)
            return f"{self.seconds} s clips sample an odd number of frames ({odd}); use another --seconds"
        return None

    def train_seed_error(self) -> str | None:
        """Why ``train_seed`` cannot be used (None: it can): it must not replay the validation clips."""
        if self.train_seed is not None and self.train_seed in range(self.seed + 1, self.seed + 4):
            first, last = self.seed + 1, self.seed + 3
            return f"--train-seed {self.train_seed} is a validation root ({first}..{last}); pick another"
        return None


# --- one labelled clip ---------------------------------------------------------------------------
def display_ids(clip, rng: np.random.Generator, config: VisionPretrainConfig) -> dict[int, int]:
    """Synthetic object ID → the ID drawn on it: 1..N in order of first appearance (as the tracker numbers
    tracks), sometimes shuffled or shifted up."""
    order = sorted(clip.objects, key=lambda o: (int(np.argmax(o.present)) if o.present.any() else 10**6, o.object_id))
    ids = np.arange(1, len(order) + 1)
    if rng.random() < config.shuffle_ids_prob:
        ids = rng.permutation(ids)
    if rng.random() < config.offset_ids_prob:
        ids = ids + int(rng.integers(1, MAX_DISPLAY_ID - len(order) + 1))
    return {o.object_id: int(i) for o, i in zip(order, ids)}


def _object_markers(label_map: np.ndarray, ids: dict[int, int]) -> list[tuple[int, tuple[int, int]]]:
    """``(drawn ID, anchor)`` of each object marker §3 draws in one frame (``label_map``: synthetic object IDs),
    in :func:`stvgr1_edge.markers.draw_id_markers`'s drawing order."""
    from stvgr1_edge.markers import markable_objects, marker_anchor

    present = [k for k in ids if (label_map == k).any()]
    masks = [label_map == k for k in present]
    out = []
    for i in markable_objects([int(m.sum()) for m in masks]):
        anchor = marker_anchor(masks[i])
        if anchor is not None:
            out.append((ids[present[i]], anchor))
    return out


def extra_markers(
    height: int, width: int, sampled: Sequence[int], count: int, rng: np.random.Generator
) -> dict[int, list[tuple[int, tuple[int, int]]]]:
    """Frame → ``count`` ``(random ID 1..9, anchor)`` markers whose §3 text lies inside the frame. The markers of
    the two frames of a tube are the same IDs a few pixels apart, as an object's marker moves with it."""
    import cv2

    from stvgr1_edge.markers import marker_style

    font_scale, thickness = marker_style(height, width)
    out: dict[int, list[tuple[int, tuple[int, int]]]] = {}
    for g in range(0, len(sampled), TEMPORAL_PATCH):
        tube = [int(f) for f in sampled[g : g + TEMPORAL_PATCH]]
        for _ in range(count):
            marker_id = int(rng.integers(1, 10))
            (w, h), _ = cv2.getTextSize(str(marker_id), cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
            x, y = int(rng.integers(0, width - w)), int(rng.integers(h + 1, height - 1))
            for f in tube:
                out.setdefault(f, []).append((marker_id, (x, y)))
                x = int(np.clip(x + rng.integers(-6, 7), 0, width - w - 1))
                y = int(np.clip(y + rng.integers(-6, 7), h + 1, height - 2))
    return out


def draw_markers(
    image: np.ndarray, markers: Sequence[tuple[int, tuple[int, int]]], frame_size: tuple[int, int] | None = None
) -> np.ndarray:
    """A copy of ``image`` with ``markers`` (``(ID, anchor)``) drawn exactly as
    :func:`stvgr1_edge.markers.draw_id_markers` draws IDs, in the style of a ``frame_size`` (H, W) frame (default:
    the image's own; a crop of a frame passes the frame's)."""
    import cv2

    from stvgr1_edge.markers import MARKER_COLOR_RGB, marker_style

    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    font_scale, thickness = marker_style(*(frame_size or image.shape[:2]))
    for marker_id, anchor in markers:
        cv2.putText(
            out, str(marker_id), anchor, cv2.FONT_HERSHEY_SIMPLEX, font_scale, MARKER_COLOR_RGB, thickness, cv2.LINE_AA
        )
    return out


def _nearest_colour(rgb: np.ndarray) -> str:
    from stvgr1_edge.synth import BLINK_RGB, PALETTE

    names = [*PALETTE, "dark"]
    values = np.asarray([*PALETTE.values(), BLINK_RGB], np.float64)
    return names[int(np.argmin(((values - np.asarray(rgb, np.float64)) ** 2).sum(axis=1)))]


def token_owners(maps: Sequence[np.ndarray], min_object_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` ID of the object covering most of each token over the tube (``maps``: each frame's object
    map; 0 where no object covers ``min_object_pixels`` of it) and the share of that object's tube pixels the token
    holds."""
    height, width = maps[0].shape
    rows, cols = height // MERGED_PX, width // MERGED_PX
    ids = sorted({int(k) for m in maps for k in np.unique(m) if k > 0})
    if not ids:
        return np.zeros((rows, cols), np.int64), np.zeros((rows, cols))
    counts = np.zeros((len(ids), rows, cols), np.int64)
    for m in maps:
        cells = m.reshape(rows, MERGED_PX, cols, MERGED_PX)
        for i, k in enumerate(ids):
            counts[i] += (cells == k).sum(axis=(1, 3))
    owner = counts.argmax(axis=0)
    owned = counts.max(axis=0) >= min_object_pixels
    share = counts.max(axis=0) / np.maximum(counts.sum(axis=(1, 2))[owner], 1)
    return np.where(owned, np.asarray(ids)[owner], 0), np.where(owned, share, 0.0)


def tube_object_labels(
    maps: Sequence[np.ndarray], describe, min_object_pixels: int, min_object_share: float, state=None
) -> dict[str, np.ndarray]:
    """``(rows, cols)`` labels of the object heads for one tube. ``maps``: each frame's object map (object ID per
    pixel, 0: floor); ``describe(object_id, j)``: ``(colour shown in frame j or None if absent, shape, size, event
    name or None)`` in the names of :func:`label_classes`. The token's object is the one covering most of it over the
    tube; :data:`IGNORE` where that object covers at least ``min_object_pixels`` of it but the token holds less than
    ``min_object_share`` of the object (a sliver cannot tell a circle's edge from a square's). ``state(object_id,
    j)``: ``(centre, radius, angle_deg, rgb)`` in frame j, or None where absent, for the :data:`CHANGE_HEADS`
    (IGNORE everywhere without it, and on tokens whose object is absent from one frame) and ``state``
    (:func:`state_features` in each frame, ``(rows, cols, frames * len(STATE_NAMES))``, NaN where unlabelled)."""
    classes = label_classes()
    height, width = maps[0].shape
    rows, cols = height // MERGED_PX, width // MERGED_PX
    labels = {name: np.zeros((rows, cols), np.int64) for name in ("colour", "shape", "size", "event")}
    for name in CHANGE_HEADS:
        labels[name] = np.zeros((rows, cols), np.int64) if state is not None else np.full((rows, cols), IGNORE)
    owner, share = token_owners(maps, min_object_pixels)
    for name in labels:
        labels[name][(owner > 0) & (share < min_object_share)] = IGNORE
    # (rows, cols, frames x STATE_NAMES) floats, NaN where not labelled (no object, a sliver, no state given)
    labels["state"] = np.full((rows, cols, len(maps) * len(STATE_NAMES)), np.nan, np.float32)
    for r, c in zip(*np.nonzero((owner > 0) & (share >= min_object_share))):
        k = int(owner[r, c])
        facts = [describe(k, j) for j in range(len(maps))]
        # a blinking object is dark in one frame of the tube and its own colour in the other: its own wins
        colours = [f[0] for f in facts if f[0] is not None]
        labels["colour"][r, c] = classes["colour"].index(next((n for n in colours if n != "dark"), colours[0]))
        labels["shape"][r, c] = classes["shape"].index(facts[0][1])
        labels["size"][r, c] = classes["size"].index(facts[0][2])
        events = [f[3] for f in facts if f[3] is not None]
        labels["event"][r, c] = classes["event"].index(events[0]) if events else 0
        if state is not None:
            first, second = state(k, 0), state(k, 1)
            changes = change_labels(first, second, facts[0][1]) if first and second else {}
            for name in CHANGE_HEADS:
                labels[name][r, c] = changes.get(name, IGNORE)
            labels["state"][r, c] = np.concatenate(
                [state_features(state(k, j), facts[0][1], r, c) for j in range(len(maps))]
            )
    return labels


def tube_digit_labels(
    markers: Sequence[Sequence[tuple[int, tuple[int, int]]]],
    height: int,
    width: int,
    font_scale: float,
    thickness: int,
    min_glyph_pixels: int = 6,
) -> np.ndarray:
    """``(rows, cols)`` int64 for one tube: per token, the ID most of whose drawn digit pixels fall in it (the
    tube's first frame counting double), if at least ``min_glyph_pixels`` of them do in one frame; 0 elsewhere. A
    two-digit ID labels the tokens of both its digits. ``markers``: per frame, ``(ID, anchor)`` in drawing order."""
    import cv2

    rows, cols = height // MERGED_PX, width // MERGED_PX
    score = np.zeros((MAX_DISPLAY_ID + 1, rows, cols))
    enough = np.zeros((MAX_DISPLAY_ID + 1, rows, cols), bool)
    for j, frame_markers in enumerate(markers):
        canvas = np.zeros((height, width), np.uint8)  # drawn ID per pixel, later markers on top
        for marker_id, anchor in frame_markers:
            cv2.putText(
                canvas,
                str(marker_id),
                anchor,
                cv2.FONT_HERSHEY_SIMPLEX,
                font_scale,
                int(marker_id),
                thickness,
                cv2.LINE_8,
            )
        cells = canvas.reshape(rows, MERGED_PX, cols, MERGED_PX)
        for marker_id in np.unique(canvas[canvas > 0]):
            count = (cells == marker_id).sum(axis=(1, 3))
            score[marker_id] += count * (2 if j == 0 else 1)
            enough[marker_id] |= count >= min_glyph_pixels
    score[~enough] = 0
    return np.where(score.max(axis=0) > 0, score.argmax(axis=0), 0)


def _check_grid(height: int, width: int, num_frames: int) -> None:
    if height % MERGED_PX or width % MERGED_PX or num_frames % TEMPORAL_PATCH:
        raise ValueError(
            f"token labels need a {MERGED_PX}-multiple frame and an even frame count, "
            f"got {width}x{height} and {num_frames} frames"
        )


def object_token_labels(
    clip, sampled: Sequence[int], min_object_pixels: int, min_object_share: float
) -> dict[str, np.ndarray]:
    """:func:`tube_object_labels` of every tube of a synthetic clip, ``(groups, rows, cols)``. ``sampled``: the
    native frame indices the VLM sees, in order (pairs form the 2-frame tubes). Labels are in the clip's native
    pixel grid, which must be the resized grid (multiples of 28)."""
    from stvgr1_edge.synth_render import object_label_map

    _check_grid(clip.config.height, clip.config.width, len(sampled))
    objects = {o.object_id: o for o in clip.objects}
    tubes = []
    for g in range(0, len(sampled), TEMPORAL_PATCH):
        pair = [int(f) for f in sampled[g : g + TEMPORAL_PATCH]]

        def describe(k: int, j: int, pair=pair):
            obj, f = objects[k], pair[j]
            e = obj.event
            active = e is not None and e.start_frame <= f <= e.end_frame
            return (
                _nearest_colour(obj.rgb[f]) if obj.present[f] else None,
                obj.shape,
                obj.size,
                e.name if active else None,
            )

        def state(k: int, j: int, pair=pair):
            obj, f = objects[k], pair[j]
            return (obj.center[f], obj.radius[f], obj.angle_deg[f], obj.rgb[f]) if obj.present[f] else None

        tubes.append(
            tube_object_labels(
                [object_label_map(clip, f) for f in pair], describe, min_object_pixels, min_object_share, state
            )
        )
    return {name: np.stack([t[name] for t in tubes]) for name in tubes[0]}


def digit_token_labels(
    clip,
    sampled: Sequence[int],
    ids: dict[int, int],
    extras: dict[int, list[tuple[int, tuple[int, int]]]] | None = None,
    min_glyph_pixels: int = 6,
) -> np.ndarray:
    """:func:`tube_digit_labels` of every tube of a synthetic clip, ``(groups, rows, cols)``: the objects' §3
    markers (``ids``: synthetic object ID → drawn ID) over the ``extras`` (frame → :func:`extra_markers`)."""
    from stvgr1_edge.markers import marker_style
    from stvgr1_edge.synth_render import object_label_map

    height, width = clip.config.height, clip.config.width
    _check_grid(height, width, len(sampled))
    font_scale, thickness = marker_style(height, width)
    tubes = []
    for g in range(0, len(sampled), TEMPORAL_PATCH):
        pair = [int(f) for f in sampled[g : g + TEMPORAL_PATCH]]
        markers = [(extras or {}).get(f, []) + _object_markers(object_label_map(clip, f), ids) for f in pair]
        tubes.append(tube_digit_labels(markers, height, width, font_scale, thickness, min_glyph_pixels))
    return np.stack(tubes)


# --- stage 1: small scenes -------------------------------------------------------------------------
def small_scene(rng: np.random.Generator, backgrounds: Sequence[np.ndarray], config: "VisionPretrainConfig"):
    """One two-frame crop of ``config.scene_tokens`` x ``config.scene_tokens`` merged tokens: a piece of a synthetic
    floor with 1-3 random objects moving a little between the frames, each marked by §3 with a random ID (with the
    frame size's marker style), and maybe one extra marker (``config.scene_changes``: changing as clip objects do).
    Returns ``(frames (2, S, S, 3) uint8, labels)``.

    Thousands of these cost less than one clip: a from-scratch ViT with 14-pixel patches needs a few hundred
    thousand digits before it reads them at all (a probe on single digits stayed at chance for 64k, then jumped to
    98% by 450k), far more than clips can supply on a CPU."""
    import cv2

    from stvgr1_edge.markers import markable_objects, marker_anchor, marker_style
    from stvgr1_edge.synth import BLINK_RGB, PALETTE, SHAPES, SIZES, SynthObject
    from stvgr1_edge.synth_render import draw_object

    size = config.scene_tokens * MERGED_PX
    font_scale, thickness = marker_style(config.height, config.width)
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    y0, x0 = int(rng.integers(0, bg.shape[0] - size + 1)), int(rng.integers(0, bg.shape[1] - size + 1))
    floor = bg[y0 : y0 + size, x0 : x0 + size]
    n = int(rng.integers(1, 4))
    base = min(config.width, config.height)
    objects, ids = [], rng.choice(np.arange(1, 10), size=n, replace=False)
    if rng.random() < 0.15:
        ids = ids + int(rng.integers(1, MAX_DISPLAY_ID - 9 + 1))
    for i in range(n):
        colour, shape, sz = (str(rng.choice(list(PALETTE))), str(rng.choice(SHAPES)), str(rng.choice(SIZES)))
        radius = (0.045 if sz == "small" else 0.08) * base * rng.uniform(0.9, 1.1)
        centre = rng.uniform(-0.1 * size, 1.1 * size, size=2)
        step = rng.uniform(-5, 5, size=2)
        angle = rng.uniform(0, 360)
        angles = np.array([angle, angle + rng.uniform(-20, 20)])
        radii = np.full(2, radius)
        rgb = np.tile(np.asarray(PALETTE[colour], np.float64), (2, 1))
        if config.scene_changes:
            step = rng.uniform(-20, 20, size=2) if rng.random() >= 0.25 else np.zeros(2)
            angles[1] = angle + (rng.uniform(-45, 45) if rng.random() < 0.4 else 0.0)
            if rng.random() < 0.3:
                radii[1] = radius * rng.choice([rng.uniform(0.8, 0.93), rng.uniform(1.08, 1.25)])
            kind = rng.random()
            if kind < 0.15:  # blinks: dark in one of the frames
                rgb[int(rng.integers(2))] = BLINK_RGB
            elif kind < 0.3:  # a colour change under way
                other = np.asarray(list(PALETTE.values())[int(rng.integers(len(PALETTE)))], np.float64)
                rgb[1] = rgb[0] + rng.uniform(0.2, 0.5) * (other - rgb[0])
        if config.scene_still:  # after the draws above, so the crops' other changes are those of moving scenes
            step = np.zeros(2)
        objects.append(
            SynthObject(
                i + 1,
                colour,
                shape,
                sz,
                i,
                None,
                np.ones(2, bool),
                np.stack([centre, centre + step]),
                radii,
                angles,
                np.round(rgb).astype(np.uint8),
            )
        )
    extra = []
    if rng.random() < 0.5:
        extra_id = int(rng.integers(1, 10))
        (w, h), _ = cv2.getTextSize(str(extra_id), cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        x, y = int(rng.integers(-w // 2, size - w // 2)), int(rng.integers(h // 2, size + h // 2))
        extra = [(extra_id, (x, y)), (extra_id, (x + int(rng.integers(-4, 5)), y + int(rng.integers(-4, 5))))]
    frames, maps, markers = [], [], []
    for j in range(TEMPORAL_PATCH):
        label_map = np.zeros((size, size), np.uint8)
        for obj in objects:
            draw_object(label_map, obj, j, obj.object_id)
        image = floor.copy()
        for obj in objects:
            image[label_map == obj.object_id] = obj.rgb[j]
        masks = [label_map == obj.object_id for obj in objects]
        marked = [(int(ids[i]), marker_anchor(masks[i])) for i in markable_objects([int(m.sum()) for m in masks])]
        frame_markers = ([extra[j]] if extra else []) + [m for m in marked if m[1] is not None]
        frames.append(draw_markers(image, frame_markers, (config.height, config.width)))
        maps.append(label_map)
        markers.append(frame_markers)
    by_id = {obj.object_id: obj for obj in objects}
    labels = tube_object_labels(
        maps,
        lambda k, j: (by_id[k].colour, by_id[k].shape, by_id[k].size, None),
        config.min_object_pixels,
        config.min_object_share,
        lambda k, j: (by_id[k].center[j], by_id[k].radius[j], by_id[k].angle_deg[j], by_id[k].rgb[j]),
    )
    labels["event"][:] = IGNORE  # nothing happens in a crop
    labels["digit"] = tube_digit_labels(markers, size, size, font_scale, thickness)
    return np.stack(frames), labels


def glyph_crop(rng: np.random.Generator, backgrounds: Sequence[np.ndarray], config: "VisionPretrainConfig"):
    """One two-frame crop of a single merged token (28x28): a piece of floor, sometimes under an object's colour,
    with one §3 marker (random ID, in the frame's marker style) whose centre lies in the crop, moved a few pixels
    in the second frame; one crop in eight has none. Returns ``(frames (2, 28, 28, 3) uint8, labels)``, only
    ``digit`` labelled. The easiest form of reading a marker: the stage starts here."""
    import cv2

    from stvgr1_edge.markers import marker_style
    from stvgr1_edge.synth import PALETTE

    font_scale, thickness = marker_style(config.height, config.width)
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    y0, x0 = int(rng.integers(0, bg.shape[0] - MERGED_PX + 1)), int(rng.integers(0, bg.shape[1] - MERGED_PX + 1))
    crop = bg[y0 : y0 + MERGED_PX, x0 : x0 + MERGED_PX].copy()
    if rng.random() < 0.5:  # an object under the marker: its colour over part or all of the crop
        colour = np.asarray(list(PALETTE.values())[int(rng.integers(len(PALETTE)))], np.uint8)
        cx, cy, r = rng.uniform(0, MERGED_PX, size=2).tolist() + [float(rng.uniform(8, 20))]
        yy, xx = np.mgrid[:MERGED_PX, :MERGED_PX]
        crop[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour
    marker_id = int(rng.integers(1, 10)) if rng.random() < 0.85 else int(rng.integers(10, MAX_DISPLAY_ID + 1))
    (w, h), _ = cv2.getTextSize(str(marker_id), cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    present = rng.random() >= 0.125
    cx, cy = rng.uniform(0, MERGED_PX, size=2)
    frames = []
    for _ in range(TEMPORAL_PATCH):
        markers = [(marker_id, (int(cx - w / 2), int(cy + h / 2)))] if present else []
        frames.append(draw_markers(crop, markers, (config.height, config.width)))
        cx, cy = np.clip([cx + rng.uniform(-4, 4), cy + rng.uniform(-4, 4)], 0, MERGED_PX - 1)
    labels = {name: np.full((1, 1), IGNORE, np.int64) for name in ("colour", "shape", "size", "event", *CHANGE_HEADS)}
    labels["digit"] = np.full((1, 1), marker_id if present else 0, np.int64)
    return np.stack(frames), labels


class SceneStream(torch.utils.data.IterableDataset):
    """An endless stream of ``make`` (:func:`small_scene` or :func:`glyph_crop`) batches of ``batch`` as
    ``(VideoTensors of the batch, labels)``."""

    def __init__(self, seed: int, video_processor, config: "VisionPretrainConfig", make=None, batch: int | None = None):
        self.seed, self.video_processor, self.config = seed, video_processor, config
        self.make, self.batch = make or small_scene, batch or config.scene_batch

    def __iter__(self):
        from stvgr1_edge.synth import SynthConfig
        from stvgr1_edge.synth_render import make_background

        torch.set_num_threads(1)
        rng = np.random.default_rng(self.seed)
        synth = SynthConfig(width=self.config.width, height=self.config.height)
        backgrounds = [make_background(rng, synth) for _ in range(64)]
        while True:
            scenes = [self.make(rng, backgrounds, self.config) for _ in range(self.batch)]
            videos = [video_tensors(frames, 2.0, self.video_processor) for frames, _ in scenes]
            labels = {k: token_rows(np.stack([lab[k] for _, lab in scenes])) for k in scenes[0][1]}
            yield videos, labels


def token_rows(labels: np.ndarray) -> torch.Tensor:
    """``(items, rows, cols[, D])`` token labels as one row per token, in the merger's output order."""
    return torch.from_numpy(np.ascontiguousarray(labels.reshape(-1, *labels.shape[3:])))


def video_tensors(frames: np.ndarray, sample_fps: float, video_processor):
    """:class:`VideoTensors` of (T, H, W, 3) uint8 frames already at the resized size, made by the video
    processor's own rescale/normalize and patchify steps (the same tensors as the full processor call, which
    spends most of its time validating and grouping; see the test)."""
    import torch

    from stvgr1_edge_train.video_inputs import VideoTensors

    vp = video_processor
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()[None]
    video = vp.rescale_and_normalize(video, True, vp.rescale_factor, True, vp.image_mean, vp.image_std)
    patches, grid_t, grid_h, grid_w = vp.patchify(
        video, patch_size=vp.patch_size, merge_size=vp.merge_size, temporal_patch_size=vp.temporal_patch_size
    )
    return VideoTensors(
        patches[0], torch.tensor([[grid_t, grid_h, grid_w]]), torch.tensor([vp.temporal_patch_size / sample_fps])
    )


def sampled_frames_through_h264(clip, indices, workdir: Path) -> tuple[list, object]:
    """The synthetic ``clip``'s frames at ``indices``, rendered, encoded with H.264 (x264's colour and edge losses)
    and decoded, as :class:`Frame` s with their clip indices; and the clip's :class:`VideoInfo` as the pipeline would
    see it (only the sampled frames carry pixels here: decoding them all would triple the cost)."""
    from stvgr1_edge.synth_render import render_frames
    from stvgr1_edge.video import Frame, VideoInfo, VideoWriter, iter_frames

    cfg, wanted = clip.config, set(indices)
    video_path = workdir / "clip.mp4"
    with VideoWriter(video_path, cfg.fps, cfg.width, cfg.height, crf=cfg.video_crf, preset=cfg.video_preset) as w:
        w.write_all(frame for f, frame in enumerate(render_frames(clip)) if f in wanted)
    decoded = [Frame(f, frame.time_s, frame.image) for f, frame in zip(indices, iter_frames(video_path))]
    frame_times = tuple(f / cfg.fps for f in range(clip.num_frames))
    info = VideoInfo(
        str(video_path), cfg.width, cfg.height, clip.num_frames, cfg.fps, clip.num_frames / cfg.fps, "h264", frame_times
    )
    return decoded, info


def labelled_clip(
    clip_seed: int,
    video_processor,
    config: VisionPretrainConfig,
    rng: np.random.Generator,
    workdir: Path,
    variants: int = 1,
) -> list:
    """``variants`` ``(VideoTensors, labels)`` pairs for one fresh synthetic clip, each with its own marker IDs
    (see the module doc for how the clip is made)."""

    from stvgr1_edge.prompted import track_and_prompt
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.synth import SynthConfig, generate_clip
    from stvgr1_edge.tracking.replay import ReplayTracker
    from stvgr1_edge.tracks import TrackSet
    from stvgr1_edge.video import Frame

    synth = SynthConfig(width=config.width, height=config.height, seconds=config.seconds)
    clip = generate_clip(clip_seed, synth)
    sampling = plan_sampling(clip.num_frames, synth.fps, synth.height, synth.width)
    if (sampling.resized_height, sampling.resized_width) != (synth.height, synth.width):
        raise ValueError(f"the pretraining clip size {synth.width}x{synth.height} must not be resized by §4")
    wanted = set(sampling.indices)
    decoded, info = sampled_frames_through_h264(clip, sampling.indices, workdir)
    objects = object_token_labels(clip, sampling.indices, config.min_object_pixels, config.min_object_share)
    out = []
    for _ in range(variants):
        ids = display_ids(clip, rng, config)
        shown = TrackSet(synth.width, synth.height, synth.fps, clip.num_frames)
        for obj_id, track in clip.gt_tracks.tracks.items():
            for f, box, mask in zip(track.frames, track.boxes, track.masks):
                if f in wanted:
                    shown.add(ids[obj_id], f, box, mask, 1.0)
        extras = extra_markers(synth.height, synth.width, sampling.indices, config.extra_markers_per_frame, rng)
        with_extras = [Frame(fr.index, fr.time_s, draw_markers(fr.image, extras.get(fr.index, []))) for fr in decoded]
        prompted = track_and_prompt(
            with_extras, info, ReplayTracker(shown, source="the clip's true tracks"), sampling, frame_memory_mb=None
        ).clip
        labels = dict(objects, digit=digit_token_labels(clip, sampling.indices, ids, extras))
        out.append(
            (
                video_tensors(prompted.frames, prompted.sample_fps, video_processor),
                {k: token_rows(v) for k, v in labels.items()},
            )
        )
    return out


def clip_seed(root_seed: int, i: int) -> int:
    """The seed of clip ``i`` of a root seed: the recipe's stages draw disjoint clip streams from their roots."""
    return int(np.random.SeedSequence(root_seed, spawn_key=(i,)).generate_state(1)[0])


def labelled_clips(root_seed: int, video_processor, config: VisionPretrainConfig, variants: int = 1) -> Iterator:
    """An endless stream of labelled clips from ``root_seed`` (clip ``i`` uses the i-th spawned seed; each clip
    gives ``variants`` consecutive items with different marker IDs)."""
    i = 0
    with tempfile.TemporaryDirectory(prefix="nano-vision-") as tmp:
        while True:
            seed = clip_seed(root_seed, i)
            yield from labelled_clip(seed, video_processor, config, np.random.default_rng(seed), Path(tmp), variants)
            i += 1


# --- training --------------------------------------------------------------------------------------
class ClipStream(torch.utils.data.IterableDataset):
    """:func:`labelled_clips` as a dataset, so a ``DataLoader`` worker generates clips while the model trains."""

    def __init__(self, root_seed: int, video_processor, config: VisionPretrainConfig):
        self.root_seed, self.video_processor, self.config = root_seed, video_processor, config

    def __iter__(self):
        torch.set_num_threads(1)
        return labelled_clips(self.root_seed, self.video_processor, self.config, self.config.variants_per_clip)


class TokenProbe:
    """One linear head per label on the merger output (a plain ``nn.ModuleDict``)."""

    @staticmethod
    def build(hidden_size: int):
        import torch.nn as nn

        heads = {name: nn.Linear(hidden_size, len(names)) for name, names in label_classes().items()}
        heads["state"] = nn.Linear(hidden_size, TEMPORAL_PATCH * len(STATE_NAMES))
        return nn.ModuleDict(heads)


def state_loss_and_sums(prediction: torch.Tensor, target: torch.Tensor):
    """Smooth L1 of the ``state`` head over the labelled entries (NaN: skipped; None without any), and per output the
    sums an R^2 needs: ``(squared error, target sum, target square sum, count)``."""
    import torch.nn.functional as F

    labelled = ~torch.isnan(target)
    if not labelled.any():
        return None, None
    filled = torch.where(labelled, target, torch.zeros_like(target))
    loss = F.smooth_l1_loss(prediction[labelled], target[labelled], beta=0.1)
    weight = labelled.to(prediction.dtype)
    with torch.no_grad():
        sums = tuple(
            v.cpu().double().numpy()
            for v in (
                (((prediction - filled) ** 2) * weight).sum(0),
                filled.sum(0),
                (filled**2).sum(0),
                weight.sum(0),
            )
        )
    return loss, sums


def state_r2(sse: np.ndarray, total: np.ndarray, square: np.ndarray, n: np.ndarray) -> dict[str, float]:
    """``state_r2_{group}`` (:data:`STATE_GROUPS`, both frames pooled): 1 - squared error / the targets' variance
    about their mean, per output, then averaged over the group's outputs that have labels."""
    variance = square - total**2 / np.maximum(n, 1)
    r2 = np.where((n > 1) & (variance > 0), 1 - sse / np.maximum(variance, 1e-12), np.nan)
    out = {}
    for group, index in STATE_GROUPS.items():
        columns = [j * len(STATE_NAMES) + i for j in range(TEMPORAL_PATCH) for i in index]
        values = r2[columns][~np.isnan(r2[columns])]
        out[f"state_r2_{group}"] = float(values.mean()) if len(values) else float("nan")
    return out


def _losses_and_hits(probe, features, labels, config: VisionPretrainConfig):
    import torch.nn.functional as F

    losses, hits = {}, {}
    for name, head in probe.items():
        if name in CHANGE_HEADS and config.change_weight <= 0:
            continue
        if name == "state":
            if config.state_weight > 0 and "state" in labels:
                loss, sums = state_loss_and_sums(head(features), labels["state"])
                if loss is not None:
                    losses[name], hits[name] = config.state_weight * loss, sums
            continue
        logits = head(features)
        target = labels[name]
        if not (target != IGNORE).any():  # e.g. events in still crops
            continue
        weight = None
        class_weight = {"digit": config.digit_weight, "event": config.event_weight}.get(name, 1.0)
        if class_weight != 1.0:
            weight = torch.full((logits.shape[-1],), class_weight, device=logits.device)
            weight[0] = 1.0
        if name in CHANGE_HEADS:  # a growth, a turn, a colour change are rare against "same"
            rare = [RARE_CHANGE_WEIGHT if n in RARE_CHANGES else 1.0 for n in label_classes()[name]]
            weight = torch.tensor(rare, device=logits.device)
        losses[name] = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
        if name in CHANGE_HEADS:
            losses[name] = config.change_weight * losses[name]
        pred = logits.argmax(-1)
        # accuracy where there is something to see (marker tokens; object tokens; event tokens)
        keep = target > 0
        class_right, class_n = class_hits(pred, target, logits.shape[-1])
        hits[name] = (
            int((pred[keep] == target[keep]).sum()),
            int(keep.sum()),
            int(((pred > 0) & (target == 0)).sum()),
            int((target == 0).sum()),
            class_right,
            class_n,
        )
    return losses, hits


def class_hits(pred: torch.Tensor, target: torch.Tensor, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: tokens of that class predicted right, and tokens of that class (:data:`IGNORE` left out)."""
    labelled = target != IGNORE
    pred, target = pred[labelled], target[labelled]
    n = torch.bincount(target, minlength=classes)
    right = torch.bincount(target[pred == target], minlength=classes)
    return right.cpu().numpy(), n.cpu().numpy()


def recall_scores(name: str, class_right: np.ndarray, class_n: np.ndarray) -> dict[str, float]:
    """``{name}_balanced_acc``: mean recall over the classes other than "none" that occur (plain accuracy is mostly
    the commonest class: "same" for the change heads); for the event and change heads also each class's recall."""
    seen = np.nonzero(class_n[1:] > 0)[0] + 1
    recall = class_right[seen] / class_n[seen]
    scores = {f"{name}_balanced_acc": float(recall.mean()) if len(seen) else float("nan")}
    if name == "event" or name in CHANGE_HEADS:
        names = label_classes()[name]
        scores.update({f"{name}_recall_{names[k]}": float(r) for k, r in zip(seen, recall)})
    return scores


def _collate_clips(items):
    """DataLoader items ``(VideoTensors, labels)`` → ``(videos, labels)`` of one batch."""
    return [v for v, _ in items], {k: torch.cat([lab[k] for _, lab in items]) for k in items[0][1]}


def _forward(visual, videos, device):
    from stvgr1_edge_train.video_inputs import collate_videos

    batch = collate_videos(videos, device=device)
    return visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"]).pooler_output


def _evaluate(visual, probe, val_batches, config, device) -> dict[str, float]:
    totals: dict[str, list] = {}
    visual.eval()
    with torch.no_grad():
        for videos, labels in val_batches:
            out = _forward(visual, videos, device)
            _, hits = _losses_and_hits(probe, out, {k: v.to(device) for k, v in labels.items()}, config)
            for name, h in hits.items():
                totals[name] = [a + b for a, b in zip(totals[name], h)] if name in totals else list(h)
    visual.train(config.train_tower)
    scores = {}
    if "state" in totals:
        scores.update(state_r2(*totals.pop("state")))
    for name, (right, n, false_pos, negatives, class_right, class_n) in totals.items():
        scores[f"{name}_acc"] = right / max(n, 1)
        scores[f"{name}_false_positive_rate"] = false_pos / max(negatives, 1)
        scores.update(recall_scores(name, class_right, class_n))
    return scores


def pretrain_vision(
    init_dir: str | Path,
    out_dir: str | Path,
    config: VisionPretrainConfig = VisionPretrainConfig(),
    device: str = "cpu",
) -> dict:
    """Train ``init_dir``'s vision tower (+ merger) on the dense labels, small scenes then clips; save the whole
    model (LM unchanged) and its processor to ``out_dir`` after every evaluation. Returns the validation scores
    (also in ``out_dir/pretrain_vision.json``): ``scene_*`` on held-out crops, the rest on held-out clips."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(config.seed)
    processor = AutoProcessor.from_pretrained(str(init_dir))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(init_dir), dtype=torch.float32).to(device)
    visual = model.model.visual
    visual.train(config.train_tower)
    visual.requires_grad_(config.train_tower)
    probe = TokenProbe.build(model.config.text_config.hidden_size).to(device)
    vp = processor.video_processor
    params = [p for p in visual.parameters() if p.requires_grad] + [p for p in probe.parameters()]
    total = config.glyph_steps + config.scene_steps + config.steps
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    scheduler = warmup_cosine(optimizer, config.warmup_steps, total)
    workers = dict(num_workers=config.data_workers, prefetch_factor=4 if config.data_workers else None)
    glyph_stream = SceneStream(config.seed + 3, vp, config, glyph_crop, config.glyph_batch)
    glyph_val = list(itertools.islice(iter(glyph_stream), 4))
    scene_val = list(itertools.islice(iter(SceneStream(config.seed + 2, vp, config)), 8))
    clip_stream = labelled_clips(config.seed + 1, vp, config)
    clip_val = [
        _collate_clips([next(clip_stream) for _ in range(config.batch_clips)])
        for _ in range(max(1, config.val_clips // config.batch_clips))
    ]
    train_seed = config.seed if config.train_seed is None else config.train_seed
    phases = [
        (
            "glyph",
            config.glyph_steps,
            glyph_val,
            torch.utils.data.DataLoader(
                SceneStream(train_seed, vp, config, glyph_crop, config.glyph_batch), batch_size=None, **workers
            ),
        ),
        (
            "scene",
            config.scene_steps,
            scene_val,
            torch.utils.data.DataLoader(SceneStream(train_seed, vp, config), batch_size=None, **workers),
        ),
        (
            "clip",
            config.steps,
            clip_val,
            torch.utils.data.DataLoader(
                ClipStream(train_seed, vp, config), batch_size=config.batch_clips, collate_fn=_collate_clips, **workers
            ),
        ),
    ]
    history: list[dict] = []
    report: dict = {}
    start = time.perf_counter()
    step = 0
    for phase, steps, val_batches, loader in phases:
        if steps <= 0:
            continue
        stream = iter(loader)
        running: dict[str, float] = {}
        for phase_step in range(steps):
            videos, labels = next(stream)
            out = _forward(visual, videos, device)
            losses, _ = _losses_and_hits(probe, out, {k: v.to(device) for k, v in labels.items()}, config)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            for k, v in losses.items():
                running[k] = 0.98 * running.get(k, v.item()) + 0.02 * v.item()
            if (phase_step + 1) % 50 == 0:
                logger.info(
                    "%s step %d/%d  %.1f s  losses %s",
                    phase,
                    phase_step + 1,
                    steps,
                    time.perf_counter() - start,
                    {k: round(v, 3) for k, v in running.items()},
                )
            if (phase_step + 1) % config.eval_every == 0 or phase_step + 1 == steps:
                scores = _evaluate(visual, probe, val_batches, config, device)
                history.append(
                    {"phase": phase, "step": step, "seconds": round(time.perf_counter() - start, 1), **scores}
                )
                logger.info("%s val at step %d: %s", phase, phase_step + 1, {k: round(v, 3) for k, v in scores.items()})
                report = save_stage(model, processor, out_dir, config, history)  # a usable model after every evaluation
    return report


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int):
    """The nano stages' schedule: linear warm-up over ``warmup_steps``, then cosine decay to 10% of the rate."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def save_stage(
    model, processor, out_dir, config, history: list[dict], report_name: str = "pretrain_vision.json"
) -> dict:
    """Save the whole model and its processor to ``out_dir`` with ``report_name``: the stage's ``config`` (a
    dataclass), its validation ``history`` and the last entry as ``final``. Returns that report."""
    from stvgr1_edge.errors import write_json_atomic

    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    report = {"config": asdict(config), "history": history, "final": history[-1] if history else {}}
    write_json_atomic(out_dir / report_name, report, indent=1)
    return report


def exit_bad_input(problem: str) -> NoReturn:
    """One line on stderr and exit code 2, as the other command lines answer bad input."""
    print(f"error: {problem}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.recipes.nano.pretrain_vision",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("init", help="Model folder to start from (the random-init nano model).")
    parser.add_argument("out", help="Output folder (whole model + processor).")
    parser.add_argument("--glyph-steps", type=int, default=VisionPretrainConfig.glyph_steps)
    parser.add_argument("--scene-steps", type=int, default=VisionPretrainConfig.scene_steps)
    parser.add_argument("--steps", type=int, default=VisionPretrainConfig.steps, help="Clip steps.")
    parser.add_argument("--batch-clips", type=int, default=VisionPretrainConfig.batch_clips)
    parser.add_argument("--lr", type=float, default=VisionPretrainConfig.learning_rate)
    parser.add_argument(
        "--event-weight",
        type=float,
        default=VisionPretrainConfig.event_weight,
        help="Loss weight of the event classes against 'none'.",
    )
    parser.add_argument(
        "--scene-changes", action="store_true", help="Scene objects change between frames as clip objects do."
    )
    parser.add_argument(
        "--scene-still", action="store_true", help="Scene objects keep their place between the two frames."
    )
    parser.add_argument(
        "--change-weight",
        type=float,
        default=VisionPretrainConfig.change_weight,
        help="Loss weight of the change heads (dx, dy, scale, turn, recolour); 0 leaves them out.",
    )
    parser.add_argument(
        "--state-weight",
        type=float,
        default=VisionPretrainConfig.state_weight,
        help="Loss weight of the state regression (offset, radius, turn, colour in each frame); 0 leaves it out.",
    )
    parser.add_argument("--eval-every", type=int, default=VisionPretrainConfig.eval_every)
    parser.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="Root seed of the training clips (default: the validation's root); another one continues on fresh clips.",
    )
    parser.add_argument("--width", type=int, default=VisionPretrainConfig.width, help="Clip width (a 28-multiple).")
    parser.add_argument("--height", type=int, default=VisionPretrainConfig.height, help="Clip height (a 28-multiple).")
    parser.add_argument("--seconds", type=float, default=VisionPretrainConfig.seconds, help="Clip length.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--data-workers", type=int, default=VisionPretrainConfig.data_workers, help="Clip-generating processes."
    )
    parser.add_argument(
        "--freeze-tower", action="store_true", help="Train the heads only: a linear read-out of the tower as loaded."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (1 is faster than 2 on a 2-core machine that runs anything else)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = VisionPretrainConfig(
        glyph_steps=args.glyph_steps,
        scene_steps=args.scene_steps,
        steps=args.steps,
        batch_clips=args.batch_clips,
        learning_rate=args.lr,
        eval_every=args.eval_every,
        event_weight=args.event_weight,
        change_weight=args.change_weight,
        state_weight=args.state_weight,
        scene_changes=args.scene_changes,
        scene_still=args.scene_still,
        data_workers=args.data_workers,
        train_tower=not args.freeze_tower,
        train_seed=args.train_seed,
        width=args.width,
        height=args.height,
        seconds=args.seconds,
    )
    problem = config.clip_format_error() or config.train_seed_error()
    if not Path(args.init).is_dir():
        problem = f"{args.init} is not a model folder; pass the folder build_nano or an earlier stage wrote"
    if problem:
        exit_bad_input(problem)
    report = pretrain_vision(args.init, args.out, config, device=args.device)
    print(json.dumps(report["final"], indent=1))


if __name__ == "__main__":
    main()
