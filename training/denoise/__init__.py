"""Low-dose CT denoising networks (MONAI/torch): data, training, evaluation, ONNX export."""
