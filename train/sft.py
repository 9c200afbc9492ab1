"""Optional supervised warm-start on the same cache, for models that cannot produce the answer format yet.

The target is teacher-forced: ``<think>…</think><answer>Target ID: k, Time range: a to b</answer><|im_end|>``
(GT ID and time range of the sample); the loss covers the answer tokens only. Same inputs as GRPO (the grounder's
prompt layout, the cached video tensors), plain ``transformers.Trainer`` (checkpoints, resume, accelerate and
DeepSpeed as usual). STVG-R1 itself used no SFT; this is for small models trained from scratch (e.g. the nano model).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from stvgr1_edge.errors import BadInputError
from stvgr1_edge.prepared import VideoTensors, read_video_tensors
from stvgr1_edge.prompt import normalize_query
from stvgr1_edge.rope_index import use_trained_rope_index

from .checkpoint import ExactResumeMixin
from .video_inputs import ClipProcessor, collate_videos, video_token_type_ids

logger = logging.getLogger(__name__)


def object_line(object_id: int, label: str) -> str:
    """One inventory line of the describe-objects reasoning, without its end: ``Object 3: small red star``."""
    return f"Object {object_id}: {label or 'unclear'}"


def line_spans(answer: str, object_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character spans of the inventory lines (:func:`object_line`, with any check tags) of a describe-objects
    ``answer``, in order; each ends where its end ("," of ", the target", or ".") starts."""
    spans, at = [], 0
    for object_id in object_ids:
        start = answer.index(f"Object {object_id}: ", at)
        end = min(i for i in (answer.find(",", start), answer.find(".", start)) if i >= 0)
        spans.append((start, end))
        at = end
    return spans


CHECK_TAGS = ("+", "-")
"""The check tags of :func:`checked_label`: the line still agrees with the query / no longer does."""


def check_tag_offsets(answer: str, span: tuple[int, int]) -> list[int]:
    """Character offsets of the check tags inside one line ``span`` of :func:`line_spans`."""
    start, end = span
    return [start + j for j, c in enumerate(answer[start:end]) if c in CHECK_TAGS]


def query_attributes(query: str) -> tuple[str | None, str | None, str | None]:
    """(size, colour, shape) as a synthetic query's attribute phrase names them (None: not named): its vocabulary
    words up to the first shape ("The pink circle turns green." → (None, "pink", "circle"); the colour after the
    shape is the event's)."""
    from stvgr1_edge.synth import PALETTE, SHAPES, SIZES

    size = colour = None
    for word in normalize_query(query).split():
        if word in SHAPES:
            return size, colour, word
        if word in SIZES and size is None:
            size = word
        elif word in PALETTE and colour is None:
            colour = word
    raise ValueError(f"no shape in the query {query!r}: attribute checks need a synthetic query")


def checked_label(label: str, wanted: tuple[str | None, str | None, str | None]) -> str:
    """``"large pink circle"`` with a check tag after each word: "+" while every word so far agrees with the query's
    (or the query names no such attribute), "-" from the first that does not (``wanted``: :func:`query_attributes`).
    So the line check is made one word at a time, each tag decided by the word just written, the query, and the tag
    before it; the line is the target when its last tag is "+". Unclear lines ("") stay as they are."""
    if not label:
        return label
    agrees, words = True, []
    for word, asked in zip(label.split(), wanted, strict=True):
        agrees = agrees and asked in (None, word)
        words.append(word + CHECK_TAGS[0 if agrees else 1])
    return " ".join(words)


TIME_PATTERN = re.compile(r"\d+\.\d\d")
"""A time of a range in a teacher answer (:func:`target_answer` writes them "%.2f"; its IDs are integers, its words
have no digits and the :func:`event_timeline`'s tube times have one decimal, so every two-decimal number in it is one
of the two times of the reasoning's or the ``<answer>``'s range)."""


def tube_frame_times(frame_times_s: Sequence[float], num_tubes: int) -> list[tuple[float, float]]:
    """Times of the two sampled frames of each of a clip's ``num_tubes`` visual tubes (Qwen2.5-VL's 2-frame tubes;
    the §4 sampler always takes an even number of frames)."""
    if len(frame_times_s) != 2 * num_tubes:
        raise BadInputError(
            f"{len(frame_times_s)} sampled frame times for {num_tubes} visual tubes: the cache does "
            "not match its tensors; rerun `stvg-edge train prepare`"
        )
    return [(frame_times_s[2 * j], frame_times_s[2 * j + 1]) for j in range(num_tubes)]


