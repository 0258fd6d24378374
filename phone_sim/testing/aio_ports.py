"""Free loopback ports for test peers and servers.

A port is free when nothing on 127.0.0.1 holds it for TCP *and* UDP, because SIP peers
usually listen on both with the same number. Ports handed out in this process are remembered
so that two peers started in the same test never get the same one, even before they bind.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterable
from pathlib import Path

from phone_sim.errors import PhoneSimError

__all__ = ["LOOPBACK", "PortsExhausted", "free_port", "free_port_pair", "free_port_run",
           "free_ports", "release_ports"]

LOOPBACK = "127.0.0.1"
# Runs of ports are looked for from here up to the ephemeral range (free_port_run).
_LOW = 10000


class PortsExhausted(PhoneSimError):
    """No free port (or run of ports) could be found on the loopback."""

_lock = threading.Lock()
_handed_out: set[int] = set()


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """Return a port on 127.0.0.1 that is free for both TCP and UDP right now."""
    with _lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((LOOPBACK, 0))
                port: int = probe.getsockname()[1]
            if port in _handed_out:
                continue
            if _bindable(port, socket.SOCK_DGRAM) and _bindable(port, socket.SOCK_STREAM):
                _handed_out.add(port)
                return port
    raise PortsExhausted("no free TCP+UDP port on 127.0.0.1 after 200 tries")


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct ports from :func:`free_port`."""
    return [free_port() for _ in range(count)]


def _ephemeral_low() -> int:
    """The first port the kernel hands out by itself (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_run(count: int, *, even: bool = False, udp_only: bool = False) -> int:
    """Return ``p`` with ``p .. p+count-1`` all free for TCP and UDP (``even``: p is even;
    ``udp_only``: UDP is enough, as for an RTP range).

    baresip listens for TLS on its SIP port + 1, and RTP/RTCP take a port and the next one.
    A run is looked for first below the kernel's ephemeral range (from 10000), where no
    connection takes a port by itself: on a busy machine, outgoing connections and their
    TIME_WAIT leave few long runs free inside the ephemeral range.
    """
    kinds = (socket.SOCK_DGRAM,) if udp_only else (socket.SOCK_DGRAM, socket.SOCK_STREAM)
    below = _ephemeral_low() - count
    with _lock:
        for attempt in range(400):
            if attempt < 200 and below > _LOW:
                port = random.randrange(_LOW, below)
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind((LOOPBACK, 0))
                    port = probe.getsockname()[1]
            if even:
                port &= ~1
            run = set(range(port, port + count))
            if port < 1024 or port + count > 65535 or run & _handed_out:
                continue
            if all(_bindable(p, kind) for p in run for kind in kinds):
                _handed_out.update(run)
                return port
    raise PortsExhausted(f"no run of {count} free ports on 127.0.0.1 after 400 tries")


def free_port_pair() -> int:
    """Return an even port ``p`` with ``p`` and ``p + 1`` free (RTP and RTCP)."""
    return free_port_run(2, even=True)


def release_ports(ports: Iterable[int]) -> None:
    """Forget that ``ports`` were handed out (their server has stopped), so that a long test
    session that starts many servers does not run out of runs of free ports."""
    with _lock:
        _handed_out.difference_update(ports)
