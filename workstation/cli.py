"""``medws workstation`` and ``medws users`` (import-light: heavy imports inside handlers)."""
from __future__ import annotations

import argparse
import getpass
import sys


def register(commands) -> None:
    p = commands.command("workstation", "reading workstation: worklist, viewer with AI overlays, report, sign")
    p.add_argument("--root", help="archive root (default: MEDWS_ROOT or ./medws-data)")
    p.add_argument("--open", dest="open_uid", metavar="STUDY_UID", help="open this study")
    p.add_argument("--screenshot", metavar="FILE.png", help="render offscreen, save the window as PNG and exit")
    p.add_argument("--user", default="", help="user name to sign as (default: $USER)")
    p.add_argument("--side-by-side", action="store_true",
                   help="with --open: show the CT series and its derived (denoised) series side by side (key D)")
    p.set_defaults(func=_workstation)

    users = commands.group("users", "local workstation accounts")
    a = users.add_parser("add", help="add an account (asks for the password)")
    a.add_argument("name")
    a.add_argument("--role", required=True, help="radiologist, resident, technologist or admin")
    a.add_argument("--display-name", help="name for the Verifying Observer, e.g. 'Kim^Jisoo'")
    a.add_argument("--root", help="archive root (default: MEDWS_ROOT or ./medws-data)")
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    a.set_defaults(func=_users_add)
    ls = users.add_parser("list", help="list accounts")
    ls.add_argument("--root")
    ls.set_defaults(func=_users_list)


def _workstation(args: argparse.Namespace) -> int:
    from workstation.qt.app import run  # noqa: PLC0415
    return run(args.root, args.open_uid, args.screenshot, args.user, side_by_side=args.side_by_side)


def _root(root: str | None):
    from dicom_node.config import default_root  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415
    return Path(root) if root else default_root()


def _users_add(args: argparse.Namespace) -> int:
    from workstation.core.users import UserError, UserStore  # noqa: PLC0415
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("repeat: ") != password:
            print("passwords differ", file=sys.stderr)
            return 2
    try:
        u = UserStore.for_root(_root(args.root)).add(args.name, args.role, password, args.display_name)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"added {u.name} ({u.role})")
    return 0


def _users_list(args: argparse.Namespace) -> int:
    from workstation.core.users import UserStore  # noqa: PLC0415
    for u in UserStore.for_root(_root(args.root)).list():
        print(f"{u.name}\t{u.role}\t{u.display_name}")
    return 0
