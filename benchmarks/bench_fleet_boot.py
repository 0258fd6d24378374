"""Fleet phones booting like real ones (DPMA + register) against registering alone, in one run.

The lab runs in another process with the DPMA emulator serving every phone (``phone-sim lab
--conf``, TLS). This process drives one fleet shard through, in turn:

- **register**: the phones are configured by the scenario and only register (the baseline:
  a TLS handshake, REGISTER / 401 / REGISTER / 200);
- **boot sip**: each phone fetches its configuration over DPMA's SIP MESSAGE exchange (its
  own TLS connection, closed after), applies it, then registers on a new connection;
- **boot http**: the same with ``<mac>.cfg`` over plain HTTP;
- **boot mdns**: discovery over mDNS first (one shared browse per shard, the fleet's
  default), then the SIP exchange.

Prints phones per second up to the last phone registered, time to configuration and boot
percentiles, each boot rate's ratio to the register rate of the same run, and this process's
CPU seconds per phone. ``--per-phone-browse N`` also times N phones each browsing mDNS on its
own (what real phones do), against the same N through the shared browse.

    .venv/bin/python benchmarks/bench_fleet_boot.py [--phones 1000] [--per-phone-browse 200]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from _fleet_common import FIRST_MAC, dpma_conf, lab_for, plan, raise_nofile

from phone_sim.fleet import FleetPlan, parse_scenario
from phone_sim.fleet.aio_fleet import FleetRun, run_in_loop
from phone_sim.lab.aio_process import LabProcess


def _mac(index: int) -> str:
    text = f"{FIRST_MAC + index:012x}"
    return ":".join(text[i:i + 2] for i in range(0, 12, 2))


def boot_plan(lab: LabProcess, count: int, provisioning: str, ramp: float) -> FleetPlan:
    return FleetPlan(parse_scenario(
        f"tls: {{ca_files: ['{lab.ca_file}']}}\n"
        f"phones: {{count: {count}, mac_first: '{_mac(0)}'}}\n"
        f"provisioning: {provisioning}\n"
        f"ramp: {{rate: {ramp}, timeout: 60}}\nduration: 3600\n"))


async def until_registered(fleet_plan: FleetPlan, count: int) -> dict[str, object]:
    """Run until *count* phones have a first-registration outcome; the rate, percentiles
    and CPU."""
    outcomes: list[float] = []
    done = asyncio.get_running_loop().create_future()

    def on_record(record: dict[str, object]) -> None:
        if record["ev"] == "reg" or (record["ev"] == "prov" and not record["ok"]):
            outcomes.append(time.perf_counter())
            if len(outcomes) == count and not done.done():
                done.set_result(None)

    run = FleetRun(fleet_plan, results=None, on_record=on_record)
    cpu = time.process_time()
    started = time.perf_counter()
    task = asyncio.ensure_future(run.run())
    await done
    elapsed = outcomes[-1] - started
    used = time.process_time() - cpu
    run.stop("benchmark done")
    summary = await task
    metrics = summary["metrics"]
    ok = int(metrics["phones.registered"] or 0)
    return {"rate": ok / elapsed, "ok": ok, "cpu_ms": 1000 * used / count,
            "failures": summary["failures"], "m": metrics}


def _p(metrics: dict[str, float | None], name: str) -> str:
    values = [metrics.get(f"{name}.p{q}") for q in (50, 95, 99)]
    return " / ".join("-" if v is None else f"{v:.3f}" for v in values)


async def main(args: argparse.Namespace) -> None:
    print(f"RLIMIT_NOFILE {raise_nofile()}; one shard on uvloop; lab + DPMA in another process")
    service = f"psim-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "res_digium_phone.conf"
        served = max(args.phones, args.per_phone_browse)
        conf.write_text(dpma_conf(served, service))
        async with lab_for(served, conf=conf) as lab:
            dpma = lab.info["dpma"]
            ramp = args.ramp
            runs = {
                "register": plan(lab, f"phones: {{count: {args.phones}, accounts: ACCOUNTS}}\n"
                                 f"ramp: {{rate: {ramp}, timeout: 60}}\nduration: 3600\n"),
                "boot sip": boot_plan(lab, args.phones,
                                      f"{{config_server_url: '{dpma['sip_url']}'}}", ramp),
                "boot http": boot_plan(lab, args.phones,
                                       f"{{config_server_url: '{dpma['http_url']}'}}", ramp),
                "boot mdns": boot_plan(lab, args.phones,
                                       f"{{mdns: {{server: {service}}}}}", ramp),
            }
            results = {}
            for name, fleet_plan in runs.items():
                results[name] = await until_registered(fleet_plan, args.phones)
                await asyncio.sleep(1.0)  # the lab settles the unregistrations
            browse = {}
            if args.per_phone_browse:
                n = args.per_phone_browse
                for mode in ("shard", "phone"):
                    browse[mode] = await until_registered(boot_plan(
                        lab, n, f"{{mdns: {{server: {service}, browse: {mode}}}}}",
                        args.browse_ramp), n)
                    await asyncio.sleep(1.0)
    base = results["register"]["rate"]
    print(f"phones: {args.phones}, ramp {ramp:g}/s (as fast as the phones and the lab go)")
    print(f"  {'run':10} {'phones/s':>9} {'ratio':>6} {'CPU ms/phone':>13}  "
          "to config p50/p95/p99 s    boot p50/p95/p99 s       failures")
    for name, r in results.items():
        m = r["m"]
        assert isinstance(m, dict)
        print(f"  {name:10} {r['rate']:9.1f} {r['rate'] / base:6.2f} {r['cpu_ms']:13.2f}  "
              f"{_p(m, 'provision'):26} {_p(m, 'boot'):24} {r['failures'] or 'none'}")
    m = results["boot mdns"]["m"]
    assert isinstance(m, dict)
    print(f"  (boot mdns: discovery p50/p95 {_p(m, 'discovery').rsplit(' / ', 1)[0]} s, the "
          "shard's one browse hearing the lab; the later phones find it at once)")
    if browse:
        print(f"mDNS, {args.per_phone_browse} phones booting at {args.browse_ramp:g}/s "
              "(discovery + SIP exchange + register):")
        for mode, r in browse.items():
            m = r["m"]
            assert isinstance(m, dict)
            print(f"  browse per {mode:5}: CPU {r['cpu_ms']:.2f} ms/phone, discovery p50/p95 "
                  f"{_p(m, 'discovery').rsplit(' / ', 1)[0]} s, "
                  f"{r['ok']} registered, failures {r['failures'] or 'none'}")
        print(f"  CPU ratio per-phone / shared: "
              f"{browse['phone']['cpu_ms'] / browse['shard']['cpu_ms']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--ramp", type=float, default=100_000.0,
                        help="phones started per second (default: all at once)")
    parser.add_argument("--per-phone-browse", type=int, default=0, metavar="N",
                        help="also boot N phones each browsing mDNS alone, against the "
                        "shared browse")
    parser.add_argument("--browse-ramp", type=float, default=100.0,
                        help="boots per second of the --per-phone-browse runs (default 100)")
    run_in_loop(main(parser.parse_args()))
