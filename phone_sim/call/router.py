"""All calls of one phone, sans-I/O: :class:`CallRouter`.

The router keeps the phone's :class:`~phone_sim.call.session.CallSession` objects by Call-ID,
each on the user agent of the transport it started on, feeds each the UA events of its
Call-ID, and turns what the sessions report into the phone's call events
(:mod:`phone_sim.call.events`, each naming its Call-ID). Its API is by Call-ID; it uses only
the sessions' public methods.

Which account places or takes a call, its Contact, credentials and media template are the
phone's business (:class:`~phone_sim.phone.core.PhoneCore` decides and passes them in).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from phone_sim.call.events import (
    CallAnswered,
    CallArrived,
    CallFinished,
    CallMediaNegotiated,
    CallPlaced,
    CallProgressed,
    CallRefreshed,
    CallUpdateRefused,
    PhoneCallEvent,
)
from phone_sim.call.session import (
    CallConfig,
    CallEnded,
    CallEstablished,
    CallRinging,
    CallSession,
    CallState,
    MediaNegotiated,
    ReofferFailed,
    SessionRefreshed,
)
from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.media.negotiation import LocalAudio
from phone_sim.sip.digest import DigestClient
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.routing import Address
from phone_sim.sip.ua import RequestReceived, UaEvent, UserAgent
from phone_sim.sip.uri import SipUri

__all__ = ["CallRouter"]

logger = logging.getLogger(__name__)


class CallRouter:
    """The calls of one phone (see the module docstring).

    *config* applies to every call; *rng* seeds each call's tags and keys; *key_factory*
    makes SDES master keys (tests pass a deterministic one).
    """

    __slots__ = ("_accounts", "_events", "_key_factory", "_lingering", "_rng", "config",
                 "refused", "sessions")

    def __init__(
        self,
        *,
        config: CallConfig | None = None,
        rng: random.Random | None = None,
        key_factory: Callable[[], bytes] | None = None,
    ) -> None:
        self.config = config or CallConfig()
        self._rng = rng or random.Random()
        self._key_factory = key_factory
        #: The live sessions by Call-ID.
        self.sessions: dict[str, CallSession] = {}
        # The account index of each live call, for its events.
        self._accounts: dict[str, int] = {}
        self._events: list[PhoneCallEvent] = []  # an empty deque costs 760 bytes
        # Ended calls still waiting on a transaction of theirs (a late 2xx to a re-INVITE
        # still gets its ACK), until this deadline: a peer that answers 100 and never a
        # final response must not keep a call forever.
        self._lingering: dict[str, float] = {}
        #: Incoming INVITEs refused before ringing, per status (488, 400...).
        self.refused: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<CallRouter calls={len(self.sessions)}>"

    def __len__(self) -> int:
        return len(self.sessions)

    # -- output ---------------------------------------------------------------------------------

    def next_event(self) -> PhoneCallEvent | None:
        """The next call event, or None."""
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline over all calls."""
        times = [t for s in self.sessions.values() if (t := s.get_timer()) is not None]
        times.extend(self._lingering.values())
        return min(times) if times else None

    def session(self, call_id: str) -> CallSession:
        """The live session of *call_id*; :class:`UsageError` if there is none."""
        session = self.sessions.get(call_id)
        if session is None:
            raise UsageError(f"no call {call_id!r}")
        return session

    def account_of(self, call_id: str) -> int:
        """The index of the account *call_id* belongs to."""
        self.session(call_id)
        return self._accounts[call_id]

    # -- starting calls -------------------------------------------------------------------------

    def dial(
        self,
        ua: UserAgent,
        target: SipUri,
        now: float,
        *,
        account: int,
        from_: NameAddr,
        local: LocalAudio,
        contact: NameAddr | None = None,
        auth: DigestClient | None = None,
        destination: Address | None = None,
    ) -> str:
        """Place a call to *target* on *ua* from *account*: the INVITE goes at once. Returns
        its Call-ID."""
        session = CallSession.outgoing_call(
            ua, target, now, from_=from_, local=local, config=self.config,
            destination=destination, rng=random.Random(self._rng.random()),
            key_factory=self._key_factory, contact=contact, auth=auth,
        )
        call_id = session.call_id
        self.sessions[call_id] = session
        self._accounts[call_id] = account
        self._events.append(CallPlaced(call_id=call_id, account=account, remote=str(target)))
        self._collect(session, now)
        return call_id

    def incoming(
        self,
        ua: UserAgent,
        event: RequestReceived,
        now: float,
        *,
        account: int,
        local: LocalAudio,
        contact: NameAddr | None = None,
        auth: DigestClient | None = None,
    ) -> str | None:
        """A new INVITE (no To tag, unknown Call-ID) for *account*: refused at once when its
        offer is not acceptable (counted in :attr:`refused`), else :class:`CallArrived`
        follows and the call waits to :meth:`ring`. Returns its Call-ID, or None."""
        session = CallSession.incoming_call(
            ua, event, now, local=local, config=self.config,
            rng=random.Random(self._rng.random()), key_factory=self._key_factory,
            contact=contact, auth=auth,
        )
        if session.state is CallState.TERMINATED:
            status = session.final_status or 0
            self.refused[status] = self.refused.get(status, 0) + 1
            return None
        call_id = session.call_id
        self.sessions[call_id] = session
        self._accounts[call_id] = account
        self._events.append(CallArrived(
            call_id=call_id, account=account, remote=str(event.request.from_.uri)))
        self._collect(session, now)
        return call_id

    # -- acting on a call -----------------------------------------------------------------------

    def ring(self, call_id: str, now: float, *, status: int = 180) -> None:
        """Alert on an incoming call: 180 Ringing (or 183), reliably with 100rel."""
        self._act(call_id, now, lambda s: s.ring(now, status=status))

    def answer(self, call_id: str, now: float, *, local: LocalAudio) -> None:
        """Answer an incoming call (200 OK with the SDES answer), media at *local*."""
        self._act(call_id, now, lambda s: s.answer(now, local=local))

    def reject(self, call_id: str, now: float, status: int = 486) -> None:
        """Refuse an incoming call (486 Busy Here, 603 Decline...)."""
        self._act(call_id, now, lambda s: s.reject(now, status))

    def hangup(self, call_id: str, now: float) -> None:
        """End a call: CANCEL, BYE or 603, whatever its state needs; nothing once over."""
        session = self.sessions.get(call_id)
        if session is not None and session.state is not CallState.TERMINATED:
            self._act(call_id, now, lambda s: s.hangup(now))

    def hold(self, call_id: str, now: float) -> None:
        """Put the call on hold (re-INVITE, sendonly)."""
        self._act(call_id, now, lambda s: s.hold(now))

    def resume(self, call_id: str, now: float) -> None:
        """Take the call off hold (re-INVITE, sendrecv)."""
        self._act(call_id, now, lambda s: s.resume(now))

    def refresh(self, call_id: str, now: float) -> None:
        """Refresh the RFC 4028 session timer now (UPDATE, or re-INVITE)."""
        self._act(call_id, now, lambda s: s.refresh(now))

    def _act(self, call_id: str, now: float, action: Callable[[CallSession], None]) -> None:
        session = self.session(call_id)
        try:
            action(session)
        finally:
            self._collect(session, now)

    # -- input ------------------------------------------------------------------------------------

    def handle_event(self, event: UaEvent, now: float) -> bool:
        """Route one UA event of a known call; False when it belongs to no call (a new
        INVITE is the phone's to place with :meth:`incoming`)."""
        request = getattr(event, "request", None)
        if request is None:
            return False
        session = self.sessions.get(request.call_id)
        if session is None:
            return False
        if (
            isinstance(event, RequestReceived)
            and request.method == "INVITE"
            and request.to_tag is None
        ):
            if event.transaction is not None:
                # A new INVITE reusing a live Call-ID (RFC 3261 8.2.2.2 merged request).
                session.ua.respond(event.transaction, 482, now)
            return True
        try:
            session.handle_event(event, now)
        except PhoneSimError as exc:
            # A message we did not foresee must not take the phone down: log it loudly (a
            # test looks for this) and end that call.
            logger.error("call %s: %s while handling %s", session.call_id, exc,
                         type(event).__name__)
            session.abandon(f"internal error: {exc}", status=500)
        self._collect(session, now)
        return True

    def handle_timer(self, now: float) -> None:
        """Fire every call's due timers."""
        for session in list(self.sessions.values()):
            at = session.get_timer()
            if at is not None and at <= now:
                session.handle_timer(now)
                self._collect(session, now)
        for call_id, deadline in list(self._lingering.items()):
            if deadline <= now:
                self._forget(call_id)

    def detach(self, ua: UserAgent, reason: str = "the phone's SIP transport was lost") -> None:
        """The transport of *ua* is gone: its calls end now (503, *reason*). The firmware's
        dialogs are bound to its connection too."""
        for session in list(self.sessions.values()):
            if session.ua is ua and session.state is not CallState.TERMINATED:
                session.abandon(reason, status=503)
                self._collect(session, None)

    # -- internals --------------------------------------------------------------------------------

    def _forget(self, call_id: str) -> None:
        del self.sessions[call_id]
        del self._accounts[call_id]
        self._lingering.pop(call_id, None)

    def _collect(self, session: CallSession, now: float | None) -> None:
        call_id = session.call_id
        events = self._events
        while (event := session.next_event()) is not None:
            if isinstance(event, MediaNegotiated):
                events.append(CallMediaNegotiated(call_id=call_id, audio=event.audio))
            elif isinstance(event, CallRinging):
                events.append(CallProgressed(call_id=call_id, status=event.status,
                                             reason=event.reason, reliable=event.reliable))
            elif isinstance(event, CallEstablished):
                events.append(CallAnswered(call_id=call_id, incoming=not session.outgoing))
            elif isinstance(event, ReofferFailed):
                events.append(CallUpdateRefused(call_id=call_id, status=event.status,
                                                reason=event.reason))
            elif isinstance(event, SessionRefreshed):
                events.append(CallRefreshed(call_id=call_id, interval=event.interval,
                                            refresher=event.refresher))
            elif isinstance(event, CallEnded):
                events.append(CallFinished(call_id=call_id, reason=event.reason,
                                           status=event.status, by_peer=event.by_peer))
        if self.sessions.get(call_id) is not session:
            return
        if session.finished:
            self._forget(call_id)
        elif session.state is CallState.TERMINATED and now is not None:
            # Over, with a transaction of ours still out: wait for it at most 64*T1.
            self._lingering.setdefault(call_id, now + 64 * session.ua.config.timers.t1)
