"""The sans-I/O SIP user agent core: it owns the transactions of one phone (or one peer).

Feed it datagrams (``receive_datagram(data, source, now)``) or a stream framer's parsed
messages (``receive_message(message, source, now)``), timers (``handle_timer(now)``)
and API calls (``send_request``, ``respond``, ``cancel``, ``send_ack``); take out what to
send (``data_to_send()``), what happened (``next_event()``) and when to wake it next
(``get_timer()``). It does no I/O and reads no clock, as aioquic's ``QuicConnection``.

What it does on its own, as a pjsip-based phone does:

- client transactions: Via with ``rport`` and a ``z9hG4bKPj`` branch, retransmissions,
  Timer B/F timeouts, the ACK for a 300-699, digest answers to 401/407 (the request is sent
  again with CSeq + 1; a second challenge to the same credentials ends in
  :class:`AuthenticationRejected`), pre-emptive answers with a cached nonce;
- server transactions: ``received``/``rport`` on the top Via (RFC 3581), response routing
  (RFC 3261 §18.2.2), absorbed retransmissions, 100 Trying for INVITE, request validation
  (400/405/415/416/420 from :func:`~phone_sim.sip.validate.validate_request`), OPTIONS
  answered with 200 and the phone's Allow, CANCEL answered (200, then 487 to the INVITE),
  2xx retransmitted until the ACK (RFC 3261 §13.3.1.4);
- matching per RFC 3261 §17.1.3 and §17.2.3 with the RFC 2543 fallback.

The caller (registration, calls, the ``Phone``) gets :class:`RequestReceived`,
:class:`ResponseReceived`, :class:`TransactionTimedOut`, :class:`AuthenticationRejected`,
:class:`RequestCancelled`, :class:`TransportFailed` and :class:`MessageDiscarded`.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from phone_sim.errors import UsageError
from phone_sim.sip.dialog import Dialog
from phone_sim.sip.digest import (
    AuthAttempt,
    AuthenticationFailed,
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestError,
)
from phone_sim.sip.headers import CSeq, Headers, HeaderValue, HeaderValueError, NameAddr, Via
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse, is_keepalive, parse_message
from phone_sim.sip.routing import Address, default_port, response_destination
from phone_sim.sip.signature import (
    PhoneSignature,
    new_branch,
    new_call_id,
    new_tag,
    stamp_via,
)
from phone_sim.sip.transaction import (
    ClientKey,
    ServerKey,
    TimerSettings,
    Transaction,
    TransactionKind,
    TransactionStateError,
    TxAction,
    TxInput,
    TxState,
    client_key,
    new_transaction,
    server_key,
)
from phone_sim.sip.uri import SipUri
from phone_sim.sip.validate import validate_request
from phone_sim.sip.wirelog import log_wire, wire_enabled

logger = logging.getLogger(__name__)

__all__ = [
    "Address",
    "AuthenticationRejected",
    "MessageDiscarded",
    "RequestCancelled",
    "RequestReceived",
    "ResponseReceived",
    "TransactionTimedOut",
    "TransportFailed",
    "UaConfig",
    "UaEvent",
    "UserAgent",
]

_RELIABLE = frozenset({"TCP", "TLS", "WS", "WSS", "SCTP"})
_AUTH_HEADERS = ("Authorization", "Proxy-Authorization")


# --------------------------------------------------------------------------------------------
# Configuration and events


@dataclass(frozen=True, slots=True, kw_only=True)
class UaConfig:
    """Where the user agent lives and how it behaves."""

    local_host: str
    """The host (address) written in Via sent-by and Contact."""
    local_port: int
    """The port written in Via sent-by and Contact."""
    transport: str = "UDP"
    """``UDP``, ``TCP`` or ``TLS``; TCP and TLS are reliable (no retransmissions)."""
    user: str | None = None
    """The user part of the Contact URI."""
    signature: PhoneSignature = field(default_factory=PhoneSignature)
    """User-Agent, Allow, Supported and the digest algorithms allowed."""
    timers: TimerSettings = field(default_factory=TimerSettings)
    """T1, T2, T4 and Timer D."""
    credentials: tuple[DigestCredentials, ...] = ()
    """Digest credentials; empty means 401/407 go to the caller as plain responses."""
    preemptive_auth: bool = True
    """Answer new requests with the cached nonce (nc + 1), as pjsip does."""
    outbound_proxy: Address | None = None
    """Send every out-of-dialog request there instead of to the Request-URI."""
    answer_options: bool = True
    """Answer OPTIONS with 200 and the phone's capabilities without bothering the caller."""
    max_server_transactions: int = 4096
    """Beyond this many live server transactions new requests get 503 (flood guard)."""

    def __post_init__(self) -> None:
        if self.transport.upper() not in ("UDP", "TCP", "TLS"):
            raise UsageError(f"unknown SIP transport {self.transport!r} (UDP, TCP or TLS)")
        if not 0 < self.local_port < 65536:
            raise UsageError(f"local port {self.local_port} out of range")
        if not self.local_host:
            raise UsageError("the user agent needs a local host")

    @property
    def reliable(self) -> bool:
        """Whether the transport is reliable (TCP, TLS)."""
        return self.transport.upper() in _RELIABLE


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A request arrived that the caller must handle."""

    request: SipRequest
    """The request, its top Via carrying ``received``/``rport``."""
    transaction: int | None
    """The server transaction to answer through :meth:`UserAgent.respond`; None for an ACK."""
    source: Address
    """Where it came from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """A response to one of our requests arrived."""

    response: SipResponse
    """The response."""
    request: SipRequest
    """The request it answers, as last sent (after a digest retry: with credentials)."""
    transaction: int
    """The handle :meth:`UserAgent.send_request` returned."""
    retransmission: bool = False
    """True for a 2xx to INVITE seen again (RFC 6026 Accepted state); its ACK was resent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionTimedOut:
    """A transaction gave up: no final response (Timer B/F) or no ACK (Timer H, L)."""

    transaction: int
    """The handle."""
    request: SipRequest
    """The request of the transaction."""
    timer: str
    """``"B"``, ``"F"``, ``"H"`` or ``"L"``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportFailed:
    """The adapter reported a transport error for a transaction's destination."""

    transaction: int
    """The handle."""
    request: SipRequest
    """The request of the transaction."""
    destination: Address
    """The address that failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationRejected:
    """Digest authentication failed for good: wrong credentials, or nothing we can answer."""

    transaction: int
    """The handle."""
    request: SipRequest
    """The last request sent."""
    response: SipResponse
    """The 401/407 that ended it."""
    reason: str
    """Why, in words (never the password)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCancelled:
    """The peer CANCELled an INVITE we had not answered; it has been answered 487."""

    transaction: int
    """The INVITE's server transaction."""
    request: SipRequest
    """The INVITE."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDiscarded:
    """A datagram was dropped: unparseable, stray, or not for us."""

    reason: str
    """Why."""
    source: Address
    """Where it came from."""


UaEvent = (
    RequestReceived
    | ResponseReceived
    | TransactionTimedOut
    | TransportFailed
    | AuthenticationRejected
    | RequestCancelled
    | MessageDiscarded
)


# --------------------------------------------------------------------------------------------
# Per-transaction context


class _ClientContext:
    __slots__ = (
        "acks",
        "attempt",
        "auth",
        "cancel_pending",
        "destination",
        "handle",
        "request",
        "tx",
    )

    def __init__(
        self,
        handle: int,
        request: SipRequest,
        destination: Address,
        auth: DigestClient | None,
        attempt: AuthAttempt | None,
    ) -> None:
        self.handle = handle
        self.request = request
        self.destination = destination
        # The digest client that answers this request's challenges (None: none do).
        self.auth = auth
        self.attempt = attempt
        self.cancel_pending = False
        self.acks: dict[str, tuple[bytes, Address]] = {}
        self.tx: Transaction | None = None


class _ServerContext:
    __slots__ = ("destination", "handle", "request", "source", "to_tag", "tx")

    def __init__(
        self, handle: int, request: SipRequest, source: Address, destination: Address, to_tag: str
    ) -> None:
        self.handle = handle
        self.request = request
        self.source = source
        self.destination = destination
        self.to_tag = to_tag
        self.tx: Transaction | None = None


_TIMER_NAMES = {
    TransactionKind.INVITE_CLIENT: "B",
    TransactionKind.NON_INVITE_CLIENT: "F",
    TransactionKind.INVITE_SERVER: "H",
    TransactionKind.NON_INVITE_SERVER: "J",
}


def _response_input(status: int) -> TxInput:
    if status < 200:
        return TxInput.RECV_1XX
    if status < 300:
        return TxInput.RECV_2XX
    return TxInput.RECV_FINAL


def _send_input(status: int) -> TxInput:
    if status < 200:
        return TxInput.SEND_1XX
    if status < 300:
        return TxInput.SEND_2XX
    return TxInput.SEND_FINAL


def _uri_destination(uri: SipUri, transport: str) -> Address:
    if uri.scheme not in ("sip", "sips") or not uri.host:
        raise UsageError(
            f"cannot send to {uri}: not a sip:/sips: URI with a host "
            "(give a destination or an outbound proxy)"
        )
    default = default_port("SIPS" if uri.is_secure else transport)
    return (uri.host_address, uri.port or default)


# --------------------------------------------------------------------------------------------
# The core


class UserAgent:
    """A sans-I/O SIP user agent core for one local address.

    ``rng`` makes branches, tags, Call-IDs and cnonces; pass a seeded one for reproducible
    tests. Passwords live only inside the digest client and never reach repr or logs.
    """

    __slots__ = (
        "_accepted",
        "_client",
        "_digest",
        "_events",
        "_handles",
        "_merged",
        "_next_handle",
        "_outbox",
        "_rng",
        "_server",
        "_server_handles",
        "_timers",
        "config",
        "contact",
        "stats",
    )

    def __init__(self, config: UaConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self.contact = config.signature.contact(
            config.user, config.local_host, config.local_port, config.transport
        )
        self._digest: DigestClient | None = None
        if config.credentials:
            self._digest = DigestClient(
                config.credentials,
                algorithms=config.signature.digest_algorithms,
                cnonce_factory=lambda: new_tag(self._rng),
            )
        self._client: dict[ClientKey, Transaction] = {}
        self._handles: dict[int, Transaction] = {}
        self._server: dict[ServerKey, Transaction] = {}
        self._server_handles: dict[int, Transaction] = {}
        # INVITE server transactions in Accepted, by (Call-ID, From tag, To tag, CSeq): the
        # ACK for a 2xx has its own branch and is matched to them this way (RFC 3261 13.3.1.4).
        self._accepted: dict[tuple[str, str, str, int], Transaction] = {}
        # Live requests without To tag by (From tag, Call-ID, CSeq): RFC 3261 8.2.2.2 merge
        # detection for a request that forked back to us over two paths.
        self._merged: dict[tuple[str, str, int, str], Transaction] = {}
        self._timers: list[tuple[float, int, Transaction]] = []
        self._next_handle = 1
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: list[UaEvent] = []  # an empty deque costs 760 bytes
        #: Counters: ``retransmissions``, ``absorbed``, ``discarded``, ``auth_retries``.
        self.stats: dict[str, int] = {
            "retransmissions": 0,
            "absorbed": 0,
            "discarded": 0,
            "auth_retries": 0,
        }

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<UserAgent {c.transport} {c.local_host}:{c.local_port} "
            f"client={len(self._client)} server={len(self._server)}>"
        )

    # -- output ---------------------------------------------------------------------------

    def data_to_send(self) -> list[tuple[bytes, Address]]:
        """Everything to send since the last call, in order, as ``(data, destination)``."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> UaEvent | None:
        """The next event, or None."""
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction, or None."""
        timers = self._timers
        while timers:
            at, _, tx = timers[0]
            if tx.get_timer() == at and not tx.terminated:
                return at
            heapq.heappop(timers)
            if tx.scheduled_at == at:
                tx.scheduled_at = None
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at *now*."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, tx = heapq.heappop(timers)
            if tx.scheduled_at == at:
                tx.scheduled_at = None
            if tx.terminated or tx.get_timer() != at:
                continue  # stale entry: the transaction moved on
            state = tx.state
            actions = tx.handle_timer(now)
            self._after_timer(tx, state, actions)
            self._schedule(tx)

    @property
    def transactions(self) -> int:
        """How many transactions are alive (client + server)."""
        return len(self._client) + len(self._server)

    def _schedule(self, tx: Transaction) -> None:
        at = tx.get_timer()
        # One heap entry per distinct deadline: duplicates a peer provokes (retransmitted
        # responses) do not grow the heap.
        if at is not None and at != tx.scheduled_at:
            tx.scheduled_at = at
            heapq.heappush(self._timers, (at, id(tx), tx))

    def _send(self, data: bytes, destination: Address) -> None:
        self._outbox.append((data, destination))
        if wire_enabled():
            log_wire("sent", str(self.contact.uri), destination, data)

    def _new_handle(self) -> int:
        handle = self._next_handle
        self._next_handle += 1
        return handle

    # -- building requests ---------------------------------------------------------------------

    def create_request(
        self,
        method: str,
        uri: SipUri,
        *,
        from_: NameAddr,
        to: NameAddr | None = None,
        call_id: str | None = None,
        cseq: int | None = None,
        headers: Iterable[tuple[str, HeaderValue]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        contact: bool | NameAddr | None = None,
        routes: Sequence[NameAddr] = (),
    ) -> SipRequest:
        """An out-of-dialog request with the phone's signature (no Via yet).

        A From without tag gets one; ``to`` defaults to From without tag (REGISTER);
        Call-ID and CSeq are made up when not given (CSeq starts below 2**16, as pjsip).
        Contact is added for INVITE, REGISTER, SUBSCRIBE and REFER unless *contact* says
        (True/False); a :class:`NameAddr` is the Contact to use where one is due (an
        account's own, on a UA several accounts share).
        """
        if method.upper() != method or method in ("ACK", "CANCEL"):
            raise UsageError(f"create_request cannot build {method!r} (ACK/CANCEL have helpers)")
        if from_.tag is None:
            from_ = from_.with_tag(new_tag(self._rng))
        if to is None:
            to = NameAddr(from_.uri, from_.display_name)
        due = method in ("INVITE", "REGISTER", "SUBSCRIBE", "REFER")
        if contact is None or contact is True or contact is False:
            contact = self.contact if (due if contact is None else contact) else None
        elif not due:
            contact = None
        return self.config.signature.build_request(
            method,
            uri,
            from_=from_,
            to=to,
            call_id=call_id or new_call_id(self._rng),
            cseq=cseq if cseq is not None else self._rng.randint(1, 0xFFFF),
            contact=contact or None,
            routes=routes,
            headers=headers,
            body=body,
            content_type=content_type,
        )

    # -- client side -------------------------------------------------------------------------

    def send_request(
        self,
        request: SipRequest,
        now: float,
        *,
        destination: Address | None = None,
        authenticate: bool = True,
        auth: DigestClient | None = None,
    ) -> int:
        """Start a client transaction for *request* (no Via; one is added). Returns the
        handle that :class:`ResponseReceived` and friends carry; a digest retry keeps it.

        *auth* answers its challenges (an account's own digest client on a UA that several
        accounts share); default: the UA's ``config.credentials``. With *authenticate*
        False, a 401/407 goes up as it is."""
        if request.method in ("ACK", "CANCEL"):
            raise UsageError(f"use send_ack/cancel for {request.method}")
        if "Via" in request.headers:
            raise UsageError("send_request adds the Via itself; the request already has one")
        if destination is None:
            destination = self._destination_for(request)
        digest = (auth or self._digest) if authenticate else None
        attempt: AuthAttempt | None = None
        if digest is not None and self.config.preemptive_auth:
            attempt = digest.authorize(
                method=request.method, uri=str(request.uri), body=request.body
            )
            if attempt is not None:
                for name, value in attempt.headers:
                    request.headers.add(name, value)
        handle = self._new_handle()
        ctx = _ClientContext(handle, request, destination, digest, attempt)
        self._start_client(ctx, now)
        return handle

    def _destination_for(self, request: SipRequest) -> Address:
        transport = self.config.transport.upper()
        routes = request.routes
        if routes:
            # RFC 3261 8.1.2: with a loose first route, send to it; strict routes were
            # already moved into the Request-URI by the dialog.
            return _uri_destination(routes[0].uri, transport)
        if self.config.outbound_proxy is not None:
            return self.config.outbound_proxy
        return _uri_destination(request.uri, transport)

    def _start_client(self, ctx: _ClientContext, now: float) -> None:
        c = self.config
        request = ctx.request
        branch = new_branch(self._rng)
        stamp_via(request, transport=c.transport, host=c.local_host, port=c.local_port,
                  branch=branch)
        kind = (
            TransactionKind.INVITE_CLIENT
            if request.method == "INVITE"
            else TransactionKind.NON_INVITE_CLIENT
        )
        key = client_key(branch, request.method)
        tx = new_transaction(kind, key, reliable=c.reliable, timers=c.timers,
                             wire=bytes(request), context=ctx)
        ctx.tx = tx
        self._client[key] = tx
        self._handles[ctx.handle] = tx
        logger.debug("sending %s (handle %d) to %s", request.method, ctx.handle, ctx.destination)
        if tx.start(now) & TxAction.TRANSMIT:
            self._send(tx.wire, ctx.destination)
        self._schedule(tx)

    def cancel(self, transaction: int, now: float) -> int | None:
        """CANCEL the INVITE of *transaction* (RFC 3261 §9.1). Returns the CANCEL's handle,
        or None when it waits for a provisional response (sent as soon as one comes) or the
        INVITE already has a final response."""
        tx = self._handles.get(transaction)
        if tx is None or tx.kind is not TransactionKind.INVITE_CLIENT:
            raise UsageError(f"no INVITE client transaction {transaction} to cancel")
        ctx = tx.context
        assert isinstance(ctx, _ClientContext)
        if tx.state is TxState.CALLING:
            # 9.1: a CANCEL must not be sent before a provisional response.
            ctx.cancel_pending = True
            return None
        if tx.state is not TxState.PROCEEDING:
            return None
        return self._send_cancel(ctx, now)

    def _send_cancel(self, ctx: _ClientContext, now: float) -> int:
        invite = ctx.request
        # 9.1: same Request-URI, Call-ID, To, From, CSeq number and top Via (branch) as the
        # INVITE; the Route set of the INVITE.
        cancel = self._same_hop_request("CANCEL", invite, invite.headers.lines("To")[0])
        handle = self._new_handle()
        cctx = _ClientContext(handle, cancel, ctx.destination, None, None)
        branch = invite.top_via.branch or ""
        key = client_key(branch, "CANCEL")
        tx = new_transaction(TransactionKind.NON_INVITE_CLIENT, key,
                             reliable=self.config.reliable, timers=self.config.timers,
                             wire=bytes(cancel), context=cctx)
        cctx.tx = tx
        self._client[key] = tx
        self._handles[handle] = tx
        if tx.start(now) & TxAction.TRANSMIT:
            self._send(tx.wire, cctx.destination)
        self._schedule(tx)
        return handle

    def send_ack(
        self,
        transaction: int,
        response: SipResponse,
        now: float,
        *,
        dialog: Dialog | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """Send the ACK for a 2xx to INVITE (RFC 3261 §13.2.2.4); it is resent by itself
        when the 2xx is retransmitted. Without *dialog* one is derived from the response."""
        tx = self._handles.get(transaction)
        if tx is None or tx.kind is not TransactionKind.INVITE_CLIENT:
            raise UsageError(f"no INVITE client transaction {transaction} to ACK")
        ctx = tx.context
        assert isinstance(ctx, _ClientContext)
        if not 200 <= response.status < 300:
            raise UsageError("send_ack is for 2xx; the transaction ACKs other finals itself")
        invite = ctx.request
        if dialog is None:
            dialog = Dialog.from_uac(invite, response,
                                     secure_transport=self.config.transport.upper() == "TLS")
        extra: list[tuple[str, HeaderValue]] = []
        # RFC 3261 22.1: the ACK for a 2xx carries the INVITE's credentials.
        for name in _AUTH_HEADERS:
            extra.extend((name, value) for value in invite.headers.lines(name))
        ack = dialog.create_request(
            "ACK", cseq=invite.cseq.seq, headers=extra, body=body, content_type=content_type,
            max_forwards=self.config.signature.max_forwards,
            user_agent=self.config.signature.user_agent,
        )
        c = self.config
        stamp_via(ack, transport=c.transport, host=c.local_host, port=c.local_port,
                  branch=new_branch(self._rng))
        destination = self._destination_for(ack)
        wire = bytes(ack)
        ctx.acks[response.to_tag or ""] = (wire, destination)
        self._send(wire, destination)
        return ack

    def transport_error(self, destination: Address, now: float) -> None:
        """The adapter could not send to (or lost the connection to) *destination*."""
        for table in (self._client, self._server):
            for tx in list(table.values()):
                ctx = tx.context
                assert isinstance(ctx, _ClientContext | _ServerContext)
                if ctx.destination != destination or tx.terminated:
                    continue
                try:
                    actions = tx.feed(TxInput.TRANSPORT_ERROR, now)
                except TransactionStateError:
                    continue
                if actions & TxAction.TRANSPORT_FAILED:
                    self._events.append(TransportFailed(
                        transaction=ctx.handle, request=ctx.request, destination=destination))
                self._reap(tx)

    # -- server side -------------------------------------------------------------------------

    def respond(
        self,
        transaction: int,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, HeaderValue]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        contact: bool | NameAddr | None = None,
    ) -> SipResponse:
        """Answer the request of server transaction *transaction* with *status*.

        The To tag is the transaction's own; the Contact is added to 101-299 answers to
        INVITE unless *contact* says otherwise (True/False); a :class:`NameAddr` is the
        Contact to use where one is due (an account's own, on a shared UA).
        """
        if not 100 <= status <= 699:
            raise UsageError(f"status {status} out of range")
        tx = self._server_handles.get(transaction)
        if tx is None:
            raise UsageError(f"no live server transaction {transaction}")
        ctx = tx.context
        assert isinstance(ctx, _ServerContext)
        due = ctx.request.method == "INVITE" and 100 < status < 300
        if contact is None or contact is True or contact is False:
            contact = self.contact if (due if contact is None else contact) else None
        elif not due:
            contact = None
        extra: list[tuple[str, HeaderValue]] = []
        if contact is not None:
            extra.append(("Contact", contact))
        extra.extend(headers)
        return self._respond(tx, ctx, status, now, reason=reason, headers=extra, body=body,
                             content_type=content_type)

    def _respond(
        self,
        tx: Transaction,
        ctx: _ServerContext,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, HeaderValue]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipResponse:
        response = ctx.request.create_response(
            status, reason, to_tag=ctx.to_tag if status > 100 else None
        )
        h = response.headers
        request = ctx.request
        if request.method == "INVITE" and 100 < status < 300:
            # RFC 3261 12.1.1: a response that creates a dialog copies the Record-Route.
            for record_route in request.headers.lines("Record-Route"):
                h.add("Record-Route", record_route)
        h.add("User-Agent", self.config.signature.user_agent)
        for name, value in headers:
            h.add(name, value)
        if body:
            if content_type is None:
                raise UsageError("a response body needs a Content-Type")
            h.add("Content-Type", content_type)
            response.body = body
        return self._transmit_response(tx, ctx, response, now)

    def _transmit_response(
        self, tx: Transaction, ctx: _ServerContext, response: SipResponse, now: float
    ) -> SipResponse:
        try:
            actions = tx.feed(_send_input(response.status), now)
        except TransactionStateError as exc:
            raise UsageError(f"cannot send {response.status} now: {exc}") from None
        if actions & TxAction.TRANSMIT:
            tx.wire = bytes(response)
            tx.response_to_tag = response.to_tag
            self._send(tx.wire, ctx.destination)
        if tx.state is TxState.ACCEPTED:
            request = ctx.request
            self._accepted[self._ack_key(request, ctx.to_tag)] = tx
        self._reap(tx)
        self._schedule(tx)
        return response

    # -- input ---------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """Take one datagram (or one framed message from a stream, as bytes) from *source*.

        Parses *data* and goes on as :meth:`receive_message`; a stream transport that already
        holds the framer's parsed message should call :meth:`receive_message` directly.
        """
        if is_keepalive(data):
            return  # RFC 5626 4.4.1 / RFC 3261 7.5: CRLF keep-alives carry nothing
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._reject_unparseable(exc, source, now)
            return
        self.receive_message(message, source, now)

    def receive_message(
        self, message: SipRequest | SipResponse, source: Address, now: float
    ) -> None:
        """Take one already parsed message from *source*: a stream framer's output.

        Does what :meth:`receive_datagram` does once its bytes parsed, without parsing again.
        A header that the parser let through but this layer cannot use is discarded with a
        :class:`MessageDiscarded` event, as for a datagram.
        """
        if wire_enabled():
            log_wire("received", str(self.contact.uri), source, bytes(message))
        try:
            if isinstance(message, SipResponse):
                self._on_response(message, source, now)
            else:
                self._on_request(message, source, now)
        except (SipParseError, HeaderValueError) as exc:
            # A header the parser let through but a layer here cannot use (a bad Via host...).
            self._discard(f"{exc}", source)

    def _discard(self, reason: str, source: Address) -> None:
        self.stats["discarded"] += 1
        logger.debug("discarding message from %s: %s", source, reason)
        self._events.append(MessageDiscarded(reason=reason, source=source))

    def _reject_unparseable(self, exc: SipParseError, source: Address, now: float) -> None:
        partial = exc.partial
        if exc.status is not None and isinstance(partial, SipRequest) and partial.method != "ACK":
            # RFC 3261 16.3/21.4.1-style: answer statelessly when the status is known and the
            # headers needed to route a response are there.
            try:
                response = partial.create_response(exc.status, f"Bad Request ({exc})"[:120]
                                                   if exc.status == 400 else None)
                response.headers.add("User-Agent", self.config.signature.user_agent)
                destination = response_destination(partial.top_via, source,
                                                   reliable=self.config.reliable)
                self._send(bytes(response), destination)
            except (SipParseError, HeaderValueError, ValueError):
                pass
        self._discard(f"unparseable: {exc}", source)

    def _our_sent_by(self, via: Via) -> bool:
        c = self.config
        port = via.port or default_port(c.transport)
        return via.host.strip("[]").lower() == c.local_host.strip("[]").lower() and (
            port == c.local_port
        )

    def _on_response(self, response: SipResponse, source: Address, now: float) -> None:
        vias = response.vias
        if len(vias) != 1:
            # RFC 3261 8.1.3.3: a response for a UAC carries exactly our Via.
            self._discard(f"response with {len(vias)} Via values", source)
            return
        via = vias[0]
        # RFC 3261 18.1.2: a response whose top Via is not ours is discarded.
        if not self._our_sent_by(via):
            self._discard(f"response with foreign Via sent-by {via.sent_by}", source)
            return
        tx = self._client.get(client_key(via.branch or "", response.cseq.method))
        if tx is None:
            self._discard(f"stray {response.status} response (no transaction)", source)
            return
        ctx = tx.context
        assert isinstance(ctx, _ClientContext)
        before = tx.state
        actions = tx.feed(_response_input(response.status), now)
        if actions & TxAction.ABSORBED:
            self.stats["absorbed"] += 1
        if actions & TxAction.SEND_ACK:
            if tx.ack_wire is None:
                tx.ack_wire = bytes(self._non_2xx_ack(ctx.request, response))
            else:
                self.stats["retransmissions"] += 1
            self._send(tx.ack_wire, ctx.destination)
        if actions & TxAction.PASS_UP:
            self._pass_up_response(tx, ctx, before, response, now)
        self._reap(tx)
        self._schedule(tx)

    def _pass_up_response(
        self,
        tx: Transaction,
        ctx: _ClientContext,
        before: TxState,
        response: SipResponse,
        now: float,
    ) -> None:
        status = response.status
        if (
            status in (401, 407)
            and ctx.auth is not None
            and self._retry_with_credentials(ctx, response, now)
        ):
            return
        retransmission = before is TxState.ACCEPTED and 200 <= status < 300
        if retransmission:
            ack = ctx.acks.get(response.to_tag or "")
            if ack is not None:
                # RFC 3261 13.2.2.4: a retransmitted 2xx gets the same ACK again.
                self.stats["retransmissions"] += 1
                self._send(*ack)
        if status < 200 and ctx.cancel_pending and tx.state is TxState.PROCEEDING:
            ctx.cancel_pending = False
            self._send_cancel(ctx, now)
        self._events.append(ResponseReceived(
            response=response, request=ctx.request, transaction=ctx.handle,
            retransmission=retransmission,
        ))

    def _retry_with_credentials(
        self, ctx: _ClientContext, response: SipResponse, now: float
    ) -> bool:
        """Answer a 401/407: send the request again with credentials. False if there is
        nothing to answer with (the response then goes up as it is)."""
        digest = ctx.auth
        assert digest is not None
        request = ctx.request
        fields = [
            (name, value)
            for name in ("WWW-Authenticate", "Proxy-Authenticate")
            for value in response.headers.lines(name)
        ]
        try:
            challenges = [
                challenge
                for name, value in fields
                for challenge in DigestChallenge.parse(
                    value, proxy=name == "Proxy-Authenticate"
                )
            ]
            attempt = digest.respond(
                challenges,
                method=request.method,
                uri=str(request.uri),
                body=request.body,
                previous=ctx.attempt,
            )
        except (AuthenticationFailed, DigestError) as exc:
            digest.forget()
            logger.info("authentication failed for %s: %s", request.method, exc)
            self._events.append(AuthenticationRejected(
                transaction=ctx.handle, request=request, response=response, reason=str(exc),
            ))
            # Leave the old transaction mapped to nothing new: the handle is finished.
            return True
        # RFC 3261 22.1/8.1.3.5: the same request with credentials, CSeq + 1, a new branch.
        headers = request.headers.copy()
        headers.remove("Via")
        for name in _AUTH_HEADERS:
            headers.remove(name)
        headers.set("CSeq", CSeq(request.cseq.seq + 1, request.method))
        content_type = headers.lines("Content-Type")
        if content_type:
            headers.remove("Content-Type")
        for name, value in attempt.headers:
            headers.add(name, value)
        for value in content_type:
            headers.add("Content-Type", value)
        retry = SipRequest(request.method, request.uri, headers, request.body)
        old = ctx.tx
        new_ctx = _ClientContext(ctx.handle, retry, ctx.destination, digest, attempt)
        new_ctx.cancel_pending = ctx.cancel_pending
        if old is not None and self._handles.get(ctx.handle) is old:
            del self._handles[ctx.handle]
        self.stats["auth_retries"] += 1
        self._start_client(new_ctx, now)
        return True

    def _non_2xx_ack(self, invite: SipRequest, response: SipResponse) -> SipRequest:
        # RFC 3261 17.1.1.3: Request-URI, Call-ID, From, top Via and Route of the INVITE,
        # To of the response, CSeq number of the INVITE with method ACK.
        return self._same_hop_request("ACK", invite, response.headers.lines("To")[0])

    def _same_hop_request(self, method: str, invite: SipRequest, to: str) -> SipRequest:
        """CANCEL or non-2xx ACK for ``invite``: its Request-URI, top Via (branch), Route set,
        From, Call-ID and CSeq number, with ``method`` and the given To line."""
        h = Headers()
        h.add("Via", invite.top_via)
        for route in invite.headers.lines("Route"):
            h.add("Route", route)
        h.add("Max-Forwards", self.config.signature.max_forwards)
        h.add("From", invite.headers.lines("From")[0])
        h.add("To", to)
        h.add("Call-ID", invite.call_id)
        h.add("CSeq", CSeq(invite.cseq.seq, method))
        h.add("User-Agent", self.config.signature.user_agent)
        return SipRequest(method, invite.uri, h)

    def _stamp_received(self, request: SipRequest, source: Address) -> Via:
        # RFC 3261 18.2.1 and RFC 3581 4: note where the request really came from.
        via = request.top_via
        new = via
        src_host, src_port = source
        if via.host.strip("[]").lower() != src_host.lower():
            new = new.with_param("received", src_host)
        if via.rport is True:
            new = new.with_param("rport", str(src_port))
            if new.received is None:
                new = new.with_param("received", src_host)
        if new is not via:
            request.headers.pop_first("Via")
            request.headers.insert(0, "Via", new)
        return new

    def _on_request(self, request: SipRequest, source: Address, now: float) -> None:
        if "Via" not in request.headers:
            self._discard(f"{request.method} without Via", source)
            return
        original = request.top_via
        via = self._stamp_received(request, source)
        destination = response_destination(via, source, reliable=self.config.reliable)
        method = request.method
        try:
            key = server_key(
                method=method,
                branch=original.branch,
                sent_by=original.sent_by,
                request_uri=str(request.uri),
                call_id=request.call_id,
                from_tag=request.from_tag,
                cseq_number=request.cseq.seq,
                top_via=str(original),
            )
        except SipParseError as exc:
            # A mandatory header is missing or repeated: answer 400 without state.
            error = validate_request(request, allowed_methods=self.config.signature.allow)
            if error is not None:
                self._send(bytes(error), destination)
            self._discard(f"{method} not matchable: {exc}", source)
            return
        tx = self._server.get(key)
        if (
            tx is not None
            and method == "ACK"
            and key[0] == "2543"
            and request.to_tag != tx.response_to_tag
        ):
            # 17.2.3: an RFC 2543 ACK matches only with the To tag of our response.
            tx = None
        if tx is not None and method == "ACK" and tx.kind is not TransactionKind.INVITE_SERVER:
            tx = None
        if tx is not None:
            self._on_retransmission(tx, request, source, now)
            return
        if method == "ACK":
            # 17.2.3: an ACK for a 2xx is its own transaction. It stops our 2xx
            # retransmissions (13.3.1.4) and goes to the dialog.
            accepted = self._accepted.get(self._ack_key(request, request.to_tag or ""))
            if accepted is not None:
                self._on_retransmission(accepted, request, source, now)
                return
            self._events.append(RequestReceived(request=request, transaction=None,
                                                source=source))
            return
        if method == "CANCEL":
            self._on_cancel(request, key, source, destination, now)
            return
        if len(self._server) >= self.config.max_server_transactions:
            # Flood guard: answer statelessly, keep no state.
            response = request.create_response(503, headers=[("Retry-After", "5")])
            self._send(bytes(response), destination)
            self._discard("too many server transactions: 503", source)
            return
        merge_key = self._merge_key(request)
        if merge_key is not None:
            other = self._merged.get(merge_key)
            if other is not None and not other.terminated:
                # RFC 3261 8.2.2.2: the same request over another path: 482 (Loop Detected).
                tx, ctx = self._new_server_transaction(request, key, source, destination)
                self._respond(tx, ctx, 482, now)
                return
        tx, ctx = self._new_server_transaction(request, key, source, destination)
        if merge_key is not None:
            self._merged[merge_key] = tx
        sig = self.config.signature
        error = validate_request(
            request, allowed_methods=sig.allow, supported=sig.supported, to_tag=ctx.to_tag
        )
        if error is not None:
            error.headers.add("User-Agent", sig.user_agent)
            self._transmit_response(tx, ctx, error, now)
            return
        if method == "INVITE":
            # 17.2.1: a 100 Trying at once, so the client stops retransmitting.
            self._respond(tx, ctx, 100, now)
        if method == "OPTIONS" and self.config.answer_options:
            extra: list[tuple[str, HeaderValue]] = [
                ("Allow", sig.allow_header),
                ("Accept", ", ".join(sig.accept)),
            ]
            if sig.supported:
                extra.append(("Supported", ", ".join(sig.supported)))
            self._respond(tx, ctx, 200, now, headers=extra)
            return
        self._events.append(RequestReceived(request=request, transaction=ctx.handle,
                                            source=source))

    @staticmethod
    def _merge_key(request: SipRequest) -> tuple[str, str, int, str] | None:
        if request.to_tag is not None:
            return None
        cseq = request.cseq
        return (request.from_tag or "", request.call_id, cseq.seq, cseq.method)

    @staticmethod
    def _ack_key(request: SipRequest, to_tag: str) -> tuple[str, str, str, int]:
        return (request.call_id, request.from_tag or "", to_tag, request.cseq.seq)

    def _new_server_transaction(
        self, request: SipRequest, key: ServerKey, source: Address, destination: Address
    ) -> tuple[Transaction, _ServerContext]:
        kind = (
            TransactionKind.INVITE_SERVER
            if request.method == "INVITE"
            else TransactionKind.NON_INVITE_SERVER
        )
        handle = self._new_handle()
        to_tag = request.to_tag or new_tag(self._rng)
        ctx = _ServerContext(handle, request, source, destination, to_tag)
        tx = new_transaction(kind, key, reliable=self.config.reliable,
                             timers=self.config.timers, context=ctx)
        ctx.tx = tx
        self._server[key] = tx
        self._server_handles[handle] = tx
        return tx, ctx

    def _on_retransmission(
        self, tx: Transaction, request: SipRequest, source: Address, now: float
    ) -> None:
        ctx = tx.context
        assert isinstance(ctx, _ServerContext)
        event = TxInput.RECV_ACK if request.method == "ACK" else TxInput.RECV_REQUEST
        try:
            actions = tx.feed(event, now)
        except TransactionStateError:
            self._discard(f"{request.method} does not fit transaction in {tx.state.value}",
                          source)
            return
        if actions & TxAction.ABSORBED:
            self.stats["absorbed"] += 1
        if actions & TxAction.RETRANSMIT:
            if tx.wire:
                self.stats["retransmissions"] += 1
                self._send(tx.wire, ctx.destination)
            else:
                self.stats["absorbed"] += 1
        if actions & TxAction.PASS_UP:
            self._events.append(RequestReceived(request=request, transaction=None,
                                                source=source))
        self._reap(tx)
        self._schedule(tx)

    def _on_cancel(
        self,
        request: SipRequest,
        key: ServerKey,
        source: Address,
        destination: Address,
        now: float,
    ) -> None:
        tx, ctx = self._new_server_transaction(request, key, source, destination)
        # 9.2: the CANCEL matches the INVITE transaction with the same key but method INVITE.
        invite_key = (*key[:-1], "INVITE")
        invite_tx = self._server.get(invite_key)
        if invite_tx is None or invite_tx.kind is not TransactionKind.INVITE_SERVER:
            self._respond(tx, ctx, 481, now)
            return
        invite_ctx = invite_tx.context
        assert isinstance(invite_ctx, _ServerContext)
        # The CANCEL's To tag is the one the INVITE answers carry.
        ctx.to_tag = invite_ctx.to_tag
        self._respond(tx, ctx, 200, now)
        if invite_tx.state is TxState.PROCEEDING:
            self._respond(invite_tx, invite_ctx, 487, now)
            self._events.append(RequestCancelled(transaction=invite_ctx.handle,
                                                 request=invite_ctx.request))

    # -- timers and cleanup -----------------------------------------------------------------

    def _after_timer(self, tx: Transaction, before: TxState, actions: TxAction) -> None:
        ctx = tx.context
        assert isinstance(ctx, _ClientContext | _ServerContext)
        if actions & TxAction.RETRANSMIT and tx.wire:
            self.stats["retransmissions"] += 1
            self._send(tx.wire, ctx.destination)
        if actions & TxAction.TIMED_OUT:
            self._events.append(TransactionTimedOut(
                transaction=ctx.handle, request=ctx.request, timer=_TIMER_NAMES[tx.kind]))
        elif (
            tx.kind is TransactionKind.INVITE_SERVER
            and before is TxState.ACCEPTED
            and tx.terminated
            and not tx.acked
        ):
            # RFC 3261 13.3.1.4: no ACK for our 2xx within 64*T1; the call layer sends BYE.
            self._events.append(TransactionTimedOut(
                transaction=ctx.handle, request=ctx.request, timer="L"))
        self._reap(tx)

    def _reap(self, tx: Transaction) -> None:
        if not tx.terminated:
            return
        ctx = tx.context
        if isinstance(ctx, _ClientContext):
            if self._client.get(tx.key) is tx:
                del self._client[tx.key]
            if self._handles.get(ctx.handle) is tx:
                del self._handles[ctx.handle]
        elif isinstance(ctx, _ServerContext):
            merge_key = self._merge_key(ctx.request)
            if merge_key is not None and self._merged.get(merge_key) is tx:
                del self._merged[merge_key]
            if tx.kind is TransactionKind.INVITE_SERVER:
                ack_key = self._ack_key(ctx.request, ctx.to_tag)
                if self._accepted.get(ack_key) is tx:
                    del self._accepted[ack_key]
            if self._server.get(tx.key) is tx:
                del self._server[tx.key]
            if self._server_handles.get(ctx.handle) is tx:
                del self._server_handles[ctx.handle]

