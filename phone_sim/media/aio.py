"""The asyncio shell of the media engine: UDP sockets and the one shared pacing timer.

:class:`MediaClock` keeps a single ``loop.call_at()`` armed at the pacer's deadline for every
stream in the process; :class:`MediaEndpoint` owns the RTP and RTCP sockets of one stream and
feeds what arrives to it with ``now`` from :func:`media_time` (the loop's clock at full
resolution). Nothing here decides anything about media: that is all in
:class:`~phone_sim.media.stream.MediaStream`. Works on the stock loop and on uvloop (use
uvloop under load: the stock loop starts dropping UDP above about 15k packets/s).

An endpoint opened with an :class:`~phone_sim.media.impairment.Impairment` passes the RTP it
sends through an :class:`~phone_sim.media.impairment.ImpairmentModel` (its RTCP goes
untouched). Packets the model delays wait in the model; the clock's one timer also serves
their release times, so the delayed packets of every stream due within the same slack go out
in one firing, with no timer of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import itertools
import math
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from phone_sim.errors import RemoteError, UsageError
from phone_sim.media.impairment import Impairment, ImpairmentModel
from phone_sim.media.pacing import Pacer
from phone_sim.media.stream import MediaEvent, MediaStream

E = TypeVar("E")

#: How many times :meth:`MediaEndpoint.open` tries to find a free even/odd port pair.
PORT_PAIR_ATTEMPTS = 64
#: ``time.monotonic()`` and ``loop.time()`` this close are the same clock (uvloop's counts
#: whole milliseconds).
CLOCK_AGREEMENT = 0.005


def media_time(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The loop's clock at full resolution: what media timings are read from.

    asyncio's ``loop.time()`` is ``time.monotonic()``; uvloop's is the same clock
    (CLOCK_MONOTONIC) counted in whole milliseconds. RTCP timings (an SR's arrival, the
    DLSR of the report that answers it) need better: a peer on a full-resolution clock
    sees any DLSR longer than its own measure as a round trip below zero. So read
    ``time.monotonic()`` when it is the loop's clock, else (a loop with a clock of its own)
    ``loop.time()``.
    """
    if abs(time.monotonic() - loop.time()) < CLOCK_AGREEMENT:
        return time.monotonic
    return loop.time


class MediaEndpointError(UsageError):
    """A media endpoint could not be opened or was used wrongly."""


class MediaTimeout(RemoteError):
    """The expected media event did not arrive in time."""


