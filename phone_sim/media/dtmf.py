"""RFC 4733 telephone events: DTMF digits sent and received as RTP payloads.

A digit is sent as a run of packets sharing the RTP timestamp of the event's start: the first
carries the marker bit, each one ptime later carries a longer duration, and the end is sent
three times with the E bit (RFC 4733 2.5.1.4) so one lost packet does not lose the digit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from phone_sim.errors import UsageError
from phone_sim.media.rtp import RtpPacketError

#: Event codes 0-15 (RFC 4733 3.2).
DIGITS = "0123456789*#ABCD"
_EVENT_OF = {digit: code for code, digit in enumerate(DIGITS)}
_PAYLOAD = struct.Struct("!BBH")
#: The end packet is sent this many times.
END_REPEATS = 3
#: Duration is 16 bits of clock units; longer events need segments, which we do not send.
MAX_DURATION = 0xFFFF


class DtmfError(UsageError):
    """A digit or duration we were asked to send is not valid."""


def event_code(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit (``0-9 * # A-D``)."""
    try:
        return _EVENT_OF[digit.upper()]
    except (KeyError, AttributeError):
        raise DtmfError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 telephone-event payload."""

    #: Event code, 0-255 (0-15 are the DTMF digits).
    event: int
    #: The E bit: this is (a repeat of) the end of the event.
    end: bool
    #: Power level in -dBm0, 0-63.
    volume: int
    #: Duration so far, in RTP clock units.
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse a 4-byte event payload; raise :class:`RtpPacketError` if malformed."""
        if len(payload) < 4:
            raise RtpPacketError(
                f"telephone-event payload is {len(payload)} bytes, expected at least 4"
            )
        event, e_r_volume, duration = _PAYLOAD.unpack_from(payload)
        return cls(
            event=event, end=bool(e_r_volume & 0x80), volume=e_r_volume & 0x3F, duration=duration
        )

    def __bytes__(self) -> bytes:
        return _PAYLOAD.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration
        )

    @property
    def digit(self) -> str | None:
        """The DTMF digit, or ``None`` for other events."""
        return DIGITS[self.event] if self.event < len(DIGITS) else None


@dataclass(frozen=True, kw_only=True, slots=True)
class DtmfPacket:
    """One packet of a digit being sent: payload plus the RTP fields that go with it."""

    #: The 4-byte event payload.
    payload: bytes
    #: Marker bit (first packet of the event).
    marker: bool
    #: Offset of this packet from the event start, in packets (0, 1, 2...).
    index: int


def dtmf_packets(
    digit: str, *, duration_ms: int = 100, ptime_ms: int = 20, clock_rate: int = 8000,
    volume: int = 10,
) -> list[DtmfPacket]:
    """Every packet of one digit, one per ptime, the end repeated :data:`END_REPEATS` times."""
    code = event_code(digit)
    if duration_ms < ptime_ms or duration_ms > 5000:
        raise DtmfError(f"DTMF duration {duration_ms} ms must be in {ptime_ms}-5000 ms")
    if not 0 <= volume <= 63:
        raise DtmfError(f"DTMF volume {volume} -dBm0 must be in 0-63")
    step = clock_rate * ptime_ms // 1000
    total = clock_rate * duration_ms // 1000
    if total > MAX_DURATION:
        raise DtmfError(f"DTMF duration {duration_ms} ms overflows the 16-bit duration field")
    packets: list[DtmfPacket] = []
    elapsed = step
    index = 0
    while elapsed < total:
        event = TelephoneEvent(event=code, end=False, volume=volume, duration=elapsed)
        packets.append(DtmfPacket(payload=bytes(event), marker=index == 0, index=index))
        index += 1
        elapsed += step
    end = bytes(TelephoneEvent(event=code, end=True, volume=volume, duration=total))
    for _ in range(END_REPEATS):
        packets.append(DtmfPacket(payload=end, marker=index == 0, index=index))
        index += 1
    return packets


@dataclass(frozen=True, kw_only=True, slots=True)
class DtmfDigit:
    """A digit the receiver recognised."""

    #: The digit, ``0-9 * # A-D``.
    digit: str
    #: Its duration in milliseconds, as the sender reported it.
    duration_ms: float
    #: RTP timestamp of the event start, which identifies it.
    timestamp: int


class DtmfReceiver:
    """Turns a stream of telephone-event payloads into digits, once each.

    A digit is reported at its first end packet; if the end packets are all lost, it is reported
    when the next event (a new timestamp) starts. Repeats of the end are ignored.
    """

    def __init__(self, *, clock_rate: int = 8000) -> None:
        self._clock_rate = clock_rate
        self._current: tuple[int, TelephoneEvent] | None = None
        self._reported: int | None = None
        #: Payloads that were not valid telephone events.
        self.malformed = 0

    def receive(self, payload: bytes, timestamp: int) -> list[DtmfDigit]:
        """Feed one payload with its RTP timestamp; return the digits it completes."""
        try:
            event = TelephoneEvent.parse(payload)
        except RtpPacketError:
            self.malformed += 1
            return []
        if event.digit is None or timestamp == self._reported:
            return []
        done: list[DtmfDigit] = []
        if self._current is not None and self._current[0] != timestamp:
            # RFC 4733 2.5.2.2: a new event ends the previous one even if its end was lost.
            done.append(self._digit(*self._current))
        self._current = (timestamp, event)
        if event.end:
            self._current = None
            done.append(self._digit(timestamp, event))
        return done

    def _digit(self, timestamp: int, event: TelephoneEvent) -> DtmfDigit:
        self._reported = timestamp
        digit = event.digit
        assert digit is not None
        return DtmfDigit(
            digit=digit, duration_ms=event.duration * 1000 / self._clock_rate, timestamp=timestamp
        )
