"""The asyncio phone: a thin shell of sockets, one timer and futures around
:class:`~phone_sim.phone.core.PhoneCore`.

::

    async with build_phone(config) as phone:
        await phone.register()          # every line's first attempt, or its error
        call = await phone.dial("102")  # or: call = await phone.next_call()
        await call.wait_answered()
        async for event in phone.events():
            ...

One pump per phone: every input (bytes, a connection made or lost, the timer, an API call)
is fed to the core with ``now=loop.time()``; then what it wants sent is written, its
transport commands are run, its events are dispatched (to futures, to the
:class:`~phone_sim.call.aio.Call` objects and to :meth:`Phone.events`), and one
``loop.call_at()`` is armed at its ``get_timer()`` (:class:`~phone_sim.aio_timer.CoreTimer`).
The shell owns the sockets (one UDP socket, one connection per TCP/TLS flow, an optional TCP
listener), the media endpoints of calls and the futures; the core owns every piece of
protocol state. TLS contexts are shared per (profile, trust store): :func:`tls_context_for`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import Any

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.aio_timer import CoreTimer
from phone_sim.call.aio import Call, CallFailed, CallTimeout, shared_media_clock
from phone_sim.call.events import CallArrived, CallFinished, PhoneCallEvent
from phone_sim.call.session import CallState
from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.firmware import FirmwareProfile
from phone_sim.media.aio import MediaClock, MediaEndpoint
from phone_sim.phone.config import PhoneConfig
from phone_sim.phone.core import (
    CALL_EVENTS,
    CloseTransport,
    OpenTransport,
    PhoneCore,
    Shutdown,
    phone_signature,
)
from phone_sim.phone.events import (
    PhoneEvent,
    PhoneStopped,
    RegistrationFailed,
    RegistrationSucceeded,
)
from phone_sim.phone.registration import (
    Registration,
    RegistrationTimeout,
    RegState,
    SipTransportError,
)
from phone_sim.sip.routing import Address
from phone_sim.sip.signature import PhoneSignature
from phone_sim.tls.aio import describe_connect_error, open_tls_connection
from phone_sim.tls.client import TlsClientContext, TrustStore

__all__ = ["Phone", "build_phone", "phone_signature", "tls_context_for"]

logger = logging.getLogger(__name__)

_CONTEXTS: dict[tuple[FirmwareProfile, TrustStore | None], TlsClientContext] = {}

#: Incoming calls kept for ``next_call()`` when nobody takes them (auto-answering phones).
_INCOMING_KEPT = 16


def tls_context_for(profile: FirmwareProfile, trust: TrustStore | None = None) -> TlsClientContext:
    """The shared TLS client context of *profile* with *trust* (built once per process)."""
    key = (profile, trust)
    context = _CONTEXTS.get(key)
    if context is None:
        context = _CONTEXTS[key] = TlsClientContext(profile, trust)
    return context


class _Stream(asyncio.Protocol):
    """The phone's side of one TCP or TLS flow (one it opened, or one a PBX opened)."""

    __slots__ = ("flow", "phone", "transport")

    def __init__(self, phone: Phone, flow: int) -> None:
        self.phone = phone
        self.flow = flow
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


