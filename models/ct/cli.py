"""``medws infer ct-nodule|cac|liver SERIES_DIR... --json`` (import-light: work in handlers)."""
from __future__ import annotations

import json
import logging
import sys

logger = logging.getLogger(__name__)


def _common(p) -> None:
    p.add_argument("series", nargs="+", metavar="SERIES_DIR", help="DICOM series folder(s) or files")
    p.add_argument("--json", action="store_true", help="print the per-study result as JSON")
    p.add_argument("--allow-missing", action="store_true", help="interpolate across missing slices")
    p.add_argument("--correct-tilt", action="store_true", help="resample gantry-tilted series")


def register(commands) -> None:
    sub = commands.group("infer", "run a model on a study")
    p = sub.add_parser("cac", help="coronary calcium (Agatston, volume, mass, per artery, category)")
    _common(p)
    p.add_argument("--heart-mask", help="optional heart mask (NIfTI on the same grid)")
    p.add_argument("--aorta-mask", help="optional aorta mask (NIfTI on the same grid)")
    p.add_argument("--calibration", type=float, default=None, help="mass calibration, mg/cm³ per HU")
    p.set_defaults(func=_cac)
    p = sub.add_parser("ct-nodule", help="lung nodules on chest CT (ONNX detector + measurements)")
    _common(p)
    p.set_defaults(func=_nodule)
    p = sub.add_parser("liver", help="multi-phase liver lesions (phases, registration, ONNX segmentation)")
    _common(p)
    p.set_defaults(func=_liver)


def _emit(result: dict, as_json: bool) -> None:
    from models.ct.findings import public

    out = public(result)
    if as_json:
        print(json.dumps(out, indent=2, default=float))
    else:
        for k, v in out.items():
            if k != "findings":
                print(f"{k}: {v}")
        for f in out.get("findings", []):
            print("  -", {k: f[k] for k in f if k in ("label", "type", "artery", "long_axis_mm", "volume_mm3",
                                                      "category", "lobe", "probability")})


def _fail(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _cac(args) -> int:
    from models.ct.cac import CACPipeline
    from models.ct.errors import CTError
    from models.ct.volume import load_series, read_nifti

    try:
        vol = load_series(args.series, allow_missing=args.allow_missing, correct_tilt=args.correct_tilt)
        heart = read_nifti(args.heart_mask).hu > 0 if args.heart_mask else None
        aorta = read_nifti(args.aorta_mask).hu > 0 if args.aorta_mask else None
        kw = {} if args.calibration is None else {"calibration": args.calibration}
        _emit(CACPipeline(**kw)(vol, heart, aorta), args.json)
    except CTError as e:
        return _fail(e)
    return 0


def _nodule(args) -> int:
    from models.ct.errors import CTError
    from models.ct.nodules import NodulePipeline
    from models.ct.volume import load_series

    try:
        vol = load_series(args.series, allow_missing=args.allow_missing, correct_tilt=args.correct_tilt)
        _emit(NodulePipeline()(vol), args.json)
    except CTError as e:
        return _fail(e)
    return 0


def _liver(args) -> int:
    from models.ct.errors import CTError
    from models.ct.liver import LiverPipeline
    from models.ct.volume import load_study

    try:
        vols = load_study(args.series, allow_missing=args.allow_missing, correct_tilt=args.correct_tilt)
        _emit(LiverPipeline()(vols), args.json)
    except CTError as e:
        return _fail(e)
    return 0
