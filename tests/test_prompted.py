"""`stvgr1_edge.prompted`: keeping the sampled frames of a stream and drawing §3 markers on them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_test_video

from stvgr1_edge.markers import draw_id_markers
from stvgr1_edge.masks import mask_to_rle
from stvgr1_edge.prompted import SampledFrameCollector, render_prompted_clip
from stvgr1_edge.sampling import plan_sampling
from stvgr1_edge.tracks import TrackSet
from stvgr1_edge.video import Frame, iter_frames

H, W, FPS, N = 96, 128, 10.0, 40


def grey_stream(num_frames: int = N) -> list[Frame]:
    """Frames whose green channel holds the frame index (so a frame's identity survives stacking)."""
    frames = []
    for i in range(num_frames):
        img = np.full((H, W, 3), 100, np.uint8)
        img[..., 1] = i
        frames.append(Frame(i, i / FPS, img))
    return frames


def red_pixels(img: np.ndarray) -> int:
    return int(((img[..., 0].astype(int) - img[..., 2].astype(int)) > 50).sum())


@pytest.fixture
def sampling():
    s = plan_sampling(N, FPS, H, W)
    assert s.indices == (0, 6, 11, 17, 22, 28, 33, 39)  # 40 frames @ 10 fps → 8 frames: linspace(0, 39, 8)
    return s


# --- SampledFrameCollector ---------------------------------------------------------------------------
def test_collector_keeps_exactly_the_sampled_frames(sampling):
    collector = SampledFrameCollector(sampling)
    seen = [f.index for f in collector.watch(grey_stream())]
    assert seen == list(range(N))  # every frame passes through
    assert len(collector) == sampling.num_frames == 8  # only the sampled ones are held
    assert collector.complete and collector.missing == ()
    kept = collector.frames()
    assert [f.index for f in kept] == list(sampling.indices)
    assert [int(f.image[0, 0, 1]) for f in kept] == list(sampling.indices)


def test_collector_reports_frames_a_short_stream_never_delivered(sampling):
    collector = SampledFrameCollector(sampling)
    for frame in grey_stream(22):
        collector.add(frame)
    assert collector.missing == (22, 28, 33, 39)
    assert not collector.complete
    with pytest.raises(ValueError, match="4 sampled frame"):
        collector.frames()


def test_collector_memory_is_bounded_by_the_sampling_for_a_long_stream():
    sampling = plan_sampling(20_000, 25.0, 4, 4)  # 800 s @ 25 fps → capped at 768 frames
    assert sampling.num_frames == 768
    collector = SampledFrameCollector(sampling)
    tiny = np.zeros((4, 4, 3), np.uint8)
    for i in range(20_000):
        collector.add(Frame(i, i / 25.0, tiny))
    assert len(collector) == 768
    assert [f.index for f in collector.frames()] == list(sampling.indices)


def test_collector_on_a_decoded_video(tmp_path):
    path = write_test_video(tmp_path / "clip.mp4", num_frames=20, width=64, height=48, fps=10.0)
    sampling = plan_sampling(20, 10.0, 48, 64)
    collector = SampledFrameCollector(sampling)
    assert sum(1 for _ in collector.watch(iter_frames(path))) == 20
    assert [f.index for f in collector.frames()] == list(sampling.indices) == [0, 6, 13, 19]
    reds = [float(f.image[..., 0].mean()) for f in collector.frames()]
    assert reds == pytest.approx([0, 48, 104, 152], abs=3)  # the clip encodes red = 8 * index


# --- render_prompted_clip ----------------------------------------------------------------------------
def tracks_on_some_frames() -> TrackSet:
    """ID 1 (box) on frames 0..12, ID 2 (L-shaped mask) on frames 10..20; nothing after frame 20."""
    tracks = TrackSet(W, H, FPS, N)
    for f in range(0, 13):
        tracks.add(1, f, [10, 10, 50, 80])
    l_mask = np.zeros((H, W), bool)
    l_mask[10:90, 70:80] = True
    l_mask[80:90, 70:120] = True
    for f in range(10, 21):
        tracks.add(2, f, [70, 10, 120, 90], mask_to_rle(l_mask))
    return tracks


def test_markers_are_drawn_only_on_sampled_frames_with_objects(sampling):
    frames = grey_stream()
    originals = [f.image.copy() for f in frames]
    tracks = tracks_on_some_frames()
    clip = render_prompted_clip(frames, tracks, sampling)
    assert clip.frames.shape == (8, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.frame_indices == sampling.indices
    for k, index in enumerate(sampling.indices):
        objects = tracks.objects_at(index)
        if objects:
            expected = draw_id_markers(
                originals[index], [m if m is not None else b for _, b, m in objects], [i for i, _, _ in objects]
            )
            assert np.array_equal(clip.frames[k], expected)
            assert red_pixels(clip.frames[k]) > 0
        else:
            assert np.array_equal(clip.frames[k], originals[index])
            assert red_pixels(clip.frames[k]) == 0
    marked = [index for k, index in enumerate(sampling.indices) if red_pixels(clip.frames[k]) > 0]
    assert marked == [0, 6, 11, 17]
    for f, original in zip(frames, originals):  # the caller's frames are not drawn on
        assert np.array_equal(f.image, original)


def test_mask_is_used_for_the_anchor_when_the_object_has_one(sampling):
    frames = grey_stream()
    tracks = tracks_on_some_frames()
    clip = render_prompted_clip(frames, tracks, sampling)
    k = sampling.indices.index(17)  # only ID 2 there, with an L-shaped mask
    _, box, mask = tracks.objects_at(17)[0]
    from_mask = draw_id_markers(frames[17].image, [mask], [2])
    from_box = draw_id_markers(frames[17].image, [box], [2])
    assert not np.array_equal(from_mask, from_box)  # the L's middle row is off the box centre
    assert np.array_equal(clip.frames[k], from_mask)


def test_the_clip_knows_the_ids_drawn_on_its_sampled_frames(sampling):
    tracks = tracks_on_some_frames()
    unsampled = next(f for f in range(N) if f not in sampling.indices)
    tracks.add(7, unsampled, [5, 5, 30, 30])  # tracked, but never on a frame the model sees
    assert render_prompted_clip(grey_stream(), tracks, sampling).drawn_ids == (1, 2)
    assert render_prompted_clip(grey_stream(), tracks, sampling, draw_markers=False).drawn_ids == ()


def test_draw_markers_false_leaves_pixels_untouched(sampling):
    frames = grey_stream()
    clip = render_prompted_clip(frames, tracks_on_some_frames(), sampling, draw_markers=False)
    assert np.array_equal(clip.frames, np.stack([frames[i].image for i in sampling.indices]))


def test_clip_metadata(sampling):
    clip = render_prompted_clip(grey_stream(), tracks_on_some_frames(), sampling)
    assert (clip.sample_fps, clip.resized_height, clip.resized_width) == (
        2.0,
        sampling.resized_height,
        sampling.resized_width,
    )
    assert (clip.video_fps, clip.num_video_frames, clip.duration_s) == (FPS, N, 4.0)
    other = render_prompted_clip(grey_stream(), tracks_on_some_frames(), sampling, video_fps=25.0, num_video_frames=100)
    assert (other.video_fps, other.num_video_frames) == (25.0, 100)


def test_frames_given_as_the_collector_output_or_a_superset_are_the_same(sampling):
    frames = grey_stream()
    collector = SampledFrameCollector(sampling)
    for f in frames:
        collector.add(f)
    tracks = tracks_on_some_frames()
    a = render_prompted_clip(collector.frames(), tracks, sampling)
    b = render_prompted_clip(frames, tracks, sampling)
    assert np.array_equal(a.frames, b.frames)


def test_a_missing_sampled_frame_is_an_error(sampling):
    with pytest.raises(ValueError, match=r"sampled frame\(s\) \[22, 28, 33, 39\]"):
        render_prompted_clip(grey_stream(22), tracks_on_some_frames(), sampling)


# --- bounded memory: spilling the waiting frames, shrinking each frame after its markers --------------------
def test_frames_over_the_memory_budget_wait_on_disk_and_come_back_identical(sampling, tmp_path):
    frame_bytes = H * W * 3
    tracks = tracks_on_some_frames()
    in_memory = render_prompted_clip(grey_stream(), tracks, sampling)
    with SampledFrameCollector(sampling, memory_mb=3.5 * frame_bytes / 2**20, spill_dir=str(tmp_path)) as collector:
        for frame in grey_stream():
            collector.add(frame)
        assert collector.spilled == 5 and len(collector) == 8  # 3 frames fit the budget, 5 went to disk
        spill_dirs = list(tmp_path.iterdir())
        assert len(spill_dirs) == 1 and len(list(spill_dirs[0].glob("*.npy"))) == 5
        collector.add(grey_stream()[39])  # a repeated index replaces the old file
        assert len(list(spill_dirs[0].glob("*.npy"))) == 5
        spilled = render_prompted_clip(collector.kept(), tracks, sampling)
    assert np.array_equal(spilled.frames, in_memory.frames)
    assert list(tmp_path.iterdir()) == []  # the folder goes with the collector


def test_missing_frames_fail_before_any_spilled_frame_is_read(sampling, tmp_path):
    with SampledFrameCollector(sampling, memory_mb=0, spill_dir=str(tmp_path)) as collector:
        for frame in grey_stream(22):
            collector.add(frame)
        with pytest.raises(ValueError, match="4 sampled frame"):
            collector.kept()


def test_resizing_each_frame_after_its_markers_equals_the_grounders_resize_of_the_native_clip(sampling):
    from stvgr1_edge.sampling import resize_frames

    rng = np.random.default_rng(0)
    frames = [Frame(f.index, f.time_s, rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for f in grey_stream()]
    tracks = tracks_on_some_frames()
    native = render_prompted_clip(frames, tracks, sampling)
    small = render_prompted_clip(iter(frames), tracks, sampling, resize=True)
    h, w = sampling.resized_height, sampling.resized_width
    assert (h, w) != (H, W) and small.frames.shape == (8, h, w, 3) and small.frames.dtype == np.uint8
    expected = resize_frames(native.frames, h, w)  # what the grounder computes from native frames
    assert expected.equal(resize_frames(small.frames, h, w))  # already-sized frames pass through unchanged


def test_a_spill_folder_that_cannot_be_written_is_one_clear_error(sampling, tmp_path, monkeypatch):
    from stvgr1_edge.errors import BadInputError

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with SampledFrameCollector(sampling, memory_mb=0, spill_dir=str(tmp_path)) as collector:
        with pytest.raises(BadInputError, match="No space left on device.*--frame-memory-mb"):
            collector.add(grey_stream()[0])
    assert list(tmp_path.iterdir()) == []
