"""500 concurrent phone-to-phone SRTP calls through the lab, the phones sharded over
``--processes 2``.

One run: 1,000 phones register over TLS to the lab (another process), 500 of them call the
other 500 (each phone in one call: the schedule's ``pick: idle``; G.711, SDES-SRTP, tones
both ways) and hold. While all 500 calls are
up, the CPU time of the two shard processes is read from /proc over a steady window and
divided by the call-seconds of that window: CPU per call-second. The media floor is measured
in the same run as in bench_media_calls.py: raw pylibsrtp protect + unprotect and raw UDP
send + receive of the same number of packets (a call-second is 100 packets: two streams of
50). Also printed: loss over every leg, and the p99 and max lateness of each shard's shared
media ticker.

    .venv/bin/python benchmarks/bench_fleet_calls.py [--calls 500] [--hold 12] [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from pathlib import Path

from _fleet_common import lab_for, plan, raise_nofile
from bench_media_calls import crypto_floor, udp_floor

from phone_sim.fleet.aio_fleet import FleetRun, run_in_loop

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def main(args: argparse.Namespace) -> None:
    print(f"RLIMIT_NOFILE {raise_nofile()}; {args.processes} shard processes on uvloop; "
          "lab in another process")
    phones = 2 * args.calls
    ramp = 500.0
    rate = 250.0
    async with lab_for(phones) as lab:
        fleet_plan = plan(lab, (
            f"seed: 1\nphones: {{count: {phones}, accounts: ACCOUNTS}}\n"
            f"ramp: {{rate: {ramp}, timeout: 60}}\n"
            f"calls: {{count: {args.calls}, rate: {rate}, codec: PCMU, setup_timeout: 30,\n"
            f"        hold: {{distribution: fixed, mean: {args.hold}, max: {args.hold}}}}}\n"))
        calls_start = fleet_plan.calls_start
        placed_by = calls_start + args.calls / rate
        run = FleetRun(fleet_plan, results=None, processes=args.processes)
        task = asyncio.ensure_future(run.run())
        # The steady window: every call placed and up, none yet hung up.
        window = (placed_by + 2.0, calls_start + args.hold - 1.0)
        if window[1] - window[0] < 2.0:
            raise SystemExit("--hold too short for a steady window")
        await asyncio.sleep(1.0)
        children = multiprocessing.active_children()
        t0 = time.monotonic()
        start_at = t0 + window[0]  # the run's t=0 is within a second of now
        await asyncio.sleep(max(start_at - time.monotonic(), 0))
        up_at_start = run.state.calls_active
        cpu0 = sum(cpu_seconds(c.pid) for c in children if c.pid)
        w0 = time.monotonic()
        await asyncio.sleep(window[1] - window[0])
        cpu1 = sum(cpu_seconds(c.pid) for c in children if c.pid)
        w1 = time.monotonic()
        up_at_end = run.state.calls_active
        summary = await task
    up = min(up_at_start, up_at_end)
    cpu_per_call_second = (cpu1 - cpu0) / (up * (w1 - w0)) if up else float("nan")
    streams = 2 * args.calls
    floor_packet = crypto_floor(streams) + await udp_floor(streams)
    floor_call_second = 100 * floor_packet
    m = summary["metrics"]
    print(f"phones {phones}, calls answered {int(m['calls.answered'] or 0)} of "
          f"{int(m['calls.attempted'] or 0)}, failures {summary['failures'] or 'none'}")
    print(f"  calls up during the window:          {up_at_start} -> {up_at_end} "
          f"({w1 - w0:.1f} s)")
    print(f"  shard CPU in the window:             {cpu1 - cpu0:8.2f} s "
          f"({100 * (cpu1 - cpu0) / (w1 - w0):.0f}% of one core)")
    print(f"  CPU per call-second:                 {cpu_per_call_second * 1e3:8.3f} ms")
    print(f"  media floor per call-second:         {floor_call_second * 1e3:8.3f} ms "
          f"(floor/pkt {floor_packet * 1e6:.2f} µs)")
    print(f"  ratio to the floor:                  {cpu_per_call_second / floor_call_second:8.2f}")
    print(f"  media loss over every leg:           {m['media.loss']:.3f} %"
          f"  (worst leg {m['media.loss.max']:.2f} %)")
    print(f"  MOS p5 / jitter p95:                 {m['mos.p5']} / {m['jitter.p95']} ms")
    print(f"  set-up time p50 / p99:               {m['setup.p50']} / {m['setup.p99']} s")
    for shard in summary["shard_costs"]:
        print(f"  shard {shard['shard']}: media ticker lateness p99 {shard['lateness_p99_ms']} ms,"
              f" max {shard['lateness_max_ms']} ms; CPU {shard['cpu_s']} s; "
              f"RSS {shard['rss_kb']} KiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--hold", type=float, default=12.0)
    parser.add_argument("--processes", type=int, default=2)
    run_in_loop(main(parser.parse_args()))
