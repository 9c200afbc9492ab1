"""Vision encoder -> ONNX (dynamic patches) and the TensorRT builder's dependency handling.

Tolerances: the PyTorch wrapper vs the stock tower < 1e-5 max abs; onnxruntime fp32 vs PyTorch < 1e-4 max abs;
onnxruntime fp16 vs PyTorch fp32 cosine > 0.999; int8 (dynamic quantization) vs PyTorch fp32 cosine > 0.99 (tiny
random model, outputs of magnitude ~0.1).
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from stvgr1_edge.backends.onnx_vision import (  # noqa: E402
    INPUT_NAMES,
    METADATA_KEY,
    OnnxVisionEncoder,
    compute_vision_side_inputs,
    segments_from_cu_seqlens,
)
from stvgr1_edge.errors import BadInputError, MissingDependencyError  # noqa: E402
from stvgr1_edge_export.vision_onnx import export_vision_encoder, vision_encoder_graph  # noqa: E402

GRIDS = [(2, 16, 20), (1, 8, 8), (3, 12, 28)]
"""Three grids: windows partial and whole, 1-3 temporal patches, square and wide frames."""


@pytest.fixture(scope="module")
def tiny_model():
    from stvgr1_edge.tiny import build_tiny_qwen2_5_vl

    model, _ = build_tiny_qwen2_5_vl(seed=0)
    return model


@pytest.fixture(scope="module")
def onnx_paths(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vision_onnx")
    return {
        dtype: export_vision_encoder(tiny_model, folder / f"vision_{dtype}.onnx", dtype=dtype)
        for dtype in ("fp32", "fp16", "int8")
    }


def _pixels(grid, seed=1):
    generator = torch.Generator().manual_seed(seed)
    num_patches = grid[0] * grid[1] * grid[2]
    return torch.randn(num_patches, 3 * 2 * 14 * 14, generator=generator)


def _stock(model, pixels, grid_thw):
    with torch.no_grad():
        return torch.cat(model.model.get_video_features(pixels, torch.tensor(grid_thw)).pooler_output)


def test_segments_layout_pads_gathers_and_scatters_back_exactly():
    segments = segments_from_cu_seqlens(torch.tensor([0, 3, 3, 8], dtype=torch.int32))
    assert segments.gather.tolist() == [[0, 1, 2, 0, 0], [3, 4, 5, 6, 7]]  # empty segment dropped
    assert segments.valid.tolist() == [[True, True, True, False, False], [True] * 5]
    assert segments.scatter.tolist() == [0, 1, 2, 5, 6, 7, 8, 9]
    sequence = torch.arange(8) * 10
    assert torch.equal(sequence[segments.gather].reshape(-1)[segments.scatter], sequence)


def test_side_inputs_for_a_grid_have_window_and_frame_segments(tiny_model):
    side = compute_vision_side_inputs(torch.tensor([[2, 16, 20]]), tiny_model.model.visual.config)
    # 8x10 merged tokens per frame, 4x4-merged-token windows -> 2x3 windows per frame, 2 frames
    assert tuple(side.window.gather.shape) == (12, 64)
    assert int(side.window.valid.sum()) == 640
    assert tuple(side.full.gather.shape) == (2, 320)
    assert torch.equal(side.window_index[side.reverse_index], torch.arange(160))
    assert tuple(side.cos.shape) == (640, 16) and side.cos.dtype == torch.float32


def test_side_inputs_reject_a_grid_not_divisible_by_the_merge_size(tiny_model):
    with pytest.raises(BadInputError, match="merge size"):
        compute_vision_side_inputs(torch.tensor([[1, 5, 4]]), tiny_model.model.visual.config)


@pytest.mark.parametrize("grid", GRIDS)
def test_wrapper_module_equals_stock_tower(tiny_model, grid):
    pixels = _pixels(grid)
    side = compute_vision_side_inputs(torch.tensor([grid]), tiny_model.model.visual.config)
    with torch.no_grad():
        ours = vision_encoder_graph(tiny_model.model.visual)(pixels, *side.as_tuple())
    reference = _stock(tiny_model, pixels, [grid])
    assert ours.shape == reference.shape == (grid[0] * grid[1] * grid[2] // 4, 64)
    assert (ours - reference).abs().max().item() < 1e-5


def test_onnx_graph_passes_checker_with_symbolic_patch_axis(onnx_paths):
    for path in onnx_paths.values():
        onnx.checker.check_model(str(path))  # by path, as for graphs with external data
        model = onnx.load(str(path))
        inputs = {i.name: i for i in model.graph.input}
        assert list(inputs) == list(INPUT_NAMES)
        assert inputs["pixel_values"].type.tensor_type.shape.dim[0].dim_param == "num_patches"
        assert METADATA_KEY in {p.key for p in model.metadata_props}


def test_onnx_fp32_matches_pytorch_on_three_grids(tiny_model, onnx_paths):
    encoder = OnnxVisionEncoder(onnx_paths["fp32"])
    for grid in GRIDS:
        pixels = _pixels(grid)
        tokens = encoder(pixels, torch.tensor([grid])).pooler_output[0]
        assert (tokens - _stock(tiny_model, pixels, [grid])).abs().max().item() < 1e-4, grid


def _cosines_to_stock(tiny_model, onnx_path, grids=GRIDS) -> list[float]:
    """Cosine of the graph's tokens to the stock tower's, per grid."""
    encoder = OnnxVisionEncoder(onnx_path)
    cosines = []
    for grid in grids:
        pixels = _pixels(grid)
        tokens = encoder(pixels, torch.tensor([grid])).pooler_output[0]
        reference = _stock(tiny_model, pixels, [grid])
        cosines.append(torch.nn.functional.cosine_similarity(tokens.flatten(), reference.flatten(), dim=0).item())
    return cosines


def test_onnx_fp16_matches_pytorch_on_three_grids(tiny_model, onnx_paths):
    assert all(cosine > 0.999 for cosine in _cosines_to_stock(tiny_model, onnx_paths["fp16"]))


def test_onnx_int8_runs_every_linear_on_integer_matmuls_close_to_pytorch(tiny_model, onnx_paths):
    """int8: each of the tower's linear layers (patch embed, qkv/proj, MLP, merger) is one MatMulInteger over int8
    weights, attention and norms stay fp32, the weights take a quarter of the fp32 graph's bytes, and the
    tokens stay close to the stock tower's on every grid (not equal: they are quantized)."""
    model = onnx.load(str(onnx_paths["int8"]))
    ops = [n.op_type for n in model.graph.node]
    tower = tiny_model.model.visual
    linears = sum(isinstance(m, torch.nn.Linear) for m in tower.modules()) + 1  # + the patch embed's conv
    assert ops.count("MatMulInteger") == linears and "Gemm" not in ops
    assert "Softmax" in ops and ops.count("MatMul") == 2 * len(tower.blocks)  # q @ k, probs @ v, in fp32
    assert METADATA_KEY in {p.key for p in model.metadata_props}
    assert onnx_paths["int8"].stat().st_size < 0.5 * onnx_paths["fp32"].stat().st_size  # scales, graph: ~0.4 here
    assert all(0.99 < cosine < 1.0 - 1e-7 for cosine in _cosines_to_stock(tiny_model, onnx_paths["int8"]))


