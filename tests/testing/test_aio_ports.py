"""Free loopback ports (phone_sim.testing.aio_ports)."""

from __future__ import annotations

from phone_sim.testing.aio_ports import _ephemeral_low, free_port, free_port_run, release_ports


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
