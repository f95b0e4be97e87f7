"""Simulate and cache the training/validation pairs: ``python -m training.denoise.prepare OUT_DIR``."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from training.denoise.data import DEFAULT_SERIES, TRAIN_IDX, VAL_IDX, load_real_slices, make_pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    ap.add_argument("--realisations", type=int, default=4)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    slices, px = load_real_slices(args.series)
    make_pairs(slices, VAL_IDX, px, realisations=1, seed=1000).save(args.out / "val.npz")
    make_pairs(slices, TRAIN_IDX, px, realisations=args.realisations, seed=0).save(args.out / "train.npz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
