"""SIP transactions (RFC 3261 §17, as amended by RFC 6026), as transition tables.

A transaction here knows states, timers and what to do; it does not know message syntax.
Each of the four machines is one table ``(state, input) -> (next state, actions)``; a pair
that is not in the table raises :class:`TransactionStateError`, and the pairs that are
deliberately ignored are listed in the same table with ``IGNORE`` (absorbed input, counted).

Timers are deadlines on the caller's clock: ``retransmit_at`` (A, E, G) and ``timeout_at``
(B, D, F, H, I, J, K, L, M). :meth:`Transaction.get_timer` gives the earliest;
:meth:`Transaction.handle_timer` fires the earliest due one. The user agent core
(:mod:`phone_sim.sip.ua`) turns the returned :class:`TxAction` flags into datagrams and events.

Matching keys (§17.1.3, §17.2.3) are built from plain values by :func:`client_key` and
:func:`server_key`, so this module does not depend on the message model.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import ClassVar

from phone_sim.errors import PhoneSimError

logger = logging.getLogger(__name__)

__all__ = [
    "MAGIC_COOKIE",
    "ClientKey",
    "ServerKey",
    "TimerSettings",
    "Transaction",
    "TransactionKind",
    "TransactionStateError",
    "TxAction",
    "TxInput",
    "TxState",
    "client_key",
    "new_transaction",
    "server_key",
]

#: RFC 3261 §8.1.1.7: branches that start with it are unique and usable as transaction ids.
MAGIC_COOKIE = "z9hG4bK"


class TransactionStateError(PhoneSimError):
    """An input arrived that the transaction's table does not allow in its state (our bug)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerSettings:
    """RFC 3261 timer base values (§17.1.1.1, Table 4), float seconds."""

    t1: float = 0.5
    """RTT estimate; the base of A, B, E, F, G, H, J, L, M."""
    t2: float = 4.0
    """Maximum retransmit interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Maximum time a message stays in the network; Timers I and K on UDP."""
    td: float = 32.0
    """Timer D on unreliable transports (at least 32 s)."""

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0 or self.td < 0:
            raise ValueError("timer settings need 0 < t1 <= t2, t4 > 0 and td >= 0")


class TransactionKind(enum.Enum):
    """The four machines of RFC 3261 §17."""

    INVITE_CLIENT = "ict"
    NON_INVITE_CLIENT = "nict"
    INVITE_SERVER = "ist"
    NON_INVITE_SERVER = "nist"


