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

#: Each command -> the module that defines it, so that running one command imports only its
#: module: the lab, the media stack and provisioning are heavy, and a ``tls-error`` took 0.7 s
#: to start when every module was imported (tests/test_cli.py checks the map is complete).
COMMANDS: dict[str, str] = {
    "tls-check": "phone_sim.cli.tls",
    "tls-error": "phone_sim.cli.tls",
    "tls-matrix": "phone_sim.cli.tls",
    "register": "phone_sim.cli.register",
    "call": "phone_sim.cli.call",
    "answer": "phone_sim.cli.call",
    "lab": "phone_sim.cli.lab",
    "boot": "phone_sim.cli.boot",
    "demo": "phone_sim.cli.demo",
    "fleet": "phone_sim.cli.fleet",
    "report": "phone_sim.cli.report",
}

_LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser: with every sub-command, or only the module of *command*."""
    parser = argparse.ArgumentParser(
        prog="phone-sim",
        description="A software Digium/Sangoma D-Series desk phone.",
    )
    parser.add_argument("--version", action="version", version=f"phone-sim {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=_LOG_LEVELS,
        help="logging level on stderr (default WARNING)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The sub-command *argv* names, if its global options are all ones we know."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--log-level":
            i += 2
        elif arg.startswith("--log-level="):
            i += 1
        elif arg.startswith("-"):
            return None  # --help, --version, or a mistake: the whole parser answers
        else:
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``phone-sim`` and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(argv))
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
