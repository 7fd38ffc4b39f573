"""Deployment: ONNX export of UFO-ViT backbones, segmentors and detector features.

``onnx_export`` holds the export machinery (dynamic H and W, exportable
adaptive pooling, onnxruntime comparison), ``targets`` what a config or an
arch name exports. Import the submodules; this package imports nothing itself.
"""
