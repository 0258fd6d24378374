"""The sans-I/O TLS client engine, wired to a server in memory: no sockets, no event loop."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phone_sim.firmware import profile_for
from phone_sim.tls.aio_servers import server_ssl_context
from phone_sim.tls.client import (
    ConnectionClosed,
    DataReceived,
    HandshakeCompleted,
    HandshakeFailed,
    TlsClientConnection,
    TlsClientContext,
    TlsEvent,
    TrustStore,
    TrustStoreError,
)
from phone_sim.tls.flags import CertVerifyFlag
from phone_sim.tls.pki import CertKind, TestPki
from phone_sim.tls.verdict import (
    NotTlsPeer,
    TlsError,
    TlsHandshakeError,
    TlsNotSupported,
    TlsVerdict,
)


class MemoryServer:
    """A stdlib ssl server over memory BIOs."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.done = False
        self.received = b""

    def feed(self, data: bytes) -> bytes:
        self.incoming.write(data)
        try:
            if not self.done:
                self.tls.do_handshake()
                self.done = True
            while chunk := self.tls.read(65536):
                self.received += chunk
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        return self.outgoing.read()


def _events(client: TlsClientConnection) -> list[TlsEvent]:
    out = []
    while (e := client.next_event()) is not None:
        out.append(e)
    return out


def _handshake(client: TlsClientConnection, server: MemoryServer) -> list[TlsEvent]:
    client.start()
    events: list[TlsEvent] = []
    for _ in range(10):
        out = client.data_to_send()
        if not out:
            break
        back = server.feed(out)
        if back:
            client.receive_data(back)
        events += _events(client)
    return events


def _server(pki: TestPki, kind: CertKind) -> MemoryServer:
    ctx = server_ssl_context(
        pki.credentials[kind],
        min_version=ssl.TLSVersion.TLSv1_2,
        max_version=ssl.TLSVersion.TLSv1_3,
        ciphers=None,
    )
    return MemoryServer(ctx)


def test_handshake_and_data_in_memory(pki: TestPki, trust: TrustStore) -> None:
    context = TlsClientContext(profile_for("D65"), trust)
    client = context.connect(pki.server_name)
    server = _server(pki, CertKind.GOOD)
    events = _handshake(client, server)
    assert len(events) == 1 and isinstance(events[0], HandshakeCompleted)
    verdict = events[0].verdict
    assert verdict.connects and verdict.bitmask == 0 and client.is_open
    assert verdict.name_check is not None
    assert verdict.name_check.matched_by == "DNS:pbx.phone-sim.test"
    client.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    server.feed(client.data_to_send())
    assert server.received == b"OPTIONS sip:x SIP/2.0\r\n\r\n"
    server.tls.write(b"SIP/2.0 200 OK\r\n\r\n")
    client.receive_data(server.outgoing.read())
    assert _events(client) == [DataReceived(data=b"SIP/2.0 200 OK\r\n\r\n")]
    with pytest.raises(ssl.SSLWantReadError):
        server.tls.unwrap()
    client.receive_data(server.outgoing.read())
    assert _events(client) == [ConnectionClosed(clean=True)]
    assert not client.is_open
    assert client.data_to_send()  # our close_notify in answer


def test_a_context_judges_each_chain_and_name_once(pki: TestPki, trust: TrustStore) -> None:
    # A fleet's phones share a context and meet the same chain: one verdict for all of them
    # (not a parsed copy of the chain per connection), and a new one for anything that
    # changes the verdict's inputs: the chain, or the name it is checked against.
    context = TlsClientContext(profile_for("D65"), trust)

    def verdict(name: str, kind: CertKind) -> TlsVerdict:
        (event,) = _handshake(context.connect(name), _server(pki, kind))
        assert isinstance(event, HandshakeCompleted)
        return event.verdict

    first = verdict(pki.server_name, CertKind.GOOD)
    assert verdict(pki.server_name, CertKind.GOOD) is first
    other_name = verdict("other.example", CertKind.GOOD)
    assert other_name is not first and other_name.bitmask == 0x40000000 and first.bitmask == 0
    other_chain = verdict(pki.server_name, CertKind.GOOD_INTERMEDIATE)
    assert other_chain is not first and len(other_chain.chain) == 2
    assert verdict(pki.server_name, CertKind.UNKNOWN_CA).bitmask == 0x22


def test_refusal_closes_after_the_handshake(pki: TestPki, trust: TrustStore) -> None:
    client = TlsClientContext(profile_for("D80"), trust).connect(pki.server_name)
    events = _handshake(client, _server(pki, CertKind.PATH_LENGTH))
    assert isinstance(events[0], HandshakeCompleted)
    verdict = events[0].verdict
    assert not verdict.connects and verdict.bitmask == CertVerifyFlag.ECHAIN_TOO_LONG
    assert [e.name for e in verdict.errors] == ["PATH_LENGTH_EXCEEDED"]
    assert len(verdict.chain) == 3
    assert not client.is_open
    with pytest.raises(TlsError, match="not open"):
        client.send(b"x")


