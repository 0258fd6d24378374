"""The phone's TLS client as a sans-I/O engine: pyOpenSSL over memory BIOs.

:class:`TlsClientContext` is built once per (profile, trust store, clock) and shared by any
number of connections: building it loads the public roots, which costs milliseconds, while a
connection costs microseconds. :class:`TlsClientConnection` takes bytes from the network with
:meth:`~TlsClientConnection.receive_data` and hands back bytes to send with
:meth:`~TlsClientConnection.data_to_send` and events with
:meth:`~TlsClientConnection.next_event`, like h11 or aioquic. The asyncio transport in
:mod:`phone_sim.tls.aio` is a thin pump around it.

The verify callback never stops the handshake: it records every error OpenSSL reports across
the chain (OpenSSL's partial-chain flag is deliberately *not* set, PROTOCOL-NOTES §6) and the
firmware's policy is applied when the handshake completes, as pjsip does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import certifi
from cryptography import x509
from OpenSSL import SSL, crypto

from phone_sim.errors import UsageError
from phone_sim.firmware import FirmwareProfile, TlsVersion
from phone_sim.tls._openssl import verify_error_name, verify_error_string
from phone_sim.tls.names import check_server_name
from phone_sim.tls.verdict import (
    NotTlsPeer,
    TlsError,
    TlsHandshakeError,
    TlsNoSharedCipher,
    TlsNotSupported,
    TlsVerdict,
    TlsVersionMismatch,
    VerifyError,
    decide,
    failed_verdict,
)

__all__ = [
    "ConnectionClosed",
    "DataReceived",
    "HandshakeCompleted",
    "HandshakeFailed",
    "KeyLogWriter",
    "ServerNameError",
    "TlsClientConnection",
    "TlsClientContext",
    "TlsEvent",
    "TrustStore",
    "TrustStoreError",
    "shared_client_context",
]

_PROTO = {
    TlsVersion.TLSv1: SSL.TLS1_VERSION,
    TlsVersion.TLSv1_1: SSL.TLS1_1_VERSION,
    TlsVersion.TLSv1_2: SSL.TLS1_2_VERSION,
    TlsVersion.TLSv1_3: SSL.TLS1_3_VERSION,
}


class ServerNameError(UsageError):
    """A configured server name that cannot be a host name."""


class TrustStoreError(UsageError):
    """A CA file that cannot be read or holds no certificate."""


@dataclass(frozen=True, kw_only=True)
class TrustStore:
    """The roots the phone trusts: public roots (certifi) plus private CAs the user loads."""

    ca_certificates: tuple[x509.Certificate, ...] = ()
    """Private root CAs loaded onto the phone."""
    public_roots: bool = True
    """Whether certifi's public roots stand in for the firmware's built-in list."""

    @classmethod
    def from_pem(cls, *pems: bytes, public_roots: bool = True) -> TrustStore:
        """A store with the certificates in the PEM blobs ``pems``."""
        certs: list[x509.Certificate] = []
        for pem in pems:
            try:
                certs.extend(x509.load_pem_x509_certificates(pem))
            except ValueError as exc:
                raise TrustStoreError(f"no PEM certificate could be read: {exc}") from None
        return cls(ca_certificates=tuple(certs), public_roots=public_roots)

    @classmethod
    def from_files(
        cls, paths: Iterable[str | os.PathLike[str]], *, public_roots: bool = True
    ) -> TrustStore:
        """A store with the PEM CA files ``paths`` (``tls-check --ca``)."""
        certs: list[x509.Certificate] = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise TrustStoreError(f"cannot read CA file {path}: {exc.strerror}") from None
            try:
                certs.extend(x509.load_pem_x509_certificates(data))
            except ValueError:
                raise TrustStoreError(f"CA file {path} holds no PEM certificate") from None
        return cls(ca_certificates=tuple(certs), public_roots=public_roots)


class KeyLogWriter:
    """Appends NSS key-log lines (``SSLKEYLOGFILE`` format) to a file, for Wireshark."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            # Line-buffered so Wireshark sees each secret as soon as it exists.
            self._file = open(path, "a", encoding="ascii", buffering=1)  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot open key log file {path}: {exc.strerror}") from None
        self.path = os.fspath(path)

    def __call__(self, line: bytes) -> None:
        self._file.write(line.decode("ascii", "replace") + "\n")

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __repr__(self) -> str:
        return f"KeyLogWriter({self.path!r})"


