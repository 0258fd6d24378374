"""The embedded registrar under load: distinct phones registering over TLS, each on its own
connection, against ``phone-sim lab`` in another process.

Prints figures and ratios measured in the same run; asserts nothing.

    .venv/bin/python benchmarks/bench_lab.py [--phones 1000] [--concurrency 50]

Figures:
- the registrar core alone (sans-I/O, no sockets): microseconds per REGISTER round
  (challenge + authenticated REGISTER) and rounds per second: the "cheap per message" check,
  as a ratio to the baseline: the same distinct phones' REGISTERs framed and parsed and their
  responses serialized, with no registrar;
- the floor: new TLS handshakes per second against the lab's TLS port, with no SIP;
- registrations per second: new TLS connection + REGISTER/401/REGISTER/200 per phone, and
  the ratio to the floor;
- the lab process's CPU time per registration and its RSS growth per connected phone;
- the proxy core alone: CPU per call routed between two phones on their flows (INVITE with
  proxy authentication, 180, 200, ACK, BYE, 200: six messages in, six out), against the
  same six messages framed, parsed and serialized with no proxy (the baseline).

The in-process figures are CPU time (``time.process_time``), so that other load on a shared
machine inflates them less than wall time would. Both processes share this machine's cores,
so the client's own TLS and digest work is part of what is measured, as it is in a real
load test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import statistics
import time
from pathlib import Path

from phone_sim.firmware import profile_for
from phone_sim.lab.aio_process import LabProcess
from phone_sim.lab.registrar import Flow, Registrar, RegistrarConfig
from phone_sim.sip.digest import DigestChallenge, DigestResponse, compute_response
from phone_sim.sip.framer import StreamFramer
from phone_sim.sip.message import SipResponse, parse_message
from phone_sim.tls.aio import open_tls_connection
from phone_sim.tls.client import TlsClientContext, TrustStore

DOMAIN = "lab.phone-sim.test"


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _register(user: str, call_id: str, cseq: int, port: int, auth: str | None) -> bytes:
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:{port};rport;branch=z9hG4bKPj{secrets.token_hex(8)}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag={call_id[:8]}",
        f"To: <sip:{user}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: Digium D65 2_9_22",
        f"Contact: <sip:{user}@127.0.0.1:{port};transport=tls;ob>",
        "Expires: 300",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def _answer(challenge: DigestChallenge, user: str, password: str) -> str:
    cnonce = secrets.token_hex(8)
    uri = f"sip:{DOMAIN}"
    digest = compute_response(
        algorithm=challenge.algorithm, username=user, realm=challenge.realm, password=password,
        nonce=challenge.nonce, method="REGISTER", uri=uri, qop="auth", nc=1, cnonce=cnonce,
    )  # fmt: skip
    return str(
        DigestResponse(
            username=user, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
            response=digest, algorithm=challenge.algorithm, cnonce=cnonce, qop="auth", nc=1,
        )
    )  # fmt: skip


def _challenge(response: SipResponse) -> DigestChallenge:
    value = response.headers.get("WWW-Authenticate")
    assert value is not None
    return DigestChallenge.parse(value)[0]


# -- the core alone -------------------------------------------------------------------------


def bench_core(rounds: int) -> float:
    """CPU time of the registrar side only (framing included) per REGISTER round; the test
    client's own work (building requests, parsing the challenge, the digest) is not counted."""
    users = {f"u{i:05d}": "pw" for i in range(rounds)}
    reg = Registrar(users, RegistrarConfig(realm=DOMAIN))
    framer = StreamFramer()
    clock = time.process_time
    spent = 0.0
    for i, user in enumerate(users):
        flow = Flow(id=i, transport="TLS", remote=("127.0.0.1", 10000 + i % 50000),
                    local=("127.0.0.1", 5061))  # fmt: skip
        call_id = f"c{i}"
        first = _register(user, call_id, 1, 5099, None)
        t0 = clock()
        reg.flow_opened(flow)
        for event in framer.feed(first):
            reg.receive_message(event, flow, 0.0)
        [out] = reg.transmits_to_send()
        spent += clock() - t0
        challenge = parse_message(out.data)
        assert isinstance(challenge, SipResponse)
        second = _register(user, call_id, 2, 5099, _answer(_challenge(challenge), user, "pw"))
        t0 = clock()
        for event in framer.feed(second):
            reg.receive_message(event, flow, 0.0)
        [out] = reg.transmits_to_send()
        while reg.next_event() is not None:
            pass
        spent += clock() - t0
    assert reg.binding_count == rounds
    return spent / rounds


