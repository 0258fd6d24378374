"""The lab's stateful record-routing proxy (RFC 3261 §16), sans-I/O.

The :class:`~phone_sim.lab.registrar.Registrar` hands it every request that is not a
REGISTER and not an OPTIONS to the lab itself, and every response; the proxy answers what it
must (100, 404, 407, 480, 483, 481 to a CANCEL it cannot match, 408 on timeout) and forwards
the rest between registered phones **over their own connections** (the flow each one
registered on: the lab never dials a phone), as Kamailio does with ``fix_nated_register`` and
``t_relay``:

- **initial requests** (no To tag, no Route beyond the lab) need digest authentication with
  ``407 Proxy-Authenticate`` (the realm of the registrar); the From user must be the
  authenticated one (403). The Request-URI's user picks the target: a lab *service* (the echo
  at ``600``), else the newest binding of a lab user on a live flow (480 when it has none, 404
  when the user does not exist). The Request-URI becomes the binding's contact (RFC 3261
  16.5);
- **Record-Route** (INVITE and SUBSCRIBE): two entries, one per leg (the interface each phone
  talks to, with its ``transport``), each with ``;lr`` and a *flow token* (``ftok``, HMAC-signed)
  naming the connection of that leg. An in-dialog request carries them back as Route; the lab
  pops its own entries and sends the request over the *other* leg's flow, whatever the
  Request-URI says;
- **Via**: its own on top (``branch`` per client transaction, ``rport`` on UDP); removed from
  responses before they go back; responses upstream go to where the request came from
  (``received``/``rport``);
- **Max-Forwards** decremented (483 at zero; 70 when absent);
- **transactions** are :mod:`phone_sim.sip.transaction` machines: an INVITE/non-INVITE server
  transaction per received request (retransmissions get the last response again) and a client
  transaction per forwarded one (Timers A/B/E/F/D/K/M), plus Timer C (180 s) for INVITE
  branches;
- **CANCEL** is hop by hop: 200 to the CANCEL, a CANCEL to the branch once it has answered
  provisionally, and the branch's 487 goes back (or 487 from the lab when the branch never
  answers);
- a non-2xx final response to an INVITE is ACKed by the lab (hop by hop); the ACK of a 2xx is
  routed end to end like any in-dialog request, statelessly; 100 Trying is not forwarded, every
  other response is, untouched (reliable provisionals, bodies);
- a response that matches no transaction is dropped (RFC 3261 16.7 / 18.1.2).

Nothing here reads a clock or touches a socket: ``now`` comes in, :class:`Transmit` values go
out through the registrar.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from phone_sim.sip.digest import DigestServer
from phone_sim.sip.headers import HeaderValue, NameAddr, Via
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse
from phone_sim.sip.transaction import (
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

if TYPE_CHECKING:
    from phone_sim.lab.registrar import (
        Address,
        Binding,
        Flow,
        LabUser,
        RegistrarConfig,
        UserTable,
    )

logger = logging.getLogger(__name__)

__all__ = ["CANCEL_WAIT", "PROXY_METHODS", "TIMER_C", "CallRefused", "CallRouted", "Proxy",
           "Service"]

#: RFC 3261 16.6 step 11: an INVITE branch without a final response is cancelled after this
#: (more than 3 minutes by the RFC's letter; 180 s, as Kamailio's ``fr_inv_timer`` default).
TIMER_C = 180.0
#: How long a cancelled branch may take to send its 487 before the lab gives up on it and
#: answers 487 itself (64*T1, as a non-INVITE transaction's lifetime).
CANCEL_WAIT = 32.0
#: Methods the proxy routes (any other method is routed too: a proxy does not inspect them);
#: listed in the lab's Allow.
PROXY_METHODS: tuple[str, ...] = (
    "INVITE", "ACK", "CANCEL", "BYE", "PRACK", "UPDATE", "INFO", "OPTIONS", "MESSAGE",
    "NOTIFY", "SUBSCRIBE", "REFER",
)  # fmt: skip
#: Dialog-creating methods that get Record-Route.
_RECORD_ROUTE = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
_TOKEN_PARAM = "ftok"  # noqa: S105 - a URI parameter name, not a secret


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """A UAS inside the lab reached at ``sip:<user>@<lab domain>`` (the echo at 600)."""

    user: str
    """The extension (``600``)."""
    address: tuple[str, int]
    """Its UDP address; the lab reaches it from its UDP listener."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRouted:
    """The lab forwarded a new call (an initial INVITE) to a phone or a service."""

    call_id: str
    """The INVITE's Call-ID."""
    caller: str
    """The From URI."""
    target: str
    """The Request-URI as dialled (``sip:102@lab.phone-sim.test``)."""
    contact: str
    """Where it went: the binding's contact or the service's URI."""
    transports: tuple[str, str]
    """The caller's and the callee's transport (``("TLS", "UDP")``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRefused:
    """The lab itself answered a new call with an error (404, 480, 403, 483...; not the 407
    challenge, which is the normal first step)."""

    call_id: str
    """The INVITE's Call-ID."""
    caller: str
    """The From URI."""
    target: str
    """The Request-URI as dialled."""
    status: int
    """The status sent."""
    reason: str
    """Its reason phrase."""


