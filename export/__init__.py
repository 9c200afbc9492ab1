"""Export toolchain for stvg-edge: the Qwen2.5-VL vision encoder to ONNX / TensorRT, the SAM2/EdgeTAM tracker to
ONNX, int4 and NF4 language models, and the deployable bundle that holds them.

Imports :mod:`stvgr1_edge`, never the reverse. Modules:

- :mod:`stvgr1_edge_export.vision_onnx` — vision tower -> ONNX with a dynamic number of patches (external weights
  file for > 1 GiB towers);
- :mod:`stvgr1_edge_export.tensorrt` — TensorRT engine from the vision ONNX (needs NVIDIA's ``tensorrt``);
- :mod:`stvgr1_edge_export.tracker_onnx` — SAM2.1 / EdgeTAM video tracker -> one ONNX graph per hot module, parity
  checks;
- :mod:`stvgr1_edge_export.int4` — weight-only int4 codes (searched rounding, GPTQ) and the int4 folder writer;
- :mod:`stvgr1_edge_export.nf4` — bitsandbytes NF4 folder with the vision tower unquantized (CUDA only);
- :mod:`stvgr1_edge_export.bundle` — ``stvg-edge export``: writes the bundle folder + ``manifest.json`` with parity
  numbers.

Everything that loads and runs these artefacts (the ONNX and TensorRT vision encoders, int4 linears, NF4 loading,
the ONNX tracker, the bundle) is in the runtime, :mod:`stvgr1_edge.backends` and :mod:`stvgr1_edge.bundle`.
- :mod:`stvgr1_edge_export.cli` — the ``stvg-edge export`` typer command.

Submodules are imported on use, so ``import export`` stays light.
"""
