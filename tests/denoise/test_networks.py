"""Networks: ONNX export parity, tiling without seams, a tiny training smoke run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.denoise.tiling import predict_tiled, tile_starts
from training.denoise.export import export_onnx, parity
from training.denoise.networks import LIGHT, SEED, NetConfig, WaveletResNet


def _randomised(cfg: NetConfig, seed: int = 0) -> WaveletResNet:
    """A network with non-trivial weights and batch-norm statistics (eval mode)."""
    torch.manual_seed(seed)
    m = WaveletResNet(cfg)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
        torch.nn.init.normal_(m.out.weight, std=0.01)
    return m.eval()


def test_filter_bank_has_15_subbands():
    m = WaveletResNet(LIGHT)
    assert m.bank.weight.shape[0] == 15
    assert not m.bank.weight.requires_grad


@pytest.mark.parametrize("cfg", [LIGHT, NetConfig(channels=16, modules=2, convs_per_module=2, downsample=1)],
                         ids=["light", "seed-design-small"])
def test_onnx_matches_torch(cfg, tmp_path):
    m = _randomised(cfg)
    path = export_onnx(m, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    worst = parity(m, path, [rng.normal(0, 0.5, (1, 1, 64, 96)).astype(np.float32),
                             rng.normal(0, 0.5, (2, 1, 80, 80)).astype(np.float32)])
    assert worst < 0.05  # HU


def test_seed_design_is_128_channels_with_concatenation():
    m = WaveletResNet(SEED)
    assert SEED.channels == 128 and SEED.downsample == 1
    assert m.fuse.conv.in_channels == SEED.channels * SEED.modules


def test_tile_starts_cover_everything():
    assert tile_starts(512, 512) == [0]
    assert tile_starts(500, 128) == [0, 128, 256, 372]


@pytest.mark.parametrize("cfg", [LIGHT, NetConfig(channels=16, modules=2, convs_per_module=2, downsample=1)],
                         ids=["light", "seed-design-small"])
def test_tiled_equals_whole_image_no_seams(cfg):
    m = _randomised(cfg, seed=1)
    rng = np.random.default_rng(1)
    img = (rng.normal(0, 0.05, (100, 126)) + np.linspace(-1, 1, 126)[None]).astype(np.float32)

    def fn(x):
        with torch.no_grad():
            return m(torch.from_numpy(x)).numpy()

    margin = m.receptive_radius() + 2
    whole = predict_tiled(img, fn, tile=1024, margin=margin)
    tiled = predict_tiled(img, fn, tile=40, margin=margin)
    assert np.max(np.abs(whole - tiled)) * 1000 < 0.01  # HU
    # too little context would leave seams: the test can fail
    seamy = predict_tiled(img, fn, tile=40, margin=2)
    assert np.max(np.abs(whole - seamy)) * 1000 > 0.01


def test_training_smoke(tmp_path):
    from training.denoise.data import PairSet
    from training.denoise.train import main as train_main

    rng = np.random.default_rng(0)
    clean = np.zeros((2, 96, 96), np.float32)
    clean[:, 20:76, 20:76] = 40.0
    clean[clean == 0] = -1000.0
    clean[:, 30:60, 30:60] = 0.0
    noisy = clean + rng.normal(0, 20, clean.shape).astype(np.float32)
    pairs = PairSet(clean, noisy, np.array([0.25, 0.1], np.float32), np.array([0, 1]))
    pairs.save(tmp_path / "train.npz")
    pairs.save(tmp_path / "val.npz")
    rc = train_main(["--variant", "light", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                     "--max-steps", "3", "--patch", "32", "--batch", "2"])
    assert rc == 0
    ck = torch.load(tmp_path / "run" / "light.pt", weights_only=False)
    assert ck["step"] == 3 and ck["history"]
