"""The embedded registrar's decisions, sans-I/O: REGISTER (RFC 3261 §10.3), OPTIONS, keep-alives;
every other request, and every response to the lab's own forwarded requests, goes to its
stateful proxy (:class:`phone_sim.lab.proxy.Proxy`, ``registrar.proxy``).

:class:`Registrar` owns the user table, the location service and the digest nonces of one lab.
It does no I/O and reads no clock, like aioquic's ``QuicConnection``:

- feed it what arrived: :meth:`Registrar.receive_datagram` (UDP: bytes),
  :meth:`Registrar.receive_message` (a stream framer's output: a request, a response, a
  keep-alive or a rejected message), :meth:`Registrar.flow_opened` and
  :meth:`Registrar.flow_closed` for connections, :meth:`Registrar.handle_timer`;
- take out what to send with :meth:`Registrar.transmits_to_send` (each one names the
  :class:`Flow` to send it on), what happened with :meth:`Registrar.next_event`, and when to
  wake it next with :meth:`Registrar.get_timer`.

Bindings are tied to the connection ("flow", RFC 5626 §3.2) that the REGISTER came on: that is
where a request to the phone must go, as Asterisk does with ``rewrite_contact=yes`` and
Kamailio with ``fix_nated_register``. When a connection closes its bindings are *kept* until
they expire, marked ``flow_alive=False`` (the phone is unreachable until it re-registers on a
new connection, which moves the binding to that flow). Expiry uses one heap of deadlines with
lazy deletion, never a timer per binding.
"""

from __future__ import annotations

import heapq
import logging
import secrets
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from phone_sim.errors import RemoteError, UsageError
from phone_sim.lab.proxy import PROXY_METHODS, CallRefused, CallRouted, Proxy
from phone_sim.sip.digest import DigestServer
from phone_sim.sip.framer import (
    KeepAlivePingReceived,
    KeepAlivePongReceived,
    MessageRejected,
)
from phone_sim.sip.headers import Headers, HeaderValue, NameAddr, Via
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse, is_keepalive, parse_message
from phone_sim.sip.routing import Address, response_destination
from phone_sim.sip.transaction import server_key
from phone_sim.sip.uri import SipUri
from phone_sim.sip.validate import validate_request

logger = logging.getLogger(__name__)

__all__ = [
    "Address",
    "Binding",
    "BindingAdded",
    "BindingExpired",
    "BindingRefreshed",
    "BindingRefused",
    "BindingRemoved",
    "CallRefused",
    "CallRouted",
    "Flow",
    "FlowLost",
    "LabConfigError",
    "LabUser",
    "PhoneAnswered",
    "PhoneSilent",
    "PhoneUnreachable",
    "Registrar",
    "RegistrarConfig",
    "RegistrarEvent",
    "Transmit",
    "UserTable",
    "aor_of",
]

_TRANSPORTS = ("UDP", "TCP", "TLS")
#: Methods the lab handles: REGISTER itself, the rest as a proxy (its OPTIONS Allow).
ALLOWED_METHODS: tuple[str, ...] = ("REGISTER", *PROXY_METHODS)
#: RFC 3261 17.2.2: a non-INVITE server transaction over UDP lives 64*T1 (Timer J).
TIMER_J = 32.0
#: RFC 3261 17.1.2.2: a non-INVITE client transaction gives up after 64*T1 (Timer F).
TIMER_F = 32.0
_T1 = 0.5
_T2 = 4.0
_SERVER_NAME = "phone-sim lab"


class LabConfigError(UsageError):
    """A registrar setting or user entry that cannot work."""


# --------------------------------------------------------------------------------------------
# Users


@dataclass(frozen=True, slots=True, kw_only=True)
class LabUser:
    """One account of the lab: the AOR user, its digest password and authentication name."""

    username: str
    """The user part of the AOR (``101`` in ``sip:101@lab``)."""
    password: str = field(repr=False)
    """The digest password; never shown in ``repr()`` or logs."""
    authname: str | None = None
    """The digest user name when it differs from ``username`` (the phone's ``authname``)."""

    def __post_init__(self) -> None:
        if not self.username or any(c in self.username for c in "\r\n\0:@ "):
            raise LabConfigError(f"bad lab user name {self.username!r}")
        if not self.password:
            raise LabConfigError(f"lab user {self.username!r} needs a password")
        if self.authname is not None and (
            not self.authname or any(c in self.authname for c in '\r\n\0" ')
        ):
            raise LabConfigError(f"bad authentication name for lab user {self.username!r}")

    @property
    def auth_username(self) -> str:
        """The name the phone answers the digest challenge with."""
        return self.authname or self.username

    @classmethod
    def parse(cls, spec: str) -> LabUser:
        """``USER:PASSWORD`` or ``USER:PASSWORD:AUTHNAME`` (the CLI's ``--user``)."""
        user, sep, rest = spec.partition(":")
        if not sep:
            raise LabConfigError(f"user {user!r}: expected USER:PASSWORD[:AUTHNAME]")
        password, _, authname = rest.partition(":")
        return cls(username=user, password=password, authname=authname or None)


