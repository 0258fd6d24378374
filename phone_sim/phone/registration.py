"""One account's registration, sans-I/O: :class:`Registration`.

A registration only registers. It does not own a transport or a user agent: it asks the
phone core for a *flow* to its registrar (:class:`OpenFlow`), is told when the flow is open
(:meth:`Registration.flow_opened`, with the flow's :class:`~phone_sim.sip.ua.UserAgent`),
failed or lost, sends its REGISTERs through that user agent with its own Contact and digest
client (several accounts may share one flow, as pjsip's accounts share a transport), and is
fed the UA events of its own REGISTER transactions. It reports past-tense events
(:mod:`phone_sim.phone.events`) and one deadline (:meth:`get_timer`).

The policy for ``reregister``, ``retry``, ``num_retries``, failover, failback and recovery
after a dropped connection is written in ``docs/registration.md``; each branch here cites
it as "doc §".
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.errors import PhoneSimError, RemoteError
from phone_sim.phone.events import (
    ConnectionDropped,
    FailedOver,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationSucceeded,
    Unregistered,
)
from phone_sim.sip.digest import DigestClient, DigestCredentials
from phone_sim.sip.headers import HeaderValueError, NameAddr, parse_delta_seconds
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse
from phone_sim.sip.routing import Address
from phone_sim.sip.signature import PhoneSignature, new_call_id, new_tag
from phone_sim.sip.ua import (
    AuthenticationRejected,
    ResponseReceived,
    TransactionTimedOut,
    TransportFailed,
    UaEvent,
    UserAgent,
)
from phone_sim.sip.uri import SipUri

logger = logging.getLogger(__name__)

__all__ = [
    "AuthenticationRefused",
    "CloseFlow",
    "OpenFlow",
    "RegState",
    "Registration",
    "RegistrationError",
    "RegistrationRefused",
    "RegistrationSettings",
    "RegistrationStateError",
    "RegistrationTimeout",
    "SipTransportError",
]


# --------------------------------------------------------------------------------------------
# Errors


class RegistrationError(RemoteError):
    """A registration attempt failed."""


class RegistrationRefused(RegistrationError):
    """The registrar answered a final 3xx-6xx; ``status`` is its code."""

    exit_code = 1

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationRefused(RegistrationRefused):
    """The registrar did not accept the credentials (the 401/407/403 that ended it)."""


class RegistrationTimeout(RegistrationError):
    """No final answer to the REGISTER in time."""

    exit_code = 2


class SipTransportError(RegistrationError):
    """The transport to the registrar failed: refused, unreachable, closed."""

    exit_code = 2


class RegistrationStateError(PhoneSimError):
    """A transition the table does not allow (a bug in the caller or here)."""


# --------------------------------------------------------------------------------------------
# Settings and what a registration asks of the core


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationSettings:
    """Timing of the phone's registrations; the defaults follow pjsip as the firmware uses it."""

    register_timeout: float = 32.0
    """Seconds an attempt may take (connect, TLS, REGISTER and its digest retry): 64*T1."""
    unregister_timeout: float = 5.0
    """Seconds ``stop()`` waits for the answer to the un-REGISTER."""
    tls_handshake_timeout: float = 10.0
    """Seconds a TLS handshake may take once connected (as ``tls-check``): a server that
    accepts the connection and never answers is named for what it is, not as a REGISTER
    left unanswered."""
    refresh_margin: float = 5.0
    """Refresh this long before expiry (pjsip's 5 s), but never later than half-way."""
    stream_ka_interval: float = 90.0
    """CRLF-CRLF keep-alive period on TCP/TLS (pjsip's 90 s [I]); 0 disables."""
    udp_ka_interval: float = 15.0
    """CRLF keep-alive period on UDP (the ``udp_ka_interval`` setting; pjsua's 15 s); 0 off."""
    jitter: float = 0.0
    """Up to this many seconds, drawn at random per phone, added to every retry delay after
    a failed attempt (and taken off each refresh delay, down to a quarter of the grant) so
    that a fleet does not retry or refresh in lockstep (0 = the profile's timing)."""
    reconnect_window: float = 12.0
    """After a dropped connection, the first reconnect waits a random 0 to this many
    seconds, as pjsua randomises the retry after a transport failure
    (``reg_retry_random_interval``), so that a fleet whose server restarts does not come
    back in one burst (doc §recovery); 0 reconnects at once."""
    reconnect_backoff: float = 10.0
    """After a failed reconnect, the next waits 0.5-1 x this, doubling per failure up to the
    host's ``retry`` (doc §recovery); 0 uses ``retry`` alone."""
    failback: bool = True
    """When registered on the alternate, try the primary again at each half-period."""

    def __post_init__(self) -> None:
        for name in ("register_timeout", "unregister_timeout", "tls_handshake_timeout"):
            if not getattr(self, name) > 0:
                raise PhoneSimError(f"{name} must be positive")
        for name in ("refresh_margin", "stream_ka_interval", "udp_ka_interval", "jitter",
                     "reconnect_window", "reconnect_backoff"):
            if not getattr(self, name) >= 0:
                raise PhoneSimError(f"{name} must not be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenFlow:
    """The registration needs a flow to *host* (the core opens one, or shares an open one)."""

    host: SipHost
    """Where to."""
    server_name: str
    """The name the TLS certificate is checked against (and sent as SNI)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseFlow:
    """The registration no longer uses *flow* (the core closes it if nobody else does)."""

    flow: int
    """The flow given up."""


FlowCommand = OpenFlow | CloseFlow


class RegState(enum.Enum):
    """Where an account's registration is."""

    IDLE = "idle"
    CONNECTING = "connecting"
    REGISTERING = "registering"
    REGISTERED = "registered"
    READY = "ready"
    """A line with ``register="0"``: its flow is open and it places calls, unregistered."""
    WAITING = "waiting"
    UNREGISTERING = "unregistering"
    STOPPED = "stopped"


# The transition table (STYLE: one table; a pair not in it is a bug, raised as such).
_S = RegState
_TRANSITIONS: dict[RegState, frozenset[RegState]] = {
    _S.IDLE: frozenset({_S.CONNECTING, _S.STOPPED}),
    _S.CONNECTING: frozenset(
        {_S.REGISTERING, _S.READY, _S.WAITING, _S.CONNECTING, _S.STOPPED}),
    _S.REGISTERING: frozenset(
        {_S.REGISTERED, _S.WAITING, _S.CONNECTING, _S.REGISTERING, _S.UNREGISTERING,
         _S.STOPPED}),
    _S.REGISTERED: frozenset(
        {_S.REGISTERING, _S.CONNECTING, _S.WAITING, _S.UNREGISTERING, _S.STOPPED}),
    _S.READY: frozenset({_S.WAITING, _S.STOPPED}),
    _S.WAITING: frozenset({_S.CONNECTING, _S.REGISTERING, _S.STOPPED}),
    _S.UNREGISTERING: frozenset({_S.STOPPED}),
    _S.STOPPED: frozenset(),
}


# --------------------------------------------------------------------------------------------
# The machine


class Registration:
    """The registration of one account (see the module docstring).

    *account* says who and where; *index* names it in events; *signature* is what the phone
    advertises; *rng* makes Call-IDs, tags and the jitter. *register* False makes a line
    that opens its flow but never registers (``register="0"``).
    """

    __slots__ = (
        "_attempt_at",
        "_attempt_deadline",
        "_backoff",
        "_call_id",
        "_commands",
        "_cseq",
        "_events",
        "_expires_asked",
        "_failures",
        "_from",
        "_host_index",
        "_ka_at",
        "_min_expires_tries",
        "_out",
        "_probing_primary",
        "_refresh_at",
        "_reg_handle",
        "_register",
        "_registered_host",
        "_rng",
        "_signature",
        "_state",
        "_unreg_deadline",
        "account",
        "contact",
        "digest",
        "expires",
        "flow",
        "index",
        "remote",
        "settings",
        "ua",
    )

    def __init__(
        self,
        account: Account,
        *,
        settings: RegistrationSettings,
        signature: PhoneSignature,
        rng: random.Random,
        register: bool = True,
    ) -> None:
        self.account = account
        self.index = account.index
        self.settings = settings
        self._signature = signature
        self._rng = rng
        self._register = register
        self._state = RegState.IDLE
        self._host_index = 0
        self._failures = 0
        # Consecutive failed reconnects after a dropped flow (doc §recovery); None: not
        # recovering from a drop.
        self._backoff: int | None = None
        #: The account's own digest client: its nonce cache outlives a flow, as pjsip's.
        self.digest = DigestClient(
            DigestCredentials(username=account.auth_username, password=account.password),
            algorithms=signature.digest_algorithms,
            cnonce_factory=lambda: new_tag(self._rng),
        )
        #: The flow in use (its id), its user agent and the registrar's address on it.
        self.flow: int | None = None
        self.ua: UserAgent | None = None
        self.remote: Address | None = None
        #: The account's Contact on the flow (with the ``caller_id`` display name).
        self.contact: NameAddr | None = None
        self._from: NameAddr | None = None
        self._reg_handle: int | None = None
        self._call_id = new_call_id(rng)
        self._cseq = rng.randint(1, 0x7FFF)
        self._expires_asked = 0
        self._min_expires_tries = 0
        self._probing_primary = False
        self._registered_host: SipHost | None = None
        self._attempt_at: float | None = None
        self._attempt_deadline: float | None = None
        self._refresh_at: float | None = None
        self._ka_at: float | None = None
        self._unreg_deadline: float | None = None
        # Lists, not deques: a deque costs 760 bytes even when empty, and these stay tiny.
        self._out: list[tuple[bytes, Address]] = []
        self._commands: list[FlowCommand] = []
        self._events: list[RegistrationEvent] = []
        #: Seconds granted by the last successful registration.
        self.expires: int | None = None

    def __repr__(self) -> str:
        return f"<Registration {self.account.username}@{self.host.label} {self._state.value}>"

    # -- properties -----------------------------------------------------------------------

    @property
    def state(self) -> RegState:
        """The current state."""
        return self._state

    @property
    def host(self) -> SipHost:
        """The host in use (or being tried)."""
        return self.account.hosts[self._host_index]

    @property
    def registered(self) -> bool:
        """True while a binding is believed live."""
        return self._registered_host is not None and self._state in (
            RegState.REGISTERED, RegState.REGISTERING
        )

    @property
    def registered_host(self) -> SipHost | None:
        """The host holding the binding, or None."""
        return self._registered_host

    @property
    def usable(self) -> bool:
        """Whether calls can go over this account's flow now."""
        return self.ua is not None and self._state in (
            RegState.REGISTERED, RegState.REGISTERING, RegState.READY
        )

    @property
    def domain(self) -> str:
        """The SIP domain in use (From, To, Request-URI of a bare extension)."""
        return self.account.domain_for(self._registered_host or self.host)

    def owns(self, event: UaEvent, ua: UserAgent) -> bool:
        """Whether *event* (from *ua*) is about this registration's REGISTER."""
        return (
            ua is self.ua
            and self._reg_handle is not None
            and getattr(event, "transaction", None) == self._reg_handle
        )

    def _set_state(self, new: RegState) -> None:
        old = self._state
        if new not in _TRANSITIONS[old]:
            raise RegistrationStateError(f"registration cannot go {old.value} -> {new.value}")
        if old is not new:
            logger.debug("%s: %s -> %s", self.account.username, old.value, new.value)
        self._state = new

    # -- output ---------------------------------------------------------------------------

    def data_to_send(self) -> list[tuple[bytes, Address]]:
        """Keep-alive pings to send on the flow, as ``(data, destination)``."""
        out, self._out = self._out, []
        return out

    def next_command(self) -> FlowCommand | None:
        """The next thing the core must do with flows, or None."""
        return self._commands.pop(0) if self._commands else None

    def next_event(self) -> RegistrationEvent | None:
        """The next event, or None."""
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        """This registration's earliest deadline (its REGISTER transactions are the UA's)."""
        candidates = [
            t for t in (self._attempt_at, self._attempt_deadline, self._refresh_at,
                        self._ka_at, self._unreg_deadline)
            if t is not None
        ]
        return min(candidates) if candidates else None

    # -- API input --------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: ask for a flow to the primary and register over it."""
        if self._state is not RegState.IDLE:
            raise RegistrationStateError(f"start() in state {self._state.value}")
        self._open(now)

    def stop(self, now: float) -> None:
        """Unregister if registered, then stop (``Unregistered`` says when it is done)."""
        if self._state in (RegState.STOPPED, RegState.UNREGISTERING):
            return
        self._clear_timers()
        in_flight = self._state is RegState.REGISTERING
        if (self._registered_host is not None or in_flight) and self.ua is not None:
            # Abandon any REGISTER in flight; the un-REGISTER supersedes it (and removes a
            # binding the registrar may be creating right now).
            self._set_state(RegState.UNREGISTERING)
            self._send_register(now, expires=0)
            self._unreg_deadline = now + self.settings.unregister_timeout
            return
        self._finish(confirmed=False, host=None)

    # -- flow input ---------------------------------------------------------------------------

    def flow_opened(self, flow: int, ua: UserAgent, remote: Address, now: float) -> None:
        """The flow asked for is open: *ua* carries it and *remote* is the registrar's
        address on it."""
        if self._state is not RegState.CONNECTING:
            return  # stale: a stop() or failure overtook the connect
        self.flow = flow
        self.ua = ua
        self.remote = remote
        config = ua.config
        account = self.account
        contact = self._signature.contact(account.username, config.local_host,
                                          config.local_port, config.transport)
        self.contact = NameAddr(contact.uri, account.caller_id)
        domain = account.domain_for(self.host)
        self._from = NameAddr(SipUri("sip", account.username, None, domain, None, ()),
                              account.caller_id).with_tag(new_tag(self._rng))
        if self.host.transport is SipTransport.UDP:
            self._arm_keepalive(now)
        if not self._register:
            self._attempt_deadline = None
            self._backoff = None
            self._set_state(RegState.READY)
            return
        self._set_state(RegState.REGISTERING)
        self._send_register(now, expires=self.host.reregister)

    def flow_failed(self, error: PhoneSimError, now: float) -> None:
        """Opening the flow failed (refused, TLS refusal, unreachable...)."""
        if self._state is not RegState.CONNECTING:
            return
        self._attempt_failed(error, now)

    def flow_lost(self, now: float) -> None:
        """The flow closed under us (the registrar restarted, a framing error)."""
        state = self._state
        self._drop_flow()
        if state is RegState.UNREGISTERING:
            self._finish(confirmed=False, host=self._registered_host)
            return
        if state is RegState.CONNECTING:
            self._attempt_failed(
                SipTransportError(f"the connection to {self.host.label} closed"), now)
            return
        if state in (RegState.REGISTERED, RegState.REGISTERING, RegState.READY):
            host = self.host
            self._events.append(ConnectionDropped(account=self.index, host=host))
            if state is RegState.REGISTERING and self._registered_host is None:
                self._attempt_failed(
                    SipTransportError(f"{host.label} closed the connection during REGISTER"),
                    now,
                )
                return
            # doc §recovery: reconnect after a random 0-reconnect_window s (pjsua's
            # randomised first retry), then back off.
            self._registered_host = None
            self._clear_timers()
            self._backoff = 0
            self._set_state(RegState.WAITING)
            self._attempt_at = now + self._rng.uniform(0.0, self.settings.reconnect_window)

    # -- UA input -------------------------------------------------------------------------------

    def handle_ua_event(self, event: UaEvent, now: float) -> None:
        """An event of this registration's REGISTER transaction (see :meth:`owns`)."""
        if event.__class__ is ResponseReceived:
            assert isinstance(event, ResponseReceived)
            self._on_register_response(event.response, event.request, now)
        elif isinstance(event, AuthenticationRejected):
            self._cseq = event.request.cseq.seq + 1
            status = event.response.status
            self._register_failed(
                AuthenticationRefused(
                    # The digest layer's reason names the user and the realm already.
                    f"{self.host.label}: {event.reason} ({status})",
                    status=status,
                ),
                now,
            )
        elif isinstance(event, TransactionTimedOut):
            self._register_failed(
                RegistrationTimeout(
                    f"no answer to REGISTER from {self.host.label} (Timer {event.timer})"
                ),
                now,
            )
        elif isinstance(event, TransportFailed):
            self._register_failed(
                SipTransportError(f"cannot send REGISTER to {self.host.label}"), now
            )

    # -- timers -----------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at *now*."""
        if self._unreg_deadline is not None and now >= self._unreg_deadline:
            self._unreg_deadline = None
            self._finish(confirmed=False, host=self._registered_host)
            return
        if self._attempt_deadline is not None and now >= self._attempt_deadline:
            self._attempt_deadline = None
            error = RegistrationTimeout(
                f"no answer to REGISTER from {self.host.label} within "
                f"{self.settings.register_timeout:g} s"
            )
            if self._state in (RegState.CONNECTING, RegState.REGISTERING):
                self._register_failed(error, now)
        if self._attempt_at is not None and now >= self._attempt_at:
            self._attempt_at = None
            if self._state is RegState.WAITING:
                self._open(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._refresh(now)
        if self._ka_at is not None and now >= self._ka_at:
            self._send_keepalive(now)

    # -- internals --------------------------------------------------------------------------

    def _jitter(self) -> float:
        j = self.settings.jitter
        return self._rng.uniform(0.0, j) if j > 0 else 0.0

    def _clear_timers(self) -> None:
        self._attempt_at = None
        self._attempt_deadline = None
        self._refresh_at = None

    def _open(self, now: float) -> None:
        host = self.host
        self._set_state(RegState.CONNECTING)
        self._attempt_deadline = now + self.settings.register_timeout
        self._commands.append(OpenFlow(host=host, server_name=self.account.tls_name_for(host)))

    def _drop_flow(self) -> None:
        self.flow = None
        self.ua = None
        self.remote = None
        self._reg_handle = None
        self._ka_at = None

    def _release_flow(self) -> None:
        if self.flow is not None:
            self._commands.append(CloseFlow(flow=self.flow))
        self._drop_flow()

    def _arm_keepalive(self, now: float) -> None:
        # pjsua: the account sends "\r\n" to its registrar every ka_interval on UDP; stream
        # flows keep themselves alive (the core's job).
        interval = self.settings.udp_ka_interval
        self._ka_at = now + interval if interval > 0 else None

    def _send_keepalive(self, now: float) -> None:
        if self.remote is None:
            self._ka_at = None
            return
        self._out.append((b"\r\n", self.remote))
        self._arm_keepalive(now)

    def _send_register(self, now: float, *, expires: int) -> None:
        assert self.ua is not None and self.remote is not None and self._from is not None
        domain = self.account.domain_for(self.host)
        self._expires_asked = expires
        request = self.ua.create_request(
            "REGISTER",
            SipUri("sip", None, None, domain, None, ()),
            from_=self._from,
            to=NameAddr(self._from.uri, self._from.display_name),
            call_id=self._call_id,
            cseq=self._cseq,
            headers=[("Expires", str(expires))],
            contact=self.contact,
        )
        # RFC 3261 10.2.4: same Call-ID, CSeq one higher on every refresh.
        self._cseq += 1
        self._reg_handle = self.ua.send_request(request, now, destination=self.remote,
                                                auth=self.digest)
        if self._state is not RegState.UNREGISTERING:
            self._attempt_deadline = now + self.settings.register_timeout

    def _refresh(self, now: float) -> None:
        if self._state is not RegState.REGISTERED:
            return
        if (
            self.settings.failback
            and self._host_index != 0
            and self._registered_host is not None
        ):
            # doc §failback: on the alternate, try the primary again at each half-period.
            self._probing_primary = True
            self._release_flow()
            self._registered_host = None
            self._host_index = 0
            self._failures = 0
            self._open(now)
            return
        self._set_state(RegState.REGISTERING)
        self._send_register(now, expires=self.host.reregister)

    def _on_register_response(
        self, response: SipResponse, request: SipRequest, now: float
    ) -> None:
        status = response.status
        if status < 200:
            return
        self._cseq = max(self._cseq, request.cseq.seq + 1)
        if self._state is RegState.UNREGISTERING:
            self._finish(confirmed=200 <= status < 300, host=self._registered_host or self.host)
            return
        host = self.host
        if 200 <= status < 300:
            granted = self._granted_expires(response)
            if granted <= 0:
                self._register_failed(
                    RegistrationRefused(
                        f"{host.label} answered {status} but kept no binding for our Contact",
                        status=status,
                    ),
                    now,
                )
                return
            refresh = self._registered_host is not None
            self._registered_host = host
            self._failures = 0
            self._backoff = None
            self._min_expires_tries = 0
            self._probing_primary = False
            self._attempt_deadline = None
            self.expires = granted
            self._set_state(RegState.REGISTERED)
            if self._host_index != 0 and self.settings.failback:
                delay = granted / 2.0  # doc §failback
            else:
                delay = max(granted - self.settings.refresh_margin, granted / 2.0)
            if self.settings.jitter > 0:
                # doc §jitter: a fleet registered together refreshes spread out, never later.
                delay = max(delay - self._jitter(), granted / 4.0)
            self._refresh_at = now + delay
            self._events.append(RegistrationSucceeded(
                account=self.index, host=host, expires=granted,
                contact=str(self.contact.uri) if self.contact is not None else "",
                refresh=refresh,
            ))
            return
        if status == 423 and self._min_expires_tries < 2:
            # RFC 3261 10.2.8: ask again with at least Min-Expires.
            value = response.headers.get("Min-Expires") or ""
            try:
                minimum = parse_delta_seconds(value, "Min-Expires")
            except SipParseError:
                minimum = None  # ASCII digits only: "²" passes str.isdigit(), then int() raises
            if minimum is not None:
                self._min_expires_tries += 1
                self._send_register(now, expires=max(minimum, self._expires_asked))
                return
        reason = response.reason or ""
        error_cls = AuthenticationRefused if status in (401, 403, 407) else RegistrationRefused
        self._register_failed(
            error_cls(f"{host.label} refused the registration: {status} {reason}".rstrip(),
                      status=status),
            now,
        )

    def _granted_expires(self, response: SipResponse) -> int:
        # RFC 3261 10.2.4: the expires parameter of our Contact in the 2xx, else Expires.
        ours: SipUri | None = self.contact.uri if self.contact is not None else None
        try:
            contacts = response.contacts
        except (SipParseError, HeaderValueError):
            contacts = []
        header = response.expires
        found_any = False
        for contact in contacts:
            # RFC 3261 19.1.4 comparison: a registrar's added parameters (alias...) do not
            # hide our Contact, an explicit port never equals an absent one.
            if ours is not None and contact.uri.equivalent(ours):
                found_any = True
                value = contact.expires
                if value is not None:
                    return value
        # Some registrars rewrite the Contact (received/alias); a lone contact is ours.
        if contacts and not found_any and len(contacts) == 1 and contacts[0].expires is not None:
            return contacts[0].expires or 0
        if header is not None:
            return header
        return self._expires_asked

    def _register_failed(self, error: PhoneSimError, now: float) -> None:
        if self._state is RegState.UNREGISTERING:
            self._finish(confirmed=False, host=self._registered_host)
            return
        self._attempt_failed(error, now)

    def _attempt_failed(self, error: PhoneSimError, now: float) -> None:
        host = self.host
        self._registered_host = None
        self._attempt_deadline = None
        self._refresh_at = None
        if self.flow is not None:
            self._release_flow()
        if self._probing_primary and self.account.host_alternate is not None:
            # doc §failback: the primary still fails; back to the alternate at once.
            self._probing_primary = False
            self._host_index = 1
            self._failures = 0
            self._events.append(RegistrationFailed(account=self.index, host=host, error=error,
                                                   retry_at=now))
            self._set_state(RegState.WAITING)
            self._attempt_at = now
            return
        self._failures += 1
        alternate = self.account.host_alternate
        if self._failures > host.num_retries and alternate is not None:
            # doc §failover: 1 + num_retries failed attempts, then the other host, at once.
            old = host
            self._host_index = 1 - self._host_index
            self._failures = 0
            self._backoff = None
            self._events.append(RegistrationFailed(account=self.index, host=old, error=error,
                                                   retry_at=now))
            self._events.append(FailedOver(account=self.index, from_host=old,
                                           to_host=self.host))
            self._set_state(RegState.WAITING)
            self._attempt_at = now
            return
        retry_at = now + self._retry_delay(host)
        self._events.append(RegistrationFailed(account=self.index, host=host, error=error,
                                               retry_at=retry_at))
        self._set_state(RegState.WAITING)
        self._attempt_at = retry_at

    def _retry_delay(self, host: SipHost) -> float:
        backoff = self._backoff
        base = self.settings.reconnect_backoff
        if backoff is None or base <= 0:
            return host.retry + self._jitter()  # doc §retry
        # doc §recovery: after a dropped flow, 0.5-1 x base * 2**n, capped at the retry.
        self._backoff = backoff + 1
        ceiling = min(host.retry, base * 2.0**backoff)
        return self._rng.uniform(ceiling / 2.0, ceiling)

    def _finish(self, *, confirmed: bool, host: SipHost | None) -> None:
        self._clear_timers()
        self._unreg_deadline = None
        self._registered_host = None
        self._release_flow()
        self._set_state(RegState.STOPPED)
        self._events.append(Unregistered(account=self.index, host=host, confirmed=confirmed))
