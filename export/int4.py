"""Weight-only int4 for the language model's linears, gpt-fast style: choosing the codes (GPTQ, or the runtime's
searched rounding) and writing the folder that :mod:`stvgr1_edge.backends.int4` runs.

Quantization is group-wise asymmetric: each row of ``W`` (out, in) is cut into groups of ``group_size`` inputs;
a group with range ``[lo, hi]`` (its min and max, shrunk by the :data:`RANGE_SHRINKS` factor that reconstructs
the group best) gets ``scale = (hi - lo) / 15``, ``lo`` moved onto the nearest multiple of ``scale`` (an integer
zero point) and integer codes ``q = round((w - lo) / scale)`` in 0..15. The kernels (torch's tinygemm ops)
dequantize ``(q - 8) * scale + zero`` with ``zero = lo + 8 * scale``.
Given calibration inputs, GPTQ (:func:`quantize_weight_int4_gptq`) picks the codes instead, in the same format: it
rounds one input column at a time and folds each column's error into the columns still to come, so that the layer's
outputs on real activations move least (the packaged nano model on 200 held-out clips: 65.5% of int4 answers
word for word full precision's with GPTQ, 46.5% with rounding; `benchmarks/results/accuracy.json`).

The kernels that run the codes, their device-specific layouts, the portable folder format and the searched rounding
(:func:`quantize_weight_int4`, which the runtime's decode engine also uses to quantize at load) are the runtime's
(:mod:`stvgr1_edge.backends.int4`); quantize or load a model on the device it will run on.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from stvgr1_edge.backends.int4 import (  # noqa: F401  (RANGE_SHRINKS, quantize_weight_int4: this module's API too)
    FORMAT,
    QUANT_FILE,
    RANGE_SHRINKS,
    SUPPORTED_GROUP_SIZES,
    WEIGHTS_FILE,
    Int4ModuleSpec,
    WeightOnlyInt4Linear,
    can_quantize,
    pack_uint4x2,
    quantize_weight_int4,
    search_int4_range,
    set_submodule,
)
from stvgr1_edge.errors import BadInputError, atomic_output_dir

logger = logging.getLogger(__name__)

DEFAULT_SKIP = ("model.visual", "lm_head")
"""Modules kept in floating point: the whole vision tower and the output projection."""


# ----------------------------------------------------------------------------------------------- GPTQ
def quantize_weight_int4_gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    group_size: int,
    range_shrinks: Sequence[float] = RANGE_SHRINKS,
    damp: float = 0.01,
    block_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`quantize_weight_int4`'s output, chosen by GPTQ (Frantar et al., 2023) instead of rounding each weight
    alone: input columns are quantized left to right and each column's rounding error is pushed onto the columns
    not yet quantized, weighted by ``hessian`` (``X^T X`` of the linear's calibration inputs, (in, in)), so that
    the layer's *outputs* on those inputs move least. A group's range is searched (as in
    :func:`quantize_weight_int4`) when its first column is reached, on the error-updated weights.
    ``damp`` (a fraction of the mean diagonal) keeps the inverse stable when inputs are nearly collinear."""
    out_features, in_features = weight.shape
    block_size = max(group_size, block_size // group_size * group_size)  # a group never straddles two blocks
    w = weight.detach().float().clone()
    h = hessian.detach().float().to(w.device).clone()
    dead = torch.diag(h) == 0  # an input that is always zero: its weights cannot matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diag(h).mean() * torch.eye(in_features, device=w.device)
    # Upper Cholesky factor of H^-1: row j holds the error-propagation weights of column j to the later columns.
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.zeros(out_features, in_features, dtype=torch.uint8, device=w.device)
    scales = torch.zeros(out_features, in_features // group_size, device=w.device)
    los = torch.zeros_like(scales)
    for b0 in range(0, in_features, block_size):
        b1 = min(b0 + block_size, in_features)
        block, errors, h_inv_block = (
            w[:, b0:b1].clone(),
            torch.zeros(out_features, b1 - b0, device=w.device),
            h_inv[b0:b1, b0:b1],
        )
        for j in range(b1 - b0):
            column = b0 + j
            if column % group_size == 0:
                g = column // group_size
                _, scales[:, g], los[:, g] = search_int4_range(block[:, j : j + group_size], range_shrinks)
            g = column // group_size
            q = ((block[:, j] - los[:, g]) / scales[:, g]).round().clamp(0, 15)
            codes[:, column] = q.to(torch.uint8)
            error = (block[:, j] - (q * scales[:, g] + los[:, g])) / h_inv_block[j, j]
            block[:, j:] -= error[:, None] * h_inv_block[j, j:][None, :]
            errors[:, j] = error
        w[:, b1:] -= errors @ h_inv[b0:b1, b1:]  # the block's errors reach the later blocks at once
    return codes, scales, los + 8 * scales


def int4_linear_from(
    linear: nn.Linear, group_size: int = 128, hessian: torch.Tensor | None = None
) -> WeightOnlyInt4Linear:
    """Quantize ``linear`` (on its own device) into a new :class:`WeightOnlyInt4Linear`: GPTQ when its inputs'
    ``hessian`` is given, else each weight rounded on its group's searched range."""
    if hessian is None:
        codes, scales, zeros = quantize_weight_int4(linear.weight, group_size)
    else:
        codes, scales, zeros = quantize_weight_int4_gptq(linear.weight, hessian, group_size)
    return WeightOnlyInt4Linear(
        linear.in_features,
        linear.out_features,
        codes,
        scales,
        zeros,
        linear.bias,
        group_size,
        compute_dtype=linear.weight.dtype,
        keep_codes=True,  # save_int4 writes them
    )


# ----------------------------------------------------------------------------------------------- model level
def _is_skipped(name: str, skip: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in skip)


def collect_input_hessians(
    model: nn.Module, names: Sequence[str], calibration: Sequence[Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """``X^T X / n`` (in, in) of the inputs each named linear sees over the forwards ``model(**inputs)`` of the
    ``calibration`` batches — GPTQ's proxy for how much each input direction matters. A linear that sees no
    input is left out."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def accumulate(module: nn.Linear, args, output) -> None:
            x = args[0].detach().reshape(-1, module.in_features).float()
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]

        return accumulate

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in names]
    try:
        with torch.inference_mode():
            for inputs in calibration:
                model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name] / counts[name] for name in sums}


def decoder_layer_of(name: str) -> str:
    """The decoder layer a linear belongs to (``...layers.3``), or the name itself outside a layer stack."""
    match = re.match(r"(.*\.layers\.\d+)\.", name)
    return match.group(1) if match else name


def quantize_int4_(
    model: nn.Module,
    group_size: int = 128,
    skip: Sequence[str] = DEFAULT_SKIP,
    calibration: Sequence[Mapping[str, torch.Tensor]] | None = None,
) -> list[str]:
    """Replace, in place, every ``nn.Linear`` not under a ``skip`` prefix by a :class:`WeightOnlyInt4Linear`
    packed for the device its weight is on. Returns the names of the replaced modules.

    With ``calibration`` (model input dicts, e.g. :func:`cache_calibration_inputs`), the weights are chosen by
    GPTQ, one decoder layer at a time as in the paper: the calibration forwards are run once per layer, with the
    layers before it already quantized, so that each layer also corrects the error it receives; only that layer's
    ``X^T X`` matrices are held at once (a 7B model's would not fit together). Without it, each weight is rounded
    on its group's searched range.
    Linears whose shapes the kernels do not take (``in`` not a multiple of ``group_size`` / 32, ``out`` not a
    multiple of 8) stay in floating point and are logged.
    """
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise BadInputError(f"int4 group size {group_size} is not supported: use one of {SUPPORTED_GROUP_SIZES}")
    blocks: dict[str, list[tuple[str, nn.Linear]]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or _is_skipped(name, skip):
            continue
        if can_quantize(module, group_size):
            blocks.setdefault(decoder_layer_of(name), []).append((name, module))
        else:
            logger.info(
                "int4: keeping %s (%d -> %d) in floating point: shape does not fit the kernel",
                name,
                module.in_features,
                module.out_features,
            )
    if not blocks:
        raise BadInputError(
            f"no linear layer could be quantized to int4 with group size {group_size}: try a smaller --group-size"
        )
    replaced = []
    for block, targets in blocks.items():
        hessians = {} if calibration is None else collect_input_hessians(model, [n for n, _ in targets], calibration)
        for name, linear in targets:
            if calibration is not None and name not in hessians:
                logger.info("int4: %s saw no calibration input; rounding it without GPTQ", name)
            set_submodule(model, name, int4_linear_from(linear, group_size, hessians.get(name)))
            replaced.append(name)
    logger.info(
        "int4: quantized %d linear layers (group size %d, %s)",
        len(replaced),
        group_size,
        "searched rounding" if calibration is None else f"GPTQ on {len(calibration)} calibration inputs",
    )
    return replaced


def cache_calibration_inputs(
    model: nn.Module, processor, cache_dir: str | os.PathLike, num: int = 32, max_new_tokens: int = 256
) -> list[dict[str, torch.Tensor]]:
    """GPTQ calibration batches from a ``stvg-edge train prepare`` cache: for each of its first ``num`` samples,
    the prompted clip's inputs followed by the model's own greedy answer (generated here, in full precision), so
    that the answer tokens' activations — the ones decoding depends on — are calibrated too."""
    from stvgr1_edge.grounding import GroundingInputs
    from stvgr1_edge.prepared import cached_model_inputs, load_cached_samples

    samples = load_cached_samples(cache_dir)[:num]
    if not samples:
        raise BadInputError(
            f"{cache_dir} holds no prepared samples: point --int4-calibration at a `stvg-edge train prepare` folder"
        )
    inputs_for = GroundingInputs(processor)
    device = next(model.parameters()).device
    batches = []
    for sample in samples:
        inputs = {k: v.to(device) for k, v in cached_model_inputs(inputs_for, cache_dir, sample).items()}
        with torch.inference_mode():
            sequence = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        answer_len = sequence.shape[1] - inputs["input_ids"].shape[1]
        inputs["input_ids"] = sequence
        inputs["attention_mask"] = torch.ones_like(sequence)
        inputs["mm_token_type_ids"] = torch.nn.functional.pad(inputs["mm_token_type_ids"], (0, answer_len))
        batches.append(inputs)
    return batches


def save_int4(model: nn.Module, folder: str | os.PathLike, processor=None) -> Path:
    """Save an int4-quantized model as a folder: ``config.json`` (+ generation config and the processor files
    when given), ``model.safetensors`` (floating-point tensors, plus per quantized linear ``.codes_uint4x2``,
    ``.scales``, ``.zeros``, ``.bias``) and ``int4_quantization.json``. Written to a temporary folder, then
    renamed into place."""
    from safetensors.torch import save_file

    folder = Path(folder)
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, WeightOnlyInt4Linear)}
    if not quantized:
        raise BadInputError("model has no int4 layers: run quantize_int4_(model) before save_int4")
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, torch.device], str] = {}
    tied: dict[str, str] = {}
    for key, tensor in model.state_dict().items():
        module_name = key.rpartition(".")[0]
        if module_name in quantized:
            continue
        identity = (tensor.data_ptr(), tensor.device)
        if identity in seen:  # tied weights (e.g. lm_head / embed_tokens): store once
            tied[key] = seen[identity]
            continue
        seen[identity] = key
        tensors[key] = tensor.detach().cpu().contiguous()
    specs = {}
    for name, module in quantized.items():
        sz = module.scales_and_zeros.float().cpu()
        tensors[f"{name}.codes_uint4x2"] = pack_uint4x2(module.codes().cpu()).contiguous()
        tensors[f"{name}.scales"] = sz[..., 0].t().contiguous()
        tensors[f"{name}.zeros"] = sz[..., 1].t().contiguous()
        if module.bias is not None:
            tensors[f"{name}.bias"] = module.bias.detach().cpu().contiguous()
        specs[name] = asdict(
            Int4ModuleSpec(
                module.in_features,
                module.out_features,
                module.group_size,
                module.bias is not None,
                str(module.scales_and_zeros.dtype).removeprefix("torch."),
            )
        )
    with atomic_output_dir(folder) as tmp:
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        spec = {"format": FORMAT, "modules": specs, "tied": tied}
        (tmp / QUANT_FILE).write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("saved int4 model (%d quantized linears) to %s", len(specs), folder)
    return folder
