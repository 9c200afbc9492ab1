"""A nano recipe stage: teach the language model to *write the time* of what it sees, on clips where the event is
trivially visible; and a measurement of whether it can.

    python -m stvgr1_edge_train.recipes.nano.pretrain_time MODEL_DIR OUT_DIR [--steps 800] [--attention-weight 1]
                                                           [--time-classes 0]
    python -m stvgr1_edge_train.recipes.nano.pretrain_time MODEL_DIR CACHE_DIR --cache 400   # clips for SFT mixing

Why: the nano model's time answers follow the clip's length, not its event. Writing a time needs two steps: the visual
tokens must carry their own time (the tower sees one 2-frame tube at a time; time exists only as the language model's
rotary positions), and the time tokens must attend to the event's tokens and turn what they carry into digits.
Answer-level SFT on real clips gives that chain two numbers of signal per clip, behind an ID and an event the model
must also get right.

What: clips whose only change is a black-and-white checkered square shown over a random range ([``min_event_s``,
``max_event_fraction`` of the clip]) of a clip of random length (4-16 s), size and frame rate, sampled and resized by
the §4 rules; the STVG-R1 prompt; the teacher answer in the SFT stage's format (query, the one object's checked line,
ID, then the time range), its times weighted ``time_weight``. The tower stays frozen; the language model trains, with
two auxiliary losses. The clock loss (``clock_weight``, its head thrown away) makes every visual token's time a linear
feature after LM layer ``clock_layer``. The attention loss (``attention_weight``) teaches where to read it: at the
positions that write a start's (end's) characters, one head of LM layer ``attention_layer`` must attend to the square's
tokens in the first (last) tube that shows it. With ``distractors``, other squares of other patterns are shown over
their own ranges and the query names the target's pattern. The carry loss (``carry_weight``, off by default) asks the
look to bring the time back: the state after that layer, at those positions, must hold the time written there as a
linear feature. Held-out clips (root ``eval_seed``) are decoded greedily every
``eval_every`` steps and scored by mean tIoU against the best constant range on the same clips (the prior, 0.365 on the
default 48). The model is saved after every evaluation with ``pretrain_time.json``.

Measured from the shipped model on 2 CPU cores (batch 8, lr 5e-4, ~3.6 s a step): with the defaults (``--steps 800``)
the held-out tIoU is 0.26 / 0.45 / 0.52 / 0.54 after 200 / 400 / 600 / 800 steps (prior 0.365); on 40 held-out clips
the predicted start's partial correlation with the true one, given the clip's length, is 0.16 / 0.39 / 0.69 after 400 /
600 / 800 steps (the end's 0.14 / 0.75 / 0.75), and tIoU falls with the clip's length (0.59 / 0.57 / 0.47 for clips of
4-8 / 8-12 / 12-16 s at step 800).
Without the attention loss the answers stay at the prior whatever the clock loss does (0.38 / 0.39 after 100 / 200
steps without the clock loss, 0.35 / 0.30 / 0.43 after 100 / 200 / 300 with it; partial correlations within ±0.25 of
zero, the predicted end following the clip's length): the clock alone makes time linear in the tokens (the head's RMS
error 0.7 s after 280 steps) but the answer loss does not find the read-out in those steps.

With two distractors (``--distractors 2``, from the shipped model, 800 steps, 50 minutes) the held-out tIoU is 0.32 /
0.37 / 0.31 / 0.41 / 0.39 / 0.46 / 0.44 / 0.44 after 100 ... 800 steps (prior 0.365). The look is learned but brings
nothing back (``python -m stvgr1_edge_train.recipes.nano.probe_carry OUT``, 200 clips): head 0 of layer 2 puts 0.73 of
its attention on the target's first (last) shown tube and 0.07 on the other squares, the looked-at tokens hold their
time (ridge R² 0.82), yet the state that writes the start holds the target's start beyond what the clip's length
tells at R² 0.03 before the layer and 0.05 after it. 400 more steps with ``--carry-weight 2`` (25 minutes): held-out
tIoU 0.43 / 0.40 / 0.44 / 0.50 after 100 / 200 / 300 / 400; the look is the same (0.79 on the edge tube, 0.06 on the
others) and now brings the time: R² 0.02 before the layer, 0.34 after it and 0.20 after the last layer. The same 400
steps without it: tIoU 0.42 / 0.41 / 0.47 / 0.46, R² 0.00 / 0.09 / 0.04. The carry reaches the state, but the digits
use little of it: the answers gain 0.03 tIoU on the 48 held-out clips. 400 steps more of each (26 minutes each): with
the carry loss tIoU 0.43 / 0.40 / 0.50 / 0.52 (mean start/end error 1.08 s), R² 0.01 / 0.59 / 0.59 after the last
layer too; without it 0.40 / 0.42 / 0.43 / 0.49 (1.32 s), R² 0.01 / 0.10 / 0.20 (the look 0.84 on the edge tube in
both). With more steps the carried time reaches the last layer, and the answers follow it a little more.

Classified, not regressed (``--time-classes 17``: the clock and carry heads name the whole second). From the shipped
model, one checkered square, ``--steps 400 --eval-every 100 --carry-weight 2``, both arms in one run on 2 CPU cores
(75 minutes each, side by side): held-out tIoU 0.15 / 0.60 / 0.62 / 0.73 after 100 / 200 / 300 / 400 steps (mean
start/end error 0.54 s at 400) against 0.43 / 0.39 / 0.48 / 0.51 (1.16 s) with the regressed heads (prior 0.365). A
regressed time need only be near to lower its loss; the answer's first digit needs the second itself, and a head that
must tell each second from the next one makes the state carry it so.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger("stvgr1_edge_train.recipes.nano.pretrain_time")


CHECKER_PX = 7
"""Cell side of the shown square's checkerboard (half a 14-pixel patch)."""
SQUARE_PATTERNS = ("checkered", "striped", "white")
"""Patterns a shown square may have (:func:`square_pixels`); each is visible in every token it covers."""
LABEL = "large white square"
"""The shown square's object line in the teacher answer (``size colour shape``, as synthetic clips describe objects)."""


