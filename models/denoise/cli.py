"""``medws denoise --in DIR|FILES --out DIR [--model NAME]``: CT DICOM in, derived DICOM out."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def register(commands) -> None:
    p = commands.command("denoise", help="denoise low-dose CT series (derived DICOM series out)")
    p.add_argument("--in", dest="inputs", nargs="+", required=True, metavar="DIR|FILE",
                   help="CT DICOM files or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the derived series")
    p.add_argument("--model", default=None, help="registry model name (default ct-denoise-light)")
    p.add_argument("--version", default=None, help="model version (default: active/highest)")
    p.add_argument("--only-low-dose", action="store_true",
                   help="skip series that do not look low dose (CTDIvol/exposure/description heuristics)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from models.denoise.errors import DenoiseError
    from models.denoise.lowdose import LowDoseCriteria, low_dose_reason
    from models.denoise.series import read_datasets
    from models.denoise.task import DEFAULT_MODEL, CtDenoiser, denoise_series
    from models.errors import ModelError

    out = Path(args.out)
    try:
        datasets = read_datasets(args.inputs)
    except DenoiseError as e:
        logger.error("%s", e)
        return 2
    series: dict[str, list] = {}
    skipped = 0
    for ds in datasets:
        if str(getattr(ds, "Modality", "")) != "CT" or "PixelData" not in ds:
            skipped += 1
            continue
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "") or ""), []).append(ds)
    if skipped:
        logger.warning("skipped %d non-CT or pixel-less file(s)", skipped)
    if not series:
        logger.error("no CT images found in %s", " ".join(map(str, args.inputs)))
        return 2
    try:
        den = CtDenoiser(args.model or DEFAULT_MODEL, args.version, threads=args.threads)
    except ModelError as e:
        logger.error("%s", e)
        return 2
    criteria = LowDoseCriteria.from_env()
    written = 0
    failed = 0
    for uid, dss in series.items():
        if args.only_low_dose:
            reason = low_dose_reason(dss, criteria)
            if reason is None:
                logger.info("series with %d images does not look low dose: skipped", len(dss))
                continue
            logger.info("series looks low dose (%s)", reason)
        try:
            derived = denoise_series(dss, denoiser=den)
        except ModelError as e:
            logger.error("series with %d images not denoised: %s", len(dss), e)
            failed += 1
            continue
        folder = out / derived[0].SeriesInstanceUID
        folder.mkdir(parents=True, exist_ok=True)
        for ds in derived:
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            written += 1
        print(f"{folder}: {len(derived)} images ({den.name} {den.version})")
    logger.info("wrote %d images", written)
    return 1 if failed else 0
