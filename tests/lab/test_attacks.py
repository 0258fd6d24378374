"""The lab under the attacks of issue #10, on real loopback sockets, at small scale with lowered
limits (the full-size figures are in benchmarks/bench_lab_attacks.py).

Each test is one finding: it failed before the fix and passes after.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phone_sim.lab import FlowLost, Lab, LabLimits
from phone_sim.sip.digest import DigestChallenge, DigestResponse, compute_response
from phone_sim.sip.message import SipResponse
from tests.lab.sipclient import RegisterClient
from tests.lab.test_aio import Collector, register_stream, tcp_connect, tls_connect

pytestmark = pytest.mark.timeout(60)

USERS = {"101": "1234", "102": "1234"}
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
    " WSH=²\r\n"
).encode()


def _request(method: str, uri: str, *, user: str = "101", to: str = "600",
             to_tag: str | None = None, cseq: int = 1, call_id: str = "atk",
             extra: tuple[str, ...] = (), body: bytes = b"") -> bytes:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/TCP 127.0.0.1:5099;rport;branch=z9hG4bK{secrets.token_hex(6)}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@lab.phone-sim.test>;tag=f{user}",
        f"To: <sip:{to}@lab.phone-sim.test>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{user}@127.0.0.1:5099;transport=tcp>",
        *extra,
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _final(conn: Collector, data: bytes) -> SipResponse:
    assert conn.transport is not None
    conn.transport.write(data)
    async with asyncio.timeout(10):
        while True:
            event = await conn.queue.get()
            if isinstance(event, SipResponse) and event.status >= 200:
                return event


def _closed(conn: Collector) -> bool:
    return conn.lost.done()


async def _wait_closed(conn: Collector, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        await conn.lost


async def _connect_from(lab: Lab, address: str, transport: str = "tcp") -> Collector:
    loop = asyncio.get_running_loop()
    _t, protocol = await loop.create_connection(
        Collector, lab.host, lab.ports[transport], local_addr=(address, 0)
    )
    return protocol


# -- Security -----------------------------------------------------------------------------------


async def test_a_made_up_to_tag_never_reaches_the_phone() -> None:
    async with Lab(USERS, transports=["tcp"]) as lab:
        phone_conn = await tcp_connect(lab)
        phone = RegisterClient("102", "1234", transport="TCP")
        assert (await register_stream(phone_conn, phone)).status == 200
        attacker = await tcp_connect(lab)
        for n, user in enumerate(("102", "103", "999")):
            answer = await _final(attacker, _request(
                "MESSAGE", f"sip:{user}@lab.phone-sim.test", user="666", to=user,
                to_tag="madeup", cseq=n + 1))  # fmt: skip
            assert (answer.status, answer.headers.get("Server")) == (481, "phone-sim lab")
        await asyncio.sleep(0.2)
        assert phone_conn.queue.empty()  # nothing was forwarded down the phone's connection


async def test_a_crafted_digest_gets_an_answer_and_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Lab(USERS, transports=["tcp"]) as lab:
        conn = await tcp_connect(lab)
        phone = RegisterClient("101", "1234", transport="TCP")
        phone.take(bytes(await conn.ask(phone.register())))  # the 401
        good = phone.register()
        start = good.index(b'response="') + len(b'response="')
        crafted = good[:start] + "é".encode() * 32 + good[start + 32:]
        assert (await conn.ask(crafted)).status == 400
        # Over TCP the connection survives and the lab still answers on it.
        assert (await register_stream(conn, phone)).status == 200
        assert not _closed(conn)
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_crafted_sdes_offer_to_the_echo_gets_488_with_a_warning() -> None:
    async with Lab(USERS, transports=["tcp"]) as lab:
        conn = await tcp_connect(lab)
        phone = RegisterClient("101", "1234", transport="TCP")
        assert (await register_stream(conn, phone)).status == 200
        uri = "sip:600@lab.phone-sim.test"
        started = time.monotonic()
        challenged = await _final(conn, _request("INVITE", uri, body=SDP))
        assert challenged.status == 407
        await _final_ack(conn, challenged)
        chal = DigestChallenge.parse(challenged.headers.get("Proxy-Authenticate") or "",
                                     proxy=True)[0]
        auth = _proxy_auth(chal, "INVITE", uri)
        answer = await _final(conn, _request("INVITE", uri, cseq=2, body=SDP,
                                             extra=(f"Proxy-Authorization: {auth}",)))
        assert answer.status == 488
        assert "WSH" in (answer.headers.get("Warning") or "")
        assert time.monotonic() - started < 10  # not 100 Trying until 487 after ~212 s


async def _final_ack(conn: Collector, response: SipResponse) -> None:
    assert conn.transport is not None
    via = response.headers.get("Via") or ""
    ack = (
        f"ACK sip:600@lab.phone-sim.test SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        f"From: {response.headers.get('From')}\r\nTo: {response.headers.get('To')}\r\n"
        f"Call-ID: {response.call_id}\r\nCSeq: {response.cseq.seq} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    conn.transport.write(ack.encode())


def _proxy_auth(challenge: DigestChallenge, method: str, uri: str) -> str:
    cnonce = secrets.token_hex(4)
    digest = compute_response(algorithm="MD5", username="101", realm=challenge.realm,
                              password="1234", nonce=challenge.nonce, method=method, uri=uri,
                              qop="auth", nc=1, cnonce=cnonce)
    return str(DigestResponse(username="101", realm=challenge.realm, nonce=challenge.nonce,
                              uri=uri, response=digest, algorithm="MD5", cnonce=cnonce,
                              qop="auth", nc=1))


# -- Resource limits ------------------------------------------------------------------------


async def test_bytes_dripped_slower_than_a_message_are_not_a_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="phone_sim.lab")
    limits = LabLimits(first_message_timeout=0.5)
    async with Lab(USERS, transports=["tcp", "tls"], limits=limits) as lab:
        tcp = await tcp_connect(lab)
        tls = await tls_connect(lab)  # the handshake done, then the same drip
        for conn in (tcp, tls):
            assert conn.transport is not None
        async with asyncio.timeout(5):
            for byte in b"OPTIONS sip:lab.phone-sim.test SIP/2.0\r\n":
                for conn in (tcp, tls):
                    if not _closed(conn):
                        conn.transport.write(bytes([byte]))  # type: ignore[union-attr]
                if _closed(tcp) and _closed(tls):
                    break
                await asyncio.sleep(0.05)
        assert _closed(tcp) and _closed(tls)
        assert "no complete SIP message within 0.5 s" in caplog.text
        # A phone that says what it has to say is not affected.
        phone_conn = await tcp_connect(lab)
        phone = RegisterClient("101", "1234", transport="TCP")
        assert (await register_stream(phone_conn, phone)).status == 200
        await asyncio.sleep(0.8)
        assert not _closed(phone_conn)


async def test_silent_connections_at_the_cap_make_room_for_phones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="phone_sim.lab")
    limits = LabLimits(max_connections=20)
    async with Lab(USERS, transports=["tcp", "tls"], limits=limits) as lab:
        silent = [await _connect_from(lab, "127.0.0.2") for _ in range(30)]
        await asyncio.sleep(0.1)
        assert sum(not _closed(c) for c in silent) <= 20
        # TCP and TLS registration still work: the oldest silent connections make room.
        conn = await tcp_connect(lab)
        assert (await register_stream(conn, RegisterClient("101", "1234", transport="TCP"))
                ).status == 200
        tls = await tls_connect(lab)
        assert (await register_stream(tls, RegisterClient("102", "1234"))).status == 200
        assert lab.connections <= 20
        assert "max_connections" in caplog.text


async def test_connections_per_source_are_capped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="phone_sim.lab")
    limits = LabLimits(max_connections_per_source=5)
    async with Lab(USERS, transports=["tcp"], limits=limits) as lab:
        talkers = []
        for n in range(5):
            conn = await _connect_from(lab, "127.0.0.2")
            options = _request("OPTIONS", "sip:lab.phone-sim.test", call_id=f"o{n}")
            assert (await _final(conn, options)).status == 200
            talkers.append(conn)
        extra = await _connect_from(lab, "127.0.0.2")
        await _wait_closed(extra)
        assert not any(_closed(c) for c in talkers)
        assert "127.0.0.2 holds 5 connections (max_connections_per_source)" in caplog.text
        phone_conn = await tcp_connect(lab)  # 127.0.0.1 is another source
        assert (await register_stream(phone_conn, RegisterClient("101", "1234",
                                                                 transport="TCP"))).status == 200


async def test_body_hoarding_across_connections_is_bounded() -> None:
    limits = LabLimits(max_buffered_bytes=400_000)
    async with Lab(USERS, transports=["tcp"], limits=limits) as lab:
        hoarders = []
        for n in range(6):
            conn = await tcp_connect(lab)
            assert conn.transport is not None
            head = _request("MESSAGE", "sip:lab.phone-sim.test", call_id=f"h{n}")
            head = head.replace(b"Content-Length: 0", b"Content-Length: 262143")
            conn.transport.write(head + b"x" * 100_000)
            hoarders.append(conn)
            await asyncio.sleep(0.05)
        async with asyncio.timeout(5):
            while sum(_closed(c) for c in hoarders) < 2:
                await asyncio.sleep(0.02)
        # The ones that held their bytes longest went; the lab holds no more than its budget.
        assert _closed(hoarders[0]) and _closed(hoarders[1])
        assert not any(_closed(c) for c in hoarders[4:])
        assert lab.guard.buffered <= 400_000
        phone_conn = await tcp_connect(lab)
        assert (await register_stream(phone_conn, RegisterClient("101", "1234",
                                                                 transport="TCP"))).status == 200


class _NoReader(asyncio.Protocol):
    """A client that never reads what the lab sends."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def test_a_client_that_never_reads_cannot_make_the_lab_buffer_its_answers() -> None:
    limits = LabLimits(max_write_buffer=256 * 1024)
    async with Lab(USERS, transports=["tcp"], limits=limits) as lab:
        loop = asyncio.get_running_loop()
        _t, client = await loop.create_connection(_NoReader, lab.host, lab.ports["tcp"])
        assert client.transport is not None
        template = _request("OPTIONS", "sip:lab.phone-sim.test", call_id="flood-00000")
        # Distinct requests (one branch each), more answers than the kernel's socket buffers
        # take (a few MB on loopback): the rest would pile up in the lab.
        for burst in range(8):
            client.transport.write(b"".join(
                template.replace(b"flood-00000", f"flood-{burst}{n:04d}".encode())
                .replace(b"branch=z9hG4bK", f"branch=z9hG4bK{burst}x{n}".encode())
                for n in range(2500)))  # fmt: skip
            await asyncio.sleep(0.2)
        assert lab.stats["paused_reading"] >= 1
        # Reading stops at a quarter of the bound; one answer more may still go out.
        assert lab.stats["write_buffer_peak"] <= limits.write_pause_bytes + 4096
        assert lab.stats["dropped_write_buffer"] == 0
        client.transport.abort()


