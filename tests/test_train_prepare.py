"""Training-data preparation (train/prepare.py): the GT-ID assignment on noisy tracks, and the cache it writes."""

import json
import time

import numpy as np
import pytest

pytest.importorskip("trl")

from _train_helpers import SMALL, write_mixed_synthetic

from stvgr1_edge.gt_match import assign_gt_id
from stvgr1_edge.prepared import load_cached_samples, read_video_tensors, sample_path
from stvgr1_edge.tracks import TrackSet
from stvgr1_edge_train.prepare import PrepareConfig, match_tracks_to_gt, prepare_cache


def test_assign_gt_id_on_noisy_relabelled_gt_tracks():
    """The true tracks with IDs permuted, boxes jittered by up to 3 px and 15% of detections dropped stand in for a
    tracker: the assignment must find the permuted target ID on >= 95% of 24 synthetic clips."""
    from stvgr1_edge.synth import SynthConfig, generate_clip

    rng = np.random.default_rng(0)
    cfg = SynthConfig(**SMALL)
    agree, total = 0, 24
    for seed in range(total):
        clip = generate_clip(1000 + seed, cfg)
        ids = clip.gt_tracks.ids
        relabel = dict(zip(ids, (np.asarray(ids)[rng.permutation(len(ids))] + 100).tolist()))
        noisy = TrackSet(cfg.width, cfg.height, cfg.fps, clip.num_frames)
        for track in clip.gt_tracks:
            for frame, box in zip(track.frames, track.boxes):
                if rng.random() < 0.15:
                    continue
                noisy.add(relabel[track.track_id], frame, (np.asarray(box) + rng.uniform(-3, 3, 4)).tolist())
        target = clip.gt_tracks.tracks[clip.target_id]
        gt = {f: target.box_at(f) for f in range(clip.event.start_frame, clip.event.end_frame + 1)}
        a = assign_gt_id(noisy, gt)
        agree += a.track_id == relabel[clip.target_id]
        assert match_tracks_to_gt(noisy, clip.gt_tracks)[clip.target_id] == relabel[clip.target_id]
    assert agree / total >= 0.95


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    return write_mixed_synthetic(root, num_small=3, num_wide=1)


def test_prepare_cache_real_tracking_report_and_resume(synthetic, tmp_path):
    ann = json.loads(synthetic.read_text())
    keys = sorted(ann)
    # one sample whose GT box sits where no object ever is (bottom-right corner, 6x6 px) -> reported, not cached
    bad = dict(ann[keys[0]])
    bad["bbox"] = [[150, 110, 6, 6]] * len(bad["bbox"])
    ann["nowhere"] = bad
    ann["missing_video"] = dict(ann[keys[1]], video_path="small/videos/does_not_exist.mp4")
    path = synthetic.parent / "with_failures.json"
    path.write_text(json.dumps(ann))
    out = tmp_path / "cache"

    start = time.perf_counter()
    report = prepare_cache(path, out)
    first_s = time.perf_counter() - start
    assert report["counts"] == {"cached": 4, "failed": 1, "no_match": 1}
    failures = {f["sample_id"]: f for f in report["failures"]}
    assert failures["nowhere"]["status"] == "no_match" and "IoU 0.5" in failures["nowhere"]["reason"]
    assert "not found" in failures["missing_video"]["reason"]
    check = report["truth_check"]
    assert check["num_assigned"] == 4 and check["agreement"] >= 0.95
    assert json.loads((out / "report.json").read_text())["counts"] == report["counts"]

    samples = load_cached_samples(out)
    assert [s.sample_id for s in samples] == keys
    for s in samples:
        truth = next(r for r in report["samples"] if r["sample_id"] == s.sample_id)
        assert s.gt_id == truth["true_track_id"]
        # every tracked ID gets the label of the true object it matches; the target's is the annotated target's
        target = ann[s.sample_id]["objects"][str(ann[s.sample_id]["target_id"])]
        assert len(s.object_labels) == len(s.valid_ids)
        assert s.object_labels[s.valid_ids.index(s.gt_id)] == f"{target['size']} {target['colour']} {target['shape']}"
        known = {o["size"] + " " + o["colour"] + " " + o["shape"] for o in ann[s.sample_id]["objects"].values()} | {""}
        assert set(s.object_labels) <= known
        assert s.gt_start_s == ann[s.sample_id]["st_time"] and s.gt_end_s == ann[s.sample_id]["ed_time"]
        assert s.duration_s == pytest.approx(ann[s.sample_id]["img_num"] / ann[s.sample_id]["fps"])
        video = read_video_tensors(out / s.video_file)
        assert video.num_visual_tokens(2) == s.num_visual_tokens
        assert s.prompt.count(ann[s.sample_id]["English"].lower().rstrip(".")) == 1
        # the GT box in each sampled frame, as fractions of the frame; none outside the GT range
        entry = ann[s.sample_id]
        height, width = entry["img_hw"]
        assert len(s.target_boxes) == len(s.frame_times_s) == 2 * int(video.video_grid_thw[0, 0])
        for t, box in zip(s.frame_times_s, s.target_boxes):
            frame = round(t * entry["fps"])
            if entry["st_frame"] <= frame <= entry["ed_frame"]:
                x, y, w, h = entry["bbox"][frame - entry["st_frame"]]
                assert box == pytest.approx((x / width, y / height, (x + w) / width, (y + h) / height), abs=1e-4)
            else:
                assert box == ()
        assert 0 < sum(len(box) > 0 for box in s.target_boxes) < len(s.target_boxes)
    grids = {tuple(read_video_tensors(out / s.video_file).video_grid_thw[0].tolist()) for s in samples}
    assert grids == {(4, 8, 12), (6, 8, 10)}

    # resume: everything complete is skipped; a deleted sample is redone alone
    sample_path(out, keys[2]).unlink()
    again = prepare_cache(path, out)
    assert again["counts"] == {"cached": 1, "failed": 1, "no_match": 1, "skipped_existing": 3}
    assert len(load_cached_samples(out)) == 4
    assert first_s < 30


