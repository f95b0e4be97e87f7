"""Smoke test of the benchmark's building blocks on tiny images (the benchmark itself is not run here)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_denoise.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_denoise", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _phantom(rng, sd=20.0):
    clean = np.full((96, 96), -1000.0, np.float32)
    clean[8:88, 8:88] = 40.0
    return clean, (clean + rng.normal(0, sd, clean.shape)).astype(np.float32)


def test_noise_estimate_from_image(bench):
    clean, noisy = _phantom(np.random.default_rng(0))
    assert abs(bench.estimate_noise_sd(noisy) / 20.0 - 1) < 0.15


def test_baselines_reduce_error(bench):
    from training.denoise.metrics import psnr

    clean, noisy = _phantom(np.random.default_rng(1))
    assert psnr(bench.bm3d_denoise(noisy), clean) > psnr(noisy, clean) + 3
    assert psnr(bench.tv_denoise(noisy, 0.03), clean) > psnr(noisy, clean) + 3


def test_figure_written(bench, tmp_path):
    img = np.random.default_rng(2).normal(40, 30, (512, 512)).astype(np.float32)
    out = tmp_path / "fig.png"
    bench.make_figure([("a", img), ("b", img)], out, "title")
    from PIL import Image

    assert Image.open(out).size[0] == 4 * 384
