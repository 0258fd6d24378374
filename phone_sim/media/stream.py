"""The sans-I/O media stream: one negotiated audio stream of one call leg.

Like aioquic's connection it does no I/O and reads no clock. The adapter feeds it datagrams
with ``receive_datagram(data, now)``, asks it for ``packets_to_send(now)`` (RTP) and
``rtcp_to_send(now)`` at the deadlines it exposes (``next_send_at``, ``next_rtcp_at``,
``get_timer()``), and drains its events with ``next_event()``.

It takes exactly the primitives that offer/answer negotiates: codec and payload type, the
telephone-event payload type, ptime, direction, and the 30-byte SDES key material for each
direction (none for plain RTP when the account's media encryption is off).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from phone_sim.errors import UsageError
from phone_sim.media.codecs import AudioCodec, check_ptime, get_codec
from phone_sim.media.dtmf import DtmfError, dtmf_packets
from phone_sim.media.payloads import PayloadFormat
from phone_sim.media.rtp import (
    RTP_HEADER,
    RtcpByePacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    RtpPacketError,
    parse_rtcp,
)
from phone_sim.media.sinks import DtmfDetector, DtmfReceived, SinkEvent, ToneDetected, ToneLost
from phone_sim.media.sources import AudioSource, silence
from phone_sim.media.srtp import SrtpContext, SrtpCounters
from phone_sim.media.stats import (
    ReceiveStatistics,
    RemoteReport,
    SendStatistics,
    estimate_mos,
)

if TYPE_CHECKING:
    from phone_sim.media.negotiation import NegotiatedAudio

__all__ = [
    "AudioSink",
    "DtmfReceived",
    "MediaEvent",
    "MediaStream",
    "MediaStreamError",
    "RtcpByeReceived",
    "StreamStatistics",
    "ToneDetected",
    "ToneLost",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: Seconds between 1900-01-01 (NTP epoch) and 1970-01-01 (Unix epoch).
NTP_UNIX_OFFSET = 2_208_988_800
#: At most this many packets are sent at once to catch up after a stall; beyond, time skips.
MAX_BURST = 3
#: A computed RTT this far below zero (1/65536 s units, 5 ms) is taken as 0: pacers send a
#: little early, so a peer's DLSR can exceed the true delay on loopback.
RTT_TOLERANCE = 328
#: RFC 3389 comfort noise.
COMFORT_NOISE_PT = 13


class MediaStreamError(UsageError):
    """The stream was configured or driven wrongly."""


class AudioSink(Protocol):
    """Anything that takes received audio payloads (see :mod:`phone_sim.media.sinks`)."""

    def on_audio(self, payload: bytes, timestamp: int, now: float) -> SinkEvent | None:
        """Take one payload; return an event if it completes one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RtcpByeReceived:
    """The peer sent an RTCP BYE for its source."""

    #: The SSRC that left.
    ssrc: int
    #: When (on the stream's clock) it arrived.
    at: float


MediaEvent = ToneDetected | ToneLost | DtmfReceived | RtcpByeReceived


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamStatistics:
    """A snapshot of one stream's statistics, both directions."""

    #: RTP packets we sent, and their payload octets.
    packets_sent: int
    octets_sent: int
    #: Unique RTP packets received from the peer, and their payload octets.
    packets_received: int
    octets_received: int
    #: Packets expected from the peer's sequence numbers, and those never received.
    packets_expected: int
    packets_lost: int
    #: Packets received again, and packets received out of order.
    duplicates: int
    reordered: int
    #: RFC 3550 interarrival jitter of what we receive, in seconds.
    jitter: float
    #: SRTP/SRTCP failures of what we received, counted and dropped.
    srtp_auth_failures: int
    srtp_replay_failures: int
    #: Datagrams that were not valid RTP/RTCP once decrypted, or had an unknown payload type.
    malformed: int
    unknown_payload_type: int
    #: RTCP reports we sent and received.
    rtcp_sr_sent: int
    rtcp_rr_sent: int
    rtcp_sr_received: int
    rtcp_rr_received: int
    #: Round-trip time from RTCP, in seconds, once known.
    rtt: float | None
    #: The peer's last report on what we send, if any.
    remote: RemoteReport | None
    #: E-model MOS of what we hear, and of what the peer hears (from its reports).
    mos_received: float
    mos_sent: float | None
    #: Packets not sent because the sender fell 3+ packet times behind (a stalled loop).
    skipped_packets: int = 0
    #: Times the peer's SSRC changed (statistics restart at each change).
    ssrc_changes: int = 0
    #: RFC 3389 comfort-noise packets received.
    comfort_noise: int = 0
    #: Peer reports whose LSR/DLSR put the round trip below zero: a DLSR longer than the time
    #: since our SR left (Asterisk logs its own as "Internal RTCP NTP clock skew detected").
    rtcp_clock_skews: int = 0
    #: RTCP the peer sent without SRTCP protection (baresip does at start and hangup), dropped.
    rtcp_unprotected: int = 0


