"""The shared pacer: one heap, staggered start times, lateness measured."""

from __future__ import annotations

import heapq
import itertools
import random

import pytest

from phone_sim.media.pacing import Pacer, PacerError, van_der_corput
from phone_sim.media.stream import MediaStream


def stream(seed: int) -> MediaStream:
    return MediaStream(codec="PCMU", rng=random.Random(seed), rtcp_interval=1000.0)


def test_van_der_corput_spreads_evenly() -> None:
    assert [van_der_corput(i) for i in range(8)] == [0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375,
                                                     0.875]
    firsts = sorted(van_der_corput(i) for i in range(64))
    assert firsts == [i / 64 for i in range(64)]


def test_streams_added_together_are_staggered_within_the_tick() -> None:
    pacer: Pacer[int] = Pacer(tick=0.02)
    firsts = [pacer.add(i, stream(i), 10.001) for i in range(20)]
    assert all(10.001 <= f < 10.001 + 0.02 + 1e-9 for f in firsts)
    gaps = sorted(firsts)
    assert min(b - a for a, b in itertools.pairwise(gaps)) > 0.0005
    assert len(pacer) == 20


def test_poll_serves_each_stream_once_per_ptime_and_measures_lateness() -> None:
    pacer: Pacer[int] = Pacer(tick=0.02, slack=0.0)
    streams = [stream(i) for i in range(10)]
    for i, s in enumerate(streams):
        pacer.add(i, s, 0.0)
    sent = dict.fromkeys(range(10), 0)
    now = 0.0
    polls = 0
    while now < 1.0:
        at = pacer.get_timer()
        assert at is not None
        now = at + 0.001  # every poll is 1 ms late
        for key, rtp, rtcp in pacer.poll(now):
            sent[key] += len(rtp)
            assert rtcp == []
        polls += 1
    assert all(49 <= n <= 51 for n in sent.values())
    assert pacer.lateness_percentile(0.99) == pytest.approx(0.0011, abs=0.0002)
    assert pacer.max_lateness == pytest.approx(0.001, abs=1e-6)
    assert polls < 600  # one poll serves every stream due at the same instant


def test_removed_streams_are_not_served_and_wake_moves_a_deadline_earlier() -> None:
    pacer: Pacer[str] = Pacer()
    a, b = stream(1), stream(2)
    pacer.add("a", a, 0.0)
    pacer.add("b", b, 0.0)
    assert pacer.remove("a") is a
    served = {k for k, _, _ in pacer.poll(0.05)}
    assert served == {"b"}
    b.update(0.05, direction="inactive")
    pacer.poll(0.1)  # b now has only its RTCP deadline, far away
    b.update(0.1, direction="sendrecv")
    pacer.wake("b")
    assert pacer.get_timer() == pytest.approx(0.1)
    assert [len(rtp) for _, rtp, _ in pacer.poll(0.1)] == [1]
    with pytest.raises(PacerError, match="not paced"):
        pacer.wake("zzz")
    with pytest.raises(PacerError, match="already paced"):
        pacer.add("b", b, 0.2)


def test_bad_tick() -> None:
    with pytest.raises(PacerError, match="tick"):
        Pacer(tick=0)
    with pytest.raises(PacerError, match="slack"):
        Pacer(tick=0.02, slack=0.05)


def test_lateness_reset_and_empty() -> None:
    pacer: Pacer[int] = Pacer()
    assert pacer.get_timer() is None
    assert pacer.poll(1.0) == []
    assert pacer.lateness_percentile(0.99) == 0.0
    pacer.reset_lateness()
    assert pacer.packets == 0


def _paced_call(slack: float, transit: float, seconds: float) -> tuple[MediaStream, MediaStream]:
    """Two streams on one pacer and a fake clock: the pacer is polled exactly at its timer,
    as the shell does, and every datagram arrives ``transit`` after it left."""
    a = MediaStream(codec="PCMU", rtcp_interval=0.2, rng=random.Random(1))
    b = MediaStream(codec="PCMU", rtcp_interval=0.2, rng=random.Random(2))
    pacer: Pacer[str] = Pacer(slack=slack)
    pacer.add("a", a, 0.0)
    pacer.add("b", b, 0.0)
    peer = {"a": b, "b": a}
    arrivals: list[tuple[float, int, MediaStream, bytes, bool]] = []
    order = itertools.count()
    while True:
        timer = pacer.get_timer()
        assert timer is not None
        if arrivals and arrivals[0][0] <= timer:
            at, _, stream, data, rtcp = heapq.heappop(arrivals)
            stream.receive_datagram(data, at, rtcp=rtcp)
            continue
        if timer > seconds:
            return a, b
        for key, rtp, rtcp_packets in pacer.poll(timer):
            for data in rtp:
                heapq.heappush(arrivals, (timer + transit, next(order), peer[key], data, False))
            for data in rtcp_packets:
                heapq.heappush(arrivals, (timer + transit, next(order), peer[key], data, True))


def test_rtcp_is_stamped_when_it_leaves_not_at_the_pacer_horizon() -> None:
    """Issue #9: the DLSR of a report the pacer sent up to ``slack`` early was counted to the
    end of the slack, longer than the peer's own clock could have seen (Asterisk: "Internal
    RTCP NTP clock skew detected"). RFC 3550 6.4.1: DLSR runs from the SR's arrival to the
    report's departure, so the round trip comes out as twice the transit."""
    transit = 0.0002
    a, b = _paced_call(slack=0.002, transit=transit, seconds=3.0)
    for stream in (a, b):
        stats = stream.statistics()
        assert stats.rtcp_sr_received >= 5
        assert stats.rtcp_clock_skews == 0
        assert stats.rtt == pytest.approx(2 * transit, abs=2 / 65536)