def bench_parse_baseline(rounds: int) -> float:
    """What the SIP layer costs for the same traffic without the registrar: frame and parse
    the two REGISTERs of each of *rounds* distinct phones (users, Call-IDs, tags, branches and
    contacts all differ, as in :func:`bench_core`) and serialize their two responses.

    The messages are distinct so that the SIP core's parse memos hit as they do for a real
    stream of phones (the retried REGISTER repeats its first's From, To and Contact; the next
    phone does not). Re-parsing one pair, as this baseline used to, made it 1.5x cheaper
    than the traffic the registrar core sees (x1.48-1.56, both baselines measured in the same
    process, three runs) and the core's ratio to it 4.0-4.3 instead of 2.6-3.2."""
    users = {f"u{i:05d}": "pw" for i in range(rounds)}
    reg = Registrar(users, RegistrarConfig(realm=DOMAIN))
    framer = StreamFramer()
    requests: list[tuple[bytes, bytes]] = []
    responses: list[tuple[SipResponse, SipResponse]] = []
    for i, user in enumerate(users):
        # The same traffic as bench_core, and the registrar's real responses to it.
        flow = Flow(id=i, transport="TLS", remote=("127.0.0.1", 10000 + i % 50000),
                    local=("127.0.0.1", 5061))  # fmt: skip
        reg.flow_opened(flow)
        call_id = f"c{i}"
        first = _register(user, call_id, 1, 5099, None)
        for event in framer.feed(first):
            reg.receive_message(event, flow, 0.0)
        [out] = reg.transmits_to_send()
        challenge = parse_message(out.data)
        assert isinstance(challenge, SipResponse)
        second = _register(user, call_id, 2, 5099, _answer(_challenge(challenge), user, "pw"))
        for event in framer.feed(second):
            reg.receive_message(event, flow, 0.0)
        [ok] = reg.transmits_to_send()
        while reg.next_event() is not None:
            pass
        ok_message = parse_message(ok.data)
        assert isinstance(ok_message, SipResponse)
        requests.append((first, second))
        responses.append((challenge, ok_message))
    assert len({first for first, _ in requests}) == rounds
    framer = StreamFramer()  # a fresh one, as the registrar's flows each have their own
    start = time.process_time()
    for (first, second), (challenge, ok_message) in zip(requests, responses, strict=True):
        for data in (first, second):
            [message] = framer.feed(data)
            bytes(message)  # type: ignore[arg-type]
        bytes(challenge)
        bytes(ok_message)
    return (time.process_time() - start) / rounds


# -- the proxy core ------------------------------------------------------------------------

_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2V\r\n"
)


def _call_messages(i: int, auth: str | None, routes: list[str]) -> dict[str, bytes]:
    call_id = f"call{i}"
    def req(method: str, uri: str, branch: str, cseq: int, *, caller: bool, extra: list[str],
            body: str = "", to_tag: bool = False) -> bytes:
        port = 40001 if caller else 40002
        frm, to = ("101", "102") if caller else ("102", "101")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/TLS 127.0.0.1:{port};rport;branch=z9hG4bK{branch}{i}",
            "Max-Forwards: 70",
            f"From: <sip:{frm}@{DOMAIN}>;tag=f{frm}{i}",
            f"To: <sip:{to}@{DOMAIN}>" + (f";tag=f{to}{i}" if to_tag else ""),
            f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
            f"Contact: <sip:{frm}@127.0.0.1:{port};transport=tls>", *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n" + body).encode()

    callee = "sip:102@127.0.0.1:40002;transport=tls"
    return {
        "invite": req("INVITE", f"sip:102@{DOMAIN}", "inv", 1, caller=True,
                      extra=[f"Proxy-Authorization: {auth}"] if auth else [], body=_SDP),
        "ack407": req("ACK", f"sip:102@{DOMAIN}", "inv", 1, caller=True, extra=[],
                      to_tag=True),
        "ack": req("ACK", callee, "ack", 1, caller=True, extra=routes, to_tag=True),
        "bye": req("BYE", "sip:101@127.0.0.1:40001;transport=tls", "bye", 1, caller=False,
                   extra=list(reversed(routes)), to_tag=True),
    }  # fmt: skip


def _reply(data: bytes, status: int, body: str = "") -> bytes:
    message = parse_message(data)
    assert not isinstance(message, SipResponse)
    out = message.create_response(status, to_tag="f102x")
    for value in message.headers.get_all("Record-Route"):
        out.headers.add("Record-Route", value)
    out.headers.add("Contact", "<sip:102@127.0.0.1:40002;transport=tls>")
    if body:
        out.headers.add("Content-Type", "application/sdp")
        out.body = body.encode()
    return bytes(out)


