"""``medws`` command line.

Every package owns its commands in modules named ``cli`` (``dicom_node/cli.py``,
``models/cxr/cli.py``, ``training/cli.py`` ...), each exposing
``register(commands: Commands)``.  This module discovers them and builds one parser.
``cli`` modules must stay import-light (heavy imports inside the command functions),
so ``medws --help`` is fast and the runtime works without torch.

Shared command groups (``medws infer cxr``, ``medws infer cac``, ``medws models list``,
``medws models promote`` ...) are created once by :meth:`Commands.group` and filled by
whichever packages add to them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)

_PACKAGES = ("dicom_node", "models", "training", "workstation", "labeling_tool")


class Commands:
    """Registry of top-level commands and shared command groups."""

    def __init__(self, subparsers: argparse._SubParsersAction) -> None:
        self._sub = subparsers
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def command(self, name: str, help: str, **kwargs) -> argparse.ArgumentParser:  # noqa: A002
        """Add a top-level command ``medws NAME``; set its handler with ``set_defaults(func=...)``."""
        return self._sub.add_parser(name, help=help, description=help, **kwargs)

    def group(self, name: str, help: str = "") -> argparse._SubParsersAction:  # noqa: A002
        """Return the sub-command set of ``medws NAME`` (created on first use)."""
        if name not in self._groups:
            parser = self._sub.add_parser(name, help=help, description=help)
            self._groups[name] = parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
        return self._groups[name]


def _cli_modules() -> list[str]:
    names: list[str] = []
    for pkg_name in _PACKAGES:
        try:
            pkg = importlib.import_module(pkg_name)
        except ModuleNotFoundError:
            continue
        if (os.path.exists(os.path.join(os.path.dirname(pkg.__file__), "cli.py"))):
            names.append(f"{pkg_name}.cli")
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg_name}.", onerror=lambda _n: None):
            if not info.ispkg or info.name.endswith(".qt") or ".qt." in info.name:
                continue
            sub_dir = os.path.join(os.path.dirname(pkg.__file__), *info.name.split(".")[1:])
            if os.path.exists(os.path.join(sub_dir, "cli.py")):
                names.append(f"{info.name}.cli")
    return sorted(set(names))


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every package's commands."""
    parser = argparse.ArgumentParser(prog="medws", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument(
        "--log-phi",
        action="store_true",
        help="debug switch: allow patient identifiers in log lines (off by default)",
    )
    commands = Commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    for name in _cli_modules():
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medws`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_phi:
        os.environ["MEDWS_LOG_PHI"] = "1"
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
