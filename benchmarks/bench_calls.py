"""Concurrent SDES-SRTP calls between phone-sim phones through the embedded lab.

For each N: 2N :class:`~phone_sim.phone.Phone` objects in this process register over TLS to
a lab running in a child process (``LabProcess``); N of them dial the other N at once
(INVITE with 407 auth, 180, 200, ACK through the lab's proxy); the callees auto-answer and
echo, the callers play a tone. Media flows phone to phone on 127.0.0.1, SRTP both ways.

It prints, per N:
- setup: the wall time from the N dials to the N answers, as calls set up per second, and
  this process's CPU per call set up (the lab's CPU is printed apart);
- held: CPU per call-second while the N calls are up (both ends' media, in this process),
  loss over the window, SRTP failures, and whether a sample of callers hears its echo;
- the baseline, measured just before in the same run: the media engine alone carrying N
  calls (``bench_media_calls.run_calls``: two MediaStreams per call, no SIP), and the
  physical floor (raw pylibsrtp protect+unprotect plus raw UDP send+receive per packet);
  with the ratios of the phones' cost to each.

    .venv/bin/python benchmarks/bench_calls.py                    # N = 25, 50, 100; ~1-2 min
    .venv/bin/python benchmarks/bench_calls.py --sweep 200 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_media_calls import crypto_floor, raise_nofile, run_calls, udp_floor

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.call.aio import Call
from phone_sim.firmware import profile_for
from phone_sim.lab.aio_process import LabProcess
from phone_sim.phone import Phone, RegistrationSettings, build_phone, tls_context_for
from phone_sim.phone.config import PhoneConfig
from phone_sim.tls.client import TrustStore

PROFILE = profile_for("D65", "2_9_22")
SETTINGS = RegistrationSettings(register_timeout=30.0, unregister_timeout=5.0)
PASSWORD = "bench-only"


def _child_cpu(pid: int | None) -> float:
    """utime + stime of a child process, in seconds (Linux /proc)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _gather_batches(coros: list, batch: int = 100) -> list:  # type: ignore[type-arg]
    results = []
    for i in range(0, len(coros), batch):
        results += await asyncio.gather(*coros[i:i + batch])
    return results


def _stream_totals(calls: list[Call]) -> tuple[int, int, int, int]:
    """Packets sent, received, lost (sequence gaps seen by the receivers), SRTP failures."""
    sent = received = lost = failures = 0
    for call in calls:
        if call.stream is None:
            continue
        stats = call.stream.statistics()
        sent += stats.packets_sent
        received += stats.packets_received
        lost += stats.packets_lost
        failures += stats.srtp_auth_failures + stats.srtp_replay_failures
    return sent, received, lost, failures


async def run_phones(n: int, seconds: float, warmup: float) -> dict[str, float]:
    callers_users = [str(10000 + i) for i in range(n)]
    callees_users = [str(20000 + i) for i in range(n)]
    users = dict.fromkeys(callers_users + callees_users, PASSWORD)
    async with LabProcess(users=users, transports=("tls",)) as lab:
        assert lab.ca_file is not None
        trust = TrustStore.from_files([lab.ca_file], public_roots=False)
        context = tls_context_for(PROFILE, trust)

        def phone(user: str, *, auto_answer: bool) -> Phone:
            host = SipHost(server=lab.host, port=lab.ports["tls"], transport=SipTransport.TLS,
                           media_encryption="sdes", reregister=3600)
            account = Account(username=user, password=PASSWORD, host_primary=host,
                              domain=lab.server_name, server_name=lab.server_name)
            config = PhoneConfig(profile=PROFILE, accounts=(account,), registration=SETTINGS,
                                 auto_answer=auto_answer)
            return build_phone(config, tls_context=context)

        callers = [phone(u, auto_answer=False) for u in callers_users]
        callees = [phone(u, auto_answer=True) for u in callees_users]
        everyone = callers + callees
        try:
            await _gather_batches([p.register(timeout=30) for p in everyone])
            # Setup: N dials at once, until N answers.
            lab_cpu0 = _child_cpu(lab.pid)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            calls: list[Call] = list(await asyncio.gather(
                *(c.dial(u) for c, u in zip(callers, callees_users, strict=True))))
            await asyncio.gather(*(call.wait_answered(timeout=60) for call in calls))
            setup_wall = time.perf_counter() - wall0
            setup_cpu = time.process_time() - cpu0
            setup_lab_cpu = _child_cpu(lab.pid) - lab_cpu0
            for call in calls:
                call.play_tone(1004)
            answered = [c for p in callees for c in p.calls.values()]
            await asyncio.sleep(warmup)
            sample = calls[: min(5, n)]
            heard = await asyncio.gather(*(c.wait_tone(1004, timeout=5) for c in sample),
                                         return_exceptions=True)
            # Held: the window over which CPU and loss are measured.
            both = calls + answered
            sent0, received0, lost0, _ = _stream_totals(both)
            lab_cpu1 = _child_cpu(lab.pid)
            cpu1, wall1 = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            held_cpu = time.process_time() - cpu1
            held_wall = time.perf_counter() - wall1
            held_lab_cpu = _child_cpu(lab.pid) - lab_cpu1
            sent1, received1, lost1, failures = _stream_totals(both)
            sent, received, lost = sent1 - sent0, received1 - received0, lost1 - lost0
            # Teardown: N BYEs at once.
            wall2 = time.perf_counter()
            await asyncio.gather(*(call.hangup(timeout=30) for call in calls))
            teardown_wall = time.perf_counter() - wall2
            up = sum(1 for c in calls if c.stream is not None)
        finally:
            await _gather_batches([p.close() for p in everyone])
    return {
        "setup_rate": n / setup_wall,
        "setup_wall": setup_wall,
        "setup_cpu_per_call": setup_cpu / n,
        "setup_lab_cpu_per_call": setup_lab_cpu / n,
        "cpu_per_call_second": held_cpu / (n * held_wall),
        "cpu_share": held_cpu / held_wall,
        "lab_cpu_share": held_lab_cpu / held_wall,
        # Gaps in the sequence numbers the receivers saw over the window (sent - received
        # would count the packets in flight at its edges).
        "loss": lost / (received + lost) if received + lost else 1.0,
        "lost": lost,
        "carried": sent / (2 * n * 50 * held_wall),
        "sent": sent,
        "srtp_failures": failures,
        "heard": sum(1 for h in heard if h is None) / len(sample),
        "teardown_rate": n / teardown_wall,
        "up": up,
    }


