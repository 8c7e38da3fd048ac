"""Compression: INT8 post-training quantization of exported ONNX graphs, sparsity, channel pruning.

- ``calibration``: calibration/validation clips from real video through the runtime
  preprocessing; stream-mode samples with recorded temporal states.
- ``quantize``: NNCF PTQ (QDQ ONNX) with per-target recipes, accuracy-controlled PTQ,
  NNCF's OpenVINO-native path (for comparison). ``qdq``: the graph rewrites that make the
  INT8 graph run as integer kernels (and why INT8 was slower than FP32 without them).
- ``export_int8``: the step ``edgevid export --precision int8`` calls.
- ``sparsity`` (nncf.prune, 2:4), ``prune`` (Torch-Pruning channels, shift kept valid),
  ``finetune``, ``pipeline`` (``edgevid compress``), ``evaluate`` (ONNX on labelled clips).

Heavy libraries (nncf, openvino, torch_pruning) are imported inside the functions that use them.
"""
