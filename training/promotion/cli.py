"""``medws models promote CANDIDATE`` and ``medws models rollback NAME`` (shared ``models`` group)."""
from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def register(commands) -> None:
    sub = commands.group("models", "model registry: list, promote, roll back")
    p = sub.add_parser(
        "promote", help="make a candidate the active version if it is not worse for any class on the locked set",
        description="Compare CANDIDATE (NAME@VERSION) with the active version on the locked test set, per class, "
                    "with paired bootstrap 95%% CIs of the AUROC difference; promote only when no class is worse "
                    "(worse: CI entirely below 0, or AUROC lower by more than the margin); otherwise refuse and "
                    "print the comparison table.")
    p.add_argument("candidate", help="NAME@VERSION of an installed model")
    p.add_argument("--current", default=None, help="version to compare against (default: the active version)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--locked-set", help="medws-dataset export: its test split is the locked set")
    src.add_argument("--predictions", help="NPZ with y_true (N,C), current (N,C), candidate (N,C), classes (C,)")
    p.add_argument("--margin", type=float, default=None, help="largest tolerated AUROC drop per class (default 0.03)")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", default=None, help="write the comparison as JSON here")
    p.add_argument("--dir", action="append", default=None, metavar="DIR", help="registry directory (repeatable)")
    p.set_defaults(func=_promote)

    r = sub.add_parser("rollback", help="set the active version of NAME back to the previous one",
                       description="Restore the version that was active before the last promotion (or --to VERSION).")
    r.add_argument("name")
    r.add_argument("--to", default=None, help="version to activate (default: the previous active version)")
    r.add_argument("--dir", action="append", default=None, metavar="DIR", help="registry directory (repeatable)")
    r.set_defaults(func=_rollback)

    s = sub.add_parser("shadow-report", help="agreement of a shadow candidate with the current model")
    s.add_argument("log", help="shadow JSON-lines log written by training.promotion.shadow.ShadowRecorder")
    s.set_defaults(func=_shadow_report)


def _split(candidate: str) -> tuple[str, str]:
    if "@" not in candidate:
        raise ValueError(f"candidate must be NAME@VERSION, got {candidate!r}")
    name, version = candidate.rsplit("@", 1)
    return name, version


def _promote(args: argparse.Namespace) -> int:
    from training.promotion.promote import PromotionError, promote

    try:
        name, version = _split(args.candidate)
        result = promote(name, version, current=args.current, locked_set=args.locked_set,
                         predictions=args.predictions, margin=args.margin, n_boot=args.n_boot, seed=args.seed,
                         report=args.report, dirs=args.dir)
    except (PromotionError, ValueError) as e:
        print(f"medws models promote: {e}", file=sys.stderr)
        return 2
    print(result.table())
    print()
    if result.accepted:
        print(f"PROMOTED {name}@{version}: {result.reason}")
        return 0
    print(f"REFUSED {name}@{version}: {result.reason}", file=sys.stderr)
    return 1


def _rollback(args: argparse.Namespace) -> int:
    from training.promotion.promote import PromotionError, rollback

    try:
        version = rollback(args.name, to=args.to, dirs=args.dir)
    except PromotionError as e:
        print(f"medws models rollback: {e}", file=sys.stderr)
        return 2
    print(f"{args.name}: active version is now {version}")
    return 0


def _shadow_report(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from training.promotion.shadow import summarise

    first = json.loads(Path(args.log).read_text().splitlines()[0])
    print(json.dumps(summarise(args.log, first["classes"]), indent=1))
    return 0
