"""Annotation IO: HCSTVG-v2/v1, VidSTG and query lists into STVGSample; the HCSTVG-v2 writer round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stvgr1_edge.dataset import (
    STVGSample,
    detect_format,
    load_annotations,
    load_hcstvg,
    write_hcstvg_v2,
)
from stvgr1_edge.errors import AnnotationError, BadInputError


def _v2_entry(**overrides) -> dict:
    entry = {
        "img_num": 100,
        "img_hw": [240, 320],
        "st_frame": 10,
        "ed_frame": 12,
        "st_time": 1.0,
        "ed_time": 1.2,
        "bbox": [[10, 20, 30, 40], [11, 20, 30, 40], [12.5, 20, 30, 40]],
        "English": "The man in red walks to the door.",
    }
    entry.update(overrides)
    return entry


def _write(tmp_path: Path, data, name: str = "annotations.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_hcstvg_v2_entry_becomes_a_zero_based_inclusive_sample_with_xyxy_boxes(tmp_path):
    [s] = load_annotations(_write(tmp_path, {"a.mp4": _v2_entry()}))
    assert (s.key, s.video, s.video_stem, s.dataset) == ("a.mp4", "a.mp4", "a", "hcstvg-v2")
    assert (s.num_frames, s.height, s.width, s.fps) == (100, 240, 320, None)
    assert (s.st_frame, s.ed_frame, s.st_time, s.ed_time) == (10, 12, 1.0, 1.2)
    # bbox[i] is frame st_frame + i; xywh (10, 20, 30, 40) -> xyxy (10, 20, 40, 60)
    assert dict(s.gt_boxes) == {
        10: (10.0, 20.0, 40.0, 60.0),
        11: (11.0, 20.0, 41.0, 60.0),
        12: (12.5, 20.0, 42.5, 60.0),
    }
    assert s.query == "The man in red walks to the door."
    assert s.has_ground_truth and s.target_id is None and s.gt_tracks is None
    # HC-STVG states no fps: clips are treated as 20 s, so 100 frames -> 5 fps
    assert s.frame_rate() == 5.0


def test_hcstvg_exclusive_ed_frame_is_accepted_and_the_inclusive_end_comes_from_the_box_count(tmp_path):
    [s] = load_annotations(_write(tmp_path, {"a.mp4": _v2_entry(ed_frame=13)}))
    assert (s.st_frame, s.ed_frame) == (10, 12)


def test_hcstvg_box_count_mismatch_is_one_line_naming_file_video_and_field(tmp_path):
    path = _write(tmp_path, {"x": _v2_entry(st_frame=0, ed_frame=4)})
    with pytest.raises(AnnotationError) as exc:
        load_annotations(path)
    assert (
        str(exc.value) == "annotations.json: video 'x': field 'bbox' has 3 boxes, expected 5 (ed_frame - st_frame + 1)"
    )


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"img_num": None}, "field 'img_num' is missing"),
        ({"img_num": "many"}, "field 'img_num' is 'many', expected an integer"),
        ({"st_frame": -1}, "field 'st_frame' is -1, expected >= 0"),
        ({"bbox": []}, "field 'bbox' is empty"),
        ({"bbox": [[1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4]]}, "field 'bbox' entry 0 is [1, 2, 3], expected [x, y, w, h]"),
        ({"img_num": 12}, "field 'bbox' runs to frame 12"),
        ({"img_hw": [240]}, "field 'img_hw' is [240], expected [height, width]"),
        ({"English": None}, "field 'English' is missing or not text"),
        ({"st_time": 2.0}, "field 'ed_time' is 1.2, before st_time 2.0"),
        ({"gt_tracks": {"fps": 5}}, "field 'gt_tracks'"),
    ],
)
def test_malformed_hcstvg_fields_raise_annotation_error_naming_the_field(tmp_path, overrides, fragment):
    with pytest.raises(AnnotationError) as exc:
        load_annotations(_write(tmp_path, {"vid.mp4": _v2_entry(**overrides)}))
    msg = str(exc.value)
    assert msg.startswith("annotations.json: video 'vid.mp4'") and fragment in msg and "\n" not in msg


def test_target_id_must_name_a_gt_track(tmp_path):
    tracks = {
        "fps": 5.0,
        "width": 320,
        "height": 240,
        "num_frames": 100,
        "tracks": {"1": {"frames": [10], "boxes": [[0, 0, 1, 1]]}},
    }
    with pytest.raises(AnnotationError, match="field 'target_id' is 7, which is not a track"):
        load_annotations(_write(tmp_path, {"v": _v2_entry(gt_tracks=tracks, target_id=7)}))


def test_hcstvg_v1_st_frame_counts_from_one_and_caption_width_height_are_read(tmp_path):
    v1 = {
        "img_num": 50,
        "width": 320,
        "height": 240,
        "st_frame": 11,
        "st_time": 2.0,
        "ed_time": 2.4,
        "bbox": [[0, 0, 10, 10], [1, 1, 10, 10]],
        "caption": "A woman sits down.",
    }
    data = {"v1.mp4": v1}
    assert detect_format(data) == "hcstvg-v1"
    [s] = load_annotations(_write(tmp_path, data))
    assert (s.dataset, s.query, s.height, s.width) == ("hcstvg-v1", "A woman sits down.", 240, 320)
    assert (s.st_frame, s.ed_frame) == (10, 11)  # 1-based 11 -> 0-based 10; two boxes
    assert dict(s.gt_boxes) == {10: (0.0, 0.0, 10.0, 10.0), 11: (1.0, 1.0, 11.0, 11.0)}
    # the default can be overridden when a v1 file is known to count from 0
    [s0] = load_hcstvg(data, version="hcstvg-v1", first_frame=0)
    assert s0.st_frame == 11


def test_missing_times_are_frame_over_fps(tmp_path):
    entry = _v2_entry(fps=10.0)
    del entry["st_time"], entry["ed_time"]
    [s] = load_annotations(_write(tmp_path, {"a.mp4": entry}))
    assert (s.st_time, s.ed_time, s.frame_rate()) == (1.0, 1.2, 10.0)


def _vidstg_entry() -> dict:
    def box(x):
        return {"xmin": x, "ymin": 0, "xmax": x + 10, "ymax": 20}

    return {
        "vid": "2401075277",
        "frame_count": 6,
        "fps": 30.0,
        "width": 640,
        "height": 360,
        "used_segment": {"begin_fid": 0, "end_fid": 6},
        "temporal_gt": {"begin_fid": 2, "end_fid": 5},  # exclusive end: GT frames 2, 3, 4
        "subject/objects": [{"tid": 0, "category": "adult"}, {"tid": 1, "category": "dog"}],
        "trajectories": [[{"tid": 0, "bbox": box(f)}, {"tid": 1, "bbox": box(100 + f)}] for f in range(6)],
        "captions": [{"type": "declarative", "target_id": 0, "description": "an adult walks a dog."}],
        "questions": [{"type": "interrogative", "target_id": 1, "description": "what is beside the adult?"}],
    }


def test_vidstg_entry_gives_one_sample_per_sentence_with_the_target_trajectory(tmp_path):
    path = _write(tmp_path, [_vidstg_entry()], "test_annotations.json")
    caption, question = load_annotations(path)
    assert (caption.key, caption.video, caption.dataset) == ("2401075277#caption0", "2401075277", "vidstg")
    assert (question.key, question.target_id, question.query) == (
        "2401075277#question0",
        1,
        "what is beside the adult?",
    )
    assert (caption.st_frame, caption.ed_frame, caption.fps, caption.num_frames) == (2, 4, 30.0, 6)
    assert (caption.st_time, caption.ed_time) == (2 / 30.0, 4 / 30.0)
    assert dict(caption.gt_boxes) == {2: (2.0, 0.0, 12.0, 20.0), 3: (3.0, 0.0, 13.0, 20.0), 4: (4.0, 0.0, 14.0, 20.0)}
    assert question.gt_boxes[3] == (103.0, 0.0, 113.0, 20.0)


def test_vidstg_trajectories_covering_only_the_used_segment_are_offset(tmp_path):
    entry = _vidstg_entry()
    entry["frame_count"] = 20
    entry["used_segment"] = {"begin_fid": 10, "end_fid": 16}
    entry["temporal_gt"] = {"begin_fid": 12, "end_fid": 14}
    caption, _ = load_annotations(_write(tmp_path, [entry]))
    # trajectories[i] is frame 10 + i, so frame 12 has the box drawn for i = 2
    assert dict(caption.gt_boxes) == {12: (2.0, 0.0, 12.0, 20.0), 13: (3.0, 0.0, 13.0, 20.0)}


def test_vidstg_sentence_with_unknown_target_is_an_error(tmp_path):
    entry = _vidstg_entry()
    entry["captions"][0]["target_id"] = 9
    with pytest.raises(AnnotationError, match="video '2401075277': field 'captions' entry 0 has target_id 9"):
        load_annotations(_write(tmp_path, [entry]))


def test_real_hcstvg_v2_query_list_loads_as_query_only_samples(fixtures):
    path = fixtures / "hcstvg_v2_queries_sample.json"
    samples = load_annotations(path)
    assert detect_format(json.loads(path.read_text(encoding="utf-8"))) == "queries"
    assert len(samples) == 85
    first = samples[0]
    assert (first.key, first.video_stem, first.dataset) == ("3_5MxjqHfkWFI.mkv", "3_5MxjqHfkWFI", "queries")
    assert first.query == "The man in blue clothes stands up and raises his hand."
    assert not first.has_ground_truth and all(s.query.strip() for s in samples)
    # every sentence is kept verbatim, in file order (normalisation is the prompt's job)
    assert [(s.key, s.query) for s in samples] == list(json.loads(path.read_text(encoding="utf-8")).items())
    assert all(s.video_stem == s.key.rsplit(".", 1)[0] and not s.has_ground_truth for s in samples)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{}", "has no videos"),
        ("[1, 2]", "unrecognised annotation format"),
        ('{"a": 3}', "unrecognised annotation format"),
        ("{not json", "not valid JSON"),
    ],
)
def test_unreadable_or_unrecognised_files_are_one_line_errors(tmp_path, content, fragment):
    path = tmp_path / "gt.json"
    path.write_text(content)
    with pytest.raises(BadInputError) as exc:
        load_annotations(path)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def _full_sample(tmp_path: Path) -> STVGSample:
    video = tmp_path / "videos" / "clip_000.mp4"
    video.parent.mkdir(exist_ok=True)
    video.write_bytes(b"")
    tracks = {
        "fps": 10.0,
        "width": 64,
        "height": 48,
        "num_frames": 20,
        "tracks": {
            "1": {
                "frames": [3, 4],
                "boxes": [[1.0, 2.0, 5.0, 6.0], [1.5, 2.0, 5.5, 6.0]],
                "masks": [None, None],
                "scores": [1.0, 1.0],
                "label": "square",
            },
            "2": {
                "frames": [0],
                "boxes": [[10.0, 10.0, 20.0, 20.0]],
                "masks": [None],
                "scores": [1.0],
                "label": "disc",
            },
        },
    }
    return STVGSample(
        key="clip_000.mp4",
        video="clip_000.mp4",
        query="the red square moves right",
        video_path=str(video.resolve()),
        num_frames=20,
        height=48,
        width=64,
        fps=10.0,
        st_frame=3,
        ed_frame=4,
        st_time=0.3,
        ed_time=0.4,
        gt_boxes={3: (1.0, 2.0, 5.0, 6.0), 4: (1.5, 2.0, 5.5, 6.0)},
        target_id=1,
        gt_tracks=tracks,
        extras={"Chinese": "红色方块向右移动"},
    )


def test_write_hcstvg_v2_round_trips_every_field(tmp_path):
    sample = _full_sample(tmp_path)
    second = STVGSample(
        key="b.mkv",
        video="b.mkv",
        query="q",
        num_frames=40,
        height=10,
        width=20,
        st_frame=0,
        ed_frame=1,
        st_time=0.0,
        ed_time=0.5,
        gt_boxes={0: (0.0, 0.0, 1.0, 1.0), 1: (0.25, 0.5, 2.0, 3.0)},
    )
    path = write_hcstvg_v2([sample, second], tmp_path / "annotations.json")
    raw = json.loads(path.read_text())
    assert raw["clip_000.mp4"]["bbox"] == [[1.0, 2.0, 4.0, 4.0], [1.5, 2.0, 4.0, 4.0]]  # xyxy -> xywh
    assert raw["clip_000.mp4"]["video_path"] == "videos/clip_000.mp4"  # relative to the file
    assert raw["b.mkv"]["img_hw"] == [10, 20] and "fps" not in raw["b.mkv"]
    assert load_annotations(path) == [sample, second]


def test_video_path_is_found_under_videos_next_to_the_annotations(tmp_path):
    sample = _full_sample(tmp_path)
    entry = _v2_entry(st_frame=3, ed_frame=4, bbox=[[1, 2, 4, 4], [1.5, 2, 4, 4]])
    [loaded] = load_annotations(_write(tmp_path, {"clip_000.mp4": entry}))
    assert loaded.video_path == sample.video_path


def test_writer_refuses_samples_without_ground_truth_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text('{"old": true}')
    query_only = STVGSample(key="a.mp4", video="a.mp4", query="q", dataset="queries")
    with pytest.raises(AnnotationError, match="sample 'a.mp4' has no ground truth"):
        write_hcstvg_v2([query_only], path)
    assert path.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["annotations.json"]  # no temporary left behind
