"""A nano recipe stage: SFT on a fresh stream of synthetic clips — no clip is ever seen twice.

    python -m stvgr1_edge_train.recipes.nano.stream_sft MODEL_DIR OUT_DIR [--steps 600] [--attention-weight 1]
                                                        [--carry-weight 0] [--time-classes 0]
    python -m stvgr1_edge_train.recipes.nano.stream_sft MODEL_DIR - --steps 0 --eval-clips 72   # its evaluation only

Why: on the prepared caches (1,279 clips in the clip formats) the event-edge attention loss builds event features in
the language model but memorises the clips: its value on held-out clips stops falling while the training batches'
keeps falling. Here every step draws new clips from ``stvg-edge synth`` in the clip formats the model must answer
(synth's default 320x240/8 s, 224x168/6 s, 4 s and 16 s), so the only way down is to read the event.

What: each clip is generated, its sampled frames rendered and passed through H.264 once (the colour and edge losses a
decoded MP4 has), its true tracks replayed as the tracker's (:class:`ReplayTracker`: the §3 markers from the true
masks), prompted, resized and patchified exactly as ``stvg-edge train prepare`` would; the row is the prepared
sample's (:class:`CachedSample`), so collation, teacher answer and loss are the SFT stage's (``sft.yaml``'s answer
options, with ``attention_weight`` the event-edge attention loss of :func:`stvgr1_edge_train.sft.attention_mass_loss`
and ``carry_weight`` the carry loss of :func:`stvgr1_edge_train.sft.carry_loss`). The tower trains too. Held-out
clips (root ``eval_seed``, default format) are decoded greedily every ``eval_every`` steps: ID accuracy, mean tIoU and
the best constant range's tIoU on the same clips; the model is saved after each.

Measured on 2 CPU cores (~7 s a step), from the time stage's model with the carry loss (``pretrain_time`` with two
distractors, 1,600 steps; 35-38 minutes each): 300 steps with ``--carry-weight 2`` give held-out tIoU 0.34 / 0.36 /
0.27 after 100 / 200 / 300 steps, the same 300 without it 0.37 / 0.27 / 0.27 (prior 0.486 on 24 held-out clips; ID 0.33
and 0.29). ``probe_readout --clips 64`` (r of own / true / shifted look): 0.13 / 0.89 / -0.23 with the carry loss,
0.05 / 0.88 / -0.29 without. Forced onto the target's true edge tubes, both models' digits follow the event's time (the
time stage's model before this stage: 0.18 / 0.11 / -0.36 at 32 clips); the carry loss here adds nothing to that,
and the model's own look still misses the event (attention loss 2.8 in both, against 0.16 on the time stage's squares).

On the events the tower sees best (``--events blinks,stops,changes_colour``, a new ``--seed`` for each run), from the
``--carry-weight 2`` model above: 150, then 300, then 600 steps (18 / 33 / 69 minutes) take the attention loss from
2.8 to 2.1 / 1.6 / 1.3 and tIoU on 72 held-out clips of those events (``--steps 0 --eval-clips 72 --events ...``) from
0.335 to 0.358 / 0.405 / 0.426 (0.457 halfway through the 600; prior 0.510); on 72 clips of all events the last model
scores 0.38 (prior 0.51; the packaged model 0.34), blinks 0.62 against the constant's 0.58. ``probe_readout --clips
64`` own / true look: 0.28 / 0.82, 0.27 / 0.90, 0.18 / 0.88: the look finds more of the event's tubes, the digits
still follow it only when forced.

Back on all events from there, 200 steps (seed 50003), then 720 (seed 50004, 86 minutes, 72 held-out clips every
240): attention loss 1.87, then 2.09 / 1.92 / 1.76 at 240 / 480 / 720; tIoU on the 72 all-event clips 0.403, then
0.403 / 0.416 / 0.409 (prior 0.509); ID 0.49, then 0.44 / 0.56 / 0.56. The look's loss still falls, the time answers
have stopped improving: ``probe_readout`` finds the look's heaviest tube on the true one for 30% of clips, its mean
tube uncorrelated with the true one.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stvgr1_edge.errors import BadInputError
from stvgr1_edge.synth import EVENTS, SynthConfig

logger = logging.getLogger("stvgr1_edge_train.recipes.nano.stream_sft")


@dataclass(frozen=True)
class StreamSFTConfig:
    steps: int = 600
    batch_size: int = 8
    learning_rate: float = 2e-4
    warmup_steps: int = 30
    train_tower: bool = True
    time_weight: float = 3.0
    line_end_weight: float = 2.0
    attention_weight: float = 1.0
    attention_layer: int = 2
    attention_head: int = 0
    carry_weight: float = 0.0
    """Weight of the carry loss (:func:`stvgr1_edge_train.sft.carry_loss`): the state after LM layer
    ``attention_layer``, at the positions that write a time, must hold that time as a linear feature (0: off)."""
    time_classes: int = 0
    """With N > 0 the carry head classifies the whole second of the time written into N classes instead of regressing
    the time (:func:`stvgr1_edge_train.sft.time_head_loss`)."""
    attention_span: bool = False
    """Attend to the target in every tube of its GT range for both times (the event's tokens), not to its first
    (start) and last (end) tube."""
    formats: tuple[tuple[float, int, int, float], ...] = (
        (0.4, 320, 240, 8.0),
        (0.2, 224, 168, 6.0),
        (0.2, 320, 240, 4.0),
        (0.2, 320, 240, 16.0),
    )
    """(share, width, height, seconds) of the drawn clips: the clip-format sets' formats (``train_nano formats``)."""
    events: tuple[str, ...] = EVENTS
    """Events of the training and held-out clips (targets and distractors alike), e.g. only those the tower sees, to
    ask whether the language model learns to time an event it is shown."""
    eval_clips: int = 72
    """Held-out clips per evaluation: 24 move by about ±0.09 tIoU between evaluations of similar models, 72 (~1.5
    minutes on 2 CPU cores) have a standard error √3 times smaller."""
    eval_every: int = 100
    seed: int = 50_000
    """Root seed of the training clips (other stages' roots: 0/1, 20-24, 4000, 5000, 10000-10003, 20000, 30000,
    40000-42000)."""
    eval_seed: int = 51_000


@dataclass(frozen=True)
class StreamClip:
    video: object
    """:class:`VideoTensors` of the prompted, resized frames."""
    sample: object
    """:class:`stvgr1_edge.prepared.CachedSample` of the clip (its ``video_file`` is not written)."""
    event: str
    """The target's event (``jumps``, ``blinks``, ...): which events a model reads, in :func:`evaluate_stream`."""
    target_track_boxes: tuple[tuple[float, ...], ...] = ()
    """The target's box (normalised x1, y1, x2, y2) at every sampled frame, in its GT range or not (empty where it is
    not shown): where the object is, against the sample's ``target_boxes`` (where its event is)."""


def draw_format(seed: int, config: StreamSFTConfig):
    """The :class:`SynthConfig` of clip ``seed``: one of ``config.formats``, drawn by share."""
    shares = np.asarray([f[0] for f in config.formats], dtype=float)
    pick = int(np.random.default_rng(seed).choice(len(shares), p=shares / shares.sum()))
    _, width, height, seconds = config.formats[pick]
    return SynthConfig(width=width, height=height, seconds=seconds, events=config.events)


def stream_clip(seed: int, synth_config, processor, workdir: Path) -> StreamClip:
    """One fresh synthetic clip as the grounder's tensors and its prepared-sample row (see the module doc)."""
    from stvgr1_edge.prepared import CachedSample
    from stvgr1_edge.prompt import grounding_prompt
    from stvgr1_edge.prompted import track_and_prompt
    from stvgr1_edge.sampling import plan_sampling
    from stvgr1_edge.synth import generate_clip
    from stvgr1_edge.tracking.replay import ReplayTracker
    from stvgr1_edge.tracks import TrackSet
    from stvgr1_edge_train.video_inputs import ClipProcessor

    from .pretrain_vision import sampled_frames_through_h264, video_tensors

    cfg = synth_config
    clip = generate_clip(seed, cfg, key=f"stream_{seed}")
    sampling = plan_sampling(clip.num_frames, cfg.fps, cfg.height, cfg.width)
    wanted = set(sampling.indices)
    decoded, info = sampled_frames_through_h264(clip, sampling.indices, workdir)
    # the true tracks at the sampled frames stand in for the tracker's (only those frames carry pixels here)
    shown = TrackSet(cfg.width, cfg.height, cfg.fps, clip.num_frames)
    for obj_id, track in clip.gt_tracks.tracks.items():
        for f, box, mask in zip(track.frames, track.boxes, track.masks):
            if f in wanted:
                shown.add(obj_id, f, box, mask, 1.0)
    prompted = track_and_prompt(decoded, info, ReplayTracker(shown, "the clip's true tracks"), sampling).clip
    vp = processor.video_processor
    video = video_tensors(prompted.frames, prompted.sample_fps, vp)
    event, target = clip.event, clip.gt_tracks.tracks[clip.target_id]
    scale = (cfg.width, cfg.height, cfg.width, cfg.height)
    track_boxes = []
    for f in sampling.indices:
        box = target.box_at(f)
        track_boxes.append(() if box is None else tuple(round(float(v) / s, 4) for v, s in zip(box, scale)))
    in_range = [event.start_frame <= f <= event.end_frame for f in sampling.indices]
    boxes = [box if inside else () for box, inside in zip(track_boxes, in_range)]
    labels = {obj.object_id: obj.label for obj in clip.objects}
    ids = tuple(shown.ids)
    sample = CachedSample(
        sample_id=clip.key,
        video=clip.key,
        video_file=f"videos/{clip.key}.safetensors",
        query=clip.query,
        prompt=grounding_prompt(clip.query),
        gt_id=int(clip.target_id),
        gt_start_s=event.start_frame / cfg.fps,
        gt_end_s=event.end_frame / cfg.fps,
        duration_s=clip.num_frames / cfg.fps,
        num_visual_tokens=video.num_visual_tokens(int(vp.merge_size)),
        valid_ids=ids,
        vote_share=1.0,
        mean_iou=1.0,
        object_labels=tuple(labels[i] for i in ids),
        processor=ClipProcessor(processor).constants(),
        frame_times_s=tuple(round(info.frame_times_s[i], 3) for i in sampling.indices),
        target_boxes=tuple(boxes),
    )
    return StreamClip(video, sample, event.name, tuple(track_boxes))


def evaluate_stream(model, collator, clips: list[StreamClip], device: str) -> dict:
    """Greedy answers on ``clips``: ID accuracy, mean tIoU, the prior's (best constant range) and the parse rate;
    ``by_event``: per target event, its clips, their mean tIoU and the same constant range's on them (an event the
    model reads beats the constant there, whatever the mix of events)."""
    from stvgr1_edge.answer import parse_answer
    from stvgr1_edge.baseline import best_constant_range
    from stvgr1_edge.metrics import temporal_iou_seconds
    from stvgr1_edge_train.video_inputs import collate_videos, video_token_type_ids

    model.eval()
    tious, correct, parsed = [], 0, 0
    with torch.no_grad():
        for clip in clips:
            s = clip.sample
            prompt = collator.clip_processor.prepare_text(s.prompt, clip.video.num_visual_tokens(collator.merge_size))
            input_ids = prompt["input_ids"].to(device)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                mm_token_type_ids=video_token_type_ids(input_ids, collator.video_token_id),
                **collate_videos([clip.video], device=device),
                max_new_tokens=256,
                do_sample=False,
            )
            text = collator.tokenizer.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True)
            answer = parse_answer(text, duration_s=s.duration_s)
            correct += int(answer.ids[:1] == (s.gt_id,))
            if answer.has_time_range:
                parsed += 1
                tious.append(temporal_iou_seconds((answer.start_s, answer.end_s), (s.gt_start_s, s.gt_end_s)))
            else:
                tious.append(0.0)
    model.train()
    gt = [(c.sample.gt_start_s, c.sample.gt_end_s) for c in clips]
    a, b, prior = best_constant_range(gt)
    prior_tious = [temporal_iou_seconds((a, b), g) for g in gt]
    by_event = {}
    for name in sorted({c.event for c in clips}):
        picked = [i for i, c in enumerate(clips) if c.event == name]
        by_event[name] = {
            "clips": len(picked),
            "m_tiou": float(np.mean([tious[i] for i in picked])),
            "prior_m_tiou": float(np.mean([prior_tious[i] for i in picked])),
        }
    return {
        "id_accuracy": correct / len(clips),
        "m_tiou": float(np.mean(tious)),
        "prior_m_tiou": prior,
        "parsed": parsed / len(clips),
        "by_event": by_event,
    }