class TxState(enum.Enum):
    """Transaction states; each machine uses a subset (see the tables)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class TxInput(enum.Enum):
    """What can happen to a transaction."""

    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_FINAL = "300-699 received"
    RECV_REQUEST = "request retransmission received"
    RECV_ACK = "ACK received"
    SEND_1XX = "TU sends 1xx"
    SEND_2XX = "TU sends 2xx"
    SEND_FINAL = "TU sends 300-699"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"


class TxAction(enum.Flag):
    """What the user agent must do after an input."""

    NONE = 0
    TRANSMIT = enum.auto()
    """Send the message the TU just handed over (request at start, or a response)."""
    RETRANSMIT = enum.auto()
    """Send again the last message this transaction sent (request or response)."""
    SEND_ACK = enum.auto()
    """ICT: send (or resend) the ACK for a 300-699 response (§17.1.1.3)."""
    PASS_UP = enum.auto()
    """Hand the received message to the TU."""
    TIMED_OUT = enum.auto()
    """The transaction gave up (Timer B, F or H): tell the TU."""
    TRANSPORT_FAILED = enum.auto()
    """The transport reported an error: tell the TU."""
    ABSORBED = enum.auto()
    """An input was absorbed (a duplicate or a late message); nothing else to do."""


S = TxState
I = TxInput  # noqa: E741
A = TxAction

_Table = dict[tuple[TxState, TxInput], tuple[TxState, TxAction]]

# RFC 3261 17.1.1.2 with RFC 6026 7.2 (Accepted state, Timer M).
_ICT: _Table = {
    (S.CALLING, I.TIMER_A): (S.CALLING, A.RETRANSMIT),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, A.TIMED_OUT),
    (S.CALLING, I.RECV_1XX): (S.PROCEEDING, A.PASS_UP),
    (S.CALLING, I.RECV_2XX): (S.ACCEPTED, A.PASS_UP),
    (S.CALLING, I.RECV_FINAL): (S.COMPLETED, A.SEND_ACK | A.PASS_UP),
    (S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, A.TRANSPORT_FAILED),
    (S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, A.PASS_UP),
    (S.PROCEEDING, I.RECV_2XX): (S.ACCEPTED, A.PASS_UP),
    (S.PROCEEDING, I.RECV_FINAL): (S.COMPLETED, A.SEND_ACK | A.PASS_UP),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, A.TRANSPORT_FAILED),
    # 17.1.1.2: a retransmitted final response is answered with the ACK again, not passed up.
    (S.COMPLETED, I.RECV_FINAL): (S.COMPLETED, A.SEND_ACK | A.ABSORBED),
    (S.COMPLETED, I.RECV_1XX): (S.COMPLETED, A.ABSORBED),
    (S.COMPLETED, I.RECV_2XX): (S.COMPLETED, A.ABSORBED),
    # The TU already has the final response; a failed ACK only ends the transaction.
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, A.NONE),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, A.NONE),
    # RFC 6026 7.2: 2xx retransmissions go to the TU (which ACKs them); the rest is absorbed.
    (S.ACCEPTED, I.RECV_2XX): (S.ACCEPTED, A.PASS_UP),
    (S.ACCEPTED, I.RECV_1XX): (S.ACCEPTED, A.ABSORBED),
    (S.ACCEPTED, I.RECV_FINAL): (S.ACCEPTED, A.ABSORBED),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, A.ABSORBED),
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, A.NONE),
}

# RFC 3261 17.1.2.2.
_NICT: _Table = {
    (S.TRYING, I.TIMER_E): (S.TRYING, A.RETRANSMIT),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, A.TIMED_OUT),
    (S.TRYING, I.RECV_1XX): (S.PROCEEDING, A.PASS_UP),
    (S.TRYING, I.RECV_2XX): (S.COMPLETED, A.PASS_UP),
    (S.TRYING, I.RECV_FINAL): (S.COMPLETED, A.PASS_UP),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, A.TRANSPORT_FAILED),
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, A.RETRANSMIT),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, A.TIMED_OUT),
    (S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, A.PASS_UP),
    (S.PROCEEDING, I.RECV_2XX): (S.COMPLETED, A.PASS_UP),
    (S.PROCEEDING, I.RECV_FINAL): (S.COMPLETED, A.PASS_UP),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, A.TRANSPORT_FAILED),
    # 17.1.2.2: Completed buffers response retransmissions.
    (S.COMPLETED, I.RECV_1XX): (S.COMPLETED, A.ABSORBED),
    (S.COMPLETED, I.RECV_2XX): (S.COMPLETED, A.ABSORBED),
    (S.COMPLETED, I.RECV_FINAL): (S.COMPLETED, A.ABSORBED),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, A.NONE),
}

# RFC 3261 17.2.1 with RFC 6026 7.1 (Accepted state, Timer L).
_IST: _Table = {
    # 17.2.1: an INVITE retransmission gets the most recent provisional response again.
    (S.PROCEEDING, I.RECV_REQUEST): (S.PROCEEDING, A.RETRANSMIT),
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, A.TRANSMIT),
    (S.PROCEEDING, I.SEND_2XX): (S.ACCEPTED, A.TRANSMIT),
    (S.PROCEEDING, I.SEND_FINAL): (S.COMPLETED, A.TRANSMIT),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, A.TRANSPORT_FAILED),
    (S.COMPLETED, I.RECV_REQUEST): (S.COMPLETED, A.RETRANSMIT),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, A.RETRANSMIT),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, A.TIMED_OUT),
    (S.COMPLETED, I.RECV_ACK): (S.CONFIRMED, A.NONE),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, A.TRANSPORT_FAILED),
    # 17.2.1: Confirmed absorbs further ACKs until Timer I.
    (S.CONFIRMED, I.RECV_ACK): (S.CONFIRMED, A.ABSORBED),
    (S.CONFIRMED, I.RECV_REQUEST): (S.CONFIRMED, A.ABSORBED),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, A.NONE),
    # RFC 6026 7.1: INVITE retransmissions are absorbed, the TU retransmits its 2xx through
    # the transaction, and an ACK that matches goes to the TU. RFC 3261 13.3.1.4 makes the
    # UAS core retransmit the 2xx on UDP (T1 doubling to T2) until the ACK comes: that timer
    # runs here as Timer G of the Accepted state, and the first ACK stops it.
    (S.ACCEPTED, I.RECV_REQUEST): (S.ACCEPTED, A.ABSORBED),
    (S.ACCEPTED, I.SEND_2XX): (S.ACCEPTED, A.TRANSMIT),
    (S.ACCEPTED, I.TIMER_G): (S.ACCEPTED, A.RETRANSMIT),
    (S.ACCEPTED, I.RECV_ACK): (S.ACCEPTED, A.PASS_UP),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, A.ABSORBED),
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, A.NONE),
}

# RFC 3261 17.2.2.
_NIST: _Table = {
    # 17.2.2: retransmissions in Trying are discarded (no response to repeat yet).
    (S.TRYING, I.RECV_REQUEST): (S.TRYING, A.ABSORBED),
    (S.TRYING, I.SEND_1XX): (S.PROCEEDING, A.TRANSMIT),
    (S.TRYING, I.SEND_2XX): (S.COMPLETED, A.TRANSMIT),
    (S.TRYING, I.SEND_FINAL): (S.COMPLETED, A.TRANSMIT),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, A.TRANSPORT_FAILED),
    (S.PROCEEDING, I.RECV_REQUEST): (S.PROCEEDING, A.RETRANSMIT),
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, A.TRANSMIT),
    (S.PROCEEDING, I.SEND_2XX): (S.COMPLETED, A.TRANSMIT),
    (S.PROCEEDING, I.SEND_FINAL): (S.COMPLETED, A.TRANSMIT),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, A.TRANSPORT_FAILED),
    (S.COMPLETED, I.RECV_REQUEST): (S.COMPLETED, A.RETRANSMIT),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, A.TRANSPORT_FAILED),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, A.NONE),
}

TABLES: dict[TransactionKind, _Table] = {
    TransactionKind.INVITE_CLIENT: _ICT,
    TransactionKind.NON_INVITE_CLIENT: _NICT,
    TransactionKind.INVITE_SERVER: _IST,
    TransactionKind.NON_INVITE_SERVER: _NIST,
}

INITIAL_STATE: dict[TransactionKind, TxState] = {
    TransactionKind.INVITE_CLIENT: S.CALLING,
    TransactionKind.NON_INVITE_CLIENT: S.TRYING,
    TransactionKind.INVITE_SERVER: S.PROCEEDING,
    TransactionKind.NON_INVITE_SERVER: S.TRYING,
}

_RETRANSMIT_TIMER = {
    TransactionKind.INVITE_CLIENT: I.TIMER_A,
    TransactionKind.NON_INVITE_CLIENT: I.TIMER_E,
    TransactionKind.INVITE_SERVER: I.TIMER_G,
    TransactionKind.NON_INVITE_SERVER: None,
}


# --------------------------------------------------------------------------------------------
# Matching keys

#: §17.1.3: ``(branch, CSeq method)``.
ClientKey = tuple[str, ...]
#: §17.2.3: ``("3261", branch, sent-by, method)`` or ``("2543", ...)`` for old-style branches.
ServerKey = tuple[str, ...]


def client_key(branch: str, cseq_method: str) -> ClientKey:
    """The key a response is matched on (RFC 3261 §17.1.3): top Via branch + CSeq method."""
    return (branch, cseq_method.upper())


def server_key(
    *,
    method: str,
    branch: str | None,
    sent_by: str,
    request_uri: str,
    call_id: str,
    from_tag: str | None,
    cseq_number: int,
    top_via: str,
) -> ServerKey:
    """The key a request is matched on (RFC 3261 §17.2.3).

    With the magic cookie: branch, sent-by and method, ACK counting as INVITE. Without it
    (RFC 2543 peers): Request-URI, From tag, Call-ID, CSeq number, the whole top Via and the
    method (ACK as INVITE). The RFC also compares the To tag; a retransmission carries the
    same To tag as the original by construction, and for an ACK the user agent compares it
    with the tag of the response it sent (§17.2.3), so the tag is not part of the key.
    """
    kind = "INVITE" if method.upper() in ("INVITE", "ACK") else method.upper()
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, sent_by.lower(), kind)
    return (
        "2543",
        request_uri,
        from_tag or "",
        call_id,
        str(cseq_number),
        " ".join(top_via.split()).lower(),
        kind,
    )


# --------------------------------------------------------------------------------------------
# The machine


class Transaction:
    """One transaction: state, timers, counters and the last message it sent.

    Create it with :func:`new_transaction`. ``wire`` is what ``RETRANSMIT`` resends;
    the user agent updates it with each response it hands to a server transaction.
    """

    __slots__ = (
        "_interval",
        "_timeout_input",
        "absorbed",
        "ack_wire",
        "acked",
        "context",
        "key",
        "kind",
        "reliable",
        "response_to_tag",
        "retransmissions",
        "retransmit_at",
        "scheduled_at",
        "state",
        "timeout_at",
        "timers",
        "wire",
    )

    TERMINAL: ClassVar[TxState] = S.TERMINATED

    def __init__(
        self,
        kind: TransactionKind,
        key: tuple[str, ...],
        *,
        reliable: bool,
        timers: TimerSettings,
        wire: bytes = b"",
        context: object = None,
    ) -> None:
        self.kind = kind
        self.key = key
        self.reliable = reliable
        self.timers = timers
        self.state = INITIAL_STATE[kind]
        self.wire = wire
        self.ack_wire: bytes | None = None
        self.response_to_tag: str | None = None
        self.context = context
        self.retransmit_at: float | None = None
        self.timeout_at: float | None = None
        self._timeout_input: TxInput | None = None
        self._interval = 0.0
        self.retransmissions = 0
        self.absorbed = 0
        self.acked = False
        #: The deadline the owner last queued for this transaction (its bookkeeping).
        self.scheduled_at: float | None = None

    def __repr__(self) -> str:
        return f"<Transaction {self.kind.value} {self.state.value} key={self.key!r}>"

    @property
    def terminated(self) -> bool:
        """True once the transaction reached Terminated; it takes no more input."""
        return self.state is S.TERMINATED

    def start(self, now: float) -> TxAction:
        """Client: send the request (arms A/E and B/F). Server: arm nothing; returns NONE."""
        t = self.timers
        if self.kind is TransactionKind.INVITE_CLIENT:
            # 17.1.1.2: Timer A only on unreliable transports; Timer B always.
            if not self.reliable:
                self._arm_retransmit(now, t.t1)
            self._arm_timeout(now + 64 * t.t1, I.TIMER_B)
            return A.TRANSMIT
        if self.kind is TransactionKind.NON_INVITE_CLIENT:
            # 17.1.2.2: Timer E only on unreliable transports; Timer F always.
            if not self.reliable:
                self._arm_retransmit(now, t.t1)
            self._arm_timeout(now + 64 * t.t1, I.TIMER_F)
            return A.TRANSMIT
        return A.NONE

    def get_timer(self) -> float | None:
        """The earliest pending deadline, or None."""
        r, t = self.retransmit_at, self.timeout_at
        if r is None:
            return t
        if t is None:
            return r
        return min(r, t)

    def handle_timer(self, now: float) -> TxAction:
        """Fire the earliest timer due at *now*; returns NONE when none is due."""
        r, t = self.retransmit_at, self.timeout_at
        if t is not None and t <= now and (r is None or t <= r):
            assert self._timeout_input is not None
            return self.feed(self._timeout_input, now)
        if r is not None and r <= now:
            timer = _RETRANSMIT_TIMER[self.kind]
            assert timer is not None
            return self.feed(timer, now)
        return A.NONE

    def feed(self, event: TxInput, now: float) -> TxAction:
        """Apply *event*; return what the user agent must do."""
        try:
            new_state, actions = TABLES[self.kind][(self.state, event)]
        except KeyError:
            raise TransactionStateError(
                f"{self.kind.value} transaction cannot take {event.value!r} in state "
                f"{self.state.value}"
            ) from None
        if A.ABSORBED in actions:
            self.absorbed += 1
        if A.RETRANSMIT in actions or (A.SEND_ACK in actions and self.state is new_state):
            self.retransmissions += 1
        if event in (I.TIMER_A, I.TIMER_E, I.TIMER_G):
            self._rearm_retransmit(now, event)
        elif event is I.RECV_ACK and self.state is S.ACCEPTED:
            # RFC 3261 13.3.1.4: the ACK ends the 2xx retransmissions.
            self.acked = True
            self.retransmit_at = None
        if new_state is not self.state:
            self._set_state(new_state, now)
        return actions

    # -- timers --------------------------------------------------------------------------

    def _arm_retransmit(self, now: float, interval: float) -> None:
        self._interval = interval
        self.retransmit_at = now + interval

    def _rearm_retransmit(self, now: float, event: TxInput) -> None:
        t = self.timers
        if event is I.TIMER_A:
            # 17.1.1.2: A doubles each time, without a cap.
            self._arm_retransmit(now, self._interval * 2)
        elif self.kind is TransactionKind.NON_INVITE_CLIENT and self.state is S.PROCEEDING:
            # 17.1.2.2: in Proceeding, retransmit every T2.
            self._arm_retransmit(now, t.t2)
        else:
            # 17.1.2.2 (E) and 17.2.1 (G): double up to T2.
            self._arm_retransmit(now, min(self._interval * 2, t.t2))

    def _arm_timeout(self, at: float, timer: TxInput) -> None:
        self.timeout_at = at
        self._timeout_input = timer

    def _cancel_timers(self) -> None:
        self.retransmit_at = None
        self.timeout_at = None
        self._timeout_input = None

    def _set_state(self, new: TxState, now: float) -> None:
        old = self.state
        logger.debug("transaction %s %s: %s -> %s", self.kind.value, self.key, old.value,
                     new.value)
        self.state = new
        t = self.timers
        reliable = self.reliable
        kind = self.kind
        if new is S.TERMINATED:
            self._cancel_timers()
        elif new is S.PROCEEDING:
            if kind is TransactionKind.INVITE_CLIENT:
                # 17.1.1.2: a provisional response stops retransmissions; Timer B is only
                # defined for Calling, the TU ends a ringing call with CANCEL.
                self._cancel_timers()
            elif kind is TransactionKind.NON_INVITE_CLIENT and self.retransmit_at is not None:
                # 17.1.2.2: keep Timer F; E continues at T2.
                self._arm_retransmit(now, t.t2)
        elif new is S.COMPLETED:
            self._cancel_timers()
            if kind is TransactionKind.INVITE_CLIENT:
                # 17.1.1.2: Timer D, at least 32 s on UDP, zero on reliable transports.
                self._arm_timeout(now + (0.0 if reliable else t.td), I.TIMER_D)
            elif kind is TransactionKind.NON_INVITE_CLIENT:
                # 17.1.2.2: Timer K = T4 on UDP, zero on reliable transports.
                self._arm_timeout(now + (0.0 if reliable else t.t4), I.TIMER_K)
            elif kind is TransactionKind.INVITE_SERVER:
                # 17.2.1: Timer G (UDP only) and Timer H = 64*T1.
                if not reliable:
                    self._arm_retransmit(now, t.t1)
                self._arm_timeout(now + 64 * t.t1, I.TIMER_H)
            else:
                # 17.2.2: Timer J = 64*T1 on UDP, zero on reliable transports.
                self._arm_timeout(now + (0.0 if reliable else 64 * t.t1), I.TIMER_J)
        elif new is S.CONFIRMED:
            # 17.2.1: Timer I = T4 on UDP, zero on reliable; G and H stop.
            self._cancel_timers()
            self._arm_timeout(now + (0.0 if reliable else t.t4), I.TIMER_I)
        elif new is S.ACCEPTED:
            self._cancel_timers()
            # RFC 6026 7.1 (Timer L) and 7.2 (Timer M): 64*T1.
            if kind is TransactionKind.INVITE_SERVER:
                if not reliable:
                    # RFC 3261 13.3.1.4: 2xx retransmissions, T1 doubling up to T2.
                    self._arm_retransmit(now, t.t1)
                self._arm_timeout(now + 64 * t.t1, I.TIMER_L)
            else:
                self._arm_timeout(now + 64 * t.t1, I.TIMER_M)


def new_transaction(
    kind: TransactionKind,
    key: tuple[str, ...],
    *,
    reliable: bool,
    timers: TimerSettings | None = None,
    wire: bytes = b"",
    context: object = None,
) -> Transaction:
    """Create a transaction in its initial state (call :meth:`Transaction.start` for clients)."""
    return Transaction(
        kind, key, reliable=reliable, timers=timers or TimerSettings(), wire=wire,
        context=context,
    )
