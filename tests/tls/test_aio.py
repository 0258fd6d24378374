"""The asyncio TLS transport over real TLS on loopback, held against the golden table."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest

from phone_sim.firmware import FIRMWARE_CLASSES, profile_for
from phone_sim.tls.aio import TlsTransport, open_tls_connection
from phone_sim.tls.aio_servers import start_tls_server
from phone_sim.tls.client import KeyLogWriter, TlsClientContext, TrustStore
from phone_sim.tls.flags import CertVerifyFlag
from phone_sim.tls.matrix import load_golden
from phone_sim.tls.pki import CertKind, TestPki
from phone_sim.tls.verdict import (
    NotTlsPeer,
    TlsConnectError,
    TlsHandshakeError,
    TlsNoSharedCipher,
    TlsNotSupported,
    TlsRefused,
    TlsVersionMismatch,
)

GOLDEN = load_golden()
CELLS = sorted(GOLDEN, key=lambda kc: (kc[0].value, kc[1]))


@pytest.mark.parametrize(("kind", "class_id"), CELLS, ids=[f"{k.value}@{c}" for k, c in CELLS])
async def test_golden_cell_over_real_tls(
    kind: CertKind, class_id: str, pki: TestPki, class_contexts: dict[str, TlsClientContext]
) -> None:
    expected = GOLDEN[(kind, class_id)]
    context = class_contexts[class_id]
    server = await start_tls_server(pki.credentials[kind])
    try:
        if expected.bitmask is None:
            with pytest.raises(TlsNotSupported, match="has no TLS"):
                await open_tls_connection(
                    server.host, server.port, context=context, server_name=pki.server_name
                )
            assert server.handshakes == 0
            return
        if expected.connects:
            transport, _, verdict = await open_tls_connection(
                server.host, server.port, context=context, server_name=pki.server_name
            )
            transport.close()
        else:
            with pytest.raises(TlsRefused) as info:
                await open_tls_connection(
                    server.host, server.port, context=context, server_name=pki.server_name
                )
            verdict = info.value.verdict
            assert verdict is not None
            assert info.value.bitmask == expected.bitmask
        assert int(verdict.bitmask) == expected.bitmask
        assert verdict.connects is expected.connects
        assert verdict.enforced is context.profile.validates_server
        assert verdict.tls_version in ("TLSv1.2",)
    finally:
        await server.close()


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.got = asyncio.Event()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.got.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def test_transport_carries_application_data(pki: TestPki, trust: TrustStore) -> None:
    server = await start_tls_server(pki.credentials[CertKind.GOOD])
    try:
        transport, protocol, verdict = await open_tls_connection(
            server.host,
            server.port,
            profile=profile_for("D65"),
            trust=trust,
            server_name=pki.server_name,
            protocol_factory=Echo,
        )
        assert isinstance(transport, TlsTransport) and isinstance(protocol, Echo)
        assert verdict.connects and verdict.bitmask == 0
        assert transport.get_extra_info("verdict") is verdict
        assert transport.get_extra_info("peername")[0] == "127.0.0.1"
        assert transport.get_extra_info("server_name") == pki.server_name
        message = b"REGISTER sip:pbx.phone-sim.test SIP/2.0\r\n\r\n" * 200
        transport.write(message)
        while len(protocol.received) < len(message):
            protocol.got.clear()
            await asyncio.wait_for(protocol.got.wait(), 5)
        assert bytes(protocol.received) == message
        transport.close()
        assert transport.is_closing()
        assert await asyncio.wait_for(protocol.lost, 5) is None
    finally:
        await server.close()


async def test_one_context_serves_many_connections(
    pki: TestPki, class_contexts: dict[str, TlsClientContext]
) -> None:
    server = await start_tls_server(pki.credentials[CertKind.GOOD_INTERMEDIATE])
    context = class_contexts["2_9_2"]
    try:
        results = await asyncio.gather(
            *(
                open_tls_connection(
                    server.host, server.port, context=context, server_name=pki.server_name
                )
                for _ in range(20)
            )
        )
        assert all(v.connects for _, _, v in results)
        for transport, _, _ in results:
            transport.close()
    finally:
        await server.close()


async def test_sni_is_the_configured_name_and_the_ip_is_never_checked(
    pki: TestPki, trust: TrustStore
) -> None:
    seen: list[str | None] = []
    server = await start_tls_server(pki.credentials[CertKind.GOOD])
    # Record the SNI the server receives.
    ctx = server.ssl_context
    ctx.sni_callback = lambda _obj, name, _ctx: seen.append(name)  # type: ignore[assignment, func-returns-value]
    try:
        context = TlsClientContext(profile_for("D65"), trust)
        transport, _, verdict = await open_tls_connection(
            "127.0.0.1", server.port, context=context, server_name=pki.server_name
        )
        transport.close()
        assert verdict.connects and verdict.server_name == pki.server_name
        assert seen == [pki.server_name]
        # Dialled by its IP with no configured name, the same good certificate fails the name
        # check: the phone compares with what it is configured with, not what DNS gave.
        with pytest.raises(TlsRefused) as info:
            await open_tls_connection("127.0.0.1", server.port, context=context)
        assert info.value.bitmask == CertVerifyFlag.EIDENTITY_NOT_MATCH
        assert seen == [pki.server_name, None]  # RFC 6066 §3: no SNI for an IP literal
    finally:
        await server.close()


async def test_tls13_only_server_names_the_version_mismatch(
    pki: TestPki, trust: TrustStore
) -> None:
    server = await start_tls_server(
        pki.credentials[CertKind.GOOD], min_version=ssl.TLSVersion.TLSv1_3
    )
    try:
        with pytest.raises(
            TlsVersionMismatch, match=r"TLS version mismatch.*TLSv1-TLSv1\.2"
        ) as info:
            await open_tls_connection(
                server.host,
                server.port,
                profile=profile_for("D65"),
                trust=trust,
                server_name=pki.server_name,
            )
        assert info.value.exit_code == 1
        assert info.value.verdict is not None and info.value.verdict.verdict == "fail"
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1, "TLSv1"), (ssl.TLSVersion.TLSv1_1, "TLSv1.1")]
)
async def test_old_tls_server_works_at_seclevel_0(
    version: ssl.TLSVersion, name: str, pki: TestPki, trust: TrustStore
) -> None:
    # Finding: OpenSSL 4.0 (cryptography 50) still negotiates TLS 1.0/1.1 at @SECLEVEL=0.
    server = await start_tls_server(
        pki.credentials[CertKind.GOOD], min_version=version, max_version=version
    )
    try:
        transport, _, verdict = await open_tls_connection(
            server.host,
            server.port,
            profile=profile_for("D65"),
            trust=trust,
            server_name=pki.server_name,
        )
        transport.close()
        assert verdict.tls_version == name and verdict.connects
    finally:
        await server.close()


async def test_anon_ciphers_only_before_2_3_9(pki: TestPki, trust: TrustStore) -> None:
    server = await start_tls_server(
        None, max_version=ssl.TLSVersion.TLSv1_2, ciphers="aNULL:@SECLEVEL=0"
    )
    try:
        transport, _, verdict = await open_tls_connection(
            server.host,
            server.port,
            profile=profile_for("D65", "2_2_0_4_5a54ff2"),
            trust=trust,
            server_name=pki.server_name,
        )
        transport.close()
        assert verdict.connects and not verdict.enforced
        assert str(verdict.cipher).startswith(("ADH-", "AECDH-"))
        assert verdict.chain == () and verdict.reason is not None and "anonymous" in verdict.reason
        for fw in ("2_3_9", "2_9_22"):
            with pytest.raises(TlsNoSharedCipher, match="no cipher in common"):
                await open_tls_connection(
                    server.host,
                    server.port,
                    profile=profile_for("D65", fw),
                    trust=trust,
                    server_name=pki.server_name,
                )
    finally:
        await server.close()


async def test_key_log_file(pki: TestPki, trust: TrustStore, tmp_path: Path) -> None:
    path = tmp_path / "keys.log"
    writer = KeyLogWriter(path)
    server = await start_tls_server(pki.credentials[CertKind.GOOD])
    try:
        context = TlsClientContext(profile_for("D65"), trust, keylog=writer)
        transport, _, _ = await open_tls_connection(
            server.host, server.port, context=context, server_name=pki.server_name
        )
        transport.close()
    finally:
        writer.close()
        await server.close()
    lines = path.read_text().splitlines()
    # TLS 1.2: one CLIENT_RANDOM line, <label> <64 hex client random> <96 hex master secret>.
    assert lines and all(line.startswith("CLIENT_RANDOM ") for line in lines)
    _label, random, secret = lines[0].split()
    assert len(random) == 64 and len(secret) == 96
    int(random, 16), int(secret, 16)


async def test_verification_time_is_the_phones_clock(pki: TestPki, trust: TrustStore) -> None:
    import datetime as dt

    server = await start_tls_server(pki.credentials[CertKind.GOOD])
    try:
        future = dt.datetime.now(dt.UTC) + dt.timedelta(days=3 * 365)
        context = TlsClientContext(profile_for("D65"), trust, at=future)
        with pytest.raises(TlsRefused) as info:
            await open_tls_connection(
                server.host, server.port, context=context, server_name=pki.server_name
            )
        assert info.value.bitmask == CertVerifyFlag.EVALIDITY_PERIOD
    finally:
        await server.close()


async def test_refused_port_is_a_clear_network_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TlsConnectError, match=r"connection refused by 127\.0\.0\.1:") as info:
        await open_tls_connection("127.0.0.1", port, profile=profile_for("D65"))
    assert info.value.exit_code == 2


async def test_non_tls_peer_is_named() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NotTlsPeer, match="does not speak TLS") as info:
            await open_tls_connection("127.0.0.1", port, profile=profile_for("D65"))
        assert info.value.exit_code == 2
    finally:
        server.close()


async def test_silent_peer_times_out_clearly() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NotTlsPeer, match=r"no TLS answer .* within 0.3 s"):
            await open_tls_connection(
                "127.0.0.1", port, profile=profile_for("D65"), handshake_timeout=0.3
            )
    finally:
        server.close()


async def test_closing_peer_without_answer() -> None:
    async def closer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(closer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NotTlsPeer, match="without a TLS answer"):
            await open_tls_connection("127.0.0.1", port, profile=profile_for("D65"))
    finally:
        server.close()


async def test_ipv6_loopback(pki: TestPki, trust: TrustStore) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = await start_tls_server(pki.credentials[CertKind.GOOD], host="::1")
    except OSError:
        pytest.skip("::1 not configured")
    try:
        transport, _, verdict = await open_tls_connection(
            "::1",
            server.port,
            profile=profile_for("D80"),
            trust=trust,
            server_name=pki.server_name,
        )
        transport.close()
        assert verdict.connects and verdict.profile.user_agent == "Digium D80 1_12_1"
    finally:
        await server.close()


def test_no_tls_classes_exist() -> None:
    assert [c.id for c in FIRMWARE_CLASSES if not c.profile.tls_supported] == ["no-tls"]


async def test_data_sent_right_after_the_handshake_is_not_lost(
    pki: TestPki, trust: TrustStore
) -> None:
    # The server's first bytes can arrive with its Finished, before the protocol is attached.
    server = await start_tls_server(pki.credentials[CertKind.GOOD], greeting=b"OPTIONS ping\r\n")
    try:
        for _ in range(5):
            transport, protocol, _ = await open_tls_connection(
                server.host,
                server.port,
                profile=profile_for("D65"),
                trust=trust,
                server_name=pki.server_name,
                protocol_factory=Echo,
            )
            assert isinstance(protocol, Echo)
            while bytes(protocol.received) != b"OPTIONS ping\r\n":
                protocol.got.clear()
                await asyncio.wait_for(protocol.got.wait(), 5)
            transport.close()
    finally:
        await server.close()


def test_transport_under_uvloop(pki: TestPki, trust: TrustStore) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def run() -> bytes:
        server = await start_tls_server(pki.credentials[CertKind.GOOD])
        try:
            transport, protocol, verdict = await open_tls_connection(
                server.host,
                server.port,
                profile=profile_for("D62"),
                trust=trust,
                server_name=pki.server_name,
                protocol_factory=Echo,
            )
            assert verdict.connects and isinstance(protocol, Echo)
            transport.write(b"ping")
            await asyncio.wait_for(protocol.got.wait(), 5)
            transport.close()
            await asyncio.wait_for(protocol.lost, 5)
            return bytes(protocol.received)
        finally:
            await server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(run()) == b"ping"


def test_connect_errors_read_well() -> None:
    from phone_sim.tls.aio import _connect_error

    gai = _connect_error(
        "nosuch.invalid", 5061, socket.gaierror(-2, "Name or service not known"), 10
    )
    assert str(gai) == "cannot resolve 'nosuch.invalid': Name or service not known"
    late = _connect_error("192.0.2.1", 5061, TimeoutError(), 2.5)
    assert str(late) == "no answer from 192.0.2.1:5061 within 2.5 s: host unreachable?"
    other = _connect_error("h", 1, OSError(101, "Network is unreachable"), 1)
    assert str(other) == "cannot connect to h:1: Network is unreachable"
    assert gai.exit_code == late.exit_code == other.exit_code == 2


@pytest.mark.parametrize("top", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_1])
async def test_server_requiring_a_client_certificate(
    top: ssl.TLSVersion, pki: TestPki, trust: TrustStore
) -> None:
    server = await start_tls_server(
        pki.credentials[CertKind.GOOD], max_version=top, client_ca_pem=pki.trust_pem()
    )
    try:
        with pytest.raises(TlsHandshakeError, match="requires a client certificate") as info:
            await open_tls_connection(
                server.host,
                server.port,
                profile=profile_for("D65"),
                trust=trust,
                server_name=pki.server_name,
            )
        assert not isinstance(info.value, TlsNoSharedCipher)
        assert info.value.exit_code == 1
    finally:
        await server.close()
