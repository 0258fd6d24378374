"""Local TLS test servers on loopback: one certificate kind each, for tls-matrix and tests.

They use the standard library's ``ssl`` (the system OpenSSL), so the client under test and the
server are different TLS stacks. Each server accepts connections, answers its handshake and
echoes what it receives. Servers listen on 127.0.0.1 (or ::1) on a free port, nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from phone_sim.errors import UsageError
from phone_sim.tls.pki import CertKind, ServerCredential, TestPki

__all__ = ["TlsTestServer", "server_ssl_context", "start_matrix_servers", "start_tls_server"]

_LOOPBACK = ("127.0.0.1", "::1")


@dataclass
class TlsTestServer:
    """A running test server."""

    host: str
    """The loopback address it listens on."""
    port: int
    """The port picked by the kernel."""
    credential: ServerCredential | None
    """What it presents (None: anonymous ciphers only)."""
    server: asyncio.Server = field(repr=False)
    """The asyncio server."""
    ssl_context: ssl.SSLContext = field(repr=False)
    """The server's context (tests may hook ``sni_callback``)."""
    handshakes: int = 0
    """Connections that completed a handshake."""

    async def close(self) -> None:
        """Stop listening and drop connections."""
        self.server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.server.wait_closed()


def server_ssl_context(
    credential: ServerCredential | None,
    *,
    min_version: ssl.TLSVersion,
    max_version: ssl.TLSVersion,
    ciphers: str | None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # TLS 1.0/1.1 are deprecated in ssl; the firmware still speaks them.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = min_version
        ctx.maximum_version = max_version
    ctx.set_ciphers(ciphers or "DEFAULT:@SECLEVEL=0")
    if credential is not None:
        # ssl only loads from files: write them to a private temporary directory and remove
        # them at once (the key is a generated test key).
        with tempfile.TemporaryDirectory(prefix="phone-sim-tls-") as tmp:
            cert_path = os.path.join(tmp, "chain.pem")
            key_path = os.path.join(tmp, "key.pem")
            with open(cert_path, "wb") as f:
                f.write(credential.chain_pem())
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(credential.key_pem())
            ctx.load_cert_chain(cert_path, key_path)
    return ctx


class _ServerProtocol(asyncio.Protocol):
    """TLS over memory BIOs, so a handshake failure still flushes the alert to the client
    (asyncio's own SSL transport aborts before sending it, and a real server does send it)."""

    def __init__(self, ctx: ssl.SSLContext, owner: TlsTestServer, greeting: bytes) -> None:
        self._greeting = greeting
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._handshaken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        try:
            if not self._handshaken:
                self._tls.do_handshake()
                self._handshaken = True
                self._owner.handshakes += 1
                if self._greeting:
                    self._tls.write(self._greeting)
            while True:
                chunk = self._tls.read(65536)
                if not chunk:
                    break
                self._tls.write(chunk)  # echo
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()
            self._flush()
            self._close()
            return
        except ssl.SSLError:
            self._flush()  # the alert
            self._close()
            return
        self._flush()

    def eof_received(self) -> bool:
        return False

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def start_tls_server(
    credential: ServerCredential | None,
    *,
    host: str = "127.0.0.1",
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1,
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    ciphers: str | None = None,
    greeting: bytes = b"",
    client_ca_pem: bytes | None = None,
) -> TlsTestServer:
    """Serve ``credential`` (its whole ``chain`` is sent) on ``host`` and a free port.

    ``credential=None`` serves anonymous ciphers only (pass ``ciphers="aNULL:@SECLEVEL=0"``).
    ``greeting`` is sent as soon as a handshake completes (then everything is echoed).
    ``client_ca_pem`` makes the server require a client certificate from that CA.
    """
    if host not in _LOOPBACK:
        raise UsageError(f"test servers listen on loopback only, not {host}")
    ctx = server_ssl_context(
        credential, min_version=min_version, max_version=max_version, ciphers=ciphers
    )
    if client_ca_pem is not None:
        ctx.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    loop = asyncio.get_running_loop()
    holder: list[TlsTestServer] = []
    server = await loop.create_server(lambda: _ServerProtocol(ctx, holder[0], greeting), host, 0)
    port = server.sockets[0].getsockname()[1]
    test_server = TlsTestServer(
        host=host, port=port, credential=credential, server=server, ssl_context=ctx
    )
    holder.append(test_server)
    return test_server


async def start_matrix_servers(
    pki: TestPki, kinds: Mapping[CertKind, ServerCredential] | None = None
) -> dict[CertKind, TlsTestServer]:
    """One server per certificate kind of ``pki``, all on 127.0.0.1."""
    creds = kinds if kinds is not None else pki.credentials
    servers = await asyncio.gather(*(start_tls_server(c) for c in creds.values()))
    return dict(zip(creds.keys(), servers, strict=True))
