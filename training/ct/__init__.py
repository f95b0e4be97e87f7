"""CT model training (torch/MONAI): nodule and liver-lesion segmentation networks, training
loops with wall-clock budgets, held-out evaluation, ONNX export with parity check, cards."""