TIMELINE_LEAD = " its event in time: "
"""What precedes the :func:`event_timeline` in a teacher answer."""


def event_timeline(start_s: float, end_s: float, tubes: Sequence[tuple[float, float]]) -> str:
    """The target's event tube by tube, ``"0.0-, 1.1-, 2.2+, 3.3+, 4.4-"``: each tube's first frame time, then "+" when
    one of its two frames lies in the event's range, "-" otherwise. Written before the range, it splits the time
    decision into one look per tube (the LM attends to that tube's tokens of the target); the range's times then
    follow from the first and last "+"."""
    return ", ".join(
        f"{t0:.1f}{CHECK_TAGS[0 if any(start_s <= t <= end_s for t in (t0, t1)) else 1]}" for t0, t1 in tubes
    )


def timeline_tag_offsets(answer: str) -> list[int]:
    """Character offsets of the "+"/"-" tags of the :func:`event_timeline` in ``answer`` (none without one)."""
    start = answer.find(TIMELINE_LEAD)
    if start < 0:
        return []
    start += len(TIMELINE_LEAD)
    end = answer.index(";", start)
    return [start + j for j, c in enumerate(answer[start:end]) if c in CHECK_TAGS]


def time_offsets(answer: str) -> set[int]:
    """Character offsets of every character of the times in ``answer`` (:data:`TIME_PATTERN`)."""
    return {i for match in TIME_PATTERN.finditer(answer) for i in range(match.start(), match.end())}


def covered_cells(box: Sequence[float], rows: int, cols: int) -> torch.Tensor:
    """Boolean mask over a frame's ``rows`` x ``cols`` merged cells (row-major): the cells ``box`` (x0, y0, x1, y1 as
    fractions of the frame) covers more than half of; where it covers none by half (a small object), the one it
    covers most."""
    import numpy as np

    x0, y0, x1, y1 = box
    cover_y = np.clip(np.minimum(np.arange(1, rows + 1), y1 * rows) - np.maximum(np.arange(rows), y0 * rows), 0, None)
    cover_x = np.clip(np.minimum(np.arange(1, cols + 1), x1 * cols) - np.maximum(np.arange(cols), x0 * cols), 0, None)
    cover = np.outer(cover_y, cover_x)
    covered = cover > 0.5 + 1e-6
    if not covered.any() and cover.max() > 0:
        covered = cover == cover.max()
    return torch.from_numpy(covered.flatten())


