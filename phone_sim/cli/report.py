"""``phone-sim report RESULTS -o report.html``: the HTML report of a fleet run.

One self-contained file (plotly's JavaScript inlined: it opens with no network). Works on the
results of a run that was killed: it shows what was recorded. Exit statuses: 0 written, 2 the
file is not fleet results or the report cannot be written.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from phone_sim.errors import UsageError

__all__ = ["add_parser", "write_report"]


def add_parser(subparsers: Any) -> None:
    """Register ``report``."""
    p = subparsers.add_parser(
        "report",
        help="write the HTML report of a fleet run's results",
        description="Read the JSON-lines results of 'phone-sim fleet' (even of a run that "
        "was killed) and write one self-contained HTML report: registration latency, "
        "registrations and calls over time, concurrent calls, set-up time, loss/jitter/MOS "
        "distributions and failures by cause.",
    )
    p.add_argument("results", type=Path, help="the results file (.jsonl)")
    p.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                   help="the HTML file to write (default report.html)")
    p.add_argument("--threshold", action="append", default=[], metavar="RULE",
                   help="also check RULE, e.g. 'register.p95 < 2s' (repeatable)")
    p.set_defaults(func=run)


def write_report(results: Path, output: Path, *, thresholds: Iterable[Any] = ()) -> None:
    """Read *results* and write the report to *output*."""
    from phone_sim.fleet.report import render_report  # noqa: PLC0415
    from phone_sim.fleet.results import read_results  # noqa: PLC0415

    data = read_results(results)
    document = render_report(data.records, thresholds=thresholds, truncated=data.truncated)
    try:
        output.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``phone-sim report``."""
    from phone_sim.fleet.metrics import parse_threshold  # noqa: PLC0415

    thresholds = [parse_threshold(t) for t in args.threshold]
    write_report(args.results, args.output, thresholds=thresholds)
    print(f"report: {args.output}")
    return 0
