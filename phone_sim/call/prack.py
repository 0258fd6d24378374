"""RFC 3262 reliable provisional responses for one call, sans-I/O, both ways.

- :class:`PrackClient` (the caller's side) says which reliable 1xx to PRACK: each new RSeq
  once, in order, per fork.
- :class:`ReliableProvisional` (the callee's side) holds the one reliable 1xx out, its
  retransmission schedule and deadline (its own timer), and the 2xx held until its PRACK.

They send nothing themselves: the session asks them and acts, and its transition table stays
the one place that decides the call's state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from phone_sim.sip.headers import HeaderValue

__all__ = ["HeldAnswer", "PrackClient", "ReliableProvisional"]


class PrackClient:
    """RFC 3262 4: the reliable provisional responses of one outgoing call to PRACK."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        # The last RSeq PRACKed, per remote tag (each fork numbers its own).
        self._last: dict[str, int] = {}

    def accept(self, remote_tag: str, rseq: int) -> bool:
        """Whether the 1xx with *rseq* from the fork *remote_tag* is the next one: PRACK it.
        A retransmission, or one out of order (wait for the missing one), is not."""
        last = self._last.get(remote_tag)
        if last is not None and rseq != last + 1:
            return False
        self._last[remote_tag] = rseq
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldAnswer:
    """The 2xx an incoming call answered while its reliable 1xx waited for the PRACK."""

    headers: tuple[tuple[str, HeaderValue], ...]
    """Its headers."""
    body: bytes
    """Its SDP."""


class ReliableProvisional:
    """RFC 3262 3 for one incoming call (see the module docstring).

    *t1* and *t2* are the UA's timers; on a reliable transport (*reliable_transport*) the
    1xx is not retransmitted, only bounded by the 64*T1 deadline.
    """

    __slots__ = ("_deadline", "_interval", "_reliable_transport", "_rseq", "_t1", "_t2",
                 "enabled", "held", "retransmit_at", "unacked")

    def __init__(
        self, rng: random.Random, *, t1: float, t2: float, reliable_transport: bool
    ) -> None:
        #: Whether this call's 1xx go reliably (decided when the INVITE arrives).
        self.enabled = False
        self._rseq = rng.randint(1, 2**31 - 1)
        #: The reliable 1xx out and not PRACKed yet: (RSeq, status).
        self.unacked: tuple[int, int] | None = None
        #: The 2xx waiting for that PRACK.
        self.held: HeldAnswer | None = None
        #: When to send the 1xx again (or give up, at the deadline).
        self.retransmit_at: float | None = None
        self._interval = 0.0
        self._deadline = 0.0
        self._t1 = t1
        self._t2 = t2
        self._reliable_transport = reliable_transport

    def send(self, status: int, now: float) -> int | None:
        """A reliable *status* is to go: its RSeq, or None while another is unacknowledged
        (RFC 3262 3: one at a time). Arms the retransmission schedule."""
        if self.unacked is not None:
            return None
        self._rseq += 1
        self.unacked = (self._rseq, status)
        self._interval = self._t1
        self._deadline = now + 64 * self._t1
        self.retransmit_at = self._deadline if self._reliable_transport else now + self._t1
        return self._rseq

    def acknowledge(self, rack: str, invite_cseq: int) -> bool:
        """Whether a PRACK's *rack* (``RSeq CSeq INVITE``) matches the 1xx out; if so it is
        acknowledged (the held 2xx, if any, is the session's to send)."""
        parts = rack.split()
        pending = self.unacked
        if (
            pending is None
            or len(parts) != 3
            or parts[0] != str(pending[0])
            or parts[1] != str(invite_cseq)
            or parts[2].upper() != "INVITE"
        ):
            return False
        self.unacked = None
        self.retransmit_at = None
        return True

    def due(self, now: float) -> str | None:
        """What is due at *now*: ``"retransmit"`` (send the 1xx again), ``"give-up"`` (no
        PRACK within 64*T1: RFC 3262 3 rejects the INVITE with a 5xx), or None."""
        at = self.retransmit_at
        if at is None or now < at:
            return None
        if self.unacked is None:
            self.retransmit_at = None
            return None
        if now >= self._deadline:
            self.stop()
            return "give-up"
        self._interval = min(self._interval * 2, self._t2 * 4)
        self.retransmit_at = min(now + self._interval, self._deadline)
        return "retransmit"

    def stop(self) -> None:
        """Nothing is out or held any more (the call was answered, ended or cancelled)."""
        self.unacked = None
        self.held = None
        self.retransmit_at = None
