"""What an access network does to the audio a phone sends: loss, jitter and reordering, seeded,
decided packet by packet without I/O.

:class:`Impairment` is the setting (``MediaOptions.impairment`` of a phone). An
:class:`ImpairmentModel` applies it to one outgoing RTP stream: :meth:`~ImpairmentModel.offer`
decides each packet's fate as it leaves the phone (lost, sent now, or sent at a later time
that the model holds it until), :meth:`~ImpairmentModel.packets_due` hands the held ones back
when their time has come, and :meth:`~ImpairmentModel.get_timer` is the next such time. The
media endpoint (:mod:`phone_sim.media.aio`) drives it from the shared pacing timer.

How the network behaves:

- **Loss**: each packet is lost on its own with probability ``loss_percent`` / 100 (random,
  uncorrelated loss: what the far end's RTP statistics then count).
- **Jitter**: each packet that survives waits a delay drawn uniformly from 0 to ``jitter_ms``,
  but never leaves before the packet ahead of it: the access link is a queue, and a queue
  delays without reordering.
- **Reordering**: ``reorder_percent`` of the packets take a slower path. Each leaves one and a
  half packet intervals plus ``jitter_ms`` after it would have, without holding up the queue,
  so the next packet overtakes it (unless that one takes the slow path too: then the two keep
  their order). Reordering is a consequence of that delay alone.
- **Seed**: every packet draws three numbers (loss, path, delay) in that order from
  ``random.Random(seed)``, whatever is set, so a seed loses the same packets whatever the
  jitter and reordering. Each stream (each call) starts its draws afresh from the seed: a
  phone's calls are damaged alike, and phones with different seeds independently.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

from phone_sim.errors import UsageError

__all__ = ["MAX_JITTER_MS", "Impairment", "ImpairmentError", "ImpairmentModel"]

#: The largest ``jitter_ms`` accepted: a second of delay variation is no call any more.
MAX_JITTER_MS = 1000.0

#: How far a reordered packet falls behind, in packet intervals (more than one: the next
#: packet overtakes it).
REORDER_INTERVALS = 1.5


class ImpairmentError(UsageError):
    """An impairment setting no network could have."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Impairment:
    """An access network between the phone and the far end, damaging the RTP the phone sends
    (not its RTCP: the reports that tell both ends the loss stay intact)."""

    loss_percent: float = 0.0
    """Share of outgoing RTP packets lost, in percent (0-100), each drawn on its own."""
    jitter_ms: float = 0.0
    """Largest extra delay of a packet, in milliseconds (uniform from 0; in order)."""
    reorder_percent: float = 0.0
    """Share of packets on a slower path, overtaken by the next one, in percent (0-100)."""
    seed: int | str = 0
    """Seeds the draws: the same seed loses and delays the same packets of each call."""

    def __post_init__(self) -> None:
        for name in ("loss_percent", "reorder_percent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0.0 <= value <= 100.0
            ):
                raise ImpairmentError(f"impairment {name} {value!r}: give a percentage 0-100")
        jitter = self.jitter_ms
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not (
            0.0 <= jitter <= MAX_JITTER_MS
        ):
            raise ImpairmentError(
                f"impairment jitter_ms {jitter!r}: give milliseconds 0-{MAX_JITTER_MS:g}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | str):
            raise ImpairmentError(f"impairment seed {self.seed!r}: give an integer or a text")

    @property
    def active(self) -> bool:
        """Whether it changes anything (all zero: the packets pass untouched)."""
        return bool(self.loss_percent or self.jitter_ms or self.reorder_percent)


class ImpairmentModel:
    """One outgoing stream through an :class:`Impairment`: decides each packet's fate and holds
    the delayed ones until they are due. *interval* is the stream's packet spacing in seconds
    (its ptime), which a reordered packet falls behind by."""

    __slots__ = ("_held", "_jitter", "_last_due", "_loss", "_random", "_reorder", "_seq",
                 "delayed", "dropped", "impairment", "interval", "offered", "reordered")

    def __init__(self, impairment: Impairment, *, interval: float = 0.020) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ImpairmentError(f"packet interval {interval!r} s must be positive")
        self.impairment = impairment
        #: The stream's packet spacing, in seconds.
        self.interval = interval
        self._random = random.Random(impairment.seed)
        self._loss = impairment.loss_percent / 100.0
        self._reorder = impairment.reorder_percent / 100.0
        self._jitter = impairment.jitter_ms / 1000.0
        self._held: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._last_due = -math.inf
        #: Packets offered, lost, sent later than offered, and sent on the slow path.
        self.offered = 0
        self.dropped = 0
        self.delayed = 0
        self.reordered = 0

    def __repr__(self) -> str:
        return (f"<ImpairmentModel offered={self.offered} dropped={self.dropped} "
                f"delayed={self.delayed} reordered={self.reordered} held={len(self._held)}>")

    @property
    def held(self) -> int:
        """Packets waiting to leave."""
        return len(self._held)

    def decide(self, now: float) -> float | None:
        """The fate of the packet leaving the phone at *now*: None when the network loses it,
        else when it goes on (``now`` or later)."""
        draw = self._random.random
        lost, slow, delay = draw(), draw(), draw() * self._jitter
        self.offered += 1
        if lost < self._loss:
            self.dropped += 1
            return None
        due = now + delay
        if slow < self._reorder:
            # The slow path: later than anything the queue can make the next packet, and
            # without holding the queue up (the next packet overtakes it).
            self.reordered += 1
            due += REORDER_INTERVALS * self.interval + self._jitter
        else:
            due = self._last_due = max(due, self._last_due)  # a queue does not reorder
        if due > now:
            self.delayed += 1
        return due

    def offer(self, packet: bytes, now: float) -> bool:
        """Take *packet* leaving the phone at *now*. True: send it now. False: it is lost, or
        held until :meth:`get_timer` (:meth:`packets_due` gives it back)."""
        due = self.decide(now)
        if due is None:
            return False
        held = self._held
        if due <= now and (not held or held[0][0] > now):
            return True  # nothing due ahead of it: it may overtake only slow-path packets
        self._seq += 1
        heapq.heappush(held, (due, self._seq, packet))
        return False

    def get_timer(self) -> float | None:
        """When the next held packet is due (None: nothing held)."""
        return self._held[0][0] if self._held else None

    def packets_due(self, now: float) -> list[bytes]:
        """The held packets due by *now*, in the order they leave."""
        held = self._held
        out: list[bytes] = []
        while held and held[0][0] <= now:
            out.append(heapq.heappop(held)[2])
        return out

    def clear(self) -> int:
        """Forget the held packets (the stream stopped); how many there were."""
        count = len(self._held)
        self._held.clear()
        return count
