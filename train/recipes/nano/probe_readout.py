"""Which link of the time answer fails: finding the event, or reading its time?

    python -m stvgr1_edge_train.recipes.nano.probe_readout MODEL_DIR [--clips 32] [--span] [--query-scale 1]
                                                          [--out readout.json]

The attention loss (``sft.attention_mass_loss``) trains one head (LM layer ``layer``, head ``head``) at the
positions that write a time to look at the target's tokens where its event starts (ends); the clock in the tokens'
states (their time, linear after LM layer 2) is what that look carries to the digits. On fresh synthetic clips at
synth's default format (:func:`stream_sft.stream_clip`, root seed :data:`READOUT_SEED`), the teacher answer is fed
and the head's attention at the time positions is, in turn:

- ``own``: left to the model;
- ``true``: replaced by a uniform look at the true targets (the collator's attention queries);
- ``shifted``: the same cells half the clip later (wrapping): a look at the wrong time;
- ``object``: the model's own weights kept on the target object's cells in every tube (wherever it is, in its event
  or not), renormalised, and none elsewhere: the look as it would be if it always found the object.

For each, the expected integer digit of the reasoning's first start time (probabilities of the digit tokens at the
position that writes it) is correlated with the true one across clips. ``true`` far above ``own`` means the read-out
works and the look misses the event; ``true`` near ``own`` and ``shifted`` means the digits do not come from the look;
``object`` near ``true`` would mean the look knows when but not which object, near ``own`` that it does not know when.
Each look's ``look`` says where the head's weights at that position go (:func:`look_summary`): the mass on the true
targets and on the video, the correlation of the look's tube (its video mass's mean) with the true one, how often its
heaviest tube is the true one, its mass on the target object and the share of that inside the GT range (against the
share of the object's cells there: what an even look over the object would give). ``--query-scale`` multiplies the
head's queries first (:func:`sharpen_head`): a sharper softmax at the look.

Measured on 2 CPU cores (r of own / true / shifted look): the packaged model -0.06 / -0.06 / 0.10 at 32 clips (about 3
minutes; its time digits do not come from head 0 of layer 2); at 64 clips the stream stage's ``--carry-weight 2`` model
0.13 / 0.89 / -0.23 and the same trained on three events for 150, 300 and 600 more steps 0.28 / 0.82 / -0.10, 0.27 /
0.90 / -0.22 and 0.18 / 0.88 / -0.21 (``stream_sft``'s docstring): the read-out works, the model's own look does not
find the event. Where that look goes, for the model trained on three events and then on all events for 920 steps
(``--clips 128``, 2 minutes; r own / true / shifted / object 0.16 / 0.83 / -0.35 / 0.26, mean absolute error of the
digit 1.09 / 0.78 / 1.28 / 1.07, a constant 1.10): 13% of the head's weight on the target's cells of its start tube, 39%
on the target object, 99.8% on the video; 60% of the object's share lies in the GT range, where an even look over the
object would put 37%. Its heaviest tube is the true one on 34% of the clips (1 in 8 by chance at synth's default) and
its mean tube hardly follows the true one (r 0.10); kept on the object (``object``), its mean tube follows the true one
at r 0.26 and so do the digits (0.26): finding the object every time would not give usable times. By the target's event
(``own_by_event``) the look is two looks: on ``blinks`` (21 clips) 78% of it is on the object, 93% of that in range (39%
even), 39% on the start cells, and the digit follows the true one (r 0.46, error 0.75); on ``stops`` (9) 53%, 86% (32%),
21%, r 0.13; on the six events the tower hardly sees 28-35% on the object, 39-56% of it in range (33-40% even), 5-8% on
the start cells, r -0.21 to 0.09. Where the tower shows the event the look finds the object and its time; where it does
not, it finds neither: ``probe_events MODEL --layers 0,2 --width 308 --height 252 --seconds 8`` on the same model (1
minute) reads the event off its tower's tokens at AUC 0.98 for ``blinks``, 0.74 ``stops``, 0.67 ``changes_colour`` and
0.46-0.55 the other five (0.83, 0.73 and 0.53-0.67 after LM layer 2). Sharper looks do not help (64 clips):
``--query-scale 3`` / ``8`` put 18% / 19% on the start cells and 44% / 44% on the object, with the same 60-62% of it in
range, and r 0.13 / 0.11 (0.14 unsharpened).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from stvgr1_edge.errors import BadInputError

logger = logging.getLogger("stvgr1_edge_train.recipes.nano.probe_readout")

OBJECT_LOOK = ("mass_on_object", "object_mass_in_range", "object_cells_in_range")
""":func:`look_summary`'s entries about the target object (present where its cells are known)."""
READOUT_SEED = 55_000
"""Root seed of the probe's clips (the stream stage trains from 50000 and 52000+, evaluates on 51000)."""
FORCED_ATTENTION = "stvg_forced_head"
"""Name of the attention function (transformers' ``AttentionInterface``) that forces one head's weights."""
_forced: dict = {}