class MediaStream:
    """One audio stream: RTP/SRTP out at ``ptime`` pace, RTP/SRTP in, RTCP both ways.

    ``tx_key``/``rx_key`` are the 30-byte SDES key material for what we send and what we
    receive; leave both ``None`` for plain RTP. ``payload_type`` defaults to the codec's static
    one. ``rng`` makes the SSRC, initial sequence number and timestamp, and RTCP intervals
    reproducible in tests.
    """

    # Slots: a process carries a thousand streams, each touched 100 times a second; fixed
    # offsets instead of a dict per stream keep what a packet reads on fewer cache lines.
    __slots__ = (
        "_dtmf_slots",
        "_dtmf_ts",
        "_events",
        "_last_sr",
        "_protect",
        "_ptime",
        "_rng",
        "_sent_since_report",
        "_seq",
        "_slot",
        "_srtp",
        "_started",
        "_stopped",
        "_t0",
        "_ts",
        "_ts_step",
        "_unprotect",
        "cname",
        "codec",
        "comfort_noise",
        "direction",
        "dtmf",
        "dtmf_payload_type",
        "malformed",
        "next_rtcp_at",
        "next_send_at",
        "payload_type",
        "ptime_ms",
        "received",
        "remote_report",
        "remote_ssrc",
        "rtcp_clock_skews",
        "rtcp_interval",
        "rtcp_rr_received",
        "rtcp_rr_sent",
        "rtcp_sr_received",
        "rtcp_sr_sent",
        "rtt",
        "rx_dtmf_payload_type",
        "rx_payload_type",
        "sent",
        "sinks",
        "skipped_packets",
        "source",
        "ssrc",
        "ssrc_changes",
        "unknown_payload_type",
        "wallclock_offset",
    )

    def __init__(
        self,
        *,
        codec: str | AudioCodec | PayloadFormat,
        payload_type: int | None = None,
        ptime_ms: int = 20,
        direction: str = "sendrecv",
        dtmf_payload_type: int | None = 101,
        rx_payload_type: int | None = None,
        rx_dtmf_payload_type: int | None = None,
        tx_key: bytes | None = None,
        rx_key: bytes | None = None,
        source: AudioSource | None = None,
        sinks: Sequence[AudioSink] = (),
        rtcp_interval: float = 5.0,
        cname: str = "phone-sim",
        wallclock_offset: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.codec = codec if isinstance(codec, AudioCodec) else get_codec(codec)
        self.payload_type = self.codec.payload_type if payload_type is None else payload_type
        #: The payload types the peer sends with (its numbering may differ from ours).
        self.rx_payload_type = self.payload_type if rx_payload_type is None else rx_payload_type
        self.rx_dtmf_payload_type = (
            dtmf_payload_type if rx_dtmf_payload_type is None else rx_dtmf_payload_type
        )
        for what, pt in (
            ("payload type", self.payload_type),
            ("receive payload type", self.rx_payload_type),
            ("telephone-event payload type", dtmf_payload_type),
            ("receive telephone-event payload type", self.rx_dtmf_payload_type),
        ):
            if pt is not None and not 0 <= pt <= 127:
                raise MediaStreamError(f"{what} {pt} is not in 0-127")
        if dtmf_payload_type == self.payload_type or (
            self.rx_dtmf_payload_type == self.rx_payload_type
        ):
            raise MediaStreamError("telephone-event and audio cannot share a payload type")
        self.ptime_ms = check_ptime(ptime_ms)
        self.dtmf_payload_type = dtmf_payload_type
        self._check_direction(direction)
        self.direction = direction
        if (tx_key is None) != (rx_key is None):
            raise MediaStreamError("give both SRTP keys (tx and rx) or neither for plain RTP")
        self._protect: Callable[[bytes], bytes] | None = None
        self._unprotect: Callable[[bytes], bytes | None] | None = None
        self._srtp: SrtpContext | None = None
        if tx_key is not None and rx_key is not None:
            self.srtp = SrtpContext(tx_key=tx_key, rx_key=rx_key)
        if source is None:
            source = silence(self.codec, ptime_ms)
        elif source.codec != self.codec or source.ptime_ms != ptime_ms:
            raise MediaStreamError(
                f"source is encoded as {source.codec.name}/{source.ptime_ms} ms, the stream "
                f"sends {self.codec.name}/{ptime_ms} ms"
            )
        self.source = source
        self.sinks = list(sinks)
        self.dtmf = DtmfDetector(clock_rate=self.codec.clock_rate)
        if rtcp_interval <= 0:
            raise MediaStreamError(f"RTCP interval {rtcp_interval} s must be positive")
        self.rtcp_interval = rtcp_interval
        self.cname = cname.encode()[:255]
        self.wallclock_offset = wallclock_offset
        self._rng = rng or random.Random()

        self.ssrc = self._rng.getrandbits(32)
        self._seq = self._rng.getrandbits(16)
        self._ts = self._rng.getrandbits(32)
        self._ts_step = self.codec.timestamp_step(ptime_ms)
        self._ptime = ptime_ms / 1000
        self._dtmf_slots: deque[tuple[bytes, bool, bool] | None] = deque()
        self._dtmf_ts = 0
        self._t0 = 0.0
        self._slot = 0

        self.remote_ssrc: int | None = None
        self.sent = SendStatistics()
        self.received = ReceiveStatistics(self.codec.clock_rate)
        self.malformed = 0
        self.unknown_payload_type = 0
        self.comfort_noise = 0
        self.ssrc_changes = 0
        self.skipped_packets = 0
        self.rtcp_sr_sent = self.rtcp_rr_sent = 0
        self.rtcp_sr_received = self.rtcp_rr_received = 0
        self.rtt: float | None = None
        self.rtcp_clock_skews = 0
        self.remote_report: RemoteReport | None = None
        self._last_sr: tuple[int, float] | None = None  # (LSR field, arrival)
        self._sent_since_report = False
        self._events: deque[MediaEvent] = deque()
        self._started = False
        self._stopped = False
        #: When the next RTP packet is due (``inf`` when not sending).
        self.next_send_at = float("inf")
        #: When the next RTCP report is due (``inf`` before start and after stop).
        self.next_rtcp_at = float("inf")

    def __repr__(self) -> str:
        mode = "SRTP" if self.srtp else "RTP"
        return (
            f"<MediaStream {mode} {self.codec.name}/{self.payload_type} {self.ptime_ms}ms "
            f"{self.direction} ssrc={self.ssrc:#010x}>"
        )

    @classmethod
    def from_negotiated(
        cls,
        negotiated: NegotiatedAudio,
        *,
        source: AudioSource | None = None,
        sinks: Sequence[AudioSink] = (),
        **options: Any,
    ) -> MediaStream:
        """A stream for what offer/answer agreed (:class:`~.negotiation.NegotiatedAudio`)."""
        keys = negotiated.srtp
        return cls(
            codec=negotiated.codec,
            payload_type=negotiated.payload_type,
            rx_payload_type=negotiated.rx_payload_type,
            dtmf_payload_type=negotiated.dtmf_payload_type,
            rx_dtmf_payload_type=negotiated.rx_dtmf_payload_type,
            ptime_ms=negotiated.ptime_ms,
            direction=str(negotiated.direction),
            tx_key=keys.tx_key if keys is not None else None,
            rx_key=keys.rx_key if keys is not None else None,
            source=source,
            sinks=sinks,
            **options,
        )

    @staticmethod
    def _check_direction(direction: str) -> None:
        if direction not in DIRECTIONS:
            raise MediaStreamError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")

    @property
    def srtp(self) -> SrtpContext | None:
        """The SRTP context, or ``None`` for plain RTP."""
        return self._srtp

    @srtp.setter
    def srtp(self, context: SrtpContext | None) -> None:
        self._srtp = context
        # Plain functions, looked up once: the hot path calls them 50 times a second.
        if context is None:
            self._protect = self._unprotect = None
        else:
            self._protect, self._unprotect = context.rtp_functions()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has been called."""
        return self._started

    @property
    def has_events(self) -> bool:
        """Whether :meth:`next_event` has something."""
        return bool(self._events)

    @property
    def sending(self) -> bool:
        """Whether the direction lets us send RTP."""
        return self.direction in ("sendrecv", "sendonly")

    # -- control ---------------------------------------------------------------------------

    def start(self, now: float, *, first_send_at: float | None = None) -> None:
        """Begin: the first packet goes at ``first_send_at`` (default ``now``)."""
        if self._started:
            raise MediaStreamError("stream already started")
        self._started = True
        first = now if first_send_at is None else first_send_at
        self._t0, self._slot = first, 0
        if self.sending:
            self.next_send_at = first
        # RFC 3550 6.2: the first report after half an interval, then randomised intervals.
        self.next_rtcp_at = now + self.rtcp_interval * self._rng.uniform(0.25, 0.75)

    def update(
        self,
        now: float,
        *,
        direction: str | None = None,
        tx_key: bytes | None = None,
        rx_key: bytes | None = None,
    ) -> None:
        """Apply a re-offer: new direction and/or keys.

        Each direction is handled alone: the same key keeps that direction's SRTP session and
        its rollover counter, a new key starts a new session (RFC 4568 7.1.4). A stream that
        may send again sends from ``now``; tell the
        pacer (``Pacer.wake``) so it sees the earlier deadline.
        """
        if direction is not None:
            self._check_direction(direction)
            was_sending = self.sending
            self.direction = direction
            if self.sending and not was_sending and self._started and not self._stopped:
                self._t0, self._slot = now, 0
                self.next_send_at = now
            elif not self.sending:
                self.next_send_at = float("inf")
        if tx_key is not None or rx_key is not None:
            if self.srtp is None:
                if tx_key is None or rx_key is None:
                    raise MediaStreamError("turning SRTP on needs both keys (tx and rx)")
                self.srtp = SrtpContext(tx_key=tx_key, rx_key=rx_key)
            else:
                self.srtp.rekey(tx_key=tx_key, rx_key=rx_key)
                self.srtp = self.srtp  # the per-packet functions of the new sessions

    def send_dtmf(self, digits: str, *, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Queue RFC 4733 digits; audio pauses while each digit is sent."""
        if self.dtmf_payload_type is None:
            raise DtmfError("the peer did not negotiate telephone-event: cannot send DTMF")
        if not self.sending:
            raise DtmfError(f"cannot send DTMF while the stream is {self.direction}")
        if gap_ms < 0:
            raise DtmfError(f"DTMF gap {gap_ms} ms must not be negative")
        gap_slots = -(-gap_ms // self.ptime_ms)
        slots: list[tuple[bytes, bool, bool] | None] = []
        for digit in digits:
            packets = dtmf_packets(
                digit, duration_ms=duration_ms, ptime_ms=self.ptime_ms,
                clock_rate=self.codec.clock_rate,
            )
            for packet in packets:
                # (payload, marker, first packet of the event)
                slots.append((packet.payload, packet.marker, packet.index == 0))
            slots.extend([None] * gap_slots)
        self._dtmf_slots.extend(slots)

    def stop(self, now: float) -> list[bytes]:
        """Stop sending; return a final RTCP report with a BYE (RFC 3550 6.6) to send."""
        if self._stopped or not self._started:
            self._stopped = True
            return []
        self._stopped = True
        self.next_send_at = float("inf")
        self.next_rtcp_at = float("inf")
        return [self._build_rtcp(now, bye=True)]

    def get_timer(self) -> float:
        """The earliest deadline: next RTP packet or next RTCP report."""
        return min(self.next_send_at, self.next_rtcp_at)

    def next_event(self) -> MediaEvent | None:
        """The oldest event not yet taken, or ``None``."""
        return self._events.popleft() if self._events else None

    # -- sending ---------------------------------------------------------------------------

    def packets_to_send(self, now: float) -> list[bytes]:
        """The RTP packets due at ``now`` (normally one), protected when SRTP is on."""
        at = self.next_send_at
        if now < at:
            return []
        ptime = self._ptime
        slot = self._slot + 1
        next_at = self._t0 + slot * ptime
        if next_at > now and not self._dtmf_slots:
            # The hot path: exactly one audio packet, built inline.
            self._slot = slot
            self.next_send_at = next_at
            payload = self.source.next_payload()
            seq = self._seq
            ts = self._ts
            packet = RTP_HEADER.pack(0x80, self.payload_type, seq, ts, self.ssrc) + payload
            if self._protect is not None:
                packet = self._protect(packet)
            self._seq = (seq + 1) & 0xFFFF
            self._ts = (ts + self._ts_step) & 0xFFFFFFFF
            sent = self.sent
            sent.packets_sent += 1
            sent.octets_sent += len(payload)
            self._sent_since_report = True
            return [packet]
        slot -= 1
        late = int((now - at) / ptime)
        if late >= MAX_BURST:
            # A stall: skip the audio we could not send in time instead of bursting it.
            skip = late - MAX_BURST + 1
            self.skipped_packets += skip
            self._ts = (self._ts + skip * self._ts_step) & 0xFFFFFFFF
            slot += skip
        out = []
        build = self._build_next
        t0 = self._t0
        while True:
            out.append(build())
            slot += 1
            # Deadlines from a slot count, not by adding ptime, so they never drift.
            at = t0 + slot * ptime
            if at > now:
                break
        self._slot = slot
        self.next_send_at = at
        return out

    def _build_next(self) -> bytes:
        marker = False
        pt = self.payload_type
        ts = self._ts
        if self._dtmf_slots:
            slot = self._dtmf_slots.popleft()
            if slot is None:
                payload = self.source.next_payload()
            else:
                payload, marker, first = slot
                if first:
                    self._dtmf_ts = ts
                ts = self._dtmf_ts
                pt = self.dtmf_payload_type  # type: ignore[assignment]
        else:
            payload = self.source.next_payload()
        packet = RTP_HEADER.pack(0x80, pt | 0x80 if marker else pt, self._seq, ts, self.ssrc)
        packet += payload
        if self._protect is not None:
            packet = self._protect(packet)
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + self._ts_step) & 0xFFFFFFFF
        sent = self.sent
        sent.packets_sent += 1
        sent.octets_sent += len(payload)
        self._sent_since_report = True
        return packet

    def rtcp_to_send(self, now: float, *, due_by: float | None = None) -> list[bytes]:
        """The RTCP compound packet due by ``due_by`` (default ``now``), if any, stamped with
        ``now``: the time it leaves.

        A pacer that serves deadlines a little ahead passes its horizon as ``due_by``; the
        report's NTP time and DLSR must still be those of ``now``, or the peer sees a DLSR
        longer than the time its own clock measured (RFC 3550 6.4.1).
        """
        if (now if due_by is None else due_by) < self.next_rtcp_at:
            return []
        self.next_rtcp_at = now + self.rtcp_interval * self._rng.uniform(0.5, 1.5)
        return [self._build_rtcp(now)]

    def _ntp(self, now: float) -> int:
        wall = now + self.wallclock_offset + NTP_UNIX_OFFSET
        return int(wall * (1 << 32)) & 0xFFFFFFFFFFFFFFFF

    def _build_rtcp(self, now: float, *, bye: bool = False) -> bytes:
        reports = []
        rx = self.received
        if self.remote_ssrc is not None and rx.packets_received:
            lsr, dlsr = 0, 0
            if self._last_sr is not None:
                lsr = self._last_sr[0]
                dlsr = int((now - self._last_sr[1]) * 65536) & 0xFFFFFFFF
            reports.append(
                RtcpReceiverInfo(
                    ssrc=self.remote_ssrc,
                    fraction_lost=rx.fraction_lost_since_last_report(),
                    packets_lost=min(rx.lost, 0x7FFFFF),
                    highest_sequence=rx.extended_max_seq & 0xFFFFFFFF,
                    jitter=int(rx.jitter_units) & 0xFFFFFFFF,
                    lsr=lsr,
                    dlsr=dlsr,
                )
            )
        packets: list[object]
        if self._sent_since_report:
            elapsed_ts = 0
            if self.next_send_at != float("inf"):
                # The RTP timestamp that corresponds to ``now`` (RFC 3550 6.4.1).
                elapsed_ts = round((now - self.next_send_at) * self.codec.clock_rate)
            info = RtcpSenderInfo(
                ntp_timestamp=self._ntp(now),
                rtp_timestamp=(self._ts + elapsed_ts) & 0xFFFFFFFF,
                packet_count=self.sent.packets_sent & 0xFFFFFFFF,
                octet_count=self.sent.octets_sent & 0xFFFFFFFF,
            )
            packets = [RtcpSrPacket(ssrc=self.ssrc, sender_info=info, reports=reports)]
            self.rtcp_sr_sent += 1
        else:
            packets = [RtcpRrPacket(ssrc=self.ssrc, reports=reports)]
            self.rtcp_rr_sent += 1
        self._sent_since_report = False
        packets.append(
            RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=self.ssrc, items=[(1, self.cname)])])
        )
        if bye:
            packets.append(RtcpByePacket(sources=[self.ssrc]))
        data = b"".join(bytes(p) for p in packets)  # type: ignore[call-overload]
        self.sent.rtcp_sent += 1
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        return data

    # -- receiving -------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float, *, rtcp: bool | None = None) -> None:
        """Take one datagram from the peer's RTP (or RTCP) port.

        ``rtcp`` says which port it came on; ``None`` tells RTP and RTCP apart by the
        second octet (RFC 5761 4), for a multiplexed port. Bad datagrams are counted and
        dropped, never raised.
        """
        if rtcp is None:
            rtcp = len(data) >= 2 and 192 <= data[1] <= 223
        if rtcp:
            self._receive_rtcp(data, now)
            return
        unprotect = self._unprotect
        if unprotect is not None:
            plain = unprotect(data)
            if plain is None:
                return
            data = plain
        if len(data) < 12:
            self.malformed += 1
            return
        first, m_pt, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
        if first != 0x80:
            # Version other than 2, or CSRCs, an extension or padding: the careful parser.
            try:
                packet = RtpPacket.parse(data)
            except RtpPacketError:
                self.malformed += 1
                return
            payload = packet.payload
        else:
            payload = data[12:]
        if ssrc != self.remote_ssrc:
            if self.remote_ssrc is not None:
                # A new source (the peer restarted its stream): start counting afresh.
                self.ssrc_changes += 1
                self.received = ReceiveStatistics(self.codec.clock_rate)
                self._last_sr = None
            self.remote_ssrc = ssrc
        pt = m_pt & 0x7F
        # Only audio (and comfort noise, on the audio clock) enters the jitter estimate:
        # telephone-events run on their own timestamps (Asterisk starts them at 192).
        audio = pt == self.rx_payload_type
        if not self.received.on_packet(
            seq, ts, now, len(payload), jitter_sample=audio or pt == COMFORT_NOISE_PT
        ):
            return
        if audio:
            for sink in self.sinks:
                event = sink.on_audio(payload, ts, now)
                if event is not None:
                    self._events.append(event)
        elif pt == self.rx_dtmf_payload_type:
            self._events.extend(self.dtmf.on_event_payload(payload, ts, now))
        elif pt == COMFORT_NOISE_PT:
            self.comfort_noise += 1
        else:
            self.unknown_payload_type += 1

    def _receive_rtcp(self, data: bytes, now: float) -> None:
        if self.srtp is not None:
            plain = self.srtp.unprotect_rtcp(data)
            if plain is None:
                return
            data = plain
        try:
            packets = parse_rtcp(data)
        except RtpPacketError:
            self.malformed += 1
            return
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                self.rtcp_sr_received += 1
                ntp = packet.sender_info.ntp_timestamp
                self._last_sr = ((ntp >> 16) & 0xFFFFFFFF, now)
                self._take_reports(packet.reports, now)
            elif isinstance(packet, RtcpRrPacket):
                self.rtcp_rr_received += 1
                self._take_reports(packet.reports, now)
            elif isinstance(packet, RtcpByePacket):
                for source in packet.sources:
                    self._events.append(RtcpByeReceived(ssrc=source, at=now))

    def _take_reports(self, reports: list[RtcpReceiverInfo], now: float) -> None:
        for report in reports:
            if report.ssrc != self.ssrc:
                continue
            rtt = None
            if report.lsr:
                # RFC 3550 6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
                arrival = (self._ntp(now) >> 16) & 0xFFFFFFFF
                units = (arrival - report.lsr - report.dlsr) & 0xFFFFFFFF
                if units >= 0x80000000:
                    # Below zero: the peer's DLSR is longer than the time since our SR left
                    # (what Asterisk logs as "Internal RTCP NTP clock skew detected").
                    self.rtcp_clock_skews += 1
                if units >= 0x100000000 - RTT_TOLERANCE:
                    units = 0  # a loopback peer that reported a little early: RTT ~ 0
                if units < 0x80000000:
                    rtt = units / 65536
                    self.rtt = rtt
            self.remote_report = RemoteReport(
                fraction_lost=report.fraction_lost / 256,
                packets_lost=report.packets_lost,
                jitter=report.jitter / self.codec.clock_rate,
                rtt=rtt,
                at=now,
            )

    # -- statistics ------------------------------------------------------------------------

    @property
    def srtp_counters(self) -> SrtpCounters:
        """SRTP failures so far (all zero for plain RTP)."""
        return self.srtp.counters if self.srtp is not None else SrtpCounters()

    def statistics(self) -> StreamStatistics:
        """A snapshot of both directions."""
        rx = self.received
        counters = self.srtp_counters
        remote = self.remote_report
        mos_sent = None
        if remote is not None:
            mos_sent = estimate_mos(
                self.codec.name, loss_fraction=remote.fraction_lost, jitter=remote.jitter,
                rtt=self.rtt, ptime=self._ptime,
            )
        return StreamStatistics(
            packets_sent=self.sent.packets_sent,
            octets_sent=self.sent.octets_sent,
            packets_received=rx.packets_received,
            octets_received=rx.octets_received,
            packets_expected=rx.expected,
            packets_lost=rx.lost,
            duplicates=rx.duplicates,
            reordered=rx.reordered,
            jitter=rx.jitter,
            srtp_auth_failures=counters.auth_failures,
            srtp_replay_failures=counters.replay_failures,
            rtcp_unprotected=counters.rtcp_unprotected,
            malformed=self.malformed + counters.other_failures,
            unknown_payload_type=self.unknown_payload_type,
            rtcp_sr_sent=self.rtcp_sr_sent,
            rtcp_rr_sent=self.rtcp_rr_sent,
            rtcp_sr_received=self.rtcp_sr_received,
            rtcp_rr_received=self.rtcp_rr_received,
            rtt=self.rtt,
            remote=remote,
            mos_received=estimate_mos(
                self.codec.name, loss_fraction=rx.loss_fraction, jitter=rx.jitter,
                rtt=self.rtt, ptime=self._ptime,
            ),
            mos_sent=mos_sent,
            skipped_packets=self.skipped_packets,
            ssrc_changes=self.ssrc_changes,
            comfort_noise=self.comfort_noise,
            rtcp_clock_skews=self.rtcp_clock_skews,
        )
