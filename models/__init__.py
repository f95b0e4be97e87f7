"""Model registry, ONNX Runtime sessions and numpy-only pre/post-processing (imports no other medws package)."""
