"""The asyncio calls: a :class:`Call` joins a sans-I/O :class:`CallSession` to a media stream.

::

    call = await phone.dial("102")
    await call.wait_answered()
    call.play_tone(1004)
    await call.wait_tone(1004)
    await call.send_dtmf("123")
    await call.hold(); await call.resume()
    await call.hangup()
    print(call.stats)

:class:`CallManager` is the glue between whoever owns the SIP user agent (the ``Phone``, or
the small :class:`UdpCallAgent` here) and the calls: it is fed the UA's events, keeps one
``loop.call_at()`` armed at the calls' deadline, opens a :class:`MediaEndpoint` per call and
turns :class:`CallEvent` values into media changes and futures. The
:class:`~phone_sim.phone.aio.Phone` makes one when its first call starts or arrives;
``CallingPhone`` is a deprecated alias of ``Phone``.

This module does not import :mod:`phone_sim.phone.aio` (the ``Phone`` imports it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phone_sim.call.session import (
    CallConfig,
    CallEnded,
    CallEstablished,
    CallEvent,
    CallRinging,
    CallRouter,
    CallSession,
    CallState,
    MediaNegotiated,
    ReofferFailed,
    SessionRefreshed,
    call_signature,
)
from phone_sim.errors import PhoneSimError, RemoteError, UsageError
from phone_sim.media.aio import MediaClock, MediaEndpoint
from phone_sim.media.negotiation import Direction, LocalAudio, MediaEncryption, NegotiatedAudio
from phone_sim.media.sinks import DtmfReceived, ToneDetected, ToneDetector, WavRecorder
from phone_sim.media.sources import AudioSource, tone, wav_file
from phone_sim.media.stream import MediaStream, StreamStatistics
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import Address, UaConfig, UaEvent, UserAgent
from phone_sim.sip.uri import SipUri

__all__ = [
    "Call",
    "CallAnswered",
    "CallArrived",
    "CallFailed",
    "CallFinished",
    "CallManager",
    "CallPlaced",
    "CallStats",
    "CallTimeout",
    "PhoneCallEvent",
    "UdpCallAgent",
    "shared_media_clock",
]

logger = logging.getLogger(__name__)

#: How often a waiting coroutine looks at the media events (seconds).
POLL_INTERVAL = 0.02


# Weak values: a clock lives as long as some call manager holds it (a clock refers to its
# loop, so a weak-key map would keep every test's loop alive).
_CLOCKS: weakref.WeakValueDictionary[int, MediaClock] = weakref.WeakValueDictionary()


def shared_media_clock(loop: asyncio.AbstractEventLoop | None = None) -> MediaClock:
    """The one :class:`MediaClock` of *loop*: every call of every phone on the loop is paced
    by a single ``call_at`` (thousands of phones in a fleet share it)."""
    loop = loop or asyncio.get_running_loop()
    clock = _CLOCKS.get(id(loop))
    if clock is None or clock.loop is not loop:
        clock = MediaClock(loop)
        _CLOCKS[id(loop)] = clock
    return clock


class CallFailed(RemoteError):
    """The call did not come up, or ended while we waited for something."""

    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CallTimeout(CallFailed):
    """What we waited for did not happen in time."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStats:
    """A call's media figures (a snapshot)."""

    codec: str
    """The codec sent and expected."""
    encrypted: bool
    """Whether the media is SRTP."""
    direction: str
    """The phone's direction now (sendrecv, sendonly...)."""
    stream: StreamStatistics
    """Packets, loss, jitter, SRTP failures, RTCP, MOS of the stream."""
    dtmf_received: str
    """RFC 4733 digits received so far."""
    tones_heard: tuple[float, ...]
    """Frequencies detected so far."""

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        s = self.stream
        return {
            "codec": self.codec,
            "encrypted": self.encrypted,
            "direction": self.direction,
            "packets_sent": s.packets_sent,
            "packets_received": s.packets_received,
            "packets_lost": s.packets_lost,
            "jitter_ms": round(s.jitter * 1000, 2),
            "srtp_auth_failures": s.srtp_auth_failures,
            "srtp_replay_failures": s.srtp_replay_failures,
            "rtt_ms": None if s.rtt is None else round(s.rtt * 1000, 2),
            "mos_received": round(s.mos_received, 2),
            "dtmf_received": self.dtmf_received,
            "tones_heard": list(self.tones_heard),
        }


