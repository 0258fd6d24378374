"""The ``phone-sim`` command line.

Each sub-command lives in its own module under :mod:`phone_sim.cli` and exposes
``add_parser(subparsers)``, which registers the sub-command and sets ``func`` to a callable
taking the parsed arguments and returning the exit status.

Exit statuses, for every sub-command: 0 success, 1 the thing under test failed or was
refused (a TLS policy refusal, a failed call), 2 a usage error, a network error or no answer.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from phone_sim import __version__
from phone_sim.errors import PhoneSimError

#: Modules that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "phone_sim.cli.tls",
    "phone_sim.cli.register",
    "phone_sim.cli.call",
    "phone_sim.cli.lab",
    "phone_sim.cli.boot",
    "phone_sim.cli.demo",
    "phone_sim.cli.fleet",
    "phone_sim.cli.report",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="phone-sim",
        description="A software Digium/Sangoma D-Series desk phone.",
    )
    parser.add_argument("--version", action="version", version=f"phone-sim {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level on stderr (default WARNING)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``phone-sim`` and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        status: int = args.func(args)
    except PhoneSimError as exc:
        print(f"phone-sim {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return status
