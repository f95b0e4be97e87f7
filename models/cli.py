"""``medws models list``: the installed models and their cards.

The ``models`` command group is shared: promotion tools add ``promote``/``rollback``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

logger = logging.getLogger(__name__)


def register(commands) -> None:
    sub = commands.group("models", "model registry: list, promote, roll back")
    p = sub.add_parser("list", help="list installed models (name, version, task, active, sha256 check)",
                       description="List every model version in the registry directories "
                                   "(models/zoo and env MEDWS_MODELS_DIR).")
    p.add_argument("--json", action="store_true", help="one JSON object per model version (full card)")
    p.add_argument("--verify", action="store_true", help="also check each model's sha256 against its card")
    p.add_argument("--dir", action="append", default=None, metavar="DIR",
                   help="registry directory (repeatable; default: models/zoo + MEDWS_MODELS_DIR)")
    p.set_defaults(func=_list)


def _list(args: argparse.Namespace) -> int:
    from models.errors import ModelError
    from models.registry import Registry

    reg = Registry(args.dir)
    try:
        cards = reg.list()
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = []
    status = 0
    for card in cards:
        entry = reg.get(card.name, card.version)
        try:
            active = reg.active_version(card.name)
        except ModelError as e:
            print(f"error: {e}", file=sys.stderr)
            active, status = None, 1
        if active is None:
            active = reg.versions(card.name)[-1]
        integrity = None
        if args.verify:
            try:
                entry.verify()
                integrity = "ok"
            except ModelError as e:
                integrity, status = f"FAILED: {e}", 1
        rows.append((card, entry, card.version == active, integrity))
    if args.json:
        for card, entry, is_active, integrity in rows:
            obj = card.to_dict()
            obj.update({"path": str(entry.onnx_path), "active": is_active})
            if integrity is not None:
                obj["integrity"] = integrity
            print(json.dumps(obj))
        return status
    if not rows:
        print("no models installed in: " + ", ".join(str(d) for d in reg.dirs))
        return status
    header = ("NAME", "VERSION", "ACTIVE", "TASK", "CLASSES", "SHA256")
    table = [header] + [
        (c.name, c.version, "*" if act else "", c.task, ",".join(c.classes) or "-",
         c.sha256[:12] + ("" if integ is None else f" ({integ if integ == 'ok' else 'FAILED'})"))
        for c, _, act, integ in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return status
