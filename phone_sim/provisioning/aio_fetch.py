"""Fetching the phone's configuration, on asyncio: HTTP(S) with h11, or DPMA's SIP MESSAGE.

- ``http(s)://``: ``GET <path>/<mac>.cfg`` then ``<mac>-contacts.xml`` (a 404 there only
  means no contacts), HTTP/1.1 through h11 over the project's own TLS transport
  (:func:`~phone_sim.tls.aio.open_tls_connection` with the firmware's TLS context): the
  firmware's policy and error bitmask apply to HTTPS exactly as to SIP, so an expired
  provisioning certificate makes a validating firmware refuse it with ``TlsRefused``. A PIN
  (or credentials in the URL) goes as HTTP Basic, user = the MAC (phone-sim's choice,
  docs/provisioning.md);
- ``sip:proxy@...``: the MESSAGE exchange of :mod:`~phone_sim.provisioning.sip_client` over
  UDP, TCP or TLS (the same TLS policy again);
- ``ftp://``/``ftps://`` are "not supported by phone-sim".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import socket
from dataclasses import dataclass, field
from typing import Any, cast

import h11

from phone_sim.account import SipTransport
from phone_sim.firmware import FirmwareProfile
from phone_sim.provisioning.errors import (
    ConfigFetchError,
    ConfigNotFound,
    ConfigRefused,
)
from phone_sim.provisioning.exchange import (
    CONFIG_METHOD,
    ConfigExchange,
    ConfigReply,
    ConfigRequest,
)
from phone_sim.provisioning.phone_xml import MAX_XML_BYTES, parse_contacts_xml
from phone_sim.provisioning.sip_client import ConfigFetched, SipConfigClient
from phone_sim.provisioning.urls import HttpConfigUrl, SipConfigUrl, parse_config_url
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import Address
from phone_sim.tls.aio import open_tls_connection
from phone_sim.tls.client import TlsClientContext, TrustStore

__all__ = ["FetchedConfig", "fetch_config", "fetch_http", "fetch_sip"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedConfig:
    """A configuration document as the server gave it."""

    url: str
    """Where it came from (without credentials)."""
    document: bytes = field(repr=False)
    """The ``<config>`` document (it holds passwords: not in ``repr()``)."""
    contacts: int | None = None
    """How many contacts ``<mac>-contacts.xml`` held; None when there is none."""


def _tls_context(profile: FirmwareProfile, trust: TrustStore | None) -> TlsClientContext:
    from phone_sim.phone import tls_context_for  # noqa: PLC0415 - the phone package is heavy

    return tls_context_for(profile, trust)


async def fetch_config(
    url: str,
    *,
    mac: str,
    profile: FirmwareProfile,
    trust: TrustStore | None = None,
    pin: str | None = None,
    timeout: float = 10.0,
    exchange: ConfigExchange | None = None,
    local_host: str | None = None,
) -> FetchedConfig:
    """Fetch the configuration of the phone *mac* (12 hex digits) from *url*.

    Raises :class:`~phone_sim.provisioning.errors.ConfigRefused` (wrong PIN, unknown phone),
    ``ConfigNotFound``, ``ConfigFetchError`` (no answer, a broken reply), the TLS errors of
    the firmware's policy (``TlsRefused`` with its bitmask), and ``ConfigUrlUnsupported``
    for ftp/ftps.
    """
    parsed = parse_config_url(url)
    if isinstance(parsed, SipConfigUrl):
        request = ConfigRequest(method=CONFIG_METHOD, mac=mac, model=profile.model.value,
                                firmware=profile.firmware, pin=pin)
        reply = await fetch_sip(parsed, request, profile=profile, trust=trust,
                                timeout=timeout, exchange=exchange, local_host=local_host)
        return FetchedConfig(url=parsed.label, document=_document(reply, mac, parsed.label))
    document = await fetch_http(parsed, f"{mac}.cfg", mac=mac, profile=profile, trust=trust,
                                pin=pin, timeout=timeout)
    if document is None:
        raise ConfigNotFound(f"no configuration for {mac} at {parsed.file_url(mac + '.cfg')} "
                             "(HTTP 404)", cause="HTTP 404")
    contacts_doc = await fetch_http(parsed, f"{mac}-contacts.xml", mac=mac, profile=profile,
                                    trust=trust, pin=pin, timeout=timeout)
    contacts = parse_contacts_xml(contacts_doc) if contacts_doc is not None else None
    return FetchedConfig(url=parsed.label, document=document, contacts=contacts)


def _document(reply: ConfigReply, mac: str, where: str) -> bytes:
    if reply.document is not None:
        return reply.document
    said = reply.error_message or reply.error_code or "refused"
    if reply.error_code == "pin-required":
        raise ConfigRefused(f"{where} refused phone {mac}: {said}; give the PIN (--pin)",
                            code=reply.error_code)
    if reply.error_code == "refused":
        raise ConfigRefused(f"{where} refused phone {mac}: {said}", code=reply.error_code)
    if reply.error_code in ("no-network", "not-found"):
        raise ConfigNotFound(f"{where} has no configuration for phone {mac}: {said}")
    raise ConfigFetchError(f"{where} could not serve phone {mac}: {said}",
                           cause=f"error {reply.error_code or 'unknown'}")


# --------------------------------------------------------------------------------------------
# HTTP(S)


class _Bytes(asyncio.Protocol):
    """Hands what the connection delivers to a queue (None at the end)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    def eof_received(self) -> bool:
        self.queue.put_nowait(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)


