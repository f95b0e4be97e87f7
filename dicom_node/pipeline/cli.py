"""``medws analyze`` and ``medws node destinations|outbox`` (thin: parse, call, print)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from dicom_node.cli import _guard




def _db(args: argparse.Namespace) -> tuple[Any, Any]:
    from dicom_node.analysis import ensure_schema
    from dicom_node.config import load_config
    from dicom_node.db import Database

    config = load_config(args.root)
    db = Database(config.database_url, root=config.root)
    ensure_schema(db)
    return config, db


def cmd_analyze(args: argparse.Namespace) -> int:
    from dicom_node.analysis import analyze_study
    from dicom_node.config import load_config

    summary = analyze_study(load_config(args.root), args.study)
    if args.json:
        print(json.dumps(summary, sort_keys=True, ensure_ascii=False))
    else:
        print(f"study {summary['study_uid']}: {summary['ai_status']}")
        for j in summary["jobs"]:
            print(f"  job {j['id']} {j['task']}: {j['state']} {j['error'] or ''}")
        for f in summary["findings"]:
            print(f"  {f['label']} {f['probability']} {f['laterality'] or ''} {f['zone'] or ''}")
        if summary["report"]:
            print(summary["report"])
    failed = any(j["state"] == "failed" for j in summary["jobs"])
    return 1 if failed else 0


def cmd_dest_set(args: argparse.Namespace) -> int:
    from dicom_node.delivery import Destinations

    _config, db = _db(args)
    Destinations(db).set(args.peer, args.auto_send)
    print(f"peer {args.peer}: auto-send {'on' if args.auto_send else 'off'}")
    return 0


def cmd_dest_list(args: argparse.Namespace) -> int:
    from dicom_node.delivery import Destinations

    _config, db = _db(args)
    rows = Destinations(db).list()
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['peer']:20s} {r['ae_title']:16s} auto-send {'on' if r['auto_send'] else 'off'}")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from dicom_node.delivery import Delivery, outbox_items

    config, db = _db(args)
    if args.retry is not None:
        n = Delivery(db, config.ae_title).retry([int(x) for x in args.retry] or None)
        print(f"{n} dead-lettered item(s) pending again")
        return 0
    items = outbox_items(db, args.state)
    if args.json:
        print(json.dumps(items, sort_keys=True))
    else:
        for it in items:
            print(f"{it['id']:6d} {it['peer']:12s} {it['kind']:5s} {it['state']:9s} tries {it['attempts']} "
                  f"{it['last_error'] or ''}")
    return 0


def register(commands: Any) -> None:
    """Add ``medws analyze`` and ``medws node destinations|outbox``."""
    p = commands.command("analyze", "route and analyse one archived study now (synchronously)")
    p.add_argument("--root", default=None, help="archive root (default: $MEDWS_ROOT or ./medws-data)")
    p.add_argument("--study", required=True, help="Study Instance UID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_analyze))

    node = commands.group("node", "the DICOM node: archive, peers, networking")
    dest = node.add_parser("destinations", help="which peers receive AI objects automatically").add_subparsers(
        dest="destinations_command", metavar="SUBCOMMAND")
    p = dest.add_parser("set", help="auto-send AI objects to a registered peer (on/off)")
    p.add_argument("peer")
    p.add_argument("--auto-send", dest="auto_send", action="store_true", default=True)
    p.add_argument("--no-auto-send", dest="auto_send", action="store_false")
    p.add_argument("--root", default=None)
    p.set_defaults(func=_guard(cmd_dest_set))
    p = dest.add_parser("list", help="peers and their auto-send flag")
    p.add_argument("--root", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_dest_list))

    p = node.add_parser("outbox", help="outbox items (dead letters with their error); --retry to resend")
    p.add_argument("--state", default=None, choices=["pending", "sending", "sent", "failed", "superseded"])
    p.add_argument("--retry", nargs="*", default=None, metavar="ID", help="re-queue dead letters (all if no ID)")
    p.add_argument("--root", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_outbox))