def test_errors_are_collected_across_the_chain(pki: TestPki, trust: TrustStore) -> None:
    client = TlsClientContext(profile_for("D65", "2_3_9"), trust).connect("other.example")
    events = _handshake(client, _server(pki, CertKind.UNKNOWN_CA))
    assert isinstance(events[0], HandshakeCompleted)
    verdict = events[0].verdict
    # Without partial-chain both errors appear, plus the name: the vendor page's 0x40000022.
    assert {e.name for e in verdict.errors} == {
        "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    }
    assert verdict.bitmask == 0x40000022
    assert verdict.connects and not verdict.enforced  # 2_3_9 does not validate
    assert client.is_open


def test_public_roots_alone_do_not_trust_the_test_root(pki: TestPki) -> None:
    client = TlsClientContext(profile_for("D65")).connect(pki.server_name)
    events = _handshake(client, _server(pki, CertKind.GOOD))
    assert isinstance(events[0], HandshakeCompleted)
    assert events[0].verdict.bitmask == 0x22


def test_firmware_without_tls_fails_at_start(pki: TestPki, trust: TrustStore) -> None:
    client = TlsClientContext(profile_for("D65", "2_0_2_0_78957"), trust).connect("pbx")
    client.start()
    (event,) = _events(client)
    assert isinstance(event, HandshakeFailed) and isinstance(event.error, TlsNotSupported)
    assert event.error.verdict is not None and event.error.verdict.verdict == "fail"


def test_garbage_is_not_tls(trust: TrustStore) -> None:
    client = TlsClientContext(profile_for("D65"), trust).connect("pbx")
    client.start()
    assert client.data_to_send().startswith(b"\x16\x03")  # a handshake record
    client.receive_data(b"SIP/2.0 400 Bad Request\r\n\r\n")
    (event,) = _events(client)
    assert isinstance(event, HandshakeFailed) and isinstance(event.error, NotTlsPeer)


def test_eof_during_handshake(trust: TrustStore) -> None:
    client = TlsClientContext(profile_for("D65"), trust).connect("pbx")
    client.start()
    client.receive_eof()
    (event,) = _events(client)
    assert isinstance(event, HandshakeFailed) and isinstance(event.error, TlsHandshakeError)


def test_trust_store_from_files(pki: TestPki, tmp_path: Path) -> None:
    good = tmp_path / "ca.pem"
    good.write_bytes(pki.trust_pem())
    assert TrustStore.from_files([good]).ca_certificates == pki.trusted
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(TrustStoreError, match="holds no PEM certificate"):
        TrustStore.from_files([empty])
    with pytest.raises(TrustStoreError, match="cannot read CA file"):
        TrustStore.from_files([tmp_path / "missing.pem"])
    with pytest.raises(TrustStoreError):
        TrustStore.from_pem(b"junk")
    assert TrustStore.from_pem(pki.trust_pem()).ca_certificates == pki.trusted


def test_context_sets_release_buffers_and_profile_bounds(trust: TrustStore) -> None:
    from OpenSSL import SSL

    context = TlsClientContext(profile_for("D65"), trust)
    # SSL_CTX_set_mode ORs its argument in and returns the resulting mode.
    assert context.ssl_context.set_mode(0) & SSL.MODE_RELEASE_BUFFERS


def test_anon_and_null_suites_are_offered_last_and_only_before_2_3_9() -> None:
    from OpenSSL import SSL

    def suites(fw: str) -> list[str]:
        context = TlsClientContext(profile_for("D65", fw), TrustStore(public_roots=False))
        return list(SSL.Connection(context.ssl_context, None).get_cipher_list())

    old = suites("2_2_0_4_5a54ff2")
    anon = [i for i, c in enumerate(old) if c.startswith(("ADH-", "AECDH-")) or "NULL" in c]
    authenticated = [
        i
        for i, c in enumerate(old)
        if c.startswith(("ECDHE-ECDSA-", "ECDHE-RSA-")) and "NULL" not in c
    ]
    assert anon and max(authenticated) < min(anon)
    assert not [c for c in suites("2_3_9") if c.startswith(("ADH-", "AECDH-")) or "NULL" in c]


def test_shared_client_context_is_built_once_per_profile(trust: TrustStore) -> None:
    from phone_sim.tls.client import shared_client_context

    a = shared_client_context(profile_for("D65", "2_9_22"), trust)
    assert shared_client_context(profile_for("D65", "2_9_22"), trust) is a
    assert shared_client_context(profile_for("D62", "2_9_22"), trust) is not a
    assert shared_client_context(profile_for("D65", "2_9_22", allow_wildcard=True), trust) is not a


def test_a_certificate_cryptography_cannot_read_is_reported(
    pki: TestPki, trust: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phone_sim.tls import client as client_module

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ValueError("invalid extension encoding")

    monkeypatch.setattr(client_module, "check_server_name", broken)
    client = TlsClientContext(profile_for("D65"), trust).connect(pki.server_name)
    events = _handshake(client, _server(pki, CertKind.GOOD))
    (event,) = events
    assert isinstance(event, HandshakeFailed) and isinstance(event.error, TlsHandshakeError)
    assert "cannot be analysed: invalid extension encoding" in str(event.error)
    assert not client.is_open


@settings(max_examples=100)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4))
def test_any_bytes_from_the_peer_give_events_not_exceptions(chunks: list[bytes]) -> None:
    client = _FUZZ_CONTEXT.connect("pbx.example.com")
    client.start()
    client.data_to_send()
    for chunk in chunks:
        client.receive_data(chunk)
        client.data_to_send()
    client.receive_eof()
    events = _events(client)
    assert all(isinstance(e, HandshakeFailed | ConnectionClosed) for e in events)
    assert sum(isinstance(e, HandshakeFailed) for e in events) <= 1


_FUZZ_CONTEXT = TlsClientContext(profile_for("D65"), TrustStore(public_roots=False))
