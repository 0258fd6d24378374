"""The embedded lab on asyncio: a registrar listening on TLS, TCP and UDP.

::

    async with Lab(users={"101": "1234", "102": "1234"}) as lab:
        lab.ports               # {"tls": 40123, "tcp": 40124, "udp": 40125}, bound on 127.0.0.1
        lab.ca_file             # the PEM root CA a phone must trust
        lab.server_name         # "lab.phone-sim.test": in the certificate, and the domain
        ...                     # point phones at lab.host:lab.ports["tls"]
        binding = await lab.wait_binding("101")
        lab.bindings("101")     # the location table, for assertions

Everything the lab decides is in :class:`~phone_sim.lab.registrar.Registrar` (sans-I/O); this
module only owns sockets, the clock and one ``loop.call_at`` timer armed at the core's
``get_timer()``. One ``SSL.Context`` serves every TLS connection; each connection is a
:class:`~phone_sim.lab.tls.TlsServerConnection` over memory BIOs and a
:class:`~phone_sim.sip.framer.StreamFramer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from phone_sim.aio_timer import CoreTimer
from phone_sim.errors import UsageError
from phone_sim.lab.aio_echo import ECHO_EXTENSION, EchoService
from phone_sim.lab.limits import ConnectionGuard, Eviction, LabLimits, WarningThrottle
from phone_sim.lab.proxy import Service
from phone_sim.lab.registrar import (
    TIMER_F,
    Binding,
    BindingAdded,
    BindingRefreshed,
    Flow,
    LabUser,
    PhoneAnswered,
    PhoneSilent,
    PhoneUnreachable,
    Registrar,
    RegistrarConfig,
    RegistrarEvent,
    UserTable,
)
from phone_sim.lab.state import CA_FILE, StateDirError, load_or_make_pki
from phone_sim.lab.tls import TlsAcceptError, TlsServerConnection, TlsServerContext
from phone_sim.sip.framer import FramerEvent, MessageRejected, StreamFramer
from phone_sim.sip.headers import HeaderValue
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse, is_keepalive, parse_message
from phone_sim.tls.pki import make_server_identity

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SERVER_NAME", "DEFAULT_USERS", "Lab", "LabError", "MessageHook"]

DEFAULT_SERVER_NAME = "lab.phone-sim.test"
#: The accounts a lab on loopback gets when none are given: 101-106, password 1234 (the
#: vendor page's example). A lab listening elsewhere must be given its users.
DEFAULT_USERS: Mapping[str, str] = {str(n): "1234" for n in range(101, 107)}
TRANSPORTS = ("tls", "tcp", "udp")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
#: Open files kept for the lab itself (listeners, the echo's sockets, logs) beyond connections.
FD_RESERVE = 128
#: How each throttled kind of log line is summed up ("... and 12 more <this> in 10 s").
_THROTTLED = {
    "tls-failed": "TLS connections dropped (handshake failed)",
    "handshake": "TLS connections dropped (no handshake in time)",
    "first-message": "connections closed (no complete SIP message in time)",
    "idle": "idle connections closed",
    "budget": "connections closed (buffered-bytes budget)",
    "total": "connections refused or closed (max_connections)",
    "per-source": "connections refused or closed (max_connections_per_source)",
    "write": "connections dropped (write buffer over max_write_buffer)",
}


class LabError(UsageError):
    """The lab cannot start as asked (a port in use, a bad address, a bad credential)."""


#: Offered each SIP message the lab receives before the registrar sees it (the DPMA
#: emulator's ``MESSAGE sip:proxy@``); returns True when it took the message. It answers
#: through :meth:`Lab.send_to`.
MessageHook = Callable[[SipRequest | SipResponse, Flow, float], bool]


class _Connection(asyncio.Protocol):
    """One TCP or TLS connection: TLS engine (if any) -> framer -> the registrar.

    Deadlines and caps are the lab's :class:`~phone_sim.lab.limits.ConnectionGuard`'s (no
    timer per connection). When the lab's answers pile up unread (``pause_writing``), it stops
    reading and keeps the requests it already framed for when the client drains.
    """

    __slots__ = (
        "_backlog", "_framer", "_lab", "_paused", "_tls", "_transport", "flow", "transport_name",
    )  # fmt: skip

    def __init__(self, lab: Lab, transport_name: str, tls: TlsServerConnection | None) -> None:
        self._lab = lab
        self.transport_name = transport_name
        self._tls = tls
        self._framer = StreamFramer()
        self._transport: asyncio.Transport | None = None
        self._backlog: deque[FramerEvent] = deque()
        self._paused = False
        self.flow: Flow | None = None

    # socket side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports provide asyncio.Transport's methods without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("?", 0)
        local = transport.get_extra_info("sockname") or ("?", 0)
        lab = self._lab
        flow = Flow(
            id=next(lab._ids),
            transport=self.transport_name,
            remote=(str(peer[0]), int(peer[1])),
            local=(str(local[0]), int(local[1])),
        )
        admission = lab.guard.admit(flow.id, flow.remote[0], lab._loop.time(),
                                    tls=self._tls is not None)  # fmt: skip
        for eviction in admission.evict:
            lab._evict(eviction)
        if not admission.admitted:
            assert admission.refusal is not None
            lab._log_limit(admission.refusal.kind, logging.WARNING,
                           "connection from %s refused: %s", flow.remote[0],
                           admission.refusal.reason)  # fmt: skip
            self._transport.abort()
            return
        self.flow = flow
        lab._connections[flow.id] = self
        self._transport.set_write_buffer_limits(high=lab.limits.write_pause_bytes)
        if self._tls is None:
            lab.registrar.flow_opened(flow)
        lab._arm_guard()

    def data_received(self, data: bytes) -> None:
        flow = self.flow
        if flow is None or self._transport is None:
            return
        lab = self._lab
        now = lab._loop.time()
        tls = self._tls
        if tls is not None:
            was_open = tls.handshake_done
            try:
                data = tls.receive_data(data)
            except TlsAcceptError as exc:
                lab.tls_failures += 1
                lab._log_limit("tls-failed", logging.WARNING, "TLS from %s:%d dropped: %s",
                               *flow.remote, exc)  # fmt: skip
                self._write_raw(tls.data_to_send())  # the alert
                self._transport.close()
                return
            if not was_open and tls.handshake_done:
                lab.tls_handshakes += 1
                lab.guard.handshake_done(flow.id, now)
                lab.registrar.flow_opened(flow)
            self._write_raw(tls.data_to_send())
            if tls.closed and not data:
                self._transport.close()
                return
        if not data:
            return
        guard = lab.guard
        try:
            events = self._framer.feed(data)
        except SipParseError as exc:
            # The stream cannot be delimited any more: answer what can be answered, then drop.
            logger.info("SIP framing error from %s: %s", flow, exc)
            lab.registrar.receive_message(MessageRejected(error=exc), flow, now)
            lab._pump()
            self.close()
            return
        for event in events:
            # Only whole SIP messages count as activity: not keep-alives, not dripped bytes.
            if isinstance(event, SipRequest | SipResponse):
                guard.message(flow.id, now)
        self._backlog.extend(events)
        self._drain(now)
        for eviction in guard.buffered_bytes(flow.id, self._framer.buffered, now):
            lab._evict(eviction)
        lab._arm_guard()
        if tls is not None and tls.closed:
            self.close()

    def _drain(self, now: float) -> None:
        """Hand the framed messages to the registrar one at a time, and stop while the
        answers to this client pile up unread (``pause_writing``); ``resume_writing`` goes
        on. A client that stops reading stops being read."""
        flow = self.flow
        assert flow is not None
        lab = self._lab
        registrar = lab.registrar
        backlog = self._backlog
        transport = self._transport
        assert transport is not None
        hook = lab.message_hook
        while backlog and not self._paused and not transport.is_closing():
            event = backlog.popleft()
            if hook is not None and isinstance(event, SipRequest | SipResponse) and hook(
                event, flow, now
            ):
                continue
            registrar.receive_message(event, flow, now)
            lab._pump()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        flow = self.flow
        if flow is None:
            return
        lab = self._lab
        self._backlog.clear()
        lab.guard.closed(flow.id)
        lab._connections.pop(flow.id, None)
        lab.registrar.flow_closed(flow.id, lab._loop.time())
        lab._pump()

    # flow control: asyncio calls these around the transport's write buffer high/low marks
    def pause_writing(self) -> None:
        if self._transport is not None and not self._paused:
            self._paused = True
            self._lab.stats["paused_reading"] += 1
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        transport = self._transport
        if transport is None or not self._paused:
            return
        self._paused = False
        if transport.is_closing():
            return
        transport.resume_reading()
        if self._backlog:
            self._drain(self._lab._loop.time())

    # sending
    def send(self, data: bytes) -> None:
        if self._tls is not None:
            self._tls.send(data)
            data = self._tls.data_to_send()
        self._write_raw(data)

    def _write_raw(self, data: bytes) -> None:
        transport = self._transport
        if not data or transport is None or transport.is_closing():
            return
        transport.write(data)
        lab = self._lab
        queued = transport.get_write_buffer_size()
        stats = lab.stats
        stats["write_buffer_peak"] = max(stats["write_buffer_peak"], queued)
        if queued > lab.limits.max_write_buffer and self.flow is not None:
            stats["dropped_write_buffer"] += 1
            lab._log_limit(
                "write", logging.WARNING,
                "dropping %s: %d bytes queued that it does not read (max_write_buffer %d)",
                self.flow, queued, lab.limits.max_write_buffer,
            )  # fmt: skip
            transport.abort()

    def close(self) -> None:
        if self._tls is not None:
            self._tls.close()
            self._write_raw(self._tls.data_to_send())
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class _Datagrams(asyncio.DatagramProtocol):
    """The UDP listener."""

    def __init__(self, lab: Lab) -> None:
        self._lab = lab
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)
        self.flow_id = next(lab._ids)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's and the selector loop's UDP transports do not all subclass
        # DatagramTransport, but all provide its methods.
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.local = (str(sockname[0]), int(sockname[1]))

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        lab = self._lab
        flow = Flow(
            id=self.flow_id, transport="UDP", remote=(str(addr[0]), int(addr[1])), local=self.local
        )
        if lab.message_hook is not None and not is_keepalive(data):
            try:
                message = parse_message(data)
            except SipParseError:
                pass  # the registrar answers what it can of a broken datagram
            else:
                if lab.message_hook(message, flow, lab._loop.time()):
                    return
        lab.registrar.receive_datagram(data, flow, lab._loop.time())
        lab._pump()

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)


class Lab:
    """The embedded lab: a registrar on TLS, TCP and UDP, with a generated certificate.

    Use as ``async with Lab(...) as lab`` (or ``await lab.start()`` / ``await lab.close()``).
    Port 0 picks a free port; ``lab.ports`` has the real ones once started. ``transports``
    selects which listeners run.
    """

    def __init__(
        self,
        users: Mapping[str, str] | Iterable[LabUser] | None = None,
        *,
        host: str = "127.0.0.1",
        tls_port: int = 0,
        tcp_port: int = 0,
        udp_port: int = 0,
        server_name: str = DEFAULT_SERVER_NAME,
        transports: Iterable[str] = TRANSPORTS,
        config: RegistrarConfig | None = None,
        cert_chain_pem: bytes | None = None,
        key_pem: bytes | None = None,
        ca_pem: bytes | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        limits: LabLimits | None = None,
        on_event: Callable[[RegistrarEvent], None] | None = None,
        echo: bool = True,
        echo_extension: str = ECHO_EXTENSION,
    ) -> None:
        """Prepare a lab; nothing listens before :meth:`start`.

        ``users``: AOR user -> password, or :class:`LabUser` entries (with an ``authname``);
        default :data:`DEFAULT_USERS`, allowed only on loopback. ``cert_chain_pem`` and
        ``key_pem`` replace the generated certificate (``ca_pem`` is then what ``ca_file``
        holds). ``state_dir`` keeps the lab's PKI there (``ca.pem``, ``ca-key.pem``,
        ``server.pem``, ``server-key.pem``) and reuses it on the next start, instead of a new
        CA in a temporary directory removed on close. ``config`` defaults to a
        :class:`RegistrarConfig` whose realm is ``server_name``. ``limits``
        (:class:`~phone_sim.lab.limits.LabLimits`) caps connections and the bytes they hold
        and sets the handshake, first-message and idle deadlines. ``on_event`` is called
        with every registrar event. ``echo``: run the echo service at
        ``echo_extension`` (``600``), reached from a UDP socket on ``host`` (the UDP listener,
        or a private one when the lab has no UDP transport).
        """
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise LabError(f"lab host must be an IP address, not {host!r}") from None
        wanted = [t.lower() for t in transports]
        unknown = [t for t in wanted if t not in TRANSPORTS]
        if unknown or not wanted:
            raise LabError(f"unknown lab transport(s) {unknown or wanted} (tls, tcp, udp)")
        for name, port in (("tls", tls_port), ("tcp", tcp_port), ("udp", udp_port)):
            if not 0 <= port < 65536:
                raise LabError(f"{name} port {port} out of range")
        if users is None:
            if host not in _LOOPBACK:
                raise LabError(
                    f"a lab listening on {host} needs its own users: the default accounts "
                    "have well-known passwords"
                )
            users = DEFAULT_USERS
        if (cert_chain_pem is None) != (key_pem is None):
            raise LabError("give both the certificate chain and its key, or neither")
        self.host = host
        self.server_name = server_name
        self.transports = tuple(t for t in TRANSPORTS if t in wanted)
        self._requested = {"tls": tls_port, "tcp": tcp_port, "udp": udp_port}
        self.users = UserTable(users)
        self.config = config or RegistrarConfig(realm=server_name)
        self.registrar = Registrar(self.users, self.config)
        self.limits = limits or LabLimits()
        #: The connection policy: caps, deadlines, the buffered-bytes budget.
        self.guard = ConnectionGuard(self.limits)
        self._throttle = WarningThrottle(self.limits.warning_interval)
        #: What the socket layer did: reads paused for unread answers, connections dropped
        #: for them, and the largest write buffer seen.
        self.stats: dict[str, int] = {
            "paused_reading": 0, "dropped_write_buffer": 0, "write_buffer_peak": 0,
        }  # fmt: skip
        self._cert_chain_pem = cert_chain_pem
        self._key_pem = key_pem
        self.ca_pem: bytes = ca_pem or b""
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._tmp_dir: str | None = None
        self.ca_file: Path | None = None
        self.ports: dict[str, int] = {}
        self.on_event = on_event
        #: See :data:`MessageHook`; set it before or after :meth:`start`.
        self.message_hook: MessageHook | None = None
        self.echo: EchoService | None = (
            EchoService(_service_host(host), extension=echo_extension) if echo else None
        )
        self.events: deque[RegistrarEvent] = deque(maxlen=10_000)
        self.tls_handshakes = 0
        self.tls_failures = 0
        self._ids = itertools.count(1)
        self._connections: dict[int, _Connection] = {}
        self._servers: list[asyncio.Server] = []
        self._udp: _Datagrams | None = None
        self._timer: CoreTimer | None = None
        self._guard_timer: CoreTimer | None = None
        self._waiters: list[tuple[Callable[[RegistrarEvent], bool], asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<Lab {self.host} {self.ports} server_name={self.server_name!r}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Generate the certificate (unless given), write the CA file and start listening."""
        if self._started:
            raise LabError("the lab is already started")
        self._started = True
        self._loop = loop = asyncio.get_running_loop()
        self._timer = CoreTimer(loop, self._on_timer)
        self._guard_timer = CoreTimer(loop, self._on_guard_timer)
        self.guard.capacity = _connection_capacity(self.limits)
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        if "tls" in self.transports:
            if self._cert_chain_pem is None or self._key_pem is None:
                names = [self.server_name]
                if self.host not in ("0.0.0.0", "::", "localhost"):  # noqa: S104
                    names.append(self.host)
                if self._state_dir is not None:
                    # Reuse the CA (and the certificate) kept there: phones that trusted
                    # this lab's CA must still trust it after a restart.
                    try:
                        pki = await asyncio.to_thread(load_or_make_pki, self._state_dir, names)
                    except StateDirError as exc:
                        raise LabError(str(exc)) from None
                    ca_pem, chain_pem, key_pem = pki.ca_pem, pki.chain_pem, pki.key_pem
                    self.ca_file = self._state_dir / CA_FILE
                    logger.info(
                        "lab PKI in %s: %s CA, %s certificate", self._state_dir,
                        "new" if pki.created_ca else "kept",
                        "new" if pki.issued else "kept",
                    )  # fmt: skip
                else:
                    ca_pem, chain_pem, key_pem = await asyncio.to_thread(
                        make_server_identity, names
                    )
                self.ca_pem = ca_pem
            else:
                chain_pem, key_pem = self._cert_chain_pem, self._key_pem
            self._tls_context = TlsServerContext(chain_pem, key_pem)
            if self.ca_file is None:
                self._write_ca_file()
        loop = self._loop
        wanted = list(self.transports)
        if self.echo is not None and "udp" not in wanted:
            wanted.append("udp")  # the services' leg only; not advertised in ports
        for name in wanted:
            port = self._requested[name]
            try:
                if name == "udp":
                    _transport, protocol = await loop.create_datagram_endpoint(
                        lambda: _Datagrams(self), local_addr=(self.host, port)
                    )
                    assert isinstance(protocol, _Datagrams)
                    self._udp = protocol
                    if "udp" in self.transports:
                        self.ports["udp"] = protocol.local[1]
                    continue
                factory = self._tls_factory if name == "tls" else self._tcp_factory
                server = await loop.create_server(
                    factory, self.host, port, backlog=4096, reuse_address=True
                )
            except OSError as exc:
                raise LabError(
                    f"cannot listen for {name.upper()} on {self.host}:{port}: {exc.strerror or exc}"
                ) from None
            self._servers.append(server)
            self.ports[name] = int(server.sockets[0].getsockname()[1])
        proxy = self.registrar.proxy
        proxy.add_name(self.server_name)
        for port in self.ports.values():
            proxy.add_listener(self.host, port)
        if self._udp is not None:
            # A wildcard listener has no address to put in Via/Record-Route: the services'
            # (loopback) one stands in (docs/lab.md: give --host for UDP phones elsewhere).
            udp_host, udp_port = self._udp.local
            proxy.set_udp_flow(
                Flow(id=self._udp.flow_id, transport="UDP", remote=("", 0),
                     local=(_service_host(udp_host), udp_port))
            )  # fmt: skip
        if self.echo is not None:
            await self.echo.start()
            if self._udp is not None:
                self.echo.accept_only_from((_service_host(self._udp.local[0]), self._udp.local[1]))
            proxy.add_service(Service(user=self.echo.extension, address=self.echo.address))
        logger.info("lab listening on %s: %s", self.host, self.ports)

    def _write_ca_file(self) -> None:
        if not self.ca_pem:
            return
        if self._state_dir is not None:
            directory = self._state_dir
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LabError(f"cannot create {directory}: {exc.strerror}") from None
        else:
            self._tmp_dir = tempfile.mkdtemp(prefix="phone-sim-lab-")
            directory = Path(self._tmp_dir)
        path = directory / "ca.pem"
        try:
            path.write_bytes(self.ca_pem)
        except OSError as exc:
            raise LabError(f"cannot write the CA file {path}: {exc.strerror}") from None
        self.ca_file = path

    def _tls_factory(self) -> _Connection:
        return _Connection(self, "TLS", self._tls_context.accept())

    def _tcp_factory(self) -> _Connection:
        return _Connection(self, "TCP", None)

    async def close(self) -> None:
        """Stop listening, close every connection (TLS with close_notify), remove temp files."""
        if self._closed:
            return
        self._closed = True
        if self.echo is not None:
            self.registrar.proxy.remove_service(self.echo.extension)
            with contextlib.suppress(Exception):
                await self.echo.close()
        for server in self._servers:
            server.close()
        for conn in list(self._connections.values()):
            conn.close()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        for alarm in (self._timer, self._guard_timer):
            if alarm is not None:
                alarm.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()
        for _predicate, future in self._waiters:
            if not future.done():
                future.set_exception(LabError("the lab closed"))
        self._waiters.clear()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    # -- the pump ----------------------------------------------------------------------------

    def _pump(self) -> None:
        registrar = self.registrar
        for transmit in registrar.transmits_to_send():
            if transmit.flow.reliable:
                conn = self._connections.get(transmit.flow.id)
                if conn is not None:
                    conn.send(transmit.data)
                else:
                    logger.debug(
                        "%s is closed: %d bytes not sent", transmit.flow, len(transmit.data)
                    )
            elif self._udp is not None and self._udp.transport is not None:
                self._udp.transport.sendto(transmit.data, transmit.destination)
        while (event := registrar.next_event()) is not None:
            self.events.append(event)
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:
                    # A broken callback must not take a connection down with it.
                    logger.exception("the lab's on_event callback failed")
            if self._waiters:
                self._wake(event)
        self._arm_timer()

    def _wake(self, event: RegistrarEvent) -> None:
        keep = []
        for predicate, future in self._waiters:
            if future.done():
                continue
            if predicate(event):
                future.set_result(event)
            else:
                keep.append((predicate, future))
        self._waiters = keep

    def _arm_timer(self) -> None:
        if self._timer is not None and not self._closed:
            self._timer.arm(self.registrar.get_timer())

    def _on_timer(self, _at: float) -> None:
        self.registrar.handle_timer(self._loop.time())
        self._pump()

    # -- limits ------------------------------------------------------------------------------

    def _arm_guard(self) -> None:
        if self._guard_timer is None or self._closed:
            return
        deadlines = [t for t in (self.guard.get_timer(), self._throttle.get_timer())
                     if t is not None]  # fmt: skip
        self._guard_timer.arm(min(deadlines) if deadlines else None)

    def _on_guard_timer(self, _at: float) -> None:
        now = self._loop.time()
        # A phone's connection lives as long as the phone keeps it, idle or not.
        for eviction in self.guard.handle_timer(now, exempt=self.registrar.flow_has_bindings):
            self._evict(eviction)
        for kind, count in self._throttle.due(now):
            level = logging.INFO if kind == "idle" else logging.WARNING
            logger.log(level, "... and %d more %s in the last %g s", count,
                       _THROTTLED.get(kind, kind), self.limits.warning_interval)  # fmt: skip
        self._arm_guard()

    def _evict(self, eviction: Eviction) -> None:
        """Close a connection a limit says must go (the guard has already forgotten it)."""
        conn = self._connections.get(eviction.conn_id)
        if conn is None or conn.flow is None:
            return
        flow = conn.flow
        if eviction.kind == "handshake":
            self.tls_failures += 1
            self._log_limit("handshake", logging.WARNING, "TLS from %s:%d dropped: %s",
                            *flow.remote, eviction.reason)  # fmt: skip
            conn.abort()
        elif eviction.kind == "idle":
            self._log_limit("idle", logging.INFO, "closing %s: %s", flow, eviction.reason)
            conn.close()
        else:
            self._log_limit(eviction.kind, logging.WARNING, "closing %s: %s", flow,
                            eviction.reason)  # fmt: skip
            conn.abort()

    def _log_limit(self, kind: str, level: int, message: str, *args: object) -> None:
        """Log a limit hit, at most once per ``warning_interval`` per kind; the rest are
        counted and summed up in one line when the interval ends."""
        if self._throttle.allow(kind, self._loop.time()):
            logger.log(level, message, *args)
        else:
            self._arm_guard()

    def send_to(self, flow: Flow, data: bytes, destination: tuple[str, int]) -> None:
        """Send *data* on *flow*: its connection, or the UDP socket to *destination* (for a
        :data:`MessageHook`'s answers). Dropped when the connection has closed."""
        if flow.reliable:
            conn = self._connections.get(flow.id)
            if conn is not None:
                conn.send(data)
        elif self._udp is not None and self._udp.transport is not None:
            self._udp.transport.sendto(data, destination)

    # -- what tests and tools use ------------------------------------------------------------

    def bindings(self, aor: str) -> list[Binding]:
        """The location table for ``aor`` (``sip:101@lab.phone-sim.test`` or ``101``)."""
        return self.registrar.bindings(aor)

    async def wait_binding(self, aor: str, *, timeout: float = 10.0) -> Binding:
        """Wait until ``aor`` has a binding on a live flow (return at once if it has one)."""
        for binding in self.bindings(aor):
            if binding.flow_alive:
                return binding

        def added(event: RegistrarEvent) -> bool:
            if not isinstance(event, BindingAdded | BindingRefreshed):
                return False
            b = event.binding
            return b.aor == aor or b.aor.partition(":")[2].partition("@")[0] == aor

        event = await self.wait_event(added, timeout=timeout)
        assert isinstance(event, BindingAdded | BindingRefreshed)
        return event.binding

    async def wait_event(
        self, predicate: Callable[[RegistrarEvent], bool], *, timeout: float = 10.0
    ) -> RegistrarEvent:
        """Wait for the next registrar event for which ``predicate`` is true."""
        if self._closed or not self._started:
            raise LabError("the lab is not running")
        future: asyncio.Future[RegistrarEvent] = self._loop.create_future()
        self._waiters.append((predicate, future))
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise LabError(f"no matching lab event within {timeout:g} s") from None
        finally:
            if not future.done():
                future.cancel()

    async def request(
        self,
        aor: str,
        method: str = "OPTIONS",
        *,
        headers: Iterable[tuple[str, HeaderValue]] = (),
        body: bytes = b"",
        timeout: float = TIMER_F,
    ) -> SipResponse:
        """Send ``method`` to the phone registered as ``aor`` over its own connection (as
        Asterisk's qualify or a ``NOTIFY Event: check-sync`` does) and return its final
        response. Uses the newest binding on a live flow.

        Raises :class:`PhoneUnreachable` when no binding of ``aor`` is on a live flow, and
        :class:`LabError` when the phone does not answer within ``timeout``.
        """
        live = [b for b in self.bindings(aor) if b.flow_alive]
        if not live:
            raise PhoneUnreachable(f"{aor} has no binding on a live connection")
        binding = max(live, key=lambda b: b.expires_at - b.expires)
        request_id = self.registrar.send_request(
            binding, method, self._loop.time(), headers=headers, body=body, timeout=timeout
        )

        def answered(event: RegistrarEvent) -> bool:
            return isinstance(event, PhoneAnswered | PhoneSilent) and (
                event.request_id == request_id
            )

        waiter = asyncio.ensure_future(self.wait_event(answered, timeout=timeout + 5.0))
        await asyncio.sleep(0)  # the waiter is registered before the request leaves
        self._pump()
        event = await waiter
        if isinstance(event, PhoneSilent):
            raise LabError(f"{aor} did not answer {method} within {timeout:g} s")
        assert isinstance(event, PhoneAnswered)
        return event.response

    def uri(self, transport: str = "tls") -> str:
        """The registrar's URI for ``transport``, e.g. ``sip:127.0.0.1:40123;transport=tls``."""
        transport = transport.lower()
        if transport not in self.ports:
            raise LabError(f"the lab has no {transport} listener")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}:{self.ports[transport]};transport={transport}"

    def describe(self) -> dict[str, Any]:
        """What a phone needs to know, as JSON-ready data (``phone-sim lab --json``)."""
        return {
            "host": self.host,
            "server_name": self.server_name,
            "domain": self.server_name,
            "realm": self.config.realm,
            "ports": dict(self.ports),
            "transports": list(self.transports),
            "ca_file": str(self.ca_file) if self.ca_file else None,
            "users": [u.username for u in self.users.users()],
            "echo": self.echo.extension if self.echo is not None else None,
            "pid": os.getpid(),
        }

    @property
    def connections(self) -> int:
        """Open TCP/TLS connections."""
        return len(self._connections)


def _connection_capacity(limits: LabLimits) -> int:
    """``limits.max_connections``, lowered to what the open-file limit leaves room for after
    raising its soft value towards the hard one (where allowed and asked for)."""
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - not on this platform
        return limits.max_connections
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + FD_RESERVE
    if limits.raise_file_limit and soft != infinity and soft < wanted:
        target = wanted if hard == infinity else min(wanted, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError) as exc:
                logger.warning("cannot raise the open-file limit from %d: %s", soft, exc)
            else:
                logger.info("raised the open-file limit from %d to %d", soft, target)
                soft = target
    if soft == infinity:
        return limits.max_connections
    capacity = max(1, soft - FD_RESERVE)
    if capacity < limits.max_connections:
        logger.info(
            "the lab holds at most %d connections (open-file limit %d, %d kept for itself)",
            capacity, soft, FD_RESERVE,
        )  # fmt: skip
    return min(capacity, limits.max_connections)


def _service_host(host: str) -> str:
    """Where the lab's own services listen: the lab's address, loopback for a wildcard."""
    if host in ("0.0.0.0", "localhost"):  # noqa: S104 - a comparison, not a bind
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host
