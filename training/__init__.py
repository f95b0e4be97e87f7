"""Datasets, lesion synthesis, low-dose simulation, MONAI training, evaluation, ONNX export, model cards."""
