"""The asyncio phone: SIP transports (UDP, TCP, TLS) around the sans-I/O registration core.

::

    async with Phone(PhoneConfig(profile=profile, accounts=(account,), trust=trust)) as phone:
        await phone.register()          # the first attempt's outcome, or its error
        call = await phone.dial("102")  # or: call = await phone.next_call()
        await call.wait_answered()
        async for event in phone.events():
            ...

One pump per phone: every input (bytes, a connection made or lost, the timer) is fed to
:class:`~phone_sim.phone.registration.RegistrationCore` with ``now=loop.time()``; then what
it wants sent is written, its transport commands are run, its events are dispatched, and one
``loop.call_at()`` is armed at its ``get_timer()``. A phone holds one transport at a time and
at most one timer handle. TLS contexts are shared per (profile, trust store):
:func:`tls_context_for`.

Calls: the core offers every SIP event to the phone's
:class:`~phone_sim.call.aio.CallManager` first (``core.ua_hook``). The manager is made on the
first ``dial()``/``next_call()`` or the first INVITE that arrives, so an idle phone in a fleet
carries none of it (nor imports the media stack). The manager reports each call's lifecycle
(``CallPlaced``/``CallArrived``, ``CallAnswered``, ``CallFinished``) to :meth:`Phone.events`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from phone_sim.account import SipHost, SipTransport
from phone_sim.call.session import call_signature
from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.firmware import FirmwareProfile
from phone_sim.media.negotiation import MediaEncryption
from phone_sim.phone.config import PhoneConfig
from phone_sim.phone.registration import (
    EXTRA_METHODS,
    ClosePeer,
    CloseTransport,
    OpenTransport,
    PhoneEvent,
    RegistrationCore,
    RegistrationFailed,
    RegistrationSucceeded,
    RegistrationTimeout,
    RegState,
    SipTransportError,
    Unregistered,
)
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import Address, RequestReceived, UaEvent
from phone_sim.sip.uri import SipUri
from phone_sim.tls.aio import open_tls_connection
from phone_sim.tls.client import TlsClientContext, TrustStore

if TYPE_CHECKING:
    from phone_sim.call.aio import Call, CallManager, PhoneCallEvent

__all__ = ["Phone", "build_phone", "phone_signature", "tls_context_for"]

logger = logging.getLogger(__name__)

_CONTEXTS: dict[tuple[FirmwareProfile, TrustStore | None], TlsClientContext] = {}


_SIGNATURES: dict[FirmwareProfile, PhoneSignature] = {}


def phone_signature(profile: FirmwareProfile) -> PhoneSignature:
    """What a :class:`Phone` of *profile* advertises: the firmware's User-Agent, Allow and
    Supported, with ``100rel, timer`` and PRACK/UPDATE because the phone's call layer
    implements them (:func:`~phone_sim.call.session.call_signature`). One per profile."""
    signature = _SIGNATURES.get(profile)
    if signature is None:
        signature = _SIGNATURES[profile] = call_signature(
            PhoneSignature.for_profile(profile, extra_methods=EXTRA_METHODS)
        )
    return signature


def tls_context_for(profile: FirmwareProfile, trust: TrustStore | None = None) -> TlsClientContext:
    """The shared TLS client context of *profile* with *trust* (built once per process)."""
    key = (profile, trust)
    context = _CONTEXTS.get(key)
    if context is None:
        context = _CONTEXTS[key] = TlsClientContext(profile, trust)
    return context


class _Stream(asyncio.Protocol):
    """The phone's side of one TCP or TLS connection."""

    __slots__ = ("phone", "transport")

    def __init__(self, phone: Phone) -> None:
        self.phone = phone
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they behave as one.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.phone._stream_data(self, data)

    def eof_received(self) -> bool:
        return False  # close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.phone._stream_lost(self)


