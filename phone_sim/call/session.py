"""The sans-I/O INVITE session: one call, as the UAC or the UAS, on top of the UA core.

A :class:`CallSession` drives a shared :class:`~phone_sim.sip.ua.UserAgent` (the phone's) and
an :class:`~phone_sim.media.negotiation.OfferAnswer`. It takes the UA events that belong to
its Call-ID (:meth:`CallSession.handle_event`), API calls (``answer``, ``reject``,
``hangup``, ``hold``, ``resume``, ``refresh``) and timers (:meth:`handle_timer`), and hands
back :class:`CallEvent` values and one deadline (:meth:`get_timer`). It does no I/O and
reads no clock; what it sends leaves through the UA's ``data_to_send()``.

:class:`~phone_sim.call.router.CallRouter` holds the sessions of one phone: it routes UA
events to them by Call-ID and starts a session for a new INVITE
(:meth:`CallSession.incoming_call`).

What it implements (the phone's pjsip behaviour, PROTOCOL-NOTES §5/§7):

- RFC 3261 13-15: INVITE, 1xx/2xx, ACK, CANCEL, BYE, 486/603 rejects; 401/407 are answered
  by the UA core; a 2xx without ACK (Timer L) and a failed answer end the call with BYE;
- RFC 3262: reliable provisional responses (``Require: 100rel`` + ``RSeq``) are PRACKed; as
  UAS the phone sends its 180 reliably when the caller requires (or, optionally, supports)
  100rel, retransmits it until the PRACK, and answers PRACK;
- RFC 4028: ``Session-Expires: 1800`` and ``Min-SE: 90`` on the INVITE, the refresher
  refreshes at half the interval (UPDATE when the peer allows it, re-INVITE otherwise), the
  other side sends BYE when the session expires, 422 is answered by retrying with the
  peer's Min-SE, a too-small interval is answered 422;
- RFC 3264: offers and answers in INVITE/200/ACK, re-INVITE and UPDATE, hold and resume, 488
  with a Warning when the offer is not acceptable (the call goes on after a refused
  re-offer), 491 on glare with the RFC 3261 14.1 retry delay.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from phone_sim.call.prack import HeldAnswer, PrackClient, ReliableProvisional
from phone_sim.call.session_timer import MIN_SE_FLOOR, SessionTimer, SessionTiming, min_se_of
from phone_sim.errors import ProtocolError, UsageError
from phone_sim.media.negotiation import (
    LocalAudio,
    NegotiatedAudio,
    NegotiationError,
    OfferAnswer,
    OfferAnswerState,
)
from phone_sim.sip.dialog import Dialog, DialogError, DialogState
from phone_sim.sip.digest import DigestClient
from phone_sim.sip.headers import (
    HeaderValue,
    NameAddr,
    parse_int,
)
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse
from phone_sim.sip.signature import PhoneSignature, new_call_id, new_tag, trimmed_allow
from phone_sim.sip.ua import (
    Address,
    AuthenticationRejected,
    RequestCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportFailed,
    UaEvent,
    UserAgent,
)
from phone_sim.sip.uri import SipUri

logger = logging.getLogger(__name__)

__all__ = [
    "CALL_METHODS",
    "CALL_OPTION_TAGS",
    "CallConfig",
    "CallEnded",
    "CallError",
    "CallEstablished",
    "CallEvent",
    "CallRinging",
    "CallSession",
    "CallState",
    "MediaNegotiated",
    "ReofferFailed",
    "SessionRefreshed",
    "call_signature",
]

#: Methods the call layer handles beyond the UA core's (the D40 allows both).
CALL_METHODS: tuple[str, ...] = ("PRACK", "UPDATE")
#: Option tags the call layer implements (RFC 3262, RFC 4028).
CALL_OPTION_TAGS: tuple[str, ...] = ("100rel", "timer")

SDP = "application/sdp"


def call_signature(signature: PhoneSignature) -> PhoneSignature:
    """*signature* with PRACK/UPDATE in Allow and ``100rel, timer`` in Supported: what a phone
    whose UA carries calls advertises (the D40 sends ``replaces, 100rel, timer, norefersub``;
    only the implemented tags are added)."""
    allow = trimmed_allow(set(signature.allow) | set(CALL_METHODS))
    supported = tuple(signature.supported) + tuple(
        tag for tag in CALL_OPTION_TAGS if tag not in signature.supported
    )
    return replace(signature, allow=allow, supported=supported)


class CallError(ProtocolError):
    """A call could not go on (the status is the SIP status involved, if any)."""


# --------------------------------------------------------------------------------------------
# Configuration and events


@dataclass(frozen=True, slots=True, kw_only=True)
class CallConfig:
    """How the phone's calls behave."""

    session_expires: int = 1800
    """RFC 4028 Session-Expires the phone asks for (the firmware's 1800 s)."""
    min_se: int = 90
    """RFC 4028 Min-SE: shorter intervals are refused with 422 (the firmware's 90 s)."""
    session_timers: bool = True
    """Use RFC 4028 session timers (needs ``timer`` in the UA's Supported)."""
    reliable_provisional: bool = True
    """PRACK reliable 1xx and send reliable 180 when the caller requires 100rel (needs
    ``100rel`` in the UA's Supported)."""
    prefer_100rel: bool = False
    """Also send the 180 reliably when the caller only supports 100rel (pjsip's default is
    to do so only when required)."""
    refresh_method: str = "auto"
    """``auto`` (UPDATE when the peer allows it, else re-INVITE), ``UPDATE`` or ``INVITE``."""
    ring_timeout: float = 120.0
    """An incoming call not answered within this many seconds gets 480 (a caller whose
    CANCEL never came must not leave the phone ringing forever)."""

    def __post_init__(self) -> None:
        if self.min_se < MIN_SE_FLOOR:
            raise UsageError(f"Min-SE {self.min_se} is below RFC 4028's floor of 90 s")
        if self.session_expires < self.min_se:
            raise UsageError(
                f"Session-Expires {self.session_expires} is below Min-SE {self.min_se}"
            )
        if not self.ring_timeout > 0:
            raise UsageError(f"ring timeout {self.ring_timeout} s must be positive")
        if self.refresh_method not in ("auto", "UPDATE", "INVITE"):
            raise UsageError(
                f"refresh method {self.refresh_method!r} is not auto, UPDATE or INVITE"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRinging:
    """The callee is alerting (a 180/183 arrived)."""

    status: int
    """The provisional status (180, 181, 182, 183)."""
    reason: str
    """Its reason phrase."""
    reliable: bool
    """Whether it was sent reliably (RFC 3262) and PRACKed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaNegotiated:
    """An offer/answer exchange completed: the media stream follows this."""

    audio: NegotiatedAudio
    """Remote address, codec, direction and SRTP keys (keys are hidden from repr)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEstablished:
    """The call is up: 2xx received (UAC) or ACK received (UAS)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded:
    """The call is over, for whatever reason."""

    reason: str
    """Why, in words."""
    status: int | None = None
    """The SIP status that ended it (486, 487, 488...), if one did."""
    by_peer: bool = False
    """True when the peer ended it (BYE, CANCEL, a rejection)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReofferFailed:
    """A re-INVITE/UPDATE of ours was refused; the previous media stays."""

    status: int
    """The final status (488, 491...)."""
    reason: str
    """The reason phrase or Warning text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRefreshed:
    """An RFC 4028 refresh succeeded (ours or the peer's)."""

    interval: int
    """The session interval now in force."""
    refresher: str
    """``"local"`` or ``"remote"``: who refreshes next."""


CallEvent = (
    CallRinging | MediaNegotiated | CallEstablished | CallEnded | ReofferFailed
    | SessionRefreshed
)


class CallState(enum.Enum):
    """Where the call stands (RFC 3261 13; dialog states in 12)."""

    CALLING = "calling"
    """UAC: INVITE sent, no response with a To tag yet."""
    EARLY = "early"
    """UAC: a provisional response with a To tag arrived."""
    INCOMING = "incoming"
    """UAS: INVITE received and accepted for ringing, not answered yet."""
    ANSWERED = "answered"
    """UAS: 200 sent, waiting for the ACK."""
    CONFIRMED = "confirmed"
    """Both sides agree the call is up."""
    TERMINATED = "terminated"
    """Over."""


class _In(enum.Enum):
    PROVISIONAL = "provisional"
    SUCCESS = "2xx"
    FAILURE = "failure"
    ANSWER = "answer"
    REJECT = "reject"
    ACK = "ack"
    END = "end"


_S = CallState
# One table for the call's life; pairs not listed are errors (ignored ones are listed).
_TRANSITIONS: dict[tuple[CallState, _In], CallState] = {
    (_S.CALLING, _In.PROVISIONAL): _S.EARLY,
    (_S.EARLY, _In.PROVISIONAL): _S.EARLY,
    (_S.CALLING, _In.SUCCESS): _S.CONFIRMED,
    (_S.EARLY, _In.SUCCESS): _S.CONFIRMED,
    (_S.CONFIRMED, _In.SUCCESS): _S.CONFIRMED,  # a 2xx retransmission, or a second fork
    (_S.CALLING, _In.FAILURE): _S.TERMINATED,
    (_S.EARLY, _In.FAILURE): _S.TERMINATED,
    (_S.INCOMING, _In.ANSWER): _S.ANSWERED,
    (_S.INCOMING, _In.REJECT): _S.TERMINATED,
    (_S.ANSWERED, _In.ACK): _S.CONFIRMED,
    (_S.CONFIRMED, _In.ACK): _S.CONFIRMED,  # the ACK of a re-INVITE
    (_S.CALLING, _In.END): _S.TERMINATED,
    (_S.EARLY, _In.END): _S.TERMINATED,
    (_S.INCOMING, _In.END): _S.TERMINATED,
    (_S.ANSWERED, _In.END): _S.TERMINATED,
    (_S.CONFIRMED, _In.END): _S.TERMINATED,
    (_S.TERMINATED, _In.END): _S.TERMINATED,
    (_S.TERMINATED, _In.PROVISIONAL): _S.TERMINATED,  # late responses after a CANCEL
    (_S.TERMINATED, _In.FAILURE): _S.TERMINATED,
    (_S.TERMINATED, _In.ACK): _S.TERMINATED,
}


def _has_tag(message: SipRequest | SipResponse, header: str, tag: str) -> bool:
    return any(t.lower() == tag for t in message.tokens(header))


def _warning_text(response: SipResponse) -> str:
    warning = response.headers.get("Warning")
    return f"{response.status} {response.reason}" + (f" ({warning})" if warning else "")


# --------------------------------------------------------------------------------------------
# One call


class CallSession:
    """One INVITE session (UAC or UAS) on a shared :class:`UserAgent`.

    Build it with :meth:`outgoing_call` (places the call at once) or
    :meth:`incoming_call` (a new INVITE). Feed it the UA events of its Call-ID and its
    timers.
    """

    def __init__(
        self,
        ua: UserAgent,
        *,
        config: CallConfig,
        outgoing: bool,
        call_id: str,
        local: LocalAudio | None,
        destination: Address | None = None,
        rng: random.Random | None = None,
        key_factory: Callable[[], bytes] | None = None,
        contact: NameAddr | None = None,
        auth: DigestClient | None = None,
    ) -> None:
        self.ua = ua
        self.config = config
        self.outgoing = outgoing
        self.call_id = call_id
        self.destination = destination
        # The account's own Contact and digest client (a UA may carry several accounts);
        # None: the UA's.
        self._contact: NameAddr | None = contact
        self._auth = auth
        self.state = CallState.CALLING if outgoing else CallState.INCOMING
        self.dialog: Dialog | None = None
        #: The INVITE that started the call (as last sent, after an auth retry).
        self.invite: SipRequest | None = None
        #: The last final status of the initial INVITE.
        self.final_status: int | None = None
        self._rng = rng or random.Random()
        self._key_factory = key_factory
        self._local = local
        self.oa: OfferAnswer | None = self._new_oa(local) if local is not None else None
        self._events: deque[CallEvent] = deque()
        self._invite_handle: int | None = None
        self._cancel_requested = False
        # UAC 100rel: RSeq values already PRACKed, per remote tag (RFC 3262 4).
        self._prack_client = PrackClient()
        self._early_answer: bytes | None = None
        # UAS 100rel.
        # RFC 3262 as UAS: a sub-machine with its own deadline; this class decides.
        timers = ua.config.timers
        self._provisional = ReliableProvisional(
            self._rng, t1=timers.t1, t2=timers.t2, reliable_transport=ua.config.reliable)
        self._offer_in_invite = False
        self._answer_from_ack = False
        # In-dialog transactions of ours: handle -> purpose.
        self._client: dict[int, str] = {}
        self._reinvite_handle: int | None = None
        self._reinvite_kind = ""
        self._bye_handle: int | None = None
        self._retry_at: float | None = None
        self._retry_kind = ""
        self._peer_allow: set[str] = set()
        # RFC 4028, a sub-machine with its own deadlines; this class decides what they mean.
        self._timer = SessionTimer(
            enabled=config.session_timers and "timer" in ua.config.signature.supported,
            session_expires=config.session_expires, min_se=config.min_se,
        )
        self._prack_on = (
            config.reliable_provisional and "100rel" in ua.config.signature.supported
        )
        self._answer_error = ""
        self._bye_after_ack = False
        self._ring_until: float | None = None
        self._ring_status = 480
        self._ended: CallEnded | None = None

    def __repr__(self) -> str:
        role = "UAC" if self.outgoing else "UAS"
        return f"<CallSession {role} {self.call_id} {self.state.value}>"

    def _new_oa(self, local: LocalAudio) -> OfferAnswer:
        if self._key_factory is not None:
            return OfferAnswer(local, key_factory=self._key_factory)
        return OfferAnswer(local)

    # -- output ------------------------------------------------------------------------------

    def next_event(self) -> CallEvent | None:
        """The next thing that happened, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline of this call (reliable 1xx, refresh, expiry, 491 retry)."""
        times = [t for t in (self._provisional.retransmit_at, self._timer.get_timer(),
                             self._retry_at,
                             self._ring_until) if t is not None]
        return min(times) if times else None

    @property
    def ended(self) -> CallEnded | None:
        """How the call ended, once it has."""
        return self._ended

    @property
    def negotiated(self) -> NegotiatedAudio | None:
        """The media agreed so far."""
        return self.oa.negotiated if self.oa is not None else None

    @property
    def finished(self) -> bool:
        """Over, with nothing left to report and no transaction of ours still out: the
        session can be forgotten."""
        return self.state is CallState.TERMINATED and not self._events and not self._client

    def abandon(self, reason: str, *, status: int = 503) -> None:
        """The transport under the call is gone (its UA with it): end the call now, with
        *status*, without sending anything; nothing will ever answer its transactions."""
        self._client.clear()
        self._end(reason, status=status)

    @property
    def remote_offer(self) -> bytes:
        """The SDP body of the incoming INVITE (empty when it had none)."""
        return self.invite.body if self.invite is not None and not self.outgoing else b""

    def _set_state(self, event: _In) -> None:
        try:
            new = _TRANSITIONS[(self.state, event)]
        except KeyError:
            raise UsageError(
                f"call {self.call_id}: cannot {event.value} in state {self.state.value}"
            ) from None
        if new is not self.state:
            logger.debug("call %s: %s -> %s", self.call_id, self.state.value, new.value)
            self.state = new

    def _end(self, reason: str, *, status: int | None = None, by_peer: bool = False) -> None:
        if self._ended is not None:
            return
        self._set_state(_In.END)
        self._retry_at = None
        self._provisional.retransmit_at = None
        self._timer.clear_deadlines()
        self._ring_until = None
        self._ended = CallEnded(reason=reason, status=status, by_peer=by_peer)
        self._events.append(self._ended)

    # -- placing a call ---------------------------------------------------------------------

    @classmethod
    def outgoing_call(
        cls,
        ua: UserAgent,
        target: SipUri,
        now: float,
        *,
        from_: NameAddr,
        local: LocalAudio,
        config: CallConfig | None = None,
        to: NameAddr | None = None,
        destination: Address | None = None,
        routes: Iterable[NameAddr] = (),
        rng: random.Random | None = None,
        key_factory: Callable[[], bytes] | None = None,
        contact: NameAddr | None = None,
        auth: DigestClient | None = None,
    ) -> CallSession:
        """Place a call to *target*: the INVITE (with the phone's SDES offer) goes at once.

        *contact* and *auth* are the calling account's Contact and digest client (default:
        the UA's)."""
        rng = rng or random.Random()
        call_id = new_call_id(rng)
        session = cls(
            ua, config=config or CallConfig(), outgoing=True, call_id=call_id, local=local,
            destination=destination, rng=rng, key_factory=key_factory, contact=contact,
            auth=auth,
        )
        assert session.oa is not None
        body = bytes(session.oa.create_offer())
        invite = ua.create_request(
            "INVITE", target, from_=from_.with_tag(new_tag(rng)) if from_.tag is None else from_,
            to=to or NameAddr(target), call_id=call_id, headers=session._timer.invite_headers(),
            body=body, content_type=SDP, routes=tuple(routes),
            contact=contact if contact is not None else True,
        )
        session._send_invite(invite, now)
        return session

    def _send_invite(self, invite: SipRequest, now: float) -> None:
        self.invite = invite
        self._invite_handle = self.ua.send_request(invite, now, destination=self.destination,
                                                   auth=self._auth)

    def cancel(self, now: float) -> None:
        """Give up an outgoing call that has no final answer yet (RFC 3261 9.1)."""
        if not self.outgoing or self.state not in (CallState.CALLING, CallState.EARLY):
            raise UsageError(f"call {self.call_id} is {self.state.value}: nothing to cancel")
        self._cancel_requested = True
        assert self._invite_handle is not None
        self.ua.cancel(self._invite_handle, now)

    # -- answering a call --------------------------------------------------------------------

    @classmethod
    def incoming_call(
        cls,
        ua: UserAgent,
        event: RequestReceived,
        now: float,
        *,
        local: LocalAudio,
        config: CallConfig | None = None,
        rng: random.Random | None = None,
        key_factory: Callable[[], bytes] | None = None,
        contact: NameAddr | None = None,
        auth: DigestClient | None = None,
    ) -> CallSession:
        """A session for a new INVITE (*event*, no To tag). Its offer is checked at once, as
        the firmware does before ringing: an unacceptable one is refused here (488 with a
        Warning, 400, 415, 422) and the session comes back ``TERMINATED`` with its
        ``final_status``; otherwise it is ``INCOMING``, ready to :meth:`ring`.

        *local* is the account's media template (its address; the port is set at
        :meth:`answer`)."""
        session = cls(
            ua, config=config or CallConfig(), outgoing=False, call_id=event.request.call_id,
            local=local, rng=rng, key_factory=key_factory, contact=contact, auth=auth,
        )
        session._receive_invite(event, now)
        return session

    def _receive_invite(self, event: RequestReceived, now: float) -> bool:
        """Check a new INVITE; answer the refusals itself. True when the phone rings."""
        request = event.request
        handle = event.transaction
        assert handle is not None
        self.invite = request
        self._invite_handle = handle
        self._peer_allow = {m.upper() for m in request.tokens("Allow")}
        timer = self._timer
        timer.note_request(request)
        try:
            Dialog.from_uas(request, local_tag="probe")
            too_short = timer.too_short(request)
            peer_min_se = min_se_of(request)
        except (DialogError, SipParseError) as exc:
            self._refuse(400, str(exc), now)
            return False
        if too_short:
            # RFC 4028 8.1: an interval below our Min-SE is refused with 422 and our Min-SE.
            self._refuse(422, "Session-Expires below Min-SE", now,
                         headers=[("Min-SE", str(timer.min_se))])
            return False
        timer.raise_min_se(peer_min_se)
        if request.body:
            if request.media_type != SDP:
                self._refuse(415, f"body type {request.media_type} is not SDP", now,
                             headers=[("Accept", SDP)])
                return False
            self._offer_in_invite = True
            # Decide now, as the firmware does: the offer is checked before ringing. The
            # answer itself is built at answer() time with the real media port.
            probe = self._new_oa(self._local or LocalAudio(
                host=self.ua.config.local_host.strip("[]"), rtp_port=9))
            try:
                probe.receive_offer(request.body)
            except NegotiationError as exc:
                self._refuse(exc.status or 488, exc.reason, now,
                             headers=[("Warning", exc.warning(self.ua.config.local_host))])
                return False
            except ProtocolError as exc:  # SdpParseError: malformed body, 400
                self._refuse(exc.status or 400, str(exc), now)
                return False
        # RFC 3261 13.3.1.1: an INVITE's Expires bounds the ringing (then 487); our own
        # ring timeout bounds it too (then 480).
        self._ring_until = now + self.config.ring_timeout
        expires = request.expires
        if expires is not None and now + expires < self._ring_until:
            self._ring_until = now + expires
            self._ring_status = 487
        if self._prack_on and (
            _has_tag(request, "Require", "100rel")
            or (self.config.prefer_100rel and _has_tag(request, "Supported", "100rel"))
        ):
            self._provisional.enabled = True
        return True

    def _refuse(
        self,
        status: int,
        why: str,
        now: float,
        *,
        headers: Iterable[tuple[str, HeaderValue]] = (),
    ) -> None:
        logger.info("call %s refused with %d: %s", self.call_id, status, why)
        assert self._invite_handle is not None
        self.final_status = status
        self.ua.respond(self._invite_handle, status, now, headers=headers)
        self._end(f"refused with {status}: {why}", status=status)

    def ring(self, now: float, *, status: int = 180) -> None:
        """Send 180 Ringing (or 183); reliably when 100rel is in use (RFC 3262 3)."""
        if self.outgoing or self.state is not CallState.INCOMING:
            raise UsageError(f"call {self.call_id} is {self.state.value}: cannot ring")
        if not 101 <= status <= 199:
            raise UsageError(f"{status} is not a provisional status")
        assert self._invite_handle is not None and self.invite is not None
        if self._provisional.enabled:
            if self._provisional.send(status, now) is not None:
                self._send_reliable(now)
            # else RFC 3262 3: one unacknowledged reliable 1xx at a time
        else:
            response = self.ua.respond(self._invite_handle, status, now,
                                       headers=self._capability_headers(),
                                       contact=self._contact)
            self._ensure_uas_dialog(response, final=False)

    def _send_reliable(self, now: float) -> None:
        unacked = self._provisional.unacked
        assert unacked is not None and self._invite_handle is not None
        rseq, status = unacked
        response = self.ua.respond(
            self._invite_handle, status, now,
            headers=[("Require", "100rel"), ("RSeq", str(rseq)), *self._capability_headers()],
            contact=self._contact,
        )
        self._ensure_uas_dialog(response, final=False)

    def _capability_headers(self) -> list[tuple[str, HeaderValue]]:
        sig = self.ua.config.signature
        headers: list[tuple[str, HeaderValue]] = [("Allow", sig.allow_header)]
        if sig.supported:
            headers.append(("Supported", ", ".join(sig.supported)))
        return headers

    def _ensure_uas_dialog(self, response: SipResponse, *, final: bool) -> None:
        if self.dialog is None:
            assert self.invite is not None and response.to_tag is not None
            self.dialog = Dialog.from_uas(
                self.invite, local_tag=response.to_tag, final=final,
                secure_transport=self.ua.config.transport.upper() == "TLS",
            )
        elif final and self.dialog.state is DialogState.EARLY:
            self.dialog.state = DialogState.CONFIRMED

    def answer(self, now: float, *, local: LocalAudio | None = None) -> None:
        """Answer with 200 OK: the SDP answer to the INVITE's offer, or the phone's offer
        when the INVITE had none (the answer then comes in the ACK)."""
        if self.outgoing or self.state is not CallState.INCOMING:
            raise UsageError(f"call {self.call_id} is {self.state.value}: cannot answer")
        local = local or self._local
        if local is None:
            raise UsageError("answering needs the phone's media address (LocalAudio)")
        assert self._invite_handle is not None and self.invite is not None
        self.oa = self._new_oa(local)
        negotiated: NegotiatedAudio | None = None
        if self._offer_in_invite:
            try:
                answer, negotiated = self.oa.receive_offer(self.invite.body)
            except NegotiationError as exc:  # cannot happen after the probe, but be safe
                self._refuse(exc.status or 488, exc.reason, now,
                             headers=[("Warning", exc.warning(self.ua.config.local_host))])
                return
            body = bytes(answer)
        else:
            body = bytes(self.oa.create_offer())
            self._answer_from_ack = True
        headers = [*self._capability_headers(), *self._timer.answer_headers(self.invite)]
        self._ring_until = None
        self._set_state(_In.ANSWER)
        self.final_status = 200
        if self._provisional.unacked is not None:
            # As pjsip does (sip_100rel.c), the 2xx waits for the PRACK of the reliable 1xx
            # still out, so the caller sees 1xx, PRACK/200, then the INVITE's 200.
            self._provisional.held = HeldAnswer(headers=tuple(headers), body=body)
        else:
            self._send_200(headers, body, now)
        if negotiated is not None:
            self._events.append(MediaNegotiated(audio=negotiated))

    def _send_200(
        self, headers: Iterable[tuple[str, HeaderValue]], body: bytes, now: float
    ) -> None:
        assert self._invite_handle is not None
        self._provisional.stop()
        response = self.ua.respond(self._invite_handle, 200, now, headers=headers, body=body,
                                   content_type=SDP, contact=self._contact)
        self._ensure_uas_dialog(response, final=True)

    def reject(self, now: float, status: int = 486) -> None:
        """Refuse the incoming call: 486 Busy Here, 603 Decline, 480..."""
        if self.outgoing or self.state is not CallState.INCOMING:
            raise UsageError(f"call {self.call_id} is {self.state.value}: cannot reject")
        if not 300 <= status <= 699:
            raise UsageError(f"{status} is not a rejection status (300-699)")
        assert self._invite_handle is not None
        self._provisional.stop()
        self.final_status = status
        self.ua.respond(self._invite_handle, status, now)
        self._set_state(_In.REJECT)
        self._retry_at = None
        self._provisional.retransmit_at = None
        self._timer.clear_deadlines()
        self._ring_until = None
        self._ended = CallEnded(reason=f"rejected with {status}", status=status)
        self._events.append(self._ended)

    # -- session timers (the sub-machine is call/session_timer.py) ------------------------------

    @property
    def session_interval(self) -> int | None:
        """The RFC 4028 session interval in force, None without a session timer."""
        return self._timer.interval

    @property
    def refresher_local(self) -> bool:
        """Whether the phone refreshes the session (RFC 4028)."""
        return self._timer.refresher_local

    def _timing(self, timing: SessionTiming | None) -> None:
        if timing is not None:
            self._events.append(SessionRefreshed(interval=timing.interval,
                                                 refresher=timing.refresher))

    # -- in-dialog requests of ours -----------------------------------------------------------

    def _dialog_request(
        self,
        method: str,
        *,
        headers: Iterable[tuple[str, HeaderValue]] = (),
        body: bytes = b"",
    ) -> SipRequest:
        assert self.dialog is not None
        sig = self.ua.config.signature
        extra: list[tuple[str, HeaderValue]] = list(headers)
        contact = None
        if method in ("INVITE", "UPDATE"):
            contact = self._contact or self.ua.contact
            extra += self._capability_headers()
        return self.dialog.create_request(
            method, contact=contact, headers=extra, body=body,
            content_type=SDP if body else None, max_forwards=sig.max_forwards,
            user_agent=sig.user_agent,
        )

    def _send(self, request: SipRequest, now: float, purpose: str) -> int:
        handle = self.ua.send_request(request, now, auth=self._auth)
        self._client[handle] = purpose
        return handle

    def hold(self, now: float) -> None:
        """Put the call on hold: a re-INVITE with ``sendonly`` (``inactive`` if held)."""
        self._reoffer(now, "hold")

    def resume(self, now: float) -> None:
        """Take the call off hold: a re-INVITE with ``sendrecv``."""
        self._reoffer(now, "resume")

    def refresh(self, now: float) -> None:
        """Refresh the session now (RFC 4028): UPDATE without SDP or a re-INVITE."""
        self._refresh(now)

    def _check_confirmed(self, what: str) -> None:
        if self.state is not CallState.CONFIRMED or self.dialog is None:
            raise UsageError(f"call {self.call_id} is {self.state.value}: cannot {what}")
        if self._reinvite_handle is not None:
            raise UsageError(f"call {self.call_id}: a re-INVITE is already in progress")

    def _reoffer(self, now: float, kind: str) -> None:
        self._check_confirmed(kind)
        assert self.oa is not None
        if self.oa.state is not OfferAnswerState.STABLE:
            raise UsageError(f"call {self.call_id}: media negotiation is not finished")
        if kind == "hold":
            offer = self.oa.hold()
        elif kind == "resume":
            offer = self.oa.resume()
        else:
            offer = self.oa.create_offer()
        request = self._dialog_request("INVITE", headers=self._timer.refresh_headers(),
                                       body=bytes(offer))
        self._reinvite_handle = self._send(request, now, "reinvite")
        self._reinvite_kind = kind

    def _refresh(self, now: float) -> None:
        self._check_confirmed("refresh")
        method = self.config.refresh_method
        if method == "auto":
            method = "UPDATE" if "UPDATE" in self._peer_allow else "INVITE"
        if method == "UPDATE":
            request = self._dialog_request("UPDATE", headers=self._timer.refresh_headers())
            self._reinvite_handle = self._send(request, now, "update")
            self._reinvite_kind = "refresh"
        else:
            self._reoffer(now, "refresh")

    def hangup(self, now: float) -> None:
        """End the call: CANCEL before an answer, BYE after; 603 for an unanswered
        incoming call."""
        if self.state is CallState.TERMINATED:
            return
        if self.state in (CallState.CALLING, CallState.EARLY):
            self.cancel(now)
            return
        if self.state is CallState.INCOMING:
            self.reject(now, 603)
            return
        if self.state is CallState.ANSWERED:
            if self._provisional.held is not None:
                # The 200 is still held for the PRACK: decline instead of answering.
                self._provisional.stop()
                self._refuse(603, "hung up before the answer went out", now)
                return
            # RFC 3261 15: no BYE before the ACK of our 2xx (or Timer L): send it then.
            self._bye_after_ack = True
            return
        self._send_bye(now, "hung up")

    def _send_bye(self, now: float, reason: str, *, status: int | None = None) -> None:
        if self.dialog is None or self.dialog.state is DialogState.TERMINATED:
            self._end(reason, status=status)
            return
        request = self._dialog_request("BYE")
        self._bye_handle = self._send(request, now, "bye")
        self._end(reason, status=status)

    # -- timers ---------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at *now*."""
        if self._ring_until is not None and now >= self._ring_until:
            self._ring_until = None
            if self.state is CallState.INCOMING:
                self._provisional.stop()
                self._refuse(self._ring_status, "not answered in time", now)
        if self.state not in (CallState.INCOMING, CallState.ANSWERED):
            self._provisional.retransmit_at = None
        due_1xx = self._provisional.due(now)
        if due_1xx == "retransmit":
            self._send_reliable(now)
        elif due_1xx == "give-up":
            # RFC 3262 3: no PRACK within 64*T1: reject the INVITE with a 5xx.
            self._refuse(504, "no PRACK for the reliable provisional response", now)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            if self.state is CallState.CONFIRMED and self._reinvite_handle is None:
                if self._retry_kind == "refresh":
                    self._refresh(now)
                else:
                    self._reoffer(now, self._retry_kind)
        due = self._timer.due(now)
        if due == "refresh":
            if self.state is CallState.CONFIRMED and self._reinvite_handle is None:
                self._refresh(now)
            elif self.state is CallState.CONFIRMED:
                self._timer.postpone_refresh(now)  # a re-INVITE is out; it refreshes too
        elif due == "expire" and self.state in (CallState.CONFIRMED, CallState.ANSWERED):
            # RFC 4028 10: no refresh arrived in time: end the session with BYE.
            self._send_bye(now, "session expired (RFC 4028)", status=408)

    # -- input ------------------------------------------------------------------------------------

    def handle_event(self, event: UaEvent, now: float) -> None:
        """Take one UA event of this call."""
        if isinstance(event, ResponseReceived):
            if event.transaction == self._invite_handle and self.outgoing:
                self._on_invite_response(event, now)
            elif event.transaction in self._client:
                self._on_dialog_response(event, now)
        elif isinstance(event, RequestReceived):
            self._on_request(event, now)
        elif isinstance(event, RequestCancelled):
            if event.transaction == self._invite_handle and (
                self.state is CallState.INCOMING or self._provisional.held is not None
            ):
                self._provisional.stop()
                self.final_status = 487
                self._end("cancelled by the caller", status=487, by_peer=True)
        elif isinstance(event, AuthenticationRejected):
            if event.transaction == self._invite_handle:
                self._end(f"authentication failed: {event.reason}",
                          status=event.response.status)
            elif self._client.pop(event.transaction, None) is not None:
                self._dialog_failed(event.transaction, event.response.status,
                                    event.reason, now)
        elif isinstance(event, TransactionTimedOut | TransportFailed):
            what = "no answer" if isinstance(event, TransactionTimedOut) else "transport failed"
            if event.transaction == self._invite_handle:
                if self.outgoing and self.state in (CallState.CALLING, CallState.EARLY):
                    self._end(f"{what} to INVITE", status=408)
                elif not self.outgoing and self.state is CallState.ANSWERED:
                    # RFC 3261 13.3.1.4: no ACK for our 2xx: end the session with BYE.
                    self._send_bye(now, "no ACK for the 200 OK", status=408)
            elif event.transaction in self._client:
                self._client.pop(event.transaction)
                self._dialog_failed(event.transaction, 408, what, now)

    def _on_invite_response(self, event: ResponseReceived, now: float) -> None:
        response = event.response
        invite = event.request
        self.invite = invite
        status = response.status
        if status == 100:
            return
        if status < 200:
            self._on_provisional(invite, response, now)
        elif status < 300:
            self._on_success(event, now)
        else:
            self._on_failure(invite, response, now)

    def _on_provisional(self, invite: SipRequest, response: SipResponse, now: float) -> None:
        if self.state is CallState.TERMINATED or response.to_tag is None:
            return
        reliable = self._prack_on and _has_tag(response, "Require", "100rel")
        if self.dialog is None or self.dialog.id.remote_tag != response.to_tag:
            try:
                self.dialog = Dialog.from_uac(
                    invite, response,
                    secure_transport=self.ua.config.transport.upper() == "TLS")
            except (DialogError, UsageError) as exc:
                logger.info("call %s: unusable %d: %s", self.call_id, response.status, exc)
                return
        else:
            try:
                self.dialog.receive_response(invite, response)
            except DialogError:
                return
        if reliable:
            # RFC 3262 4: PRACK each new RSeq once, in order; a retransmission is ignored.
            try:
                # ASCII digits, 1..2**31-1 (RFC 3262 7.1): int() also took "١", " 1" and "-1".
                rseq = parse_int(response.headers.get("RSeq") or "", "RSeq", 2**31 - 1)
            except SipParseError:
                logger.info("call %s: reliable %d without a usable RSeq", self.call_id,
                            response.status)
                reliable = False
            else:
                if not self._prack_client.accept(response.to_tag, rseq):
                    return  # 4: a retransmission, or out of order (wait for the missing one)
                prack = self._dialog_request(
                    "PRACK", headers=[("RAck", f"{rseq} {invite.cseq.seq} INVITE")])
                self._send(prack, now, "prack")
        if response.body and response.media_type == SDP:
            self._take_answer(response.body, now)
        self._set_state(_In.PROVISIONAL)
        self._events.append(CallRinging(status=response.status, reason=response.reason,
                                        reliable=reliable))

    def _take_answer(self, body: bytes, now: float) -> bool:
        """The SDP answer to our offer (from a 18x or the 2xx): take it once."""
        assert self.oa is not None
        if self.oa.state not in (OfferAnswerState.OFFER_SENT, OfferAnswerState.REOFFER_SENT):
            if self._early_answer is not None and body != self._early_answer:
                logger.info("call %s: a second, different answer is ignored", self.call_id)
            return True
        try:
            negotiated = self.oa.receive_answer(body)
        except ProtocolError as exc:
            logger.info("call %s: unusable answer: %s", self.call_id, exc)
            self._answer_error = str(exc)
            return False
        self._early_answer = body
        self._events.append(MediaNegotiated(audio=negotiated))
        return True

    def _on_success(self, event: ResponseReceived, now: float) -> None:
        response = event.response
        invite = event.request
        previous = self.dialog
        try:
            dialog = Dialog.from_uac(
                invite, response, secure_transport=self.ua.config.transport.upper() == "TLS")
        except (DialogError, UsageError) as exc:
            # Unusable 2xx (no Contact...): ACK cannot be routed; we can only give up.
            logger.info("call %s: unusable 2xx: %s", self.call_id, exc)
            if self.state is not CallState.TERMINATED:
                self._end(f"unusable 200 OK: {exc}", status=response.status)
            return
        if previous is not None and previous.id == dialog.id and previous.local_cseq:
            # Keep the CSeq of PRACKs sent in the early dialog.
            dialog.local_cseq = max(previous.local_cseq, dialog.local_cseq or 0)
        if self.state is CallState.CONFIRMED and self.dialog is not None and (
            self.dialog.id != dialog.id
        ):
            # RFC 3261 13.2.2.4: a second fork answered: ACK it and hang that one up.
            self.ua.send_ack(event.transaction, response, now, dialog=dialog)
            bye = dialog.create_request("BYE", user_agent=self.ua.config.signature.user_agent)
            self.ua.send_request(bye, now, auth=self._auth)
            return
        self.dialog = dialog
        self.final_status = response.status
        self._peer_allow = {m.upper() for m in response.tokens("Allow")}
        self.ua.send_ack(event.transaction, response, now, dialog=dialog)
        if self.state is CallState.TERMINATED:
            # Answered after we cancelled or gave up: RFC 3261 15: ACK then BYE.
            bye = dialog.create_request("BYE", user_agent=self.ua.config.signature.user_agent)
            self._send(bye, now, "bye")
            return
        if response.body and response.media_type == SDP:
            ok = self._take_answer(response.body, now)
        else:
            ok = self.oa is not None and self.oa.state is OfferAnswerState.STABLE
            self._answer_error = "the 200 OK carries no SDP answer"
        self._set_state(_In.SUCCESS)
        if not ok:
            self._send_bye(now, f"unusable answer: {self._answer_error}", status=488)
            return
        self._events.append(CallEstablished())
        self._timing(self._timer.from_response(response, now))

    def _on_failure(self, invite: SipRequest, response: SipResponse, now: float) -> None:
        status = response.status
        if self.state is CallState.TERMINATED:
            return
        if (
            status == 422
            and not self._cancel_requested
            and self._timer.retry_after_422(response)
        ):
            # RFC 4028 7.4: retry with the peer's Min-SE, same Call-ID and tags, CSeq + 1.
            headers = invite.headers.copy()
            headers.remove("Via")
            for name in ("Session-Expires", "Min-SE", "x"):
                headers.remove(name)
            content_type = headers.lines("Content-Type")
            headers.remove("Content-Type")
            headers.set("CSeq", f"{invite.cseq.seq + 1} INVITE")
            for name, value in self._timer.invite_headers():
                headers.add(name, value)
            for value in content_type:
                headers.add("Content-Type", value)
            retry = SipRequest("INVITE", invite.uri, headers, invite.body)
            self._send_invite(retry, now)
            return
        self.final_status = status
        if self.oa is not None and self.oa.state is OfferAnswerState.OFFER_SENT:
            self.oa.offer_rejected()
        if status == 487 and self._cancel_requested:
            self._end("cancelled", status=487)
        else:
            # The reason is the answer itself; whoever reports it says that the call failed.
            self._end(_warning_text(response), status=status, by_peer=True)

    def _on_dialog_response(self, event: ResponseReceived, now: float) -> None:
        handle = event.transaction
        response = event.response
        status = response.status
        if status < 200:
            return
        purpose = self._client.pop(handle)
        if purpose in ("reinvite", "update") and handle == self._reinvite_handle:
            if 200 <= status < 300:
                self._reinvite_handle = None
                assert self.dialog is not None
                if purpose == "reinvite":
                    # RFC 3261 13.2.2.4: a 2xx is ACKed whatever we think of it.
                    self.ua.send_ack(handle, response, now, dialog=self.dialog)
                if self.state is CallState.TERMINATED:
                    return  # the call ended while the re-INVITE was out (we sent BYE)
                try:
                    self.dialog.receive_response(event.request, response)
                except DialogError as exc:
                    logger.info("call %s: %s", self.call_id, exc)
                    return
                if purpose == "reinvite" and response.body and response.media_type == SDP:
                    if not self._take_answer(response.body, now):
                        self._send_bye(now, f"unusable answer: {self._answer_error}",
                                       status=488)
                        return
                elif purpose == "reinvite" and self.oa is not None and self.oa.state in (
                    OfferAnswerState.REOFFER_SENT,
                ):
                    self.oa.offer_rejected()
                self._timing(self._timer.from_response(response, now))
            else:
                self._dialog_failed(handle, status, _warning_text(response), now,
                                    response=response)
        # BYE and PRACK answers change nothing: the call ended or goes on either way.

    def _dialog_failed(
        self,
        handle: int,
        status: int,
        reason: str,
        now: float,
        *,
        response: SipResponse | None = None,
    ) -> None:
        if handle == self._bye_handle:
            return
        if handle != self._reinvite_handle:
            return
        kind = self._reinvite_kind
        self._reinvite_handle = None
        if self.oa is not None and self.oa.state is OfferAnswerState.REOFFER_SENT:
            self.oa.offer_rejected()
        if status in (408, 481):
            # RFC 3261 14.1 / 12.2.1.2: the dialog is gone.
            self._send_bye(now, f"re-INVITE failed: {reason}", status=status)
            return
        if status == 422 and response is not None and self._timer.retry_refresh_after_422(
            response
        ):
            self._retry_at, self._retry_kind = now, kind
            return
        if status == 491:
            # RFC 3261 14.1: retry after 2.1-4 s if we own the Call-ID, else 0-2 s.
            delay = self._rng.uniform(2.1, 4.0) if self.outgoing else self._rng.uniform(0, 2.0)
            self._retry_at, self._retry_kind = now + delay, kind
        elif kind == "refresh" and status in (405, 501) and self.config.refresh_method == "auto":
            self._peer_allow.discard("UPDATE")
            self._retry_at, self._retry_kind = now, "refresh"
        self._events.append(ReofferFailed(status=status, reason=reason))

    # -- requests from the peer ---------------------------------------------------------------

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        method = request.method
        handle = event.transaction
        if method == "ACK":
            self._on_ack(request, now)
            return
        if handle is None:
            return
        dialog = self.dialog
        if dialog is None or not dialog.matches(request, local_is_from=False):
            self.ua.respond(handle, 481, now)
            return
        try:
            dialog.receive_request(request)
        except DialogError as exc:
            self.ua.respond(handle, exc.status or 500, now)
            return
        if method == "BYE":
            self.ua.respond(handle, 200, now)
            self._provisional.retransmit_at = None
            self._end("hung up by the peer", by_peer=True)
        elif method == "PRACK":
            self._on_prack(request, handle, now)
        elif method in ("INVITE", "UPDATE"):
            self._on_reoffer(request, handle, now)
        elif method == "INFO":
            self.ua.respond(handle, 200, now)
        else:
            self.ua.respond(handle, 405, now,
                            headers=[("Allow", self.ua.config.signature.allow_header)])

    def _on_ack(self, request: SipRequest, now: float) -> None:
        if self.dialog is None or not self.dialog.matches(request, local_is_from=False):
            return
        if self.state is CallState.TERMINATED:
            return
        first = self.state is CallState.ANSWERED
        self._set_state(_In.ACK)
        if self._answer_from_ack:
            self._answer_from_ack = False
            assert self.oa is not None
            if not request.body:
                self.oa.offer_rejected()
                self._send_bye(now, "the ACK carries no SDP answer", status=488)
                return
            if not self._take_answer(request.body, now):
                self._send_bye(now, f"unusable answer in ACK: {self._answer_error}",
                               status=488)
                return
        if first:
            if self._bye_after_ack:
                self._send_bye(now, "hung up")
                return
            self._timing(self._timer.arm_pending(now))
            self._events.append(CallEstablished())
        else:
            self._timing(self._timer.arm_pending(now))

    def _on_prack(self, request: SipRequest, handle: int, now: float) -> None:
        # RFC 3262 3: the RAck must match the unacknowledged reliable 1xx.
        invite = self.invite
        rack = request.headers.get("RAck") or ""
        if invite is None or not self._provisional.acknowledge(rack, invite.cseq.seq):
            self.ua.respond(handle, 481, now)
            return
        self.ua.respond(handle, 200, now)
        held = self._provisional.held
        if held is not None:
            self._send_200(held.headers, held.body, now)

    def _on_reoffer(self, request: SipRequest, handle: int, now: float) -> None:
        method = request.method
        if self.state not in (CallState.CONFIRMED, CallState.ANSWERED) and (
            method == "INVITE" or request.body
        ):
            self.ua.respond(handle, 491 if method == "INVITE" else 500, now)
            return
        if method == "INVITE" and self._reinvite_handle is not None:
            self.ua.respond(handle, 491, now)  # RFC 3261 14.2: glare
            return
        timer = self._timer
        try:
            too_short = timer.too_short(request)
        except SipParseError as exc:
            self.ua.respond(handle, 400, now, reason=f"Bad Session-Expires ({exc})"[:80])
            return
        if too_short:
            self.ua.respond(handle, 422, now, headers=[("Min-SE", str(timer.min_se))])
            return
        timer.note_request(request)
        assert self.oa is not None
        body = b""
        negotiated: NegotiatedAudio | None = None
        offer_in_200 = False
        if request.body:
            try:
                answer, negotiated = self.oa.receive_offer(request.body)
            except NegotiationError as exc:
                # The call goes on with the old media (RFC 3261 14.2).
                self.ua.respond(handle, exc.status or 488, now, headers=[
                    ("Warning", exc.warning(self.ua.config.local_host))])
                return
            except ProtocolError as exc:
                self.ua.respond(handle, exc.status or 400, now)
                return
            body = bytes(answer)
        elif method == "INVITE":
            if self.oa.state is not OfferAnswerState.STABLE:
                self.ua.respond(handle, 491, now)
                return
            body = bytes(self.oa.create_offer())
            offer_in_200 = True
        headers = [*self._capability_headers(), *self._timer.answer_headers(request)]
        self.ua.respond(handle, 200, now, headers=headers, body=body,
                        content_type=SDP if body else None,
                        contact=self._contact or True)
        if offer_in_200:
            self._answer_from_ack = True
        if negotiated is not None:
            self._events.append(MediaNegotiated(audio=negotiated))
        if method == "UPDATE" or not offer_in_200:
            self._timing(self._timer.arm_pending(now))