class TlsClientContext:
    """One ``SSL.Context`` configured as ``profile`` does it; share it between connections."""

    def __init__(
        self,
        profile: FirmwareProfile,
        trust: TrustStore | None = None,
        *,
        at: dt.datetime | None = None,
        keylog: Callable[[bytes], None] | None = None,
    ) -> None:
        """Build the context.

        ``at`` fixes the verification time ("the phone's clock"); ``keylog`` receives each
        NSS key-log line (see :class:`KeyLogWriter`).
        """
        self.profile = profile
        self.trust = trust if trust is not None else TrustStore()
        self.at = at
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(_PROTO[profile.tls_min_version])
        ctx.set_max_proto_version(_PROTO[profile.tls_max_version])
        ctx.set_cipher_list(profile.cipher_string.encode("ascii"))
        # Load tests hold thousands of idle connections: free the record buffers when idle.
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        ctx.set_options(SSL.OP_NO_COMPRESSION)
        ctx.set_verify(SSL.VERIFY_PEER, _verify_callback)
        if self.trust.public_roots:
            ctx.load_verify_locations(certifi.where())
        store = ctx.get_cert_store()
        assert store is not None
        for cert in self.trust.ca_certificates:
            # crypto.Error: already present (e.g. also a public root).
            with contextlib.suppress(crypto.Error):
                store.add_cert(crypto.X509.from_cryptography(cert))
        if at is not None:
            if at.tzinfo is None:
                at = at.replace(tzinfo=dt.UTC)
            store.set_time(at.astimezone(dt.UTC).replace(tzinfo=None))
        if keylog is not None:
            ctx.set_keylog_callback(lambda _conn, line: keylog(line))
        self.ssl_context = ctx
        # Verdicts by what they were decided from (see TlsClientConnection._judge).
        self._verdicts: dict[tuple[object, ...], TlsVerdict] = {}

    def connect(self, server_name: str) -> TlsClientConnection:
        """A new connection engine to the server configured as ``server_name``."""
        return TlsClientConnection(self, server_name)


@functools.lru_cache(maxsize=64)
def shared_client_context(
    profile: FirmwareProfile, trust: TrustStore | None = None, *, at: dt.datetime | None = None
) -> TlsClientContext:
    """The one :class:`TlsClientContext` for (profile, trust, at), built on first use.

    For fleets: a thousand phones of the same firmware share one context (and one copy of the
    public roots). Contexts with a key-log callback are not cached; build those directly.
    """
    return TlsClientContext(profile, trust, at=at)


def _verify_callback(
    conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int
) -> bool:
    if not ok:
        engine = conn.get_app_data()
        if isinstance(engine, TlsClientConnection):
            engine._record_error(cert, errnum, depth)
    # Never abort the handshake here: the firmware decides once it has every error.
    return True


@dataclass(frozen=True, kw_only=True)
class HandshakeCompleted:
    """The handshake finished and the firmware judged the server."""

    verdict: TlsVerdict
    """The verdict; when ``verdict.connects`` is False the engine has already closed."""


@dataclass(frozen=True, kw_only=True)
class HandshakeFailed:
    """The handshake could not complete."""

    error: TlsError
    """Why, as the exception an adapter would raise."""


@dataclass(frozen=True, kw_only=True)
class DataReceived:
    """Application data arrived."""

    data: bytes
    """The decrypted bytes."""


@dataclass(frozen=True, kw_only=True)
class ConnectionClosed:
    """The peer closed the TLS session (close_notify) or the stream."""

    clean: bool
    """True when the peer sent close_notify."""


TlsEvent = HandshakeCompleted | HandshakeFailed | DataReceived | ConnectionClosed

_VERSION_REASONS = (
    "unsupported protocol",
    "protocol version",
    "no protocols available",
    "tlsv1 alert protocol version",
)
_CIPHER_REASONS = ("no shared cipher", "no ciphers available", "no cipher match")
_NOT_TLS_REASONS = (
    "wrong version number",
    "packet length too long",
    "record layer failure",
    "unknown protocol",
    "http request",
    "record length mismatch",
    "bad record type",
)


#: Verdicts a context keeps (distinct chains and server names it has judged, oldest first out).
_VERDICTS_KEPT = 256


