"""The lab under the resource attacks of issue #10, at full size, against ``phone-sim lab`` in
another process. Prints figures and same-run ratios; asserts nothing.

    .venv/bin/python benchmarks/bench_lab_attacks.py [--hoarders 800] [--slowloris 2000]
                                                      [--phones 2000]

Scenarios (each against a fresh lab process):

- **body hoarding**: ``--hoarders`` TCP connections each announce a 262,143-byte body and send
  all of it but one byte. The lab's RSS growth and the connections it keeps open, with the
  default budget of buffered bytes (32 MiB) against the same lab with the budget off
  (``--max-buffered-bytes`` 10**12), in the same run. Both labs get a first-message deadline
  of 300 s so that only the budget acts. Before the fix, 800 such connections took the lab
  from 79 to 285 MB.
- **slowloris**: ``--slowloris`` TLS connections that drip a ClientHello a byte a second and
  as many plain TCP connections that drip a REGISTER a byte a second. How long until the lab
  has closed them all (the handshake and first-message deadlines, 10 s each), how many log
  lines it printed for them (one per connection before the fix: 2,000 lines), and the time a
  legitimate TLS phone takes to register in the middle of the attack against the same before
  the attack.
- **the fleet**: ``--phones`` phones on 127.0.0.1 register over TLS, one connection each, with
  the default limits (every phone from the one address), and stay connected past the
  first-message deadline: how many are registered and still connected.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import time
from pathlib import Path

from phone_sim.firmware import profile_for
from phone_sim.lab.aio_process import LabProcess
from phone_sim.sip.digest import DigestChallenge, DigestResponse, compute_response
from phone_sim.sip.framer import StreamFramer
from phone_sim.sip.message import SipResponse
from phone_sim.tls.aio import open_tls_connection
from phone_sim.tls.client import TlsClientContext, TrustStore

DOMAIN = "lab.phone-sim.test"
BODY = 262_143  # the framer's per-message cap (262,144) minus one


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _register(user: str, call_id: str, cseq: int, transport: str, auth: str | None) -> bytes:
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:5099;rport;branch=z9hG4bKPj{secrets.token_hex(8)}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag={call_id[:8]}",
        f"To: <sip:{user}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:5099;transport={transport.lower()};ob>",
        "Expires: 300",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def _answer(response: SipResponse, user: str) -> str:
    value = response.headers.get("WWW-Authenticate")
    assert value is not None
    challenge = DigestChallenge.parse(value)[0]
    cnonce = secrets.token_hex(8)
    uri = f"sip:{DOMAIN}"
    digest = compute_response(
        algorithm="MD5", username=user, realm=challenge.realm, password="pw",
        nonce=challenge.nonce, method="REGISTER", uri=uri, qop="auth", nc=1, cnonce=cnonce,
    )  # fmt: skip
    return str(DigestResponse(
        username=user, realm=challenge.realm, nonce=challenge.nonce, uri=uri, response=digest,
        algorithm="MD5", cnonce=cnonce, qop="auth", nc=1,
    ))  # fmt: skip


class _Client(asyncio.Protocol):
    """A connection that frames what it gets and notices when the lab closes it."""

    def __init__(self) -> None:
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[SipResponse] | None = None
        self.closed_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for event in self.framer.feed(data):
            if isinstance(event, SipResponse) and self.waiter and not self.waiter.done():
                self.waiter.set_result(event)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_at = time.perf_counter()

    async def ask(self, data: bytes) -> SipResponse:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return await asyncio.wait_for(self.waiter, 20)


async def _open(lab: LabProcess, transport: str) -> _Client:
    loop = asyncio.get_running_loop()
    _t, client = await loop.create_connection(_Client, lab.host, lab.ports[transport])
    return client


async def _tls_register(lab: LabProcess, context: TlsClientContext, user: str) -> float:
    """Seconds for a new TLS connection and REGISTER/401/REGISTER/200 (the connection is
    closed after)."""
    t0 = time.perf_counter()
    transport, client, _ = await open_tls_connection(
        lab.host, lab.ports["tls"], context=context, server_name=lab.server_name,
        protocol_factory=_Client,
    )  # fmt: skip
    assert isinstance(client, _Client)
    call_id = secrets.token_hex(8)
    first = await client.ask(_register(user, call_id, 1, "TLS", None))
    ok = await client.ask(_register(user, call_id, 2, "TLS", _answer(first, user)))
    elapsed = time.perf_counter() - t0
    assert ok.status == 200, ok
    transport.close()
    return elapsed


# -- body hoarding --------------------------------------------------------------------------


async def _hoard(count: int, budget: int | None) -> tuple[float, float, int, int]:
    """(RSS before, RSS after, connections the lab kept, connections it closed)."""
    extra = ["--first-message-timeout", "300", "--no-echo"]
    if budget is not None:
        extra += ["--max-buffered-bytes", str(budget)]
    async with LabProcess(transports=("tcp",), extra_args=extra) as lab:
        assert lab.pid is not None
        await asyncio.sleep(0.5)
        before = _rss_mb(lab.pid)
        head = (
            f"MESSAGE sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bKh\r\n"
            f"From: <sip:a@{DOMAIN}>;tag=1\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: h\r\n"
            f"CSeq: 1 MESSAGE\r\nContent-Length: {BODY}\r\n\r\n"
        ).encode()
        payload = head + b"x" * (BODY - 1)
        clients = []
        for _ in range(count):
            client = await _open(lab, "tcp")
            assert client.transport is not None
            client.transport.write(payload)
            clients.append(client)
            if len(clients) % 50 == 0:
                await asyncio.sleep(0.05)  # let the lab read
        await asyncio.sleep(3.0)
        after = _rss_mb(lab.pid)
        closed = sum(c.closed_at is not None for c in clients)
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
        await asyncio.sleep(0.2)
    return before, after, count - closed, closed


async def bench_hoarding(count: int) -> None:
    off = await _hoard(count, 10**12)
    on = await _hoard(count, None)
    print(f"body hoarding: {count} TCP connections, each holding a {BODY:,}-byte body but one byte")
    for name, (before, after, kept, closed) in (("budget off", off), ("default budget", on)):
        print(f"  {name:15} lab RSS {before:6.1f} -> {after:6.1f} MB (+{after - before:6.1f} MB); "
              f"{kept} connections kept, {closed} closed")
    grow_off, grow_on = off[1] - off[0], on[1] - on[0]
    if grow_on > 0:
        print(f"  RSS growth with the budget = {grow_on / grow_off:.2f} x without it "
              f"(budget 32 MiB; the issue measured +206 MB for 800 before the fix)")


# -- slowloris ------------------------------------------------------------------------------


async def bench_slowloris(count: int) -> None:
    users = {"101": "pw"}
    async with LabProcess(users, transports=("tls", "tcp"), extra_args=["--no-echo"]) as lab:
        assert lab.ca_file is not None and lab.pid is not None
        trust = TrustStore.from_pem(lab.ca_file.read_bytes(), public_roots=False)
        context = TlsClientContext(profile_for("D65", "2_9_22"), trust)
        quiet = [await _tls_register(lab, context, "101") for _ in range(5)]
        logged_before = lab.log_count
        # A real ClientHello's first bytes for TLS, a REGISTER for TCP: dripped a byte a second.
        hello = bytes.fromhex("16030100c8010000c40303") + secrets.token_bytes(32)
        request = _register("101", "slow", 1, "TCP", None)
        tls_clients = []
        tcp_clients = []
        start = time.perf_counter()
        for i in range(count):
            tls_clients.append(await _open(lab, "tls"))
            tcp_clients.append(await _open(lab, "tcp"))
            if i % 200 == 199:
                await asyncio.sleep(0)
        opened = time.perf_counter() - start
        during: list[float] = []
        for second in range(40):
            live = [c for c in tls_clients + tcp_clients if c.closed_at is None]
            if not live:
                break
            for client in live:
                data = hello if client in tls_clients else request
                index = min(second, len(data) - 1)
                assert client.transport is not None
                client.transport.write(data[index:index + 1])
            if second in (3, 5, 7):
                during.append(await _tls_register(lab, context, "101"))
            await asyncio.sleep(1.0)
        all_clients = tls_clients + tcp_clients
        closed = [c.closed_at for c in all_clients if c.closed_at is not None]
        still = len(all_clients) - len(closed)
        last = max(closed) - start if closed else float("nan")
        await asyncio.sleep(11.0)  # the throttle's summary lines
        lines = lab.log_count - logged_before
        sample = [line for line in lab.log_lines[-lines:] if "more" in line][:3]
        for client in all_clients:
            if client.transport is not None:
                client.transport.abort()
    median_quiet = sorted(quiet)[len(quiet) // 2]
    median_during = sorted(during)[len(during) // 2] if during else float("nan")
    print(f"slowloris: {count} TLS connections dripping a ClientHello and {count} TCP "
          "connections dripping a REGISTER, a byte a second each")
    print(f"  opened in {opened:.1f} s; all closed by the lab {last:.1f} s after the first "
          f"({still} still open at the end)")
    print(f"  log lines for them: {lines} (before the fix: one per TLS connection, {count}; "
          "the TCP ones were never closed)")
    for line in sample:
        print(f"    {line}")
    print(f"  a TLS phone's registration: {median_quiet * 1000:.1f} ms before the attack, "
          f"{median_during * 1000:.1f} ms during it "
          f"(= {median_during / median_quiet:.2f} x)")


# -- the fleet ------------------------------------------------------------------------------


async def bench_fleet(phones: int, concurrency: int) -> None:
    users = {f"u{i:05d}": "pw" for i in range(phones)}
    async with LabProcess(users, transports=("tls",), extra_args=["--no-echo"]) as lab:
        assert lab.ca_file is not None and lab.pid is not None
        trust = TrustStore.from_pem(lab.ca_file.read_bytes(), public_roots=False)
        context = TlsClientContext(profile_for("D65", "2_9_22"), trust)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for user in users:
            queue.put_nowait(user)
        held: list[_Client] = []
        failures: list[str] = []

        async def worker() -> None:
            while not queue.empty():
                user = queue.get_nowait()
                try:
                    _t, client, _ = await open_tls_connection(
                        lab.host, lab.ports["tls"], context=context,
                        server_name=lab.server_name, protocol_factory=_Client,
                    )  # fmt: skip
                    assert isinstance(client, _Client)
                    call_id = secrets.token_hex(8)
                    first = await client.ask(_register(user, call_id, 1, "TLS", None))
                    ok = await client.ask(_register(user, call_id, 2, "TLS", _answer(first, user)))
                except (OSError, TimeoutError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if ok.status == 200:
                    held.append(client)
                else:
                    failures.append(f"{ok.status} {ok.reason}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.perf_counter() - start
        await asyncio.sleep(12.0)  # past the first-message deadline and an idle sweep
        connected = sum(c.closed_at is None for c in held)
        rss = _rss_mb(lab.pid)
        for client in held:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(0.5)
    print(f"the fleet: {phones} TLS phones from 127.0.0.1 with the default limits")
    print(f"  registered {len(held)}/{phones} in {took:.1f} s ({len(held) / took:.0f} /s); "
          f"{connected} still connected 12 s later; lab RSS {rss:.0f} MB")
    if failures:
        print(f"  failures: {len(failures)}, first: {failures[0]}")


def main() -> None:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--hoarders", type=int, default=800)
    parser.add_argument("--slowloris", type=int, default=2000)
    parser.add_argument("--phones", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--only", choices=["hoarding", "slowloris", "fleet"])
    args = parser.parse_args()
    limit = _raise_nofile()
    print(f"bench_lab_attacks: {os.cpu_count()} CPUs, RLIMIT_NOFILE {limit}, "
          f"load average {os.getloadavg()[0]:.1f}")
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if args.only in (None, "hoarding"):
            runner.run(bench_hoarding(args.hoarders))
        if args.only in (None, "slowloris"):
            runner.run(bench_slowloris(args.slowloris))
        if args.only in (None, "fleet"):
            runner.run(bench_fleet(args.phones, args.concurrency))


if __name__ == "__main__":
    main()