@pytest.mark.slow
def test_prepare_cache_parallel_workers_match_serial(synthetic, tmp_path):
    serial = prepare_cache(synthetic, tmp_path / "a")
    parallel = prepare_cache(synthetic, tmp_path / "b", config=PrepareConfig(workers=2))
    assert [(r["sample_id"], r["gt_id"]) for r in parallel["samples"]] == [
        (r["sample_id"], r["gt_id"]) for r in serial["samples"]
    ]
    a = {s.sample_id: s for s in load_cached_samples(tmp_path / "a")}
    for s in load_cached_samples(tmp_path / "b"):
        assert read_video_tensors(tmp_path / "b" / s.video_file).pixel_values_videos.equal(
            read_video_tensors(tmp_path / "a" / a[s.sample_id].video_file).pixel_values_videos
        )


def _cache_digest(cache) -> dict:
    """Per sample: a hash of its metadata (without the cache's file names, which depend on where the videos
    lie, and without the target boxes, recorded since the reference was made) and a hash of its video's tensors."""
    import hashlib

    from safetensors.torch import load_file

    out = {}
    for path in sorted((cache / "samples").glob("*.json")):
        sample = json.loads(path.read_text())
        tensors = load_file(str(cache / sample["video_file"]))
        digest = hashlib.sha256()
        for key in sorted(tensors):
            digest.update(key.encode())
            digest.update(tensors[key].contiguous().numpy().tobytes())
        meta = {k: v for k, v in sample.items() if k not in ("video_file", "target_boxes")}
        out[sample["sample_id"]] = {
            "json": hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest(),
            "tensors": digest.hexdigest(),
        }
    return out


def test_prepared_cache_is_byte_identical_to_the_recorded_reference(tmp_path):
    """Preparation goes through the runtime's `track_and_prompt`, the same function inference uses; its output
    (sample metadata and processor tensors) equals, bit for bit, what the preparation wrote before that function
    existed (tests/fixtures/prepare_digest.json, see the fixtures README)."""
    import subprocess
    import sys
    from pathlib import Path

    reference = json.loads((Path(__file__).parent / "fixtures" / "prepare_digest.json").read_text())
    # in a fresh process, as the reference was made: libx264 in this build does not always encode a clip to the
    # same bytes once a process has encoded many (seen only there), and the digest covers the decoded pixels
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path\nfrom _train_helpers import write_mixed_synthetic\n"
        "from stvgr1_edge_train.prepare import prepare_cache\n"
        f"prepare_cache(write_mixed_synthetic(Path({str(tmp_path / 'data')!r}), num_small=2, num_wide=1), "
        f"{str(tmp_path / 'cache')!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _cache_digest(tmp_path / "cache") == reference


def test_prepare_takes_the_packaged_model_by_name_as_run_does(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from stvgr1_edge.errors import BadInputError
    from stvgr1_edge.model_source import packaged_model_dir
    from stvgr1_edge_train.prepare import load_clip_processor

    monkeypatch.chdir(tmp_path)  # no ./nano folder here
    by_name = load_clip_processor("nano").processor
    packaged = AutoTokenizer.from_pretrained(packaged_model_dir(), local_files_only=True)
    assert by_name.tokenizer.get_vocab() == packaged.get_vocab()
    with pytest.raises(BadInputError, match="cannot load a processor from"):
        load_clip_processor(str(tmp_path / "missing"))
