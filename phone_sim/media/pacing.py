"""The shared pacer: many media streams on one timer, their sends staggered within the tick.

One task per stream would cost a timer and a wake-up per packet per stream. Instead every
stream's next deadline sits in one heap; the adapter keeps a single ``loop.call_at()`` armed at
:meth:`Pacer.get_timer` and calls :meth:`Pacer.poll` when it fires. Streams added together are
spread evenly over the tick (a van der Corput sequence: 0, 1/2, 1/4, 3/4, 1/8...), so a
thousand calls started at once do not all send in the same millisecond.

The pacer also measures send lateness (how long after its deadline each packet went out),
which the benchmark reports as p99.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable
from typing import Generic, TypeVar

from phone_sim.errors import UsageError
from phone_sim.media.stream import MediaStream

K = TypeVar("K", bound=Hashable)

#: Lateness histogram resolution and range.
LATENESS_BUCKET = 0.0001
LATENESS_BUCKETS = 10_000  # 1 s; anything later lands in the last bucket
_EMPTY: list[bytes] = []
_INF = math.inf


class PacerError(UsageError):
    """The pacer was asked something impossible (unknown or duplicate stream)."""


def van_der_corput(n: int) -> float:
    """The n-th term of the base-2 van der Corput sequence, in [0, 1)."""
    result, denominator = 0.0, 1.0
    while n:
        denominator *= 2
        n, bit = divmod(n, 2)
        result += bit / denominator
    return result


class Pacer(Generic[K]):
    """Deadlines of many streams in one heap; ``poll(now)`` returns what is due."""

    def __init__(self, *, tick: float = 0.020, slack: float = 0.0005) -> None:
        if tick <= 0 or not 0 <= slack < tick:
            raise PacerError(
                f"pacer tick {tick} s must be positive and slack {slack} s in [0, tick)"
            )
        #: The period over which start times are staggered.
        self.tick = tick
        #: Streams due within this much of ``now`` are served in the same poll (sent early).
        self.slack = slack
        self._heap: list[tuple[float, int, K]] = []
        self._scheduled: dict[K, float] = {}
        self._streams: dict[K, MediaStream] = {}
        self._counter = itertools.count()
        self._added = 0
        self._histogram = [0] * LATENESS_BUCKETS
        #: Packets sent through the pacer, and the latest any went out after its deadline.
        self.packets = 0
        self.max_lateness = 0.0

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, key: K, stream: MediaStream, now: float) -> float:
        """Pace ``stream`` (starting it if needed); return its first send time."""
        if key in self._streams:
            raise PacerError(f"stream {key!r} is already paced")
        offset = van_der_corput(self._added) * self.tick
        self._added += 1
        first = (math.floor(now / self.tick) + 1) * self.tick + offset
        if first - self.tick >= now:
            first -= self.tick
        self._streams[key] = stream
        if not stream.started:
            stream.start(now, first_send_at=first)
        self._schedule(key, stream.get_timer())
        return first

    def remove(self, key: K) -> MediaStream | None:
        """Stop pacing a stream; its heap entry is dropped lazily."""
        self._scheduled.pop(key, None)
        return self._streams.pop(key, None)

    def wake(self, key: K) -> None:
        """Re-read a stream's deadline after it moved earlier (direction change, DTMF)."""
        stream = self._streams.get(key)
        if stream is None:
            raise PacerError(f"stream {key!r} is not paced")
        at = stream.get_timer()
        if at < self._scheduled.get(key, _INF):
            self._schedule(key, at)

    def _schedule(self, key: K, at: float) -> None:
        self._scheduled[key] = at
        if at < _INF:
            heapq.heappush(self._heap, (at, next(self._counter), key))

    def get_timer(self) -> float | None:
        """When :meth:`poll` should next be called, or ``None`` if nothing is scheduled."""
        heap = self._heap
        scheduled = self._scheduled
        while heap:
            at, _, key = heap[0]
            if scheduled.get(key) == at:
                return at
            heapq.heappop(heap)  # stale: the stream was removed or rescheduled
        return None

    def poll(self, now: float) -> list[tuple[K, list[bytes], list[bytes]]]:
        """Every stream due by ``now + slack``: ``(key, rtp_packets, rtcp_packets)``."""
        heap = self._heap
        scheduled = self._scheduled
        streams = self._streams
        histogram = self._histogram
        horizon = now + self.slack
        heappop = heapq.heappop
        heappush = heapq.heappush
        counter = self._counter
        out: list[tuple[K, list[bytes], list[bytes]]] = []
        while heap and heap[0][0] <= horizon:
            at, _, key = heappop(heap)
            if scheduled.get(key) != at:
                continue
            stream = streams[key]
            send_at = stream.next_send_at
            if send_at <= horizon:
                rtp = stream.packets_to_send(horizon)
                late = now - send_at
                if late > 0:
                    bucket = int(late / LATENESS_BUCKET)
                    histogram[bucket if bucket < LATENESS_BUCKETS else LATENESS_BUCKETS - 1] += 1
                    if late > self.max_lateness:  # noqa: PLR1730 - hot path, no call
                        self.max_lateness = late
                else:
                    histogram[0] += 1
                self.packets += len(rtp)
            else:
                rtp = _EMPTY
            # Stamped with now, when it leaves: its DLSR must not count the slack.
            rtcp = (
                stream.rtcp_to_send(now, due_by=horizon)
                if stream.next_rtcp_at <= horizon
                else _EMPTY
            )
            out.append((key, rtp, rtcp))
            nxt = stream.next_send_at
            if stream.next_rtcp_at < nxt:  # noqa: PLR1730 - hot path, no call
                nxt = stream.next_rtcp_at
            scheduled[key] = nxt
            if nxt < _INF:
                heappush(heap, (nxt, next(counter), key))
        return out

    def lateness_percentile(self, fraction: float) -> float:
        """The send lateness (seconds) below which ``fraction`` of deadlines were served."""
        total = sum(self._histogram)
        if not total:
            return 0.0
        target = fraction * total
        running = 0
        for index, count in enumerate(self._histogram):
            running += count
            if running >= target:
                return (index + 1) * LATENESS_BUCKET if index else 0.0
        return LATENESS_BUCKETS * LATENESS_BUCKET

    def reset_lateness(self) -> None:
        """Forget lateness measured so far (after a warm-up)."""
        self._histogram = [0] * LATENESS_BUCKETS
        self.packets = 0
        self.max_lateness = 0.0
