"""Per-direction statistics: loss, duplicates, reordering, jitter (RFC 3550) and MOS (G.107).

:class:`ReceiveStatistics` follows RFC 3550 Appendix A.1 (sequence tracking with a 16-bit
wrap and resynchronisation after a large jump), A.3 (expected and lost packets) and A.8
(interarrival jitter). Unlike A.3 it does not count duplicates as received, so loss is never
negative; duplicates are counted on their own. A bitmap of the last :data:`WINDOW` sequence
numbers tells a duplicate from a late (reordered) packet in O(1).

The jitter estimate takes only packets that say something about the audio clock, as pjmedia's
``pjmedia_rtcp_rx_rtp2()`` (pjmedia/src/pjmedia/rtcp.c) does: not a packet whose timestamp
equals the previous packet's (RFC 4733 events repeat theirs; pjmedia: "only when the timestamp
is different than the last packet"), not the first :data:`IGNORE_FIRST_PACKETS` (pjmedia's
``PJMEDIA_RTCP_IGNORE_FIRST_PACKETS``: call set-up delays them), and, beyond pjmedia, not a
packet the caller marks as on another timeline (``jitter_sample=False``: telephone-events,
whose timestamps Asterisk starts at 192 while its audio is near 2**32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: RFC 3550 A.1 constants.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
#: How many recent sequence numbers the duplicate detector remembers.
WINDOW = 1024
#: Packets that only set the transit time before jitter is estimated (pjmedia's
#: PJMEDIA_RTCP_IGNORE_FIRST_PACKETS, default 25): the first ones arrive while the call is
#: still being set up, and their delays would weigh on the estimate for seconds.
IGNORE_FIRST_PACKETS = 25
_WINDOW_MASK = (1 << WINDOW) - 1
_SEQ_MOD = 1 << 16


class SendStatistics:
    """What one stream sent."""

    __slots__ = ("octets_sent", "packets_sent", "rtcp_sent")

    def __init__(self) -> None:
        #: RTP packets sent.
        self.packets_sent = 0
        #: RTP payload octets sent (RFC 3550 6.4.1 sender's octet count).
        self.octets_sent = 0
        #: RTCP compound packets sent (each has an SR or an RR).
        self.rtcp_sent = 0


class ReceiveStatistics:
    """What one stream received from one remote SSRC."""

    __slots__ = (
        "_bad_seq",
        "_expected_prior",
        "_jitter_wait",
        "_last_ts",
        "_received_prior",
        "_seen",
        "_transit",
        "_window",
        "base_seq",
        "clock_rate",
        "cycles",
        "duplicates",
        "jitter_units",
        "max_seq",
        "octets_received",
        "packets_received",
        "reordered",
        "resyncs",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        #: Unique RTP packets received (duplicates not included).
        self.packets_received = 0
        #: Payload octets of those packets.
        self.octets_received = 0
        #: Packets received a second time (or more).
        self.duplicates = 0
        #: Packets that arrived after one with a higher sequence number.
        self.reordered = 0
        #: Times the sequence was restarted after a jump larger than MAX_DROPOUT.
        self.resyncs = 0
        #: RFC 3550 interarrival jitter, in RTP clock units (float; RTCP carries it truncated).
        self.jitter_units = 0.0
        #: Extended sequence number of the first packet (lowered if an earlier one arrives late).
        self.base_seq = 0
        self._seen = False
        self.max_seq = 0
        self.cycles = 0
        self._bad_seq = -1
        self._window = 0
        self._transit: float | None = None
        self._jitter_wait = IGNORE_FIRST_PACKETS
        self._last_ts = -1
        self._expected_prior = 0
        self._received_prior = 0

    def on_packet(
        self, seq: int, timestamp: int, now: float, size: int = 0, *, jitter_sample: bool = True
    ) -> bool:
        """Account for one packet; return False if it is a duplicate or not (yet) accepted.

        ``jitter_sample=False`` counts the packet but keeps it out of the jitter estimate (a
        packet whose timestamps run on another timeline, such as RFC 4733 events).
        """
        if not self._seen:
            self._init_seq(seq)
        else:
            udelta = (seq - self.max_seq) & 0xFFFF
            if 0 < udelta < MAX_DROPOUT:
                # In order, perhaps with a gap (RFC 3550 A.1).
                if seq < self.max_seq:
                    self.cycles += _SEQ_MOD
                self.max_seq = seq
                self._window = ((self._window << udelta) | 1) & _WINDOW_MASK
            elif udelta == 0 or udelta > _SEQ_MOD - MAX_MISORDER:
                # Duplicate or late: look it up in the window.
                offset = (self.max_seq - seq) & 0xFFFF
                if offset < WINDOW:
                    bit = 1 << offset
                    if self._window & bit:
                        self.duplicates += 1
                        return False
                    self._window |= bit
                self.reordered += 1
                # A packet from before the first one seen widens what was expected.
                extended = self.cycles + self.max_seq - offset
                self.base_seq = min(self.base_seq, extended)
            elif seq == self._bad_seq:
                # Two sequential packets after a big jump: the source restarted (A.1).
                self.resyncs += 1
                self._init_seq(seq)
                self._expected_prior = 0
                self._received_prior = 0
                self.packets_received = 0
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
        self.packets_received += 1
        self.octets_received += size
        last_ts = self._last_ts
        self._last_ts = timestamp
        if not jitter_sample or timestamp == last_ts:
            # Another timeline, or the same instant again (an event's update, its repeated
            # end): neither tells how the audio clock and the arrivals drift apart.
            return True
        # RFC 3550 A.8: jitter from the change in relative transit time.
        transit = now * self.clock_rate - timestamp
        last = self._transit
        self._transit = transit
        if self._jitter_wait:
            self._jitter_wait -= 1
        elif last is not None:
            d = transit - last
            if d < 0:
                d = -d
            if d > 0x80000000:  # the RTP timestamp wrapped
                d = abs(d - 0x100000000)
            self.jitter_units += (d - self.jitter_units) / 16
        return True

    def _init_seq(self, seq: int) -> None:
        self._seen = True
        self.base_seq = seq
        self.max_seq = seq
        self.cycles = 0
        self._bad_seq = -1
        self._window = 1
        self._transit = None
        self._jitter_wait = IGNORE_FIRST_PACKETS

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number received, extended by the wrap count."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected from the first to the highest received (RFC 3550 A.3)."""
        if not self._seen:
            return 0
        return self.extended_max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Packets expected and never received."""
        return max(0, self.expected - self.packets_received)

    @property
    def loss_fraction(self) -> float:
        """Lost over expected, 0.0 when nothing is expected."""
        expected = self.expected
        return self.lost / expected if expected else 0.0

    @property
    def jitter(self) -> float:
        """Interarrival jitter in seconds."""
        return self.jitter_units / self.clock_rate

    def fraction_lost_since_last_report(self) -> int:
        """RFC 3550 A.3 fraction lost in the interval, as the 8-bit fixed-point field; resets."""
        expected = self.expected
        interval_expected = expected - self._expected_prior
        interval_received = self.packets_received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.packets_received
        lost = interval_expected - interval_received
        if interval_expected <= 0 or lost <= 0:
            return 0
        return min(255, (lost << 8) // interval_expected)


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteReport:
    """What the peer last told us, in an RTCP report block, about the packets we send."""

    #: Fraction of our packets lost in its last interval, 0.0-1.0.
    fraction_lost: float
    #: Cumulative packets of ours it never received.
    packets_lost: int
    #: Its interarrival jitter for our packets, in seconds.
    jitter: float
    #: Round-trip time from LSR/DLSR (RFC 3550 6.4.1), in seconds, if it could be computed.
    rtt: float | None
    #: When (on the stream's clock) the report arrived.
    at: float


# ITU-T G.113 Appendix I: equipment impairment Ie and packet-loss robustness Bpl.
# G.711 with packet-loss concealment: Ie = 0, Bpl = 25.1. G.722 is a wideband codec that the
# narrowband E-model of G.107 does not rate; we give it the G.711 values (see
# docs/media-engine.md), so its MOS is on the narrowband scale.
EMODEL_CODEC_IMPAIRMENT: dict[str, tuple[float, float]] = {
    "PCMU": (0.0, 25.1),
    "PCMA": (0.0, 25.1),
    "G722": (0.0, 25.1),
}
#: G.107 default basic signal-to-noise ratio minus simultaneous impairment (R0 - Is).
R_DEFAULT = 93.2


def delay_impairment(one_way_delay: float) -> float:
    """G.107 Idd for an absolute one-way delay ``Ta`` in seconds (0 up to 100 ms)."""
    ta_ms = one_way_delay * 1000
    if ta_ms <= 100:
        return 0.0
    x = math.log2(ta_ms / 100) / 1.0
    return float(25 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2))


def r_factor(
    codec_name: str, *, loss_fraction: float, one_way_delay: float, burst_ratio: float = 1.0
) -> float:
    """G.107 transmission rating R with default parameters: ``93.2 - Idd - Ie,eff``."""
    ie, bpl = EMODEL_CODEC_IMPAIRMENT.get(codec_name.upper(), (0.0, 25.1))
    ppl = min(max(loss_fraction, 0.0), 1.0) * 100
    ie_eff = ie + (95 - ie) * ppl / (ppl / burst_ratio + bpl)
    return R_DEFAULT - delay_impairment(one_way_delay) - ie_eff


def mos_from_r(r: float) -> float:
    """G.107 Annex B: the estimated MOS (conversational quality) for a rating R."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def estimate_mos(
    codec_name: str, *, loss_fraction: float, jitter: float, rtt: float | None, ptime: float
) -> float:
    """MOS for what a listener hears: loss as measured, and a one-way delay made of half the
    RTCP round trip (0 if unknown), the packetisation time and a jitter buffer of twice the
    jitter (at least one packet)."""
    one_way = (rtt or 0.0) / 2 + ptime + max(2 * jitter, ptime)
    return mos_from_r(r_factor(codec_name, loss_fraction=loss_fraction, one_way_delay=one_way))
