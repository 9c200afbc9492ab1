"""Detectors: tiny random transformers models loaded from a folder, person mode, missing weights."""

from __future__ import annotations

import numpy as np
import pytest

from stvgr1_edge.errors import MissingWeightsError
from stvgr1_edge.tracking.base import Detections
from stvgr1_edge.tracking.detectors import load_detector

H, W = 48, 64


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def rt_detr_folder(tmp_path_factory):
    from stvgr1_edge.tracking.tiny_configs import save_tiny_rt_detr

    return save_tiny_rt_detr(tmp_path_factory.mktemp("rtdetr"))


def _bias_class(detector, name: str) -> None:
    """Make the tiny RT-DETR predict class ``name`` everywhere (its random weights decide nothing useful)."""
    import torch

    index = detector.model.config.label2id[name]
    heads = [detector.model.model.enc_score_head, *detector.model.model.decoder.class_embed]
    with torch.no_grad():
        for head in heads:
            head.weight.zero_()
            head.bias.fill_(-10.0)
            head.bias[index] = 10.0


def assert_valid(det: Detections, n_max: int) -> None:
    assert det.boxes.shape == (len(det), 4) and det.scores.shape == (len(det),) and len(det.labels) == len(det)
    assert len(det) <= n_max
    assert (det.boxes[:, [0, 2]] >= 0).all() and (det.boxes[:, [0, 2]] <= W).all()
    assert (det.boxes[:, [1, 3]] >= 0).all() and (det.boxes[:, [1, 3]] <= H).all()
    assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all()


def test_rt_detr_from_folder_returns_frame_pixel_boxes(rt_detr_folder, image):
    detector = load_detector(str(rt_detr_folder))
    _bias_class(detector, "dog")
    det = detector(image)
    assert_valid(det, n_max=detector.model.config.num_queries)
    assert len(det) > 0 and set(det.labels) == {"dog"}
    assert (det.scores >= 0.25).all()


def test_person_only_keeps_only_person(rt_detr_folder, image):
    detector = load_detector(str(rt_detr_folder), person_only=True)
    _bias_class(detector, "dog")
    assert len(detector(image)) == 0
    _bias_class(detector, "person")
    det = detector(image)
    assert len(det) > 0 and set(det.labels) == {"person"}


def test_threshold_keeps_exactly_the_detections_scoring_above_it(rt_detr_folder, image):
    detector = load_detector(str(rt_detr_folder), threshold=0.0)
    everything = detector(image)
    scores = np.sort(everything.scores)
    gaps = np.nonzero(np.diff(scores) > 1e-6)[0]
    assert len(gaps) >= 2  # the random model scores its queries differently
    cut = float(scores[gaps[len(gaps) // 2]] + scores[gaps[len(gaps) // 2] + 1]) / 2  # between two scores
    detector.threshold = cut
    kept = detector(image)
    above = everything.scores > cut
    assert 0 < len(kept) == int(above.sum()) < len(everything)
    order, expected = np.argsort(kept.scores), np.argsort(everything.scores[above])
    np.testing.assert_allclose(kept.scores[order], everything.scores[above][expected], rtol=1e-6)
    np.testing.assert_allclose(kept.boxes[order], everything.boxes[above][expected], atol=1e-3)
    # the boundary: a threshold equal to a detection's score drops that detection (kept: strictly above)
    boundary = float(scores[gaps[len(gaps) // 2] + 1])  # the lowest score that the cut above kept
    detector.threshold = boundary
    at_boundary = detector(image)
    on_it = int((everything.scores == np.float32(boundary)).sum())
    assert on_it >= 1 and len(at_boundary) == len(kept) - on_it
    assert (at_boundary.scores > np.float32(boundary)).all()


def test_owlv2_open_vocabulary_from_folder(tmp_path, image):
    from stvgr1_edge.tracking.tiny_configs import save_tiny_owlv2

    folder = save_tiny_owlv2(tmp_path / "owl", words=("person", "ball"))
    detector = load_detector(str(folder), text_prompt="person. ball", threshold=0.0)
    assert detector.text_labels == ["person", "ball"]
    det = detector(image)
    assert_valid(det, n_max=(64 // 16) ** 2 * 2)
    assert set(det.labels) <= {"person", "ball"}


def test_missing_folder_is_one_line_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        load_detector(str(tmp_path / "nope"))
    assert "\n" not in str(err.value) and "not found" in str(err.value)


def test_unknown_hub_id_offline_is_one_line_missing_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as err:
        load_detector("nobody-xyz/not-a-detector")
    assert "\n" not in str(err.value) and "hf download nobody-xyz/not-a-detector" in str(err.value)


def test_classical_spec_gives_the_weight_free_detector_that_finds_a_new_object():
    detector = load_detector("classical")
    background = np.full((H, W, 3), 90, np.uint8)
    assert len(detector(background)) == 0  # the first frame is taken as the background
    scene = background.copy()
    scene[10:30, 20:44] = (230, 40, 40)
    det = detector(scene)
    assert len(det) == 1 and det.boxes[0].tolist() == [20.0, 10.0, 44.0, 30.0]
    assert det.masks is not None and int(det.masks[0].sum()) == 20 * 24
    assert len(detector(background)) == 0  # gone again: nothing is detected
