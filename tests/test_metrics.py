"""STVG metrics with hand-computed values, in both conventions, and `stvg-edge eval` end to end.

Unless a test says otherwise: 10 fps, 30 native frames, GT frames 5..14 (0.5 s .. 1.4 s) with the box
(0, 0, 10, 10) on every GT frame, and a predicted tube that copies the GT box wherever it has one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stvgr1_edge.cli import main
from stvgr1_edge.dataset import STVGSample, write_hcstvg_v2
from stvgr1_edge.errors import AnnotationError, BadInputError
from stvgr1_edge.masks import mask_to_rle
from stvgr1_edge.metrics import (
    Prediction,
    boundary_f_measure,
    evaluate,
    evaluate_files,
    frames_in_time_range,
    region_similarity,
    score_sample,
    share_above,
    temporal_iou_frames,
    temporal_iou_seconds,
    time_to_frame_floor,
    viou,
)
from stvgr1_edge.tracks import TrackSet

BOX = (0.0, 0.0, 10.0, 10.0)


def _sample(st=5, ed=14, fps=10.0, num_frames=30, key="v.mp4", target_id=None, gt_tracks=None) -> STVGSample:
    return STVGSample(
        key=key,
        video=key,
        query="someone does something",
        num_frames=num_frames,
        height=48,
        width=64,
        fps=fps,
        st_frame=st,
        ed_frame=ed,
        st_time=st / fps,
        ed_time=ed / fps,
        gt_boxes={f: BOX for f in range(st, ed + 1)},
        target_id=target_id,
        gt_tracks=gt_tracks,
    )


def _pred(start_s, end_s, tube_frames=range(0, 30), ids=(1,)) -> Prediction:
    return Prediction(ids=tuple(ids), start_s=start_s, end_s=end_s, tube={f: BOX for f in tube_frames})


def _both(sample, pred):
    return score_sample(sample, pred, "tubedetr"), score_sample(sample, pred, "stvg-r1")


# --- pure pieces ---------------------------------------------------------------------------------------
def test_temporal_iou_in_seconds_and_in_frames():
    assert temporal_iou_seconds((1.0, 3.0), (2.0, 4.0)) == pytest.approx(1 / 3)  # inter 1 s, union 3 s
    assert temporal_iou_seconds((0.0, 1.0), (2.0, 3.0)) == 0.0
    assert temporal_iou_seconds((1.0, 1.0), (1.0, 1.0)) == 1.0  # identical instants
    assert temporal_iou_frames(range(10, 20), range(5, 15)) == 5 / 15  # 10..14 of 5..19
    assert temporal_iou_frames(range(20, 25), range(5, 15)) == 0.0


def test_predicted_frames_are_those_whose_time_lies_in_the_closed_range():
    assert frames_in_time_range(1.0, 1.9, 10.0, 30) == range(10, 20)
    assert frames_in_time_range(0.95, 1.0, 10.0, 30) == range(10, 11)  # 0.95 s falls between frames 9 and 10
    assert frames_in_time_range(0.3, 0.7, 10.0, 30) == range(3, 8)  # 0.3 * 10 = 3.0000000000000004: still frame 3
    assert frames_in_time_range(2.5, 9.0, 10.0, 30) == range(25, 30)  # clipped to the video
    assert len(frames_in_time_range(1.5, 1.0, 10.0, 30)) == 0  # reversed range: no frames


def test_reference_floor_of_seconds_times_fps_ignores_float_noise():
    assert 0.29 * 100 == 28.999999999999996
    assert time_to_frame_floor(0.29, 100.0) == 29
    assert time_to_frame_floor(0.299, 100.0) == 29


def test_share_above_is_strict_or_inclusive():
    assert share_above([0.3, 0.5, 0.7], 0.5, strict=True) == 1 / 3
    assert share_above([0.3, 0.5, 0.7], 0.5, strict=False) == 2 / 3
    assert share_above([], 0.5, strict=True) == 0.0


def test_viou_counts_missing_predicted_boxes_as_zero_and_divides_by_the_union():
    gt = {f: BOX for f in range(5, 15)}
    tube = {5: BOX, 6: (0.0, 0.0, 10.0, 5.0)}  # IoU 1 and 0.5; frames 7..9 have no box
    # S_i = 5..9 (5 frames), S_u = 0..14 (15 frames): (1 + 0.5 + 0 + 0 + 0) / 15
    assert viou(tube, gt, range(0, 10), range(5, 15)) == pytest.approx(1.5 / 15)


# --- the hand-made cases, both conventions -------------------------------------------------------------
def test_partial_temporal_overlap():
    tub, r1 = _both(_sample(), _pred(1.0, 1.9))
    # tubedetr: predicted frames 10..19, GT 5..14 -> S_i = 10..14 (5), S_u = 5..19 (15)
    assert tub.tiou == pytest.approx(5 / 15) and tub.viou == pytest.approx(5 / 15)
    # stvg-r1: seconds [1.0, 1.9] vs [0.5, 1.4] -> inter 0.4 s, union 1.4 s -> 2/7 (differs from 1/3);
    # frames 10..19 vs 5..14: overlap 10..14 = 5 frames, union 19 - 5 + 1 = 15 -> 1/3
    assert r1.tiou == pytest.approx(0.4 / 1.4) and r1.viou == pytest.approx(5 / 15)


def test_no_temporal_overlap_scores_zero():
    for score in _both(_sample(), _pred(2.0, 2.5)):
        assert (score.tiou, score.viou) == (0.0, 0.0)


def test_single_frame_overlap():
    tub, r1 = _both(_sample(), _pred(1.4, 2.0))
    # tubedetr: predicted 14..20, GT 5..14 -> S_i = {14}, S_u = 5..20 (16 frames) -> 1/16 for both
    assert tub.tiou == pytest.approx(1 / 16) and tub.viou == pytest.approx(1 / 16)
    # stvg-r1: the intervals touch at 1.4 s -> tIoU 0; frames overlap only at 14 -> the script's
    # `overlap_start >= overlap_end` check scores vIoU 0
    assert (r1.tiou, r1.viou) == (0.0, 0.0)


def test_predicted_range_containing_the_gt():
    tub, r1 = _both(_sample(), _pred(0.0, 2.9))
    # tubedetr: predicted 0..29 (30 frames) ⊇ GT 5..14 (10) -> 10/30 for tIoU and vIoU
    assert tub.tiou == pytest.approx(10 / 30) and tub.viou == pytest.approx(10 / 30)
    # stvg-r1: 0.9 s of GT inside 2.9 s of prediction -> 9/29; vIoU 10 frames / (29 - 0 + 1) = 1/3
    assert r1.tiou == pytest.approx(0.9 / 2.9) and r1.viou == pytest.approx(10 / 30)


def test_union_uses_the_later_end_as_in_tubedetrs_fix_of_issue_3():
    # GT frames 0..9, prediction 0.5 s .. 1.4 s -> frames 5..14, perfect boxes on the overlap 5..9.
    sample = _sample(st=0, ed=9, num_frames=20)
    score = score_sample(sample, _pred(0.5, 1.4), "tubedetr")
    # Fixed:  S_u = frames min_start..max_end = 0..14 = 15 frames -> vIoU = 5 / 15 = 0.333...
    # Buggy (max_end = min(10, 15) = 10 with TubeDETR's exclusive ends): union = frames 0..9 = 10
    #         -> vIoU = 5 / 10 = 0.5. We must give the fixed number.
    assert score.viou == pytest.approx(1 / 3)
    assert score.viou != pytest.approx(0.5)


def test_tube_missing_some_frames():
    # Same range as the GT (tIoU 1); tube: frames 5..11 exact, frame 12 half the box (IoU 0.5), 13 and 14 absent.
    pred = _pred(0.5, 1.4, tube_frames=range(5, 12))
    pred.tube[12] = (0.0, 0.0, 10.0, 5.0)
    for score in _both(_sample(), pred):
        assert score.tiou == pytest.approx(1.0)
        assert score.viou == pytest.approx((7 * 1.0 + 0.5 + 0 + 0) / 10)  # 0.75


def test_thresholds_at_exactly_r_are_strict_for_tubedetr_and_inclusive_for_stvg_r1():
    # vIoU exactly 0.5: GT 0..9, same range predicted, exact boxes on frames 0..4 only -> 5/10.
    vsample = _sample(st=0, ed=9, num_frames=20, key="v.mp4")
    # tIoU exactly 0.5 in frames (tubedetr): predicted 0..4 of GT 0..9 -> 5/10.
    # tIoU exactly 0.5 in seconds (stvg-r1): GT [0, 1.0], predicted [0, 0.5] -> 0.5 / 1.0.
    tsample = _sample(st=0, ed=10, num_frames=20, key="t.mp4")
    preds = {"v.mp4": {"ids": [1], "start_s": 0.0, "end_s": 0.9, "tube": {str(f): list(BOX) for f in range(5)}}}
    tub = evaluate(preds, [vsample], "tubedetr", thresholds=(0.5,))
    r1 = evaluate(preds, [vsample], "stvg-r1", thresholds=(0.5,))
    assert tub["metrics"]["m_vIoU"] == r1["metrics"]["m_vIoU"] == 0.5
    assert (tub["metrics"]["vIoU@0.5"], r1["metrics"]["vIoU@0.5"]) == (0.0, 1.0)

    tub = evaluate(
        {"t.mp4": {"start_s": 0.0, "end_s": 0.4}},
        [_sample(st=0, ed=9, num_frames=20, key="t.mp4")],
        "tubedetr",
        thresholds=(0.5,),
    )
    assert tub["metrics"]["m_tIoU"] == 0.5 and tub["metrics"]["tIoU@0.5"] == 0.0
    r1 = evaluate({"t.mp4": {"start_s": 0.0, "end_s": 0.5}}, [tsample], "stvg-r1", thresholds=(0.5,))
    assert r1["metrics"]["m_tIoU"] == 0.5 and r1["metrics"]["tIoU@0.5"] == 1.0


def _tracks(target_track: int, other_track: int, on_gt_frames: bool = True) -> TrackSet:
    """30 frames: ``target_track`` on the GT box (frames 5..14) when ``on_gt_frames``, ``other_track`` elsewhere."""
    tracks = TrackSet(64, 48, 10.0, 30)
    for f in range(30):
        tracks.add(target_track, f, BOX if on_gt_frames else (40, 30, 60, 45))
        tracks.add(other_track, f, (20, 20, 35, 40))
    return tracks


@pytest.mark.parametrize("target_track", [1, 3, 42])
def test_an_answered_id_is_right_when_it_names_the_gt_targets_track_whatever_its_number(target_track):
    """The annotation's own object ID (3 here) is another numbering than the tracker's and plays no part."""
    sample = _sample(target_id=3)
    other = 7 if target_track != 7 else 8
    tracks = _tracks(target_track, other)
    right = score_sample(sample, replace(_pred(0.5, 1.4, ids=(target_track,)), tracks=tracks))
    assert (right.id_correct, right.id_status, right.gt_track_id) == (True, "assessed", target_track)
    wrong = score_sample(sample, replace(_pred(0.5, 1.4, ids=(other,)), tracks=tracks))
    assert (wrong.id_correct, wrong.gt_track_id) == (False, target_track)
    both = score_sample(sample, replace(_pred(0.5, 1.4, ids=(target_track, other)), tracks=tracks))
    assert both.id_correct is False  # two objects named for one target
    unparsed = score_sample(sample, Prediction(tracks=tracks))
    assert unparsed.id_correct is False


def test_an_id_is_not_assessable_without_tracks_or_when_the_tracker_lost_the_target():
    sample = _sample(target_id=1)
    no_tracks = score_sample(sample, _pred(0.5, 1.4, ids=(1,)))
    assert (no_tracks.id_correct, no_tracks.id_status) == (None, "no_tracks")
    lost = score_sample(sample, replace(_pred(0.5, 1.4, ids=(1,)), tracks=_tracks(1, 2, on_gt_frames=False)))
    assert (lost.id_correct, lost.id_status) == (None, "target_no_match")
    samples = [_sample(key=f"{k}.mp4") for k in "abcde"]
    tracks = {k: _tracks(4, 9) for k in ("a.mp4", "b.mp4", "c.mp4")}
    tracks["c.mp4"] = _tracks(4, 9, on_gt_frames=False)
    preds = {
        "a.mp4": {"ids": [4], "start_s": 0.5, "end_s": 1.4},  # right
        "b.mp4": {"ids": [9], "start_s": 0.5, "end_s": 1.4},  # another object
        "c.mp4": {"ids": [4], "start_s": 0.5, "end_s": 1.4},  # the tracker never followed the target
        "d.mp4": {"ids": [4], "start_s": 0.5, "end_s": 1.4},  # no tracks given
    }  # e.mp4: no prediction at all -> wrong
    out = evaluate(preds, samples, per_video=True, tracks=tracks)
    assert out["metrics"]["id_accuracy"] == pytest.approx(1 / 3)  # a right; b and e wrong; c and d left out
    assert [out["per_video"][k]["id_status"] for k in sorted(out["per_video"])] == [
        "assessed",
        "assessed",
        "target_no_match",
        "no_tracks",
        "missing",
    ]
    assert out["counts"]["id_assessed"] == 3
    assert out["counts"]["id_not_assessable"] == {"no_tracks": 1, "target_no_match": 1}
    # with no tracks anywhere the accuracy is not a number (never scored across ID spaces)
    assert evaluate({k: v for k, v in preds.items()}, samples)["metrics"]["id_accuracy"] is None


def test_tracks_of_another_video_are_refused_with_one_line():
    small = TrackSet(32, 24, 10.0, 30)
    small.add(1, 5, BOX)
    with pytest.raises(AnnotationError, match="tracks are for a 32x24 video"):
        score_sample(_sample(), replace(_pred(0.5, 1.4), tracks=small))


# --- J & F -----------------------------------------------------------------------------------------------
def _square(x0, y0=4, size=8, shape=(20, 20)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


def test_perfect_mask_gives_j_and_f_of_one():
    gt = _square(4)
    assert region_similarity(gt, gt) == 1.0 and boundary_f_measure(gt, gt) == 1.0
    empty = np.zeros((20, 20), bool)
    assert region_similarity(empty, empty) == 1.0 and boundary_f_measure(empty, empty) == 1.0
    assert region_similarity(empty, gt) == 0.0 and boundary_f_measure(empty, gt) == 0.0


def test_shifted_square_j_and_f_by_hand():
    gt = _square(4)  # 8x8 square, rows and columns 4..11, in a 20x20 image
    # Tolerance: ceil(0.008 * sqrt(20^2 + 20^2)) = ceil(0.226) = 1 pixel.
    # 1-pixel shift right: overlap 7x8 = 56, union 64 + 64 - 56 = 72 -> J = 7/9; every boundary pixel
    # of either square is within 1 px of the other's boundary -> P = R = 1 -> F = 1.
    assert region_similarity(_square(5), gt) == pytest.approx(7 / 9)
    assert boundary_f_measure(_square(5), gt) == pytest.approx(1.0)
    # 3-pixel shift right (columns 7..14): overlap 5x8 = 40, union 88 -> J = 5/11.
    # The predicted boundary has 28 pixels; within 1 px of the GT boundary are: top row columns 7..12
    # (6), bottom row 7..12 (6), left column rows 5 and 10 (2), right column none -> 14/28 = 0.5 = P;
    # by symmetry R = 0.5 -> F = 0.5.
    assert region_similarity(_square(7), gt) == pytest.approx(5 / 11)
    assert boundary_f_measure(_square(7), gt) == pytest.approx(0.5)


def test_j_and_f_are_averaged_over_gt_frames_from_the_target_gt_track():
    gt_mask = _square(4)
    tracks = {
        "fps": 10.0,
        "width": 20,
        "height": 20,
        "num_frames": 30,
        "tracks": {"1": {"frames": [5, 6], "boxes": [[4, 4, 12, 12]] * 2, "masks": [mask_to_rle(gt_mask)] * 2}},
    }
    sample = _sample(st=5, ed=6, target_id=1, gt_tracks=tracks)
    preds = {
        "v.mp4": {
            "ids": [1],
            "start_s": 0.5,
            "end_s": 0.6,
            "masks": {"5": mask_to_rle(gt_mask), "6": mask_to_rle(_square(7))},
        }
    }
    m = evaluate(preds, [sample])["metrics"]
    assert m["J"] == pytest.approx((1 + 5 / 11) / 2)
    assert m["F"] == pytest.approx((1 + 0.5) / 2)
    assert m["J&F"] == pytest.approx(((1 + 5 / 11) / 2 + 0.75) / 2)
    # without masks in the predictions J&F does not apply
    assert evaluate({"v.mp4": {"ids": [1], "start_s": 0.5, "end_s": 0.6}}, [sample])["metrics"]["J&F"] is None


# --- evaluate(): keys, missing, unknown, formats ---------------------------------------------------------
def test_missing_predictions_score_zero_and_are_listed_unknown_keys_reported():
    samples = [_sample(key="a.mp4"), _sample(key="b.mp4")]
    preds = {
        "a": {
            "ids": [1],
            "start_s": 0.5,
            "end_s": 1.4,
            "tube": {str(f): list(BOX) for f in range(5, 15)},
        },  # stem of a.mp4
        "zzz.mp4": {"ids": [1], "start_s": 0.0, "end_s": 1.0},
    }
    out = evaluate(preds, samples, "tubedetr")
    assert out["convention"] == "tubedetr" and "strict" in out["convention_description"]
    assert out["missing"] == ["b.mp4"] and out["unknown"] == ["zzz.mp4"]
    assert out["counts"] == {
        "samples": 2,
        "predicted": 1,
        "missing": 1,
        "unknown": 1,
        "unparsed_time": 0,
        "with_tube": 1,
        "failed": 0,
        "id_assessed": 0,
        "id_not_assessable": {"no_tracks": 1},
        "with_gt_masks": 0,
    }
    assert out["metrics"]["m_tIoU"] == 0.5 and out["metrics"]["m_vIoU"] == 0.5  # (1 + 0) / 2
    assert out["metrics"]["vIoU@0.3"] == 0.5 and out["metrics"]["tIoU@0.7"] == 0.5


def test_temporal_only_predictions_report_tiou_at_r_and_no_viou():
    preds = {"v.mp4": {"ids": [1], "start_s": 1.0, "end_s": 1.9}}  # tIoU 1/3 (tubedetr), no tube
    m = evaluate(preds, [_sample()], "tubedetr")["metrics"]
    assert m["m_tIoU"] == pytest.approx(1 / 3)
    assert (m["tIoU@0.3"], m["tIoU@0.5"], m["tIoU@0.7"]) == (1.0, 0.0, 0.0)
    assert m["m_vIoU"] is None and m["vIoU@0.5"] is None


def test_unparsed_time_counts_zero():
    out = evaluate({"v.mp4": {"ids": [], "start_s": None, "end_s": None, "tube": {}}}, [_sample()])
    assert out["metrics"]["m_tIoU"] == 0.0 and out["counts"]["unparsed_time"] == 1


def test_run_result_json_is_matched_by_video_stem_and_query():
    s1 = _sample(key="clip_1.mp4")
    s2 = STVGSample(**{**s1.__dict__, "key": "clip_2.mp4", "video": "clip_2.mp4", "query": "another event"})
    run = {
        "video": "/somewhere/clip_2.mp4",
        "fps": 10.0,
        "num_frames": 30,
        "queries": [
            {
                "query": "Another event",
                "answer_text": "...",
                "ids": [1],
                "start_s": 0.5,
                "end_s": 1.4,
                "tube": {str(f): list(BOX) for f in range(5, 15)},
                "parse_ok": True,
                "warnings": [],
            }
        ],
    }
    out = evaluate(run, [s1, s2], per_video=True)
    assert out["missing"] == ["clip_1.mp4"]
    assert out["per_video"]["clip_2.mp4"]["tIoU"] == 1.0 and out["per_video"]["clip_2.mp4"]["vIoU"] == 1.0


def test_invalid_convention_and_malformed_predictions_are_bad_input():
    with pytest.raises(BadInputError, match="unknown convention 'coco'"):
        evaluate({}, [_sample()], "coco")
    with pytest.raises(AnnotationError, match="video 'v.mp4': field 'start_s' is 'soon'"):
        evaluate({"v.mp4": {"start_s": "soon", "end_s": 1.0}}, [_sample()])
    with pytest.raises(AnnotationError, match="field 'tube' frame 3 is"):
        evaluate({"v.mp4": {"start_s": 0.0, "end_s": 1.0, "tube": {"3": [1, 2]}}}, [_sample()])
    with pytest.raises(AnnotationError, match="a query list cannot be scored"):
        evaluate({}, [STVGSample(key="a", video="a", query="q", dataset="queries")])


# --- `stvg-edge eval` end to end -------------------------------------------------------------------------
def _gt_file(tmp_path: Path) -> Path:
    """Two videos written by hand in HCSTVG-v2 form (not by the synthetic generator)."""
    gt = {
        "clip_a.mp4": {
            "img_num": 40,
            "img_hw": [48, 64],
            "fps": 10.0,
            "st_frame": 7,
            "ed_frame": 11,
            "st_time": 0.7,
            "ed_time": 1.1,
            "target_id": 2,
            "English": "the red square jumps",
            "bbox": [[10 + i, 5, 8, 9] for i in range(5)],
        },
        "clip_b.mp4": {
            "img_num": 25,
            "img_hw": [48, 64],
            "fps": 5.0,
            "st_frame": 0,
            "ed_frame": 3,
            "st_time": 0.0,
            "ed_time": 0.6,
            "target_id": 1,
            "English": "the blue disc stops",
            "bbox": [[1.5, 2.5, 20, 10]] * 4,
        },
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def _predictions_from_gt(gt_path: Path) -> dict:
    gt = json.loads(gt_path.read_text())
    return {
        key: {
            "ids": [e["target_id"]],
            "start_s": e["st_time"],
            "end_s": e["ed_time"],
            "tube": {str(e["st_frame"] + i): [x, y, x + w, y + h] for i, (x, y, w, h) in enumerate(e["bbox"])},
        }
        for key, e in gt.items()
    }


@pytest.mark.parametrize("convention", ["tubedetr", "stvg-r1"])
def test_predictions_built_from_the_gt_score_one_through_the_cli(tmp_path, capsys, convention):
    gt = _gt_file(tmp_path)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(_predictions_from_gt(gt)))
    assert main(["eval", str(pred), str(gt), "--convention", convention, "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)["results"][convention]
    assert out["convention"] == convention
    m = out["metrics"]
    assert m["m_tIoU"] == 1.0 and m["m_vIoU"] == 1.0
    assert m["id_accuracy"] is None and out["counts"]["id_not_assessable"] == {"no_tracks": 2}  # no tracks given
    assert m["vIoU@0.7"] == 1.0 and m["tIoU@0.7"] == 1.0
    assert out["counts"]["samples"] == 2 and out["missing"] == [] and out["unknown"] == []


def test_cli_per_video_and_written_gt_round_trip(tmp_path, capsys):
    sample = _sample(key="x.mp4")
    gt = write_hcstvg_v2([sample], tmp_path / "gt.json")
    pred = tmp_path / "pred.json"
    pred.write_text(
        json.dumps(
            {"x.mp4": {"ids": [1], "start_s": 1.0, "end_s": 1.9, "tube": {str(f): list(BOX) for f in range(30)}}}
        )
    )
    assert main(["eval", str(pred), str(gt), "--per-video", "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)["results"]
    assert out["tubedetr"]["per_video"]["x.mp4"]["tIoU"] == pytest.approx(1 / 3)
    assert out["stvg-r1"]["per_video"]["x.mp4"]["tIoU"] == pytest.approx(0.4 / 1.4)
    report = evaluate_files(pred, gt, ["stvg-r1"])
    assert list(report["results"]) == ["stvg-r1"] and report["results"]["stvg-r1"]["metrics"][
        "m_tIoU"
    ] == pytest.approx(0.4 / 1.4)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    gt = _gt_file(tmp_path)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(_predictions_from_gt(gt)))
    assert main(["eval", str(tmp_path / "absent.json"), str(gt)]) == 2
    assert "absent.json" in _one_error_line(capsys)

    not_json = tmp_path / "notes.json"
    not_json.write_text("this is not JSON")
    assert main(["eval", str(not_json), str(gt)]) == 2
    assert "not valid JSON" in _one_error_line(capsys)

    bad_gt = tmp_path / "bad_gt.json"
    entry = json.loads(gt.read_text())
    entry["clip_a.mp4"]["bbox"] = entry["clip_a.mp4"]["bbox"][:3]
    bad_gt.write_text(json.dumps(entry))
    assert main(["eval", str(pred), str(bad_gt)]) == 2
    assert _one_error_line(capsys) == (
        "error: bad_gt.json: video 'clip_a.mp4': field 'bbox' has 3 boxes, expected 5 (ed_frame - st_frame + 1)"
    )

    assert main(["eval", str(pred), str(gt), "--convention", "coco"]) == 2
    assert _one_error_line(capsys) == "error: --convention 'coco' is not one of tubedetr, stvg-r1, both"
