"""Build a tracker from CLI-style names: ``classical`` (no weights), ``sam2`` or ``edgetam``.

Model backends are imported inside :func:`make_tracker`, so the classical path never loads torch or
transformers.
"""

from __future__ import annotations

from ..errors import BadInputError, MissingWeightsError
from .base import Detector, StreamingTracker

TRACKER_NAMES = ("classical", "sam2", "edgetam")


def make_detector(
    spec: str | None, device: str = "cpu", text_prompt: str | None = None, person_only: bool = False
) -> Detector:
    """``classical`` (background subtraction) or a transformers detector by hub ID or local folder."""
    if spec is None or spec == "classical":
        from .classical import ClassicalDetector

        return ClassicalDetector()
    from .detectors import load_detector

    return load_detector(spec, device=device, text_prompt=text_prompt, person_only=person_only)


def make_tracker(
    name: str = "classical",
    model: str | None = None,
    detector: str | None = None,
    device: str = "cpu",
    every: int = 1,
    keyframe_interval: int = 15,
    text_prompt: str | None = None,
    person_only: bool = False,
    dtype=None,
) -> StreamingTracker:
    """A ready :class:`StreamingTracker`.

    - ``classical``: background subtraction + Hungarian tracking, no weights (``model``/``detector``
      must be unset or ``classical``);
    - ``sam2`` / ``edgetam``: the SAM2.1 / EdgeTAM video tracker ``model`` (hub ID or folder) fed by
      ``detector`` (hub ID, folder, or ``classical``) on keyframes every ``keyframe_interval`` tracked frames.
    """
    if every < 1:
        raise BadInputError(f"--every must be >= 1, got {every}")
    if keyframe_interval < 1:
        raise BadInputError(f"--keyframe-interval must be >= 1, got {keyframe_interval}")
    if name == "classical":
        if model is not None:
            raise BadInputError(
                "the classical tracker uses no model: drop --tracker-model, or pick --tracker sam2|edgetam"
            )
        if detector not in (None, "classical"):
            raise BadInputError(
                "the classical tracker has its own background-subtraction detector: "
                "drop --detector, or pick --tracker sam2|edgetam"
            )
        from .classical import ClassicalTracker, ClassicalTrackerConfig

        return ClassicalTracker(ClassicalTrackerConfig(every=every, keyframe_interval=keyframe_interval))
    if name in ("sam2", "edgetam"):
        if model is None:
            raise MissingWeightsError(
                f"--tracker {name} needs weights: pass --tracker-model HUB_ID or a local folder "
                f"(or use --tracker classical, which needs none)"
            )
        from .sam2 import Sam2Tracker, Sam2TrackerConfig

        config = Sam2TrackerConfig(every=every, keyframe_interval=keyframe_interval)
        det = make_detector(detector, device=device, text_prompt=text_prompt, person_only=person_only)
        return Sam2Tracker(model, det, config, device=device, dtype=dtype, family=name)
    raise BadInputError(f"unknown tracker {name!r}: choose one of {', '.join(TRACKER_NAMES)}")