def test_fp16_graph_keeps_norms_and_softmax_in_fp32(onnx_paths):
    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_paths["fp16"])))
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input)}
    softmax_inputs = [n.input[0] for n in model.graph.node if n.op_type == "Softmax"]
    sqrt_inputs = [n.input[0] for n in model.graph.node if n.op_type == "Sqrt"]  # rsqrt of the RMSNorm variance
    matmul_inputs = [n.input[1] for n in model.graph.node if n.op_type == "MatMul"]
    assert softmax_inputs and sqrt_inputs
    assert {types[name] for name in softmax_inputs + sqrt_inputs} == {onnx.TensorProto.FLOAT}
    assert onnx.TensorProto.FLOAT16 in {types.get(name) for name in matmul_inputs}
    assert types["pixel_values"] == onnx.TensorProto.FLOAT


def test_runtime_splits_tokens_per_video_like_get_video_features(tiny_model, onnx_paths):
    grids = [(1, 8, 8), (2, 4, 6)]
    pixels = torch.cat([_pixels(grids[0], seed=2), _pixels(grids[1], seed=3)])
    output = OnnxVisionEncoder(onnx_paths["fp32"])(pixels, torch.tensor(grids))
    with torch.no_grad():
        stock = tiny_model.model.get_video_features(pixels, torch.tensor(grids)).pooler_output
    assert [t.shape[0] for t in output.pooler_output] == [t.shape[0] for t in stock] == [16, 12]
    for ours, reference in zip(output.pooler_output, stock):
        assert (ours - reference).abs().max().item() < 1e-4


