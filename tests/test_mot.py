"""MOTChallenge text output of a TrackSet (stvgr1_edge/mot.py)."""

from __future__ import annotations

import pytest

from stvgr1_edge.errors import AnnotationError, BadInputError
from stvgr1_edge.mot import read_mot, write_mot
from stvgr1_edge.tracks import TrackSet


def _tracks() -> TrackSet:
    tracks = TrackSet(width=320, height=240, fps=10.0, num_frames=6)
    # added out of ID order, with a gap in track 7: the file must still be sorted by frame, then ID
    tracks.add(7, 0, [10.123, 20.456, 50.789, 80.0], score=0.9)
    tracks.add(7, 3, [12.0, 21.0, 52.5, 81.25], score=0.8)
    tracks.add(2, 0, [100.0, 100.0, 140.0, 190.0])
    tracks.add(2, 1, [101.5, 100.25, 141.5, 190.75])
    tracks.add(2, 5, [110.0, 101.0, 150.0, 191.0], score=0.5)
    return tracks


def test_round_trip_keeps_ids_frames_and_boxes_to_two_decimals(tmp_path):
    original = _tracks()
    path = write_mot(original, tmp_path / "tracks.txt")
    loaded = read_mot(path, width=320, height=240, fps=10.0, num_frames=6)

    assert loaded.ids == [2, 7]
    assert (loaded.width, loaded.height, loaded.fps, loaded.num_frames) == (320, 240, 10.0, 6)
    for track in original:
        other = loaded.tracks[track.track_id]
        assert other.frames == track.frames
        for box, box_back in zip(track.boxes, other.boxes):
            assert box_back == pytest.approx([round(v, 2) for v in box], abs=0.011)
        assert other.scores == pytest.approx(track.scores, abs=1e-4)


def test_text_has_1_based_frames_sorted_by_frame_then_id_and_ltwh_boxes(tmp_path):
    path = write_mot(_tracks(), tmp_path / "tracks.txt")
    lines = path.read_text().splitlines()
    assert lines == [
        "1,2,100.00,100.00,40.00,90.00,1.0000,-1,-1,-1",
        "1,7,10.12,20.46,40.67,59.54,0.9000,-1,-1,-1",
        "2,2,101.50,100.25,40.00,90.50,1.0000,-1,-1,-1",
        "4,7,12.00,21.00,40.50,60.25,0.8000,-1,-1,-1",
        "6,2,110.00,101.00,40.00,90.00,0.5000,-1,-1,-1",
    ]


def test_hand_written_mot_file_parses_to_the_expected_xyxy_boxes(tmp_path):
    path = tmp_path / "gt.txt"
    # MOT16-style: 9 columns, integer-valued floats, a -1 confidence
    path.write_text("1,1,10,20,30,40,1,-1,-1\n2,1,12,22,30,40,-1,-1,-1\n2,3.0,100.5,50,20.5,10,0.7,-1,-1\n")
    tracks = read_mot(path, width=200, height=100, fps=25.0, num_frames=2)
    assert tracks.ids == [1, 3]
    assert tracks.tracks[1].frames == [0, 1]
    assert tracks.tracks[1].boxes == [[10.0, 20.0, 40.0, 60.0], [12.0, 22.0, 42.0, 62.0]]
    assert tracks.tracks[1].scores == [1.0, 1.0]
    assert tracks.tracks[3].frames == [1]
    assert tracks.tracks[3].boxes == [[100.5, 50.0, 121.0, 60.0]]
    assert tracks.tracks[3].scores == [0.7]


@pytest.mark.parametrize(
    "text, message",
    [
        ("0,1,10,20,30,40,1,-1,-1,-1\n", "1-based"),
        ("1,1,10,20\n", "expected frame,id"),
        ("1,a,10,20,30,40\n", "not numbers"),
        ("1,1,10,20,30,40\n1,1,11,21,30,40\n", "two boxes at frame 1"),
        ("1,1,10,20,-3,40\n", "negative"),
    ],
)
def test_malformed_mot_lines_are_one_line_errors_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message):
        read_mot(path, width=100, height=100, fps=10.0, num_frames=5)


def test_a_failed_write_leaves_the_previous_file_untouched(tmp_path):
    path = tmp_path / "tracks.txt"
    path.write_text("previous\n")
    broken = TrackSet(width=10, height=10, fps=1.0, num_frames=2)
    broken.add(1, 0, [0.0, 0.0, float("nan"), 5.0])
    with pytest.raises(BadInputError, match="not a number"):
        write_mot(broken, path)
    assert path.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tracks.txt"]  # no temporary file left behind


def test_py_motmetrics_reads_our_file_as_mot15_2d(tmp_path):
    mm = pytest.importorskip("motmetrics")
    path = write_mot(_tracks(), tmp_path / "tracks.txt")
    frame = mm.io.loadtxt(str(path), fmt="mot15-2D")
    assert len(frame) == 5
    assert sorted(set(frame.index.get_level_values("Id").astype(int))) == [2, 7]
    assert sorted(set(frame.index.get_level_values("FrameId").astype(int))) == [1, 2, 4, 6]
    row = frame.loc[(4, 7)]
    # its loader moves MOT's 1-based pixel origin to 0 (X, Y minus 1) for GT and results alike; IoU is unchanged
    assert [row["X"] + 1, row["Y"] + 1, row["Width"], row["Height"]] == pytest.approx([12.0, 21.0, 40.5, 60.25])
