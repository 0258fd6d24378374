"""The lab on real loopback sockets: TLS (the phone's own TLS client), TCP and UDP."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import warnings
from pathlib import Path

import pytest

from phone_sim.firmware import FIRMWARE_CLASSES, profile_for
from phone_sim.lab import (
    BindingExpired,
    FlowLost,
    Lab,
    LabError,
    LabLimits,
    LabUser,
    LimitsError,
    PhoneUnreachable,
    RegistrarConfig,
)
from phone_sim.sip.framer import KeepAlivePongReceived, StreamFramer
from phone_sim.sip.message import SipRequest, SipResponse, parse_message
from phone_sim.tls.aio import open_tls_connection
from phone_sim.tls.client import TrustStore
from tests.lab.sipclient import RegisterClient

USERS = {"101": "1234", "102": "1234"}


class Collector(asyncio.Protocol):
    """Frames what the lab sends back into a queue."""

    def __init__(self) -> None:
        self.framer = StreamFramer()
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for event in self.framer.feed(data):
            self.queue.put_nowait(event)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    async def ask(self, data: bytes) -> SipResponse:
        assert self.transport is not None
        self.transport.write(data)
        async with asyncio.timeout(5):
            event = await self.queue.get()
        assert isinstance(event, SipResponse), event
        return event


async def tls_connect(lab: Lab, firmware: str = "2_9_2", model: str = "D65") -> Collector:
    _transport, protocol, verdict = await open_tls_connection(
        lab.host,
        lab.ports["tls"],
        profile=profile_for(model, firmware),
        trust=TrustStore.from_pem(lab.ca_pem, public_roots=False),
        server_name=lab.server_name,
        protocol_factory=Collector,
    )
    assert verdict.connects, verdict
    assert isinstance(protocol, Collector)
    return protocol


async def tcp_connect(lab: Lab) -> Collector:
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_connection(Collector, lab.host, lab.ports["tcp"])
    return protocol


async def register_stream(conn: Collector, phone: RegisterClient, **kwargs: object) -> SipResponse:
    first = phone.take(bytes(await conn.ask(phone.register(**kwargs))))  # type: ignore[arg-type]
    if first.status != 401:
        return first
    return phone.take(bytes(await conn.ask(phone.register(**kwargs))))  # type: ignore[arg-type]


async def test_tls_registration_binds_to_the_connection() -> None:
    async with Lab(USERS) as lab:
        assert lab.ca_file is not None and lab.ca_file.read_bytes() == lab.ca_pem
        conn = await tls_connect(lab)
        phone = RegisterClient("101", "1234", domain=lab.server_name)
        response = await register_stream(conn, phone)
        assert response.status == 200
        [binding] = lab.bindings("101")
        assert binding.flow.transport == "TLS" and binding.flow_alive
        assert binding.source == binding.flow.remote
        assert await lab.wait_binding("101") == binding
        assert lab.tls_handshakes == 1
        # The connection goes away: the binding stays, unreachable (docs/lab.md).
        assert conn.transport is not None
        conn.transport.close()
        lost = await lab.wait_event(lambda e: isinstance(e, FlowLost), timeout=5)
        assert isinstance(lost, FlowLost) and lost.aors == (binding.aor,)
        [binding] = lab.bindings("101")
        assert not binding.flow_alive
        ca_file = lab.ca_file
    assert not ca_file.exists()  # the temporary directory is removed


@pytest.mark.parametrize(
    "klass", [c for c in FIRMWARE_CLASSES if c.profile.tls_supported], ids=lambda c: c.id
)
async def test_every_tls_firmware_connects(klass: object) -> None:
    profile = klass.profile  # type: ignore[attr-defined]
    async with Lab(USERS, transports=["tls"]) as lab:
        conn = await tls_connect(lab, profile.firmware, profile.model.value)
        options = (
            f"OPTIONS sip:{lab.server_name} SIP/2.0\r\n"
            "Via: SIP/2.0/TLS 127.0.0.1:5099;rport;branch=z9hG4bKPjopt\r\n"
            f"From: <sip:101@{lab.server_name}>;tag=1\r\nTo: <sip:{lab.server_name}>\r\n"
            "Call-ID: opt1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        assert (await conn.ask(options)).status == 200


async def test_tcp_registration_and_keepalive_pong() -> None:
    async with Lab(USERS, transports=["tcp"]) as lab:
        assert lab.ca_file is None and "tls" not in lab.ports
        conn = await tcp_connect(lab)
        phone = RegisterClient("102", "1234", transport="TCP", domain=lab.server_name)
        assert (await register_stream(conn, phone)).status == 200
        assert conn.transport is not None
        conn.transport.write(b"\r\n\r\n")  # RFC 5626 4.4.1 ping
        async with asyncio.timeout(5):
            assert isinstance(await conn.queue.get(), KeepAlivePongReceived)
        assert lab.bindings("102")[0].flow.transport == "TCP"


async def test_udp_registration() -> None:
    async with Lab(USERS, transports=["udp"]) as lab:
        loop = asyncio.get_running_loop()
        received: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                received.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=(lab.host, lab.ports["udp"])
        )
        try:
            port = transport.get_extra_info("sockname")[1]
            phone = RegisterClient(
                "101", "1234", transport="UDP", domain=lab.server_name, local=("127.0.0.1", port)
            )
            for _ in range(2):
                transport.sendto(phone.register())
                async with asyncio.timeout(5):
                    response = phone.take(await received.get())
            assert response.status == 200
            [binding] = lab.bindings("101")
            assert binding.flow.transport == "UDP" and binding.source == ("127.0.0.1", port)
        finally:
            transport.close()


async def test_binding_expires_on_the_loop_clock() -> None:
    config = RegistrarConfig(realm="lab.phone-sim.test", min_expires=1)
    async with Lab(USERS, transports=["tcp"], config=config) as lab:
        conn = await tcp_connect(lab)
        phone = RegisterClient("101", "1234", transport="TCP")
        assert (await register_stream(conn, phone, expires=1)).status == 200
        event = await lab.wait_event(lambda e: isinstance(e, BindingExpired), timeout=5)
        assert isinstance(event, BindingExpired)
        assert lab.bindings("101") == []


async def test_not_tls_on_the_tls_port_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="phone_sim.lab.aio")
    async with Lab(USERS, transports=["tls"]) as lab:
        reader, writer = await asyncio.open_connection(lab.host, lab.ports["tls"])
        writer.write(b"REGISTER sip:lab SIP/2.0\r\n\r\n")
        async with asyncio.timeout(5):
            rest = await reader.read()  # the alert, then EOF
        writer.close()
        assert len(rest) < 64
        assert lab.tls_failures == 1
        assert "TLS handshake failed" in caplog.text
        # the lab still works
        conn = await tls_connect(lab)
        phone = RegisterClient("101", "1234", domain=lab.server_name)
        assert (await register_stream(conn, phone)).status == 200


async def test_silent_tls_client_is_dropped_after_the_handshake_timeout() -> None:
    async with Lab(USERS, transports=["tls"], limits=LabLimits(handshake_timeout=0.2)) as lab:
        reader, writer = await asyncio.open_connection(lab.host, lab.ports["tls"])
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        assert lab.tls_failures == 1


async def test_unframeable_stream_gets_400_then_close() -> None:
    async with Lab(USERS, transports=["tcp"]) as lab:
        conn = await tcp_connect(lab)
        assert conn.transport is not None
        conn.transport.write(
            b"OPTIONS sip:lab SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:lab>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
        )
        async with asyncio.timeout(5):
            response = await conn.queue.get()
            await conn.lost
        assert isinstance(response, SipResponse) and response.status == 400
        assert "Content-Length" in response.reason


async def test_users_with_authname_and_state_dir(tmp_path: Path) -> None:
    users = [LabUser(username="201", password="pw", authname="a201")]
    async with Lab(users, transports=["tls"], state_dir=tmp_path / "lab") as lab:
        assert lab.ca_file == tmp_path / "lab" / "ca.pem"
        conn = await tls_connect(lab)
        phone = RegisterClient("201", "pw", authname="a201", domain=lab.server_name)
        assert (await register_stream(conn, phone)).status == 200
        info = lab.describe()
        assert info["ports"] == lab.ports and info["users"] == ["201"]
        assert lab.uri("tls") == f"sip:127.0.0.1:{lab.ports['tls']};transport=tls"
    assert (tmp_path / "lab" / "ca.pem").exists()


async def test_bad_settings_are_named() -> None:
    with pytest.raises(LabError, match="IP address"):
        Lab(USERS, host="lab.example")
    with pytest.raises(LabError, match="needs its own users"):
        Lab(host="0.0.0.0")
    with pytest.raises(LabError, match="transport"):
        Lab(USERS, transports=["sctp"])
    with pytest.raises(LabError, match="out of range"):
        Lab(USERS, tls_port=70000)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        lab = Lab(USERS, transports=["tcp"], tcp_port=port)
        with pytest.raises(LabError, match=f"cannot listen for TCP on 127.0.0.1:{port}"):
            await lab.start()
    with pytest.raises(LabError, match="not running"):
        await Lab(USERS).wait_event(lambda e: True)


async def test_response_is_parseable_by_the_message_layer() -> None:
    # Round trip through the real bytes: what the lab sends parses as it was built.
    async with Lab(USERS, transports=["tcp"]) as lab:
        conn = await tcp_connect(lab)
        phone = RegisterClient("101", "1234", transport="TCP")
        response = await register_stream(conn, phone)
        assert parse_message(bytes(response)) == response


async def test_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    async with Lab(USERS, host="::1", transports=["tls", "tcp"]) as lab:
        assert lab.uri("tcp") == f"sip:[::1]:{lab.ports['tcp']};transport=tcp"
        loop = asyncio.get_running_loop()
        _t, conn = await loop.create_connection(Collector, "::1", lab.ports["tcp"])
        phone = RegisterClient("101", "1234", transport="TCP", local=("[::1]", 5099))
        assert (await register_stream(conn, phone)).status == 200
        assert lab.bindings("101")[0].source[0] == "::1"
        tls = await tls_connect(lab)
        phone2 = RegisterClient("102", "1234", local=("[::1]", 5098))
        assert (await register_stream(tls, phone2)).status == 200


async def test_lab_sends_a_request_to_the_phone_over_its_connection() -> None:
    async with Lab(USERS, transports=["tcp"]) as lab:
        conn = await tcp_connect(lab)
        phone = RegisterClient("101", "1234", transport="TCP")
        assert (await register_stream(conn, phone)).status == 200

        async def answer() -> None:
            async with asyncio.timeout(5):
                request = await conn.queue.get()
            assert isinstance(request, SipRequest) and request.method == "OPTIONS"
            assert conn.transport is not None
            conn.transport.write(bytes(request.create_response(200, to_tag="p1")))

        answering = asyncio.create_task(answer())
        response = await lab.request("101", "OPTIONS", timeout=5)
        await answering
        assert response.status == 200 and response.to_tag == "p1"
        with pytest.raises(PhoneUnreachable):
            await lab.request("102")
        silent = asyncio.create_task(lab.request("101", "OPTIONS", timeout=0.3))
        with pytest.raises(LabError, match="did not answer OPTIONS"):
            await silent


async def test_idle_connection_without_binding_is_closed_but_a_phones_is_kept() -> None:
    async with Lab(USERS, transports=["tcp"], limits=LabLimits(idle_timeout=0.3)) as lab:
        idle = await tcp_connect(lab)
        options = (
            f"OPTIONS sip:{lab.server_name} SIP/2.0\r\n"
            "Via: SIP/2.0/TCP 127.0.0.1:5099;rport;branch=z9hG4bKPjidle\r\n"
            f"From: <sip:101@{lab.server_name}>;tag=1\r\nTo: <sip:{lab.server_name}>\r\n"
            "Call-ID: idle1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        assert (await idle.ask(options)).status == 200  # it spoke once, then idles
        assert idle.transport is not None
        idle.transport.write(b"\r\n\r\n")  # keep-alives do not keep a connection
        phone_conn = await tcp_connect(lab)
        phone = RegisterClient("101", "1234", transport="TCP")
        assert (await register_stream(phone_conn, phone)).status == 200
        async with asyncio.timeout(5):
            await idle.lost
        await asyncio.sleep(0.5)
        assert not phone_conn.lost.done()
        assert lab.connections == 1


async def test_connections_beyond_the_cap_are_dropped() -> None:
    async with Lab(USERS, transports=["tcp"], limits=LabLimits(max_connections=1)) as lab:
        first = await tcp_connect(lab)
        phone = RegisterClient("101", "1234", transport="TCP")
        assert (await register_stream(first, phone)).status == 200
        second = await tcp_connect(lab)
        async with asyncio.timeout(5):
            await second.lost
        assert not first.lost.done() and lab.connections == 1
    with pytest.raises(LimitsError, match="idle_timeout"):
        LabLimits(idle_timeout=0)
    with pytest.raises(LimitsError, match="max_connections"):
        LabLimits(max_connections=0)


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1", "TLSv1_2", "TLSv1_3"])
async def test_every_tls_version_the_firmware_or_a_pbx_speaks(version: str) -> None:
    """The standard library's ssl (the system OpenSSL: another TLS stack) pinned to one
    version: TLS 1.0-1.3 are accepted, as Asterisk's method=sslv23 does."""
    async with Lab(USERS, transports=["tls"]) as lab:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[version]
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.load_verify_locations(cadata=lab.ca_pem.decode())
        try:
            reader, writer = await asyncio.open_connection(
                lab.host, lab.ports["tls"], ssl=ctx, server_hostname=lab.server_name
            )
        except ssl.SSLError as exc:  # pragma: no cover - depends on the system OpenSSL
            pytest.skip(f"the system OpenSSL refuses {version} here: {exc}")
        tls_object = writer.get_extra_info("ssl_object")
        assert tls_object.version() == version.replace("_", ".")
        phone = RegisterClient("101", "1234", domain=lab.server_name)
        writer.write(phone.register())
        response = phone.take(await _read_message(reader))
        assert response.status == 401
        writer.close()


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)