def test_runtime_refuses_an_onnx_file_without_vision_metadata(onnx_paths, tmp_path):
    model = onnx.load(str(onnx_paths["fp32"]))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(BadInputError, match="re-export"):
        OnnxVisionEncoder(bare)
    with pytest.raises(BadInputError, match="not found"):
        OnnxVisionEncoder(tmp_path / "missing.onnx")


def test_large_graphs_write_external_data_loaded_by_path(tiny_model, tmp_path, monkeypatch):
    import stvgr1_edge_export.vision_onnx as vision_onnx

    path = tmp_path / "vision.onnx"
    monkeypatch.setattr(vision_onnx, "EXTERNAL_DATA_THRESHOLD_BYTES", 0)  # the tiny tower counts as "large"
    export_vision_encoder(tiny_model, path)
    data = vision_onnx.external_data_path(path)
    assert data.name == "vision.onnx.data" and data.is_file()
    tower_bytes = 4 * sum(p.numel() for p in tiny_model.model.visual.parameters())
    assert data.stat().st_size >= 0.9 * tower_bytes and path.stat().st_size < 0.1 * tower_bytes
    onnx.checker.check_model(str(path))  # by path: the checker follows the side file
    assert sorted(f.name for f in tmp_path.iterdir()) == ["vision.onnx", "vision.onnx.data"]  # no scratch left
    grid = GRIDS[0]
    pixels = _pixels(grid)
    tokens = OnnxVisionEncoder(path)(pixels, torch.tensor([grid])).pooler_output[0]
    assert (tokens - _stock(tiny_model, pixels, [grid])).abs().max().item() < 1e-4
    export_vision_encoder(tiny_model, path, external_data=False)  # forced inline: the stale side file goes
    assert not data.exists() and path.stat().st_size >= 0.9 * tower_bytes


def test_int8_graph_with_external_data_keeps_its_weights_in_the_side_file(tiny_model, tmp_path):
    from stvgr1_edge_export.vision_onnx import external_data_path

    path = tmp_path / "vision.onnx"
    export_vision_encoder(tiny_model, path, dtype="int8", external_data=True)
    assert external_data_path(path).name == "vision.onnx.data"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["vision.onnx", "vision.onnx.data"]  # no scratch left
    graph = onnx.load(str(path), load_external_data=False).graph
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and math.prod(t.dims) > 1024]
    assert int8_weights and all(t.data_location == onnx.TensorProto.EXTERNAL for t in int8_weights)
    onnx.checker.check_model(str(path))
    assert _cosines_to_stock(tiny_model, path, GRIDS[:1])[0] > 0.99


