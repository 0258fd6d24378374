"""Free loopback ports (phone_sim.testing.aio_ports): free for TCP and UDP, never handed out
twice."""

from __future__ import annotations

import socket

from phone_sim.testing.aio_ports import (
    _ephemeral_low,
    free_port,
    free_port_pair,
    free_port_run,
    free_ports,
    release_ports,
)


def _bind_both(port: int) -> None:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", port))


def test_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    for port in ports:
        _bind_both(port)


def test_a_port_in_use_is_not_handed_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        assert taken not in free_ports(50)


def test_runs_and_pairs_are_consecutive_and_free() -> None:
    start = free_port_run(3)
    for port in range(start, start + 3):
        _bind_both(port)
    pair = free_port_pair()
    assert pair % 2 == 0
    _bind_both(pair)
    _bind_both(pair + 1)
    assert free_port() not in {start, start + 1, start + 2, pair, pair + 1}


def test_a_long_udp_run_is_found_below_the_ephemeral_range() -> None:
    runs = [free_port_run(128, even=True, udp_only=True) for _ in range(20)]
    try:
        assert all(r % 2 == 0 and r >= 10000 and r + 128 <= _ephemeral_low() for r in runs)
        assert len({p for r in runs for p in range(r, r + 128)}) == 20 * 128  # never twice
    finally:
        for r in runs:
            release_ports(range(r, r + 128))


def test_released_ports_can_be_handed_out_again() -> None:
    port = free_port()
    release_ports([port])
    from phone_sim.testing import aio_ports

    assert port not in aio_ports._handed_out
