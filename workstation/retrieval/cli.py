"""``medws similar`` (query) and ``medws similar-index`` (status, rebuild, backfill).

Import-light: heavy modules are imported inside the handlers.
"""
from __future__ import annotations

import argparse
import json
import sys


def register(commands) -> None:
    p = commands.command("similar", "similar archived cases for a study, an image region or a finding")
    p.add_argument("--root", help="archive root (default: MEDWS_ROOT or ./medws-data)")
    p.add_argument("--study", required=True, metavar="UID", help="query study instance UID")
    p.add_argument("--k", type=int, default=10, help="number of cases (default 10)")
    p.add_argument("--region", nargs=5, metavar=("SOP_UID", "X1", "Y1", "X2", "Y2"),
                   help="query by a box on one image of the study (source pixels)")
    p.add_argument("--finding", metavar="LABEL_OR_TRACKING_UID", help="query by one of the study's AI findings")
    p.add_argument("--modality", action="append", default=[], help="only cases with this modality (repeatable)")
    p.add_argument("--has-finding", metavar="LABEL", help="only cases with this AI finding label")
    p.add_argument("--signed-only", action="store_true", help="only cases with a signed report")
    p.add_argument("--from", dest="date_from", metavar="DATE", help="study date >= DATE (YYYYMMDD)")
    p.add_argument("--to", dest="date_to", metavar="DATE", help="study date <= DATE (YYYYMMDD)")
    p.add_argument("--thumbnails", metavar="DIR", help="write each case's thumbnail PNG into DIR")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_similar)

    g = commands.group("similar-index", "the similar-case index: status, rebuild, backfill")
    s = g.add_parser("status", help="stored vs indexed vectors per space")
    s.add_argument("--root")
    s.set_defaults(func=_status)
    r = g.add_parser("rebuild", help="rebuild the index files from the stored embeddings")
    r.add_argument("--root")
    r.set_defaults(func=_rebuild)
    b = g.add_parser("backfill", help="compute missing embeddings for every study (or --study)")
    b.add_argument("--root")
    b.add_argument("--study", action="append", default=[])
    b.set_defaults(func=_backfill)


def _similar(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dicom_node.errors import NodeError
    from dicom_node.similarity import Filters
    from workstation.core.similar import SimilarCases

    try:
        filters = Filters(tuple(args.modality), args.has_finding, args.signed_only, args.date_from, args.date_to)
        sc = SimilarCases(args.root, thumbnails=bool(args.thumbnails))
    except NodeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.region:
            sop, *box = args.region
            cases = sc.by_region(args.study, sop, tuple(float(v) for v in box), args.k, filters)
        elif args.finding:
            cases = sc.by_finding(args.study, args.finding, args.k, filters)
        else:
            cases = sc.by_study(args.study, args.k, filters)
    except (NodeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        sc.close()
    if args.thumbnails:
        out = Path(args.thumbnails)
        out.mkdir(parents=True, exist_ok=True)
        for n, c in enumerate(cases, 1):
            if c.thumbnail_png:
                (out / f"{n:02d}.png").write_bytes(c.thumbnail_png)
    if args.json:
        print(json.dumps({"query": {"study_uid": args.study, "k": args.k,
                                    "region": args.region, "finding": args.finding},
                          "cases": [c.to_json() for c in cases]}, indent=1, ensure_ascii=False))
    else:
        for n, c in enumerate(cases, 1):
            labels = ", ".join(sorted({f["label"] for f in c.findings})) or "no AI findings"
            print(f"{n:2d}. {c.similarity:.3f}  {c.modality:3s} {c.study_date or '-':8s}  {c.study_uid}  [{labels}]"
                  f"  report: {c.report_state}")
            if c.report_excerpt:
                print(f"      {c.report_excerpt}")
    return 0


def _open(root):
    from dicom_node.config import load_config
    from dicom_node.db import Database

    config = load_config(root)
    db = Database(config.database_url)
    db.init_schema()
    return config, db


def _status(args: argparse.Namespace) -> int:
    from dicom_node.similarity import SimilarityIndex

    config, db = _open(args.root)
    try:
        print(json.dumps(SimilarityIndex(config.root, db).status(), indent=1))
    finally:
        db.close()
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from dicom_node.similarity import SimilarityIndex

    config, db = _open(args.root)
    try:
        print(json.dumps(SimilarityIndex(config.root, db).rebuild(), indent=1))
    finally:
        db.close()
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from dicom_node.embeddings import StudyIndexer

    config, db = _open(args.root)
    try:
        indexer = StudyIndexer(config.root, db)
        studies = args.study or [r[0] for r in db.query("SELECT study_uid FROM studies ORDER BY study_uid")]
        total: dict[str, int] = {}
        for uid in studies:
            for k, v in indexer.index_study(uid).items():
                total[k] = total.get(k, 0) + v
        print(json.dumps({"studies": len(studies), **total}))
    finally:
        db.close()
    return 0