def test_runtime_session_options_and_side_inputs_cached_per_grid(onnx_paths):
    encoder = OnnxVisionEncoder(onnx_paths["fp32"], intra_op_num_threads=1)
    options = encoder.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    first = encoder(_pixels(GRIDS[1]), torch.tensor([GRIDS[1]])).pooler_output[0]
    again = encoder(_pixels(GRIDS[1]), torch.tensor([GRIDS[1]])).pooler_output[0]
    encoder(_pixels(GRIDS[0]), torch.tensor([GRIDS[0]]))
    info = encoder.side_feed.cache_info()
    assert (info.hits, info.misses, info.currsize) == (1, 2, 2)
    assert torch.equal(first, again)


# ------------------------------------------------------------------------------------------------ TensorRT
def test_tensorrt_missing_gives_one_line_saying_it_comes_from_nvidia(monkeypatch, onnx_paths, tmp_path):
    from stvgr1_edge_export.tensorrt import build_vision_engine

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(MissingDependencyError) as info:
        build_vision_engine(onnx_paths["fp32"], tmp_path / "vision.engine")
    message = str(info.value)
    assert "\n" not in message and "NVIDIA" in message and "JetPack" in message


def test_engine_profile_shapes_cover_min_to_max_grid(tiny_model):
    from stvgr1_edge_export.tensorrt import VisionEngineProfile, profile_shapes

    profile = VisionEngineProfile(min_grid=(1, 4, 4), opt_grid=(2, 8, 8), max_grid=(4, 16, 20))
    shapes = profile_shapes(tiny_model.model.visual.config, profile)
    assert shapes["pixel_values"] == ((16, 1176), (128, 1176), (1280, 1176))
    assert shapes["full_gather"] == ((1, 16), (2, 64), (4, 320))
    with pytest.raises(BadInputError, match="componentwise"):
        profile_shapes(tiny_model.model.visual.config, VisionEngineProfile(opt_grid=(8, 40, 40)))


@pytest.mark.gpu
def test_tensorrt_engine_builds_with_metadata(onnx_paths, tmp_path):
    pytest.importorskip("tensorrt")
    from stvgr1_edge_export.tensorrt import VisionEngineProfile, build_vision_engine

    engine = tmp_path / "vision_fp16.engine"
    info = build_vision_engine(
        onnx_paths["fp16"], engine, VisionEngineProfile(min_grid=(1, 4, 4), opt_grid=(2, 8, 8), max_grid=(2, 16, 16))
    )
    assert engine.stat().st_size > 0 and (tmp_path / "vision_fp16.timing-cache").is_file()
    assert info.tensorrt_version and info.profile["pixel_values"][2] == [512, 1176]
    assert (tmp_path / "vision_fp16.engine.json").is_file()


@pytest.mark.gpu
def test_tensorrt_runtime_matches_onnxruntime(tiny_model, onnx_paths, tmp_path):
    pytest.importorskip("tensorrt")
    from stvgr1_edge.backends.tensorrt import TrtVisionEncoder
    from stvgr1_edge_export.tensorrt import VisionEngineProfile, build_vision_engine

    engine = tmp_path / "vision_fp32.engine"
    build_vision_engine(
        onnx_paths["fp32"], engine, VisionEngineProfile(min_grid=(1, 4, 4), opt_grid=(2, 16, 20), max_grid=(3, 16, 28))
    )
    runner = TrtVisionEncoder(engine)
    grids = [(2, 16, 20), (1, 8, 8)]
    pixels = torch.cat([_pixels(grids[0], seed=2), _pixels(grids[1], seed=3)])
    got = runner(pixels, torch.tensor(grids), device="cpu").pooler_output
    want = OnnxVisionEncoder(onnx_paths["fp32"])(pixels, torch.tensor(grids)).pooler_output
    assert [t.shape for t in got] == [t.shape for t in want] and got[0].dtype == torch.float32
    for ours, reference in zip(got, want):
        assert (ours - reference).abs().max().item() < 1e-3
    with pytest.raises(BadInputError, match="profile"):
        runner(_pixels((4, 16, 16)), torch.tensor([(4, 16, 16)]))
