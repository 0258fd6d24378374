"""RFC 3550 receive statistics and the G.107 E-model."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.media.stats import (
    IGNORE_FIRST_PACKETS,
    ReceiveStatistics,
    delay_impairment,
    estimate_mos,
    mos_from_r,
    r_factor,
)


def feed(seqs: list[int], start_ts: int = 0) -> ReceiveStatistics:
    s = ReceiveStatistics(8000)
    for i, seq in enumerate(seqs):
        s.on_packet(seq, start_ts + ((seq - seqs[0]) & 0xFFFF) * 160, i * 0.02, 160)
    return s


def test_in_order() -> None:
    s = feed(list(range(100, 200)))
    counts = (s.expected, s.packets_received, s.lost, s.duplicates, s.reordered)
    assert counts == (100, 100, 0, 0, 0)
    assert s.jitter == pytest.approx(0, abs=1e-9)


def test_loss_across_the_sequence_wrap() -> None:
    seqs = [(65500 + i) & 0xFFFF for i in range(100) if i % 10 != 3]
    s = feed(seqs)
    assert s.cycles == 65536
    assert s.expected == 100
    assert s.packets_received == 90
    assert s.lost == 10
    assert s.loss_fraction == pytest.approx(0.1)


def test_duplicates_and_reordering() -> None:
    s = feed([1, 2, 4, 3, 5, 5, 6, 2, 8, 7])
    assert s.duplicates == 2  # the second 5 and the late 2
    assert s.reordered == 2  # 3 and 7
    assert s.lost == 0
    assert s.packets_received == 8


def test_a_late_packet_from_before_the_first_counts_as_expected() -> None:
    s = feed([5, 6, 4, 7])
    assert (s.expected, s.packets_received, s.lost, s.reordered) == (4, 4, 0, 1)
    wrapped = feed([0, 1, 65535, 2])  # late across the wrap
    assert (wrapped.expected, wrapped.lost, wrapped.reordered) == (4, 0, 1)


def test_resync_after_a_restart() -> None:
    s = feed([10, 11, 12])
    assert not s.on_packet(40000, 0, 1.0)  # a big jump: held back
    assert s.on_packet(40001, 160, 1.02)  # the next in sequence: the source restarted
    assert s.resyncs == 1
    assert s.expected == 1 and s.packets_received == 1


def test_jitter_matches_rfc3550_a8_by_hand() -> None:
    s = ReceiveStatistics(8000)
    steady = [i * 0.02 for i in range(IGNORE_FIRST_PACKETS)]  # only set the transit
    n = IGNORE_FIRST_PACKETS
    arrivals = [*steady, n * 0.02, (n + 1) * 0.02 + 0.005, (n + 2) * 0.02]  # one 5 ms late
    for i, at in enumerate(arrivals):
        s.on_packet(i, i * 160, at)
    j = 0.0
    transit = [at * 8000 - i * 160 for i, at in enumerate(arrivals)]
    for a, b in itertools.pairwise(transit[n - 1:]):
        j += (abs(b - a) - j) / 16
    assert j > 0
    assert s.jitter_units == pytest.approx(j)
    assert s.jitter == pytest.approx(j / 8000)


def test_fraction_lost_per_interval() -> None:
    s = feed([i for i in range(100) if i % 4 != 1])
    assert s.fraction_lost_since_last_report() == 64  # 25 of 100 is 64/256
    assert s.fraction_lost_since_last_report() == 0  # nothing new since
    s2 = feed(list(range(50)))
    assert s2.fraction_lost_since_last_report() == 0


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=300))
def test_never_negative_and_never_raises(seqs: list[int]) -> None:
    s = ReceiveStatistics(8000)
    for i, seq in enumerate(seqs):
        s.on_packet(seq, random.getrandbits(32), i * 0.02)
    assert s.lost >= 0
    assert 0.0 <= s.loss_fraction <= 1.0
    assert 0 <= s.fraction_lost_since_last_report() <= 255


def test_emodel_reference_points() -> None:
    # G.107 defaults: R = 93.2 with no impairment, MOS 4.41.
    assert r_factor("PCMU", loss_fraction=0.0, one_way_delay=0.0) == pytest.approx(93.2)
    assert mos_from_r(93.2) == pytest.approx(4.41, abs=0.01)
    assert mos_from_r(-5) == 1.0 and mos_from_r(120) == 4.5
    # G.113 Bpl 25.1 for G.711 with PLC: 1% random loss costs 95*1/(1+25.1) = 3.64.
    r = r_factor("PCMA", loss_fraction=0.01, one_way_delay=0.0)
    assert r == pytest.approx(93.2 - 3.64, abs=0.01)
    assert delay_impairment(0.1) == 0.0
    assert delay_impairment(0.2) > 0
    assert delay_impairment(0.4) > delay_impairment(0.2)


def test_mos_falls_with_loss_delay_and_jitter() -> None:
    base = estimate_mos("PCMU", loss_fraction=0.0, jitter=0.0, rtt=0.0, ptime=0.02)
    assert base > 4.3
    assert estimate_mos("PCMU", loss_fraction=0.05, jitter=0.0, rtt=0.0, ptime=0.02) < base - 0.4
    assert estimate_mos("PCMU", loss_fraction=0.0, jitter=0.0, rtt=0.6, ptime=0.02) < base - 0.3
    assert estimate_mos("PCMU", loss_fraction=0.0, jitter=0.1, rtt=0.0, ptime=0.02) < base


def _reference_jitter(samples: list[tuple[int, float]], *, ignore_first: int) -> float:
    """RFC 3550 A.8 over ``(timestamp, arrival)`` pairs, after ``ignore_first`` packets only
    set the transit (pjmedia's PJMEDIA_RTCP_IGNORE_FIRST_PACKETS), in clock units."""
    jitter, last = 0.0, None
    for i, (ts, at) in enumerate(samples):
        transit = at * 8000 - ts
        if last is not None and i >= ignore_first:
            jitter += (abs(transit - last) - jitter) / 16
        last = transit
    return jitter


def test_the_first_packets_do_not_enter_the_jitter_estimate() -> None:
    # Call set-up delays the first packets (pjmedia: PJMEDIA_RTCP_IGNORE_FIRST_PACKETS = 25).
    s = ReceiveStatistics(8000)
    rng = random.Random(5)
    samples = [(i * 160, i * 0.02 + rng.uniform(0, 0.08)) for i in range(IGNORE_FIRST_PACKETS)]
    samples += [(i * 160, i * 0.02) for i in range(IGNORE_FIRST_PACKETS, 200)]
    for i, (ts, at) in enumerate(samples):
        s.on_packet(i, ts, at)
        if i < IGNORE_FIRST_PACKETS:
            assert s.jitter_units == 0.0
    # Only the step from the last wild packet to the first steady one is left, decayed.
    reference = _reference_jitter(samples, ignore_first=IGNORE_FIRST_PACKETS)
    assert s.jitter_units == pytest.approx(reference)
    assert s.jitter < 0.0001


def test_a_packet_with_the_previous_timestamp_is_not_a_jitter_sample() -> None:
    s = ReceiveStatistics(8000)
    seq = 0
    for i in range(60):
        s.on_packet(seq, i * 160, i * 0.02)
        seq += 1
        if i >= 40:
            # Same timestamp again 10 ms later (RFC 4733 event updates, video frames...).
            s.on_packet(seq, i * 160, i * 0.02 + 0.01)
            seq += 1
    assert s.jitter_units == pytest.approx(0, abs=1e-9)
    assert s.packets_received == seq


def test_a_packet_on_another_timeline_is_counted_but_not_a_jitter_sample() -> None:
    s = ReceiveStatistics(8000)
    for i in range(60):
        s.on_packet(i, 4_095_395_656 + i * 160, i * 0.02)
    s.on_packet(60, 192, 60 * 0.02, jitter_sample=False)
    s.on_packet(61, 4_095_395_656 + 62 * 160, 62 * 0.02)
    assert s.packets_received == 62 and s.lost == 0
    assert s.jitter_units == 0.0
