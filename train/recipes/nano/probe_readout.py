"""Which link of the time answer fails: finding the event, or reading its time?

    python -m stvgr1_edge_train.recipes.nano.probe_readout MODEL_DIR [--clips 32] [--span] [--out readout.json]

The attention loss (``sft.attention_mass_loss``) trains one head (LM layer ``layer``, head ``head``) at the
positions that write a time to look at the target's tokens where its event starts (ends); the clock in the tokens'
states (their time, linear after LM layer 2) is what that look carries to the digits. On fresh synthetic clips at
synth's default format (:func:`stream_sft.stream_clip`, root seed :data:`READOUT_SEED`), the teacher answer is fed
and the head's attention at the time positions is, in turn:

- ``own``: left to the model;
- ``true``: replaced by a uniform look at the true targets (the collator's attention queries);
- ``shifted``: the same cells half the clip later (wrapping): a look at the wrong time.

For each, the expected integer digit of the reasoning's first start time (probabilities of the digit tokens at the
position that writes it) is correlated with the true one across clips. ``true`` far above ``own`` means the read-out
works and the look misses the event; ``true`` near ``own`` and ``shifted`` means the digits do not come from the look.
Each look's ``look`` says where the head's weights at that position go (:func:`look_summary`): the mass on the true
targets and on the video, the correlation of the look's tube (its video mass's mean) with the true one, and how often
its heaviest tube is the true one.

Measured on 2 CPU cores (r of own / true / shifted look): the packaged model -0.06 / -0.06 / 0.10 at 32 clips (about 3
minutes; its time digits do not come from head 0 of layer 2); at 64 clips the stream stage's ``--carry-weight 2`` model
0.13 / 0.89 / -0.23 and the same trained on three events for 150, 300 and 600 more steps 0.28 / 0.82 / -0.10, 0.27 /
0.90 / -0.22 and 0.18 / 0.88 / -0.21 (``stream_sft``'s docstring): the read-out works, the model's own look does not
find the event. Where that look goes (``look``, the same 64 clips): the ``--carry-weight 2`` model puts 7% of the head's
weight on the target's cells of its start tube, the one trained on three events and then on all events for 920 steps 12%
(r 0.14 / 0.86 / -0.32); nearly all the rest is on other video tokens (99.8% on the video), its heaviest tube is the
true one on 30% of the clips (1 in 8 by chance at synth's default) and its mean tube does not follow the true one (r
-0.04 and -0.02): the digits read the mean of a look spread over the clip.
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

READOUT_SEED = 55_000
"""Root seed of the probe's clips (the stream stage trains from 50000 and 52000+, evaluates on 51000)."""
FORCED_ATTENTION = "stvg_forced_head"
"""Name of the attention function (transformers' ``AttentionInterface``) that forces one head's weights."""
_forced: dict = {}


def forced_head_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention, except that head ``_forced['head']`` of the layer ``_forced['layer']``, at each
    query position of ``_forced['queries']`` (``(row, query positions, target positions)``), looks uniformly at the
    targets: its weights there are 1 / targets on them, and its output the mean of their values."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import eager_attention_forward, repeat_kv

    output, weights = eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    if _forced.get("queries") and module.layer_idx == _forced["layer"]:
        head = _forced["head"]
        values = repeat_kv(value, module.num_key_value_groups)[:, head]  # (rows, keys, head dim)
        output, weights = output.clone(), weights.clone()
        for row, query_positions, targets in _forced["queries"]:
            weights[row, head, query_positions] = 0.0
            weights[row, head, query_positions[:, None], targets] = 1.0 / len(targets)
            output[row, query_positions, head] = values[row, targets].mean(dim=0)
    return output, weights


