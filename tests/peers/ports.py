"""Free loopback ports for test peers.

A port is free when nothing on 127.0.0.1 holds it for TCP *and* UDP, because SIP peers
usually listen on both with the same number. Ports handed out in this process are remembered
so that two peers started in the same test never get the same one, even before they bind.
"""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

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
    raise RuntimeError("no free TCP+UDP port on 127.0.0.1 after 200 tries")


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct ports from :func:`free_port`."""
    return [free_port() for _ in range(count)]


def free_port_pair() -> int:
    """Return an even port ``p`` with ``p`` and ``p + 1`` free for UDP (RTP and RTCP)."""
    with _lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((LOOPBACK, 0))
                port: int = probe.getsockname()[1] & ~1
            if port < 1024 or {port, port + 1} & _handed_out:
                continue
            if _bindable(port, socket.SOCK_DGRAM) and _bindable(port + 1, socket.SOCK_DGRAM):
                _handed_out.update((port, port + 1))
                return port
    raise RuntimeError("no free even UDP port pair on 127.0.0.1 after 200 tries")
