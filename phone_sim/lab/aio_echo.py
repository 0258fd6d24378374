"""The lab's echo service (extension ``600``): an auto-answering UAS that echoes audio and DTMF.

It is a SIP user agent on its own loopback UDP port inside the lab process, built on the call
layer (:class:`phone_sim.phone.aio_agent.UdpCallAgent`, a phone whose one line does not
register: the sans-I/O call session with PRACK, session timers and hold, and a media
endpoint per call). The lab's proxy routes
``sip:600@<lab domain>`` to it from its UDP listener with Record-Route, so a phone on TLS
reaches it over the phone's own connection, and the echo's in-dialog requests come back
through the lab.

Each call is answered with the media core's rules (:mod:`phone_sim.media.negotiation`):
``RTP/SAVP`` with ``AES_CM_128_HMAC_SHA1_80`` only, 488 with a Warning otherwise. The echo
decrypts what it receives with the rx key and sends it back re-encrypted with its tx key,
with an SSRC of its own (the stream's); RFC 4733 digits it receives are sent back as RFC 4733
events. A re-INVITE to hold (sendonly/inactive) stops the echo until the call is resumed;
BYE ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from phone_sim.call.aio import Call, CallFailed
from phone_sim.errors import UsageError
from phone_sim.phone.aio_agent import UdpCallAgent
from phone_sim.sip.ua import Address

logger = logging.getLogger(__name__)

__all__ = ["ECHO_EXTENSION", "EchoService"]

#: The extension of the echo service, as on Asterisk's demo dialplan.
ECHO_EXTENSION = "600"
_POLL = 0.05


class _LabOnlyAgent(UdpCallAgent):
    """The echo's UA: SIP only from the lab (its UDP listener), so the lab's authentication
    cannot be bypassed by sending to the echo's port directly."""

    allowed: frozenset[Address] = frozenset()

    def _datagram(self, data: bytes, source: Address) -> None:
        if self.allowed and (source[0], source[1]) not in self.allowed:
            logger.debug("echo: dropped a datagram from %s:%d (not the lab)", *source)
            return
        super()._datagram(data, source)


class EchoService:
    """``async with EchoService("127.0.0.1") as echo:`` then route to ``echo.address``."""

    def __init__(self, host: str = "127.0.0.1", *, extension: str = ECHO_EXTENSION) -> None:
        if not extension or not extension.isalnum():
            raise UsageError(f"bad echo extension {extension!r}")
        self.host = host
        self.extension = extension
        self._agent = _LabOnlyAgent(host, 0, user=extension, auto_answer=True)
        self._started = False
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        #: Calls answered, and DTMF digits echoed, since start.
        self.calls_answered = 0
        self.digits_echoed = 0

    def __repr__(self) -> str:
        return f"<EchoService {self.extension} at {self.host}:{self._agent.port}>"

    @property
    def address(self) -> tuple[str, int]:
        """Its UDP address (once started)."""
        return (self.host, self._agent.port)

    @property
    def refused(self) -> dict[int, int]:
        """INVITEs refused before ringing, by status (488 for an offer without SDES...)."""
        return self._agent.refused

    def accept_only_from(self, *sources: Address) -> None:
        """Take SIP only from these addresses (the lab's UDP listener); none: from anyone."""
        self._agent.allowed = frozenset((host, port) for host, port in sources)

    async def __aenter__(self) -> EchoService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind the UDP port and start answering."""
        await self._agent.__aenter__()
        self._started = True
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def close(self) -> None:
        """Hang up every call and close the port."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._calls):
            task.cancel()
        if self._started:
            self._started = False
            await self._agent.close()

    async def _serve(self) -> None:
        while True:
            call = await self._agent.next_call()
            self.calls_answered += 1
            task = asyncio.get_running_loop().create_task(self._echo_dtmf(call))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _echo_dtmf(self, call: Call) -> None:
        """Send back, as RFC 4733 events, the digits the caller sends (the audio echo is the
        call layer's echo source)."""
        sent = 0
        try:
            while call.ended is None:
                # The call collects media events only while someone waits on it: an empty
                # wait collects them and returns at once.
                await call.wait_dtmf("", timeout=1.0)
                stats = call.stats
                received = stats.dtmf_received if stats is not None else ""
                if len(received) > sent and call.stream is not None:
                    digits = received[sent:]
                    sent = len(received)
                    self.digits_echoed += len(digits)
                    logger.info("echo %s: DTMF %s sent back", self.extension, digits)
                    with contextlib.suppress(UsageError):
                        await call.send_dtmf(digits)
                await asyncio.sleep(_POLL)
        except CallFailed:
            pass
