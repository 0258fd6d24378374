"""The lab's TLS server side: pyOpenSSL over memory BIOs, no sockets.

:class:`TlsServerContext` is built once per lab (one ``SSL.Context``: the certificate, the key
and the session cache are shared by every connection). :class:`TlsServerConnection` is one
accepted connection: feed it what the socket delivered with
:meth:`~TlsServerConnection.receive_data`, which returns the plaintext it completed, and send
what :meth:`~TlsServerConnection.data_to_send` returns. The asyncio adapter in
:mod:`phone_sim.lab.aio` is a thin pump around it.

What it accepts is what Asterisk's ``method=sslv23`` accepts and more: TLS 1.0 to 1.3, at
OpenSSL security level 0, so that every firmware the emulator models (TLS 1.0-1.2, and before
2_3_9 anonymous ciphers *offered*, never required) can connect. The server never asks for a
client certificate: the phones have none.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from phone_sim.errors import RemoteError, UsageError

__all__ = ["TlsAcceptError", "TlsServerConnection", "TlsServerContext", "TlsServerInfo"]

_VERSIONS = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}
#: Certificate-authenticated suites only; level 0 keeps TLS 1.0/1.1 usable for old firmware.
DEFAULT_CIPHERS = "HIGH:MEDIUM:!RC4:!3DES:!aNULL:!eNULL:@SECLEVEL=0"
_READ = 65536


class TlsAcceptError(RemoteError):
    """A client's TLS handshake or record stream failed; the connection must be dropped."""


class TlsCredentialError(UsageError):
    """The certificate or key given to the lab cannot be used."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsServerInfo:
    """What was negotiated with one client."""

    version: str
    """``TLSv1.2``..."""
    cipher: str
    """The OpenSSL cipher name."""
    server_name: str | None
    """The SNI the client sent, if any."""


class TlsServerContext:
    """One server ``SSL.Context`` with the lab's certificate chain and key."""

    def __init__(
        self,
        cert_chain_pem: bytes,
        key_pem: bytes,
        *,
        min_version: str = "TLSv1",
        max_version: str = "TLSv1.3",
        ciphers: str = DEFAULT_CIPHERS,
    ) -> None:
        """``cert_chain_pem`` is the leaf first, then any intermediates; ``key_pem`` the leaf's
        private key (unencrypted PEM)."""
        for name in (min_version, max_version):
            if name not in _VERSIONS:
                raise TlsCredentialError(
                    f"unknown TLS version {name!r} (one of {', '.join(_VERSIONS)})"
                )
        try:
            chain = x509.load_pem_x509_certificates(cert_chain_pem)
        except ValueError as exc:
            raise TlsCredentialError(f"the lab certificate is not PEM: {exc}") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise TlsCredentialError(f"the lab key is not an unencrypted PEM key: {exc}") from None
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(_VERSIONS[min_version])
        ctx.set_max_proto_version(_VERSIONS[max_version])
        try:
            ctx.set_cipher_list(ciphers.encode("ascii"))
            ctx.use_certificate(chain[0])
            for extra in chain[1:]:
                ctx.add_extra_chain_cert(extra)
            ctx.use_privatekey(key)  # type: ignore[arg-type]
            ctx.check_privatekey()
        except SSL.Error as exc:
            raise TlsCredentialError(f"the lab certificate or key is unusable: {exc}") from None
        # Thousands of idle phones: free each connection's record buffers while idle.
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
        ctx.set_session_id(b"phone-sim-lab")
        ctx.set_verify(SSL.VERIFY_NONE)
        self.ssl_context = ctx
        self.certificate = chain[0]

    def accept(self) -> TlsServerConnection:
        """A new server-side connection engine."""
        return TlsServerConnection(self)


class TlsServerConnection:
    """One accepted TLS connection over memory BIOs."""

    __slots__ = ("_conn", "closed", "handshake_done", "info")

    def __init__(self, context: TlsServerContext) -> None:
        conn = SSL.Connection(context.ssl_context, None)
        conn.set_accept_state()
        self._conn = conn
        self.handshake_done = False
        self.closed = False
        self.info: TlsServerInfo | None = None

    def receive_data(self, data: bytes) -> bytes:
        """Feed what the socket delivered; return the application data it completed.

        Raises :class:`TlsAcceptError` when the handshake fails or the stream is broken; what
        :meth:`data_to_send` then returns is the alert. Sets :attr:`closed` on close_notify.
        """
        conn = self._conn
        if data:
            conn.bio_write(data)
        if not self.handshake_done:
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                return b""
            except SSL.Error as exc:
                raise TlsAcceptError(f"TLS handshake failed: {_describe(exc)}") from None
            self.handshake_done = True
            name = conn.get_servername()
            self.info = TlsServerInfo(
                version=conn.get_protocol_version_name(),
                cipher=conn.get_cipher_name() or "",
                server_name=name.decode("ascii", "replace") if name else None,
            )
        chunks: list[bytes] = []
        while True:
            try:
                chunk = conn.recv(_READ)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.closed = True
                break
            except SSL.Error as exc:
                raise TlsAcceptError(f"TLS record error: {_describe(exc)}") from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes) -> None:
        """Encrypt ``data``; take the records with :meth:`data_to_send`."""
        if not self.handshake_done or self.closed:
            return
        view = memoryview(data)
        while view:
            sent = self._conn.send(view[:16384])
            view = view[sent:]

    def data_to_send(self) -> bytes:
        """Records to write to the socket."""
        conn = self._conn
        chunks: list[bytes] = []
        while True:
            try:
                chunk = conn.bio_read(_READ)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Send close_notify (take it with :meth:`data_to_send`)."""
        if self.closed:
            return
        self.closed = True
        if self.handshake_done:
            with contextlib.suppress(SSL.Error):
                self._conn.shutdown()


def _describe(exc: SSL.Error) -> str:
    args = exc.args[0] if exc.args else None
    if isinstance(args, list) and args:
        parts = [str(item[-1]) for item in args if isinstance(item, tuple) and item]
        if parts:
            return "; ".join(parts)
    return str(exc) or type(exc).__name__
