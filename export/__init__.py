"""Export toolchain for stvg-edge: the Qwen2.5-VL vision encoder to ONNX / TensorRT, int4 and NF4 language models.

Imports :mod:`stvgr1_edge`, never the reverse. Modules:

- :mod:`export.vision_onnx` — vision tower -> ONNX with a dynamic number of patches; onnxruntime runner.
- :mod:`export.int4` — gpt-fast-style weight-only int4 linears (tinygemm on CUDA), folder save/load.
- :mod:`export.nf4` — bitsandbytes NF4 folder with the vision tower unquantized (CUDA only).
- :mod:`export.tensorrt` — TensorRT engine from the vision ONNX (needs NVIDIA's ``tensorrt``).

Submodules are imported on use, so ``import export`` stays light.
"""
