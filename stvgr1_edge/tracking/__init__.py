"""Multi-object tracking with consistent IDs (STVG-R1 §2)."""

from .base import Detections, Detector, StreamingTracker, TrackerConfig

__all__ = ["Detections", "Detector", "StreamingTracker", "TrackerConfig"]