def forced_head_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention, except that head ``_forced['head']`` of the layer ``_forced['layer']``, at each
    query position of ``_forced['queries']`` (``(row, query positions, target positions)``), looks uniformly at the
    targets: its weights there are 1 / targets on them, and its output the mean of their values. With
    ``_forced['keep_own']`` it keeps its own weights on the targets instead, renormalised to sum to 1, and nothing
    elsewhere."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import eager_attention_forward, repeat_kv

    output, weights = eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    if _forced.get("queries") and module.layer_idx == _forced["layer"]:
        head = _forced["head"]
        values = repeat_kv(value, module.num_key_value_groups)[:, head]  # (rows, keys, head dim)
        output, weights = output.clone(), weights.clone()
        for row, query_positions, targets in _forced["queries"]:
            if _forced.get("keep_own"):
                kept = weights[row, head, query_positions[:, None], targets]
                kept = kept / kept.sum(dim=-1, keepdim=True).clamp_min(1e-30)
            else:
                shape = (len(query_positions), len(targets))
                kept = torch.full(shape, 1.0 / len(targets), dtype=weights.dtype, device=weights.device)
            weights[row, head, query_positions] = 0.0
            weights[row, head, query_positions[:, None], targets] = kept
            output[row, query_positions, head] = (kept.to(values.dtype) @ values[row, targets]).to(output.dtype)
    return output, weights