@dataclass(frozen=True)
class TimeReadingConfig:
    steps: int = 800
    batch_size: int = 8
    learning_rate: float = 5e-4
    warmup_steps: int = 30
    time_weight: float = 3.0
    """Loss weight of the times' digits and points (1.0 for the other answer tokens)."""
    clock_weight: float = 2.0
    """Weight of the clock loss: a linear head on every visual token's state after LM layer ``clock_layer`` regresses
    the token's time (seconds / 10, mean squared error). It makes the time a linear feature of the tokens that the
    answer's digits can read by attention (0: off). The head is thrown away."""
    clock_layer: int = 2
    attention_weight: float = 1.0
    """Weight of the attention loss: at the positions that write the start's (end's) characters, head
    ``attention_head`` of LM layer ``attention_layer`` is trained to put its attention on the square's tokens of the
    first (last) 2-frame tube that shows it (minus the log of the attention mass there). It builds the read-out the
    answer loss alone does not find: "look at where the event begins (ends), copy its time" (0: off)."""
    attention_layer: int = 2
    attention_head: int = 0
    carry_weight: float = 0.0
    """Weight of the carry loss: a linear head on the state after LM layer ``attention_layer``, at the positions the
    attention loss trains, regresses the time written there (seconds / 10, mean squared error; the head is thrown
    away). The attention loss teaches where to look, not what the look brings: without this the look's output need
    not hold the time of the tokens it looks at (0: off)."""
    time_classes: int = 0
    """With N > 0 the clock and carry heads classify whole seconds instead of regressing the time: the clock a visual
    token's second (its tube at 2 fps), the carry the second of the time written, each a linear map to N classes
    (cross-entropy; seconds beyond N - 1 count as N - 1). A digit is a class: a regressed time need only be near, a
    classified one must be apart from its neighbours for the answer's first digit to read it (0: regress)."""

    sizes: tuple[tuple[int, int], ...] = ((320, 240), (224, 168))
    """(width, height) of the clips: synth's default and the first stages'."""
    min_seconds: float = 4.0
    max_seconds: float = 16.0
    video_fps: tuple[float, ...] = (10.0, 15.0, 25.0, 30.0)
    min_event_s: float = 1.0
    max_event_fraction: float = 0.6
    margin_s: float = 0.25
    distractors: int = 0
    """Other squares in each clip, each with another of :data:`SQUARE_PATTERNS` and shown over its own random range;
    the query names the target's pattern, so the read-out must find the named square's tubes, not any change
    (0: one checkered square, the query always the same). At most ``len(SQUARE_PATTERNS) - 1``."""
    eval_clips: int = 48
    eval_every: int = 100
    seed: int = 40_000
    """Root seed of the training clips (other stages: 0/1, 4000, 5000, 10000-10003, 20-24, 20000, 30000)."""
    eval_seed: int = 41_000