@contextlib.contextmanager
def force_head(model, layer: int, head: int, queries):
    """Within the block, the language model attends eagerly with :func:`forced_head_attention` (``queries``: None
    leaves every head to the model)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(FORCED_ATTENTION, forced_head_attention)
    AttentionMaskInterface.register(FORCED_ATTENTION, eager_mask)  # the causal (and padding) mask, as eager gets it
    config = model.model.language_model.config
    before = config._attn_implementation
    config._attn_implementation = FORCED_ATTENTION
    _forced.update(layer=layer, head=head, queries=queries)
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


def look_summary(weights: torch.Tensor, targets: torch.Tensor, video_positions: torch.Tensor, tokens_per_tube: int):
    """Where one look goes: ``weights`` is the head's attention row at a time position (over all keys), ``targets``
    the true targets (the target's cells in its edge tube; with ``span``, in its range's tubes, the first of which is
    the true tube). Its mass on the targets and on all video tokens, the true tube, the look's tube (mean over its
    video mass) and the tube holding most of it."""
    on_video = weights[video_positions].double()
    per_tube = on_video.reshape(-1, tokens_per_tube).sum(dim=1)
    tube_of = torch.searchsorted(video_positions, targets) // tokens_per_tube
    video_mass = float(per_tube.sum())
    tubes = torch.arange(len(per_tube), dtype=torch.float64)
    return {
        "mass_on_targets": float(weights[targets].sum()),
        "mass_on_video": video_mass,
        "true_tube": int(tube_of.min()),
        "mean_tube": float((per_tube * tubes).sum() / video_mass) if video_mass > 0 else float("nan"),
        "peak_tube": int(per_tube.argmax()),
    }


def probe_readout(model_dir, clips: int = 32, span: bool = False, layer: int = 2, head: int = 0) -> dict:
    """The probe's report (see the module doc)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stvgr1_edge.answer_template import DIGITS, TokenStrings
    from stvgr1_edge.rope_index import use_trained_rope_index
    from stvgr1_edge.synth import SynthConfig
    from stvgr1_edge_train.grpo import load_processor
    from stvgr1_edge_train.sft import SFTCollator, check_attention_head

    from .pretrain_vision import clip_seed
    from .stream_sft import stream_clip

    processor, source = load_processor(str(model_dir))
    model = use_trained_rope_index(Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.float32))
    model.eval()
    check_attention_head(model.config.text_config, layer, head)  # else nothing is forced and the looks are all own
    collator = SFTCollator(
        processor, mark_target=True, check_attributes=True, attend_event_edges=True, attention_span=span
    )
    # the tokenizers split numbers into digits: one token per digit
    ids_of = TokenStrings(processor.tokenizer).ids_of
    digits = {ids_of[d][0]: float(d) for d in DIGITS if d in ids_of}
    digit_ids, values = list(digits), torch.tensor(list(digits.values()))
    expected: dict[str, list[float]] = {"own": [], "true": [], "shifted": []}
    looks: dict[str, list[dict]] = {name: [] for name in expected}
    truth: list[float] = []
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
            position = int(queries[0][1][0])  # predicts the first character of the first start time
            truth.append(digits.get(int(labels[0, position + 1]), float("nan")))
            for name, forced in (("own", None), ("true", queries), ("shifted", moved)):
                with force_head(model, layer, head, forced):
                    out = model(**batch, output_attentions=True)
                logits = out.logits[0, position]
                expected[name].append(float((torch.softmax(logits[digit_ids], -1) * values).sum()))
                look = out.attentions[layer][0, head, position]
                looks[name].append(look_summary(look, queries[0][2], video_positions, tokens_per_tube))
    t = np.asarray(truth)
    report = {"model": str(model_dir), "clips": len(truth), "span": span, "layer": layer, "head": head}
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
            },
        }
    report["mae_constant"] = float(np.abs(t - t.mean()).mean())
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
    parser.add_argument("--out", help="Also write the report here (JSON).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = probe_readout(args.model, args.clips, args.span, args.layer, args.head)
    except BadInputError as error:
        from .pretrain_vision import exit_bad_input

        exit_bad_input(str(error))
    if args.out:
        from stvgr1_edge.errors import write_json_atomic

        write_json_atomic(args.out, report, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
