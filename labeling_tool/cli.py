"""``medws label`` (the labeling app) and ``medws deid`` (PS3.15 Annex E de-identification)."""
from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def register(commands) -> None:
    """Add ``medws label`` and ``medws deid``."""
    p = commands.command("label", "open the labeling app over the archive or a folder of DICOM/PNG images")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", help="medws archive root (images read through dicom_node's archive)")
    src.add_argument("--folder", help="plain folder of DICOM/PNG/JPEG images")
    p.add_argument("--annotator", default="", help="annotator name (asked for when missing)")
    p.add_argument("--task", default="cxr", help="label schema / task name (default: cxr)")
    p.add_argument("--reviewer", action="store_true", help="start in reviewer mode")
    p.set_defaults(func=_label)

    d = commands.command("deid", "de-identify DICOM files (PS3.15 Annex E Basic Profile)")
    d.add_argument("--in", dest="in_dir", required=True, help="folder of DICOM files (read only)")
    d.add_argument("--out", dest="out_dir", required=True, help="output folder for de-identified files")
    d.add_argument("--key", required=True, help="re-identification key file (kept outside --out, mode 0600)")
    d.add_argument("--shift-dates", action="store_true", help="Retain Longitudinal Temporal Information (Modified Dates)")
    d.add_argument("--clean-pixels", action="store_true", help="Clean Pixel Data (burned-in text)")
    d.set_defaults(func=_deid)

    x = commands.command("export-dataset", "export labelled, de-identified images as a medws dataset")
    xs = x.add_mutually_exclusive_group(required=True)
    xs.add_argument("--root", help="archive root whose label store to export")
    xs.add_argument("--folder", help="image folder whose label store to export")
    x.add_argument("--out", required=True, help="output dataset folder (must not exist)")
    x.add_argument("--task", default="cxr")
    x.add_argument("--masks", choices=("nifti", "seg"), default="nifti", help="mask format")
    x.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions by patient")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--include", choices=("reviewed", "labelled"), default="reviewed",
                   help="lowest status exported (default: reviewed only)")
    x.add_argument("--version", default=None, help="dataset version string (default: UTC timestamp)")
    x.add_argument("--allow-burned-text", action="store_true",
                   help="PNG/JPEG only: accept images whose burned-in text you checked carries no identifier")
    x.set_defaults(func=_export)

    i = commands.command("import-decisions", "import radiologists' accept/reject/edit decisions as labels")
    i.add_argument("--root", required=True, help="archive root (label store and workstation decisions)")
    i.add_argument("--file", default=None, help="JSON / JSON-lines decisions instead of the archive's review table")
    i.set_defaults(func=_import_decisions)


def _deid(args: argparse.Namespace) -> int:
    from labeling_tool.core.deid import DeidOptions, deidentify_folder
    from labeling_tool.core.errors import LabelingError

    try:
        report = deidentify_folder(
            args.in_dir, args.out_dir, args.key, DeidOptions(shift_dates=args.shift_dates, clean_pixels=args.clean_pixels)
        )
    except LabelingError as e:
        print(f"medws deid: {e}", file=sys.stderr)
        return 2
    print(f"de-identified {report.written} file(s); {report.skipped_not_dicom} non-DICOM file(s) skipped; "
          f"{len(report.refused)} refused")
    for line in report.refused:
        print(f"  refused: {line}", file=sys.stderr)
    return 1 if report.refused else 0


def _source(args: argparse.Namespace):
    from labeling_tool.core.sources import ArchiveSource, FolderSource

    return ArchiveSource(args.root) if args.root else FolderSource(args.folder)


def _label(args: argparse.Namespace) -> int:
    from labeling_tool.core.errors import LabelingError

    try:
        source = _source(args)
    except LabelingError as e:
        print(f"medws label: {e}", file=sys.stderr)
        return 2
    from labeling_tool.qt.app import run_app

    return run_app(source, annotator=args.annotator, task=args.task, reviewer=args.reviewer)


def _export(args: argparse.Namespace) -> int:
    from labeling_tool.core.errors import LabelingError
    from labeling_tool.core.export import export_dataset
    from labeling_tool.core.store import LabelStore

    try:
        fractions = tuple(float(v) for v in args.split.split(","))
        source = _source(args)
        store = LabelStore.open_for(source)
        manifest = export_dataset(store, args.out, task=args.task, mask_format=args.masks,
                                  fractions=fractions, seed=args.seed, min_status=args.include,
                                  version=args.version, allow_burned_text=args.allow_burned_text)
    except (LabelingError, ValueError) as e:
        print(f"medws export-dataset: {e}", file=sys.stderr)
        return 2
    print(f"exported {len(manifest['images'])} image(s) to {args.out}; content hash {manifest['content_sha256']}")
    return 0


def _import_decisions(args: argparse.Namespace) -> int:
    from labeling_tool.core.errors import LabelingError
    from labeling_tool.core.preannotate import import_reader_decisions, workstation_decisions
    from labeling_tool.core.sources import ArchiveSource
    from labeling_tool.core.store import LabelStore

    try:
        store = LabelStore.open_for(ArchiveSource(args.root))
        records = args.file if args.file else workstation_decisions(args.root)
        n = import_reader_decisions(store, records)
    except (LabelingError, ValueError, OSError) as e:
        print(f"medws import-decisions: {e}", file=sys.stderr)
        return 2
    print(f"imported {n} decision(s) as labels")
    return 0