def _reasons(exc: SSL.Error) -> list[str]:
    out: list[str] = []
    if exc.args and isinstance(exc.args[0], list):
        for item in exc.args[0]:
            if isinstance(item, tuple) and item:
                out.append(str(item[-1]))
    return out or [str(exc)]


class TlsClientConnection:
    """One TLS client connection as the phone makes it; no I/O (see module docstring)."""

    def __init__(self, context: TlsClientContext, server_name: str) -> None:
        self.context = context
        self.profile = context.profile
        self.server_name = server_name
        self.verdict: TlsVerdict | None = None
        self._errors: list[VerifyError] = []
        self._events: list[TlsEvent] = []  # an empty deque costs 760 bytes
        self._pending = b""
        self._handshake_done = False
        self._closed = False
        self._conn = SSL.Connection(context.ssl_context, None)
        self._conn.set_app_data(self)
        self._conn.set_connect_state()
        sni = _sni_bytes(server_name)
        if sni is not None:
            self._conn.set_tlsext_host_name(sni)

    # -- input -------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin the handshake (the ClientHello is then in :meth:`data_to_send`)."""
        if not self.profile.tls_supported:
            reason = f"firmware {self.profile.firmware} on the {self.profile.model} has no TLS"
            self._fail(TlsNotSupported(reason, verdict=self._failed(reason)))
            return
        self._advance_handshake()

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the network."""
        if self._closed:
            return
        self._conn.bio_write(data)
        if not self._handshake_done:
            self._advance_handshake()
        if self._handshake_done and not self._closed:
            self._read_application_data()

    def receive_eof(self) -> None:
        """The peer closed its end of the stream."""
        if self._closed:
            return
        if not self._handshake_done:
            reason = "the server closed the connection during the TLS handshake"
            self._fail(TlsHandshakeError(reason, verdict=self._failed(reason)))
            return
        self._closed = True
        self._events.append(ConnectionClosed(clean=False))

    def send(self, data: bytes) -> None:
        """Encrypt application data (only after a successful handshake)."""
        if not self._handshake_done or self._closed:
            raise TlsError("cannot send: the TLS connection is not open")
        view = memoryview(data)
        while view:
            sent = self._conn.send(view)
            view = view[sent:]

    def close(self) -> None:
        """Send close_notify and stop."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()

    # -- output ------------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Bytes to write to the network now."""
        chunks = [self._pending] if self._pending else []
        self._pending = b""
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def next_event(self) -> TlsEvent | None:
        """The next event, or None."""
        return self._events.pop(0) if self._events else None

    @property
    def is_open(self) -> bool:
        """True once the handshake succeeded and until either side closes."""
        return self._handshake_done and not self._closed

    # -- internals ---------------------------------------------------------------------------
    def _record_error(self, cert: crypto.X509, errnum: int, depth: int) -> None:
        try:
            subject = cert.to_cryptography().subject.rfc4514_string()
        except ValueError:  # pragma: no cover
            subject = "?"
        self._errors.append(
            VerifyError(
                code=errnum,
                name=verify_error_name(errnum),
                message=verify_error_string(errnum),
                depth=depth,
                subject=subject,
            )
        )

    def _read_application_data(self) -> None:
        while True:
            try:
                data = self._conn.recv(65536)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self.close()  # answer the peer's close_notify with ours
                self._events.append(ConnectionClosed(clean=True))
                return
            except SSL.Error:
                self._closed = True
                self._events.append(ConnectionClosed(clean=False))
                return
            if not data:
                return
            self._events.append(DataReceived(data=data))

    def _failed(self, reason: str) -> TlsVerdict:
        return failed_verdict(self.profile, server_name=self.server_name, reason=reason)

    def _fail(self, error: TlsError) -> None:
        self._closed = True
        self.verdict = error.verdict
        self._pending += self._drain_bio()
        self._events.append(HandshakeFailed(error=error))

    def _drain_bio(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.Error:
                break
            if not chunk:
                break
            out += chunk
        return out

    def _advance_handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as exc:
            self._fail(self._classify(exc))
            return
        self._handshake_done = True
        self._judge()

    def _classify(self, exc: SSL.Error) -> TlsError:
        reasons = _reasons(exc)
        text = "; ".join(reasons)
        lowered = text.lower()
        offered = f"{self.profile.tls_min_version}-{self.profile.tls_max_version}"
        if any(r in lowered for r in _VERSION_REASONS):
            reason = (
                f"TLS version mismatch: firmware {self.profile.firmware} speaks only "
                f"{offered} and the server accepts none of them ({text})"
            )
            return TlsVersionMismatch(reason, verdict=self._failed(reason))
        got_certificate = self._conn.get_peer_certificate() is not None
        if got_certificate and (
            "handshake failure" in lowered or "certificate required" in lowered
        ):
            # The suites were agreed (the server sent its certificate), then it gave up: the
            # usual cause is a server that requires a client certificate.
            reason = (
                "the server aborted the handshake after sending its certificate; it probably "
                f"requires a client certificate, which a D-Series phone never presents ({text})"
            )
            return TlsHandshakeError(reason, verdict=self._failed(reason))
        if any(r in lowered for r in _CIPHER_REASONS) or "handshake failure" in lowered:
            anon = "with" if self.profile.anon_ciphers_offered else "without"
            reason = (
                f"no cipher in common: firmware {self.profile.firmware} offers its list "
                f"{anon} anonymous/null ciphers and the server took none ({text})"
            )
            return TlsNoSharedCipher(reason, verdict=self._failed(reason))
        if any(r in lowered for r in _NOT_TLS_REASONS):
            reason = f"the peer does not speak TLS ({text})"
            return NotTlsPeer(reason, verdict=self._failed(reason))
        reason = f"TLS handshake failed: {text}"
        return TlsHandshakeError(reason, verdict=self._failed(reason))

    def _judge(self) -> None:
        conn = self._conn
        tls_version = conn.get_protocol_version_name()
        cipher = conn.get_cipher_name()
        ders = tuple(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
                     for cert in conn.get_peer_cert_chain() or ())
        leaf_x509 = conn.get_peer_certificate()
        leaf_der = (None if leaf_x509 is None
                    else crypto.dump_certificate(crypto.FILETYPE_ASN1, leaf_x509))
        # Everything decide() depends on: a fleet's phones, judging the same chain under the
        # same name, share one verdict (and its parsed certificates) instead of each holding
        # its own copy for the life of the connection.
        key = (self.server_name, tuple(self._errors), ders, leaf_der, tls_version, cipher)
        verdicts = self.context._verdicts
        verdict = verdicts.get(key)
        if verdict is None:
            try:
                chain = [x509.load_der_x509_certificate(der) for der in ders]
                leaf = None if leaf_der is None else x509.load_der_x509_certificate(leaf_der)
                name_check = (
                    check_server_name(
                        leaf, self.server_name, allow_wildcard=self.profile.allow_wildcard
                    )
                    if leaf is not None
                    else None
                )
            except ValueError as exc:
                # OpenSSL parsed it, but cryptography (stricter) cannot: report, do not crash.
                conn.set_app_data(None)
                self.close()
                reason = f"the server's certificate cannot be analysed: {exc}"
                self._fail(TlsHandshakeError(reason, verdict=self._failed(reason)))
                return
            certificates: Sequence[x509.Certificate] = chain or ([leaf] if leaf else [])
            verdict = decide(
                self.profile,
                server_name=self.server_name,
                errors=self._errors,
                name_check=name_check,
                tls_version=tls_version,
                cipher=cipher,
                certificates=certificates,
            )
            if len(verdicts) >= _VERDICTS_KEPT:
                del verdicts[next(iter(verdicts))]  # the oldest
            verdicts[key] = verdict
        self.verdict = verdict
        # The verify callback is done; drop the Connection -> engine back-reference so that an
        # idle connection is freed by reference counting, not by the cycle collector.
        conn.set_app_data(None)
        if not verdict.connects:
            # pjsip completes the handshake, then a validating client closes the connection.
            self.close()
        self._events.append(HandshakeCompleted(verdict=verdict))


def _sni_bytes(name: str) -> bytes | None:
    """The SNI to send for ``name``, None for an IP literal (RFC 6066 §3: not sent)."""
    if not name or len(name) > 253:
        raise ServerNameError(f"server name {name!r} is not a valid host name")
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        return None
    try:
        # RFC 6066 §3: the host name without a trailing dot, A-labels for IDNs.
        return name.rstrip(".").encode("idna")
    except UnicodeError:
        raise ServerNameError(
            f"server name {name!r} is not a valid host name (empty or over-long label)"
        ) from None