class UserTable:
    """The lab's accounts, looked up by AOR user and by digest user name."""

    __slots__ = ("_by_auth", "_by_user", "_passwords")

    def __init__(self, users: Mapping[str, str] | Iterable[LabUser]) -> None:
        entries: list[LabUser]
        if isinstance(users, Mapping):
            entries = [LabUser(username=u, password=p) for u, p in users.items()]
        else:
            entries = list(users)
        self._by_user: dict[str, LabUser] = {}
        self._by_auth: dict[str, LabUser] = {}
        for user in entries:
            if user.username in self._by_user:
                raise LabConfigError(f"lab user {user.username!r} given twice")
            if user.auth_username in self._by_auth:
                raise LabConfigError(f"authentication name {user.auth_username!r} given twice")
            self._by_user[user.username] = user
            self._by_auth[user.auth_username] = user
        self._passwords = {name: u.password for name, u in self._by_auth.items()}

    def __repr__(self) -> str:
        return f"<UserTable {sorted(self._by_user)}>"

    def __len__(self) -> int:
        return len(self._by_user)

    def __contains__(self, username: object) -> bool:
        return username in self._by_user

    def get(self, username: str) -> LabUser | None:
        """The user whose AOR user part is ``username``."""
        return self._by_user.get(username)

    def by_authname(self, authname: str) -> LabUser | None:
        """The user who authenticates as ``authname``."""
        return self._by_auth.get(authname)

    @property
    def passwords(self) -> Mapping[str, str]:
        """Digest user name -> password, for :meth:`DigestServer.verify`."""
        return self._passwords

    def users(self) -> list[LabUser]:
        """Every user."""
        return list(self._by_user.values())


