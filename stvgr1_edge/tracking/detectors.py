"""Object detectors for keyframes: transformers models by hub id or folder, or the weight-free classical one.

- closed-set (RT-DETR and any ``AutoModelForObjectDetection``): COCO classes, confidence 0.25 as STVG-R1 §2;
  ``person_only=True`` keeps class "person" (the paper's HC-STVG mode);
- open-vocabulary (OWLv2 / OWL-ViT / Grounding DINO): boxes for ``text_prompt`` ("person. ball." or
  "person, ball");
- ``"classical"``: the weight-free detector of ``tracking/classical.py`` (synthetic clips, no weights).

Every detector returns :class:`Detections` in original-frame pixel xyxy, clipped to the frame.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, MissingDependencyError, MissingWeightsError, require
from ..hub import hub_source
from .base import Detections, Detector

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "PekingU/rtdetr_r18vd_coco_o365"
"""Hub id of the default COCO detector (RT-DETR R18)."""
DEFAULT_THRESHOLD = 0.25
"""Detection confidence (STVG-R1 §2)."""
OPEN_VOCABULARY_TYPES = ("owlv2", "owlvit", "grounding_dino", "mm_grounding_dino")


def _prompt_labels(text_prompt: str) -> list[str]:
    """ "person. red ball, dog" → ["person", "red ball", "dog"]."""
    labels = [p.strip() for p in re.split(r"[.,;\n]", text_prompt) if p.strip()]
    if not labels:
        raise BadInputError(f"empty detector text prompt {text_prompt!r}: name the objects, e.g. 'person. ball.'")
    return labels


def _clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


class TransformersDetector(Detector):
    """A transformers object detector (closed-set or open-vocabulary) on one RGB frame at a time."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        threshold: float = DEFAULT_THRESHOLD,
        device: str = "cpu",
        text_labels: list[str] | None = None,
        keep_labels: frozenset[str] | None = None,
    ):
        self.model, self.processor, self.threshold, self.device = model, processor, float(threshold), str(device)
        self.text_labels = text_labels
        """Open-vocabulary queries (None for closed-set models)."""
        self.keep_labels = keep_labels
        """Keep only detections with these class names (None keeps all)."""
        self.model_type = model.config.model_type

    def __call__(self, image: np.ndarray) -> Detections:
        import torch

        height, width = image.shape[:2]
        if self.text_labels is None:
            inputs = self.processor(images=image, return_tensors="pt")
        else:
            text = ". ".join(self.text_labels) + "." if "grounding_dino" in self.model_type else [self.text_labels]
            inputs = self.processor(images=image, text=text, return_tensors="pt")
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        result = self._post_process(outputs, inputs, (height, width))
        boxes = _clip_boxes(result["boxes"].float().cpu().numpy(), height, width)
        scores = result["scores"].float().cpu().numpy()
        labels = tuple(self._label_names(result))
        detections = Detections(boxes, scores, labels)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if self.keep_labels is not None:
            keep &= np.array([label in self.keep_labels for label in labels], dtype=bool)
        return detections.filter(keep) if len(detections) else Detections.empty()

    def _post_process(self, outputs, inputs, size: tuple[int, int]) -> dict:
        if self.text_labels is None:
            return self.processor.post_process_object_detection(outputs, threshold=self.threshold, target_sizes=[size])[
                0
            ]
        if "grounding_dino" in self.model_type:
            return self.processor.post_process_grounded_object_detection(
                outputs,
                inputs["input_ids"],
                threshold=self.threshold,
                text_threshold=self.threshold,
                target_sizes=[size],
            )[0]
        return self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.threshold, target_sizes=[size], text_labels=[self.text_labels]
        )[0]

    def _label_names(self, result: dict) -> list[str]:
        if self.text_labels is None:
            id2label = self.model.config.id2label
            return [str(id2label.get(int(i), int(i))) for i in result["labels"]]
        names = result.get("text_labels") or result["labels"]
        return [str(n) if isinstance(n, str) else self.text_labels[int(n)] for n in names]


def load_detector(
    spec: str,
    device: str = "cpu",
    text_prompt: str | None = None,
    person_only: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
) -> Detector:
    """A detector from ``spec``: ``"classical"``, a hub id, or a folder saved with ``save_pretrained``."""
    if spec == "classical":
        return _classical_detector(text_prompt, person_only)
    transformers = require("transformers", "gpu", "the object detector")
    path = Path(spec).expanduser()
    is_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or path.exists()
    if is_path and not path.is_dir():
        raise MissingWeightsError(
            f"detector folder not found: {spec}: pass a folder saved with save_pretrained, "
            f"a hub id (e.g. {DEFAULT_DETECTOR}) or 'classical'"
        )
    source, local = str(path), True
    if not path.is_dir():
        source, local = hub_source(spec, f"download it with  hf download {spec}  or pass a local folder")
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=local)
        open_vocabulary = config.model_type in OPEN_VOCABULARY_TYPES
        if open_vocabulary:
            model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(source, local_files_only=local)
            processor = transformers.AutoProcessor.from_pretrained(source, local_files_only=local)
        else:
            model = transformers.AutoModelForObjectDetection.from_pretrained(source, local_files_only=local)
            processor = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise MissingWeightsError(
            f"cannot load detector '{spec}' ({reason}): download it with  hf download "
            f"{spec if not path.is_dir() else DEFAULT_DETECTOR}  (needs internet once), pass a local folder, "
            f"or use --detector classical"
        ) from None
    model = model.to(device).eval()
    keep = frozenset({"person"}) if person_only else None
    if open_vocabulary:
        labels = _prompt_labels(text_prompt or "person")
        if person_only:
            labels = ["person"]
        return TransformersDetector(model, processor, threshold, device, text_labels=labels, keep_labels=keep)
    if text_prompt:
        logger.warning(
            "detector %s is closed-set (%s): ignoring the text prompt %r", spec, config.model_type, text_prompt
        )
    if person_only and "person" not in set(config.id2label.values()):
        raise BadInputError(f"detector {spec} has no 'person' class: drop person_only or use a COCO detector")
    return TransformersDetector(model, processor, threshold, device, keep_labels=keep)


def _classical_detector(text_prompt: str | None, person_only: bool) -> Detector:
    """The weight-free detector from ``tracking/classical.py`` (imported lazily)."""
    try:
        from .classical import ClassicalDetector
    except ImportError as exc:
        raise MissingDependencyError(
            f"the classical detector is not available ({exc}): reinstall stvg-edge, "
            f"or pass a model with --detector ID|DIR"
        ) from None
    if text_prompt or person_only:
        logger.info("the classical detector finds every distinct object: text prompt and person_only are ignored")
    return ClassicalDetector()
