"""The lab's connection policy alone, with a fake clock: caps, deadlines, the buffered-bytes
budget, rate-limited warnings (issue #10)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.lab.limits import ConnectionGuard, LabLimits, LimitsError, WarningThrottle


def test_defaults_let_a_fleet_of_2000_on_one_address_connect_and_stay() -> None:
    guard = ConnectionGuard(LabLimits())
    for n in range(2000):
        assert guard.admit(n, "127.0.0.1", n / 1000, tls=True).admitted
        guard.handshake_done(n, n / 1000 + 0.01)
        guard.message(n, n / 1000 + 0.02)
    assert guard.handle_timer(400.0, exempt=lambda _c: True) == []
    assert len(guard) == 2000 and guard.from_source("127.0.0.1") == 2000


def test_per_source_cap_makes_room_by_closing_the_oldest_silent_connection() -> None:
    guard = ConnectionGuard(LabLimits(max_connections_per_source=3))
    for n in range(3):
        assert guard.admit(n, "10.0.0.1", float(n), tls=False).admitted
    guard.message(0, 3.0)  # 0 spoke: it is not a candidate
    admission = guard.admit(3, "10.0.0.1", 4.0, tls=False)
    assert admission.admitted and [e.conn_id for e in admission.evict] == [1]
    assert admission.evict[0].kind == "per-source"
    assert guard.admit(4, "10.0.0.2", 4.0, tls=False).admitted  # another source is not counted
    for n in (2, 3):
        guard.message(n, 5.0)
    refused = guard.admit(5, "10.0.0.1", 6.0, tls=False)
    assert not refused.admitted and refused.refusal is not None
    assert "max_connections_per_source" in refused.refusal.reason
    assert guard.stats["per-source"] == 2


def test_total_cap_evicts_the_oldest_silent_then_refuses() -> None:
    guard = ConnectionGuard(LabLimits(max_connections=10), capacity=2)
    assert guard.capacity == 2
    assert guard.admit(1, "a", 0.0, tls=False).admitted
    assert guard.admit(2, "b", 1.0, tls=False).admitted
    admission = guard.admit(3, "c", 2.0, tls=False)
    assert [e.conn_id for e in admission.evict] == [1]
    guard.message(2, 3.0)
    guard.message(3, 3.0)
    assert not guard.admit(4, "d", 4.0, tls=False).admitted


def test_deadlines_handshake_first_message_and_idle() -> None:
    limits = LabLimits(handshake_timeout=1.0, first_message_timeout=2.0, idle_timeout=10.0)
    guard = ConnectionGuard(limits)
    guard.admit(1, "a", 0.0, tls=True)   # never finishes its handshake
    guard.admit(2, "a", 0.0, tls=True)   # finishes it, then sends nothing whole
    guard.admit(3, "a", 0.0, tls=False)  # drips bytes
    guard.admit(4, "a", 0.0, tls=False)  # a phone
    guard.admit(5, "a", 0.0, tls=False)  # speaks once, then idles
    guard.handshake_done(2, 0.5)
    assert guard.buffered_bytes(3, 1, 1.0) == []  # bytes do not reset anything
    guard.message(4, 1.0)
    guard.message(5, 1.0)
    assert [(e.conn_id, e.kind) for e in guard.handle_timer(1.0)] == [(1, "handshake")]
    assert [(e.conn_id, e.kind) for e in guard.handle_timer(2.6)] == [
        (3, "first-message"), (2, "first-message")]
    assert guard.buffered == 0
    evicted = guard.handle_timer(12.0, exempt=lambda c: c == 4)
    assert [(e.conn_id, e.kind) for e in evicted] == [(5, "idle")]
    assert len(guard) == 1 and guard.get_timer() is not None


def test_budget_closes_the_connections_that_held_bytes_longest() -> None:
    guard = ConnectionGuard(LabLimits(max_buffered_bytes=1000))
    for n in range(4):
        guard.admit(n, "a", 0.0, tls=False)
    assert guard.buffered_bytes(0, 300, 1.0) == []
    assert guard.buffered_bytes(1, 300, 2.0) == []
    assert guard.buffered_bytes(2, 300, 3.0) == []
    assert guard.buffered_bytes(0, 350, 3.5) == []  # more bytes, same message: still oldest
    evicted = guard.buffered_bytes(3, 300, 4.0)
    assert [(e.conn_id, e.kind) for e in evicted] == [(0, "budget")]
    assert "held 350 for 3.0 s" in evicted[0].reason
    assert guard.buffered == 900
    guard.message(1, 5.0)
    guard.buffered_bytes(1, 0, 5.0)
    assert guard.buffered == 600
    # 1 starts a new message: it is now the newest holder, and 2 the oldest.
    assert [e.conn_id for e in guard.buffered_bytes(1, 500, 6.0)] == [2]
    assert guard.buffered == 800


@given(st.lists(st.tuples(st.sampled_from(["open", "tls", "hs", "msg", "bytes", "close",
                                           "timer"]),
                          st.integers(0, 7), st.integers(0, 600)), max_size=60))
def test_any_sequence_keeps_the_books_straight(ops: list[tuple[str, int, int]]) -> None:
    guard = ConnectionGuard(LabLimits(max_connections=5, max_connections_per_source=3,
                                      max_buffered_bytes=1000, idle_timeout=5.0,
                                      first_message_timeout=2.0, handshake_timeout=1.0))
    now = 0.0
    open_: dict[int, int] = {}
    for op, conn, value in ops:
        now += 0.5
        source = f"s{conn % 2}"
        closed: list[int] = []
        if op in ("open", "tls") and conn not in open_:
            admission = guard.admit(conn, source, now, tls=op == "tls")
            closed = [e.conn_id for e in admission.evict]
            if admission.admitted:
                open_[conn] = 0
        elif op == "hs":
            guard.handshake_done(conn, now)
        elif op == "msg":
            guard.message(conn, now)
        elif op == "bytes" and conn in open_:
            closed = [e.conn_id for e in guard.buffered_bytes(conn, value, now)]
            open_[conn] = value
        elif op == "close" and conn in open_:
            guard.closed(conn)
            closed = [conn]
        elif op == "timer":
            now += value / 100
            closed = [e.conn_id for e in guard.handle_timer(now)]
        for gone in closed:
            open_.pop(gone, None)
        assert len(guard) == len(open_) <= 5
        assert guard.buffered == sum(open_.values()) <= 1000 + 600
        for s in ("s0", "s1"):
            assert guard.from_source(s) == sum(1 for c in open_ if f"s{c % 2}" == s) <= 3


def test_bad_limits_are_named() -> None:
    with pytest.raises(LimitsError, match="max_connections"):
        LabLimits(max_connections=0)
    with pytest.raises(LimitsError, match="first_message_timeout"):
        LabLimits(first_message_timeout=0)
    with pytest.raises(LimitsError, match="idle_timeout"):
        LabLimits(idle_timeout=-1)
    assert LabLimits(max_write_buffer=1000).write_pause_bytes == 250


def test_warning_throttle_one_line_then_a_count_per_interval() -> None:
    throttle = WarningThrottle(10.0)
    assert throttle.allow("tls", 0.0)
    assert not any(throttle.allow("tls", 0.001 * n) for n in range(1, 2000))
    assert throttle.allow("idle", 1.0)  # another kind is its own
    assert throttle.get_timer() == 10.0
    assert throttle.due(9.0) == []
    assert throttle.due(10.0) == [("tls", 1999)]
    # The flood goes on: counted again, one summary per interval.
    assert not throttle.allow("tls", 11.0)
    assert throttle.due(20.0) == [("tls", 1)]
    assert throttle.due(30.0) == []
    assert throttle.get_timer() is None
    assert throttle.allow("tls", 31.0)  # after a quiet interval, the next one is logged
