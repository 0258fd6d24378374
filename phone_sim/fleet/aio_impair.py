"""The impairment relay: a UDP socket on a phone's uplink that applies
:class:`~phone_sim.fleet.impairment.ImpairmentCore` on the wire.

The phone's RTP goes to the relay (its media endpoint is re-aimed there once the call is up)
and the relay sends what survives on to the far end, from its own port: the far end's RTP
statistics then measure the loss, jitter and reordering as a real access network makes them.
RTCP goes straight to the far end, so its reports are not damaged.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from phone_sim.call.aio import Call
from phone_sim.fleet.impairment import ImpairmentCore, ImpairmentSettings

__all__ = ["ImpairmentRelay"]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, relay: ImpairmentRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay._received(data)

    def error_received(self, exc: Exception) -> None:
        self.relay.send_errors += 1


class ImpairmentRelay:
    """One impaired uplink: phone -> relay -> far end."""

    def __init__(self, settings: ImpairmentSettings) -> None:
        self.core = ImpairmentCore(settings)
        self._transport: asyncio.DatagramTransport | None = None
        self._remote: tuple[str, int] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.send_errors = 0

    @classmethod
    async def insert(cls, call: Call, settings: ImpairmentSettings) -> ImpairmentRelay | None:
        """Put a relay on *call*'s uplink (None when the call has no media to relay)."""
        endpoint = call.endpoint
        audio = call.negotiated
        if endpoint is None or audio is None or audio.remote_host in ("0.0.0.0", "::"):  # noqa: S104 (a hold)
            return None
        relay = cls(settings)
        loop = asyncio.get_running_loop()
        relay._loop = loop
        relay._remote = (audio.remote_host, audio.remote_rtp_port)
        relay._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(relay), local_addr=(endpoint.host, 0)
        )
        port = relay._transport.get_extra_info("sockname")[1]
        # [limitation] The Call API has no hook for the media path; re-aiming its endpoint is
        # the narrowest reach (see docs/load-testing.md, "Impairment").
        endpoint.retarget(
            remote_host=endpoint.host, remote_rtp_port=port,
            remote_rtcp_host=audio.remote_rtcp_host, remote_rtcp_port=audio.remote_rtcp_port,
        )
        return relay

    def _received(self, data: bytes) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.core.send(data, now)
        self._flush(now)

    def _flush(self, now: float) -> None:
        transport = self._transport
        if transport is None:
            return
        for packet in self.core.due(now):
            try:
                transport.sendto(packet, self._remote)
            except OSError:
                self.send_errors += 1
        self._arm()

    def _arm(self) -> None:
        at = self.core.get_timer()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if at is not None and self._loop is not None:
            self._handle = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._handle = None
        assert self._loop is not None
        self._flush(self._loop.time())

    def close(self) -> None:
        """Stop relaying (what is still queued is lost with the call)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
            self._transport = None