async def _connect_stream(
    host: str, port: int, *, tls: TlsClientContext | None, timeout: float
) -> tuple[asyncio.Transport, _Bytes]:
    if tls is not None:
        transport, protocol, _verdict = await open_tls_connection(
            host, port, context=tls, server_name=host, protocol_factory=_Bytes,
            connect_timeout=timeout, handshake_timeout=timeout,
        )
        assert isinstance(protocol, _Bytes)
        return transport, protocol
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            raw, proto = await loop.create_connection(_Bytes, host, port)
    except TimeoutError:
        raise ConfigFetchError(f"no answer from {host}:{port} within {timeout:g} s",
                               cause="timeout") from None
    except OSError as exc:
        raise _os_error(host, port, exc) from None
    return raw, proto


def _os_error(host: str, port: int, exc: OSError) -> ConfigFetchError:
    if isinstance(exc, socket.gaierror):
        return ConfigFetchError(f"cannot resolve {host!r}: {exc.strerror or exc}",
                                cause="unresolvable")
    if isinstance(exc, ConnectionRefusedError):
        return ConfigFetchError(f"connection refused by {host}:{port}: nothing listens there",
                                cause="connection refused")
    return ConfigFetchError(f"cannot connect to {host}:{port}: {exc.strerror or exc}",
                            cause="unreachable")


async def fetch_http(
    url: HttpConfigUrl,
    name: str,
    *,
    mac: str,
    profile: FirmwareProfile,
    trust: TrustStore | None = None,
    pin: str | None = None,
    timeout: float = 10.0,
) -> bytes | None:
    """``GET`` *name* in the directory of *url*; None on 404. Other refusals raise."""
    context = _tls_context(profile, trust) if url.tls else None
    headers = [("Host", url.host if url.port is None else f"{url.host}:{url.port}"),
               ("User-Agent", profile.user_agent),
               ("Accept", "application/xml, text/xml"),
               ("Connection", "close")]
    user = url.username if url.username is not None else (mac if pin is not None else None)
    secret = url.password if url.password is not None else pin
    if user is not None:
        token = base64.b64encode(f"{user}:{secret or ''}".encode()).decode("ascii")
        headers.append(("Authorization", f"Basic {token}"))
    where = url.file_url(name)
    try:
        async with asyncio.timeout(timeout):
            transport, stream = await _connect_stream(url.host, url.effective_port, tls=context,
                                                      timeout=timeout)
            try:
                status, body = await _exchange(transport, stream, url.file_path(name), headers,
                                               where)
            finally:
                transport.close()
    except TimeoutError:
        raise ConfigFetchError(f"no complete answer from {where} within {timeout:g} s",
                               cause="timeout") from None
    if status == 200:
        return body
    if status == 404:
        return None
    if status in (401, 403):
        hint = " (the server asks for credentials: give --pin)" if user is None else ""
        raise ConfigRefused(f"{where} refused phone {mac}: HTTP {status}: unknown phone or "
                            f"wrong PIN{hint}", code="refused")
    raise ConfigFetchError(f"{where} answered HTTP {status}", cause=f"HTTP {status}")


async def _exchange(
    transport: asyncio.Transport, stream: _Bytes, target: str,
    headers: list[tuple[str, str]], where: str,
) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT)
    transport.write(conn.send(h11.Request(method="GET", target=target, headers=headers)))
    transport.write(conn.send(h11.EndOfMessage()))
    status = 0
    body = bytearray()
    try:
        while True:
            event: Any = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.queue.get()
                conn.receive_data(data or b"")
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_XML_BYTES:
                    raise ConfigFetchError(f"{where}: the answer is larger than "
                                           f"{MAX_XML_BYTES} bytes", cause="too large")
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConfigFetchError(f"{where}: the server closed the connection without "
                                       "a complete answer", cause="connection closed")
    except h11.RemoteProtocolError as exc:
        raise ConfigFetchError(f"{where}: not a valid HTTP answer: {exc}",
                               cause="bad answer") from None


