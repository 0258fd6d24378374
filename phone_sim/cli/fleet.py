"""``phone-sim fleet SCENARIO``: thousands of phones that register and call each other.

Exit statuses: 0 every threshold held, 1 a threshold was breached (each one is named), 2 the
scenario is bad (the error names the field and the line) or the run could not start.
Results go to ``--results`` as JSON lines while the run lasts, the summary to ``--summary``
at the end, and ``--report`` writes the HTML report. Ctrl-C ends the run cleanly: calls hang
up, phones unregister, results are flushed. See docs/load-testing.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phone_sim.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from phone_sim.fleet.plan import FleetPlan

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Register ``fleet``."""
    p = subparsers.add_parser(
        "fleet",
        help="run a load-test scenario: many phones that register and call each other",
        description="Run the phones of a scenario file (YAML): each registers with its own "
        "connection and credentials, calls others with SRTP media, and fails on its own. "
        "Shows live progress, writes JSON-lines results as they happen and a summary, and "
        "checks the scenario's thresholds. ${NAME} in the file is taken from the "
        "environment. Exit 0: every threshold held; 1: one was breached; 2: a bad scenario.",
    )
    p.add_argument("scenario", type=Path, help="the scenario file (YAML)")
    p.add_argument("-o", "--results", type=Path, default=Path("fleet-results.jsonl"),
                   help="JSON-lines results file (default fleet-results.jsonl)")
    p.add_argument("--summary", type=Path, default=None,
                   help="summary JSON file (default: the results name with .summary.json)")
    p.add_argument("--report", type=Path, default=None,
                   help="also write the HTML report to this file at the end")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="shard the phones over N processes on this machine (default 1)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run the shards as Ray actors (needs phone-sim[ray]): auto joins "
                   "RAY_ADDRESS or starts a private local Ray on 127.0.0.1; ADDRESS joins "
                   "that cluster. --processes gives the number of shards")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on 127.0.0.1:PORT during the run (0: any)")
    p.add_argument("--no-live", action="store_true",
                   help="no live view (neither the table nor the progress lines)")
    p.add_argument("--check", action="store_true",
                   help="validate the scenario, print what it would run, and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``phone-sim fleet``."""
    from phone_sim.fleet.aio_fleet import run_in_loop  # noqa: PLC0415
    from phone_sim.fleet.plan import FleetPlan  # noqa: PLC0415
    from phone_sim.fleet.scenario import ScenarioError, load_scenario  # noqa: PLC0415

    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    try:
        scenario = load_scenario(args.scenario, os.environ)
        plan = FleetPlan(scenario)
        plan.trust  # noqa: B018  (load the CA files now: a bad one is a bad scenario)
    except ScenarioError as exc:
        print(f"phone-sim fleet: bad scenario:\n{exc}", file=sys.stderr)
        return 2
    if args.check:
        print(_check_line(plan))
        return 0
    summary: dict[str, Any] = run_in_loop(_run(args, plan))
    summary_path = args.summary or args.results.with_name(
        args.results.name.removesuffix(".jsonl") + ".summary.json")
    try:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"phone-sim fleet: cannot write {summary_path}: {exc.strerror}", file=sys.stderr)
    if args.report is not None:
        from phone_sim.cli.report import write_report  # noqa: PLC0415

        write_report(args.results, args.report, thresholds=scenario.parsed_thresholds())
        print(f"report: {args.report}")
    m = summary["metrics"]
    print(f"{summary['name']}: {int(m['phones.registered'] or 0)}/{summary['phones']} phones "
          f"registered, {int(m['calls.answered'] or 0)}/{int(m['calls.attempted'] or 0)} calls "
          f"answered; results {args.results}, summary {summary_path}"
          + ("" if summary.get("ended") == "finished" else f" (stopped: {summary.get('ended')})"))
    for result in summary["thresholds"]:
        status = "held" if result["held"] else "BREACHED"
        measured = result["measured"]
        print(f"  {result['threshold']}: {'no data' if measured is None else f'{measured:.4g}'}"
              f" {status}")
    if summary["breached"]:
        print("thresholds breached: " + "; ".join(summary["breached"]), file=sys.stderr)
        return 1
    return 0


async def _run(args: argparse.Namespace, plan: Any) -> dict[str, Any]:
    from phone_sim.fleet.aio_fleet import FleetRun  # noqa: PLC0415
    from phone_sim.fleet.aio_live import LiveView, MetricsServer  # noqa: PLC0415

    shards = args.processes
    fleet = FleetRun(plan, results=args.results, processes=shards, ray=args.ray)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fleet.stop, "interrupted" if sig == signal.SIGINT
                                else "terminated")
    metrics = None
    if args.metrics_port is not None:
        metrics = MetricsServer(fleet.state, args.metrics_port)
        try:
            port = metrics.start()
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on 127.0.0.1:{args.metrics_port}: "
                             f"{exc.strerror}") from None
        print(f"metrics: http://127.0.0.1:{port}/metrics", flush=True)
    view = None if args.no_live else LiveView(plan.scenario.name, fleet.state)
    if view is not None:
        view.start()
    try:
        return await fleet.run()
    finally:
        if view is not None:
            view.stop()
        if metrics is not None:
            metrics.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _check_line(plan: FleetPlan) -> str:
    """What ``--check`` says of a valid scenario: phones, ramp, calls and how many are up at
    once (against what the phones carry one call each), thresholds."""
    from phone_sim.fleet.plan import CallPlan, peak_calls  # noqa: PLC0415

    scenario = plan.scenario
    calls_text = "no calls"
    if scenario.calls is not None and (scenario.calls.count is not None or scenario.duration):
        # One pass over the schedule, never held whole (a count may be in the millions).
        total = fleet = 0

        def counted() -> Iterator[CallPlan]:
            nonlocal total, fleet
            for call in plan.calls():
                total += 1
                fleet += call.callee is not None
                yield call

        peak = peak_calls(counted())
        # Phones a schedule's peak keeps busy: two per fleet call, one per call to a number.
        busy = round(peak * (1 + fleet / total)) if total else 0
        calls_text = f"{total} calls, at most about {peak} up at once"
        if busy > plan.count:
            calls_text += (f" (about {busy} phones busy: more than the {plan.count} phones "
                           "carry one call each, so some take a second call)")
    return (f"{scenario.name}: {plan.count} phones over {scenario.ramp_seconds:.1f} s, "
            f"{calls_text}, {len(scenario.thresholds)} thresholds: OK")
