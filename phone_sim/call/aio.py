"""The asyncio side of a call: :class:`Call` joins a call of the phone's sans-I/O core to a
media stream and to futures.

::

    call = await phone.dial("102")
    await call.wait_answered()
    call.play_tone(1004)
    await call.wait_tone(1004)
    await call.send_dtmf("123")
    await call.hold(); await call.resume()
    await call.hangup()
    print(call.stats)

The signalling lives in :class:`~phone_sim.phone.core.PhoneCore` (its call router); a
``Call`` holds what needs I/O or waiting: the call's :class:`MediaEndpoint` (two UDP
sockets), its :class:`MediaStream`, and the futures coroutines wait on. The phone's pump
hands each call its events (:meth:`Call.on_event`). Every call of every phone on one event
loop is paced by one shared :class:`MediaClock` (:func:`shared_media_clock`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from phone_sim.call.events import (
    CallAnswered,
    CallFinished,
    CallMediaNegotiated,
    CallProgressed,
    CallRefreshed,
    CallUpdateRefused,
    PhoneCallEvent,
)
from phone_sim.call.session import CallSession, CallState
from phone_sim.errors import PhoneSimError, RemoteError, UsageError
from phone_sim.media.aio import MediaClock, MediaEndpoint
from phone_sim.media.negotiation import Direction, NegotiatedAudio
from phone_sim.media.sinks import (
    DtmfReceived,
    ToneDetected,
    ToneDetector,
    ToneFinder,
    WavRecorder,
)
from phone_sim.media.sources import AudioSource, tone, wav_file
from phone_sim.media.stream import MediaStream, StreamStatistics

if TYPE_CHECKING:
    from phone_sim.phone.core import PhoneCore

__all__ = [
    "Call",
    "CallFailed",
    "CallOwner",
    "CallStats",
    "CallTimeout",
    "shared_media_clock",
]

logger = logging.getLogger(__name__)

#: How often a waiting coroutine looks at the media events (seconds).
POLL_INTERVAL = 0.02
# Two tones heard this close are one (the finder rounds to the hertz; see ToneFinder).
_SAME_TONE_HZ = 2.0


# Weak values: a clock lives as long as some phone holds it (a clock refers to its loop, so
# a weak-key map would keep every test's loop alive).
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


class CallOwner(Protocol):
    """What a :class:`Call` needs from the phone that carries it (the ``Phone``)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The phone's event loop."""

    @property
    def core(self) -> PhoneCore:
        """The phone's sans-I/O core (calls act through it)."""

    @property
    def media_clock(self) -> MediaClock:
        """The pacer every call of the loop shares."""

    def flush(self) -> None:
        """Send what the core produced after an API call, and re-arm its timer."""


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
    """Frequencies heard so far: any steady tone (rounded to the hertz; see
    ``MediaOptions.find_tones``), and the tones played, waited for or asked for with
    :meth:`Call.detect_tone` at the frequency asked for."""

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
    """One call of a phone, with its media. ``phone.dial()`` and ``phone.next_call()`` make
    them; the phone feeds each its events."""

    def __init__(
        self,
        owner: CallOwner,
        call_id: str,
        *,
        incoming: bool,
        remote: str,
        account: int,
        endpoint: MediaEndpoint | None = None,
    ) -> None:
        self._owner = owner
        #: The call's Call-ID.
        self.call_id = call_id
        #: Whether the peer called us.
        self.incoming = incoming
        #: The peer's URI (From of an incoming call, the target of ours).
        self.remote = remote
        #: The index of the phone's account the call belongs to.
        self.account = account
        loop = owner.loop
        self.endpoint: MediaEndpoint | None = endpoint
        self.stream: MediaStream | None = None
        self._answered: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[CallFinished] = loop.create_future()
        self._reoffer: asyncio.Future[CallUpdateRefused | None] | None = None
        self._detectors: dict[float, ToneDetector | None] = {}
        self._tones: list[float] = []
        self._dtmf: list[str] = []
        self._source_factory: Callable[[MediaStream], AudioSource] | None = None
        self._recorder: WavRecorder | None = None
        self._record_path: Path | None = None
        self._echo = False
        self._finished: CallFinished | None = None
        #: The sans-I/O session (the core's; kept here for inspection, such as its INVITE,
        #: after the core forgets a finished call).
        self.session: CallSession | None = owner.core.calls.sessions.get(call_id)
        #: 18x statuses seen.
        self.progress: list[int] = []
        #: RFC 4028 session timings established (ours and the peer's refreshes).
        self.refreshes = 0
        #: Why the media could not be started, if it could not.
        self.media_error: str | None = None
        self.negotiated: NegotiatedAudio | None = None

    def __repr__(self) -> str:
        role = "incoming" if self.incoming else "outgoing"
        return f"<Call {role} {self.call_id} {self.state.value}>"

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> CallState:
        """The session state (``TERMINATED`` once over)."""
        if self._finished is not None:
            return CallState.TERMINATED
        session = self.session
        return session.state if session is not None else CallState.TERMINATED

    @property
    def ended(self) -> CallFinished | None:
        """How the call ended, once it has."""
        return self._finished

    @property
    def on_hold(self) -> bool:
        """Whether media is not flowing both ways (either side holds)."""
        return self.negotiated is not None and self.negotiated.direction is not Direction.SENDRECV

    @property
    def stats(self) -> CallStats | None:
        """Media figures now, with every digit and tone the stream detected so far (None
        before media was negotiated)."""
        stream = self.stream
        if self.endpoint is not None:
            self._harvest(self.endpoint)
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

    async def wait_ended(self, timeout: float | None = None) -> CallFinished:
        """Until the call is over."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        except TimeoutError:
            raise CallTimeout(f"call with {self.remote} still up after {timeout:g} s") from None

    async def _wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        # Media events land on the endpoint 50 times a second per stream; looking at them at
        # the same pace only while someone waits keeps the per-packet path untouched.
        loop = self._owner.loop
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
        """Send a sine tone from now on (and after every re-negotiation); the same tone is
        also listened for, so an echo of it shows in :attr:`stats`."""
        self._source_factory = lambda s: tone(s.codec, frequency_hz, ptime_ms=s.ptime_ms,
                                              level_dbov=level_dbov)
        self._echo = False
        self.detect_tone(frequency_hz)
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

    def detect_tone(self, frequency_hz: float) -> None:
        """Listen for *frequency_hz* in what is received (Goertzel); a hit shows in
        :attr:`stats` ``tones_heard``."""
        key = float(frequency_hz)
        if self._detectors.get(key) is not None:
            return
        if self.stream is None:
            self._detectors[key] = None  # attached when the stream starts
            return
        detector = ToneDetector(self.stream.codec, key, sample_every=5, min_hits=3)
        self._detectors[key] = detector
        self.stream.sinks.append(detector)

    async def wait_tone(self, frequency_hz: float, timeout: float = 10.0) -> None:
        """Until the far end's *frequency_hz* tone is heard (Goertzel on received audio)."""
        key = float(frequency_hz)
        self.detect_tone(key)
        await self._wait_for(lambda: key in self._tones, timeout, f"a {frequency_hz:g} Hz tone")

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
        if self.state is not CallState.INCOMING:
            raise UsageError(f"the call is {self.state.value}: cannot answer")
        owner = self._owner
        core = owner.core
        endpoint = self.endpoint = await MediaEndpoint.open(
            core.media_host(call_id=self.call_id), impairment=core.config.media.impairment)
        if self._cancelled():  # the caller gave up while the sockets opened
            self._close_media()
            raise CallFailed(f"the call from {self.remote} ended before it was answered")
        local = core.local_audio(endpoint.local_rtp_port, call_id=self.call_id)
        core.answer(self.call_id, owner.loop.time(), local=local)
        owner.flush()

    def _cancelled(self) -> bool:
        return self.state is not CallState.INCOMING

    async def reject(self, status: int = 486) -> None:
        """Refuse an incoming call (486 Busy Here, 603 Decline...)."""
        self._act(lambda core, now: core.reject(self.call_id, now, status))

    async def hold(self, timeout: float = 10.0) -> None:
        """Put the call on hold (re-INVITE, sendonly)."""
        await self._reoffer_and_wait(
            lambda core, now: core.hold(self.call_id, now), timeout, "hold")

    async def resume(self, timeout: float = 10.0) -> None:
        """Take the call off hold (re-INVITE, sendrecv)."""
        await self._reoffer_and_wait(
            lambda core, now: core.resume(self.call_id, now), timeout, "resume")

    async def refresh(self, timeout: float = 10.0) -> None:
        """Refresh the session timer now (RFC 4028: UPDATE, or re-INVITE)."""
        session = self.session
        if session is None or session.session_interval is None:
            raise UsageError("this call has no session timer to refresh")
        await self._reoffer_and_wait(
            lambda core, now: core.refresh(self.call_id, now), timeout, "session refresh")

    def _act(self, action: Callable[[PhoneCore, float], None]) -> None:
        owner = self._owner
        action(owner.core, owner.loop.time())
        owner.flush()

    async def _reoffer_and_wait(
        self, action: Callable[[PhoneCore, float], None], timeout: float, what: str
    ) -> None:
        self._reoffer = self._owner.loop.create_future()
        self._act(action)
        try:
            result = await asyncio.wait_for(asyncio.shield(self._reoffer), timeout)
        except TimeoutError:
            raise CallTimeout(f"{what} not answered within {timeout:g} s") from None
        if result is not None:
            raise CallFailed(f"{what} refused: {result.status} {result.reason}",
                             status=result.status)

    def hangup_now(self) -> None:
        """End the call without waiting (BYE, CANCEL or 603)."""
        if self.state is not CallState.TERMINATED:
            self._act(lambda core, now: core.hangup(self.call_id, now))

    async def hangup(self, timeout: float = 5.0) -> CallFinished:
        """End the call (BYE, CANCEL or 603) and wait until it is over."""
        self.hangup_now()
        try:
            return await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        except TimeoutError:
            raise CallTimeout(f"hang-up not completed within {timeout:g} s") from None

    # -- events from the core (the phone's pump) --------------------------------------------------

    def on_event(self, event: PhoneCallEvent) -> None:
        """One event of this call, from the phone's pump."""
        if isinstance(event, CallProgressed):
            self.progress.append(event.status)
        elif isinstance(event, CallMediaNegotiated):
            try:
                self._on_media(event.audio)
            except PhoneSimError as exc:
                # The media cannot run as negotiated (a port gone...): end the call cleanly,
                # after this dispatch, rather than raise out of the transport's callback.
                logger.warning("call %s: media failed: %s", self.call_id, exc)
                self.media_error = str(exc)
                self._owner.loop.call_soon(self.hangup_now)
            self._settle_reoffer(None)
        elif isinstance(event, CallAnswered):
            if not self._answered.done():
                self._answered.set_result(None)
        elif isinstance(event, CallUpdateRefused):
            self._settle_reoffer(event)
        elif isinstance(event, CallRefreshed):
            self.refreshes += 1
            self._settle_reoffer(None)
        elif isinstance(event, CallFinished):
            self._finished = event
            self._close_media()
            if not self._ended.done():
                self._ended.set_result(event)
            self._settle_reoffer(CallUpdateRefused(call_id=self.call_id,
                                                   status=event.status or 0,
                                                   reason=event.reason))

    def _settle_reoffer(self, result: CallUpdateRefused | None) -> None:
        if self._reoffer is not None and not self._reoffer.done():
            self._reoffer.set_result(result)

    def _on_media(self, audio: NegotiatedAudio) -> None:
        self.negotiated = audio
        endpoint = self.endpoint
        if endpoint is None:
            return
        keys = audio.srtp
        if self.stream is None:
            # Every negotiated number is used, the receive payload types included: a peer
            # may number telephone-event 96 where the phone offered 101.
            stream = MediaStream.from_negotiated(audio)
            self.stream = stream
            for key in list(self._detectors):
                self._detectors[key] = None
                self.detect_tone(key)
            if self._owner.core.config.media.find_tones:
                stream.sinks.append(ToneFinder(stream.codec))
            if self._record_path is not None:
                self._recorder = WavRecorder(stream.codec)
                stream.sinks.append(self._recorder)
            self._apply_source()
            endpoint.attach(stream, remote_host=audio.remote_host,
                            remote_rtp_port=audio.remote_rtp_port,
                            remote_rtcp_port=audio.remote_rtcp_port,
                            remote_rtcp_host=audio.remote_rtcp_host,
                            clock=self._owner.media_clock)  # the pacer starts the stream
        else:
            rekey = audio.tx_key_changed or audio.rx_key_changed
            endpoint.retarget(remote_host=audio.remote_host,
                              remote_rtp_port=audio.remote_rtp_port,
                              remote_rtcp_port=audio.remote_rtcp_port,
                              remote_rtcp_host=audio.remote_rtcp_host)
            self.stream.update(
                self._owner.loop.time(), direction=str(audio.direction),
                tx_key=keys.tx_key if keys and rekey else None,
                rx_key=keys.rx_key if keys and rekey else None,
            )
            endpoint.wake()

    def _on_media_event(self, event: object) -> None:
        if isinstance(event, ToneDetected):
            # The finder reports the tone rounded to the hertz, a detector asked for
            # 1004.0 reports 1004.0: one tone heard once, within the finder's tolerance.
            heard = event.frequency_hz
            for i, known in enumerate(self._tones):
                if abs(known - heard) <= _SAME_TONE_HZ:
                    if heard in self._detectors:  # the exact frequency asked for wins
                        self._tones[i] = heard
                    return
            self._tones.append(heard)
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