# --------------------------------------------------------------------------------------------
# SIP MESSAGE


class _SipPump(asyncio.Protocol, asyncio.DatagramProtocol):
    """Feeds one :class:`SipConfigClient` from a stream or a UDP socket, one timer."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.client: SipConfigClient | None = None
        self.transport: Any = None
        self.peer: Address = ("", 0)
        self.udp = False
        self.done: asyncio.Future[ConfigReply] = self.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._early: list[bytes] = []

    # transports
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.client is None:
            self._early.append(data)
            return
        self.client.receive_data(data, self.peer, self.loop.time())
        self.pump()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.client is not None:
            self.client.receive_datagram(data, (str(addr[0]), int(addr[1])), self.loop.time())
            self.pump()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.client.connection_lost(self.loop.time())
            self.pump()

    def error_received(self, exc: Exception) -> None:
        if self.client is not None and not self.done.done():
            refused = isinstance(exc, ConnectionRefusedError)
            self.done.set_exception(ConfigFetchError(
                f"cannot reach {self.client.server.label}: {exc}",
                cause="connection refused" if refused else "unreachable"))

    # the pump
    def begin(self, client: SipConfigClient) -> None:
        self.client = client
        client.start(self.loop.time(), self.peer)
        for data in self._early:
            client.receive_data(data, self.peer, self.loop.time())
        self._early.clear()
        self.pump()

    def pump(self) -> None:
        client = self.client
        assert client is not None
        for data, _destination in client.data_to_send():
            if self.transport is None or self.transport.is_closing():
                continue
            if self.udp:
                self.transport.sendto(data)
            else:
                self.transport.write(data)
        while (event := client.next_event()) is not None:
            if self.done.done():
                continue
            if isinstance(event, ConfigFetched):
                self.done.set_result(event.reply)
            else:
                self.done.set_exception(event.error)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = client.get_timer()
        if at is not None:
            self._timer = self.loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.client is not None:
            self.client.handle_timer(self.loop.time())
            self.pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


async def fetch_sip(
    url: SipConfigUrl,
    request: ConfigRequest,
    *,
    profile: FirmwareProfile,
    trust: TrustStore | None = None,
    timeout: float = 10.0,
    exchange: ConfigExchange | None = None,
    local_host: str | None = None,
    rng: random.Random | None = None,
) -> ConfigReply:
    """Run the MESSAGE exchange with *url* and return the server's reply (a document or a
    refusal; the caller decides what a refusal means)."""
    loop = asyncio.get_running_loop()
    pump = _SipPump()
    host, port = url.host, url.effective_port
    try:
        async with asyncio.timeout(timeout):
            if url.transport is SipTransport.TLS:
                context = _tls_context(profile, trust)
                await open_tls_connection(
                    host, port, context=context, server_name=host,
                    protocol_factory=lambda: pump, connect_timeout=timeout,
                    handshake_timeout=timeout,
                    local_addr=(local_host, 0) if local_host else None,
                )
            elif url.transport is SipTransport.TCP:
                try:
                    await loop.create_connection(
                        lambda: pump, host, port,
                        local_addr=(local_host, 0) if local_host else None)
                except OSError as exc:
                    raise _os_error(host, port, exc) from None
            else:
                pump.udp = True
                try:
                    await loop.create_datagram_endpoint(
                        lambda: pump, remote_addr=(host, port),
                        local_addr=(local_host, 0) if local_host else None)
                except OSError as exc:
                    raise _os_error(host, port, exc) from None
    except TimeoutError:
        pump.close()
        raise ConfigFetchError(f"no answer from {url.label} within {timeout:g} s",
                               cause="timeout") from None
    transport = pump.transport
    sockname = transport.get_extra_info("sockname")
    peername = transport.get_extra_info("peername")
    pump.peer = (str(peername[0]), int(peername[1]))
    signature = PhoneSignature.for_profile(profile, extra_methods=("MESSAGE",))
    client = SipConfigClient(request=request, server=url,
                             local=(str(sockname[0]), int(sockname[1])), signature=signature,
                             exchange=exchange, timeout=timeout, rng=rng)
    try:
        pump.begin(client)
        return await pump.done
    finally:
        # Let the 200 for the server's MESSAGE leave before the connection closes.
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
        pump.close()