class MediaClock:
    """The shared pacing timer: one armed ``call_at`` for every stream on the loop (and for the
    release of packets an impairment delays)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        tick: float = 0.020,
        slack: float = 0.0005,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        #: The clock the pacer is polled with (see :func:`media_time`).
        self.time = media_time(self.loop)
        self.pacer: Pacer[MediaEndpoint] = Pacer(tick=tick, slack=slack)
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        # Endpoints holding delayed packets, by release time (stale entries dropped lazily,
        # as the pacer does).
        self._held: list[tuple[float, int, MediaEndpoint]] = []
        self._held_at: dict[MediaEndpoint, float] = {}
        self._held_counter = itertools.count()
        self._firing = False

    def add(self, endpoint: MediaEndpoint) -> None:
        """Start pacing an endpoint's stream."""
        assert endpoint.stream is not None
        self.pacer.add(endpoint, endpoint.stream, self.time())
        self._arm()

    def remove(self, endpoint: MediaEndpoint) -> None:
        """Stop pacing an endpoint."""
        self.pacer.remove(endpoint)
        self._held_at.pop(endpoint, None)

    def hold(self, endpoint: MediaEndpoint, at: float) -> None:
        """The endpoint holds delayed packets, the first due at *at*."""
        if at < self._held_at.get(endpoint, math.inf):
            self._held_at[endpoint] = at
            heapq.heappush(self._held, (at, next(self._held_counter), endpoint))
            if not self._firing:  # a firing re-arms once at its end
                self._arm()

    def _next_release(self) -> float | None:
        held = self._held
        held_at = self._held_at
        while held:
            at, _, endpoint = held[0]
            if held_at.get(endpoint) == at:
                return at
            heapq.heappop(held)
        return None

    def _release(self, horizon: float) -> None:
        held = self._held
        held_at = self._held_at
        while held and held[0][0] <= horizon:
            at, _, endpoint = heapq.heappop(held)
            if held_at.get(endpoint) != at:
                continue
            del held_at[endpoint]
            try:
                endpoint._release(horizon)
            except (OSError, RuntimeError):
                endpoint.send_errors += 1

    def wake(self, endpoint: MediaEndpoint) -> None:
        """The endpoint's stream has an earlier deadline than before."""
        self.pacer.wake(endpoint)
        self._arm()

    def close(self) -> None:
        """Cancel the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = float("inf")

    def _arm(self) -> None:
        at = self.pacer.get_timer()
        if self._held:
            release = self._next_release()
            if release is not None and (at is None or release < at):
                at = release
        if at is None:
            return
        if self._handle is not None:
            if at >= self._armed_at:
                return
            self._handle.cancel()
        self._armed_at = at
        self._handle = self.loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = float("inf")
        self._firing = True
        try:
            now = self.time()
            for endpoint, rtp, rtcp in self.pacer.poll(now):
                transport = endpoint._rtp
                if transport is None or endpoint._remote_rtp is None:
                    continue
                try:
                    # The usual case, without the loops.
                    if len(rtp) == 1 and not rtcp and endpoint.impaired is None:
                        transport.sendto(rtp[0], endpoint._remote_rtp)
                    elif rtp or rtcp:
                        endpoint.send(rtp, rtcp)
                except (OSError, RuntimeError):
                    # One endpoint's socket trouble must not stop every other stream.
                    endpoint.send_errors += 1
            if self._held:
                self._release(now + self.pacer.slack)
        finally:
            self._firing = False
            self._arm()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: MediaEndpoint, *, rtcp: bool) -> None:
        self.endpoint = endpoint
        self.rtcp = rtcp
        self.stream: MediaStream | None = None
        self.time = endpoint.time

    def datagram_received(self, data: bytes, addr: Any) -> None:
        stream = self.stream
        if stream is None:
            self.endpoint.unattached += 1
            return
        stream.receive_datagram(data, self.time(), rtcp=self.rtcp)
        if stream.has_events:
            self.endpoint._dispatch(stream)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on loopback when the peer has gone: count, keep going.
        self.endpoint.send_errors += 1


def _bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class MediaEndpoint:
    """The RTP and RTCP sockets of one stream (RTCP on RTP port + 1, RFC 3550 11), and the
    access network its outgoing RTP crosses (*impairment*, if any)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, host: str, *,
        impairment: Impairment | None = None,
    ) -> None:
        self.loop = loop
        #: The clock received datagrams are stamped with (see :func:`media_time`).
        self.time = media_time(loop)
        #: The local address the sockets are bound to.
        self.host = host
        self.local_rtp_port = 0
        self.local_rtcp_port = 0
        self.stream: MediaStream | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        # None while the peer holds with 0.0.0.0: nothing is sent there.
        self._remote_rtp: tuple[str, int] | None = None
        self._remote_rtcp: tuple[str, int] | None = None
        self._clock: MediaClock | None = None
        self._protocols: tuple[_Protocol, ...] = ()
        self._waiters: list[tuple[type[Any], asyncio.Future[Any]]] = []
        #: Every event the stream produced, in order.
        self.events: list[MediaEvent] = []
        #: Datagrams that could not be sent (the peer's port was closed).
        self.send_errors = 0
        #: Datagrams that arrived before a stream was attached, or after close.
        self.unattached = 0
        #: What the impairment did to the RTP sent (its counters); None when not impaired.
        self.impaired: ImpairmentModel | None = (
            ImpairmentModel(impairment) if impairment is not None and impairment.active
            else None
        )

    def __repr__(self) -> str:
        return f"<MediaEndpoint {self.host}:{self.local_rtp_port}/{self.local_rtcp_port}>"

    @classmethod
    async def open(
        cls, host: str = "127.0.0.1", *, rtp_port: int = 0, rcvbuf: int | None = None,
        impairment: Impairment | None = None,
    ) -> MediaEndpoint:
        """Bind RTP on ``rtp_port`` (an even free port if 0) and RTCP on the next port; the RTP
        sent crosses *impairment* (loss, jitter, reordering) when given."""
        loop = asyncio.get_running_loop()
        endpoint = cls(loop, host, impairment=impairment)
        if rtp_port % 2:
            raise MediaEndpointError(f"RTP port {rtp_port} must be even (RFC 3550 11)")
        for _ in range(PORT_PAIR_ATTEMPTS if rtp_port == 0 else 1):
            try:
                rtp_sock = _bind_udp(host, rtp_port)
            except OSError as exc:
                raise MediaEndpointError(
                    f"cannot bind RTP socket on {host}:{rtp_port}: {exc.strerror}"
                ) from None
            port = rtp_sock.getsockname()[1]
            if port % 2 == 0:
                try:
                    rtcp_sock = _bind_udp(host, port + 1)
                except OSError:
                    pass
                else:
                    break
            rtp_sock.close()
        else:
            raise MediaEndpointError(f"no free RTP/RTCP port pair on {host}")
        for sock in (rtp_sock, rtcp_sock):
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        endpoint.local_rtp_port = port
        endpoint.local_rtcp_port = port + 1
        endpoint._rtp, rtp_protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(endpoint, rtcp=False), sock=rtp_sock
        )
        endpoint._rtcp, rtcp_protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(endpoint, rtcp=True), sock=rtcp_sock
        )
        endpoint._protocols = (rtp_protocol, rtcp_protocol)
        return endpoint

    def attach(
        self,
        stream: MediaStream,
        *,
        remote_host: str,
        remote_rtp_port: int,
        remote_rtcp_port: int | None = None,
        remote_rtcp_host: str | None = None,
        clock: MediaClock,
    ) -> None:
        """Run ``stream`` to the peer's ports, paced by ``clock``.

        RTCP goes to ``remote_rtcp_host``:``remote_rtcp_port`` (default: the RTP host and
        port + 1). A remote host of ``0.0.0.0`` (an old-style hold, RFC 3264 8.4) sends
        nothing to it.
        """
        if self.stream is not None:
            raise MediaEndpointError(f"{self!r} already carries a stream")
        if self._rtp is None:
            raise MediaEndpointError(f"{self!r} is closed")
        self.retarget(
            remote_host=remote_host, remote_rtp_port=remote_rtp_port,
            remote_rtcp_port=remote_rtcp_port, remote_rtcp_host=remote_rtcp_host,
        )
        self.stream = stream
        for protocol in self._protocols:
            protocol.stream = stream
        stream.wallclock_offset = time.time() - self.time()
        if self.impaired is not None:
            self.impaired.interval = stream.ptime_ms / 1000.0
        self._clock = clock
        clock.add(self)

    def _address(self, host: str, port: int) -> tuple[str, int] | None:
        if not 0 < port < 65536:
            raise MediaEndpointError(f"remote media port {port} is not in 1-65535")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise MediaEndpointError(
                f"remote media host {host!r} is not an IP address (resolve it first)"
            ) from None
        if (ip.version == 6) != (":" in self.host):
            raise MediaEndpointError(
                f"remote media host {host} is IPv{ip.version} but this endpoint "
                f"is bound to {self.host}"
            )
        return None if ip.is_unspecified else (host, port)

    def retarget(
        self,
        *,
        remote_host: str,
        remote_rtp_port: int,
        remote_rtcp_port: int | None = None,
        remote_rtcp_host: str | None = None,
    ) -> None:
        """Send to new remote addresses (a re-offer moved the peer's media)."""
        rtp = self._address(remote_host, remote_rtp_port)
        rtcp = self._address(
            remote_rtcp_host or remote_host,
            remote_rtp_port + 1 if remote_rtcp_port is None else remote_rtcp_port,
        )
        self._remote_rtp, self._remote_rtcp = rtp, rtcp

    def send(self, rtp: list[bytes], rtcp: list[bytes]) -> None:
        """Write what the pacer says is due (the RTP through the impairment, if any)."""
        transport = self._rtp
        remote = self._remote_rtp
        if transport is None or remote is None:
            return
        model = self.impaired
        if model is not None:
            if rtp:
                now = self.time()
                for packet in rtp:
                    if model.offer(packet, now):
                        transport.sendto(packet, remote)
                for packet in model.packets_due(now):
                    transport.sendto(packet, remote)
                at = model.get_timer()
                if at is not None and self._clock is not None:
                    self._clock.hold(self, at)
        else:
            for packet in rtp:
                transport.sendto(packet, remote)
        if rtcp and self._rtcp is not None and self._remote_rtcp is not None:
            for packet in rtcp:
                self._rtcp.sendto(packet, self._remote_rtcp)

    def _release(self, now: float) -> None:
        """Send the delayed packets due by *now* (the clock's timer)."""
        model = self.impaired
        if model is None:
            return
        packets = model.packets_due(now)
        transport = self._rtp
        remote = self._remote_rtp
        try:
            if transport is not None and remote is not None:
                for packet in packets:
                    transport.sendto(packet, remote)
        finally:  # a socket error loses these packets, never the ones still held
            at = model.get_timer()
            if at is not None and self._clock is not None:
                self._clock.hold(self, at)

    def datagram_received(self, data: bytes, addr: Any, rtcp: bool) -> None:
        """One datagram on the RTP or RTCP socket."""
        stream = self.stream
        if stream is None:
            self.unattached += 1
            return
        stream.receive_datagram(data, self.time(), rtcp=rtcp)
        if stream.has_events:
            self._dispatch(stream)

    def _dispatch(self, stream: MediaStream) -> None:
        while (event := stream.next_event()) is not None:
            self.events.append(event)
            for waiter in list(self._waiters):
                kind, future = waiter
                if isinstance(event, kind) and not future.done():
                    future.set_result(event)
                    self._waiters.remove(waiter)

    def wake(self) -> None:
        """Tell the pacer the stream has an earlier deadline (after DTMF or a re-offer)."""
        if self._clock is not None and self.stream is not None:
            self._clock.wake(self)

    async def wait_for(self, kind: type[E], *, timeout: float) -> E:
        """The first event of type ``kind`` (already received or still to come)."""
        for event in self.events:
            if isinstance(event, kind):
                return event
        future: asyncio.Future[E] = self.loop.create_future()
        entry = (kind, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise MediaTimeout(
                f"no {kind.__name__} on {self.host}:{self.local_rtp_port} within {timeout:g} s"
            ) from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def close(self) -> None:
        """Send the final RTCP BYE, stop pacing and close both sockets."""
        for protocol in self._protocols:
            protocol.stream = None
        stream = self.stream
        if stream is not None and self._rtcp is not None and self._remote_rtcp is not None:
            for packet in stream.stop(self.time()):
                with contextlib.suppress(OSError):
                    self._rtcp.sendto(packet, self._remote_rtcp)
        if self._clock is not None:
            self._clock.remove(self)
            self._clock = None
        if self.impaired is not None:
            self.impaired.clear()  # still in the network when the call ended: lost with it
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self._rtp = self._rtcp = None
        for _, future in self._waiters:
            if not future.done():
                future.cancel()
        self._waiters.clear()