async def test_a_phone_that_never_reads_is_dropped_when_its_write_buffer_passes_the_bound() -> None:
    limits = LabLimits(max_write_buffer=256 * 1024)
    async with Lab(USERS, transports=["tcp"], limits=limits) as lab:
        loop = asyncio.get_running_loop()
        conn = await tcp_connect(lab)
        assert (await register_stream(conn, RegisterClient("101", "1234", transport="TCP"))
                ).status == 200
        assert conn.transport is not None
        conn.transport.pause_reading()
        # The lab sends it more than it reads (as the proxy forwarding calls to it would),
        # beyond what the kernel's socket buffers take.
        tasks = [loop.create_task(lab.request("101", "MESSAGE", body=b"x" * 100_000, timeout=5))
                 for _ in range(120)]
        try:
            # (The client, not reading, would not even see the reset: ask the lab.)
            lost = await lab.wait_event(lambda e: isinstance(e, FlowLost), timeout=5)
            assert isinstance(lost, FlowLost) and lost.aors == ("sip:101@lab.phone-sim.test",)
            assert lab.stats["dropped_write_buffer"] == 1 and lab.connections == 0
            assert lab.stats["write_buffer_peak"] <= limits.max_write_buffer + 110_000
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_flood_of_failed_handshakes_is_one_warning_and_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="phone_sim.lab")
    limits = LabLimits(warning_interval=0.5)
    async with Lab(USERS, transports=["tls"], limits=limits) as lab:
        for _ in range(40):
            reader, writer = await asyncio.open_connection(lab.host, lab.ports["tls"])
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            async with asyncio.timeout(5):
                await reader.read()
            writer.close()
        await asyncio.sleep(0.8)
        lines = [r.getMessage() for r in caplog.records]
        assert sum("TLS handshake failed" in line for line in lines) == 1
        assert any("39 more" in line and "TLS" in line for line in lines), lines
        assert lab.tls_failures == 40


def test_the_open_file_limit_is_raised_where_allowed(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"the hard open-file limit here is {hard}")

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    process = subprocess.Popen(
        [sys.executable, "-m", "phone_sim", "lab", "--json", "--quiet", "--transport", "tcp",
         "--tcp-port", "0", "--udp-port", "0", "--no-echo"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lower,  # noqa: PLW1509
    )
    try:
        assert process.stdout is not None
        assert b'"ready": true' in process.stdout.readline()
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        raised = int(line.split()[3])
        assert raised > 256, line
    finally:
        process.terminate()
        process.communicate(timeout=10)
    del soft
