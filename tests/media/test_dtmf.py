"""RFC 4733 telephone events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.media.dtmf import (
    END_REPEATS,
    DtmfError,
    DtmfReceiver,
    TelephoneEvent,
    dtmf_packets,
    event_code,
)


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_payload_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    te = TelephoneEvent(event=event, end=end, volume=volume, duration=duration)
    assert TelephoneEvent.parse(bytes(te)) == te


def test_wire_layout_rfc4733_2_3() -> None:
    # Digit 5, end bit, volume 10, duration 800: 05 8a 03 20
    te = TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert bytes(te) == bytes.fromhex("058a0320")
    assert te.digit == "5"
    assert TelephoneEvent(event=16, end=False, volume=0, duration=0).digit is None


def test_codes() -> None:
    assert [event_code(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert event_code("a") == 12
    for bad in ("E", "", "12", "x"):
        with pytest.raises(DtmfError, match="not a DTMF digit"):
            event_code(bad)


def test_packets_of_one_digit() -> None:
    packets = dtmf_packets("7", duration_ms=100, ptime_ms=20)
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    # 20, 40, 60, 80 ms progress packets, then the end (100 ms) three times.
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * END_REPEATS
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {e.event for e in events} == {7}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"duration_ms": 10}, "duration 10 ms"),
    ({"duration_ms": 9000}, "duration 9000 ms"),
    ({"volume": 64}, "volume 64"),
])
def test_bad_parameters(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(DtmfError, match=message):
        dtmf_packets("1", **kwargs)


def feed(receiver: DtmfReceiver, digit: str, ts: int, *, drop: set[int] = frozenset()) -> list[str]:  # type: ignore[assignment]
    out = []
    for i, p in enumerate(dtmf_packets(digit)):
        if i not in drop:
            out += [d.digit for d in receiver.receive(p.payload, ts)]
    return out


def test_receiver_reports_each_digit_once() -> None:
    r = DtmfReceiver()
    assert feed(r, "1", 1000) == ["1"]
    assert feed(r, "1", 5000) == ["1"]  # same digit again, new event
    assert feed(r, "#", 9000) == ["#"]


def test_receiver_recovers_a_digit_whose_ends_were_all_lost() -> None:
    r = DtmfReceiver()
    assert feed(r, "3", 1000, drop={4, 5, 6}) == []
    assert feed(r, "4", 2000) == ["3", "4"]


def test_receiver_counts_malformed() -> None:
    r = DtmfReceiver()
    assert r.receive(b"\x01", 0) == []
    assert r.malformed == 1
    digits = r.receive(bytes(TelephoneEvent(event=2, end=True, volume=0, duration=400)), 7)
    assert digits[0].digit == "2" and digits[0].duration_ms == 50