class _Accepted(asyncio.Protocol):
    """A connection the PBX opened to the phone's TCP listener."""

    __slots__ = ("peer", "phone", "transport")

    def __init__(self, phone: Phone) -> None:
        self.phone = phone
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.peer = (str(peername[0]), int(peername[1]))
        self.phone._peers[self.peer] = self

    def data_received(self, data: bytes) -> None:
        self.phone._peer_data(self, data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.phone._peer_lost(self)


class _Datagram(asyncio.DatagramProtocol):
    """The phone's UDP socket."""

    __slots__ = ("phone",)

    def __init__(self, phone: Phone) -> None:
        self.phone = phone

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.phone._datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)


def _route_address(family: int, remote: Address) -> str:
    # The local address the kernel would use towards *remote*: connect() on a UDP socket
    # sends nothing.
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(remote)
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1" if family == socket.AF_INET else "::1"


class Phone:
    """One emulated D-Series phone, registering over UDP, TCP or TLS.

    *config* (:class:`~phone_sim.phone.config.PhoneConfig`) says everything: the firmware
    (User-Agent, digest algorithms, TLS policy), the accounts, the trust store, timing
    (``config.registration``), calls (``config.calls``), the network (``local_host`` fixes
    the address UDP binds and advertises; ``listen_port`` also opens a TCP listener, as the
    firmware listens on 5060). Build one with :func:`build_phone`. *tls_context* shares a TLS
    context; *signature* replaces what the phone advertises (default:
    :func:`phone_signature`); *rng* seeds Call-IDs, tags and jitter.

    Calls: :meth:`dial` places one, :meth:`next_call` takes the next incoming one. An
    incoming INVITE rings at once (180) whether or not anyone waits on :meth:`next_call`;
    with ``config.auto_answer`` the phone also answers it (200) and echoes the caller's
    audio, else it rings until answered, rejected, cancelled or ``config.calls.ring_timeout``
    (480).

    Use it as an async context manager; leaving the block hangs up, unregisters and closes.
    """

    __slots__ = (
        "_auto_answer",
        "_call_config",
        "_calls",
        "_closed",
        "_core",
        "_gen",
        "_last",
        "_last_error",
        "_listen_port",
        "_listener",
        "_local_host",
        "_loop",
        "_open_task",
        "_peers",
        "_queue",
        "_registered",
        "_stopped",
        "_stream",
        "_timer",
        "_timer_at",
        "_tls_context",
        "_trust",
        "_udp",
        "_udp_local",
        "_waiters",
        "account",
        "config",
        "profile",
    )

    def __init__(
        self,
        config: PhoneConfig,
        *,
        tls_context: TlsClientContext | None = None,
        rng: random.Random | None = None,
        signature: PhoneSignature | None = None,
    ) -> None:
        self.config = config
        self.profile = config.profile
        self.account = config.primary_account
        self._trust = config.trust
        self._tls_context = tls_context
        self._local_host = config.network.local_host
        self._listen_port = config.network.listen_port
        self._listener: asyncio.AbstractServer | None = None
        self._peers: dict[Address, _Accepted] = {}
        self._core = RegistrationCore(
            config.profile, self.account, settings=config.registration, rng=rng,
            signature=signature or phone_signature(config.profile),
        )
        self._core.ua_hook = self._ua_event
        self._calls: CallManager | None = None
        self._call_config = config.calls
        self._auto_answer = config.auto_answer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: _Stream | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_local: Address | None = None
        self._open_task: asyncio.Task[None] | None = None
        self._gen = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._waiters: list[asyncio.Future[RegistrationSucceeded]] = []
        self._registered: list[asyncio.Future[RegistrationSucceeded]] = []
        self._stopped: asyncio.Future[Unregistered] | None = None
        self._queue: asyncio.Queue[PhoneEvent | PhoneCallEvent] | None = None
        self._last: RegistrationSucceeded | None = None
        self._last_error: PhoneSimError | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Phone {self.account.username} {self._core.state.value} {self.host.label}>"

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> RegState:
        """The registration state."""
        return self._core.state

    @property
    def registered(self) -> bool:
        """True while registered."""
        return self._core.registered

    @property
    def host(self) -> SipHost:
        """The registrar in use or being tried."""
        return self._core.host

    @property
    def contact(self) -> str | None:
        """The Contact URI registered, once a transport is open."""
        return self._core.contact

    @property
    def listen_address(self) -> Address | None:
        """Where the phone's TCP listener is bound (after :meth:`start`), or None."""
        if self._listener is None:
            return None
        sockets = self._listener.sockets  # type: ignore[attr-defined]
        name = sockets[0].getsockname()
        return (str(name[0]), int(name[1]))

    async def listen(self) -> Address:
        """Open the TCP listener now (done by :meth:`register` when *listen_port* is set)."""
        if self._listener is None:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            port = self._listen_port or 0
            host = self._local_host or "127.0.0.1"
            try:
                self._listener = await self._loop.create_server(
                    lambda: _Accepted(self), host, port
                )
            except OSError as exc:
                raise SipTransportError(
                    f"cannot listen on TCP {host}:{port}: {exc.strerror or exc}"
                ) from None
        address = self.listen_address
        assert address is not None
        return address

    @property
    def last_error(self) -> PhoneSimError | None:
        """The error of the last failed attempt, if any."""
        return self._last_error

    @property
    def core(self) -> RegistrationCore:
        """The sans-I/O core (for inspection)."""
        return self._core

    # -- API ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Phone:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _now(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    def start(self) -> None:
        """Start registering in the background (idempotent)."""
        if self._closed:
            raise UsageError("the phone is closed")
        now = self._now()
        if self._core.state is RegState.IDLE:
            self._core.start(now)
            self._pump()

    async def register(self, timeout: float | None = None) -> RegistrationSucceeded:
        """Start registering and return when the first attempt succeeds.

        Raises the first attempt's error (``TlsRefused`` with its bitmask,
        :class:`AuthenticationRefused`, :class:`RegistrationRefused`,
        :class:`RegistrationTimeout`, :class:`SipTransportError`); the phone keeps retrying in
        the background until :meth:`unregister` or :meth:`close`.
        """
        if self._listen_port is not None and self.account.host_primary.transport is (
            SipTransport.TCP
        ):
            await self.listen()
        self.start()
        if self._core.registered and self._last is not None:
            return self._last
        assert self._loop is not None
        future: asyncio.Future[RegistrationSucceeded] = self._loop.create_future()
        self._waiters.append(future)
        return await self._wait(future, timeout, "registration")

    async def wait_registered(self, timeout: float | None = None) -> RegistrationSucceeded:
        """Wait until registered, through any retries and failovers (starting if needed).

        On *timeout* raises :class:`RegistrationTimeout` naming the last error seen.
        """
        self.start()
        if self._core.registered and self._last is not None:
            return self._last
        assert self._loop is not None
        future: asyncio.Future[RegistrationSucceeded] = self._loop.create_future()
        self._registered.append(future)
        return await self._wait(future, timeout, "registered state")

    async def _wait(
        self, future: asyncio.Future[RegistrationSucceeded], timeout: float | None, what: str
    ) -> RegistrationSucceeded:
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            last = f"; last error: {self._last_error}" if self._last_error else ""
            raise RegistrationTimeout(
                f"no {what} with {self.host.label} within {timeout:g} s{last}"
            ) from None

    async def unregister(self) -> Unregistered:
        """Remove the binding (REGISTER with Expires: 0) and stop; safe to call twice."""
        if self._loop is None or self._core.state is RegState.IDLE:
            self._closed = True
            return Unregistered(host=None, confirmed=False)
        if self._stopped is None:
            self._stopped = self._loop.create_future()
        if self._core.state is not RegState.STOPPED:
            self._core.stop(self._now())
            self._pump()
        return await asyncio.shield(self._stopped)

    async def close(self) -> None:
        """Hang up every call, unregister if registered, release every socket and timer."""
        try:
            if self._calls is not None and not self._closed:
                await self._calls.close()
            await self.unregister()
        finally:
            self._closed = True
            self._teardown()

    def events(self) -> AsyncIterator[PhoneEvent | PhoneCallEvent]:
        """Events from now on, as they happen (one consumer): the registration's
        (:data:`~phone_sim.phone.registration.PhoneEvent`) and each call's lifecycle
        (:data:`~phone_sim.call.aio.PhoneCallEvent`: ``CallPlaced`` or ``CallArrived``, then
        ``CallAnswered`` if it comes up, then ``CallFinished``)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._iterate(self._queue)

    @staticmethod
    async def _iterate(
        queue: asyncio.Queue[PhoneEvent | PhoneCallEvent],
    ) -> AsyncIterator[PhoneEvent | PhoneCallEvent]:
        while True:
            yield await queue.get()

    # -- calls --------------------------------------------------------------------------------

    @property
    def calls(self) -> CallManager:
        """The phone's calls (``calls.calls`` by Call-ID, ``calls.refused`` by status); made
        on first use, inside the running loop."""
        if self._calls is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                raise UsageError("a phone's calls live in a running event loop") from None
            # Imported here: the media stack is heavy, and a registering fleet needs none.
            from phone_sim.call.aio import CallManager  # noqa: PLC0415

            core = self._core
            self._calls = CallManager(
                get_ua=lambda: core.ua,
                flush=self._pump,
                local_uri=self._local_uri,
                domain=lambda: self.account.domain_for(core.registered_host or core.host),
                destination=lambda: core.remote,
                media_host=self._media_host(),
                get_media_host=self._media_host,
                media_encryption=self._media_encryption(),
                get_media_encryption=self._media_encryption,
                config=self._call_config,
                auto_answer=self._auto_answer,
                on_event=self._call_event,
            )
        return self._calls

    def _call_event(self, event: PhoneCallEvent) -> None:
        # A call's lifecycle, for events(); nobody listening costs one test.
        if self._queue is not None:
            self._queue.put_nowait(event)

    def _local_uri(self) -> NameAddr:
        host = self._core.registered_host or self._core.host
        return NameAddr(
            SipUri("sip", self.account.username, None, self.account.domain_for(host), None, ())
        )

    def _media_host(self) -> str:
        # RTP goes from the address the SIP transport uses (as the firmware does).
        ua = self._core.ua
        if ua is not None:
            return ua.config.local_host.strip("[]")
        return self._local_host or "127.0.0.1"

    def _media_encryption(self) -> MediaEncryption:
        # The host in use: after a failover, the alternate's <media_encryption>.
        return MediaEncryption.from_config(self._core.host.media_encryption)

    def _ua_event(self, event: UaEvent, now: float) -> bool:
        # The core's hook: the calls take INVITEs and everything in their dialogs.
        calls = self._calls
        if calls is None:
            if not (
                isinstance(event, RequestReceived)
                and event.request.method == "INVITE"
                and event.request.to_tag is None
            ) or self._closed:
                return False
            calls = self.calls
        return calls.handle_ua_event(event, now)

    async def dial(self, to: str | SipUri) -> Call:
        """Call *to* (``"102"``: an extension at the phone's SIP domain; or a ``sip:`` URI)
        over the phone's registered transport; returns once the INVITE is sent (then
        ``await call.wait_answered()``). Raises :class:`UsageError` before :meth:`register`.
        """
        if self._closed:
            raise UsageError("the phone is closed")
        if self._core.ua is None:
            raise UsageError("the phone has no SIP transport yet: register first")
        return await self.calls.dial(to)

    async def next_call(self, timeout: float | None = None) -> Call:
        """The next incoming call still going: ringing (``await call.answer()`` or
        ``await call.reject(486)``), or already answered with *auto_answer*. Raises
        ``CallTimeout`` after *timeout* seconds."""
        if self._closed:
            raise UsageError("the phone is closed")
        return await self.calls.next_call(timeout)

    # -- the pump -------------------------------------------------------------------------------

    def _pump(self) -> None:
        core = self._core
        for data, destination in core.datagrams_to_send():
            self._write(data, destination)
        while (command := core.next_command()) is not None:
            if isinstance(command, OpenTransport):
                self._gen += 1
                assert self._loop is not None
                self._open_task = self._loop.create_task(self._open(command, self._gen))
            elif isinstance(command, CloseTransport):
                self._close_transport(final=command.final)
            elif isinstance(command, ClosePeer):
                accepted = self._peers.pop(command.peer, None)
                if accepted is not None and accepted.transport is not None:
                    accepted.transport.close()
        while (event := core.next_event()) is not None:
            self._dispatch(event)
        calls = self._calls
        if calls is not None and calls.router.ua is not core.ua:
            calls.transport_changed()  # a reconnect or a lost connection ends the calls
        self._arm()

    def _write(self, data: bytes, destination: Address) -> None:
        peer = self._peers.get(destination) if self._peers else None
        if peer is not None and destination != self._core.remote:
            if peer.transport is not None and not peer.transport.is_closing():
                peer.transport.write(data)
            return
        if self._stream is not None and self._stream.transport is not None:
            if not self._stream.transport.is_closing():
                self._stream.transport.write(data)
        elif self._udp is not None and not self._udp.is_closing():
            try:
                self._udp.sendto(data, destination)
            except OSError as exc:
                logger.debug("UDP send to %s failed: %s", destination, exc)

    def _arm(self) -> None:
        at = self._core.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            assert self._loop is not None
            self._timer = self._loop.call_at(at, self._on_timer, at)

    def _on_timer(self, at: float) -> None:
        self._timer = None
        self._timer_at = None
        self._core.handle_timer(max(self._now(), at))
        self._pump()

    def _dispatch(self, event: PhoneEvent) -> None:
        if isinstance(event, RegistrationSucceeded):
            self._last = event
            self._last_error = None
            for waiters in (self._waiters, self._registered):
                for future in waiters:
                    if not future.done():
                        future.set_result(event)
                waiters.clear()
        elif isinstance(event, RegistrationFailed):
            self._last_error = event.error
            for future in self._waiters:
                if not future.done():
                    future.set_exception(event.error)
            self._waiters.clear()
        elif isinstance(event, Unregistered):
            if self._stopped is None:
                assert self._loop is not None
                self._stopped = self._loop.create_future()
            if not self._stopped.done():
                self._stopped.set_result(event)
            error = self._last_error or SipTransportError("the phone stopped")
            for waiters in (self._waiters, self._registered):
                for future in waiters:
                    if not future.done():
                        future.set_exception(error)
                waiters.clear()
        if self._queue is not None:
            self._queue.put_nowait(event)

    # -- transports -------------------------------------------------------------------------

    def _context(self) -> TlsClientContext:
        if self._tls_context is None:
            self._tls_context = tls_context_for(self.profile, self._trust)
        return self._tls_context

    async def _open(self, command: OpenTransport, gen: int) -> None:
        host = command.host
        port = host.effective_port
        timeout = self._core.settings.register_timeout
        loop = self._loop
        assert loop is not None
        stream: _Stream | None = None
        local: Address | None = None
        remote: Address | None = None
        error: PhoneSimError | None = None
        try:
            if host.transport is SipTransport.UDP:
                local, remote = await self._open_udp(host)
            elif host.transport is SipTransport.TCP:
                tcp = stream = _Stream(self)
                try:
                    async with asyncio.timeout(timeout):
                        await loop.create_connection(lambda: tcp, host.server, port)
                except OSError as exc:
                    raise SipTransportError(
                        f"cannot connect to {host.label}: {exc.strerror or exc}"
                    ) from None
                except TimeoutError:
                    raise SipTransportError(
                        f"no TCP answer from {host.label} within {timeout:g} s"
                    ) from None
            else:
                made: list[_Stream] = []

                def factory() -> _Stream:
                    proto = _Stream(self)
                    made.append(proto)
                    return proto

                await open_tls_connection(
                    host.server, port, context=self._context(),
                    server_name=command.server_name, protocol_factory=factory,
                    connect_timeout=timeout, handshake_timeout=timeout,
                )
                stream = made[0]
        except PhoneSimError as exc:
            error = exc
        except asyncio.CancelledError:
            if stream is not None and stream.transport is not None:
                stream.transport.abort()
            raise
        if gen == self._gen:
            self._open_task = None  # a finished task would hold its coroutine's memory
        if gen != self._gen or self._closed:
            # A close or a newer open overtook this one.
            if stream is not None and stream.transport is not None:
                stream.transport.abort()
            return
        now = self._now()
        if error is not None:
            self._core.transport_failed(error, now)
        elif stream is not None:
            assert stream.transport is not None
            sockname = stream.transport.get_extra_info("sockname")
            peername = stream.transport.get_extra_info("peername")
            self._stream = stream
            local = (str(sockname[0]), int(sockname[1]))
            remote = (str(peername[0]), int(peername[1]))
            self._core.transport_opened(local, remote, now)
        else:
            assert local is not None and remote is not None
            self._core.transport_opened(local, remote, now)
        self._pump()

    async def _open_udp(self, host: SipHost) -> tuple[Address, Address]:
        loop = self._loop
        assert loop is not None
        port = host.effective_port
        try:
            infos = await loop.getaddrinfo(host.server, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise SipTransportError(
                f"cannot resolve {host.server!r}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        if not infos:
            raise SipTransportError(f"cannot resolve {host.server!r}")
        family, _, _, _, sockaddr = infos[0]
        remote = (str(sockaddr[0]), int(sockaddr[1]))
        if self._udp is None or self._udp.is_closing():
            # Without local_host the socket listens on every address, as the phone does.
            any_address = "0.0.0.0" if family == socket.AF_INET else "::"  # noqa: S104
            bind = self._local_host or any_address
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagram(self), local_addr=(bind, 0), family=family
                )
            except OSError as exc:
                raise SipTransportError(
                    f"cannot open a UDP socket on {bind}: {exc.strerror or exc}"
                ) from None
            self._udp = transport
            port_bound = int(transport.get_extra_info("sockname")[1])
            advertised = self._local_host or _route_address(family, remote)
            self._udp_local = (advertised, port_bound)
        assert self._udp_local is not None
        return self._udp_local, remote

    def _close_transport(self, *, final: bool) -> None:
        self._gen += 1
        stream, self._stream = self._stream, None
        if stream is not None and stream.transport is not None:
            stream.transport.close()
        if final:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for accepted in list(self._peers.values()):
                if accepted.transport is not None:
                    accepted.transport.close()
            self._peers.clear()
            if self._udp is not None:
                self._udp.close()
                self._udp = None
            if self._open_task is not None and not self._open_task.done():
                self._open_task.cancel()

    def _stream_data(self, stream: _Stream, data: bytes) -> None:
        if stream is not self._stream:
            return
        remote = self._core.remote
        if remote is None:
            return
        self._core.receive_data(data, remote, self._now())
        self._pump()

    def _stream_lost(self, stream: _Stream) -> None:
        if stream is not self._stream:
            return
        self._stream = None
        self._core.transport_lost(self._now())
        self._pump()

    def _peer_data(self, peer: _Accepted, data: bytes) -> None:
        if self._peers.get(peer.peer) is not peer:
            return
        self._core.receive_data(data, peer.peer, self._now())
        self._pump()

    def _peer_lost(self, peer: _Accepted) -> None:
        if self._peers.get(peer.peer) is peer:
            del self._peers[peer.peer]
            self._core.peer_closed(peer.peer)

    def _datagram(self, data: bytes, source: Address) -> None:
        self._core.receive_data(data, source, self._now())
        self._pump()

    def _teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        self._close_transport(final=True)


def build_phone(config: PhoneConfig, *, tls_context: TlsClientContext | None = None) -> Phone:
    """The one way every command, scenario and fixture makes a phone from its *config*.

    The TLS context is shared per (firmware profile, trust store) unless *tls_context* is
    given, so a fleet of identical phones pays for one.
    """
    return Phone(config, tls_context=tls_context)