# -- the call facts a phone's event stream carries (``Phone.events()``) ------------------------
# The session's own events (CallRinging, CallEstablished, CallEnded...) say what happened to
# one session and carry no Call-ID; a phone has several calls, so these name the call.


@dataclass(frozen=True, slots=True, kw_only=True)
class CallPlaced:
    """The phone sent an INVITE (``dial()``)."""

    call_id: str
    """The call's Call-ID (the key of ``phone.calls.calls``)."""
    remote: str
    """The URI called."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallArrived:
    """An acceptable INVITE arrived: the phone rings (180 sent)."""

    call_id: str
    """The call's Call-ID (``next_call()`` returns the :class:`Call`)."""
    remote: str
    """The caller's URI (From)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAnswered:
    """The call is up: 2xx received (outgoing) or ACK received (incoming)."""

    call_id: str
    """The call's Call-ID."""
    incoming: bool
    """Whether the peer called us."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFinished:
    """The call is over, answered or not (the session's :class:`CallEnded`, with its
    Call-ID)."""

    call_id: str
    """The call's Call-ID."""
    reason: str
    """Why, in words."""
    status: int | None = None
    """The SIP status that ended it (486, 487, 488...), if one did."""
    by_peer: bool = False
    """True when the peer ended it (BYE, CANCEL, a rejection)."""


PhoneCallEvent = CallPlaced | CallArrived | CallAnswered | CallFinished


class _EchoSource(AudioSource):
    """Plays back what the sink hears (the echo service), silence when it has nothing."""

    __slots__ = ("_queue", "_silence")

    def __init__(self, base: AudioSource) -> None:
        super().__init__(base.codec, base.ptime_ms, base.frames, description="echo")
        self._queue: deque[bytes] = deque(maxlen=50)
        self._silence = base.frames[0]

    def next_payload(self) -> bytes:
        return self._queue.popleft() if self._queue else self._silence

    def on_audio(self, payload: bytes, timestamp: int, now: float) -> None:
        self._queue.append(payload)


