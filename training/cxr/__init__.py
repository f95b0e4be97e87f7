"""Chest X-ray training: MONAI networks, data, training loops, evaluation and ONNX export."""