class _Accepted(_Stream):
    """A connection a PBX opened to the phone's TCP listener: a flow of its own."""

    __slots__ = ()

    def __init__(self, phone: Phone) -> None:
        super().__init__(phone, 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.phone._accepted(self)


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
    """One emulated D-Series phone: its lines register over UDP, TCP or TLS; it places and
    answers calls.

    *config* (:class:`~phone_sim.phone.config.PhoneConfig`) says everything: the firmware
    (User-Agent, digest algorithms, TLS policy), the accounts, the trust store, timing
    (``config.registration``), calls (``config.calls``), media and network. Build one with
    :func:`build_phone`. *tls_context* shares a TLS context; *signature* replaces what the
    phone advertises (default :func:`phone_signature`); *rng* seeds Call-IDs, tags and
    jitter; *key_factory* makes SDES keys (tests).

    Calls: :meth:`dial` places one (from the primary line, or ``account=``),
    :meth:`next_call` takes the next incoming one. An incoming INVITE rings at once (180)
    whether or not anyone waits on :meth:`next_call`; with ``config.auto_answer`` the phone
    also answers it (200) and echoes the caller's audio, else it rings until answered,
    rejected, cancelled or ``config.calls.ring_timeout`` (480).

    Use it as an async context manager; leaving the block hangs up, unregisters and closes.
    """

    def __init__(
        self,
        config: PhoneConfig,
        *,
        tls_context: TlsClientContext | None = None,
        rng: random.Random | None = None,
        signature: PhoneSignature | None = None,
        key_factory: Callable[[], bytes] | None = None,
    ) -> None:
        self._core = PhoneCore(config, signature=signature or phone_signature(config.profile),
                               rng=rng, key_factory=key_factory)
        self._tls_context = tls_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: CoreTimer | None = None
        self._clock: MediaClock | None = None
        self._streams: dict[int, _Stream] = {}
        self._opening: dict[int, asyncio.Task[None]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_local: Address | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._calls: dict[str, Call] = {}
        self._incoming: list[Call] = []  # a list: an empty deque costs 760 bytes
        self._incoming_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[None]] | None = None  # auto-answers, made when needed
        # (condition, future) pairs looked at after every pump.
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._outcomes: dict[int, RegistrationSucceeded | PhoneSimError] = {}
        self._last: dict[int, RegistrationSucceeded] = {}
        self._last_error: PhoneSimError | None = None
        self._stopped: asyncio.Future[PhoneStopped] | None = None
        self._queue: asyncio.Queue[PhoneEvent] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Phone {self.account.username} {self.state.value} {self.host.label}>"

    # -- state --------------------------------------------------------------------------------

    @property
    def core(self) -> PhoneCore:
        """The sans-I/O core (for inspection, and for a call's actions)."""
        return self._core

    @property
    def config(self) -> PhoneConfig:
        """The phone's configuration (as last applied)."""
        return self._core.config

    @property
    def profile(self) -> FirmwareProfile:
        """Model and firmware."""
        return self._core.config.profile

    @property
    def account(self) -> Account:
        """The primary line's account."""
        return self._core.primary.account

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the phone runs on (the running loop once started)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def media_clock(self) -> MediaClock:
        """The media pacer shared by every call of the loop."""
        if self._clock is None:
            self._clock = shared_media_clock(self.loop)
        return self._clock

    @property
    def state(self) -> RegState:
        """The primary line's registration state."""
        return self._core.primary.state

    @property
    def registered(self) -> bool:
        """Whether every registering line holds a binding."""
        regs = self._registering()
        return bool(regs) and all(r.registered for r in regs)

    @property
    def host(self) -> SipHost:
        """The primary line's registrar, in use or being tried."""
        return self._core.primary.host

    @property
    def contact(self) -> str | None:
        """The primary line's Contact URI, once its flow is open."""
        contact = self._core.primary.contact
        return str(contact.uri) if contact is not None else None

    @property
    def last_error(self) -> PhoneSimError | None:
        """The error of the last failed attempt of any line, if any."""
        return self._last_error

    @property
    def calls(self) -> Mapping[str, Call]:
        """The calls still going, by Call-ID."""
        return MappingProxyType(self._calls)

    @property
    def refused(self) -> dict[int, int]:
        """Incoming INVITEs refused before ringing, by status (488, 400...)."""
        return dict(self._core.calls.refused)

    @property
    def listen_address(self) -> Address | None:
        """Where the phone's TCP listener is bound (once open), or None."""
        if self._listener is None:
            return None
        sockets = self._listener.sockets  # type: ignore[attr-defined]
        name = sockets[0].getsockname()
        return (str(name[0]), int(name[1]))

    @property
    def sip_address(self) -> Address | None:
        """The UDP socket's advertised address (once bound), or None."""
        return self._udp_local

    def _registering(self) -> list[Registration]:
        return [r for r in self._core.registrations.values() if r.account.register]

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Phone:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _now(self) -> float:
        return self.loop.time()

    async def listen(self) -> Address:
        """Open the TCP listener now (done by :meth:`start` when ``network.listen_port`` is
        set and a line uses TCP)."""
        if self._listener is None:
            network = self.config.network
            port = network.listen_port or 0
            host = network.local_host or "127.0.0.1"
            try:
                self._listener = await self.loop.create_server(
                    lambda: _Accepted(self), host, port
                )
            except OSError as exc:
                raise SipTransportError(
                    f"cannot listen on TCP {host}:{port}: {exc.strerror or exc}"
                ) from None
        address = self.listen_address
        assert address is not None
        return address

    async def start(self) -> None:
        """Bring the lines up in the background: open their flows and register (idempotent).
        The phone keeps retrying, as a real phone does, until :meth:`unregister`."""
        if self._closed:
            raise UsageError("the phone is closed")
        if self._core._started:
            return
        if self.config.network.listen_port is not None and any(
            a.host_primary.transport is SipTransport.TCP for a in self.config.accounts
        ):
            await self.listen()
        self._timer = CoreTimer(self.loop, self._on_timer)
        self._core.start(self._now())
        self.flush()

    async def register(self, timeout: float | None = None) -> RegistrationSucceeded:
        """Start, and return when every registering line's first attempt succeeded (the
        primary's success).

        Raises the first failed attempt's error (``TlsRefused`` with its bitmask,
        :class:`AuthenticationRefused`, :class:`RegistrationRefused`,
        :class:`RegistrationTimeout`, :class:`SipTransportError`); the phone keeps retrying
        in the background until :meth:`unregister` or :meth:`close`.
        """
        await self.start()
        regs = self._registering()
        if not regs:
            raise UsageError("no line of this phone registers (register=\"0\" on all)")
        await self._until(lambda: all(r.index in self._outcomes for r in regs), timeout,
                          "registration")
        for reg in regs:
            outcome = self._outcomes[reg.index]
            if isinstance(outcome, PhoneSimError):
                raise outcome
        first = self._outcomes[regs[0].index]
        assert isinstance(first, RegistrationSucceeded)
        return first

    async def wait_registered(self, timeout: float | None = None) -> RegistrationSucceeded:
        """Wait until every registering line is registered, through retries and failovers
        (starting if needed). On *timeout* raises :class:`RegistrationTimeout` naming the
        last error seen."""
        await self.start()
        regs = self._registering()
        await self._until(lambda: all(r.registered for r in regs), timeout, "registered state")
        return self._last[regs[0].index]

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every line can place calls (registered, or its flow open for a line
        that does not register)."""
        await self.start()
        await self._until(lambda: all(r.usable for r in self._core.registrations.values()),
                          timeout, "open SIP flows")

    async def _until(self, condition: Callable[[], bool], timeout: float | None,
                     what: str) -> None:
        if condition():
            return
        future: asyncio.Future[None] = self.loop.create_future()
        entry = (condition, future)
        self._conditions.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            last = f"; last error: {self._last_error}" if self._last_error else ""
            raise RegistrationTimeout(
                f"no {what} with {self.host.label} within {timeout:g} s{last}"
            ) from None
        finally:
            if entry in self._conditions:
                self._conditions.remove(entry)

    async def unregister(self) -> PhoneStopped:
        """Hang up, remove every binding (REGISTER with Expires: 0) and stop; safe twice."""
        if self._loop is None or not self._core._started:
            self._closed = True
            return PhoneStopped(confirmed=False, registered=False)
        if self._stopped is None:
            self._stopped = self.loop.create_future()
        if not self._core.stopped:
            self._core.stop(self._now())
            self.flush()
        return await asyncio.shield(self._stopped)

    async def close(self) -> None:
        """Hang up every call, unregister every line, release every socket and timer."""
        try:
            if not self._closed and self._calls:
                calls = list(self._calls.values())
                results = await asyncio.gather(*(c.hangup(timeout=2.0) for c in calls),
                                               return_exceptions=True)
                for call, result in zip(calls, results, strict=True):
                    if isinstance(result, BaseException) and not isinstance(
                        result, PhoneSimError
                    ):
                        raise result
                    if isinstance(result, PhoneSimError):
                        logger.debug("call %s: hang-up at close: %s", call.call_id, result)
            await self.unregister()
        finally:
            self._closed = True
            self._teardown()

    def events(self) -> AsyncIterator[PhoneEvent]:
        """Events from now on, as they happen (one consumer): every line's registration,
        requests answered, and every call's (:data:`~phone_sim.phone.events.PhoneEvent`)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._iterate(self._queue)

    @staticmethod
    async def _iterate(queue: asyncio.Queue[PhoneEvent]) -> AsyncIterator[PhoneEvent]:
        while True:
            yield await queue.get()

    async def reconfigure(self, config: PhoneConfig) -> None:
        """Apply a changed configuration live (a re-provisioning): new or changed lines
        register anew, removed ones unregister, calls in progress go on."""
        self._core.reconfigure(config, self._now())
        self.flush()

    # -- calls --------------------------------------------------------------------------------

    async def dial(self, to: str, *, account: int | None = None) -> Call:
        """Call *to* (``"102"``: an extension at the line's SIP domain; or a ``sip:`` URI)
        from *account* (an index; default the primary line) over its registered flow;
        returns once the INVITE is sent (then ``await call.wait_answered()``). Raises
        :class:`UsageError` before the line has a connection."""
        if self._closed:
            raise UsageError("the phone is closed")
        core = self._core
        reg = core.registration(account)
        if not reg.usable:
            raise UsageError(
                f"account {reg.account.username!r} has no SIP connection yet: register first")
        endpoint = await MediaEndpoint.open(core.media_host(reg.index),
                                            impairment=self.config.media.impairment)
        try:
            local = core.local_audio(endpoint.local_rtp_port, account=reg.index)
            call_id = core.dial(to, self._now(), local=local, account=reg.index)
        except BaseException:
            endpoint.close()
            raise
        call = self._calls[call_id] = Call(self, call_id, incoming=False, remote=to,
                                           account=reg.index, endpoint=endpoint)
        self.flush()
        return call

    async def next_call(self, timeout: float | None = None) -> Call:
        """The next incoming call still going: ringing (``await call.answer()`` or
        ``await call.reject(486)``), or already answered with auto-answer. Calls that ended
        while nobody waited are skipped. Raises ``CallTimeout`` after *timeout* seconds."""
        if self._closed:
            raise UsageError("the phone is closed")
        try:
            async with asyncio.timeout(timeout):
                while True:
                    while self._incoming:
                        call = self._incoming.pop(0)
                        if call.state is not CallState.TERMINATED:
                            return call
                    future: asyncio.Future[None] = self.loop.create_future()
                    self._incoming_waiters.append(future)
                    await future
        except TimeoutError:
            raise CallTimeout(f"no incoming call within {timeout:g} s") from None

    async def _auto_answer(self, call: Call) -> None:
        try:
            await call.answer()
        except CallFailed:
            return  # cancelled while the media opened
        except PhoneSimError as exc:
            # No media port (or the call moved on): refuse rather than ring until timeout.
            logger.warning("call %s: cannot auto-answer: %s", call.call_id, exc)
            if call.state is CallState.INCOMING:
                await call.reject(500)
            return
        call.echo()

    def _spawn(self, coro: Any) -> None:
        if self._tasks is None:
            self._tasks = set()
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the pump -------------------------------------------------------------------------------

    def flush(self) -> None:
        """The pump: write what the core wants sent, run its transport commands, dispatch
        its events, re-arm its timer."""
        core = self._core
        for flow, data, destination in core.data_to_send():
            self._write(flow, data, destination)
        while (command := core.next_command()) is not None:
            if isinstance(command, OpenTransport):
                task = self.loop.create_task(self._open(command))
                self._opening[command.flow] = task
            elif isinstance(command, CloseTransport):
                self._close_flow(command.flow)
            else:
                assert isinstance(command, Shutdown)
                self._close_sockets()
        while (event := core.next_event()) is not None:
            self._dispatch(event)
        if self._timer is not None:
            self._timer.arm(core.get_timer())
        if self._conditions:
            for condition, future in list(self._conditions):
                if not future.done() and condition():
                    future.set_result(None)

    def _write(self, flow: int | None, data: bytes, destination: Address) -> None:
        if flow is None:
            if self._udp is not None and not self._udp.is_closing():
                try:
                    self._udp.sendto(data, destination)
                except OSError as exc:
                    logger.debug("UDP send to %s failed: %s", destination, exc)
            return
        stream = self._streams.get(flow)
        if stream is not None and stream.transport is not None and (
            not stream.transport.is_closing()
        ):
            stream.transport.write(data)

    def _on_timer(self, at: float) -> None:
        self._core.handle_timer(max(self._now(), at))
        self.flush()

    def _dispatch(self, event: PhoneEvent) -> None:
        if isinstance(event, RegistrationSucceeded):
            self._outcomes[event.account] = event
            self._last[event.account] = event
        elif isinstance(event, RegistrationFailed):
            self._outcomes[event.account] = event.error
            self._last_error = event.error
        elif isinstance(event, PhoneStopped):
            if self._stopped is None:
                self._stopped = self.loop.create_future()
            if not self._stopped.done():
                self._stopped.set_result(event)
            error = self._last_error or SipTransportError("the phone stopped")
            for _, future in self._conditions:
                if not future.done():
                    future.set_exception(error)
        elif isinstance(event, CALL_EVENTS):
            self._call_event(event)
        if self._queue is not None:
            self._queue.put_nowait(event)

    def _call_event(self, event: PhoneCallEvent) -> None:
        if isinstance(event, CallArrived):
            arrived = self._calls[event.call_id] = Call(
                self, event.call_id, incoming=True, remote=event.remote, account=event.account)
            self._queue_incoming(arrived)
            if self.config.auto_answer:
                self._spawn(self._auto_answer(arrived))
            return
        call = self._calls.get(event.call_id)
        if call is None:
            return
        call.on_event(event)
        if isinstance(event, CallFinished):
            del self._calls[event.call_id]

    def _queue_incoming(self, call: Call) -> None:
        incoming = self._incoming
        if len(incoming) >= _INCOMING_KEPT:
            # Nobody takes the calls (an auto-answering phone): keep only the live ones.
            live = [c for c in incoming if c.state is not CallState.TERMINATED]
            incoming.clear()
            incoming.extend(live)
        incoming.append(call)
        waiters, self._incoming_waiters = self._incoming_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    # -- transports -------------------------------------------------------------------------

    def _context(self) -> TlsClientContext:
        if self._tls_context is None:
            self._tls_context = tls_context_for(self.profile, self.config.trust)
        return self._tls_context

    async def _open(self, command: OpenTransport) -> None:
        flow = command.flow
        host = command.host
        timeout = self.config.registration.register_timeout
        loop = self.loop
        stream: _Stream | None = None
        local: Address | None = None
        remote: Address | None = None
        error: PhoneSimError | None = None
        try:
            if host.transport is SipTransport.UDP:
                local, remote = await self._open_udp(host)
            elif host.transport is SipTransport.TCP:
                tcp = stream = _Stream(self, flow)
                try:
                    async with asyncio.timeout(timeout):
                        await loop.create_connection(lambda: tcp, host.server,
                                                     host.effective_port)
                except (OSError, UnicodeError) as exc:  # TimeoutError too: as over TLS
                    raise SipTransportError(describe_connect_error(
                        host.server, host.effective_port, exc, timeout)) from None
            else:
                made: list[_Stream] = []

                def factory() -> _Stream:
                    proto = _Stream(self, flow)
                    made.append(proto)
                    return proto

                await open_tls_connection(
                    host.server, host.effective_port, context=self._context(),
                    server_name=command.server_name, protocol_factory=factory,
                    connect_timeout=timeout,
                    handshake_timeout=min(timeout, self.config.registration.tls_handshake_timeout),
                )
                stream = made[0]
        except PhoneSimError as exc:
            error = exc
        except asyncio.CancelledError:
            if stream is not None and stream.transport is not None:
                stream.transport.abort()
            raise
        finally:
            if self._opening.get(flow) is asyncio.current_task():
                del self._opening[flow]
        if self._closed or self._core.stopped:
            if stream is not None and stream.transport is not None:
                stream.transport.abort()
            return
        now = self._now()
        if error is not None:
            self._core.transport_failed(flow, error, now)
        elif stream is not None:
            transport = stream.transport
            assert transport is not None
            if transport.is_closing():
                self._core.transport_failed(
                    flow, SipTransportError(f"{host.label} closed the connection at once"), now)
            else:
                self._streams[flow] = stream
                sockname = transport.get_extra_info("sockname")
                peername = transport.get_extra_info("peername")
                self._core.transport_opened(flow, (str(sockname[0]), int(sockname[1])),
                                            (str(peername[0]), int(peername[1])), now)
        else:
            assert local is not None and remote is not None
            self._core.transport_opened(flow, local, remote, now)
        self.flush()

    async def _open_udp(self, host: SipHost) -> tuple[Address, Address]:
        loop = self.loop
        port = host.effective_port
        try:
            infos = await loop.getaddrinfo(host.server, port, type=socket.SOCK_DGRAM)
        except UnicodeError as exc:  # the resolver's IDNA step refused the name
            raise SipTransportError(
                f"cannot resolve {host.server!r}: not a valid host name ({exc})") from None
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
            network = self.config.network
            any_address = "0.0.0.0" if family == socket.AF_INET else "::"  # noqa: S104
            bind = network.local_host or any_address
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagram(self), local_addr=(bind, network.sip_port), family=family
                )
            except OSError as exc:
                raise SipTransportError(
                    f"cannot open a UDP socket on {bind}:{network.sip_port}: "
                    f"{exc.strerror or exc}"
                ) from None
            self._udp = transport
            port_bound = int(transport.get_extra_info("sockname")[1])
            advertised = network.local_host or _route_address(family, remote)
            self._udp_local = (advertised, port_bound)
        assert self._udp_local is not None
        return self._udp_local, remote

    def _close_flow(self, flow: int) -> None:
        task = self._opening.pop(flow, None)
        if task is not None and not task.done():
            task.cancel()
        stream = self._streams.pop(flow, None)
        if stream is not None and stream.transport is not None:
            stream.transport.close()

    def _close_sockets(self) -> None:
        for flow in list(self._opening):
            self._close_flow(flow)
        for flow in list(self._streams):
            self._close_flow(flow)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def _accepted(self, stream: _Stream) -> None:
        transport = stream.transport
        assert transport is not None
        if self._core.stopped:
            transport.close()
            return
        sockname = transport.get_extra_info("sockname")
        peername = transport.get_extra_info("peername")
        stream.flow = self._core.connection_accepted(
            (str(sockname[0]), int(sockname[1])), (str(peername[0]), int(peername[1])),
            self._now())
        self._streams[stream.flow] = stream

    def _stream_data(self, stream: _Stream, data: bytes) -> None:
        if self._streams.get(stream.flow) is not stream:
            return
        self._core.receive_data(stream.flow, data, self._now())
        self.flush()

    def _stream_lost(self, stream: _Stream) -> None:
        if self._streams.get(stream.flow) is not stream:
            return
        del self._streams[stream.flow]
        self._core.transport_lost(stream.flow, self._now())
        self.flush()

    def _datagram(self, data: bytes, source: Address) -> None:
        self._core.receive_datagram(data, source, self._now())
        self.flush()

    def _teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks or ()):
            task.cancel()
        waiters, self._incoming_waiters = self._incoming_waiters, []
        for future in waiters:
            if not future.done():
                future.set_exception(CallFailed("the phone closed"))
        for call in list(self._calls.values()):
            call._close_media()
        self._close_sockets()


def build_phone(config: PhoneConfig, *, tls_context: TlsClientContext | None = None) -> Phone:
    """The one way every command, scenario and fixture makes a phone from its *config*.

    The TLS context is shared per (firmware profile, trust store) unless *tls_context* is
    given, so a fleet of identical phones pays for one.
    """
    return Phone(config, tls_context=tls_context)