@dataclass(frozen=True)
class TimeReadingClip:
    video: object
    """:class:`VideoTensors` of the sampled, resized frames."""
    query: str
    start_s: float
    end_s: float
    duration_s: float
    frame_times_s: tuple[float, ...]
    square_box: tuple[int, int, int]
    """(x0, y0, side) of the shown square in the resized frames' pixels."""
    distractors: tuple[tuple[tuple[int, int, int], float, float], ...] = ()
    """(box, start_s, end_s) of each other square (``TimeReadingConfig.distractors``)."""

    def square_boxes(self, box: tuple[int, int, int], start_s: float, end_s: float, patch_size: int) -> tuple:
        """A square's ``box`` (x0, y0, side) in each sampled frame as fractions of the frame (x0, y0, x1, y1) on the
        frames it is shown on (``start_s``..``end_s``), ``()`` elsewhere."""
        _, rows, cols = (int(v) for v in self.video.video_grid_thw[0])
        width, height = cols * patch_size, rows * patch_size
        x0, y0, side = box
        fractions = (x0 / width, y0 / height, (x0 + side) / width, (y0 + side) / height)
        return tuple(fractions if start_s - 1e-6 <= t <= end_s + 1e-6 else () for t in self.frame_times_s)

    def target_boxes(self, patch_size: int) -> tuple[tuple[float, ...], ...]:
        """The target square's :meth:`square_boxes`: a prepared sample's ``target_boxes``."""
        return self.square_boxes(self.square_box, self.start_s, self.end_s, patch_size)

    def token_times_s(self, merge_size: int) -> torch.Tensor:
        """Each visual token's time: the mean of its 2-frame tube's frame times (tokens are tube-major)."""
        tubes = int(self.video.video_grid_thw[0, 0])
        times = torch.tensor(self.frame_times_s, dtype=torch.float32).view(tubes, -1).mean(1)
        return times.repeat_interleave(self.video.num_visual_tokens(merge_size) // tubes)


def square_pixels(pattern: str, side: int) -> np.ndarray:
    """A shown square's (side, side, 1) grey values: black-and-white half-patch cells (``checkered``), half-patch
    horizontal bands (``striped``) or plain white."""
    yy, xx = np.mgrid[:side, :side]
    if pattern == "checkered":
        cells = (yy // CHECKER_PX + xx // CHECKER_PX) % 2
    elif pattern == "striped":
        cells = (yy // CHECKER_PX) % 2
    elif pattern == "white":
        cells = np.ones_like(yy)
    else:
        raise ValueError(f"unknown square pattern {pattern!r}: one of {', '.join(SQUARE_PATTERNS)}")
    return np.where(cells == 1, 245, 10)[..., None]


def shown_range(rng: np.random.Generator, config: TimeReadingConfig, duration: float, fps: float) -> tuple[int, int]:
    """A random shown range as its first and last native frame: ``min_event_s`` to ``max_event_fraction`` of the
    clip, ``margin_s`` from both ends."""
    length = rng.uniform(config.min_event_s, config.max_event_fraction * duration)
    start = rng.uniform(config.margin_s, duration - config.margin_s - length)
    return int(math.ceil(start * fps)), int(math.floor((start + length) * fps))


def distractor_squares(
    rng: np.random.Generator, config: TimeReadingConfig, height: int, width: int
) -> list[tuple[str, int, int, int]]:
    """(pattern, x0, y0, side) of the target and ``distractors`` other squares, target first: distinct patterns,
    sides a quarter to a third of the frame's short side, placed without overlap."""
    count = config.distractors + 1
    if count > len(SQUARE_PATTERNS):
        raise ValueError(f"distractors must be at most {len(SQUARE_PATTERNS) - 1}")
    patterns = [SQUARE_PATTERNS[int(k)] for k in rng.permutation(len(SQUARE_PATTERNS))[:count]]
    placed: list[tuple[str, int, int, int]] = []
    while len(placed) < count:
        side = int(rng.uniform(0.25, 0.34) * min(height, width))
        y0, x0 = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
        if all(x0 + side <= x or x + s <= x0 or y0 + side <= y or y + s <= y0 for _, x, y, s in placed):
            placed.append((patterns[len(placed)], x0, y0, side))
    return placed


def time_reading_frames(seed: int, config: TimeReadingConfig = TimeReadingConfig()) -> dict:
    """One clip's sampled frames, already at the §4 resized size: a noisy background, two to four static discs, and
    a square shown only on the event's frames (with ``distractors``, other squares shown over their own ranges). The
    range is whole native frames (``start_s``/``end_s``: the first and last shown frame's times). Returns ``frames``
    (T, H, W, 3) uint8, ``frame_times_s``, ``sample_fps``, ``query``, ``start_s``, ``end_s``, ``duration_s``,
    ``square_box`` (x0, y0, side) and ``squares`` (pattern, (x0, y0, side), start_s, end_s; the target first)."""
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.synth import PALETTE

    rng = np.random.default_rng(seed)
    width, height = config.sizes[int(rng.integers(len(config.sizes)))]
    fps = float(config.video_fps[int(rng.integers(len(config.video_fps)))])
    total = int(round(rng.uniform(config.min_seconds, config.max_seconds) * fps))
    duration = total / fps
    first, last = shown_range(rng, config, duration, fps)
    plan = plan_sampling(total, fps, height, width)
    h, w = plan.resized_height, plan.resized_width

    colours = list(PALETTE)
    frame = np.clip(rng.integers(30, 110, 3) + rng.normal(0, 6, (h, w, 3)), 0, 255)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(2, 5))):
        cy, cx, r = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w, rng.uniform(0.06, 0.12) * min(h, w)
        frame[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = PALETTE[colours[int(rng.integers(len(colours)))]]
    # The shown square's pattern is unlike any other pixel, so every token it covers says "shown" by itself, and
    # only the time (and, with distractors, which square) is left to read.
    if config.distractors == 0:
        side = int(rng.uniform(0.4, 0.6) * min(h, w))
        y0, x0 = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        squares = [("checkered", x0, y0, side)]
        ranges = [(first, last)]
    else:
        squares = distractor_squares(rng, config, h, w)
        ranges = [(first, last)] + [shown_range(rng, config, duration, fps) for _ in squares[1:]]
    pixels = [square_pixels(pattern, side) for pattern, _, _, side in squares]
    frames = []
    for i in plan.indices:
        shown = frame.copy()
        for (_, x0, y0, side), (a, b), patch in zip(squares, ranges, pixels, strict=True):
            if a <= i <= b:
                shown[y0 : y0 + side, x0 : x0 + side] = patch
        frames.append(shown)
    return {
        "square_box": squares[0][1:],
        "squares": [(p, (x0, y0, s), a / fps, b / fps) for (p, x0, y0, s), (a, b) in zip(squares, ranges, strict=True)],
        "frames": np.stack(frames).astype(np.uint8),
        "frame_times_s": [i / fps for i in plan.indices],
        "sample_fps": plan.sample_fps,
        "query": f"the {squares[0][0]} square is shown",
        "start_s": first / fps,
        "end_s": last / fps,
        "duration_s": duration,
    }


def time_reading_clip(seed: int, video_processor, config: TimeReadingConfig = TimeReadingConfig()) -> TimeReadingClip:
    """:func:`time_reading_frames` as the grounder's tensors."""
    from .pretrain_vision import video_tensors

    clip = time_reading_frames(seed, config)
    video = video_tensors(clip["frames"], clip["sample_fps"], video_processor)
    return TimeReadingClip(
        video,
        clip["query"],
        clip["start_s"],
        clip["end_s"],
        clip["duration_s"],
        tuple(clip["frame_times_s"]),
        tuple(int(v) for v in clip["square_box"]),
        tuple((tuple(box), start_s, end_s) for _, box, start_s, end_s in clip["squares"][1:]),
    )


def time_reading_sample(
    clip: TimeReadingClip, sample_id: str, merge_size: int, patch_size: int, processor_constants=None
):
    """``clip`` as a prepared-clip sample (:class:`stvgr1_edge.prepared.CachedSample`, tensors in
    ``videos/<sample_id>.safetensors``): the one object is ID 1, :data:`LABEL`. Its ``to_row`` is what SFT reads."""
    from stvgr1_edge.prepared import CachedSample
    from stvgr1_edge.prompt import grounding_prompt

    return CachedSample(
        sample_id=sample_id,
        video=sample_id,
        video_file=f"videos/{sample_id}.safetensors",
        query=clip.query,
        prompt=grounding_prompt(clip.query),
        gt_id=1,
        gt_start_s=clip.start_s,
        gt_end_s=clip.end_s,
        duration_s=clip.duration_s,
        num_visual_tokens=clip.video.num_visual_tokens(merge_size),
        valid_ids=(1,),
        vote_share=1.0,
        mean_iou=1.0,
        object_labels=(LABEL,),
        processor=processor_constants or {},
        frame_times_s=tuple(round(t, 3) for t in clip.frame_times_s),
        target_boxes=clip.target_boxes(patch_size),
    )


def write_time_reading_cache(
    cache_dir, processor, num: int, root_seed: int = 42_000, config: TimeReadingConfig = TimeReadingConfig()
) -> int:
    """Write ``num`` time-reading clips (root seed ``root_seed``) as a prepared-clip cache
    (:mod:`stvgr1_edge.prepared`) that SFT can mix with real clips (:func:`time_reading_sample`). Returns ``num``."""
    from pathlib import Path

    from stvgr1_edge.prepared import write_sample, write_video_tensors
    from stvgr1_edge_train.video_inputs import ClipProcessor

    from .pretrain_vision import clip_seed

    cache_dir = Path(cache_dir)
    constants = ClipProcessor(processor).constants()
    merge, patch = int(processor.video_processor.merge_size), int(processor.video_processor.patch_size)
    for i in range(num):
        clip = time_reading_clip(clip_seed(root_seed, i), processor.video_processor, config)
        sample = time_reading_sample(clip, f"time_s{root_seed}_{i:05d}", merge, patch, constants)
        write_video_tensors(cache_dir / sample.video_file, clip.video)
        write_sample(cache_dir, sample)
    return num


class TimeReadingBatches:
    """Batches of :class:`TimeReadingClip` as model inputs: the SFT stage's own collation
    (:meth:`stvgr1_edge_train.sft.SFTCollator.collate`: prompt + checked teacher answer, labels on the answer, the
    times weighted ``time_weight``, with ``attention_weight`` the ``attention_queries`` of the square's first and last
    shown tube) of each clip's :func:`time_reading_sample` row, videos already in memory."""

    def __init__(self, processor, config: TimeReadingConfig) -> None:
        from stvgr1_edge_train.sft import SFTCollator

        self.collator = SFTCollator(
            processor,
            mark_target=True,
            check_attributes=True,
            time_weight=config.time_weight,
            attend_event_edges=config.attention_weight > 0 or config.carry_weight > 0,
        )
        self.merge_size = self.collator.merge_size
        self.patch_size = int(processor.video_processor.patch_size)
        self.video_token_id = self.collator.video_token_id
        self.tokenizer = processor.tokenizer

    def prompt_ids(self, clip: TimeReadingClip) -> list[int]:
        from stvgr1_edge.prompt import grounding_prompt

        tokens = clip.video.num_visual_tokens(self.merge_size)
        return self.collator.clip_processor.prepare_text(grounding_prompt(clip.query), tokens)["input_ids"][0].tolist()

    def __call__(self, clips: list[TimeReadingClip]) -> dict[str, torch.Tensor]:
        from pathlib import Path

        rows = [
            time_reading_sample(c, f"time_{i}", self.merge_size, self.patch_size).to_row(Path())
            for i, c in enumerate(clips)
        ]
        batch = self.collator.collate(rows, [c.video for c in clips])
        return batch


def evaluate_time_reading(model, batches: TimeReadingBatches, clips: list[TimeReadingClip], device: str) -> dict:
    """Greedy answers on ``clips``: mean tIoU, the prior's, parse rate and the mean start/end error."""
    from stvgr1_edge.answer import parse_answer
    from stvgr1_edge.baseline import best_constant_range
    from stvgr1_edge.metrics import temporal_iou_seconds
    from stvgr1_edge_train.video_inputs import collate_videos, video_token_type_ids

    model.eval()
    tious, errors, parsed = [], [], 0
    with torch.no_grad():
        for clip in clips:
            input_ids = torch.tensor([batches.prompt_ids(clip)], device=device)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                mm_token_type_ids=video_token_type_ids(input_ids, batches.video_token_id),
                **collate_videos([clip.video], device=device),
                max_new_tokens=96,
                do_sample=False,
            )
            text = batches.tokenizer.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True)
            answer = parse_answer(text, duration_s=clip.duration_s)
            if not answer.has_time_range:
                tious.append(0.0)
                continue
            parsed += 1
            assert answer.start_s is not None and answer.end_s is not None
            tious.append(temporal_iou_seconds((answer.start_s, answer.end_s), (clip.start_s, clip.end_s)))
            errors.append(abs(answer.start_s - clip.start_s) + abs(answer.end_s - clip.end_s))
    model.train()
    prior = best_constant_range([(c.start_s, c.end_s) for c in clips])[2]
    return {
        "m_tiou": float(np.mean(tious)),
        "prior_m_tiou": prior,
        "parsed": parsed / len(clips),
        "mean_abs_error_s": float(np.mean(errors)) / 2 if errors else float("nan"),
    }


