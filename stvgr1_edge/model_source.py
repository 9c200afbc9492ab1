"""Where a grounding model's files come from: a local folder (checked before loading), a hub id (from the local
cache, or one clear line when it is not there and the hub cannot be reached), or "nano", the model shipped in the
package."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import BadInputError, MissingWeightsError, read_json
from .hub import hub_source
from .safetensors_check import check_safetensors_weights

DEFAULT_MODEL = "XiaowenZhang/stvg-r1-model-7b"
"""Hub id of the released STVG-R1 checkpoint (a Qwen2.5-VL-7B-Instruct fine-tune)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


NANO_MODEL = "nano"
"""Name of the small grounding model shipped inside the package (trained on synthetic clips by
``train/recipes/nano``): works offline, for demos and pipeline checks, not for real footage."""


def packaged_model_dir(name: str = NANO_MODEL) -> Path:
    """Folder of a model shipped inside the package (``stvgr1_edge/models/<name>``)."""
    return Path(__file__).resolve().parent / "models" / name


def _how_to_get(model: str) -> str:
    return (
        f"download it with  hf download {model}  (or --local-dir DIR and pass --model DIR); "
        f"offline, try the packaged demo model with --model nano"
    )


def missing_weights_message(model: str) -> str:
    return f"grounding model {model!r} is not available locally: {_how_to_get(model)}"


def named_model_folder(model: str) -> str:
    """``model``, or the packaged model's folder when it names it ("nano") and no local ./nano model folder exists."""
    if model == NANO_MODEL and not (Path(model) / "config.json").exists():
        return str(packaged_model_dir())
    return model


def resolve_model_source(model: str) -> tuple[str, bool]:
    """``(source, local_files_only)``; checks a local folder holds a model before loading it.
    ``"nano"`` is the model shipped in the package (:func:`named_model_folder`)."""
    packaged = named_model_folder(model)
    if packaged != model:
        model = packaged
        if not (Path(model) / "model.safetensors").exists():
            raise MissingWeightsError(
                f"the packaged nano model is missing from {model}: reinstall stvg-edge "
                f"(its wheel ships stvgr1_edge/models/nano)"
            )
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BadInputError(f"--model {model} is a file: pass the folder that holds config.json and the weights")
        if not (path / "config.json").exists():
            raise BadInputError(f"{model} is not a model folder (no config.json): pass a Qwen2.5-VL checkpoint folder")
        model_type = read_json(path / "config.json", what="model config").get("model_type")
        if model_type != "qwen2_5_vl":
            raise BadInputError(
                f"{model} holds a {model_type!r} model, not Qwen2.5-VL (model_type 'qwen2_5_vl'): "
                f"pass an STVG-R1 / Qwen2.5-VL checkpoint folder"
            )
        if not any(any(path.glob(p)) for p in _WEIGHT_PATTERNS):
            raise MissingWeightsError(
                f"{model} has config.json but no weights (*.safetensors): "
                f"download them with  hf download {DEFAULT_MODEL} --local-dir {model}"
            )
        check_safetensors_weights(path)
        return str(path), True
    if not _HUB_ID.match(model):
        raise MissingWeightsError(
            f"model folder not found: {model}: pass an existing folder or a hub id such as {DEFAULT_MODEL}"
        )
    # cached → no network at all; uncached and offline/unreachable → one line at once, not minutes of retries
    return hub_source(model, _how_to_get(model))