def stream_sft(model_dir, out_dir, config: StreamSFTConfig = StreamSFTConfig(), device: str = "cpu") -> dict:
    """SFT ``model_dir`` on fresh synthetic clips (see the module doc); saves to ``out_dir`` after each evaluation.
    With ``config.steps`` 0 it only scores ``model_dir`` on the held-out clips and writes nothing."""
    from transformers import Qwen2_5_VLForConditionalGeneration, get_cosine_schedule_with_warmup

    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import SFTCollator, carry_loss, check_attention_head, sft_loss, time_head

    from .pretrain_vision import clip_seed, save_stage

    held_out_format = SynthConfig(events=config.events)  # unknown events: BadInputError before any loading
    torch.manual_seed(config.seed)
    processor, source = load_processor(str(model_dir))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.float32).to(device)
    model = use_trained_rope_index(model)
    model.model.visual.requires_grad_(config.train_tower)
    if config.attention_weight or config.carry_weight:
        check_attention_head(model.config.text_config, config.attention_layer, config.attention_head)
    params = [p for p in model.parameters() if p.requires_grad]
    carry = time_head(model.config.text_config.hidden_size, config.time_classes).to(device)  # a probe: not saved
    params += list(carry.parameters()) if config.carry_weight else []
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    collator = SFTCollator(
        processor,
        mark_target=True,
        check_attributes=True,
        line_end_weight=config.line_end_weight,
        time_weight=config.time_weight,
        attend_event_edges=config.attention_weight > 0 or config.carry_weight > 0,
        attention_span=config.attention_span,
    )

    with tempfile.TemporaryDirectory(prefix="stvg_stream_") as tmp:
        workdir = Path(tmp)
        held_out = [
            stream_clip(clip_seed(config.eval_seed, i), held_out_format, processor, workdir)
            for i in range(config.eval_clips)
        ]
        scores = evaluate_stream(model, collator, held_out, device)
        history = [{"step": 0, "seconds": 0.0, "loss": None, "attention_loss": None, "carry_loss": None, **scores}]
        logger.info("step 0: %s", history[-1])
        if config.steps == 0:  # an evaluation only: nothing trained, nothing written
            return {"history": history, "final": history[-1]}
        running, running_attention, running_carry = None, None, None
        start, report = time.perf_counter(), {}
        model.train()
        for step in range(config.steps):
            seeds = [clip_seed(config.seed, step * config.batch_size + j) for j in range(config.batch_size)]
            clips = [stream_clip(s, draw_format(s, config), processor, workdir) for s in seeds]
            batch = collator.collate([c.sample.to_row(Path()) for c in clips], [c.video for c in clips])
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = sft_loss(
                model,
                batch,
                config.attention_weight,
                config.attention_layer,
                config.attention_head,
                output_hidden_states=config.carry_weight > 0,
            )
            total, carried = loss.total, None
            if config.carry_weight and batch["attention_queries"]:
                ranges = [(c.sample.gt_start_s, c.sample.gt_end_s) for c in clips]
                after = loss.outputs.hidden_states[config.attention_layer + 1]
                carried = carry_loss(carry, after, batch["attention_queries"], ranges, config.time_classes)
                total = total + config.carry_weight * carried
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            a = loss.answer.item()
            running = a if running is None else 0.9 * running + 0.1 * a
            if loss.attention is not None:  # on clips never seen before, so a held-out measure at every step
                a = loss.attention.item()
                running_attention = a if running_attention is None else 0.9 * running_attention + 0.1 * a
            if carried is not None:
                a = carried.item()
                running_carry = a if running_carry is None else 0.9 * running_carry + 0.1 * a
            if (step + 1) % 10 == 0:
                extra = f", attention loss {running_attention:.3f}" if running_attention is not None else ""
                extra += f", carry loss {running_carry:.4f}" if running_carry is not None else ""
                logger.info(
                    "step %d: answer loss %.4f%s (%.1f s)", step + 1, running, extra, time.perf_counter() - start
                )
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                scores = evaluate_stream(model, collator, held_out, device)
                history.append(
                    {
                        "step": step + 1,
                        "seconds": round(time.perf_counter() - start, 1),
                        "loss": running,
                        "attention_loss": running_attention,
                        "carry_loss": running_carry,
                        **scores,
                    }
                )
                logger.info(
                    "step %d: %s", step + 1, {k: round(v, 3) for k, v in scores.items() if isinstance(v, float)}
                )
                report = save_stage(model, processor, out_dir, config, history, report_name="stream_sft.json")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.recipes.nano.stream_sft",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="Model folder to start from.")
    parser.add_argument("out", help="Output folder (whole model + processor + stream_sft.json).")
    parser.add_argument("--steps", type=int, default=StreamSFTConfig.steps)
    parser.add_argument("--batch-size", type=int, default=StreamSFTConfig.batch_size)
    parser.add_argument("--lr", type=float, default=StreamSFTConfig.learning_rate)
    parser.add_argument("--attention-weight", type=float, default=StreamSFTConfig.attention_weight)
    parser.add_argument("--carry-weight", type=float, default=StreamSFTConfig.carry_weight)
    parser.add_argument(
        "--time-classes",
        type=int,
        default=StreamSFTConfig.time_classes,
        metavar="N",
        help="The carry head classifies whole seconds into N classes instead of regressing the time (0).",
    )
    parser.add_argument(
        "--attention-span", action="store_true", help="Attention targets: the target's tokens over its whole range."
    )
    parser.add_argument("--freeze-tower", action="store_true", help="Keep the vision tower's weights.")
    parser.add_argument("--eval-clips", type=int, default=StreamSFTConfig.eval_clips)
    parser.add_argument("--eval-every", type=int, default=StreamSFTConfig.eval_every)
    parser.add_argument("--seed", type=int, default=StreamSFTConfig.seed, help="Root seed of the training clips.")
    parser.add_argument(
        "--events",
        default=",".join(EVENTS),
        help="Comma-separated events of every clip (default: all), e.g. blinks,stops.",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = StreamSFTConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        attention_weight=args.attention_weight,
        attention_span=args.attention_span,
        carry_weight=args.carry_weight,
        time_classes=args.time_classes,
        train_tower=not args.freeze_tower,
        eval_clips=args.eval_clips,
        eval_every=args.eval_every,
        seed=args.seed,
        events=tuple(e.strip() for e in args.events.split(",")),
    )
    try:
        report = stream_sft(args.model, args.out, config, device=args.device)
    except BadInputError as error:
        from .pretrain_vision import exit_bad_input

        exit_bad_input(str(error))
    print(json.dumps(report["final"], indent=1))


if __name__ == "__main__":
    main()
