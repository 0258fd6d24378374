"""The access network's damage to a phone's uplink media, sans-I/O and seeded.

:class:`ImpairmentCore` takes each packet with ``now`` and says when it leaves (or that it
is lost); ``aio_impair`` holds the packets and the socket. Loss is a Bernoulli draw per
packet, jitter an extra delay uniform in ``[0, jitter_ms]`` that never lets a packet overtake
the one before it (a queue does not reorder), and reordering holds a packet back until the
next one has gone, as a router with two paths would.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

__all__ = ["ImpairmentCore", "ImpairmentSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImpairmentSettings:
    """What the network does to the packets."""

    loss: float = 0.0
    """Share of packets lost, 0-1."""
    jitter: float = 0.0
    """Largest extra delay, in seconds."""
    reorder: float = 0.0
    """Share of packets delivered after the next one, 0-1."""
    seed: str = "0"
    """Seeds the draws (the same seed drops the same packets)."""


class ImpairmentCore:
    """Decides the fate of each packet of one flow; holds them until they are due."""

    def __init__(self, settings: ImpairmentSettings) -> None:
        self.settings = settings
        self._random = random.Random(settings.seed)
        self._queue: list[tuple[float, int, bytes]] = []
        self._held: bytes | None = None
        self._last_due = 0.0
        self._seq = 0
        #: Packets offered and dropped (the loss the far end should measure).
        self.offered = 0
        self.dropped = 0
        self.reordered = 0

    def send(self, packet: bytes, now: float) -> None:
        """A packet left the phone at *now*."""
        self.offered += 1
        s = self.settings
        if s.loss and self._random.random() < s.loss:
            self.dropped += 1
            return
        if s.reorder and self._held is None and self._random.random() < s.reorder:
            self._held = packet  # goes out right after the next packet
            self.reordered += 1
            return
        delay = self._random.uniform(0.0, s.jitter) if s.jitter else 0.0
        due = max(now + delay, self._last_due)
        self._last_due = due
        self._push(due, packet)
        if self._held is not None:
            self._push(due, self._held)
            self._held = None

    def _push(self, due: float, packet: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (due, self._seq, packet))

    def get_timer(self) -> float | None:
        """When the next packet is due (None: nothing waiting)."""
        return self._queue[0][0] if self._queue else None

    def due(self, now: float) -> list[bytes]:
        """The packets due by *now*, in order."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        return out
