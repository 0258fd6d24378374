"""2,000 fleet phones registering over TLS to the embedded lab in another process.

Prints, from one run: phones registered per second through ``phone-sim fleet``'s runner
(a ``PhoneConfig`` and a ``Phone`` each, its own TLS connection, REGISTER / 401 / REGISTER /
200), the raw TLS handshake rate between the same endpoints measured in the same run (the
floor: connect, handshake, the phone's verdict, close; no SIP), their ratio, and the memory
per idle registered phone (RSS growth of this process, which holds only the phones).

    .venv/bin/python benchmarks/bench_fleet_register.py [--phones 2000] [--concurrency 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

from _fleet_common import lab_for, plan, raise_nofile

from phone_sim.errors import PhoneSimError
from phone_sim.firmware import profile_for
from phone_sim.fleet.aio_fleet import FleetRun, run_in_loop
from phone_sim.phone import tls_context_for
from phone_sim.tls.aio import open_tls_connection


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def handshakes(port: int, server_name: str, trust: object, n: int, concurrency: int
                     ) -> float:
    context = tls_context_for(profile_for("D65", "2_9_22"), trust)  # type: ignore[arg-type]
    todo = iter(range(n))
    done = 0

    async def worker() -> None:
        nonlocal done
        for _ in todo:
            try:
                transport, _, verdict = await open_tls_connection(
                    "127.0.0.1", port, context=context, server_name=server_name)
            except PhoneSimError:
                continue
            assert verdict.connects
            transport.close()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    print(f"RLIMIT_NOFILE {raise_nofile()}; uvloop; lab in another process")
    async with lab_for(args.phones) as lab:
        # The ramp is as fast as asked: the rate measured is what the phones and lab reach.
        fleet_plan = plan(lab, f"phones: {{count: {args.phones}, accounts: ACCOUNTS}}\n"
                          f"ramp: {{rate: {args.ramp}, timeout: 60}}\nduration: 3600\n")
        floor = await handshakes(lab.ports["tls"], lab.server_name, fleet_plan.trust,
                                 args.phones, args.concurrency)
        gc.collect()
        await asyncio.sleep(0.5)
        before = rss_kb()
        registered: list[float] = []
        idle_rss: list[int] = []
        started = time.perf_counter()
        done = asyncio.get_running_loop().create_future()

        def on_record(record: dict[str, object]) -> None:
            if record["ev"] == "reg":
                registered.append(time.perf_counter())
                if len(registered) == args.phones and not done.done():
                    done.set_result(None)

        run = FleetRun(fleet_plan, results=None, on_record=on_record)
        task = asyncio.ensure_future(run.run())
        await done
        elapsed = registered[-1] - started
        await asyncio.sleep(2.0)  # idle: every handshake and REGISTER transaction finished
        gc.collect()
        idle_rss.append(rss_kb())
        run.stop("benchmark done")
        summary = await task
    m = summary["metrics"]
    ok = int(m["phones.registered"] or 0)
    rate = ok / elapsed
    print(f"phones: {args.phones}, registered {ok}, failures {summary['failures'] or 'none'}")
    print(f"  TLS handshakes/s (floor, same run):   {floor:8.1f}")
    print(f"  fleet registrations/s (ramp {args.ramp:g}/s): {rate:8.1f}")
    print(f"  ratio registrations / handshakes:      {rate / floor:8.2f}")
    print(f"  registration latency p50/p95/p99:      {m['register.p50']:.3f} / "
          f"{m['register.p95']:.3f} / {m['register.p99']:.3f} s")
    print(f"  memory per idle registered phone:      {(idle_rss[0] - before) / ok:8.1f} KiB"
          f"  (RSS {before} -> {idle_rss[0]} KiB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200,
                        help="handshakes in flight for the floor")
    parser.add_argument("--ramp", type=float, default=100_000.0,
                        help="registrations started per second (default: all at once)")
    run_in_loop(main(parser.parse_args()))
