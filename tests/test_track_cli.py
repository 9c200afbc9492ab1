"""`stvg-edge track`: tracks JSON + annotated MP4 on success; one line, exit 2, no output on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stvgr1_edge.cli import main
from stvgr1_edge.errors import BadInputError, MissingWeightsError
from stvgr1_edge.render import draw_tracks, id_colour
from stvgr1_edge.tracking.classical import ClassicalTracker
from stvgr1_edge.tracking.factory import make_tracker
from stvgr1_edge.tracks import TrackSet
from stvgr1_edge.video import VideoWriter, probe_video


def _moving_square_video(path, n=24, width=96, height=64):
    rng = np.random.default_rng(0)
    bg = np.clip(190 + rng.normal(0, 3, (height, width, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
    with VideoWriter(path, 10.0, width, height) as w:
        for f in range(n):
            img = bg.copy()
            x = 4 + 3 * f
            img[20:34, x : x + 14] = (220, 30, 30)
            w.write(img)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def _bad_inputs(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    full = _moving_square_video(tmp_path / "full.mp4", n=40)
    data = full.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    return {"missing": tmp_path / "missing.mp4", "empty": empty, "text": text, "truncated": truncated}


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated"])
def test_bad_video_exits_2_one_line_and_writes_nothing(tmp_path, capsys, case):
    video = _bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["track", str(video), "-o", str(out_dir / "tracks.json"), "--vis", str(out_dir / "vis.mp4")])
    assert code == 2
    line = _one_error_line(capsys)
    assert video.name in line
    assert list(out_dir.iterdir()) == []  # neither -o nor --vis, no temporary leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_track_writes_tracks_json_and_annotated_mp4(tmp_path, capsys):
    video = _moving_square_video(tmp_path / "clip.mp4")
    out, vis = tmp_path / "tracks.json", tmp_path / "vis.mp4"
    assert main(["track", str(video), "-o", str(out), "--vis", str(vis)]) == 0
    d = json.loads(out.read_text())
    assert (d["width"], d["height"], d["num_frames"]) == (96, 64, 24)
    assert list(d["tracks"]) == ["1"]
    t = d["tracks"]["1"]
    assert len(t["frames"]) >= 20 and len(t["boxes"]) == len(t["masks"]) == len(t["frames"])
    x1, y1, x2, y2 = t["boxes"][t["frames"].index(10)]
    assert abs(x1 - 34) <= 1 and abs(y1 - 20) <= 1 and abs(x2 - 48) <= 1 and abs(y2 - 34) <= 1
    info = probe_video(vis)
    assert (info.width, info.height, info.num_frames) == (96, 64, 24)
    assert "1 tracks" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "tracks.json", "vis.mp4"]


def test_track_every_k_tracks_only_those_frames(tmp_path):
    video = _moving_square_video(tmp_path / "clip.mp4")
    out = tmp_path / "tracks.json"
    assert main(["track", str(video), "-o", str(out), "--every", "2"]) == 0
    frames = TrackSet.load(out).tracks[1].frames
    assert frames and all(f % 2 == 0 for f in frames)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--tracker", "nope"], "unknown tracker"),
        (["--tracker", "sam2"], "--tracker-model"),
        (["--tracker-model", "some/model"], "no model"),
        (["--detector", "some/detector"], "--detector"),
    ],
)
def test_bad_tracker_options_exit_2(tmp_path, capsys, argv, fragment):
    video = _moving_square_video(tmp_path / "clip.mp4", n=6)
    assert main(["track", str(video), "-o", str(tmp_path / "t.json"), *argv]) == 2
    assert fragment in _one_error_line(capsys)
    assert not (tmp_path / "t.json").exists()


def test_make_tracker_classical_and_errors():
    tracker = make_tracker("classical", every=3, keyframe_interval=5)
    assert isinstance(tracker, ClassicalTracker)
    assert (tracker.config.every, tracker.config.keyframe_interval) == (3, 5)
    with pytest.raises(AttributeError):  # settings are frozen: per-video state goes to start()
        tracker.config.every = 1  # type: ignore[misc]
    with pytest.raises(MissingWeightsError):
        make_tracker("edgetam")
    with pytest.raises(BadInputError):
        make_tracker("classical", every=0)


def test_draw_tracks_draws_boxes_in_id_colours():
    frame = np.zeros((60, 80, 3), np.uint8)
    out = draw_tracks(frame, [(1, [10, 10, 40, 50], None), (2, [45, 5, 75, 30], None)])
    assert frame.max() == 0  # input untouched
    assert tuple(out[30, 10]) == id_colour(1)  # left edge of box 1
    assert tuple(out[20, 74]) == id_colour(2)  # right edge of box 2 (x2 - 1)
    assert id_colour(1) != id_colour(2)


def test_track_writes_motchallenge_text_with_the_same_tracks(tmp_path):
    from stvgr1_edge.mot import read_mot

    video = _moving_square_video(tmp_path / "clip.mp4")
    assert main(["track", str(video), "-o", str(tmp_path / "tracks.json")]) == 0
    assert main(["track", str(video), "-o", str(tmp_path / "tracks.txt"), "--format", "mot"]) == 0
    first = (tmp_path / "tracks.txt").read_text().splitlines()[0].split(",")
    tracks = TrackSet.load(tmp_path / "tracks.json")
    track = tracks.tracks[1]
    assert int(first[0]) == track.frames[0] + 1 and int(first[1]) == 1  # MOTChallenge frames count from 1
    mot = read_mot(tmp_path / "tracks.txt", tracks.width, tracks.height, tracks.fps, tracks.num_frames)
    assert mot.tracks[1].frames == track.frames
    assert np.allclose(mot.tracks[1].boxes, track.boxes, atol=0.01)
