"""``medws infer cxr PATH... [--json]``: chest X-ray findings, one JSON object per input line."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def register(commands) -> None:
    """Add ``medws infer cxr``."""
    sub = commands.group("infer", "run a model on images")
    p = sub.add_parser("cxr", help="chest X-ray findings (DICOM CR/DX, PNG, JPEG)",
                       description="chest X-ray findings (DICOM CR/DX, PNG, JPEG); coordinates in input pixels")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, or folders (every DICOM/PNG/JPEG below them, sorted)")
    p.add_argument("--json", action="store_true", help="one JSON object per input line (default: text)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.set_defaults(func=_infer_cxr)


def _infer_cxr(args) -> int:
    import json

    from models.cxr.pipeline import CxrPipeline
    from models.errors import ModelError
    from models.imaging import image_files

    paths = image_files(args.paths)
    if not paths:
        logger.error("no images found in %s", ", ".join(args.paths))
        return 1
    try:
        pipe = CxrPipeline(threads=args.threads)
    except ModelError as e:
        logger.error("cannot load the chest X-ray models: %s", e)
        return 2
    status = 0
    for path in paths:
        try:
            rec = pipe.analyse_path(path)
        except Exception as e:  # one bad file must not stop the batch
            logger.exception("cxr inference failed on an input")
            rec = {"path": str(path), "skipped": f"error: {e}", "abnormality": None, "scores": None,
                   "findings": [], "model": pipe.model_info}
            status = 1
        if args.json:
            print(json.dumps(rec), flush=True)
        elif rec["skipped"]:
            print(f"{rec['path']}: skipped ({rec['skipped']})")
        else:
            finds = ", ".join(f"{f['label']} {f['probability']:.2f} {f['laterality']} {f['zone']}" for f in rec["findings"])
            print(f"{rec['path']}: abnormality {rec['abnormality']:.2f}; {finds or 'no findings'}")
    return status