@contextlib.contextmanager
def force_head(model, layer: int, head: int, queries, keep_own: bool = False):
    """Within the block, the language model attends eagerly with :func:`forced_head_attention` (``queries``: None
    leaves every head to the model; ``keep_own``: the head keeps its own weights on the targets)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(FORCED_ATTENTION, forced_head_attention)
    AttentionMaskInterface.register(FORCED_ATTENTION, eager_mask)  # the causal (and padding) mask, as eager gets it
    config = model.model.language_model.config
    before = config._attn_implementation
    config._attn_implementation = FORCED_ATTENTION
    _forced.update(layer=layer, head=head, queries=queries, keep_own=keep_own)
    try:
        yield
    finally:
        config._attn_implementation = before
        _forced.clear()


def shifted_targets(queries, video_positions: torch.Tensor, tubes: int, tokens_per_tube: int):
    """The queries' targets moved ``tubes // 2`` tubes later in the clip (wrapping round), same cells."""
    shift = (tubes // 2) * tokens_per_tube
    moved = []
    for row, query_positions, targets in queries:
        index = torch.searchsorted(video_positions, targets)
        moved.append((row, query_positions, video_positions[(index + shift) % len(video_positions)]))
    return moved


def look_summary(
    weights: torch.Tensor,
    targets: torch.Tensor,
    video_positions: torch.Tensor,
    tokens_per_tube: int,
    object_cells: torch.Tensor | None = None,
    range_cells: torch.Tensor | None = None,
):
    """Where one look goes: ``weights`` is the head's attention row at a time position (over all keys), ``targets``
    the true targets (the target's cells in its edge tube; with ``span``, in its range's tubes, the first of which is
    the true tube). Its mass on the targets and on all video tokens, the true tube, the look's tube (mean over its
    video mass) and the tube holding most of it. With ``object_cells`` (the target's cells in every tube that shows
    it) and ``range_cells`` (those in its GT range's tubes): the mass on the object, the share of that mass inside the
    range, and the share a look spread evenly over the object's cells would put there -- finding the object against
    finding when its event is."""
    on_video = weights[video_positions].double()
    per_tube = on_video.reshape(-1, tokens_per_tube).sum(dim=1)
    tube_of = torch.searchsorted(video_positions, targets) // tokens_per_tube
    video_mass = float(per_tube.sum())
    tubes = torch.arange(len(per_tube), dtype=torch.float64)
    look = {
        "mass_on_targets": float(weights[targets].sum()),
        "mass_on_video": video_mass,
        "true_tube": int(tube_of.min()),
        "mean_tube": float((per_tube * tubes).sum() / video_mass) if video_mass > 0 else float("nan"),
        "peak_tube": int(per_tube.argmax()),
    }
    if object_cells is not None and range_cells is not None and len(object_cells):
        object_mass = float(weights[object_cells].double().sum())
        in_range = float(weights[range_cells].double().sum())
        look["mass_on_object"] = object_mass
        look["object_mass_in_range"] = in_range / object_mass if object_mass > 0 else float("nan")
        look["object_cells_in_range"] = len(range_cells) / len(object_cells)
    return look


def finite_mean(values) -> float:
    """Mean of the finite ``values`` (a look with no mass on the object has no in-range share); NaN when none is."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def sharpen_head(model, layer: int, head: int, scale: float) -> None:
    """Multiply head ``head``'s queries in LM layer ``layer`` by ``scale`` (its query weights and bias): its attention
    logits scale with them (the rotary embedding is linear in the query), so its softmax sharpens (``scale`` > 1) and
    its look moves towards its heaviest keys; the other heads, which share its keys and values, are untouched."""
    attention = model.model.language_model.layers[layer].self_attn
    rows = slice(head * attention.head_dim, (head + 1) * attention.head_dim)
    with torch.no_grad():
        attention.q_proj.weight[rows] *= scale
        if attention.q_proj.bias is not None:
            attention.q_proj.bias[rows] *= scale


def probe_readout(
    model_dir, clips: int = 32, span: bool = False, layer: int = 2, head: int = 0, query_scale: float = 1.0
) -> dict:
    """The probe's report (see the module doc); ``query_scale`` sharpens the head first (:func:`sharpen_head`)."""
    if query_scale <= 0:
        raise BadInputError(f"query scale must be > 0, got {query_scale}; 1 leaves the head as trained")
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.answer_template import DIGITS, TokenStrings
    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge.synth import SynthConfig
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import SFTCollator, check_attention_head, event_edge_token_masks

    from .pretrain_vision import clip_seed
    from .stream_sft import stream_clip

    processor, source = load_processor(str(model_dir))
    model = use_trained_rope_index(Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.float32))
    model.eval()
    check_attention_head(model.config.text_config, layer, head)  # else nothing is forced and the looks are all own
    sharpen_head(model, layer, head, query_scale)
    collator = SFTCollator(
        processor, mark_target=True, check_attributes=True, attend_event_edges=True, attention_span=span
    )
    # the tokenizers split numbers into digits: one token per digit
    ids_of = TokenStrings(processor.tokenizer).ids_of
    digits = {ids_of[d][0]: float(d) for d in DIGITS if d in ids_of}
    digit_ids, values = list(digits), torch.tensor(list(digits.values()))
    expected: dict[str, list[float]] = {"own": [], "true": [], "shifted": [], "object": []}
    looks: dict[str, list[dict]] = {name: [] for name in expected}
    truth: list[float] = []
    events: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nano-readout-") as tmp, torch.no_grad():
        for i in range(clips):
            clip = stream_clip(clip_seed(READOUT_SEED, i), SynthConfig(), processor, Path(tmp))
            batch = collator.collate([clip.sample.to_row(Path())], [clip.video])
            queries, labels = batch.pop("attention_queries"), batch.pop("labels")
            batch.pop("loss_weights", None)
            if not queries:
                continue
            tubes, rows, cols = (int(v) for v in batch["video_grid_thw"][0])
            video_positions = torch.nonzero(batch["input_ids"][0] == collator.video_token_id).flatten()
            tokens_per_tube = rows * cols // collator.merge_size**2
            moved = shifted_targets(queries, video_positions, tubes, tokens_per_tube)
            grid, merge = (tubes, rows, cols), collator.merge_size
            # the target's cells in every tube that shows it, and in its GT range's (queries exist: so do both)
            object_cells = video_positions[event_edge_token_masks(clip.target_track_boxes, grid, merge, True)[0]]
            range_cells = video_positions[event_edge_token_masks(clip.sample.target_boxes, grid, merge, True)[0]]
            on_object = [(row, q, object_cells) for row, q, _ in queries]
            position = int(queries[0][1][0])  # predicts the first character of the first start time
            truth.append(digits.get(int(labels[0, position + 1]), float("nan")))
            events.append(clip.event)
            for name, forced, keep_own in (
                ("own", None, False),
                ("true", queries, False),
                ("shifted", moved, False),
                ("object", on_object, True),
            ):
                with force_head(model, layer, head, forced, keep_own):
                    out = model(**batch, output_attentions=True)
                logits = out.logits[0, position]
                expected[name].append(float((torch.softmax(logits[digit_ids], -1) * values).sum()))
                look = out.attentions[layer][0, head, position]
                looks[name].append(
                    look_summary(look, queries[0][2], video_positions, tokens_per_tube, object_cells, range_cells)
                )
    t = np.asarray(truth)
    report = {
        "model": str(model_dir),
        "clips": len(truth),
        "span": span,
        "layer": layer,
        "head": head,
        "query_scale": query_scale,
    }
    for name, e in expected.items():
        e = np.asarray(e)
        seen = looks[name]
        true_tube = np.asarray([x["true_tube"] for x in seen], dtype=float)
        report[name] = {
            "r_start_digit": float(np.corrcoef(e, t)[0, 1]),
            "mae_start_digit": float(np.abs(e - t).mean()),
            "look": {
                "mass_on_targets": float(np.mean([x["mass_on_targets"] for x in seen])),
                "mass_on_video": float(np.mean([x["mass_on_video"] for x in seen])),
                "r_tube": float(np.corrcoef([x["mean_tube"] for x in seen], true_tube)[0, 1]),
                "peak_on_true_tube": float(np.mean([x["peak_tube"] == x["true_tube"] for x in seen])),
                **{key: finite_mean([x.get(key, np.nan) for x in seen]) for key in OBJECT_LOOK},
            },
        }
    report["mae_constant"] = float(np.abs(t - t.mean()).mean())
    # the own look by the target's event: does it find the object, and when, where the tower sees the event?
    own, tags = np.asarray(expected["own"]), np.asarray(events)
    report["own_by_event"] = {}
    for event in sorted(set(events)):
        mine = tags == event
        report["own_by_event"][event] = {
            "clips": int(mine.sum()),
            "r_start_digit": float(np.corrcoef(own[mine], t[mine])[0, 1]) if mine.sum() > 2 else float("nan"),
            "mae_start_digit": float(np.abs(own[mine] - t[mine]).mean()),
            **{
                key: finite_mean([x.get(key, np.nan) for x, m in zip(looks["own"], mine) if m])
                for key in ("mass_on_targets", *OBJECT_LOOK)
            },
        }
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stvgr1_edge_train.recipes.nano.probe_readout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="Model folder.")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--span", action="store_true", help="True targets over the whole GT range, not its edges.")
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--head", type=int, default=0)
    parser.add_argument(
        "--query-scale", type=float, default=1.0, help="Multiply the head's queries first (> 1 sharpens its look)."
    )
    parser.add_argument("--out", help="Also write the report here (JSON).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = probe_readout(args.model, args.clips, args.span, args.layer, args.head, args.query_scale)
    except BadInputError as error:
        from .pretrain_vision import exit_bad_input

        exit_bad_input(str(error))
    if args.out:
        from stvgr1_edge.errors import write_json_atomic

        write_json_atomic(args.out, report, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
