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

from phone_sim.errors import UsageError
from phone_sim.tls.pki import CertKind, ServerCredential, TestPki

__all__ = ["TlsTestServer", "start_matrix_servers", "start_tls_server"]

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
    handshakes: int = 0
    """Connections that completed a handshake."""

    async def close(self) -> None:
        """Stop listening and drop connections."""
        self.server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.server.wait_closed()


def _ssl_context(
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


async def start_tls_server(
    credential: ServerCredential | None,
    *,
    host: str = "127.0.0.1",
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1,
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    ciphers: str | None = None,
) -> TlsTestServer:
    """Serve ``credential`` (its whole ``chain`` is sent) on ``host`` and a free port.

    ``credential=None`` serves anonymous ciphers only (pass ``ciphers="aNULL:@SECLEVEL=0"``).
    """
    if host not in _LOOPBACK:
        raise UsageError(f"test servers listen on loopback only, not {host}")
    ctx = _ssl_context(
        credential, min_version=min_version, max_version=max_version, ciphers=ciphers
    )
    holder: list[TlsTestServer] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if holder:
            holder[0].handshakes += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(echo, host, 0, ssl=ctx, ssl_handshake_timeout=10)
    port = server.sockets[0].getsockname()[1]
    test_server = TlsTestServer(host=host, port=port, credential=credential, server=server)
    holder.append(test_server)
    return test_server


async def start_matrix_servers(
    pki: TestPki, kinds: Mapping[CertKind, ServerCredential] | None = None
) -> dict[CertKind, TlsTestServer]:
    """One server per certificate kind of ``pki``, all on 127.0.0.1."""
    creds = kinds if kinds is not None else pki.credentials
    servers = await asyncio.gather(*(start_tls_server(c) for c in creds.values()))
    return dict(zip(creds.keys(), servers, strict=True))