# --------------------------------------------------------------------------------------------
# Flows, configuration, events


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """Where a message came from: one connection (TLS/TCP) or one UDP listener and source."""

    id: int
    """The connection's number, unique in the lab; for UDP the listener's."""
    transport: str
    """``UDP``, ``TCP`` or ``TLS``."""
    remote: Address
    """The peer's address and port."""
    local: Address
    """Our address and port."""

    @property
    def reliable(self) -> bool:
        """Whether this is a connection (TCP, TLS) rather than UDP."""
        return self.transport != "UDP"

    def __str__(self) -> str:
        host, port = self.remote
        shown = f"[{host}]" if ":" in host else host
        return f"{self.transport.lower()}:{shown}:{port}#{self.id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrarConfig:
    """How the registrar behaves."""

    realm: str = "lab.phone-sim.test"
    """The digest realm (by default the lab's server name)."""
    domains: frozenset[str] | None = None
    """Request-URI hosts it is registrar for (lower case); ``None`` accepts any (RFC 3261
    10.3 step 1: others get 404)."""
    min_expires: int = 60
    """Shorter non-zero expiries get 423 with Min-Expires (RFC 3261 10.3 step 7)."""
    max_expires: int = 3600
    """Longer expiries are shortened to this."""
    default_expires: int = 3600
    """The expiry of a contact without ``expires`` parameter or Expires header (shortened to
    ``max_expires`` like any other)."""
    max_contacts_per_aor: int = 10
    """More bindings for one AOR than this get 403."""
    max_contacts_per_request: int = 16
    """More Contact values in one REGISTER than this get 400."""
    nonce_lifetime: float = 300.0
    """After this many seconds a nonce is answered with ``stale=true``."""
    require_auth: bool = True
    """Whether REGISTER needs digest authentication (a lab without it is an open registrar)."""
    server_header: str = _SERVER_NAME
    """The Server header of every response."""

    def __post_init__(self) -> None:
        if self.min_expires < 1:
            raise LabConfigError(f"min_expires must be at least 1 s, not {self.min_expires}")
        if self.max_expires < self.min_expires:
            raise LabConfigError(
                f"max_expires {self.max_expires} is below min_expires {self.min_expires}"
            )
        if self.default_expires < self.min_expires:
            raise LabConfigError(
                f"default_expires {self.default_expires} is below min_expires {self.min_expires}"
            )
        if self.max_contacts_per_aor < 1 or self.max_contacts_per_request < 1:
            raise LabConfigError("contact limits must be at least 1")
        if not self.realm or '"' in self.realm or "\\" in self.realm:
            raise LabConfigError(f"bad digest realm {self.realm!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One contact of an AOR in the location service (a snapshot)."""

    aor: str
    """The address of record, ``sip:user@domain``."""
    contact: NameAddr
    """The Contact as the phone registered it (without ``expires``)."""
    expires_at: float
    """When it expires, on the registrar's clock."""
    expires: int
    """The expiry granted, in seconds, when it was last registered."""
    call_id: str
    """The Call-ID of the REGISTER that made or refreshed it."""
    cseq: int
    """Its CSeq number."""
    flow: Flow
    """The connection (or UDP source) it is bound to: requests to the phone go there."""
    flow_alive: bool
    """False once that connection closed; the binding stays until it expires."""
    source: Address
    """Where the REGISTER really came from (the ``received``/``rport`` address)."""
    instance: str | None = None
    """The ``+sip.instance`` parameter, when the phone sent one (RFC 5626)."""
    reg_id: str | None = None
    """The ``reg-id`` parameter, when the phone sent one."""
    user_agent: str | None = None
    """The User-Agent of the REGISTER."""

    @property
    def uri(self) -> SipUri:
        """The contact URI."""
        return self.contact.uri


@dataclass(frozen=True, slots=True, kw_only=True)
class Transmit:
    """Bytes to send."""

    flow: Flow
    """The flow to send on: a connection, or the UDP listener."""
    destination: Address
    """For UDP, the address to send to (RFC 3261 18.2.2); for a connection its peer."""
    data: bytes
    """What to send."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingAdded:
    """A phone registered a new contact."""

    binding: Binding
    """The new binding."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRefreshed:
    """A phone re-registered a contact it had (possibly from a new connection)."""

    binding: Binding
    """The binding after the refresh."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRemoved:
    """A phone unregistered a contact (Expires 0 or ``Contact: *``), or another replaced it."""

    binding: Binding
    """The binding as it was."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingExpired:
    """A binding reached its expiry without a refresh."""

    binding: Binding
    """The binding as it was."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowLost:
    """A connection with bindings closed; they stay until expiry, unreachable."""

    flow: Flow
    """The connection."""
    aors: tuple[str, ...]
    """The AORs that had a binding on it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRefused:
    """A REGISTER got a final error response (a 401 challenge without credentials is not
    counted: that is the normal first step)."""

    aor: str | None
    """The AOR it was for, when it could be read."""
    status: int
    """The status sent."""
    reason: str
    """Why, in words (never a password)."""
    flow: Flow
    """Where it came from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneAnswered:
    """A phone answered (finally) a request the lab sent it with :meth:`Registrar.send_request`."""

    request_id: str
    """What :meth:`Registrar.send_request` returned (the request's Via branch)."""
    aor: str
    """The AOR of the binding it was sent to."""
    response: SipResponse
    """The final response."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneSilent:
    """A phone did not answer a request the lab sent it within its timeout (Timer F)."""

    request_id: str
    """What :meth:`Registrar.send_request` returned."""
    aor: str
    """The AOR of the binding it was sent to."""
    method: str
    """The request's method."""


class PhoneUnreachable(RemoteError):
    """The binding's connection is closed: the phone cannot be reached until it
    re-registers."""


RegistrarEvent = (
    BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired | FlowLost
    | BindingRefused | PhoneAnswered | PhoneSilent | CallRouted | CallRefused
)  # fmt: skip


def aor_of(uri: SipUri) -> str:
    """The canonical AOR of a To URI: scheme, user and lower-case host (RFC 3261 10.3 step 5)."""
    host = uri.host.lower()
    if uri.user is None:
        return f"{uri.scheme}:{host}"
    return f"{uri.scheme}:{uri.user}@{host}"


def _contact_key(contact: NameAddr) -> tuple[str, ...]:
    # RFC 5626 §6: a contact with +sip.instance (and reg-id) is the same binding whatever its
    # URI, so a phone that reconnects from a new port replaces its binding instead of adding
    # one. Otherwise RFC 3261 19.1.4 URI equality, simplified: case-insensitive scheme, host
    # and parameter names, case-sensitive user, parameter order ignored.
    instance = contact.param("+sip.instance")
    if instance is not None:
        return ("instance", instance.strip('"<>'), contact.param("reg-id") or "")
    uri = contact.uri
    params = sorted((k.lower(), (v or "").lower()) for k, v in uri.params)
    return (
        "uri",
        uri.scheme,
        uri.user or "",
        uri.host.lower(),
        str(uri.port or ""),
        ";".join(f"{k}={v}" for k, v in params),
    )


class _Binding:
    """The mutable record behind :class:`Binding`."""

    __slots__ = (
        "aor", "call_id", "contact", "contact_text", "cseq", "expires", "expires_at", "flow",
        "instance", "key",
        "reg_id", "source", "user_agent",
    )  # fmt: skip

    def __init__(self, aor: str, key: tuple[str, ...], contact: NameAddr) -> None:
        self.aor = aor
        self.key = key
        self.contact = contact
        self.contact_text = str(contact)
        self.expires_at = 0.0
        self.expires = 0
        self.call_id = ""
        self.cseq = 0
        self.flow: Flow | None = None
        self.source: Address = ("", 0)
        self.instance: str | None = None
        self.reg_id: str | None = None
        self.user_agent: str | None = None


class _Pending:
    """A request the lab sent to a phone, waiting for its final response."""

    __slots__ = ("aor", "interval", "method", "transmit")

    def __init__(self, aor: str, method: str, transmit: Transmit) -> None:
        self.aor = aor
        self.method = method
        self.transmit = transmit
        self.interval = _T1


class _Refusal(Exception):
    """An error response to a REGISTER, built where the rule is."""

    def __init__(
        self, status: int, reason: str, *, headers: tuple[tuple[str, HeaderValue], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


# --------------------------------------------------------------------------------------------
# The core


class Registrar:
    """The lab's registrar core. One per lab; every connection feeds the same instance."""

    def __init__(
        self,
        users: Mapping[str, str] | Iterable[LabUser] | UserTable,
        config: RegistrarConfig | None = None,
        *,
        digest_secret: bytes | None = None,
    ) -> None:
        self.config = config or RegistrarConfig()
        self.users = users if isinstance(users, UserTable) else UserTable(users)
        self._digest = DigestServer(
            self.config.realm,
            nonce_lifetime=self.config.nonce_lifetime,
            secret=digest_secret,
        )
        self._aors: dict[str, dict[tuple[str, ...], _Binding]] = {}
        self._heap: list[tuple[float, int, str, tuple[str, ...]]] = []
        self._heap_seq = 0
        self._open_flows: dict[int, Flow] = {}
        self._by_flow: dict[int, set[tuple[str, tuple[str, ...]]]] = {}
        # RFC 3261 17.2.2 over UDP: retransmitted requests get the same response again.
        self._udp_responses: dict[tuple[str, ...], Transmit] = {}
        self._udp_expiry: deque[tuple[float, tuple[str, ...]]] = deque()
        # Requests the lab sent to phones (RFC 3261 17.1.2 non-INVITE client, by branch).
        self._pending: dict[str, _Pending] = {}
        self._pending_expiry: deque[tuple[float, str]] = deque()
        self._retransmits: list[tuple[float, str]] = []
        self._out: list[Transmit] = []
        self._events: deque[RegistrarEvent] = deque()
        #: The stateful proxy (RFC 3261 16) that routes everything but REGISTER between phones.
        self.proxy = Proxy(
            config=self.config,
            users=self.users,
            digest=self._digest,
            locate=self.bindings,
            flow_open=self._open_flows.get,
            send=self._proxy_send,
            emit=self._events.append,
        )
        self.stats: dict[str, int] = {
            "requests": 0, "registers": 0, "challenges": 0, "refused": 0, "malformed": 0,
            "keepalives": 0, "retransmissions": 0, "internal_errors": 0,
        }  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"<Registrar realm={self.config.realm!r} users={len(self.users)} "
            f"aors={len(self._aors)} flows={len(self._open_flows)}>"
        )

    # -- outputs ----------------------------------------------------------------------------

    def _proxy_send(self, flow: Flow, destination: Address, data: bytes) -> None:
        self._out.append(Transmit(flow=flow, destination=destination, data=data))

    def transmits_to_send(self) -> list[Transmit]:
        """What to send, in order; empties the queue."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> RegistrarEvent | None:
        """The next event, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The next deadline (a binding expiry or a cached UDP response to drop), or None."""
        heap = self._heap
        while heap:
            at, _seq, aor, key = heap[0]
            binding = self._aors.get(aor, {}).get(key)
            if binding is not None and binding.expires_at == at:
                break
            heapq.heappop(heap)  # stale entry: refreshed or removed since
        deadlines = []
        if heap:
            deadlines.append(heap[0][0])
        if self._udp_expiry:
            deadlines.append(self._udp_expiry[0][0])
        while self._pending_expiry and self._pending_expiry[0][1] not in self._pending:
            self._pending_expiry.popleft()
        if self._pending_expiry:
            deadlines.append(self._pending_expiry[0][0])
        while self._retransmits and self._retransmits[0][1] not in self._pending:
            heapq.heappop(self._retransmits)
        if self._retransmits:
            deadlines.append(self._retransmits[0][0])
        proxy_at = self.proxy.get_timer()
        if proxy_at is not None:
            deadlines.append(proxy_at)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Expire what is due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _seq, aor, key = heapq.heappop(heap)
            contacts = self._aors.get(aor)
            binding = contacts.get(key) if contacts else None
            if binding is None or binding.expires_at != at:
                continue
            self._drop(binding)
            self._events.append(BindingExpired(binding=self._snapshot(binding)))
        expiry = self._udp_expiry
        while expiry and expiry[0][0] <= now:
            _, txkey = expiry.popleft()
            self._udp_responses.pop(txkey, None)
        pending_expiry = self._pending_expiry
        while pending_expiry and pending_expiry[0][0] <= now:
            _, request_id = pending_expiry.popleft()
            pending = self._pending.pop(request_id, None)
            if pending is not None:
                self._events.append(
                    PhoneSilent(request_id=request_id, aor=pending.aor, method=pending.method)
                )
        retransmits = self._retransmits
        while retransmits and retransmits[0][0] <= now:
            _, request_id = heapq.heappop(retransmits)
            pending = self._pending.get(request_id)
            if pending is None:
                continue
            # RFC 3261 17.1.2.2 Timer E: double up to T2.
            self._out.append(pending.transmit)
            pending.interval = min(pending.interval * 2, _T2)
            heapq.heappush(retransmits, (now + pending.interval, request_id))
        self.proxy.handle_timer(now)

    # -- the location service ---------------------------------------------------------------

    def bindings(self, aor: str) -> list[Binding]:
        """The current bindings of ``aor`` (``sip:101@lab.phone-sim.test``, or just ``101`` for
        that user in any domain), oldest first."""
        if ":" in aor:
            try:
                key = aor_of(SipUri.parse(aor))
            except SipParseError:
                return []
            return [self._snapshot(b) for b in self._aors.get(key, {}).values()]
        out: list[Binding] = []
        for name, contacts in self._aors.items():
            user = name.partition(":")[2].partition("@")
            if user[1] and user[0] == aor:
                out.extend(self._snapshot(b) for b in contacts.values())
        return out

    def aors(self) -> list[str]:
        """Every AOR with at least one binding."""
        return list(self._aors)

    @property
    def binding_count(self) -> int:
        """How many bindings the location service holds."""
        return sum(len(c) for c in self._aors.values())

    def _snapshot(self, b: _Binding) -> Binding:
        assert b.flow is not None
        alive = not b.flow.reliable or b.flow.id in self._open_flows
        return Binding(
            aor=b.aor,
            contact=b.contact,
            expires_at=b.expires_at,
            expires=b.expires,
            call_id=b.call_id,
            cseq=b.cseq,
            flow=b.flow,
            flow_alive=alive,
            source=b.source,
            instance=b.instance,
            reg_id=b.reg_id,
            user_agent=b.user_agent,
        )

    def _drop(self, binding: _Binding) -> None:
        contacts = self._aors.get(binding.aor)
        if contacts is not None:
            contacts.pop(binding.key, None)
            if not contacts:
                del self._aors[binding.aor]
        if binding.flow is not None:
            self._unindex(binding)

    def _unindex(self, binding: _Binding) -> None:
        assert binding.flow is not None
        members = self._by_flow.get(binding.flow.id)
        if members is not None:
            members.discard((binding.aor, binding.key))
            if not members:
                del self._by_flow[binding.flow.id]

    # -- connections -------------------------------------------------------------------------

    def flow_opened(self, flow: Flow) -> None:
        """A connection was accepted (TLS: once its handshake completed)."""
        if flow.reliable:
            self._open_flows[flow.id] = flow

    def flow_closed(self, flow_id: int, now: float) -> None:
        """A connection closed. Its bindings stay until they expire, marked unreachable."""
        flow = self._open_flows.pop(flow_id, None)
        members = self._by_flow.get(flow_id)
        if flow is not None and members:
            aors = tuple(sorted({aor for aor, _ in members}))
            self._events.append(FlowLost(flow=flow, aors=aors))
        if flow is not None:
            self.proxy.flow_closed(flow_id, now)

    def flow_has_bindings(self, flow_id: int) -> bool:
        """Whether any binding is on connection ``flow_id``."""
        return flow_id in self._by_flow

    @property
    def open_flows(self) -> int:
        """How many connections are open."""
        return len(self._open_flows)

    # -- input -------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, flow: Flow, now: float) -> None:
        """A UDP datagram arrived on ``flow`` (whose ``remote`` is its source)."""
        if is_keepalive(data):
            # RFC 5626 4.4.2 is STUN on UDP; a CRLF keep-alive on UDP needs no answer.
            self.stats["keepalives"] += 1
            return
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._reject(exc, flow, now)
            return
        self._receive(message, flow, now)

    def receive_message(
        self,
        message: SipRequest
        | SipResponse
        | KeepAlivePingReceived
        | KeepAlivePongReceived
        | MessageRejected,
        flow: Flow,
        now: float,
    ) -> None:
        """A framed message or keep-alive arrived on a connection (a :class:`StreamFramer`
        event)."""
        if isinstance(message, KeepAlivePingReceived):
            # RFC 5626 4.4.1: answer a double-CRLF ping with a single-CRLF pong.
            self.stats["keepalives"] += 1
            self._out.append(Transmit(flow=flow, destination=flow.remote, data=b"\r\n"))
            return
        if isinstance(message, KeepAlivePongReceived):
            return
        if isinstance(message, MessageRejected):
            self._reject(message.error, flow, now)
            return
        self._receive(message, flow, now)

    def _reject(self, exc: SipParseError, flow: Flow, now: float) -> None:
        self.stats["malformed"] += 1
        partial = exc.partial
        if exc.status is None or not isinstance(partial, SipRequest) or partial.method == "ACK":
            logger.debug("dropped a malformed message from %s: %s", flow, exc)
            return
        try:
            partial.top_via  # noqa: B018 - a response needs a Via to go anywhere
            response = partial.create_response(exc.status, _reason(exc.status, str(exc)))
        except (SipParseError, ValueError):
            logger.debug("dropped a malformed request from %s: %s", flow, exc)
            return
        logger.info("answered %d to a malformed request from %s: %s", exc.status, flow, exc)
        self._send_response(partial, response, flow, None, now)

    def _receive(self, message: SipRequest | SipResponse, flow: Flow, now: float) -> None:
        try:
            self._dispatch(message, flow, now)
        except SipParseError as exc:
            # A field the parser let through but a rule here could not read (e.g. a header
            # only parsed on demand): the request is bad, not the registrar.
            if isinstance(message, SipRequest) and exc.partial is None:
                exc.partial = message
            self._reject(exc, flow, now)
        except Exception as exc:
            # A bug reached by some input must cost that request, not the connection (an
            # exception here would end in asyncio's handler: a traceback, the socket closed,
            # no answer). One line at ERROR names it; the traceback is at DEBUG.
            self.stats["internal_errors"] += 1
            what = message.method if isinstance(message, SipRequest) else message.status
            logger.error(
                "internal error on %s from %s: %s: %s",
                what, flow, type(exc).__name__, _printable(str(exc)),
            )  # fmt: skip
            logger.debug("internal error on %s from %s", what, flow, exc_info=True)
            if isinstance(message, SipRequest) and message.method != "ACK":
                try:
                    response = message.create_response(500, "Server Internal Error")
                except (SipParseError, ValueError):
                    return
                self._send_response(message, response, flow, None, now)

    def _dispatch(self, message: SipRequest | SipResponse, flow: Flow, now: float) -> None:
        if isinstance(message, SipResponse):
            if not self.proxy.handle_response(message, flow, now):
                self._on_response(message, flow)
            return
        self.stats["requests"] += 1
        request = message
        try:
            original = request.top_via
            txkey = server_key(
                method=request.method,
                branch=original.branch,
                sent_by=original.sent_by,
                request_uri=str(request.uri),
                call_id=request.call_id,
                from_tag=request.from_tag,
                cseq_number=request.cseq.seq,
                top_via=str(original),
            )
        except SipParseError as exc:
            # validate_request names what is missing; without a Via nothing can be answered.
            if "Via" in request.headers:
                error = validate_request(request, allowed_methods=ALLOWED_METHODS)
                if error is not None:
                    self._send_response(request, error, flow, None, now)
                    return
            self.stats["malformed"] += 1
            logger.debug("dropped %s from %s: %s", request.method, flow, exc)
            return
        if self.proxy.wants(request):
            via = _stamped_via(original, flow.remote)
            self.proxy.handle_request(
                request, flow, now, txkey=txkey, via=via,
                destination=_response_destination(request, flow, via),
            )  # fmt: skip
            return
        if not flow.reliable:
            # Keyed by source too: nobody else's datagram is taken for a retransmission.
            txkey = (*txkey, *map(str, flow.remote))
            cached = self._udp_responses.get(txkey)
            if cached is not None:
                self.stats["retransmissions"] += 1
                self._out.append(cached)
                return
        via = _stamped_via(original, flow.remote)
        tag = secrets.token_hex(6)
        error = self._validate(request, tag)
        if error is not None:
            if request.method == "REGISTER":
                self._refused(request, error.status, error.reason, flow)
            self._send_response(request, error, flow, txkey, now, via)
            return
        if request.method == "ACK":
            return  # RFC 3261 17.2.3: an ACK to our non-2xx needs nothing (no INVITE here)
        if request.method == "OPTIONS":
            # RFC 3261 11.2: what we can do.
            response = request.create_response(
                200,
                to_tag=tag,
                headers=[
                    ("Allow", ", ".join(ALLOWED_METHODS)),
                    ("Accept", "application/sdp"),
                    ("Accept-Encoding", "identity"),
                ],
            )
            self._send_response(request, response, flow, txkey, now, via)
            return
        self.stats["registers"] += 1
        try:
            response = self._register(request, flow, now, tag)
        except _Refusal as refusal:
            response = request.create_response(
                refusal.status, refusal.reason, to_tag=tag, headers=refusal.headers
            )
        self._send_response(request, response, flow, txkey, now, via)

    @staticmethod
    def _validate(request: SipRequest, tag: str) -> SipResponse | None:
        # The common case, a REGISTER or OPTIONS to a sip: URI without Require, needs only the
        # mandatory header fields once each, which the accessors check (they raise on a
        # missing or repeated one); anything else goes through the full RFC 3261 8.2 checks.
        if (
            request.method in ("REGISTER", "OPTIONS")
            and "Require" not in request.headers
            and request.uri.scheme in ("sip", "sips")
        ):
            try:
                request.from_  # noqa: B018
                request.to  # noqa: B018
                request.call_id  # noqa: B018
                request.cseq  # noqa: B018
            except SipParseError:
                pass
            else:
                return None
        return validate_request(request, allowed_methods=ALLOWED_METHODS, accept={}, to_tag=tag)

    # -- requests to phones -----------------------------------------------------------------

    def send_request(
        self,
        binding: Binding,
        method: str,
        now: float,
        *,
        headers: Iterable[tuple[str, HeaderValue]] = (),
        body: bytes = b"",
        timeout: float = TIMER_F,
    ) -> str:
        """Send an out-of-dialog request (OPTIONS, NOTIFY, MESSAGE...) to a registered phone
        over the flow its binding is on, as Asterisk does with ``rewrite_contact=yes``.

        Returns the request id that :class:`PhoneAnswered` or :class:`PhoneSilent` will carry.
        Raises :class:`PhoneUnreachable` when the binding's connection is closed.
        """
        flow = binding.flow
        if flow.reliable and flow.id not in self._open_flows:
            raise PhoneUnreachable(
                f"{binding.aor} is bound to {flow}, which is closed: it must re-register"
            )
        if not method or not method.isalpha() or not method.isupper():
            raise LabConfigError(f"bad SIP method {method!r}")
        request_id = f"z9hG4bKlab{secrets.token_hex(8)}"
        host, port = flow.local
        sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        realm = self.config.realm
        lines = [
            ("Via", f"SIP/2.0/{flow.transport} {sent_by};rport;branch={request_id}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:lab@{realm}>;tag={secrets.token_hex(6)}"),
            ("To", f"<{binding.aor}>"),
            ("Call-ID", f"{secrets.token_hex(10)}@{realm}"),
            ("CSeq", f"1 {method}"),
            ("User-Agent", self.config.server_header),
            *headers,
        ]
        request = SipRequest(method, binding.contact.uri, Headers(lines), body)
        # UDP: to where the REGISTER came from (the NAT-friendly choice Asterisk makes).
        destination = binding.source if not flow.reliable else flow.remote
        transmit = Transmit(flow=flow, destination=destination, data=bytes(request))
        self._out.append(transmit)
        self._pending[request_id] = _Pending(binding.aor, method, transmit)
        self._pending_expiry.append((now + timeout, request_id))
        if not flow.reliable:
            heapq.heappush(self._retransmits, (now + _T1, request_id))
        return request_id

    def _on_response(self, response: SipResponse, flow: Flow) -> None:
        try:
            branch = response.top_via.branch
        except SipParseError:
            branch = None
        pending = self._pending.get(branch) if branch else None
        if pending is None or pending.transmit.flow.id != flow.id:
            # RFC 3261 18.1.2: a response that matches no transaction is dropped.
            logger.debug("dropped a stray %d from %s", response.status, flow)
            return
        if response.status < 200:
            pending.interval = _T2  # RFC 3261 17.1.2.2: after a 1xx, retransmit every T2
            return
        assert branch is not None
        del self._pending[branch]
        self._events.append(PhoneAnswered(request_id=branch, aor=pending.aor, response=response))

    # -- RFC 3261 10.3 -----------------------------------------------------------------------

    def _register(self, request: SipRequest, flow: Flow, now: float, tag: str) -> SipResponse:
        config = self.config
        to_uri = request.to.uri
        aor = aor_of(to_uri) if to_uri.scheme in ("sip", "sips") else None
        # Step 1: are we the registrar for this domain?
        if config.domains is not None and request.uri.host.lower() not in config.domains:
            raise self._refuse(request, aor, flow, 404, "Not Found (domain)")
        # Steps 2-4: authentication and authorization.
        if config.require_auth:
            user = self._authenticate(request, aor, flow, now)
            if user is not None and (to_uri.user != user.username):
                raise self._refuse(
                    request, aor, flow, 403, "Forbidden (not your address of record)"
                )
        # Step 5: the AOR must exist.
        if aor is None or to_uri.user is None or to_uri.user not in self.users:
            raise self._refuse(request, aor, flow, 404, "Not Found")
        contacts = self._contacts(request, aor, flow)
        if contacts is None:
            # Only a query (RFC 3261 10.2.3): list the bindings.
            return self._ok(request, aor, tag, now)
        self._update(request, aor, contacts, flow, now)
        return self._ok(request, aor, tag, now)

    def _authenticate(
        self, request: SipRequest, aor: str | None, flow: Flow, now: float
    ) -> LabUser | None:
        answers = request.headers.get_all("Authorization")
        verdict = None
        malformed = None
        for answer in answers:
            verdict = self._digest.verify(
                answer,
                method=request.method,
                body=request.body,
                passwords=self.users.passwords,
                now=now,
                request_uri=request.uri,
            )
            if verdict.ok:
                assert verdict.username is not None
                return self.users.by_authname(verdict.username)
            if verdict.stale:
                break
            if verdict.malformed:
                malformed = verdict
        if malformed is not None and not (verdict is not None and verdict.stale):
            # RFC 7616 3.4.6: credentials that cannot be used at all (or name another
            # Request-URI) are a bad request, not a wrong password.
            raise self._refuse(
                request, aor, flow, 400, f"Bad Request ({_printable(malformed.reason)})"
            )
        # RFC 3261 22.1 / RFC 7616 3.3: challenge; stale=true when only the nonce was unusable
        # (expired, or its count already used: a replay).
        stale = verdict is not None and verdict.stale
        challenge = self._digest.challenge(now, stale=stale)
        self.stats["challenges"] += 1
        if verdict is not None and not stale:
            # Wrong credentials: challenge again, as Asterisk and Kamailio do; the phone sees
            # a second 401 to the same credentials and gives up.
            self._events.append(
                BindingRefused(aor=aor, status=401, reason=verdict.reason, flow=flow)
            )
            logger.info("REGISTER for %s from %s refused: %s", aor, flow, verdict.reason)
        elif stale and verdict is not None and verdict.reason != "nonce expired":
            logger.info("REGISTER for %s from %s: %s", aor, flow, verdict.reason)
        raise _Refusal(401, "Unauthorized", headers=(("WWW-Authenticate", str(challenge)),))

    def _refuse(
        self,
        request: SipRequest,
        aor: str | None,
        flow: Flow,
        status: int,
        reason: str,
        *,
        headers: tuple[tuple[str, HeaderValue], ...] = (),
    ) -> _Refusal:
        self._refused(request, status, reason, flow, aor=aor)
        return _Refusal(status, reason, headers=headers)

    def _refused(
        self,
        request: SipRequest,
        status: int,
        reason: str,
        flow: Flow,
        *,
        aor: str | None = None,
    ) -> None:
        self.stats["refused"] += 1
        if aor is None:
            try:
                aor = aor_of(request.to.uri)
            except SipParseError:
                aor = None
        self._events.append(BindingRefused(aor=aor, status=status, reason=reason, flow=flow))
        logger.info("%s for %s from %s: %d %s", request.method, aor, flow, status, reason)

    def _contacts(
        self, request: SipRequest, aor: str, flow: Flow
    ) -> list[tuple[NameAddr, int]] | None:
        """Step 6 and the expiry of step 7: each contact with the expiry it asks for; ``[]``
        for ``*``; ``None`` for a query without Contact."""
        config = self.config
        header_expires = request.expires
        if request.contact_is_wildcard:
            # RFC 3261 10.3 step 6: "*" only with Expires: 0 and alone.
            if request.headers.count("Contact") != 1 or header_expires != 0:
                raise self._refuse(
                    request, aor, flow, 400, "Bad Request (Contact: * needs Expires: 0)"
                )
            return []
        contacts = request.contacts
        if not contacts:
            return None
        if len(contacts) > config.max_contacts_per_request:
            raise self._refuse(
                request, aor, flow, 400,
                f"Bad Request (more than {config.max_contacts_per_request} contacts)",
            )  # fmt: skip
        out: list[tuple[NameAddr, int]] = []
        for contact in contacts:
            expires = contact.expires
            if expires is None:
                expires = header_expires if header_expires is not None else config.default_expires
            if 0 < expires < config.min_expires:
                # RFC 3261 10.3 step 7 / 21.4.17.
                raise self._refuse(
                    request, aor, flow, 423, "Interval Too Brief",
                    headers=(("Min-Expires", config.min_expires),),
                )  # fmt: skip
            out.append((contact, min(expires, config.max_expires)))
        return out

    def _update(
        self,
        request: SipRequest,
        aor: str,
        contacts: list[tuple[NameAddr, int]],
        flow: Flow,
        now: float,
    ) -> None:
        """Step 7, all or nothing: check every contact first, then commit."""
        existing = self._aors.get(aor, {})
        call_id = request.call_id
        cseq = request.cseq.seq
        plans: list[tuple[tuple[str, ...], NameAddr | None, int]] = []
        if not contacts:  # Contact: *
            for key, old in existing.items():
                if old.call_id == call_id and cseq <= old.cseq:
                    raise self._refuse(
                        request, aor, flow, 500, "Server Internal Error (CSeq out of order)"
                    )
                plans.append((key, None, 0))
        else:
            seen: set[tuple[str, ...]] = set()
            for contact, expires in contacts:
                key = _contact_key(contact)
                if key in seen:
                    continue
                seen.add(key)
                binding = existing.get(key)
                if binding is not None and binding.call_id == call_id and cseq <= binding.cseq:
                    raise self._refuse(
                        request, aor, flow, 500, "Server Internal Error (CSeq out of order)"
                    )
                plans.append((key, contact, expires))
            adds = sum(1 for key, _c, e in plans if e and key not in existing)
            removes = sum(1 for key, _c, e in plans if not e and key in existing)
            if len(existing) + adds - removes > self.config.max_contacts_per_aor:
                raise self._refuse(
                    request, aor, flow, 403,
                    f"Forbidden (more than {self.config.max_contacts_per_aor} contacts)",
                )  # fmt: skip
        user_agent = request.headers.get("User-Agent")
        for key, wanted, expires in plans:
            current = existing.get(key)
            if not expires or wanted is None:
                if current is not None:
                    self._drop(current)
                    self._events.append(BindingRemoved(binding=self._snapshot(current)))
                continue
            self._bind(aor, key, wanted, expires, request, flow, now, current, user_agent)

    def _bind(  # noqa: PLR0917 - one call site, all of it the request's facts
        self,
        aor: str,
        key: tuple[str, ...],
        contact: NameAddr,
        expires: int,
        request: SipRequest,
        flow: Flow,
        now: float,
        binding: _Binding | None,
        user_agent: str | None,
    ) -> None:
        clean = NameAddr(
            contact.uri,
            contact.display_name,
            tuple(p for p in contact.params if p[0].lower() != "expires"),
        )
        added = binding is None
        if binding is None:
            binding = _Binding(aor, key, clean)
            self._aors.setdefault(aor, {})[key] = binding
        else:
            self._unindex(binding)
            binding.contact = clean
            binding.contact_text = str(clean)
        binding.expires = expires
        binding.expires_at = now + expires
        binding.call_id = request.call_id
        binding.cseq = request.cseq.seq
        binding.flow = flow
        binding.source = flow.remote
        binding.instance = contact.param("+sip.instance")
        binding.reg_id = contact.param("reg-id")
        binding.user_agent = user_agent
        self._by_flow.setdefault(flow.id, set()).add((aor, key))
        self._heap_seq += 1
        heapq.heappush(self._heap, (binding.expires_at, self._heap_seq, aor, key))
        snapshot = self._snapshot(binding)
        if added:
            self._events.append(BindingAdded(binding=snapshot))
            logger.info("registered %s -> %s on %s (%d s)", aor, clean.uri, flow, expires)
        else:
            self._events.append(BindingRefreshed(binding=snapshot))

    def _ok(self, request: SipRequest, aor: str, tag: str, now: float) -> SipResponse:
        # RFC 3261 10.3 step 8: every current binding, with the time it has left.
        headers: list[tuple[str, HeaderValue]] = []
        for binding in self._aors.get(aor, {}).values():
            left = max(0, int(binding.expires_at - now + 0.5))
            headers.append(("Contact", f"{binding.contact_text};expires={left}"))
        return request.create_response(200, to_tag=tag, headers=headers)

    # -- sending -----------------------------------------------------------------------------

    def _send_response(  # noqa: PLR0917 - internal; the transaction's facts
        self,
        request: SipRequest,
        response: SipResponse,
        flow: Flow,
        txkey: tuple[str, ...] | None,
        now: float,
        via: Via | None = None,
    ) -> None:
        if via is not None:
            # The request's top Via with received/rport, in the response only: the request's
            # parsed header caches stay valid.
            response.headers.pop_first("Via")
            response.headers.insert(0, "Via", via)
        response.headers.add("Server", self.config.server_header)
        transmit = Transmit(
            flow=flow,
            destination=_response_destination(request, flow, via),
            data=bytes(response),
        )
        self._out.append(transmit)
        if txkey is not None and not flow.reliable:
            self._udp_responses[txkey] = transmit
            self._udp_expiry.append((now + TIMER_J, txkey))


def _stamped_via(via: Via, source: Address) -> Via | None:
    """The top Via as the response carries it (RFC 3261 18.2.1, RFC 3581 4): ``received``
    when the source differs from sent-by, ``rport`` filled in; ``None`` when unchanged."""
    src_host, src_port = source
    rport_flag = via.rport is True
    need_received = rport_flag or via.host.strip("[]").lower() != src_host.lower()
    if not need_received:
        return None
    # One new Via, built directly (dataclasses.replace per parameter costs more).
    params = [
        (name, str(src_port)) if rport_flag and name.lower() == "rport" else (name, value)
        for name, value in via.params
        if name.lower() != "received"
    ]
    params.append(("received", src_host))
    return Via(via.transport, via.host, via.port, tuple(params), via.protocol, via.version)


def _response_destination(request: SipRequest, flow: Flow, via: Via | None) -> Address:
    # RFC 3261 18.2.2 with RFC 3581 4 (sip/routing.py): a connection answers on itself; UDP
    # goes to received (the source) and rport, else to the sent-by port.
    if via is None:
        try:
            via = request.top_via
        except SipParseError:
            return flow.remote
    return response_destination(via, flow.remote, reliable=flow.reliable)


def _reason(status: int, detail: str) -> str:
    base = {400: "Bad Request", 413: "Request Entity Too Large", 505: "Version Not Supported",
            513: "Message Too Large"}.get(status, "Error")  # fmt: skip
    return f"{base} ({_printable(detail)})"


def _printable(text: str) -> str:
    """``text`` made safe for a reason phrase or a log line: printable, at most 120 chars."""
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in text)[:120]
