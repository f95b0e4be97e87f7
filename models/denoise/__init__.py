"""Low-dose CT denoising at run time (numpy + ONNX Runtime): ``denoise_series``."""