def pretrain_time(model_dir, out_dir, config: TimeReadingConfig = TimeReadingConfig(), device: str = "cpu") -> dict:
    """Train ``model_dir``'s language model to write the times of visible events (see the module doc)."""
    from transformers import Qwen2_5_VLForConditionalGeneration, get_cosine_schedule_with_warmup

    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import carry_loss, check_attention_head, sft_loss, time_head, time_head_loss, unit_rms

    from .pretrain_vision import clip_seed, save_stage

    torch.manual_seed(config.seed)
    processor, source = load_processor(str(model_dir))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.float32).to(device)
    model = use_trained_rope_index(model)
    model.model.visual.requires_grad_(False)
    layers = model.config.text_config.num_hidden_layers
    if not 0 < config.clock_layer <= layers:
        raise ValueError(f"clock_layer must be an LM layer, 1..{layers}")
    check_attention_head(model.config.text_config, config.attention_layer, config.attention_head)
    hidden = model.config.text_config.hidden_size
    clock = time_head(hidden, config.time_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(clock.parameters()) if config.clock_weight else []
    carry = time_head(hidden, config.time_classes).to(device)  # used with carry_weight only
    params += list(carry.parameters()) if config.carry_weight else []
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    batches = TimeReadingBatches(processor, config)
    vp = processor.video_processor
    merge = int(vp.merge_size)

    held_out = [time_reading_clip(clip_seed(config.eval_seed, i), vp, config) for i in range(config.eval_clips)]
    history = [{"step": 0, "seconds": 0.0, "loss": None, **evaluate_time_reading(model, batches, held_out, device)}]
    logger.info("step 0: %s", history[-1])
    running, start = None, time.perf_counter()
    model.train()
    for step in range(config.steps):
        clips = [
            time_reading_clip(clip_seed(config.seed, step * config.batch_size + j), vp, config)
            for j in range(config.batch_size)
        ]
        batch = batches(clips)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        losses = sft_loss(
            model,
            batch,
            config.attention_weight,
            config.attention_layer,
            config.attention_head,
            output_hidden_states=bool(config.clock_weight or config.carry_weight),
        )
        loss, answer_loss, attention_loss = losses.total, losses.answer, losses.attention
        if config.clock_weight:
            states = losses.outputs.hidden_states[config.clock_layer][batch["input_ids"] == batches.video_token_id]
            times = torch.cat([c.token_times_s(merge) for c in clips]).to(device)
            clock_loss = time_head_loss(clock, unit_rms(states), times, config.time_classes)
            loss = loss + config.clock_weight * clock_loss
        if config.carry_weight:
            ranges = [(c.start_s, c.end_s) for c in clips]
            after = losses.outputs.hidden_states[config.attention_layer + 1]
            carried = carry_loss(carry, after, batch["attention_queries"], ranges, config.time_classes)
            loss = loss + config.carry_weight * carried
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        running = answer_loss.item() if running is None else 0.9 * running + 0.1 * answer_loss.item()
        if (step + 1) % 10 == 0:
            extra = f", clock loss {clock_loss.item():.4f}" if config.clock_weight else ""
            extra += f", carry loss {carried.item():.4f}" if config.carry_weight else ""
            extra += f", attention loss {attention_loss.item():.3f}" if attention_loss is not None else ""
            logger.info("step %d: answer loss %.4f%s (%.1f s)", step + 1, running, extra, time.perf_counter() - start)
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            scores = evaluate_time_reading(model, batches, held_out, device)
            history.append(
                {"step": step + 1, "seconds": round(time.perf_counter() - start, 1), "loss": running, **scores}
            )
            logger.info("step %d: %s", step + 1, {k: round(v, 3) for k, v in scores.items()})
            report = save_stage(model, processor, out_dir, config, history, report_name="pretrain_time.json")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.recipes.nano.pretrain_time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="Model folder to start from (its processor also makes the cache's tensors).")
    parser.add_argument("out", help="Output folder: the trained model, or with --cache the prepared-clip cache.")
    parser.add_argument(
        "--cache",
        type=int,
        default=None,
        metavar="N",
        help="Write N clips as a prepared-clip cache into OUT instead of training (for SFT mixing).",
    )
    parser.add_argument("--cache-seed", type=int, default=42_000, help="Root seed of the --cache clips.")
    parser.add_argument("--steps", type=int, default=TimeReadingConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TimeReadingConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TimeReadingConfig.learning_rate)
    parser.add_argument("--clock-weight", type=float, default=TimeReadingConfig.clock_weight)
    parser.add_argument("--attention-weight", type=float, default=TimeReadingConfig.attention_weight)
    parser.add_argument("--carry-weight", type=float, default=TimeReadingConfig.carry_weight)
    parser.add_argument(
        "--time-classes",
        type=int,
        default=TimeReadingConfig.time_classes,
        metavar="N",
        help="Clock and carry heads classify whole seconds into N classes instead of regressing the time (0).",
    )
    parser.add_argument(
        "--distractors",
        type=int,
        default=TimeReadingConfig.distractors,
        choices=range(len(SQUARE_PATTERNS)),
        help="Other squares per clip, each shown over its own range; the query names the target's pattern.",
    )
    parser.add_argument("--eval-clips", type=int, default=TimeReadingConfig.eval_clips)
    parser.add_argument("--eval-every", type=int, default=TimeReadingConfig.eval_every)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = TimeReadingConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        clock_weight=args.clock_weight,
        attention_weight=args.attention_weight,
        carry_weight=args.carry_weight,
        time_classes=args.time_classes,
        distractors=args.distractors,
        eval_clips=args.eval_clips,
        eval_every=args.eval_every,
    )
    if args.cache is not None:
        from stvgr1_edge_train.grpo import load_processor

        processor, _ = load_processor(args.model)
        write_time_reading_cache(args.out, processor, args.cache, args.cache_seed, config)
        print(f"{args.cache} clips -> {args.out}")
        return
    report = pretrain_time(args.model, args.out, config, device=args.device)
    print(json.dumps(report["final"], indent=1))


if __name__ == "__main__":
    main()
