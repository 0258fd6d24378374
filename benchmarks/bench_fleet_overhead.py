"""What the live view and the JSON-lines results cost: the same fleet run with and without.

One process (no shards), the lab in another: 300 phones register, 150 calls of 4 s between
them. Run A writes no results and shows nothing; run B writes results.jsonl (flushed every
0.5 s) and draws the rich live view (to a file standing in for the terminal, twice a second);
run C writes results and prints the plain progress lines. Prints this process's CPU seconds
for each run and the ratios B/A and C/A (runs alternate, twice, to average out the machine).

    .venv/bin/python benchmarks/bench_fleet_overhead.py [--phones 300] [--calls 150]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _fleet_common import lab_for, plan, raise_nofile

from phone_sim.fleet.aio_fleet import FleetRun, run_in_loop
from phone_sim.fleet.aio_live import LiveView


async def one(fleet_plan: object, *, results: Path | None, view: str | None) -> float:
    run = FleetRun(fleet_plan, results=results)  # type: ignore[arg-type]
    with open("/dev/null", "w") as sink:
        live = None if view is None else LiveView("bench", run.state, sink, rich=view == "rich")
        cpu = time.process_time()
        if live is not None:
            live.start()
        try:
            summary = await run.run()
        finally:
            if live is not None:
                live.stop()
        used = time.process_time() - cpu
    assert summary["metrics"]["calls.answered"], summary["failures"]
    return used


async def main(args: argparse.Namespace) -> None:
    print(f"RLIMIT_NOFILE {raise_nofile()}; one process on uvloop; lab in another process")
    async with lab_for(args.phones) as lab:
        fleet_plan = plan(lab, (
            f"phones: {{count: {args.phones}, accounts: ACCOUNTS}}\nramp: {{rate: 300}}\n"
            f"calls: {{count: {args.calls}, rate: 50, codec: PCMU,\n"
            "        hold: {distribution: fixed, mean: 4, max: 4}}\n"))
        with tempfile.TemporaryDirectory() as tmp:
            results = Path(tmp) / "r.jsonl"
            a, b, c = [], [], []
            for _ in range(2):
                a.append(await one(fleet_plan, results=None, view=None))
                b.append(await one(fleet_plan, results=results, view="rich"))
                c.append(await one(fleet_plan, results=results, view="plain"))
            lines = results.read_text().count("\n")
    ma, mb, mc = statistics.mean(a), statistics.mean(b), statistics.mean(c)
    print(f"{args.phones} phones, {args.calls} calls; {lines} result records per run")
    print(f"  A no results, no view:          {ma:7.2f} s CPU  (runs {a[0]:.2f}, {a[1]:.2f})")
    print(f"  B results + rich live view:     {mb:7.2f} s CPU  (runs {b[0]:.2f}, {b[1]:.2f})")
    print(f"  C results + plain lines:        {mc:7.2f} s CPU  (runs {c[0]:.2f}, {c[1]:.2f})")
    print(f"  ratio B/A {mb / ma:.3f}, C/A {mc / ma:.3f}; "
          f"cost per record (B-A) {(mb - ma) / lines * 1e6:.1f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=300)
    parser.add_argument("--calls", type=int, default=150)
    run_in_loop(main(parser.parse_args()))