def bench_proxy(rounds: int) -> tuple[float, float]:
    """(proxy CPU per call, baseline CPU per call): six messages in, six out."""
    config = RegistrarConfig(realm=DOMAIN, max_expires=10**9, default_expires=10**9)
    reg = Registrar({"101": "pw", "102": "pw"}, config)
    a = Flow(id=1, transport="TLS", remote=("127.0.0.1", 40001), local=("127.0.0.1", 5061))
    b = Flow(id=2, transport="TLS", remote=("127.0.0.1", 40002), local=("127.0.0.1", 5061))
    framer = StreamFramer()

    def feed(data: bytes, flow: Flow, now: float) -> list[bytes]:
        for event in framer.feed(data):
            reg.receive_message(event, flow, now)
        return [t.data for t in reg.transmits_to_send()]

    for user, flow in (("101", a), ("102", b)):
        reg.flow_opened(flow)
        [out] = feed(_register(user, f"r{user}", 1, flow.remote[1], None), flow, 0.0)
        response = parse_message(out)
        assert isinstance(response, SipResponse)
        answer = _answer(_challenge(response), user, "pw")
        second = _register(user, f"r{user}", 2, flow.remote[1], answer)
        second = second.replace(b"Expires: 300", b"Expires: 999999999")  # outlives the run
        [out] = feed(second, flow, 0.0)
        response = parse_message(out)
        assert isinstance(response, SipResponse) and response.status == 200

    def authorize(i: int, now: float) -> str:
        """The call's own Proxy-Authorization, as a phone gets it: an INVITE, its 407 (the
        nonce is bound to the call), the ACK. Not timed: the figure is the authorized call."""
        invite = _call_messages(i, None, [])["invite"].replace(b"z9hG4bKinv", b"z9hG4bKpre")
        challenge = parse_message(feed(invite, a, now)[-1])
        assert isinstance(challenge, SipResponse) and challenge.status == 407, challenge
        ack = _call_messages(i, None, [])["ack407"].replace(b"z9hG4bKinv", b"z9hG4bKpre")
        feed(ack.replace(f"tag=f102{i}".encode(), f"tag={challenge.to_tag}".encode()), a, now)
        value = challenge.headers.get("Proxy-Authenticate")
        assert value is not None
        chal = DigestChallenge.parse(value, proxy=True)[0]
        uri = f"sip:102@{DOMAIN}"
        digest = compute_response(algorithm="MD5", username="101", realm=chal.realm,
                                  password="pw", nonce=chal.nonce, method="INVITE", uri=uri,
                                  qop="auth", nc=1, cnonce="c")  # fmt: skip
        return str(DigestResponse(username="101", realm=chal.realm, nonce=chal.nonce, uri=uri,
                                  response=digest, algorithm="MD5", cnonce="c", qop="auth",
                                  nc=1))  # fmt: skip

    clock = time.process_time
    spent = 0.0
    base = 0.0
    for i in range(1, rounds + 1):
        now = i * 100.0  # every round's transactions have ended by the next one
        reg.handle_timer(now)
        proxy_auth = authorize(i, now)
        msgs = _call_messages(i, proxy_auth, [])
        t0 = clock()
        fwd_invite = feed(msgs["invite"], a, now)[-1]
        spent += clock() - t0
        ringing, ok = _reply(fwd_invite, 180), _reply(fwd_invite, 200, _SDP)
        t0 = clock()
        feed(ringing, b, now)
        fwd_ok = feed(ok, b, now)[-1]
        spent += clock() - t0
        ok_message = parse_message(fwd_ok)
        routes = [f"Route: {r}" for r in reversed(ok_message.headers.get_all("Record-Route"))]
        msgs = _call_messages(i, proxy_auth, routes)
        t0 = clock()
        fwd_ack = feed(msgs["ack"], a, now)[-1]
        fwd_bye = feed(msgs["bye"], b, now)[-1]
        spent += clock() - t0
        bye_ok = _reply(fwd_bye, 200)
        t0 = clock()
        fwd_bye_ok = feed(bye_ok, a, now)[-1]
        spent += clock() - t0
        # The baseline: the same six messages framed and parsed, six serialized.
        t0 = clock()
        for data in (msgs["invite"], ringing, ok, msgs["ack"], msgs["bye"], bye_ok):
            [message] = framer.feed(data)
            assert not isinstance(message, bytes)
        for data in (fwd_invite, ringing, fwd_ok, fwd_ack, fwd_bye, fwd_bye_ok):
            bytes(parse_message(data))
        base += clock() - t0
    assert reg.proxy.stats["routed"] >= 3 * rounds, reg.proxy.stats
    return spent / rounds, base / rounds


# -- against the lab process ----------------------------------------------------------------


class _Phone(asyncio.Protocol):
    def __init__(self) -> None:
        self.framer = StreamFramer()
        self.waiter: asyncio.Future[SipResponse] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for event in self.framer.feed(data):
            if isinstance(event, SipResponse) and self.waiter and not self.waiter.done():
                self.waiter.set_result(event)

    async def ask(self, data: bytes) -> SipResponse:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return await asyncio.wait_for(self.waiter, 10)


