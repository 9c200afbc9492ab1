"""Stage 0 of the nano recipe: teach the random vision tower to see markers, objects and events (dense labels).

    python -m train.recipes.nano.pretrain_vision INIT_DIR OUT_DIR [--steps N]

A 4.7 M-parameter VLM trained from scratch on the STVG answer alone gets one supervised ID token per clip. In stop 9
it never learned to read the markers: its video features hardly varied from token to token. So the vision tower
(patch embedding, blocks and the patch merger, whose outputs the language model reads) is trained first on a dense
per-token objective. Linear heads on each merged visual token (28x28 pixels x 2 frames) predict:

- ``digit``: the ID whose §3 marker text is centred in the token (0: none);
- ``colour``, ``shape``, ``size``: of the object covering most of the token (0: no object; the colour it shows,
  "dark" only when it is blinking dark in both frames);
- ``event``: what that object is doing in those two frames (0: nothing, or no object).

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
import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

logger = logging.getLogger("train.recipes.nano.pretrain_vision")

MERGED_PX = 28
"""Side of one merged visual token in pixels (14-pixel patches, 2x2 merge)."""
TEMPORAL_PATCH = 2
"""Frames per visual token (Qwen2.5-VL's 2-frame tubes)."""
MAX_DISPLAY_ID = 15
"""Largest marker ID drawn (the digit head has classes 0..15)."""


def label_classes() -> dict[str, list[str]]:
    """Class names of each head; index 0 is "none" everywhere."""
    from stvgr1_edge.synth import EVENTS, PALETTE, SHAPES, SIZES

    return {"digit": ["none"] + [str(i) for i in range(1, MAX_DISPLAY_ID + 1)],
            "colour": ["none", *PALETTE, "dark"], "shape": ["none", *SHAPES], "size": ["none", *SIZES],
            "event": ["none", *EVENTS]}


@dataclass(frozen=True)
class VisionPretrainConfig:
    """The dense vision stage."""

    steps: int = 1500
    """Optimizer steps."""
    batch_clips: int = 2
    """Clips per step."""
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    """Linear warm-up, then cosine decay to 10% of ``learning_rate``."""
    weight_decay: float = 0.01
    digit_weight: float = 4.0
    """Weight of the token classes that hold a marker (rare: a few of 48 tokens per frame pair)."""
    min_object_pixels: int = 30
    """A token belongs to an object when the object covers at least this many of its 2 x 28 x 28 pixels."""
    seed: int = 10_000
    """Root seed of the pretraining clips (the recipe trains on 0 and 1, validates on 4000, holds out 5000)."""
    val_clips: int = 24
    """Clips (root seed ``seed + 1``) scored at the end and every ``eval_every`` steps."""
    eval_every: int = 250
    variants_per_clip: int = 2
    """Training items per generated clip, each with other marker IDs (generating the clip costs the most)."""
    data_workers: int = 1
    """Processes generating clips while the model trains (0: in the training process)."""
    shuffle_ids_prob: float = 0.25
    """Chance that a clip's marker IDs are a random permutation instead of the order of first appearance."""
    offset_ids_prob: float = 0.2
    """Chance that a clip's IDs start above 1 (IDs consumed by earlier tracks, as after ID switches)."""
    width: int = 224
    height: int = 168
    seconds: float = 6.0


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


def _marker_centres(label_map: np.ndarray, ids: dict[int, int]) -> list[tuple[int, float, float, int]]:
    """``(synthetic id, x, y, area)`` of the centre of each marker's text in one frame, for the objects §3 marks."""
    import cv2

    from stvgr1_edge.markers import marker_anchor, marker_style, markable_objects

    height, width = label_map.shape
    font_scale, thickness = marker_style(height, width)
    present = [k for k in ids if (label_map == k).any()]
    masks = [label_map == k for k in present]
    out = []
    for i in markable_objects([int(m.sum()) for m in masks]):
        anchor = marker_anchor(masks[i])
        if anchor is None:
            continue
        (w, h), _ = cv2.getTextSize(str(ids[present[i]]), cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        out.append((present[i], anchor[0] + w / 2.0, anchor[1] - h / 2.0, int(masks[i].sum())))
    return out


def _nearest_colour(rgb: np.ndarray) -> str:
    from stvgr1_edge.synth import BLINK_RGB, PALETTE

    names = [*PALETTE, "dark"]
    values = np.asarray([*PALETTE.values(), BLINK_RGB], np.float64)
    return names[int(np.argmin(((values - np.asarray(rgb, np.float64)) ** 2).sum(axis=1)))]


def object_token_labels(clip, sampled: Sequence[int], min_object_pixels: int) -> dict[str, np.ndarray]:
    """Per merged visual token ``(groups, rows, cols)`` int64 class indices of the object heads (colour, shape,
    size, event; see the module doc). ``sampled``: the native frame indices the VLM sees, in order (pairs form the
    2-frame tubes). Labels are in the clip's native pixel grid, which must be the resized grid (multiples of 28)."""
    from stvgr1_edge.synth import EVENTS, SHAPES, SIZES, object_label_map

    classes = label_classes()
    height, width = clip.config.height, clip.config.width
    if height % MERGED_PX or width % MERGED_PX or len(sampled) % TEMPORAL_PATCH:
        raise ValueError(f"token labels need a {MERGED_PX}-multiple frame and an even frame count, "
                         f"got {width}x{height} and {len(sampled)} frames")
    rows, cols, groups = height // MERGED_PX, width // MERGED_PX, len(sampled) // TEMPORAL_PATCH
    labels = {name: np.zeros((groups, rows, cols), np.int64) for name in ("colour", "shape", "size", "event")}
    objects = {o.object_id: o for o in clip.objects}
    for g in range(groups):
        pair = [int(f) for f in sampled[TEMPORAL_PATCH * g:TEMPORAL_PATCH * (g + 1)]]
        counts = np.zeros((len(objects) + 1, rows, cols), np.int64)
        for f in pair:
            cells = object_label_map(clip, f).reshape(rows, MERGED_PX, cols, MERGED_PX)
            for k in objects:
                counts[k] += (cells == k).sum(axis=(1, 3))
        owner = counts.argmax(axis=0)
        owned = counts.max(axis=0) >= min_object_pixels
        for r, c in zip(*np.nonzero(owned)):
            obj = objects[int(owner[r, c])]
            # a blinking object is dark in one frame of the tube and its own colour in the other: its own wins
            colours = [_nearest_colour(obj.rgb[f]) for f in pair if obj.present[f]]
            colour = next((name for name in colours if name != "dark"), colours[0])
            labels["colour"][g, r, c] = classes["colour"].index(colour)
            labels["shape"][g, r, c] = SHAPES.index(obj.shape) + 1
            labels["size"][g, r, c] = SIZES.index(obj.size) + 1
            e = obj.event
            if e is not None and any(e.start_frame <= f <= e.end_frame for f in pair):
                labels["event"][g, r, c] = EVENTS.index(e.name) + 1
    return labels


def digit_token_labels(clip, sampled: Sequence[int], ids: dict[int, int]) -> np.ndarray:
    """``(groups, rows, cols)`` int64: the ID whose marker text is centred in each token in either frame of the
    tube (the first frame wins; within a frame the larger object wins), 0 where none."""
    from stvgr1_edge.synth import object_label_map

    height, width = clip.config.height, clip.config.width
    rows, cols, groups = height // MERGED_PX, width // MERGED_PX, len(sampled) // TEMPORAL_PATCH
    digits = np.zeros((groups, rows, cols), np.int64)
    for g in range(groups):
        pair = [int(f) for f in sampled[TEMPORAL_PATCH * g:TEMPORAL_PATCH * (g + 1)]]
        for f in reversed(pair):
            for k, x, y, _area in sorted(_marker_centres(object_label_map(clip, f), ids), key=lambda t: t[3]):
                r, c = min(rows - 1, max(0, int(y // MERGED_PX))), min(cols - 1, max(0, int(x // MERGED_PX)))
                digits[g, r, c] = ids[k]
    return digits


def video_tensors(frames: np.ndarray, sample_fps: float, video_processor):
    """:class:`VideoTensors` of (T, H, W, 3) uint8 frames already at the resized size, made by the video
    processor's own rescale/normalize and patchify steps (the same tensors as the full processor call, which
    spends most of its time validating and grouping; see the test)."""
    import torch

    from train.video_inputs import VideoTensors

    vp = video_processor
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()[None]
    video = vp.rescale_and_normalize(video, True, vp.rescale_factor, True, vp.image_mean, vp.image_std)
    patches, grid_t, grid_h, grid_w = vp.patchify(video, patch_size=vp.patch_size, merge_size=vp.merge_size,
                                                  temporal_patch_size=vp.temporal_patch_size)
    return VideoTensors(patches[0], torch.tensor([[grid_t, grid_h, grid_w]]),
                        torch.tensor([vp.temporal_patch_size / sample_fps]))


def labelled_clip(clip_seed: int, video_processor, config: VisionPretrainConfig, rng: np.random.Generator,
                  workdir: Path, variants: int = 1) -> list:
    """``variants`` ``(VideoTensors, labels)`` pairs for one fresh synthetic clip, each with its own marker IDs
    (see the module doc for how the clip is made)."""
    import torch

    from stvgr1_edge.prompted import render_prompted_clip
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.synth import SynthConfig, generate_clip, render_frames
    from stvgr1_edge.tracks import TrackSet
    from stvgr1_edge.video import Frame, VideoWriter, iter_frames

    synth = SynthConfig(width=config.width, height=config.height, seconds=config.seconds)
    clip = generate_clip(clip_seed, synth)
    sampling = plan_sampling(clip.num_frames, synth.fps, synth.height, synth.width)
    if (sampling.resized_height, sampling.resized_width) != (synth.height, synth.width):
        raise ValueError(f"the pretraining clip size {synth.width}x{synth.height} must not be resized by §4")
    # Only the sampled frames go through H.264 (x264's colour and edge losses; decoding all 60 would triple the cost)
    wanted = set(sampling.indices)
    video_path = workdir / "clip.mp4"
    with VideoWriter(video_path, synth.fps, synth.width, synth.height, crf=synth.video_crf,
                     preset=synth.video_preset) as writer:
        writer.write_all(frame for f, frame in enumerate(render_frames(clip)) if f in wanted)
    decoded = [Frame(f, frame.time_s, frame.image) for f, frame in zip(sampling.indices, iter_frames(video_path))]
    objects = object_token_labels(clip, sampling.indices, config.min_object_pixels)
    out = []
    for _ in range(variants):
        ids = display_ids(clip, rng, config)
        shown = TrackSet(synth.width, synth.height, synth.fps, clip.num_frames)
        for obj_id, track in clip.gt_tracks.tracks.items():
            for f, box, mask in zip(track.frames, track.boxes, track.masks):
                if f in wanted:
                    shown.add(ids[obj_id], f, box, mask, 1.0)
        prompted = render_prompted_clip(decoded, shown, sampling)
        labels = dict(objects, digit=digit_token_labels(clip, sampling.indices, ids))
        out.append((video_tensors(prompted.frames, prompted.sample_fps, video_processor),
                    {k: torch.from_numpy(v.reshape(-1)) for k, v in labels.items()}))
    return out


def labelled_clips(root_seed: int, video_processor, config: VisionPretrainConfig, variants: int = 1) -> Iterator:
    """An endless stream of labelled clips from ``root_seed`` (clip ``i`` uses the i-th spawned seed; each clip
    gives ``variants`` consecutive items with different marker IDs)."""
    i = 0
    with tempfile.TemporaryDirectory(prefix="nano-vision-") as tmp:
        while True:
            seed = int(np.random.SeedSequence(root_seed, spawn_key=(i,)).generate_state(1)[0])
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

        return nn.ModuleDict({name: nn.Linear(hidden_size, len(names)) for name, names in label_classes().items()})


def _losses_and_hits(probe, features, labels, config: VisionPretrainConfig):
    import torch
    import torch.nn.functional as F

    losses, hits = {}, {}
    for name, head in probe.items():
        logits = head(features)
        target = labels[name]
        weight = None
        if name == "digit":
            weight = torch.full((logits.shape[-1],), config.digit_weight, device=logits.device)
            weight[0] = 1.0
        losses[name] = F.cross_entropy(logits, target, weight=weight)
        pred = logits.argmax(-1)
        # accuracy where there is something to see (marker tokens; object tokens; event tokens)
        keep = target > 0
        hits[name] = (int((pred[keep] == target[keep]).sum()), int(keep.sum()),
                      int(((pred > 0) & (target == 0)).sum()), int((target == 0).sum()))
    return losses, hits


def _batch(items, device):
    import torch

    from train.video_inputs import collate_videos

    videos = collate_videos([v for v, _ in items], device=device)
    labels = {k: torch.cat([lab[k] for _, lab in items]).to(device) for k in items[0][1]}
    return videos, labels


def _evaluate(visual, probe, val_items, config, device) -> dict[str, float]:
    import torch

    totals: dict[str, list[int]] = {}
    visual.eval()
    with torch.no_grad():
        for i in range(0, len(val_items), config.batch_clips):
            videos, labels = _batch(val_items[i:i + config.batch_clips], device)
            out = visual(videos["pixel_values_videos"], grid_thw=videos["video_grid_thw"]).pooler_output
            _, hits = _losses_and_hits(probe, out, labels, config)
            for name, h in hits.items():
                totals[name] = [a + b for a, b in zip(totals.get(name, [0, 0, 0, 0]), h)]
    visual.train()
    scores = {}
    for name, (right, n, false_pos, negatives) in totals.items():
        scores[f"{name}_acc"] = right / max(n, 1)
        scores[f"{name}_false_positive_rate"] = false_pos / max(negatives, 1)
    return scores


def pretrain_vision(init_dir: str | Path, out_dir: str | Path, config: VisionPretrainConfig = VisionPretrainConfig(),
                    device: str = "cpu") -> dict:
    """Train ``init_dir``'s vision tower (+ merger) on the dense labels; save the whole model (LM unchanged) and
    its processor to ``out_dir``. Returns the validation scores (also written to ``out_dir/pretrain_vision.json``)."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(config.seed)
    processor = AutoProcessor.from_pretrained(str(init_dir))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(init_dir), dtype=torch.float32).to(device)
    visual = model.model.visual
    visual.train()
    probe = TokenProbe.build(model.config.text_config.hidden_size).to(device)
    vp = processor.video_processor
    params = [p for p in visual.parameters()] + [p for p in probe.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    val_stream = labelled_clips(config.seed + 1, vp, config)
    val_items = [next(val_stream) for _ in range(config.val_clips)]
    stream = iter(torch.utils.data.DataLoader(
        ClipStream(config.seed, vp, config), batch_size=config.batch_clips, collate_fn=list,
        num_workers=config.data_workers, prefetch_factor=4 if config.data_workers else None))
    history = []
    start = time.perf_counter()
    running: dict[str, float] = {}
    for step in range(config.steps):
        videos, labels = _batch(next(stream), device)
        out = visual(videos["pixel_values_videos"], grid_thw=videos["video_grid_thw"]).pooler_output
        losses, _ = _losses_and_hits(probe, out, labels, config)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        for k, v in losses.items():
            running[k] = 0.98 * running.get(k, v.item()) + 0.02 * v.item()
        if (step + 1) % 50 == 0:
            logger.info("step %d/%d  %.1f s  losses %s", step + 1, config.steps, time.perf_counter() - start,
                        {k: round(v, 3) for k, v in running.items()})
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            scores = _evaluate(visual, probe, val_items, config, device)
            history.append({"step": step + 1, "seconds": round(time.perf_counter() - start, 1), **scores})
            logger.info("val at step %d: %s", step + 1, {k: round(v, 3) for k, v in scores.items()})
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    report = {"config": asdict(config), "history": history, "final": history[-1] if history else {}}
    (out_dir / "pretrain_vision.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.recipes.nano.pretrain_vision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("init", help="Model folder to start from (the random-init nano model).")
    parser.add_argument("out", help="Output folder (whole model + processor).")
    parser.add_argument("--steps", type=int, default=VisionPretrainConfig.steps)
    parser.add_argument("--batch-clips", type=int, default=VisionPretrainConfig.batch_clips)
    parser.add_argument("--lr", type=float, default=VisionPretrainConfig.learning_rate)
    parser.add_argument("--eval-every", type=int, default=VisionPretrainConfig.eval_every)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = VisionPretrainConfig(steps=args.steps, batch_clips=args.batch_clips, learning_rate=args.lr,
                                  eval_every=args.eval_every)
    report = pretrain_vision(args.init, args.out, config)
    print(json.dumps(report["final"], indent=1))


if __name__ == "__main__":
    main()