class Call:
    """One call with its media. Made by :class:`CallManager` (``dial`` or ``next_call``)."""

    def __init__(self, manager: CallManager, session: CallSession) -> None:
        self._manager = manager
        self.session = session
        loop = manager.loop
        self.endpoint: MediaEndpoint | None = None
        self.stream: MediaStream | None = None
        self._answered: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[CallEnded] = loop.create_future()
        self._reoffer: asyncio.Future[ReofferFailed | None] | None = None
        self._detectors: dict[float, ToneDetector] = {}
        self._tones: list[float] = []
        self._dtmf: list[str] = []
        self._source_factory: Callable[[MediaStream], AudioSource] | None = None
        self._recorder: WavRecorder | None = None
        self._record_path: Path | None = None
        self._echo = False
        #: 18x statuses seen.
        self.progress: list[int] = []
        #: RFC 4028 refreshes seen (ours and the peer's).
        self.refreshes = 0
        #: Why the media could not be started, if it could not.
        self.media_error: str | None = None
        self.negotiated: NegotiatedAudio | None = None

    def __repr__(self) -> str:
        return f"<Call {self.session!r}>"

    # -- state --------------------------------------------------------------------------------

    @property
    def incoming(self) -> bool:
        """Whether the peer called us."""
        return not self.session.outgoing

    @property
    def state(self) -> CallState:
        """The session state."""
        return self.session.state

    @property
    def remote(self) -> str:
        """The peer's URI (From of an incoming call, To of ours)."""
        invite = self.session.invite
        if invite is None:
            return "?"
        return str(invite.from_.uri if self.incoming else invite.to.uri)

    @property
    def on_hold(self) -> bool:
        """Whether media is not flowing both ways (either side holds)."""
        return self.negotiated is not None and self.negotiated.direction is not Direction.SENDRECV

    @property
    def stats(self) -> CallStats | None:
        """Media figures now (None before media was negotiated)."""
        stream = self.stream
        if stream is None or self.negotiated is None:
            return None
        return CallStats(
            codec=stream.codec.name,
            encrypted=stream.srtp is not None,
            direction=stream.direction,
            stream=stream.statistics(),
            dtmf_received="".join(self._dtmf),
            tones_heard=tuple(self._tones),
        )

    # -- waiting --------------------------------------------------------------------------------

    async def wait_answered(self, timeout: float = 30.0) -> None:
        """Until the call is up; :class:`CallFailed` naming why if it never is."""
        waited: set[asyncio.Future[Any]] = {self._answered, self._ended}
        done, _ = await asyncio.wait(waited, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._answered in done:
            return
        if self._ended in done:
            ended = self._ended.result()
            raise CallFailed(f"call to {self.remote} failed: {ended.reason}",
                             status=ended.status)
        raise CallTimeout(f"call to {self.remote} not answered within {timeout:g} s")

    async def wait_ended(self, timeout: float | None = None) -> CallEnded:
        """Until the call is over."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        except TimeoutError:
            raise CallTimeout(f"call with {self.remote} still up after {timeout:g} s") from None

    async def _wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        # Media events land on the endpoint 50 times a second per stream; looking at them at
        # the same pace only while someone waits keeps the per-packet path untouched.
        loop = self._manager.loop
        deadline = loop.time() + timeout
        while True:
            if self.endpoint is not None:
                self._harvest(self.endpoint)
            if check():
                return
            if self._ended.done():
                raise CallFailed(f"the call ended before {what}: {self._ended.result().reason}")
            if loop.time() >= deadline:
                raise CallTimeout(f"{what} not within {timeout:g} s")
            await asyncio.sleep(POLL_INTERVAL)

    # -- media control -------------------------------------------------------------------------

    def play_tone(self, frequency_hz: float, *, level_dbov: float = -10.0) -> None:
        """Send a sine tone from now on (and after every re-negotiation)."""
        self._source_factory = lambda s: tone(s.codec, frequency_hz, ptime_ms=s.ptime_ms,
                                              level_dbov=level_dbov)
        self._echo = False
        self._apply_source()

    def play_file(self, path: str | Path) -> None:
        """Send a WAV file, looped."""
        self._source_factory = lambda s: wav_file(path, s.codec, ptime_ms=s.ptime_ms)
        self._echo = False
        self._apply_source()

    def echo(self) -> None:
        """Send back what is received (as the lab's echo service does)."""
        self._echo = True
        self._source_factory = None
        self._apply_source()

    def record(self, path: str | Path) -> None:
        """Record the received audio; written to *path* when the call ends."""
        self._record_path = Path(path)
        if self.stream is not None and self._recorder is None:
            self._recorder = WavRecorder(self.stream.codec)
            self.stream.sinks.append(self._recorder)

    def _apply_source(self) -> None:
        stream = self.stream
        if stream is None:
            return
        if self._echo:
            echo = _EchoSource(stream.source)
            stream.source = echo
            stream.sinks.append(echo)
        elif self._source_factory is not None:
            stream.source = self._source_factory(stream)

    async def wait_tone(self, frequency_hz: float, timeout: float = 10.0) -> None:
        """Until the far end's *frequency_hz* tone is heard (Goertzel on received audio)."""
        key = float(frequency_hz)
        self._ensure_detector(key)
        await self._wait_for(lambda: key in self._tones, timeout, f"a {frequency_hz:g} Hz tone")

    def _ensure_detector(self, key: float) -> None:
        if key in self._detectors or self.stream is None:
            if key not in self._detectors:
                self._detectors[key] = None  # type: ignore[assignment]
            return
        detector = ToneDetector(self.stream.codec, key, sample_every=5, min_hits=3)
        self._detectors[key] = detector
        self.stream.sinks.append(detector)

    async def send_dtmf(self, digits: str, *, duration_ms: int = 100) -> None:
        """Send RFC 4733 digits and wait until they have gone out."""
        stream = self._need_stream("send DTMF")
        stream.send_dtmf(digits, duration_ms=duration_ms)
        if self.endpoint is not None:
            self.endpoint.wake()
        await asyncio.sleep(len(digits) * (duration_ms + 100) / 1000)

    async def wait_dtmf(self, digits: str, timeout: float = 10.0) -> None:
        """Until *digits* have been received (RFC 4733)."""
        await self._wait_for(lambda: digits in "".join(self._dtmf), timeout,
                             f"DTMF {digits!r}")

    def _need_stream(self, what: str) -> MediaStream:
        if self.stream is None:
            raise UsageError(f"cannot {what}: the call has no media yet")
        return self.stream

    # -- signalling ----------------------------------------------------------------------------

    async def answer(self) -> None:
        """Answer an incoming call (200 OK with the SDES answer)."""
        if not self.incoming:
            raise UsageError("answer() is for incoming calls")
        if self.session.state is not CallState.INCOMING:
            raise UsageError(f"the call is {self.session.state.value}: cannot answer")
        local = await self._open_media()
        if self.session.ended is not None:  # cancelled meanwhile
            self._close_media()
            raise CallFailed(f"the call from {self.remote} ended before it was answered")
        self._manager._run(lambda now: self.session.answer(now, local=local))

    async def reject(self, status: int = 486) -> None:
        """Refuse an incoming call (486 Busy Here, 603 Decline...)."""
        self._manager._run(lambda now: self.session.reject(now, status))

    async def hold(self, timeout: float = 10.0) -> None:
        """Put the call on hold (re-INVITE, sendonly)."""
        await self._reoffer_and_wait(self.session.hold, timeout, "hold")

    async def resume(self, timeout: float = 10.0) -> None:
        """Take the call off hold (re-INVITE, sendrecv)."""
        await self._reoffer_and_wait(self.session.resume, timeout, "resume")

    async def refresh(self, timeout: float = 10.0) -> None:
        """Refresh the session timer now (RFC 4028: UPDATE, or re-INVITE)."""
        if self.session.session_interval is None:
            raise UsageError("this call has no session timer to refresh")
        await self._reoffer_and_wait(self.session.refresh, timeout, "session refresh")

    async def _reoffer_and_wait(
        self, action: Callable[[float], None], timeout: float, what: str
    ) -> None:
        self._reoffer = self._manager.loop.create_future()
        self._manager._run(action)
        try:
            result = await asyncio.wait_for(asyncio.shield(self._reoffer), timeout)
        except TimeoutError:
            raise CallTimeout(f"{what} not answered within {timeout:g} s") from None
        if result is not None:
            raise CallFailed(f"{what} refused: {result.status} {result.reason}",
                             status=result.status)

    def _hangup_now(self) -> None:
        if self.session.state is not CallState.TERMINATED:
            self._manager._run(self.session.hangup)

    async def hangup(self, timeout: float = 5.0) -> CallEnded:
        """End the call (BYE, CANCEL or 603) and wait until it is over."""
        if self.session.state is not CallState.TERMINATED:
            self._manager._run(self.session.hangup)
        try:
            return await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        except TimeoutError:
            raise CallTimeout(f"hang-up not completed within {timeout:g} s") from None

    # -- events from the session -----------------------------------------------------------------

    async def _open_media(self) -> LocalAudio:
        manager = self._manager
        self.endpoint = await MediaEndpoint.open(manager.media_host)
        return LocalAudio(host=manager.media_host, rtp_port=self.endpoint.local_rtp_port,
                          media_encryption=manager.media_encryption)

    def _on_event(self, event: CallEvent) -> None:
        if isinstance(event, CallRinging):
            self.progress.append(event.status)
        elif isinstance(event, MediaNegotiated):
            try:
                self._on_media(event.audio)
            except PhoneSimError as exc:
                # The media cannot run as negotiated (a port gone...): end the call cleanly,
                # after this dispatch, rather than raise out of the transport's callback.
                logger.warning("call %s: media failed: %s", self.session.call_id, exc)
                self.media_error = str(exc)
                self._manager.loop.call_soon(self._hangup_now)
            if self._reoffer is not None and not self._reoffer.done():
                self._reoffer.set_result(None)
        elif isinstance(event, CallEstablished):
            if not self._answered.done():
                self._answered.set_result(None)
        elif isinstance(event, ReofferFailed):
            if self._reoffer is not None and not self._reoffer.done():
                self._reoffer.set_result(event)
        elif isinstance(event, SessionRefreshed):
            self.refreshes += 1
            if self._reoffer is not None and not self._reoffer.done():
                self._reoffer.set_result(None)
        elif isinstance(event, CallEnded):
            self._close_media()
            if not self._ended.done():
                self._ended.set_result(event)
            if self._reoffer is not None and not self._reoffer.done():
                self._reoffer.set_result(ReofferFailed(status=event.status or 0,
                                                       reason=event.reason))

    def _on_media(self, audio: NegotiatedAudio) -> None:
        self.negotiated = audio
        endpoint = self.endpoint
        if endpoint is None:
            return
        now = self._manager.loop.time()
        keys = audio.srtp
        if self.stream is None:
            stream = MediaStream(
                codec=audio.codec, payload_type=audio.payload_type, ptime_ms=audio.ptime_ms,
                direction=str(audio.direction), dtmf_payload_type=audio.dtmf_payload_type,
                tx_key=keys.tx_key if keys else None, rx_key=keys.rx_key if keys else None,
            )
            self.stream = stream
            for key in list(self._detectors):
                del self._detectors[key]
                self._ensure_detector(key)
            if self._record_path is not None:
                self._recorder = WavRecorder(stream.codec)
                stream.sinks.append(self._recorder)
            self._apply_source()
            endpoint.attach(stream, remote_host=audio.remote_host,
                            remote_rtp_port=audio.remote_rtp_port,
                            remote_rtcp_port=audio.remote_rtcp_port,
                            clock=self._manager.clock)  # the pacer starts the stream
        else:
            rekey = audio.tx_key_changed or audio.rx_key_changed
            self.stream.update(
                now, direction=str(audio.direction),
                tx_key=keys.tx_key if keys and rekey else None,
                rx_key=keys.rx_key if keys and rekey else None,
            )
            endpoint.wake()

    def _on_media_event(self, event: object) -> None:
        if isinstance(event, ToneDetected):
            if event.frequency_hz not in self._tones:
                self._tones.append(event.frequency_hz)
        elif isinstance(event, DtmfReceived):
            self._dtmf.append(event.digit)

    def _close_media(self) -> None:
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            self._harvest(endpoint)
            endpoint.close()
        recorder = self._recorder
        path = self._record_path
        if recorder is not None and path is not None:
            try:
                recorder.save(path)
            except OSError as exc:
                logger.warning("cannot write %s: %s", path, exc.strerror)

    def _harvest(self, endpoint: MediaEndpoint) -> None:
        for event in endpoint.events:
            self._on_media_event(event)
        endpoint.events.clear()


class CallManager:
    """The calls on one SIP user agent, for an adapter that owns the UA.

    *get_ua* returns the UA in use (it may change when the phone reconnects); *flush* writes
    what the UA wants sent and re-arms its timer (the owner's pump); *local_uri* is the
    phone's address of record for From; *domain* completes a bare extension ("102").
    *get_media_host* and *get_media_encryption*, if given, are asked again each time the UA
    changes (the phone's address on its new transport, the media encryption of the host it
    registers with, which may be the alternate); else *media_host*, *media_encryption* stay.

    An incoming call rings at once (180) and is queued for :meth:`next_call`. With
    *auto_answer* it is also answered (200) and echoes what it hears, whether or not anyone
    waits on :meth:`next_call`; without, it rings until answered, rejected, cancelled, or
    ``CallConfig.ring_timeout`` (480).

    *on_event*, if given, is told each call's lifecycle (:data:`PhoneCallEvent`: placed or
    arrived, answered, finished), synchronously, in order; the ``Phone`` puts them on its
    :meth:`~phone_sim.phone.aio.Phone.events` stream.
    """

    def __init__(
        self,
        *,
        get_ua: Callable[[], UserAgent | None],
        flush: Callable[[], None],
        local_uri: Callable[[], NameAddr],
        domain: Callable[[], str],
        destination: Callable[[], Address | None] = lambda: None,
        media_host: str = "127.0.0.1",
        media_encryption: MediaEncryption = MediaEncryption.SDES,
        config: CallConfig | None = None,
        auto_answer: bool = False,
        clock: MediaClock | None = None,
        rng: random.Random | None = None,
        get_media_host: Callable[[], str] | None = None,
        get_media_encryption: Callable[[], MediaEncryption] | None = None,
        on_event: Callable[[PhoneCallEvent], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._notify = on_event
        self._get_media_host = get_media_host
        self._get_media_encryption = get_media_encryption
        self._get_ua = get_ua
        self._flush = flush
        self._local_uri = local_uri
        self._domain = domain
        self._destination = destination
        self.media_host = media_host
        self.media_encryption = media_encryption
        self.router = CallRouter(
            config=config or CallConfig(),
            local=LocalAudio(host=media_host, rtp_port=9, media_encryption=media_encryption),
            rng=rng,
        )
        self.auto_answer = auto_answer
        self.clock = clock or shared_media_clock(self.loop)
        self.calls: dict[str, Call] = {}
        # Incoming calls not yet taken by next_call(), and the coroutines waiting there.
        self._incoming: deque[Call] = deque()
        self._incoming_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Every incoming INVITE refused before ringing, by status (488, 400...).
        self.refused = self.router.refused

    def _sync_ua(self) -> UserAgent | None:
        ua = self._get_ua()
        if ua is not None and ua is not self.router.ua:
            if self._get_media_host is not None:
                self.media_host = self._get_media_host()
            if self._get_media_encryption is not None:
                self.media_encryption = self._get_media_encryption()
            self.router.local = LocalAudio(host=self.media_host, rtp_port=9,
                                           media_encryption=self.media_encryption)
            self.router.attach(ua, destination=self._destination())
            self._after()
        return ua

    # -- fed by the owner --------------------------------------------------------------------

    def transport_changed(self) -> None:
        """The owner's UA may have changed (reconnect) or gone (connection lost): end the
        calls of the old transport now rather than at the next SIP event."""
        ua = self._get_ua()
        if ua is self.router.ua:
            return
        if ua is None:
            self.router.detach()
            self._after()
        else:
            self._sync_ua()

    def handle_ua_event(self, event: UaEvent, now: float) -> bool:
        """One UA event; True when it belonged to a call (the owner then ignores it)."""
        if self._sync_ua() is None:
            return False
        taken = self.router.handle_event(event, now)
        if taken:
            self._after()
        return taken

    def _run(self, action: Callable[[float], None]) -> None:
        """Run a session API call now, then send what it produced."""
        action(self.loop.time())
        self._after()
        self._flush()

    def _after(self) -> None:
        router = self.router
        while (received := router.next_event()) is not None:
            new = Call(self, received.session)
            self.calls[received.session.call_id] = new
            # The phone rings at once, as the firmware does; the owner's pump sends it.
            received.session.ring(self.loop.time())
            if self._notify is not None:
                self._notify(CallArrived(call_id=received.session.call_id, remote=new.remote))
            self._queue_incoming(new)
            if self.auto_answer:
                self._spawn(self._auto_answer(new))
        for call_id, session in list(router.sessions.items()):
            call = self.calls.get(call_id)
            while (event := session.next_event()) is not None:
                if call is not None:
                    call._on_event(event)
                if self._notify is not None:
                    self._tell(call_id, session, event)
        for session in router.reap():
            self.calls.pop(session.call_id, None)
        self._arm()

    def _tell(self, call_id: str, session: CallSession, event: CallEvent) -> None:
        assert self._notify is not None
        if isinstance(event, CallEstablished):
            self._notify(CallAnswered(call_id=call_id, incoming=not session.outgoing))
        elif isinstance(event, CallEnded):
            self._notify(CallFinished(call_id=call_id, reason=event.reason,
                                        status=event.status, by_peer=event.by_peer))

    def _queue_incoming(self, call: Call) -> None:
        incoming = self._incoming
        if len(incoming) >= 16:
            # Nobody takes the calls (an auto-answering phone): keep only the live ones.
            live = [c for c in incoming if c.session.state is not CallState.TERMINATED]
            incoming.clear()
            incoming.extend(live)
        incoming.append(call)
        waiters, self._incoming_waiters = self._incoming_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def _auto_answer(self, call: Call) -> None:
        try:
            await call.answer()
        except CallFailed:
            return  # cancelled while the media opened
        except PhoneSimError as exc:
            # No media port (or the call moved on): refuse rather than ring until the timeout.
            logger.warning("call %s: cannot auto-answer: %s", call.session.call_id, exc)
            if call.session.state is CallState.INCOMING:
                await call.reject(500)
            return
        call.echo()

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _arm(self) -> None:
        at = self.router.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.router.handle_timer(self.loop.time())
        self._after()
        self._flush()

    # -- the API -------------------------------------------------------------------------------

    def target(self, to: str) -> SipUri:
        """``102`` -> ``sip:102@<domain>``; a full ``sip:`` URI is taken as it is."""
        if to.startswith(("sip:", "sips:")):
            return SipUri.parse(to)
        if not to or any(c in to for c in " <>\"@;"):
            raise UsageError(f"bad call target {to!r}: an extension or a sip: URI")
        return SipUri("sip", to, None, self._domain(), None, ())

    async def dial(self, to: str | SipUri) -> Call:
        """Place a call; returns at once (``await call.wait_answered()``)."""
        target = self.target(to) if isinstance(to, str) else to
        if self._sync_ua() is None:
            raise UsageError("the phone has no SIP transport yet: register first")
        endpoint = await MediaEndpoint.open(self.media_host)
        local = LocalAudio(host=self.media_host, rtp_port=endpoint.local_rtp_port,
                           media_encryption=self.media_encryption)
        self.router.destination = self._destination()
        try:
            session = self.router.dial(target, self.loop.time(), from_=self._local_uri(),
                                       local=local)
        except BaseException:
            endpoint.close()
            raise
        call = Call(self, session)
        call.endpoint = endpoint
        self.calls[session.call_id] = call
        if self._notify is not None:
            self._notify(CallPlaced(call_id=session.call_id, remote=str(target)))
        self._after()
        self._flush()
        return call

    async def next_call(self, timeout: float | None = None) -> Call:
        """The next incoming call still going (ringing, or answered by auto-answer); calls
        that ended while nobody waited (cancelled, timed out, hung up) are skipped."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    while self._incoming:
                        call = self._incoming.popleft()
                        if call.session.state is not CallState.TERMINATED:
                            return call
                    future: asyncio.Future[None] = self.loop.create_future()
                    self._incoming_waiters.append(future)
                    await future
        except TimeoutError:
            raise CallTimeout(f"no incoming call within {timeout:g} s") from None

    async def close(self) -> None:
        """Hang up every call (all at once) and stop."""
        calls = list(self.calls.values())
        results = await asyncio.gather(*(call.hangup(timeout=2.0) for call in calls),
                                       return_exceptions=True)
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, PhoneSimError):
                raise result
            if isinstance(result, PhoneSimError):
                logger.debug("call %s: hang-up at close: %s", call.session.call_id, result)
        for task in list(self._tasks):
            task.cancel()
        waiters, self._incoming_waiters = self._incoming_waiters, []
        for future in waiters:
            if not future.done():
                future.set_exception(CallFailed("the phone closed"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# --------------------------------------------------------------------------------------------
# A bare UDP user agent with calls (SIPp tests, direct phone-to-phone calls, no registrar)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, agent: UdpCallAgent) -> None:
        self.agent = agent

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.agent._receive(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)


class UdpCallAgent:
    """A phone's SIP stack on one UDP port, with calls and no registration.

    ``async with UdpCallAgent("127.0.0.1", user="101") as agent:`` then
    ``await agent.calls.dial("sip:102@127.0.0.1:5070")`` or ``await agent.calls.next_call()``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        user: str = "phone",
        profile_signature: PhoneSignature | None = None,
        config: CallConfig | None = None,
        auto_answer: bool = False,
        media_encryption: MediaEncryption = MediaEncryption.SDES,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self._signature = call_signature(profile_signature or PhoneSignature())
        self._config = config
        self._auto_answer = auto_answer
        self._media_encryption = media_encryption
        self.ua: UserAgent | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._calls: CallManager | None = None
        #: UA events that were not about calls (OPTIONS answered by the UA never show up).
        self.other_events: list[UaEvent] = []

    @property
    def calls(self) -> CallManager:
        """The agent's calls."""
        if self._calls is None:
            raise UsageError("start the agent first (async with)")
        return self._calls

    @property
    def uri(self) -> SipUri:
        """``sip:user@host:port``."""
        return SipUri("sip", self.user, None, self.host, self.port, ())

    async def __aenter__(self) -> UdpCallAgent:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.port))
        except OSError as exc:
            raise UsageError(f"cannot bind UDP {self.host}:{self.port}: {exc.strerror}") from None
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        self.ua = UserAgent(UaConfig(local_host=self.host, local_port=self.port,
                                     transport="UDP", user=self.user,
                                     signature=self._signature))
        self._calls = CallManager(
            get_ua=lambda: self.ua, flush=self._pump,
            local_uri=lambda: NameAddr(self.uri), domain=lambda: self.host,
            media_host=self.host, media_encryption=self._media_encryption,
            config=self._config, auto_answer=self._auto_answer,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Hang up, stop the timer, close the socket."""
        if self._calls is not None:
            await self._calls.close()
            await asyncio.sleep(0.05)
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _receive(self, data: bytes, source: Address) -> None:
        if self.ua is None:
            return
        self.ua.receive_datagram(data, source, asyncio.get_running_loop().time())
        self._pump()

    def _pump(self) -> None:
        ua = self.ua
        if ua is None:
            return
        now = asyncio.get_running_loop().time()
        for _ in range(100):
            moved = False
            while (event := ua.next_event()) is not None:
                moved = True
                if self._calls is None or not self._calls.handle_ua_event(event, now):
                    self.other_events.append(event)
            for data, destination in ua.datagrams_to_send():
                moved = True
                if self._transport is not None:
                    self._transport.sendto(data, destination)
            if not moved:
                break
        self._arm()

    def _arm(self) -> None:
        assert self.ua is not None
        at = self.ua.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = asyncio.get_running_loop().call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.ua is not None:
            self.ua.handle_timer(asyncio.get_running_loop().time())
            self._pump()


def __getattr__(name: str) -> Any:
    # ``CallingPhone`` was the Phone-with-calls before the Phone carried calls itself.
    if name == "CallingPhone":
        # Lazily: phone_sim.phone.aio imports this module.
        from phone_sim.phone.aio import Phone  # noqa: PLC0415

        warnings.warn("phone_sim.call.aio.CallingPhone is deprecated: use phone_sim.phone.Phone",
                      DeprecationWarning, stacklevel=2)
        return Phone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