class _Reply(Exception):
    """A response the proxy itself gives to a request it cannot route."""

    def __init__(
        self, status: int, reason: str, headers: tuple[tuple[str, HeaderValue], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class _Target:
    uri: SipUri | None  # the new Request-URI (None: unchanged)
    flow: Flow
    destination: tuple[str, int]
    user: str = ""  # the lab user on that leg ("" for a service or unknown)


@dataclass(frozen=True, slots=True)
class _Leg:
    """One leg of a record-routed dialog, as its flow token names it."""

    flow_id: int
    transport: str  # lower case
    destination: tuple[str, int]
    user: str  # the lab user whose connection it is ("" for a service)


@dataclass(frozen=True, slots=True)
class _Route:
    target: _Target
    popped: int  # how many Route values are the lab's own
    caller: str  # the authenticated (or service) user the request came from, "" in-dialog


class _ServerTx:
    __slots__ = ("branch", "destination", "flow", "request", "tag", "tx", "via")

    def __init__(
        self, tx: Transaction, request: SipRequest, flow: Flow, destination: Address,
        via: Via | None,
    ) -> None:  # fmt: skip
        self.tx = tx
        self.request = request
        self.flow = flow
        self.destination = destination
        self.via = via
        self.branch: _ClientTx | None = None
        self.tag = secrets.token_hex(6)

    @property
    def final_sent(self) -> bool:
        return self.tx.state is not TxState.PROCEEDING and self.tx.state is not TxState.TRYING


class _ClientTx:
    __slots__ = (
        "cancel_pending", "cancelled", "destination", "flow", "provisional", "request", "server",
        "timed_out", "timer_c", "tx",
    )  # fmt: skip

    def __init__(
        self, tx: Transaction, request: SipRequest, flow: Flow, destination: Address,
        server: _ServerTx | None,
    ) -> None:  # fmt: skip
        self.tx = tx
        self.request = request
        self.flow = flow
        self.destination = destination
        self.server = server
        self.provisional = False
        self.cancel_pending = False
        self.cancelled = False
        self.timed_out = False
        self.timer_c: float | None = None


_Entry = _ServerTx | _ClientTx


class Proxy:
    """The routing half of the lab. Made and fed by the registrar (one per lab)."""

    def __init__(
        self,
        *,
        config: RegistrarConfig,
        users: UserTable,
        digest: DigestServer,
        locate: Callable[[str], list[Binding]],
        flow_open: Callable[[int], Flow | None],
        send: Callable[[Flow, Address, bytes], None],
        emit: Callable[[CallRouted | CallRefused], None] = lambda _event: None,
        secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.users = users
        self._digest = digest
        self._locate = locate
        self._flow_open = flow_open
        self._send = send
        self._emit = emit
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._services: dict[str, Service] = {}
        self._udp_flow: Flow | None = None
        self._listeners: set[tuple[str, int]] = set()
        self._names: set[str] = {config.realm.lower()}
        self._tx: dict[tuple[str, ...], _Entry] = {}
        self._heap: list[tuple[float, int, tuple[str, ...]]] = []
        self._seq = 0
        self.stats: dict[str, int] = {
            "routed": 0, "responses": 0, "challenges": 0, "not_found": 0, "unavailable": 0,
            "cancelled": 0, "timeouts": 0, "stray": 0, "no_dialog": 0,
        }  # fmt: skip

    def __repr__(self) -> str:
        return f"<Proxy transactions={len(self._tx)} services={sorted(self._services)}>"

    # -- set-up ------------------------------------------------------------------------------

    def set_udp_flow(self, flow: Flow | None) -> None:
        """The lab's UDP listener, the flow that reaches services and UDP phones."""
        self._udp_flow = flow

    def add_listener(self, host: str, port: int) -> None:
        """An address the lab listens on: a Route to it is the lab's own."""
        self._listeners.add((host.strip("[]").lower(), port))

    def add_name(self, name: str) -> None:
        """A host name of the lab (its server name): a Route to it is the lab's own."""
        self._names.add(name.lower())

    def add_service(self, service: Service) -> None:
        """Route ``sip:<service.user>@<lab>`` to a UAS over UDP (the echo at 600)."""
        self._services[service.user] = service

    def remove_service(self, user: str) -> None:
        """Stop routing to a service (its calls get 480)."""
        self._services.pop(user, None)

    @property
    def services(self) -> dict[str, Service]:
        """The services by extension."""
        return dict(self._services)

    @property
    def transactions(self) -> int:
        """Transactions in progress (server and client)."""
        return len(self._tx)

    def wants(self, request: SipRequest) -> bool:
        """Whether a request is the proxy's to route, rather than the registrar's to answer:
        everything but REGISTER and an out-of-dialog OPTIONS to the lab itself."""
        method = request.method
        if method == "REGISTER":
            return False
        if method != "OPTIONS":
            return True
        if request.to_tag is not None or "Route" in request.headers:
            return True
        # Any user part: the proxy challenges it, known or not, so that an unauthenticated
        # client cannot tell lab users from strangers (a 200 from the lab for an unknown user
        # and a 407 for a known one would).
        return request.uri.user is not None

    # -- timers ------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest transaction deadline, or None."""
        heap = self._heap
        while heap:
            at, _seq, key = heap[0]
            entry = self._tx.get(key)
            if entry is not None and _deadline(entry) == at:
                return at
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every transaction timer due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _seq, key = heapq.heappop(heap)
            entry = self._tx.get(key)
            if entry is None or _deadline(entry) != at:
                continue
            if isinstance(entry, _ClientTx) and entry.timer_c is not None and entry.timer_c <= now:
                entry.timer_c = None
                self._timer_c(entry, now)
            actions = entry.tx.handle_timer(now)
            self._timer_actions(key, entry, actions, now)
            self._schedule(key, entry)

    def _schedule(self, key: tuple[str, ...], entry: _Entry) -> None:
        if entry.tx.terminated:
            self._tx.pop(key, None)
            return
        at = _deadline(entry)
        if at is not None:
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, key))

    def _timer_actions(
        self, key: tuple[str, ...], entry: _Entry, actions: TxAction, now: float
    ) -> None:
        tx = entry.tx
        # RFC 3261 16.7 / RFC 6026: a proxy does not retransmit a 2xx it forwarded.
        forwarded_2xx = isinstance(entry, _ServerTx) and tx.state is TxState.ACCEPTED
        if TxAction.RETRANSMIT in actions and tx.wire and not forwarded_2xx:
            self._send(entry.flow, entry.destination, tx.wire)
        if TxAction.TIMED_OUT in actions and isinstance(entry, _ClientTx):
            self.stats["timeouts"] += 1
            server = entry.server
            if server is not None and not server.final_sent and entry.request.method != "CANCEL":
                # RFC 3261 16.7 step 6 / 16.8: a branch that times out counts as a 408 (as a
                # 487 when it was cancelled).
                status = 487 if entry.cancelled else 408
                logger.info("%s to %s timed out", entry.request.method, entry.flow)
                self._reply(server, status, None, (), now)

    def _timer_c(self, entry: _ClientTx, now: float) -> None:
        # RFC 3261 16.8: Timer C fired: cancel a branch that answered provisionally (and give
        # it CANCEL_WAIT to answer 487); a branch that was already cancelled and still has not
        # answered is given up: the caller gets the 487 (or 408) from the lab.
        if entry.tx.state is not TxState.PROCEEDING:
            return
        if not entry.cancelled:
            self._send_cancel(entry, now)
            entry.timed_out = True
            entry.timer_c = now + CANCEL_WAIT
            return
        server = entry.server
        if server is not None and not server.final_sent:
            self._reply(server, 408 if entry.timed_out else 487, None, (), now)
        entry.tx.state = TxState.TERMINATED

    # -- connections -------------------------------------------------------------------------

    def flow_closed(self, flow_id: int, now: float) -> None:
        """A connection closed: branches still waiting on it fail with 503 (RFC 3261 16.7
        step 6 / 18.4: a transport error counts as a 503)."""
        for key, entry in list(self._tx.items()):
            if entry.flow.id != flow_id or not entry.flow.reliable:
                continue
            if isinstance(entry, _ClientTx):
                try:
                    actions = entry.tx.feed(TxInput.TRANSPORT_ERROR, now)
                except TransactionStateError:
                    actions = TxAction.NONE
                server = entry.server
                if (
                    TxAction.TRANSPORT_FAILED in actions
                    and server is not None
                    and not server.final_sent
                    and entry.request.method != "CANCEL"
                ):
                    self._reply(server, 503, "Service Unavailable (connection lost)", (), now)
            else:
                entry.tx.state = TxState.TERMINATED
            self._schedule(key, entry)

    # -- requests ----------------------------------------------------------------------------

    def handle_request(
        self,
        request: SipRequest,
        flow: Flow,
        now: float,
        *,
        txkey: tuple[str, ...],
        via: Via | None,
        destination: Address,
    ) -> None:
        """A request to route. ``txkey`` is its RFC 3261 17.2.3 key, ``via`` its top Via as
        responses must carry it (``received``/``rport``; None when unchanged) and
        ``destination`` where responses go (RFC 3261 18.2.2)."""
        method = request.method
        if method == "ACK":
            self._ack(request, flow, now, txkey)
            return
        # RFC 3261 17.2.3 keys, per flow: a request on another connection (or from another
        # UDP address) is never taken for a retransmission of someone else's, so nobody who
        # learns a branch can pre-empt its transaction (or its CANCEL).
        key = ("s", _flow_key(flow), *txkey)
        existing = self._tx.get(key)
        if existing is not None:
            # A retransmission: the last response again (RFC 3261 17.2.1, 17.2.2).
            try:
                actions = existing.tx.feed(TxInput.RECV_REQUEST, now)
            except TransactionStateError:
                return
            if TxAction.RETRANSMIT in actions and existing.tx.wire:
                self._send(existing.flow, existing.destination, existing.tx.wire)
            return
        kind = (
            TransactionKind.INVITE_SERVER if method == "INVITE"
            else TransactionKind.NON_INVITE_SERVER
        )  # fmt: skip
        server = _ServerTx(
            new_transaction(kind, key, reliable=flow.reliable), request, flow, destination, via
        )
        if method == "CANCEL":
            self._tx[key] = server
            self._cancel(server, txkey, now)
            self._schedule(key, server)
            return
        if method == "INVITE":
            # RFC 3261 16.2: a stateful proxy answers an INVITE with 100 at once.
            self._reply(server, 100, None, (), now)
        new_call = method == "INVITE" and request.to_tag is None
        # The transaction is stored only once the request has been judged: whatever a
        # check raises, nothing is left behind without a timer to end it.
        try:
            self._check(request)
            route = self._route(request, flow, now)
        except _Reply as reply:
            self._tx[key] = server
            self._reply(server, reply.status, reply.reason, reply.headers, now)
            self._schedule(key, server)
            if new_call and reply.status != 407:
                self._emit(CallRefused(
                    call_id=request.call_id, caller=str(request.from_.uri),
                    target=str(request.uri), status=reply.status, reason=reply.reason,
                ))  # fmt: skip
            return
        except SipParseError as exc:
            self._tx[key] = server
            self._reply(server, 400, f"Bad Request ({_printable(str(exc))})", (), now)
            self._schedule(key, server)
            return
        self._tx[key] = server
        self._forward(server, route, now)
        self._schedule(key, server)
        if new_call:
            target = route.target
            self._emit(CallRouted(
                call_id=request.call_id, caller=str(request.from_.uri), target=str(request.uri),
                contact=str(target.uri or request.uri),
                transports=(flow.transport, target.flow.transport),
            ))  # fmt: skip

    @staticmethod
    def _check(request: SipRequest) -> None:
        # RFC 3261 16.3 (with 8.1.1): what a proxy needs to read.
        request.from_  # noqa: B018
        request.to  # noqa: B018
        request.call_id  # noqa: B018
        cseq = request.cseq
        if cseq.method != request.method:
            raise _Reply(400, "Bad Request (CSeq method does not match the request)")
        if request.uri.scheme not in ("sip", "sips"):
            raise _Reply(416, "Unsupported URI Scheme")
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            raise _Reply(483, "Too Many Hops")

    def _route(self, request: SipRequest, flow: Flow, now: float) -> _Route:
        """Where the request goes, how many of its Route values are the lab's, and who sent
        it."""
        routes = request.routes
        popped = 0
        call_id = request.call_id
        legs: list[_Leg] = []
        for route in routes:
            ours, leg = self._own_route(route, call_id)
            if not ours:
                break
            popped += 1
            if leg is not None:
                legs.append(leg)
        if popped < len(routes):
            # The next hop is not the lab: it would have to dial it, which the lab never does.
            raise _Reply(403, "Forbidden (the lab routes only between its phones)")
        if request.to_tag is not None:
            # RFC 3261 16.4 / 12.2: an in-dialog request is routed by the dialog's route set,
            # and only a dialog the lab record-routed (its tokens, signed for this Call-ID)
            # from one of its legs is one: anything else gets the same 481 whoever the
            # Request-URI names (as Kamailio's loose_route() failing; no authentication to
            # skip, no user to probe).
            return _Route(self._in_dialog(request, flow, legs), popped, "")
        if self._from_service(flow):
            caller = ""  # the lab's own services are not challenged
        elif self.config.require_auth:
            caller = self._authenticate(request, now).username
        else:
            caller = request.from_.uri.user or ""
        uri = request.uri
        user = uri.user
        service = self._services.get(user) if user is not None else None
        if service is not None:
            udp = self._udp_flow
            if udp is None:
                self.stats["unavailable"] += 1
                raise _Reply(480, f"Temporarily Unavailable (service {user} needs UDP)")
            host, port = service.address
            target = SipUri("sip", user, None, _host(host), port, ())
            return _Route(_Target(target, udp, service.address), popped, caller)
        if user is not None and user in self.users and self._is_lab_host(uri.host):
            bound = [b for b in self._locate(user) if b.flow_alive]
            if not bound:
                self.stats["unavailable"] += 1
                raise _Reply(480, "Temporarily Unavailable")
            binding = max(bound, key=lambda b: b.expires_at - b.expires)
            return _Route(self._to_binding(binding), popped, caller)
        # A contact URI (a phone that sends a request straight to another's contact).
        for binding in self._all_bindings(user):
            if binding.flow_alive and binding.contact.uri.equivalent(uri):
                return _Route(self._to_binding(binding, keep_uri=True), popped, caller)
        self.stats["not_found"] += 1
        raise _Reply(404, "Not Found")

    def _in_dialog(self, request: SipRequest, flow: Flow, legs: list[_Leg]) -> _Target:
        """The other leg of the record-routed dialog the request came on."""
        arrived = next((n for n, leg in enumerate(legs) if self._is_leg(leg, flow)), None)
        if arrived is None:
            # A phone whose connection closed mid-call and that registered again comes back
            # on a new connection: its old leg, if it is that user's.
            arrived = next(
                (n for n, leg in enumerate(legs) if self._reconnected(leg, flow)), None
            )
        if arrived is None:
            self.stats["no_dialog"] += 1
            raise _Reply(481, "Call/Transaction Does Not Exist")
        others = [leg for n, leg in enumerate(legs) if n != arrived]
        if not others:
            self.stats["no_dialog"] += 1
            raise _Reply(481, "Call/Transaction Does Not Exist")
        leg = others[0]
        if leg.transport == "udp":
            if self._udp_flow is None:
                self.stats["unavailable"] += 1
                raise _Reply(480, "Temporarily Unavailable (no UDP listener)")
            return _Target(None, self._udp_flow, leg.destination, leg.user)
        live = self._flow_open(leg.flow_id)
        if live is not None:
            return _Target(None, live, live.remote, leg.user)
        # That connection closed; a phone that re-registered on a new one is reached there
        # when the Request-URI is its registered contact.
        for binding in self._all_bindings(leg.user or None):
            if binding.flow_alive and binding.contact.uri.equivalent(request.uri):
                return self._to_binding(binding, keep_uri=True)
        self.stats["unavailable"] += 1
        raise _Reply(480, "Temporarily Unavailable (the connection is closed)")

    @staticmethod
    def _is_leg(leg: _Leg, flow: Flow) -> bool:
        if leg.transport == "udp":
            return not flow.reliable and leg.destination == flow.remote
        return flow.reliable and leg.flow_id == flow.id

    def _reconnected(self, leg: _Leg, flow: Flow) -> bool:
        if not leg.user or leg.transport == "udp" or self._flow_open(leg.flow_id) is not None:
            return False
        for binding in self._locate(leg.user):
            if not binding.flow_alive:
                continue
            if flow.reliable and binding.flow.id == flow.id:
                return True
            if not flow.reliable and not binding.flow.reliable and binding.source == flow.remote:
                return True
        return False

    def _to_binding(self, binding: Binding, *, keep_uri: bool = False) -> _Target:
        flow = binding.flow
        destination = flow.remote if flow.reliable else binding.source
        user = binding.aor.partition(":")[2].partition("@")[0]
        return _Target(None if keep_uri else binding.contact.uri, flow, destination, user)

    def _all_bindings(self, user: str | None) -> list[Binding]:
        if user is None:
            return []
        return self._locate(user)

    def _from_service(self, flow: Flow) -> bool:
        return not flow.reliable and any(
            s.address == flow.remote for s in self._services.values()
        )

    def _is_lab_host(self, host: str) -> bool:
        domains = self.config.domains
        host = host.lower()
        if domains is None:
            return True
        return host in domains or host in self._names

    def _own_route(self, route: NameAddr, call_id: str) -> tuple[bool, _Leg | None]:
        """Whether a Route value is the lab's (a token signed for this Call-ID, or its address
        or name), and the token's leg when it has one."""
        uri = route.uri
        token = uri.param(_TOKEN_PARAM)
        decoded = self._decode_token(token, call_id) if token else None
        if decoded is not None:
            return True, decoded
        host = uri.host.strip("[]").lower()
        if host in self._names:
            return True, None
        if uri.port is None:
            return any(h == host for h, _p in self._listeners), None
        return (host, uri.port) in self._listeners, None

    def _authenticate(self, request: SipRequest, now: float) -> LabUser:
        """The user the request's ``Proxy-Authorization`` proves, or a :class:`_Reply`: 407
        (a fresh challenge, ``stale=true`` when only the nonce was unusable), 400 (credentials
        that cannot be used at all), 403 (someone else's From)."""
        # The nonce is bound to the request it challenges (Call-ID and From tag, which the
        # retry keeps): a Proxy-Authorization is worth one call, not any call.
        bind = f"{request.call_id}\0{request.from_tag or ''}"
        verdict = None
        malformed = None
        for answer in request.headers.get_all("Proxy-Authorization"):
            verdict = self._digest.verify(
                answer, method=request.method, body=request.body,
                passwords=self.users.passwords, now=now, request_uri=request.uri, bind=bind,
            )  # fmt: skip
            if verdict.ok:
                assert verdict.username is not None
                user = self.users.by_authname(verdict.username)
                if user is None or request.from_.uri.user != user.username:
                    raise _Reply(403, "Forbidden (From is not the authenticated user)")
                return user
            if verdict.stale:
                break
            if verdict.malformed:
                malformed = verdict
        stale = verdict is not None and verdict.stale
        if malformed is not None and not stale:
            # RFC 7616 3.4.6.
            logger.info("%s from %s: bad credentials: %s", request.method,
                        _printable(str(request.from_.uri)), _printable(malformed.reason))
            raise _Reply(400, f"Bad Request ({_printable(malformed.reason)})")
        if verdict is not None and (not stale or verdict.reason != "nonce expired"):
            logger.info("%s from %s refused: %s", request.method,
                        _printable(str(request.from_.uri)), verdict.reason)
        self.stats["challenges"] += 1
        challenge = self._digest.challenge(now, stale=stale, bind=bind)
        raise _Reply(
            407, "Proxy Authentication Required", (("Proxy-Authenticate", str(challenge)),)
        )

    # -- forwarding --------------------------------------------------------------------------

    def _forward(self, server: _ServerTx, route: _Route, now: float) -> None:
        request = server.request
        target = route.target
        out = _forwarded_copy(request, target, route.popped)
        headers = out.headers
        in_dialog = request.to_tag is not None
        if request.method in _RECORD_ROUTE and not in_dialog:
            # RFC 3261 16.6 step 4, one entry per leg (Kamailio's double record-routing):
            # the callee sees the one facing it on top, the caller (reversed) the one facing it.
            call_id = request.call_id
            caller = server.flow.remote if server.flow.reliable else server.destination
            headers.insert(0, "Record-Route",
                           self._record_route(server.flow, caller, route.caller, call_id))
            headers.insert(0, "Record-Route", self._record_route(
                target.flow, target.destination, target.user, call_id))
        branch = f"z9hG4bKlabp{secrets.token_hex(8)}"
        headers.insert(0, "Via", _via(target.flow, branch))
        wire = bytes(out)
        kind = (
            TransactionKind.INVITE_CLIENT if request.method == "INVITE"
            else TransactionKind.NON_INVITE_CLIENT
        )  # fmt: skip
        key = ("c", *client_key(branch, request.method))
        tx = new_transaction(kind, key, reliable=target.flow.reliable, wire=wire)
        client = _ClientTx(tx, out, target.flow, target.destination, server)
        if request.method == "INVITE":
            client.timer_c = now + TIMER_C
        server.branch = client
        self._tx[key] = client
        self.stats["routed"] += 1
        if TxAction.TRANSMIT in tx.start(now):
            self._send(target.flow, target.destination, wire)
        self._schedule(key, client)

    def _record_route(self, flow: Flow, destination: Address, user: str,
                      call_id: str) -> NameAddr:  # fmt: skip
        host, port = flow.local
        params: tuple[tuple[str, str | None], ...] = (
            ("transport", flow.transport.lower()),
            ("lr", None),
            (_TOKEN_PARAM, self._encode_token(flow, destination, user, call_id)),
        )
        return NameAddr(SipUri("sip", None, None, _host(host), port, params))

    def _token_mac(self, payload: str, call_id: str) -> str:
        data = f"{payload}|{call_id}".encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()[:16]

    def _encode_token(self, flow: Flow, destination: Address, user: str, call_id: str) -> str:
        """``flow.transport.address.port.user`` and a MAC over them and the dialog's Call-ID:
        the leg of one dialog, which only the lab can make."""
        host, port = destination
        try:
            packed = ipaddress.ip_address(host.strip("[]")).packed.hex()
        except ValueError:
            packed = "00"
        payload = f"{flow.id}.{flow.transport.lower()}.{packed}.{port}.{user.encode().hex()}"
        return f"{payload}.{self._token_mac(payload, call_id)}"

    def _decode_token(self, token: str, call_id: str) -> _Leg | None:
        """The leg a token names, if the lab signed it for this Call-ID; else None."""
        payload, _, mac = token.rpartition(".")
        if not payload or not hmac.compare_digest(
            mac.encode("ascii", "replace"), self._token_mac(payload, call_id).encode("ascii")
        ):
            return None
        try:
            flow_id, transport, packed, port, user = payload.split(".")
            host = str(ipaddress.ip_address(bytes.fromhex(packed)))
            return _Leg(int(flow_id), transport, (host, int(port)), bytes.fromhex(user).decode())
        except ValueError:
            return None

    def _ack(self, request: SipRequest, flow: Flow, now: float, txkey: tuple[str, ...]) -> None:
        key = ("s", _flow_key(flow), *txkey)
        server = self._tx.get(key)
        if (
            isinstance(server, _ServerTx)
            and server.tx.kind is TransactionKind.INVITE_SERVER
            and server.tx.state in (TxState.COMPLETED, TxState.CONFIRMED)
        ):
            # The ACK of a non-2xx the lab sent or forwarded ends here (hop by hop).
            server.tx.feed(TxInput.RECV_ACK, now)
            self._schedule(key, server)
            return
        # The ACK of a 2xx: routed end to end, statelessly (RFC 3261 16.11), with a branch
        # derived from the incoming one so that its retransmissions keep the same branch.
        try:
            self._check(request)
            route = self._route(request, flow, now)
        except (_Reply, SipParseError) as exc:
            logger.debug("dropped an ACK from %s: %s", flow, exc)
            return
        target = route.target
        out = _forwarded_copy(request, target, route.popped)
        headers = out.headers
        seed = f"{request.top_via.branch}|{request.call_id}|{request.cseq.seq}"
        branch = "z9hG4bKlabs" + hashlib.sha256(seed.encode()).hexdigest()[:16]
        headers.insert(0, "Via", _via(target.flow, branch))
        self.stats["routed"] += 1
        self._send(target.flow, target.destination, bytes(out))

    def _cancel(self, server: _ServerTx, txkey: tuple[str, ...], now: float) -> None:
        # RFC 3261 16.10: CANCEL is hop by hop: match the INVITE's server transaction.
        request = server.request
        try:
            self._check(request)
            via = request.top_via
            invite_key = server_key(
                method="INVITE", branch=via.branch, sent_by=via.sent_by,
                request_uri=str(request.uri), call_id=request.call_id,
                from_tag=request.from_tag, cseq_number=request.cseq.seq, top_via=str(via),
            )  # fmt: skip
        except _Reply as reply:
            self._reply(server, reply.status, reply.reason, reply.headers, now)
            return
        except SipParseError as exc:
            self._reply(server, 400, f"Bad Request ({_printable(str(exc))})", (), now)
            return
        # Hop by hop: only the previous hop of the INVITE (same flow) may cancel it, not
        # whoever learnt its branch.
        invite = self._tx.get(("s", _flow_key(server.flow), *invite_key))
        if not isinstance(invite, _ServerTx) or invite.tx.kind is not TransactionKind.INVITE_SERVER:
            self._reply(server, 481, "Call/Transaction Does Not Exist", (), now)
            return
        self._reply(server, 200, None, (), now)
        self.stats["cancelled"] += 1
        branch = invite.branch
        if invite.final_sent:
            return
        if branch is None:
            self._reply(invite, 487, None, (), now)
            return
        branch.cancelled = True
        if branch.provisional:
            self._send_cancel(branch, now)
        else:
            # RFC 3261 9.1: not before a provisional response; sent when one comes.
            branch.cancel_pending = True

    def _send_cancel(self, branch: _ClientTx, now: float) -> None:
        # RFC 3261 9.1: same Request-URI, Call-ID, To, From, CSeq number and top Via (branch)
        # as the INVITE, and its Route.
        invite = branch.request
        cancel = SipRequest("CANCEL", invite.uri)
        headers = cancel.headers
        headers.add("Via", invite.top_via)
        headers.add("Max-Forwards", 70)
        for name in ("From", "To", "Call-ID"):
            value = invite.headers.get(name)
            if value is not None:
                headers.add(name, value)
        headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        wire = bytes(cancel)
        branch_id = invite.top_via.branch or ""
        key = ("c", *client_key(branch_id, "CANCEL"))
        if key in self._tx:
            return
        tx = new_transaction(
            TransactionKind.NON_INVITE_CLIENT, key, reliable=branch.flow.reliable, wire=wire
        )
        entry = _ClientTx(tx, cancel, branch.flow, branch.destination, None)
        self._tx[key] = entry
        branch.cancel_pending = False
        branch.cancelled = True
        # The branch has CANCEL_WAIT to answer with its 487 (RFC 3261 16.10).
        branch.timer_c = now + CANCEL_WAIT
        self._schedule(branch.tx.key, branch)
        if TxAction.TRANSMIT in tx.start(now):
            self._send(branch.flow, branch.destination, wire)
        self._schedule(key, entry)

    # -- responses ---------------------------------------------------------------------------

    def handle_response(self, response: SipResponse, flow: Flow, now: float) -> bool:
        """A response arrived; True when it was the proxy's (forwarded, absorbed or dropped
        as belonging to a proxy transaction), False when the registrar should look."""
        try:
            branch = response.top_via.branch
            method = response.cseq.method
        except SipParseError:
            return False
        if not branch or not branch.startswith("z9hG4bKlab"):
            return False
        key = ("c", *client_key(branch, method))
        entry = self._tx.get(key)
        if not isinstance(entry, _ClientTx):
            if branch.startswith("z9hG4bKlabp"):
                self.stats["stray"] += 1
                logger.debug("dropped a stray %d from %s", response.status, flow)
                return True
            return False
        if entry.flow.id != flow.id or (not flow.reliable and flow.remote != entry.destination):
            # RFC 3261 18.1.2: only from where the request went.
            self.stats["stray"] += 1
            return True
        status = response.status
        event = (
            TxInput.RECV_1XX if status < 200
            else TxInput.RECV_2XX if status < 300
            else TxInput.RECV_FINAL
        )  # fmt: skip
        try:
            actions = entry.tx.feed(event, now)
        except TransactionStateError:
            self._schedule(key, entry)
            return True
        if TxAction.SEND_ACK in actions:
            self._send_ack(entry, response)
        if TxAction.PASS_UP in actions and method != "CANCEL":
            self._relay(entry, response, now)
        self._schedule(key, entry)
        server = entry.server
        if server is not None:
            self._schedule(server.tx.key, server)
        return True

    def _send_ack(self, entry: _ClientTx, response: SipResponse) -> None:
        # RFC 3261 17.1.1.3: the ACK of a non-2xx, built from the INVITE and the response's To.
        wire = entry.tx.ack_wire
        if wire is None:
            invite = entry.request
            ack = SipRequest("ACK", invite.uri)
            headers = ack.headers
            headers.add("Via", invite.top_via)
            headers.add("Max-Forwards", 70)
            for name in ("From", "Call-ID"):
                value = invite.headers.get(name)
                if value is not None:
                    headers.add(name, value)
            to = response.headers.get("To")
            if to is not None:
                headers.add("To", to)
            headers.add("CSeq", f"{invite.cseq.seq} ACK")
            for route in invite.headers.get_all("Route"):
                headers.add("Route", route)
            wire = bytes(ack)
            entry.tx.ack_wire = wire
        self._send(entry.flow, entry.destination, wire)

    def _relay(self, entry: _ClientTx, response: SipResponse, now: float) -> None:
        status = response.status
        if status < 200:
            entry.provisional = True
            if entry.cancel_pending:
                self._send_cancel(entry, now)
        else:
            entry.timer_c = None
        server = entry.server
        if status == 100 or server is None:
            return  # RFC 3261 16.7 step 5: 100 is not forwarded
        out = response.copy()
        out.headers.pop_first("Via")
        if "Via" not in out.headers:
            return
        if server.via is not None:
            out.headers.pop_first("Via")
            out.headers.insert(0, "Via", server.via)
        self.stats["responses"] += 1
        self._transmit_response(server, out, now)

    def _reply(
        self,
        server: _ServerTx,
        status: int,
        reason: str | None,
        headers: Iterable[tuple[str, HeaderValue]],
        now: float,
    ) -> None:
        request = server.request
        try:
            response = request.create_response(
                status, reason, to_tag=server.tag if status > 100 else None, headers=headers
            )
        except SipParseError:
            return
        if server.via is not None:
            response.headers.pop_first("Via")
            response.headers.insert(0, "Via", server.via)
        response.headers.add("Server", self.config.server_header)
        self._transmit_response(server, response, now)

    def _transmit_response(self, server: _ServerTx, response: SipResponse, now: float) -> None:
        status = response.status
        event = (
            TxInput.SEND_1XX if status < 200
            else TxInput.SEND_2XX if status < 300
            else TxInput.SEND_FINAL
        )  # fmt: skip
        try:
            actions = server.tx.feed(event, now)
        except TransactionStateError:
            if event is TxInput.SEND_2XX and server.tx.kind is TransactionKind.INVITE_SERVER:
                # RFC 3261 16.7 step 10: a 2xx to an INVITE is always forwarded, even after
                # the lab answered the caller (a 200 that crossed a CANCEL).
                self._send(server.flow, server.destination, bytes(response))
            else:
                logger.debug("dropped a late %d for %s", status, server.request.method)
            return
        if TxAction.TRANSMIT in actions:
            wire = bytes(response)
            server.tx.wire = wire
            self._send(server.flow, server.destination, wire)
        self._schedule(server.tx.key, server)


def _flow_key(flow: Flow) -> str:
    if flow.reliable:
        return str(flow.id)
    host, port = flow.remote
    return f"{host}|{port}"


def _deadline(entry: _Entry) -> float | None:
    at = entry.tx.get_timer()
    if isinstance(entry, _ClientTx) and entry.timer_c is not None:
        return entry.timer_c if at is None else min(at, entry.timer_c)
    return at


def _forwarded_copy(request: SipRequest, target: _Target, popped: int) -> SipRequest:
    """The copy of ``request`` the lab sends on: retargeted, one hop older, its Routes popped.

    RFC 3261 16.6 steps 2, 3 and 7 / 16.4: the Request-URI becomes the target's contact,
    Max-Forwards goes down by one, and the lab's own ``popped`` Route values come off. The lab
    consumed its own credentials, so Proxy-Authorization goes too (Kamailio's
    consume_credentials()).
    """
    out = request.copy()
    if target.uri is not None:
        out = replace(out, uri=target.uri)
    headers = out.headers
    max_forwards = request.max_forwards
    headers.set("Max-Forwards", 70 if max_forwards is None else max_forwards - 1)
    if popped:
        rest = request.routes[popped:]
        headers.remove("Route")
        for route in rest:
            headers.add("Route", route)
    headers.remove("Proxy-Authorization")
    return out


def _via(flow: Flow, branch: str) -> Via:
    host, port = flow.local
    params: tuple[tuple[str, str | None], ...] = (("branch", branch),)
    if not flow.reliable:
        params = (("rport", None), ("branch", branch))
    return Via(flow.transport, _host(host), port, params)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in text)[:120]
