"""Gallery of synthetic chest lesions next to real radiologist-boxed examples (PNG).

``python -m training.synthesis.cxr_gallery --data ../shared/data/cxr --out docs/images/cxr_synthesis_gallery.png``

Rows: nodule/mass, consolidation, interstitial opacity, pleural effusion, pneumothorax.
Columns: synthetic lesion on a real normal radiograph (OpenIST) | the same with its exact
mask outline | a real NIH ChestX-ray14 example of the class with its radiologist box.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from training.synthesis.cxr_lesions import KINDS, insert

TILE = 256
REAL_LABELS = {
    "nodule_mass": ("Nodule", "Mass"),
    "consolidation": ("Consolidation",),
    "interstitial_opacity": ("Fibrosis",),
    "pleural_effusion": ("Effusion",),
    "pneumothorax": ("Pneumothorax",),
}


def _crop_box(x1: float, y1: float, x2: float, y2: float, shape: tuple[int, int], minimum: int = 160) -> tuple[int, int, int, int]:
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max((x2 - x1), (y2 - y1), minimum / 2) * 1.0
    half = min(half, min(shape) / 2)
    x0 = int(np.clip(cx - half, 0, shape[1] - 2 * half))
    y0 = int(np.clip(cy - half, 0, shape[0] - 2 * half))
    return x0, y0, int(x0 + 2 * half), int(y0 + 2 * half)


def _tile(img: np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    x0, y0, x1, y1 = box
    crop = np.clip(img[y0:y1, x0:x1] * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(crop).resize((TILE, TILE), Image.BILINEAR).convert("RGB")


def _label(tile: Image.Image, text: str) -> Image.Image:
    ImageDraw.Draw(tile).text((4, 4), text, fill=(255, 255, 0))
    return tile


def build_gallery(data: Path, seed: int = 3) -> Image.Image:
    """Return the gallery image (3 columns x 5 rows of 256-px tiles)."""
    rng = np.random.default_rng(seed)
    normals = sorted((data / "normal-openist" / "images").glob("*.jpg"))
    records = json.loads((data / "nih" / "labels.json").read_text())
    sheet = Image.new("RGB", (3 * TILE, len(KINDS) * TILE))
    for row, kind in enumerate(KINDS):
        path = normals[(row * 17) % len(normals)]
        img = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        lung = np.asarray(Image.open(data / "normal-openist" / "lung_masks" / (path.stem + ".png")).convert("L")) > 127
        ins = insert(kind, img, lung, 0.7, rng)
        ys, xs = np.nonzero(ins.mask)
        box = _crop_box(xs.min(), ys.min(), xs.max(), ys.max(), img.shape)
        plain = _label(_tile(ins.image, box), f"synthetic {kind}")
        outlined_img = _tile(ins.image, box)
        edge = ins.mask & ~ndi.binary_erosion(ins.mask)
        x0, y0, x1, y1 = box
        edge_t = Image.fromarray((edge[y0:y1, x0:x1] * 255).astype(np.uint8)).resize((TILE, TILE), Image.NEAREST)
        arr = np.asarray(outlined_img).copy()
        arr[np.asarray(edge_t) > 0] = (255, 0, 0)
        outlined = _label(Image.fromarray(arr), "exact mask")
        real = Image.new("RGB", (TILE, TILE))
        for rec in records:
            hits = [b for b in rec["boxes"] if b["label"] in REAL_LABELS[kind]]
            if hits:
                rimg = np.asarray(Image.open(data / "nih" / rec["file"]).convert("L"), dtype=np.float32) / 255.0
                bx = hits[0]["box"]
                cbox = _crop_box(*bx, rimg.shape)
                real = _tile(rimg, cbox)
                s = TILE / (cbox[2] - cbox[0])
                ImageDraw.Draw(real).rectangle(
                    [(bx[0] - cbox[0]) * s, (bx[1] - cbox[1]) * s, (bx[2] - cbox[0]) * s, (bx[3] - cbox[1]) * s],
                    outline=(0, 255, 0),
                )
                _label(real, f"real NIH {hits[0]['label']} (radiologist box)")
                break
        for col, tile in enumerate((plain, outlined, real)):
            sheet.paste(tile, (col * TILE, row * TILE))
    return sheet


def main(argv: list[str] | None = None) -> int:
    """Write the gallery PNG."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/cxr"))
    ap.add_argument("--out", type=Path, default=Path("docs/images/cxr_synthesis_gallery.png"))
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build_gallery(args.data).save(args.out, optimize=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