async def _connect(lab: LabProcess, context: TlsClientContext) -> tuple[asyncio.Transport, _Phone]:
    transport, protocol, _ = await open_tls_connection(
        lab.host, lab.ports["tls"], context=context, server_name=lab.server_name,
        protocol_factory=_Phone,
    )  # fmt: skip
    assert isinstance(protocol, _Phone)
    return transport, protocol


async def _run(n: int, concurrency: int, work: object) -> tuple[float, list[object]]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    results: list[object] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            results.append(await work(i))  # type: ignore[operator]

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, results


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def bench_lab(phones: int, concurrency: int) -> None:
    users = {f"u{i:05d}": "pw" for i in range(phones)}
    async with LabProcess(users, transports=["tls"]) as lab:
        assert lab.ca_file is not None and lab.pid is not None
        trust = TrustStore.from_pem(lab.ca_file.read_bytes(), public_roots=False)
        context = TlsClientContext(profile_for("D65", "2_9_2"), trust)

        async def handshake(_i: int) -> object:
            transport, _ = await _connect(lab, context)
            transport.close()
            return None

        await _run(min(100, phones), concurrency, handshake)  # warm-up
        floor_time, _ = await _run(phones, concurrency, handshake)
        floor = phones / floor_time

        held: list[asyncio.Transport] = []
        latencies: list[float] = []
        names = list(users)

        async def register(i: int) -> object:
            t0 = time.perf_counter()
            transport, phone = await _connect(lab, context)
            user, call_id = names[i], secrets.token_hex(8)
            first = await phone.ask(_register(user, call_id, 1, 5099, None))
            assert first.status == 401, first
            ok = await phone.ask(
                _register(user, call_id, 2, 5099, _answer(_challenge(first), user, "pw"))
            )
            assert ok.status == 200, ok
            latencies.append(time.perf_counter() - t0)
            held.append(transport)
            return None

        await asyncio.sleep(0.5)
        rss_before = _rss_kb(lab.pid)
        cpu_before = _cpu_seconds(lab.pid)
        reg_time, _ = await _run(phones, concurrency, register)
        cpu_used = _cpu_seconds(lab.pid) - cpu_before
        await asyncio.sleep(0.5)
        rss_after = _rss_kb(lab.pid)
        rate = phones / reg_time
        print(f"  TLS handshakes, no SIP (floor):  {floor:8.0f} /s  ({phones} connections)")
        print(
            f"  TLS registrations (new conn + REGISTER/401/REGISTER/200): {rate:8.0f} /s  "
            f"= {rate / floor:.2f} x the floor"
        )
        print(f"  registration latency median:    {statistics.median(latencies) * 1000:8.2f} ms")
        print(f"  lab CPU per registration:       {cpu_used / phones * 1e6:8.0f} us")
        print(
            f"  lab RSS growth per registered connected phone: "
            f"{(rss_after - rss_before) / phones:6.1f} KB  ({phones} phones held)"
        )
        for transport in held:
            transport.close()
        await asyncio.sleep(0.2)


def main() -> None:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--phones", type=int, default=1000,
                        help="phones registering over TLS against the lab (default 1000)")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="registrations in flight at once (default 50)")
    parser.add_argument("--core-rounds", type=int, default=5000,
                        help="distinct phones for the in-memory core figures and their "
                             "baseline (default 5000; the proxy uses a fifth)")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop")
    args = parser.parse_args()
    limit = _raise_nofile()
    print(f"bench_lab: {os.cpu_count()} CPUs, RLIMIT_NOFILE {limit}")
    base = bench_parse_baseline(args.core_rounds)
    per = bench_core(args.core_rounds)
    print(
        f"  baseline, {args.core_rounds} distinct phones, frame+parse 2 REGISTERs, serialize "
        f"2 responses: {base * 1e6:8.1f} us"
    )
    print(
        f"  registrar core alone: {per * 1e6:8.1f} us CPU per REGISTER round (challenge + "
        f"auth), {1 / per:8.0f} rounds/s ({args.core_rounds} AORs) = {per / base:.2f} x the "
        "baseline"
    )
    proxy, proxy_base = bench_proxy(args.core_rounds // 5)
    print(f"  baseline, frame+parse 6 call messages, parse+serialize 6: {proxy_base * 1e6:7.1f} us")
    print(
        f"  proxy core alone: {proxy * 1e6:8.1f} us CPU per call routed (INVITE+407 auth, 180, "
        f"200, ACK, BYE, 200), {1 / proxy:8.0f} calls/s = {proxy / proxy_base:.2f} x the "
        "baseline"
    )
    factory = None
    if not args.no_uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(bench_lab(args.phones, args.concurrency))


if __name__ == "__main__":
    main()