async def main(args: argparse.Namespace) -> None:
    print(f"phone-sim calls benchmark: RLIMIT_NOFILE={raise_nofile()}, "
          f"loop={type(asyncio.get_running_loop()).__module__}, {os.cpu_count()} CPUs")
    print("Per N: the media engine alone (no SIP) and the physical floor are measured first,")
    print("then N phone-sim calls through the lab (in a child process). CPU per call-second is")
    print("this process's CPU over the held window / (N x seconds): both ends of each call (two")
    print("SRTP streams, 100 packets/s sent and 100 received) plus any signalling; 'carried' is")
    print("the share of the nominal 100 packets/s per call that was sent.")
    print(f"\n{'calls':>5} {'setup/s':>8} {'setup s':>7} {'ms cpu/setup':>12} "
          f"{'lab ms/setup':>12} {'bye/s':>7} | {'floor ms/cs':>11} {'engine ms/cs':>12} "
          f"{'phones ms/cs':>12} {'/engine':>7} {'/floor':>6} {'core %':>6} {'lab %':>5} "
          f"{'carried':>7} {'lost':>5} {'srtp err':>8} {'heard':>5}")
    for n in [int(x) for x in args.sweep.split(",")]:
        floor = 100 * (crypto_floor(2 * n) + await udp_floor(2 * n))
        engine = await run_calls(n, args.seconds, args.warmup, False)
        r = await run_phones(n, args.seconds, args.warmup)
        ours = r["cpu_per_call_second"]
        short = "" if r["up"] == n else f"  only {r['up']:.0f} calls had media"
        print(f"{n:5d} {r['setup_rate']:8.1f} {r['setup_wall']:7.2f} "
              f"{r['setup_cpu_per_call'] * 1e3:12.2f} {r['setup_lab_cpu_per_call'] * 1e3:12.2f} "
              f"{r['teardown_rate']:7.1f} | {floor * 1e3:11.3f} "
              f"{engine['cpu_per_call_second'] * 1e3:12.3f} {ours * 1e3:12.3f} "
              f"{ours / engine['cpu_per_call_second']:7.2f} {ours / floor:6.2f} "
              f"{r['cpu_share'] * 100:5.1f}% {r['lab_cpu_share'] * 100:4.1f}% "
              f"{r['carried'] * 100:6.1f}% {r['lost']:5.0f} {r['srtp_failures']:8.0f} "
              f"{r['heard'] * 100:4.0f}%{short}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", default="25,50,100", help="comma-separated call counts")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per N")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stock event loop")
    arguments = parser.parse_args()
    if arguments.no_uvloop:
        asyncio.run(main(arguments))
    else:
        import uvloop

        uvloop.run(main(arguments))