def event_edge_token_masks(
    target_boxes: Sequence[Sequence[float]], video_grid_thw: Sequence[int], merge_size: int, span: bool = False
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Boolean masks over a clip's visual tokens (tube-major, then row-major merged cells): the target's cells
    (:func:`covered_cells` of its box in the tube's frames) in the first and in the last 2-frame tube that has a
    box (``target_boxes``: one per sampled frame, empty outside the GT range). None when no frame has one. With
    ``span``, both masks hold the target's cells in every tube of the range (the event's tokens, not its edges)."""
    tubes, rows, cols = (int(v) for v in video_grid_thw)
    rows, cols = rows // merge_size, cols // merge_size
    if len(target_boxes) != 2 * tubes:
        raise BadInputError(
            f"{len(target_boxes)} target boxes for {tubes} visual tubes: the cache does not match its tensors; "
            "rerun `stvg-edge train prepare`"
        )
    shown = [j for j in range(tubes) if any(len(box) for box in target_boxes[2 * j : 2 * j + 2])]
    if not shown:
        return None
    masks = []
    for marked in (shown, shown) if span else ([shown[0]], [shown[-1]]):  # the start's tubes, then the end's
        mask = torch.zeros(tubes, rows * cols, dtype=torch.bool)
        for tube in marked:
            for box in target_boxes[2 * tube : 2 * tube + 2]:
                if len(box):
                    mask[tube] |= covered_cells(box, rows, cols)
        masks.append(mask.flatten())
    return masks[0], masks[1]


def time_token_positions(tokenizer, labels: torch.Tensor) -> list[list[int]]:
    """Sequence positions of each time written in a labelled row (the teacher answer's two-decimal numbers, in
    order: the reasoning's start and end, then the ``<answer>``'s), the tokens that overlap its characters."""
    positions = torch.nonzero(labels != -100).flatten().tolist()
    spans, text = [], ""
    for position in positions:
        piece = tokenizer.decode([int(labels[position])])
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    return [
        [positions[k] for k, (a, b) in enumerate(spans) if a < match.end() and b > match.start()]
        for match in TIME_PATTERN.finditer(text)
    ]


def check_attention_head(text_config, layer: int, head: int) -> None:
    """Stop with one line unless ``layer`` and ``head`` name an attention head of the language model."""
    layers, heads = text_config.num_hidden_layers, text_config.num_attention_heads
    if not (0 <= layer < layers and 0 <= head < heads):
        raise BadInputError(
            f"attention_layer must be 0..{layers - 1} and attention_head 0..{heads - 1} for this model, got "
            f"{layer} and {head}"
        )


def attention_log_masses(
    model, batch: dict, hidden_in, layer: int, head: int, queries: Sequence[tuple]
) -> torch.Tensor:
    """The log of the attention mass that head ``head`` of LM layer ``layer`` puts on the targets, at every query
    position of ``queries`` (``(row, query positions, target positions)``), in that order. Recomputed from the
    layer's input states ``hidden_in`` with the layer's own norm, projections and ``batch``'s 3-D rotary positions
    (causal), so the forward pass keeps its fast attention kernel."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

    position_ids, _ = model.model.get_rope_index(
        input_ids=batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        video_grid_thw=batch["video_grid_thw"],
        second_per_grid_ts=batch["second_per_grid_ts"],
        attention_mask=batch["attention_mask"],
    )
    language_model = model.model.language_model
    block = language_model.layers[layer]
    attention = block.self_attn
    x = block.input_layernorm(hidden_in)
    rows, length, _ = x.shape
    cos, sin = language_model.rotary_emb(x, position_ids)
    kv_head = head // attention.num_key_value_groups
    q = attention.q_proj(x).view(rows, length, -1, attention.head_dim).transpose(1, 2)[:, head : head + 1]
    k = attention.k_proj(x).view(rows, length, -1, attention.head_dim).transpose(1, 2)[:, kv_head : kv_head + 1]
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    masses = []
    for row, query_positions, target_positions in queries:
        scores = (q[row, 0, query_positions] @ k[row, 0].T) * attention.scaling
        future = torch.arange(length, device=x.device)[None] > query_positions.to(x.device)[:, None]
        log_attention = torch.log_softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        masses.append(torch.logsumexp(log_attention[:, target_positions.to(x.device)], dim=-1))
    return torch.cat(masses)


def attention_mass_loss(model, batch: dict, hidden_in, layer: int, head: int, queries: Sequence[tuple]) -> torch.Tensor:
    """Mean, over every query position of ``queries``, of minus :func:`attention_log_masses`: the attention loss that
    teaches one head where to look."""
    return -attention_log_masses(model, batch, hidden_in, layer, head, queries).mean()


def carried_states(
    states: torch.Tensor, queries: Sequence[tuple], ranges: Sequence[tuple[float, float]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``states`` (batch, length, hidden) at every position of ``queries`` (a batch's ``attention_queries``) and
    the time each writes, from each row's (start_s, end_s) in ``ranges``. A row's queries follow its times in the
    order written (the reasoning's start and end, then the ``<answer>``'s), so its even queries write the start and
    its odd ones the end."""
    picked, written, seen = [], [], [0] * len(ranges)
    for row, query_positions, _ in queries:
        k = seen[row]
        seen[row] += 1
        picked.append(states[row, query_positions.to(states.device)])
        written.append(torch.full((len(query_positions),), float(ranges[row][k % 2])))
    return torch.cat(picked), torch.cat(written)


def unit_rms(states: torch.Tensor) -> torch.Tensor:
    """``states`` scaled to unit root-mean-square per row: the residual stream's scale grows through the layers, and
    a probe head on it must not dominate the gradient norm that clipping shares with the model."""
    return states * torch.rsqrt(states.pow(2).mean(-1, keepdim=True) + 1e-6)


def time_head(hidden_size: int, classes: int = 0) -> torch.nn.Linear:
    """A time probe for :func:`time_head_loss`: a linear map to one value, or to ``classes`` logits."""
    return torch.nn.Linear(hidden_size, classes or 1)


def time_head_loss(
    head: torch.nn.Module, states: torch.Tensor, seconds: torch.Tensor, classes: int = 0
) -> torch.Tensor:
    """A time probe's loss on ``states`` (one row per visual token or time-writing position) against ``seconds``:
    with ``classes`` 0, the mean squared error of ``head``'s one value against the time in tens of seconds; otherwise
    the cross-entropy of its ``classes`` logits against the whole second (capped at ``classes - 1``). A digit is a
    class: a regressed time need only be near, a classified one must be apart from its neighbours."""
    if not classes:
        return torch.nn.functional.mse_loss(head(states).squeeze(-1), seconds / 10)
    target = seconds.floor().long().clamp(0, classes - 1)
    return torch.nn.functional.cross_entropy(head(states), target)


def carry_loss(
    head: torch.nn.Module,
    states: torch.Tensor,
    queries: Sequence[tuple],
    ranges: Sequence[tuple[float, float]],
    classes: int = 0,
) -> torch.Tensor:
    """:func:`time_head_loss` of ``head`` reading, from ``states`` (the state after the layer whose attention
    :func:`attention_mass_loss` trains) at each position that writes a time, that time. The attention loss teaches
    where to look, not what the look brings: this asks the look's output to hold the time it looked at. ``head`` is a
    probe (:func:`time_head`), thrown away after training."""
    picked, written = carried_states(states, queries, ranges)
    return time_head_loss(head, unit_rms(picked), written.to(picked.device), classes)


def weighted_next_token_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy as a weighted mean: ``weights`` (aligned with ``labels``) per predicted token, 0 on
    ``-100`` labels. All ones on the labelled tokens give the model's own loss."""
    target, weights = labels[:, 1:], weights[:, 1:] * (labels[:, 1:] != -100)
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=-100, reduction="none"
    ).view_as(target)
    return (ce * weights).sum() / weights.sum()


@dataclass
class SFTLoss:
    """One batch's SFT objective: ``total`` = ``answer`` + attention weight × ``attention`` (None when off)."""

    total: torch.Tensor
    answer: torch.Tensor
    attention: torch.Tensor | None
    outputs: Any
    """The model's forward outputs (with ``hidden_states`` when the attention term or the caller asked)."""


def model_inputs(batch: dict) -> dict:
    """A collated batch (:class:`SFTCollator`) without its loss-side entries (labels, loss weights, attention
    queries): what the model's forward takes."""
    return {k: v for k, v in batch.items() if k not in ("labels", "loss_weights", "attention_queries")}


def sft_loss(
    model,
    batch: dict,
    attention_weight: float = 0.0,
    attention_layer: int = 2,
    attention_head: int = 0,
    output_hidden_states: bool = False,
) -> SFTLoss:
    """The SFT objective on a collated batch (:class:`SFTCollator`, tensors on the model's device; not modified): the
    answer's :func:`weighted_next_token_loss` with the batch's ``loss_weights`` (every answer token 1 without them),
    plus ``attention_weight`` × :func:`attention_mass_loss` of head ``attention_head`` of LM layer ``attention_layer``
    where the batch has ``attention_queries``. The one loss of the SFT trainer and of the recipe stages that run their
    own loop."""
    inputs = model_inputs(batch)
    labels, queries = batch["labels"], batch.get("attention_queries")
    weights = batch.get("loss_weights")
    weights = (labels != -100).float() if weights is None else weights
    attend = bool(queries) and attention_weight > 0
    outputs = model(**inputs, output_hidden_states=attend or output_hidden_states)
    answer = weighted_next_token_loss(outputs.logits, labels, weights.to(outputs.logits.device))
    if not attend:
        return SFTLoss(answer, answer, None, outputs)
    hidden_in = outputs.hidden_states[attention_layer]
    unwrapped = getattr(model, "module", model)  # DDP / DeepSpeed wrap the model
    attention = attention_mass_loss(unwrapped, inputs, hidden_in, attention_layer, attention_head, queries)
    return SFTLoss(answer + attention_weight * attention, answer, attention, outputs)


def pad_right(
    sequences: Sequence[Sequence[int]], label_rows: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """``input_ids`` (right-padded with ``pad_id``), ``labels`` (-100 on padding) and ``attention_mask``."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), length), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, (seq, lab) in enumerate(zip(sequences, label_rows)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention_mask[i, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def target_answer(
    gt_id: int,
    start_s: float,
    end_s: float,
    query: str | None = None,
    objects: Sequence[tuple[int, str]] = (),
    mark_target: bool = False,
    check_attributes: bool = False,
    tubes: Sequence[tuple[float, float]] = (),
) -> str:
    """The teacher-forced completion for one sample (the checkpoint's answer format, `STVG-R1.md` §5).

    With ``query``, the reasoning restates the event and names its object ID before the time range, so the ID is
    predicted right after the description it depends on. With ``objects`` ((ID, "what it is") pairs, e.g. from
    synthetic annotations) it first says what each marked object is: one supervised look at a marker per object
    instead of one per sample, after which finding the target is matching words (meant for small models trained
    from scratch, which otherwise get one ID token of signal per sample). With ``mark_target`` too, the query comes
    first and the target's line ends ", the target." (the others "."): each line is checked against the query as it
    is written, and the ID is then read off the marked line, instead of one match over all lines at the ID token.
    With ``check_attributes`` too, each word of a line carries a check tag (:func:`checked_label`: "Object 2: large+
    pink+ circle+, the target."): a 4-layer LM compares the word it has just written with the query well, but not
    the words two or three tokens back, so one check at the line's end marked lines by their shape alone.
    With ``tubes`` too (:func:`tube_frame_times`), the ID is followed by the target's :func:`event_timeline`
    ("The target is object ID "2"; its event in time: 0.0-, 1.1+, ...; the event occurs from ...").
    The ``<answer>`` part is the same in every case.
    """
    answer = f"<answer>Target ID: {gt_id}, Time range: {start_s:.2f} to {end_s:.2f}</answer>"
    if query is None:
        return (
            f'<think>The event occurs from {start_s:.2f} to {end_s:.2f} seconds; object ID "{gt_id}" '
            f"is the target.</think> {answer}"
        )
    timing = f"the event occurs from {start_s:.2f} to {end_s:.2f} seconds.</think> {answer}"
    if mark_target and objects:
        if check_attributes:
            wanted = query_attributes(query)
            objects = [(i, checked_label(label, wanted)) for i, label in objects]
        lines = "".join(f"{object_line(i, label)}{', the target' if i == gt_id else ''}. " for i, label in objects)
        timeline = f"{TIMELINE_LEAD}{event_timeline(start_s, end_s, tubes)};" if tubes else ""
        return f'<think>"{normalize_query(query)}". {lines}The target is object ID "{gt_id}";{timeline} {timing}'
    inventory = "".join(f"{object_line(i, label)}. " for i, label in objects)
    return f'<think>{inventory}"{normalize_query(query)}" is object ID "{gt_id}"; {timing}'


class FrozenVisionFeatures:
    """Each cached video's merged visual tokens, computed once by a frozen vision tower and reused every epoch.

    With ``freeze_vision`` the tower's output for a video never changes, so after the first epoch SFT only runs
    the language model (the tower's forward is most of a step for a small model on long clips). The features are
    fed as ``mm_encoder_outputs``, the model's own way of taking pre-encoded video."""

    def __init__(self, model) -> None:
        self.model = model
        self._features: dict[str, torch.Tensor] = {}

    def __call__(self, video_file: str, video) -> torch.Tensor:
        features = self._features.get(video_file)
        if features is None:
            device = next(self.model.parameters()).device
            with torch.no_grad():
                out = self.model.model.get_video_features(
                    video.pixel_values_videos.to(device), video.video_grid_thw.to(device), return_dict=True
                )
            features = self._features[video_file] = out.pooler_output[0].detach().cpu()
        return features


class SFTCollator:
    """Rows → ``input_ids`` (prompt + answer, right-padded), ``labels`` (answer only), video tensors (or, with
    ``vision_features``, the frozen tower's merged tokens as ``mm_encoder_outputs``). With ``attend_event_edges``,
    also ``attention_queries`` for :func:`attention_mass_loss`: per time written, the positions that predict its
    characters and the target's tokens in the first (a start) or last (an end) tube of its GT range
    (:func:`event_edge_token_masks` of the row's ``target_boxes``); with ``attention_span`` too, the target's tokens in
    every tube of the range for both."""

    def __init__(
        self,
        processor,
        restate_query: bool = False,
        describe_objects: bool = False,
        vision_features: FrozenVisionFeatures | None = None,
        mark_target: bool = False,
        line_end_weight: float = 1.0,
        check_attributes: bool = False,
        time_weight: float = 1.0,
        event_timeline: bool = False,
        attend_event_edges: bool = False,
        attention_span: bool = False,
    ) -> None:
        self.vision_features = vision_features
        self.attend_event_edges = attend_event_edges
        self.attention_span = attention_span
        self.event_timeline = event_timeline and mark_target
        self.line_end_weight = line_end_weight
        self.time_weight = time_weight
        self.check_attributes = check_attributes
        self.weigh_checks = mark_target and line_end_weight != 1.0
        self.weigh_tokens = self.weigh_checks or time_weight != 1.0
        self.restate_query = restate_query or describe_objects or mark_target
        self.describe_objects = describe_objects or mark_target
        self.mark_target = mark_target
        self.clip_processor = ClipProcessor(processor)
        self.tokenizer = processor.tokenizer
        self.merge_size = int(processor.video_processor.merge_size)
        self.video_token_id = self.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        self.end_token = "<|im_end|>"

    def _token_weights(self, answer: str, objects, offsets) -> list[float]:
        """Per answer token: ``line_end_weight`` on the line check (each line's end, "," of ", the target" or ".",
        and its check tags; with ``mark_target``), ``time_weight`` on the times' digits and points and on the event
        timeline's tags (they decide the times), 1.0 elsewhere."""
        checks = set()
        if self.weigh_checks:
            for span in line_spans(answer, [i for i, _ in objects]):
                checks |= {span[1], *check_tag_offsets(answer, span)}
        times = time_offsets(answer) | set(timeline_tag_offsets(answer)) if self.time_weight != 1.0 else set()
        return [
            self.line_end_weight if start in checks else self.time_weight if start in times else 1.0
            for start, _ in offsets
        ]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collate(rows, [read_video_tensors(r["video_file"]) for r in rows])

    def collate(self, rows: list[dict[str, Any]], videos: Sequence[VideoTensors]) -> dict[str, torch.Tensor]:
        """The batch of ``rows`` whose videos are already in memory (``videos``, in row order)."""
        sequences, label_rows, weight_rows = [], [], []
        for row, video in zip(rows, videos):
            prompt = self.clip_processor.prepare_text(row["prompt"], video.num_visual_tokens(self.merge_size))
            prompt_ids = prompt["input_ids"][0].tolist()
            objects = ()
            if self.describe_objects and any(row.get("object_labels") or ()):
                objects = tuple(zip(row["valid_ids"], row["object_labels"]))
            tubes = ()
            if self.event_timeline:
                if not row.get("frame_times_s"):
                    raise BadInputError(
                        f"sample {row['sample_id']!r} has no sampled frame times (a cache written "
                        "before they were recorded): rerun `stvg-edge train prepare` into a new folder"
                    )
                tubes = tube_frame_times(row["frame_times_s"], int(video.video_grid_thw[0, 0]))
            answer = target_answer(
                int(row["gt_id"]),
                float(row["gt_start_s"]),
                float(row["gt_end_s"]),
                row.get("query") if self.restate_query else None,
                objects,
                self.mark_target,
                self.check_attributes,
                tubes,
            )
            encoded = self.tokenizer(
                answer + self.end_token, add_special_tokens=False, return_offsets_mapping=self.weigh_tokens
            )
            answer_ids = encoded["input_ids"]
            sequences.append(prompt_ids + answer_ids)
            label_rows.append([-100] * len(prompt_ids) + answer_ids)
            if self.weigh_tokens:
                weights = self._token_weights(answer, objects, encoded["offset_mapping"])
                weight_rows.append([0.0] * len(prompt_ids) + weights)
        batch = pad_right(sequences, label_rows, self.tokenizer.pad_token_id)
        if self.weigh_tokens:
            batch["loss_weights"] = torch.zeros(batch["labels"].shape)
            for i, w in enumerate(weight_rows):
                batch["loss_weights"][i, : len(w)] = torch.tensor(w)
        elif self.attend_event_edges:  # the auxiliary loss goes through WeightedLossMixin: every answer token alike
            batch["loss_weights"] = (batch["labels"] != -100).float()
        batch["mm_token_type_ids"] = video_token_type_ids(batch["input_ids"], self.video_token_id)
        if self.attend_event_edges:
            batch["attention_queries"] = self.attention_queries(rows, videos, batch["input_ids"], batch["labels"])
        batch.update(collate_videos(videos))
        if self.vision_features is not None:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            del batch["pixel_values_videos"]
            features = tuple(self.vision_features(r["video_file"], v) for r, v in zip(rows, videos))
            batch["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=features)}
        return batch

    def attention_queries(self, rows, videos, input_ids: torch.Tensor, labels: torch.Tensor) -> list[tuple]:
        """``(row, positions that predict a time's characters, the target's token positions at its event's
        start or end)`` per time written; none for a row whose sampled frames all lie outside its GT range."""
        queries = []
        for i, (row, video) in enumerate(zip(rows, videos)):
            if not row.get("target_boxes"):
                raise BadInputError(
                    f"sample {row['sample_id']!r} has no target boxes (a cache written before they were "
                    "recorded): rerun `stvg-edge train prepare` into a new folder"
                )
            masks = event_edge_token_masks(
                row["target_boxes"], video.video_grid_thw[0], self.merge_size, span=self.attention_span
            )
            if masks is None:
                continue
            video_positions = torch.nonzero(input_ids[i] == self.video_token_id).flatten()
            for k, run in enumerate(time_token_positions(self.tokenizer, labels[i])):
                queries.append((i, torch.tensor(run) - 1, video_positions[masks[k % 2]]))
        return queries


class WeightedLossMixin:
    """Put before ``Trainer``: a batch with ``loss_weights`` (:class:`SFTCollator`) is scored with
    :func:`weighted_next_token_loss` instead of the model's own loss (a mean per micro-batch: with gradient
    accumulation, micro-batches count alike whatever their token counts). A batch with ``attention_queries`` adds
    ``attention_weight`` times :func:`attention_mass_loss` of head ``attention_head`` of LM layer
    ``attention_layer`` (class attributes, set by :func:`run_sft`); its mean since the last log is logged as
    ``attention_loss``."""

    attention_weight: float = 0.0
    attention_layer: int = 2
    attention_head: int = 0
    _attention_losses: list[float] | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "loss_weights" not in inputs and not inputs.get("attention_queries"):
            inputs.pop("attention_queries", None)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = sft_loss(model, inputs, self.attention_weight, self.attention_layer, self.attention_head)
        if loss.attention is not None:
            self._attention_losses = (self._attention_losses or []) + [float(loss.attention.detach())]
        return (loss.total, loss.outputs) if return_outputs else loss.total

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._attention_losses and "loss" in logs:
            logs["attention_loss"] = round(sum(self._attention_losses) / len(self._attention_losses), 4)
            self._attention_losses = None
        super().log(logs, *args, **kwargs)  # type: ignore[misc]


@dataclass(frozen=True)
class SFTRunConfig:
    """An SFT warm-start run."""

    data: str | None = None
    """Training cache folder (`stvg-edge train prepare`)."""
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    """Hub id or folder of the model."""
    output_dir: str = "runs/sft_stvg_r1"
    resume_from_checkpoint: str | None = None
    """A checkpoint folder or "latest"."""
    num_train_epochs: float = 1.0
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run ``num_train_epochs``)."""
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "linear"
    """``transformers`` scheduler name ("linear", "cosine", "constant_with_warmup", ...)."""
    warmup_steps: int = 0
    """Linear warm-up steps before the schedule."""
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    bf16: bool = True
    """bf16 on CUDA (ignored on CPU)."""
    gradient_checkpointing: bool = True
    save_steps: int = 500
    logging_steps: int = 1
    seed: int = 42
    restate_query: bool = False
    """Teach a reasoning that restates the query before naming the ID (see :func:`target_answer`)."""
    describe_objects: bool = False
    """Teach a reasoning that first says what each marked object is, where the cache knows (synthetic clips);
    implies ``restate_query``."""
    mark_target: bool = False
    """Like ``describe_objects``, with the query first and the target's line marked (see :func:`target_answer`);
    implies ``describe_objects``."""
    freeze_vision: bool = False
    """Train the language model only; the vision tower and its merger keep their weights (for a vision tower
    trained first, e.g. by the nano recipe's dense vision stage)."""
    line_end_weight: float = 1.0
    """With ``mark_target``: loss weight of the token that ends each inventory line ("," of ", the target", or
    "."), and of its check tags, the line check, against 1.0 for every other answer token (a hundred of them for a
    handful of checks)."""
    check_attributes: bool = False
    """With ``mark_target``: a check tag after each word of each line (see :func:`target_answer`)."""
    time_weight: float = 1.0
    """Loss weight of the times' tokens (both ranges: the reasoning's and the ``<answer>``'s; 16 tokens of a
    hundred), against 1.0 for the rest."""
    event_timeline: bool = False
    """With ``mark_target``: after the ID, the target's event tube by tube, "+" or "-" per 2-frame tube, before
    the time range (see :func:`event_timeline`); its tags weigh ``time_weight``. Needs a cache with sampled frame
    times. (On the nano model, whose tower hardly shows the events, the LM wrote one timeline for every clip: see
    ``stvgr1_edge/models/nano/MODEL_CARD.md``.)"""
    attention_weight: float = 0.0
    """Weight of the event-edge attention loss (:func:`attention_mass_loss`, 0: off): at the positions that write a
    start's (end's) characters, head ``attention_head`` of LM layer ``attention_layer`` is trained to attend to the
    target's tokens in the first (last) tube of its GT range. Needs a cache with target boxes."""
    attention_layer: int = 2
    attention_head: int = 0


def run_sft(run: SFTRunConfig):
    """Fine-tune on teacher-forced answers; saves the model and processor to ``output_dir``."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Trainer, TrainingArguments

    from .cache import load_cached_dataset
    from .grpo import load_processor

    if not run.data:
        raise BadInputError("no training data: pass --data CACHE (a folder written by `stvg-edge train prepare`)")
    processor, source = load_processor(run.model)
    dataset = load_cached_dataset(run.data, ClipProcessor(processor).constants())
    cuda = torch.cuda.is_available()
    bf16 = bool(run.bf16 and cuda)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.bfloat16 if bf16 else torch.float32)
    use_trained_rope_index(model)  # the positions Qwen2.5-VL was trained with (transformers 5 places text differently)
    if run.freeze_vision:
        model.model.visual.requires_grad_(False)
    args = TrainingArguments(
        output_dir=run.output_dir,
        num_train_epochs=run.num_train_epochs,
        max_steps=run.max_steps,
        learning_rate=run.learning_rate,
        lr_scheduler_type=run.lr_scheduler_type,
        warmup_steps=run.warmup_steps,
        per_device_train_batch_size=run.per_device_train_batch_size,
        gradient_accumulation_steps=run.gradient_accumulation_steps,
        bf16=bf16,
        gradient_checkpointing=run.gradient_checkpointing,
        save_steps=run.save_steps,
        logging_steps=run.logging_steps,
        seed=run.seed,
        report_to="none",
        remove_unused_columns=False,
        use_cpu=not cuda,
    )
    if run.attention_weight:
        check_attention_head(model.config.text_config, run.attention_layer, run.attention_head)
    attention = {
        "attention_weight": run.attention_weight,
        "attention_layer": run.attention_layer,
        "attention_head": run.attention_head,
    }
    trainer_cls = type("SFTTrainer", (ExactResumeMixin, WeightedLossMixin, Trainer), attention)
    # processing_class: every checkpoint-N/ gets the processor files too, so it loads (and evaluates) on its own
    features = FrozenVisionFeatures(model) if run.freeze_vision else None
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        data_collator=SFTCollator(
            processor,
            run.restate_query,
            run.describe_objects,
            features,
            run.mark_target,
            run.line_end_weight,
            run.check_attributes,
            run.time_weight,
            run.event_timeline,
            attend_event_edges=run.attention_weight > 0,
        ),
    )
    resume = run.resume_from_checkpoint
    if resume not in (None, "", "latest") and not Path(resume).is_dir():
        raise BadInputError(f"checkpoint folder not found: {resume}")
    logger.info("SFT on %d samples from %s, model %s -> %s", len(dataset), run.data, source, run.output_dir)
    trainer.train(resume_from_checkpoint=True if resume == "latest" else resume)
    trainer.save_model(run.output_dir)
    processor.save_pretrained(run.output_dir)
    return trainer
