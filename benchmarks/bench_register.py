"""Distinct phones (``phone_sim.phone.Phone``) registering over TLS, each on its own connection.

Prints figures and ratios measured in the same run; asserts nothing.

    .venv/bin/python benchmarks/bench_register.py [--phones 1000] [--concurrency 100]
        [--memory-phones 1000] [--no-kamailio] [--no-uvloop] [--profile]

Figures, against the embedded registrar (``phone-sim lab`` in another process) and against
Kamailio (Debian's, started here on free loopback ports with a TEST-ONLY certificate):

- the floor: new TLS handshakes per second with the phones' shared TLS context and no SIP
  (connect, handshake, verdict, close), between the same endpoints;
- registrations per second: a new ``Phone`` per account, its own TLS connection, REGISTER,
  401, REGISTER with credentials, 200; and the ratio to the floor;
- memory per idle registered phone: RSS growth of this process (which holds only the phones;
  the registrar is another process) divided by the number of phones, after they all
  registered and went idle.

This process raises RLIMIT_NOFILE to its hard limit and runs on uvloop unless told otherwise.
Both processes share this machine's cores: the phones' own TLS and digest work is part of what
is measured, as it is in a real load test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.errors import PhoneSimError
from phone_sim.firmware import profile_for
from phone_sim.lab.aio_process import LabProcess
from phone_sim.phone import Phone, RegistrationSettings, build_phone, tls_context_for
from phone_sim.phone.config import PhoneConfig
from phone_sim.tls.aio import open_tls_connection
from phone_sim.tls.client import TrustStore

PROFILE = profile_for("D65", "2_9_22")
LAB_DOMAIN = "lab.phone-sim.test"
# Long expiries and keep-alives: idle phones send nothing while memory is measured.
SETTINGS = RegistrationSettings(register_timeout=30.0, stream_ka_interval=3600.0)


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _run(n: int, concurrency: int, work: Callable[[int], Awaitable[object]]) -> float:
    """Run ``work(i)`` for i in range(n), ``concurrency`` at a time; return the seconds."""
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await work(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


def _account(user: str, password: str, port: int, domain: str) -> Account:
    host = SipHost(server="127.0.0.1", port=port, transport=SipTransport.TLS, reregister=3600)
    return Account(username=user, password=password, host_primary=host, domain=domain,
                   server_name=domain)


class Target:
    """One registrar endpoint under test."""

    def __init__(self, name: str, port: int, domain: str, trust: TrustStore,
                 users: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.domain = domain
        self.trust = trust
        self.users = users


FAILURES: dict[str, int] = {}


def _failed(what: str, exc: PhoneSimError) -> None:
    key = f"{what}: {type(exc).__name__}"
    FAILURES[key] = FAILURES.get(key, 0) + 1


async def bench_handshakes(target: Target, n: int, concurrency: int) -> float:
    context = tls_context_for(PROFILE, target.trust)
    done = 0

    async def handshake(_i: int) -> object:
        nonlocal done
        try:
            transport, _, verdict = await open_tls_connection(
                "127.0.0.1", target.port, context=context, server_name=target.domain
            )
        except PhoneSimError as exc:
            _failed(f"{target.name} handshake", exc)
            return None
        assert verdict.connects
        transport.close()
        done += 1
        return None

    elapsed = await _run(n, concurrency, handshake)
    return done / elapsed


async def bench_registrations(
    target: Target, n: int, concurrency: int, *, keep: bool
) -> tuple[float, list[Phone]]:
    context = tls_context_for(PROFILE, target.trust)
    names = list(target.users)[:n]
    phones: list[Phone] = []

    async def register(i: int) -> object:
        user = names[i]
        account = _account(user, target.users[user], target.port, target.domain)
        config = PhoneConfig(profile=PROFILE, accounts=(account,), registration=SETTINGS)
        phone = build_phone(config, tls_context=context)
        try:
            await phone.register()
        except PhoneSimError as exc:
            _failed(f"{target.name} register", exc)
            await phone.close()
            return None
        phones.append(phone)
        return None

    elapsed = await _run(len(names), concurrency, register)
    rate = len(phones) / elapsed
    if not keep:
        await asyncio.gather(*(p.close() for p in phones))
        phones = []
    return rate, phones


#: Issue #9's aims (docs/registration.md says what stands in the way of each).
AIM_RATIO = 0.7
AIM_KB_PER_PHONE = 40


async def bench_target(
    target: Target, phones: int, concurrency: int, rounds: int,
    prepare: Callable[[], Awaitable[None]] | None = None,
) -> None:
    floors, rates, cpu_hs, cpu_reg = [], [], [], []
    for _ in range(rounds):
        if prepare is not None:
            await prepare()
        cpu = time.process_time()
        floors.append(await bench_handshakes(target, phones, concurrency))
        cpu_hs.append((time.process_time() - cpu) / phones)
        if prepare is not None:
            await prepare()
        cpu = time.process_time()
        rate, _ = await bench_registrations(target, phones, concurrency, keep=False)
        cpu_reg.append((time.process_time() - cpu) / phones)
        rates.append(rate)
    floor, rate = statistics.median(floors), statistics.median(rates)
    print(f"{target.name}: {phones} phones, concurrency {concurrency}, median of {rounds}")
    print(f"  TLS handshakes/s (floor, no SIP):  {floor:8.1f}   runs {_fmt(floors)}")
    print(f"  registrations/s (own connection):  {rate:8.1f}   runs {_fmt(rates)}")
    print(f"  ratio registrations / handshakes:  {rate / floor:8.2f}   issue #9 aim >= "
          f"{AIM_RATIO}: {'met' if rate / floor >= AIM_RATIO else 'NOT met'}")
    print(f"  phones' CPU per handshake:         {statistics.median(cpu_hs) * 1e3:8.2f} ms")
    print(f"  phones' CPU per registration:      {statistics.median(cpu_reg) * 1e3:8.2f} ms"
          "  (incl. un-REGISTER and close)")


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


async def bench_memory(target: Target, phones: int, concurrency: int) -> None:
    # Warm up: the shared context, imports, the first connection's allocations.
    _, warm = await bench_registrations(target, 20, 10, keep=True)
    await asyncio.gather(*(p.close() for p in warm))
    del warm
    gc.collect()
    await asyncio.sleep(0.5)
    before = _rss_kb()
    _, held = await bench_registrations(target, phones, concurrency, keep=True)
    await asyncio.sleep(1.0)  # idle: every handshake and REGISTER transaction finished
    gc.collect()
    after = _rss_kb()
    registered = sum(1 for p in held if p.registered)
    print(f"{target.name}: memory, {phones} idle registered phones in this process")
    print(f"  registered: {registered}/{phones}; RSS {before} KB -> {after} KB")
    per_phone = (after - before) / phones
    print(f"  RSS growth per idle registered phone: {per_phone:8.1f} KB   issue #9 aim <= "
          f"{AIM_KB_PER_PHONE} KB: {'met' if per_phone <= AIM_KB_PER_PHONE else 'NOT met'}")
    start = time.perf_counter()
    await asyncio.gather(*(p.close() for p in held))
    print(f"  unregistering {phones} phones took {time.perf_counter() - start:.2f} s")


async def with_lab(args: argparse.Namespace) -> None:
    count = max(args.phones, args.memory_phones) + 20
    users = {f"u{i:05d}": f"pw{i}" for i in range(count)}
    async with LabProcess(users, transports=["tls"], server_name=LAB_DOMAIN) as lab:
        assert lab.ca_file is not None
        trust = TrustStore.from_pem(lab.ca_file.read_bytes(), public_roots=False)
        target = Target("embedded registrar (phone-sim lab)", lab.ports["tls"], LAB_DOMAIN,
                        trust, users)
        # Memory first, in a process that has not yet held (and freed) thousands of phones.
        if args.memory_phones:
            await bench_memory(target, args.memory_phones, args.concurrency)
        await bench_target(target, args.phones, args.concurrency, args.rounds)


async def with_kamailio(args: argparse.Namespace) -> None:
    from phone_sim.testing.aio_kamailio import Kamailio, KamailioConfig, make_users
    from phone_sim.testing.certs import make_test_pki

    count = args.phones
    with tempfile.TemporaryDirectory(prefix="bench-register-") as tmp:
        pki = make_test_pki(Path(tmp) / "pki", server_name="pbx.test")
        users = make_users(count)
        config = KamailioConfig(users=users, max_connections=max(4096, 2 * count + 64),
                                shm_mb=256, min_expires=60, max_expires=3600,
                                default_expires=3600)
        kam = Kamailio(Path(tmp) / "kam", pki, config)
        try:
            try:
                await asyncio.to_thread(kam.start)
            except Exception as exc:  # a missing or failing peer is a skip, not a crash
                print(f"kamailio: skipped ({exc})")
                return
            trust = TrustStore.from_files([pki.ca.cert], public_roots=False)
            target = Target("Kamailio 5.6 (Debian)", kam.tls_port, kam.domain, trust,
                            {u.user: u.password for u in users})
            restarts = 0

            async def fresh() -> None:
                # Kamailio 5.6.3's TLS workers have crashed (SIGSEGV) under this load here;
                # every phase starts on a fresh one, and crashes are counted.
                nonlocal restarts
                restarts += 1
                await asyncio.to_thread(kam.restart)

            await bench_target(target, count, args.kamailio_concurrency, args.rounds, fresh)
            crashes = kam.log_text().count("exited by a signal")
            print(f"  Kamailio restarted before each phase ({restarts}x); worker crashes: "
                  f"{crashes}")
            if crashes:
                print("  kamailio's last CRITICAL/ALERT lines:")
                bad = [ln for ln in kam.log_text().splitlines()
                       if "CRITICAL" in ln or "ALERT" in ln]
                for line in bad[-6:]:
                    print(f"    {line}")
        finally:
            await asyncio.to_thread(kam.close)


async def main_async(args: argparse.Namespace) -> None:
    print(f"RLIMIT_NOFILE {_raise_nofile()}; loop {type(asyncio.get_running_loop()).__module__}")
    if not args.no_lab:
        await with_lab(args)
    if not args.no_kamailio:
        await with_kamailio(args)
    print(f"failed attempts (not counted in the rates): {FAILURES or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--kamailio-concurrency", type=int, default=50,
                        help="Kamailio (2 TLS workers) drops handshakes beyond ~100 at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-phones", type=int, default=1000)
    parser.add_argument("--no-kamailio", action="store_true")
    parser.add_argument("--no-lab", action="store_true")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the run (top 25)")
    args = parser.parse_args()
    factory = None
    if not args.no_uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main_async(args))
    if profiler is not None:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
