"""``medws`` command line.

Each package owns its commands in its own ``cli.py`` exposing
``register(subparsers)``; this module only collects them.  Package ``cli``
modules must stay import-light (heavy imports inside the command functions) so
``medws --help`` is fast and the runtime works without torch.

Commands and their owners:

- ``node``, ``analyze``, ``demo``          -> ``dicom_node.cli``
- ``models``, ``infer``, ``denoise``       -> ``models.cli``
- ``train``, ``eval``                      -> ``training.cli``
- ``workstation``, ``users``, ``similar``  -> ``workstation.cli``
- ``label``, ``deid``                      -> ``labeling_tool.cli``
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)

_COMMAND_MODULES = (
    "dicom_node.cli",
    "models.cli",
    "training.cli",
    "workstation.cli",
    "labeling_tool.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every package's sub-commands."""
    parser = argparse.ArgumentParser(prog="medws", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument(
        "--log-phi",
        action="store_true",
        help="debug switch: allow patient identifiers in log lines (off by default)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name in (name, name.rsplit(".", 1)[0] + ".cli"):
                continue  # package has no commands yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medws`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_phi:
        import os

        os.environ["MEDWS_LOG_PHI"] = "1"
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
