"""What the lab allows a connection, sans-I/O: caps, deadlines, the buffered-bytes budget, and
rate-limited warnings (issue #10, "Resource limits").

The asyncio shell (:mod:`phone_sim.lab.aio`) owns the sockets; the decisions are here, fed with
``now`` like every core of phone-sim:

- :class:`LabLimits` is the configuration (frozen; ``Lab(limits=...)``, ``phone-sim lab
  --max-connections ...``);
- :class:`ConnectionGuard` admits connections (a total cap and a cap per source address; at a
  cap, the oldest connection that has not yet sent a whole SIP message makes room, else the
  newcomer is refused), runs the deadlines (the TLS handshake, the first complete message,
  idleness) from FIFO queues with one timer for all connections, and keeps the budget of bytes
  held in incomplete messages across connections (over it, the connections that have held
  theirs longest are closed). It answers with :class:`Eviction` values: which connection to
  close and why;
- :class:`WarningThrottle` lets one line per kind of warning through per interval and counts
  the rest, for a summary line when the interval ends.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from phone_sim.errors import UsageError

__all__ = [
    "Admission",
    "ConnectionGuard",
    "Eviction",
    "LabLimits",
    "LimitsError",
    "WarningThrottle",
]

_MIB = 1024 * 1024


class LimitsError(UsageError):
    """A limit that cannot work (zero connections, a negative timeout...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LabLimits:
    """What the lab allows its TCP/TLS clients; the defaults let 2,000 phones on one address
    (a fleet on 127.0.0.1) register, and bound what unauthenticated clients can hold."""

    max_connections: int = 100_000
    """TCP/TLS connections held at once; lowered at start to what the open-file limit
    (``RLIMIT_NOFILE``, raised first where allowed) leaves room for."""
    max_connections_per_source: int = 4096
    """Connections from one IP address (a fleet and the benchmarks all come from one)."""
    handshake_timeout: float = 10.0
    """A TLS client must finish its handshake within this many seconds."""
    first_message_timeout: float = 10.0
    """A new connection (TLS: once its handshake is done) must deliver a whole SIP message
    within this many seconds; keep-alives and partial messages do not count."""
    idle_timeout: float | None = 300.0
    """A connection without bindings that has sent no SIP message for this long is closed
    (``None``: never). Keep-alives and bytes of a message in progress do not count."""
    max_buffered_bytes: int = 32 * _MIB
    """Bytes of incomplete messages held across all connections (each connection may hold
    one message up to the framer's own limits); beyond it, the connections that have held
    theirs longest are closed."""
    max_write_buffer: int = _MIB
    """Bytes queued for a connection that does not read: above a quarter of this the lab
    stops reading from it until it drains; above this it is dropped."""
    warning_interval: float = 10.0
    """Repeated warnings of one kind: the first is logged, the rest counted and summed up in
    one line per this many seconds."""
    raise_file_limit: bool = True
    """Raise the soft ``RLIMIT_NOFILE`` towards the hard one at start, as far as
    ``max_connections`` needs."""

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_connections_per_source < 1:
            raise LimitsError("max_connections and max_connections_per_source must be >= 1")
        for name in ("handshake_timeout", "first_message_timeout", "warning_interval"):
            if not getattr(self, name) > 0:
                raise LimitsError(f"{name} must be positive")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise LimitsError("idle_timeout must be positive (or None)")
        if self.max_buffered_bytes < 1 or self.max_write_buffer < 4:
            raise LimitsError("max_buffered_bytes and max_write_buffer must be positive")

    @property
    def write_pause_bytes(self) -> int:
        """Where the lab stops reading from a connection that does not read its answers."""
        return self.max_write_buffer // 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Eviction:
    """Close this connection, for this reason."""

    conn_id: int
    """The connection (the flow id)."""
    kind: str
    """What limit: ``handshake``, ``first-message``, ``idle``, ``budget``, ``total``,
    ``per-source``."""
    reason: str
    """Why, in words, for the log."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """The answer to a new connection."""

    admitted: bool
    """Whether it may stay."""
    evict: tuple[Eviction, ...] = ()
    """Connections to close to make room for it."""
    refusal: Eviction | None = None
    """Why it was refused, when it was."""


# Phases of a connection.
_HANDSHAKE, _FIRST_MESSAGE, _ESTABLISHED = 0, 1, 2


class _Conn:
    __slots__ = ("buffered", "id", "last_message", "partial_since", "phase", "source")

    def __init__(self, conn_id: int, source: str, phase: int, now: float) -> None:
        self.id = conn_id
        self.source = source
        self.phase = phase
        self.buffered = 0
        self.partial_since: float | None = None
        self.last_message = now


class ConnectionGuard:
    """Admission, deadlines and the buffer budget for every connection of one lab."""

    def __init__(self, limits: LabLimits, *, capacity: int | None = None) -> None:
        """``capacity`` is the total cap in force (``limits.max_connections`` lowered to the
        open-file limit); default ``limits.max_connections``."""
        self.limits = limits
        self.capacity = min(limits.max_connections, capacity or limits.max_connections)
        self._conns: dict[int, _Conn] = {}
        self._per_source: dict[str, int] = {}
        # Connections that have not yet sent a whole message, oldest first (to make room).
        self._fresh: OrderedDict[int, None] = OrderedDict()
        self._fresh_by_source: dict[str, OrderedDict[int, None]] = {}
        # (deadline, conn): constant timeouts, appended in time order, so each queue is sorted.
        self._handshakes: deque[tuple[float, int]] = deque()
        self._first: deque[tuple[float, int]] = deque()
        self._next_sweep: float | None = None
        self.buffered = 0
        #: How many connections each limit closed or refused.
        self.stats: dict[str, int] = {
            "handshake": 0, "first-message": 0, "idle": 0, "budget": 0, "total": 0,
            "per-source": 0,
        }  # fmt: skip

    def __len__(self) -> int:
        return len(self._conns)

    def from_source(self, source: str) -> int:
        """How many connections ``source`` holds."""
        return self._per_source.get(source, 0)

    # -- connections --------------------------------------------------------------------------

    def admit(self, conn_id: int, source: str, now: float, *, tls: bool) -> Admission:
        """A connection was accepted from ``source`` (an IP address)."""
        limits = self.limits
        evict: list[Eviction] = []
        if self._per_source.get(source, 0) >= limits.max_connections_per_source:
            victim = self._oldest_fresh(self._fresh_by_source.get(source))
            detail = (
                f"{source} holds {limits.max_connections_per_source} connections "
                "(max_connections_per_source)"
            )
            if victim is None:
                return self._refuse(conn_id, "per-source", detail)
            evict.append(self._evict(victim, "per-source", f"{detail}: oldest silent one"))
        if len(self._conns) >= self.capacity:
            victim = self._oldest_fresh(self._fresh)
            detail = f"the lab holds {self.capacity} connections (max_connections)"
            if victim is None:
                # (Never after a per-source eviction: that one made room.)
                return self._refuse(conn_id, "total", detail)
            evict.append(self._evict(victim, "total", f"{detail}: oldest silent one"))
        conn = _Conn(conn_id, source, _HANDSHAKE if tls else _FIRST_MESSAGE, now)
        self._conns[conn_id] = conn
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._fresh[conn_id] = None
        self._fresh_by_source.setdefault(source, OrderedDict())[conn_id] = None
        if tls:
            self._handshakes.append((now + limits.handshake_timeout, conn_id))
        else:
            self._first.append((now + limits.first_message_timeout, conn_id))
        self._arm_sweep(now)
        return Admission(admitted=True, evict=tuple(evict))

    def handshake_done(self, conn_id: int, now: float) -> None:
        """A TLS handshake completed: the first-message clock starts."""
        conn = self._conns.get(conn_id)
        if conn is not None and conn.phase == _HANDSHAKE:
            conn.phase = _FIRST_MESSAGE
            self._first.append((now + self.limits.first_message_timeout, conn_id))

    def message(self, conn_id: int, now: float) -> None:
        """A whole SIP request or response arrived on the connection."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return
        if conn.phase != _ESTABLISHED:
            conn.phase = _ESTABLISHED
            self._unfresh(conn)
        conn.last_message = now
        conn.partial_since = None  # the clock of the next message starts with its bytes

    def buffered_bytes(self, conn_id: int, held: int, now: float) -> list[Eviction]:
        """The connection now holds ``held`` bytes of an incomplete message; the connections
        to close if that takes the lab over its budget (the one that held its bytes longest
        first; possibly this one)."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return []
        self.buffered += held - conn.buffered
        conn.buffered = held
        if not held:
            conn.partial_since = None
            return []
        if conn.partial_since is None:
            conn.partial_since = now
        budget = self.limits.max_buffered_bytes
        if self.buffered <= budget:
            return []
        holders = sorted(
            (c for c in self._conns.values() if c.buffered),
            key=lambda c: (c.partial_since or now, c.id),
        )
        out: list[Eviction] = []
        for victim in holders:
            if self.buffered <= budget:
                break
            age = now - (victim.partial_since or now)
            out.append(self._evict(victim.id, "budget", (
                f"the lab holds more than {budget} bytes of incomplete messages "
                f"(max_buffered_bytes); this connection held {victim.buffered} for {age:.1f} s"
            )))  # fmt: skip
        return out

    def closed(self, conn_id: int) -> None:
        """The connection is gone (whoever closed it)."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        self.buffered -= conn.buffered
        left = self._per_source[conn.source] - 1
        if left:
            self._per_source[conn.source] = left
        else:
            del self._per_source[conn.source]
        self._unfresh(conn)

    # -- deadlines ----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next deadline to check, or None."""
        deadlines = [q[0][0] for q in (self._handshakes, self._first) if q]
        if self._next_sweep is not None:
            deadlines.append(self._next_sweep)
        return min(deadlines) if deadlines else None

    def handle_timer(
        self, now: float, *, exempt: Callable[[int], bool] = lambda _conn_id: False
    ) -> list[Eviction]:
        """Connections past a deadline at ``now``. ``exempt(conn_id)`` keeps a connection
        that would be idle (one that carries a phone's binding)."""
        limits = self.limits
        out: list[Eviction] = []
        queue = self._handshakes
        while queue and queue[0][0] <= now:
            _, conn_id = queue.popleft()
            conn = self._conns.get(conn_id)
            if conn is not None and conn.phase == _HANDSHAKE:
                out.append(self._evict(conn_id, "handshake",
                                       f"no TLS handshake within {limits.handshake_timeout:g} s"))
        queue = self._first
        while queue and queue[0][0] <= now:
            _, conn_id = queue.popleft()
            conn = self._conns.get(conn_id)
            if conn is not None and conn.phase == _FIRST_MESSAGE:
                out.append(self._evict(conn_id, "first-message", (
                    f"no complete SIP message within {limits.first_message_timeout:g} s"
                )))  # fmt: skip
        if self._next_sweep is not None and self._next_sweep <= now:
            self._next_sweep = None
            idle = limits.idle_timeout
            if idle is not None:
                cutoff = now - idle
                for conn in list(self._conns.values()):
                    if (conn.phase == _ESTABLISHED and conn.last_message <= cutoff
                            and not exempt(conn.id)):  # fmt: skip
                        out.append(self._evict(conn.id, "idle", (
                            f"no SIP message for {idle:g} s and no registration"
                        )))  # fmt: skip
            self._arm_sweep(now)
        return out

    def _arm_sweep(self, now: float) -> None:
        # One periodic idle sweep for every connection, not a timer each; only while there
        # are connections.
        idle = self.limits.idle_timeout
        if idle is not None and self._next_sweep is None and self._conns:
            self._next_sweep = now + max(0.05, idle / 4)

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _oldest_fresh(fresh: OrderedDict[int, None] | None) -> int | None:
        if not fresh:
            return None
        return next(iter(fresh))

    def _evict(self, conn_id: int, kind: str, reason: str) -> Eviction:
        self.stats[kind] += 1
        self.closed(conn_id)
        return Eviction(conn_id=conn_id, kind=kind, reason=reason)

    def _refuse(self, conn_id: int, kind: str, detail: str) -> Admission:
        self.stats[kind] += 1
        return Admission(
            admitted=False, refusal=Eviction(conn_id=conn_id, kind=kind, reason=detail)
        )

    def _unfresh(self, conn: _Conn) -> None:
        self._fresh.pop(conn.id, None)
        per = self._fresh_by_source.get(conn.source)
        if per is not None:
            per.pop(conn.id, None)
            if not per:
                del self._fresh_by_source[conn.source]


class WarningThrottle:
    """One log line per kind of warning per ``interval``, and a count of the rest.

    :meth:`allow` says whether to log an occurrence now; :meth:`due` returns, for each kind
    whose interval has ended, how many were held back (and starts a new interval while they
    keep coming, so that a flood costs one line per interval).
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (ends at, suppressed)

    def allow(self, key: str, now: float) -> bool:
        """Whether to log this occurrence of ``key`` (else it is counted)."""
        window = self._windows.get(key)
        if window is None or (window[0] <= now and not window[1]):
            self._windows[key] = (now + self.interval, 0)
            return True
        ends, count = window
        self._windows[key] = (ends, count + 1)
        return False

    def due(self, now: float) -> list[tuple[str, int]]:
        """``(key, held back)`` for every interval that ended with occurrences held back."""
        out: list[tuple[str, int]] = []
        for key, (ends, count) in list(self._windows.items()):
            if ends > now:
                continue
            if count:
                out.append((key, count))
                self._windows[key] = (now + self.interval, 0)
            else:
                del self._windows[key]
        return out

    def get_timer(self) -> float | None:
        """When the next interval with held-back occurrences ends."""
        ends = [end for end, count in self._windows.values() if count]
        return min(ends) if ends else None
