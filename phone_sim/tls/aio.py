"""The phone's TLS client as an asyncio transport, a thin pump around the sans-I/O engine.

SIP over TLS uses exactly this::

    context = TlsClientContext(profile, trust)          # once per profile; share it
    transport, protocol, verdict = await open_tls_connection(
        "192.0.2.10", 5061, context=context, server_name="pbx.example.com",
        protocol_factory=MySipProtocol,
    )

The returned transport is an :class:`asyncio.Transport`; the application protocol gets
``connection_made(transport)``, ``data_received(bytes)``, ``eof_received()`` and
``connection_lost(exc)`` as with any asyncio transport. A validating firmware that refuses the
server makes :func:`open_tls_connection` raise :class:`~phone_sim.tls.verdict.TlsRefused`
(with ``.bitmask`` and ``.verdict``); an older firmware connects and the verdict says what it
would have shown.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

from phone_sim.firmware import FirmwareProfile
from phone_sim.tls.client import (
    ConnectionClosed,
    DataReceived,
    HandshakeCompleted,
    HandshakeFailed,
    TlsClientConnection,
    TlsClientContext,
    TrustStore,
)
from phone_sim.tls.verdict import (
    NotTlsPeer,
    TlsConnectError,
    TlsError,
    TlsHandshakeError,
    TlsRefused,
    TlsVerdict,
    failed_verdict,
)

__all__ = ["TlsTransport", "describe_connect_error", "open_tls_connection"]


class TlsTransport(asyncio.Transport):
    """Application data over the phone's TLS connection."""

    def __init__(self, pump: _TlsPump) -> None:
        super().__init__()
        self._pump = pump

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data``."""
        if self._pump.closing:
            return
        self._pump.engine.send(bytes(data))
        self._pump.flush()

    def writelines(self, list_of_data: Any) -> None:
        """Send each item of ``list_of_data``."""
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        """TLS has no half-close."""
        return False

    def write_eof(self) -> None:
        """Not supported on TLS."""
        raise NotImplementedError("TLS has no half-close")

    def close(self) -> None:
        """Send close_notify, then close the socket."""
        self._pump.close()

    def abort(self) -> None:
        """Close the socket at once."""
        self._pump.abort()

    def is_closing(self) -> bool:
        """True once closing started."""
        return self._pump.closing

    def pause_reading(self) -> None:
        """Stop reading from the socket."""
        if self._pump.raw is not None:
            self._pump.raw.pause_reading()

    def resume_reading(self) -> None:
        """Resume reading from the socket."""
        if self._pump.raw is not None:
            self._pump.raw.resume_reading()

    def is_reading(self) -> bool:
        """Whether the socket is read."""
        return self._pump.raw is not None and self._pump.raw.is_reading()

    def get_write_buffer_size(self) -> int:
        """Bytes buffered in the socket transport."""
        return self._pump.raw.get_write_buffer_size() if self._pump.raw else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Pass the limits to the socket transport."""
        if self._pump.raw is not None:
            self._pump.raw.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Change the application protocol."""
        assert isinstance(protocol, asyncio.Protocol)
        self._pump.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The application protocol."""
        assert self._pump.app is not None
        return self._pump.app

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``verdict``, ``server_name``, ``tls_version``, ``cipher``, ``peercert_chain`` or
        whatever the socket transport knows (``peername``, ``sockname``, ``socket``)."""
        verdict = self._pump.engine.verdict
        extra: dict[str, Any] = {
            "verdict": verdict,
            "server_name": self._pump.engine.server_name,
            "tls_version": verdict.tls_version if verdict else None,
            "cipher": verdict.cipher if verdict else None,
            "peercert_chain": verdict.certificates if verdict else None,
        }
        if name in extra:
            return extra[name]
        if self._pump.raw is not None:
            return self._pump.raw.get_extra_info(name, default)
        return default


class _TlsPump(asyncio.Protocol):
    """The socket-side protocol: feeds the engine, writes its output, dispatches its events."""

    def __init__(
        self,
        engine: TlsClientConnection,
        loop: asyncio.AbstractEventLoop,
        target: str,
    ) -> None:
        self.engine = engine
        self.loop = loop
        self.target = target
        self.raw: asyncio.Transport | None = None
        self.app: asyncio.Protocol | None = None
        self.transport = TlsTransport(self)
        self.handshake: asyncio.Future[TlsVerdict] = loop.create_future()
        self.closing = False
        self._received_any = False
        self._app_lost = False
        # Data or EOF that arrive before the application protocol is attached (e.g. in the
        # same segment as the server's Finished) wait here.
        self._early: list[bytes] = []
        self._early_eof = False
        self._early_lost: tuple[Exception | None] | None = None

    # socket side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.raw = cast(asyncio.Transport, transport)
        self.engine.start()
        self._process()

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        self.engine.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        if not self.handshake.done() and not self._received_any:
            self._fail(
                NotTlsPeer(
                    f"{self.target} closed the connection without a TLS answer: not a TLS "
                    "server, or one that drops handshakes it rejects without an alert",
                    verdict=self._failed("no TLS answer"),
                )
            )
        self.engine.receive_eof()
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done() and not self._received_any:
            self._fail(
                NotTlsPeer(
                    f"{self.target} closed the connection without a TLS answer: not a TLS "
                    "server, or one that drops handshakes it rejects without an alert",
                    verdict=self._failed("no TLS answer"),
                )
            )
        if not self.handshake.done():
            detail = f": {exc}" if exc else ""
            self._fail(
                TlsHandshakeError(
                    f"the connection to {self.target} was lost during the TLS handshake{detail}",
                    verdict=self._failed("connection lost during the handshake"),
                )
            )
        self.closing = True
        self._lose_app(exc)

    # pumping
    def flush(self) -> None:
        out = self.engine.data_to_send()
        if out and self.raw is not None and not self.raw.is_closing():
            self.raw.write(out)

    def _process(self) -> None:
        self.flush()
        while (event := self.engine.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                if not self.handshake.done():
                    self.handshake.set_result(event.verdict)
                if not event.verdict.connects:
                    self.close()
            elif isinstance(event, HandshakeFailed):
                self._fail(event.error)
                self.abort()
            elif isinstance(event, DataReceived):
                if self.app is not None:
                    self.app.data_received(event.data)
                else:
                    self._early.append(event.data)
            elif isinstance(event, ConnectionClosed):
                if self.app is None:
                    self._early_eof = True
                elif not self._app_lost:
                    self.app.eof_received()
                self.close()
        self.flush()

    def _failed(self, reason: str) -> TlsVerdict:
        return failed_verdict(
            self.engine.profile, server_name=self.engine.server_name, reason=reason
        )

    def _fail(self, error: TlsError) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(error)

    def _lose_app(self, exc: Exception | None) -> None:
        if self.app is None:
            self._early_lost = (exc,)
        elif not self._app_lost:
            self._app_lost = True
            self.app.connection_lost(exc)

    def attach(self, app: asyncio.Protocol) -> None:
        """Give the application protocol the transport and anything that arrived early."""
        self.app = app
        app.connection_made(self.transport)
        for data in self._early:
            app.data_received(data)
        self._early.clear()
        if self._early_eof and not self._app_lost:
            app.eof_received()
        if self._early_lost is not None:
            self._lose_app(self._early_lost[0])

    # flow control of the socket transport, passed on to the application
    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.engine.close()
        self.flush()
        if self.raw is not None:
            self.raw.close()

    def abort(self) -> None:
        self.closing = True
        if self.raw is not None:
            self.raw.abort()


def describe_connect_error(
    host: str, port: int, exc: OSError | UnicodeError, timeout: float
) -> str:
    """Why a TCP connection to *host*:*port* failed, in the words every transport uses (TLS
    here, plain TCP in the phone), so the same failure reads the same."""
    target = f"{host}:{port}"
    if isinstance(exc, UnicodeError):  # the resolver's IDNA step refused the name
        return f"cannot resolve {host!r}: not a valid host name ({exc})"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {target}: nothing listens on that port"
    if isinstance(exc, TimeoutError):
        return f"no answer from {target} within {timeout:g} s: host unreachable?"
    return f"cannot connect to {target}: {exc.strerror or exc}"


def _connect_error(
    host: str, port: int, exc: OSError | UnicodeError, timeout: float
) -> TlsConnectError:
    return TlsConnectError(describe_connect_error(host, port, exc, timeout))


async def open_tls_connection(
    host: str,
    port: int,
    *,
    context: TlsClientContext | None = None,
    profile: FirmwareProfile | None = None,
    trust: TrustStore | None = None,
    server_name: str | None = None,
    protocol_factory: Callable[[], asyncio.Protocol] = asyncio.Protocol,
    connect_timeout: float = 10.0,
    handshake_timeout: float = 10.0,
    local_addr: tuple[str, int] | None = None,
) -> tuple[TlsTransport, asyncio.Protocol, TlsVerdict]:
    """Connect to ``host:port`` as the phone would and return (transport, protocol, verdict).

    Give a shared ``context`` (build one :class:`TlsClientContext` per profile and reuse it),
    or a ``profile`` (and ``trust``) to build one for this connection. ``server_name`` is the
    configured server name (default ``host``): it is sent as SNI and the certificate is
    checked against it, never against the address dialled.

    Raises :class:`TlsRefused` when a validating firmware refuses the server,
    :class:`TlsNotSupported` for a firmware without TLS, :class:`TlsHandshakeError` (incl.
    :class:`TlsVersionMismatch`, :class:`TlsNoSharedCipher`) when no TLS session could be made,
    :class:`NotTlsPeer` and :class:`TlsConnectError` for network trouble.
    """
    if context is None:
        if profile is None:
            raise TypeError("open_tls_connection needs a context or a profile")
        context = TlsClientContext(profile, trust)
    name = server_name or host
    engine = context.connect(name)
    if not context.profile.tls_supported:
        engine.start()
        event = engine.next_event()
        assert isinstance(event, HandshakeFailed)
        raise event.error
    loop = asyncio.get_running_loop()
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    pump = _TlsPump(engine, loop, target)
    try:
        async with asyncio.timeout(connect_timeout):
            await loop.create_connection(lambda: pump, host, port, local_addr=local_addr)
    except (OSError, UnicodeError) as exc:
        raise _connect_error(host, port, exc, connect_timeout) from None
    except TimeoutError:
        raise _connect_error(host, port, TimeoutError(), connect_timeout) from None
    try:
        async with asyncio.timeout(handshake_timeout):
            verdict = await pump.handshake
    except TimeoutError:
        pump.abort()
        raise NotTlsPeer(
            f"no TLS answer from {target} within {handshake_timeout:g} s: is it a TLS server?",
            verdict=failed_verdict(context.profile, server_name=name, reason="no TLS answer"),
        ) from None
    except TlsError:
        pump.abort()
        raise
    if not verdict.connects:
        pump.close()
        raise TlsRefused(verdict)
    protocol = protocol_factory()
    pump.attach(protocol)
    return pump.transport, protocol, verdict
