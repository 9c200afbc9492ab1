"""The `run --vis` video: every frame with all tracks drawn thin, and each query's tube highlighted over its
time range with the query's number and text. One decode pass; written atomically."""

from __future__ import annotations

import os
import textwrap

import numpy as np

from .render import draw_tracks
from .video import VideoWriter, iter_frames

TUBE_COLOURS = [(0, 230, 64), (255, 64, 255), (0, 200, 255), (255, 160, 0)]  # RGB, one per query


def draw_tube_frame(image: np.ndarray, frame_index: int, result) -> np.ndarray:
    """A copy of ``image`` (native frame ``frame_index``) with tracks and the tubes active at that frame."""
    import cv2

    out = draw_tracks(image, result.tracks.objects_at(frame_index), mask_alpha=0.0)
    # dim the track overlay so the answer stands out
    out = cv2.addWeighted(out, 0.5, image, 0.5, 0)
    height, width = out.shape[:2]
    scale = max(height, width) / 800
    thickness = max(2, int(round(3 * scale)))
    y = int(22 * scale) + 4
    for q_index, q in enumerate(result.queries):
        box = q.tube.boxes.get(frame_index)
        if box is None:
            continue
        colour = TUBE_COLOURS[q_index % len(TUBE_COLOURS)]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, thickness, cv2.LINE_AA)
        ids = ",".join(map(str, q.answer.ids))
        caption = textwrap.shorten(f"Q{q_index + 1} ID {ids}: {q.query}", width=max(20, int(width / (9 * scale))))
        cv2.putText(
            out, caption, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, colour, max(1, thickness - 1), cv2.LINE_AA
        )
        y += int(24 * scale)
    return out


def write_tube_video(video: str | os.PathLike, result, out_path: str | os.PathLike) -> None:
    """Decode ``video`` again and write the annotated MP4 to ``out_path`` (atomically)."""
    info = result.info
    with VideoWriter(out_path, info.fps, info.width, info.height) as writer:
        for frame in iter_frames(video, info=info):
            writer.write(draw_tube_frame(frame.image, frame.index, result))
