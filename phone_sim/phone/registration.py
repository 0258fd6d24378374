"""The phone's registration state machine, sans-I/O.

:class:`RegistrationCore` owns one account's registration and the SIP user agent core that
carries it. It does no I/O and reads no clock: the asyncio adapter
(:mod:`phone_sim.phone.aio`) feeds it

- ``start(now)``, ``stop(now)`` (unregister), ``handle_timer(now)``;
- ``transport_opened(local, remote, now)``, ``transport_failed(error, now)`` and
  ``transport_lost(now)`` about the transport it was asked to open;
- ``receive_data(data, source, now)`` with what arrived (a datagram, or stream bytes that the
  core frames itself with the SIP core's :class:`~phone_sim.sip.framer.StreamFramer`);

and takes out ``datagrams_to_send()``, ``next_command()`` (:class:`OpenTransport`,
:class:`CloseTransport`), ``next_event()`` (past-tense frozen dataclasses) and
``get_timer()`` (one deadline for everything: transactions, refresh, retry, keep-alive).

The policy for ``reregister``, ``retry`` and ``num_retries`` and for failover is in
``docs/registration.md``; each branch below cites it as "doc §".
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.errors import PhoneSimError, RemoteError
from phone_sim.firmware import FirmwareProfile
from phone_sim.sip.digest import DigestCredentials
from phone_sim.sip.framer import (
    KeepAlivePingReceived,
    KeepAlivePongReceived,
    MessageRejected,
    StreamFramer,
)
from phone_sim.sip.headers import HeaderValueError, NameAddr
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse
from phone_sim.sip.signature import PhoneSignature, new_call_id, new_tag
from phone_sim.sip.ua import (
    Address,
    AuthenticationRejected,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportFailed,
    UaConfig,
    UaEvent,
    UserAgent,
)
from phone_sim.sip.uri import SipUri

logger = logging.getLogger(__name__)

__all__ = [
    "AuthenticationRefused",
    "ClosePeer",
    "CloseTransport",
    "ConnectionDropped",
    "FailedOver",
    "MessageReceived",
    "OpenTransport",
    "PhoneEvent",
    "RegState",
    "RegistrationCore",
    "RegistrationError",
    "RegistrationFailed",
    "RegistrationRefused",
    "RegistrationSettings",
    "RegistrationSucceeded",
    "RegistrationTimeout",
    "ReprovisionRequested",
    "RequestAnswered",
    "SipTransportError",
    "Unregistered",
]

_SHARED_RNG = random.Random()
_SIGNATURES: dict[FirmwareProfile, PhoneSignature] = {}


def _signature_for(profile: FirmwareProfile) -> PhoneSignature:
    # One (immutable) signature per profile, shared by a fleet's phones.
    signature = _SIGNATURES.get(profile)
    if signature is None:
        signature = _SIGNATURES[profile] = PhoneSignature.for_profile(
            profile, extra_methods=EXTRA_METHODS
        )
    return signature

#: Methods the phone handles beyond the SIP core's (check-sync NOTIFY, MESSAGE).
EXTRA_METHODS = ("NOTIFY", "MESSAGE")


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


# --------------------------------------------------------------------------------------------
# Settings, commands, events


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationSettings:
    """Timing of the phone's registration; the defaults follow pjsip as the firmware uses it."""

    register_timeout: float = 32.0
    """Seconds an attempt may take (connect, TLS, REGISTER and its digest retry): 64*T1."""
    unregister_timeout: float = 5.0
    """Seconds ``stop()`` waits for the answer to the un-REGISTER."""
    refresh_margin: float = 5.0
    """Refresh this long before expiry (pjsip's 5 s), but never later than half-way."""
    stream_ka_interval: float = 90.0
    """CRLF-CRLF keep-alive period on TCP/TLS (pjsip's 90 s [I]); 0 disables."""
    udp_ka_interval: float = 15.0
    """CRLF keep-alive period on UDP (the ``udp_ka_interval`` setting; pjsua's 15 s); 0 off."""
    jitter: float = 0.0
    """Up to this many seconds, drawn at random per phone, added to every retry and
    reconnect delay (and taken off each refresh delay, down to a quarter of the grant) so
    that a fleet does not retry or refresh in lockstep (0 = the profile's timing)."""
    failback: bool = True
    """When registered on the alternate, try the primary again at each half-period."""

    def __post_init__(self) -> None:
        for name in ("register_timeout", "unregister_timeout"):
            if not getattr(self, name) > 0:
                raise PhoneSimError(f"{name} must be positive")
        for name in ("refresh_margin", "stream_ka_interval", "udp_ka_interval", "jitter"):
            if getattr(self, name) < 0:
                raise PhoneSimError(f"{name} must not be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTransport:
    """The adapter must open a transport to *host* and report ``transport_opened``/failed."""

    host: SipHost
    """Where to."""
    server_name: str
    """The name to check the TLS certificate against (and send as SNI)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseTransport:
    """The adapter must close the current transport (a UDP socket only when *final*)."""

    final: bool
    """True when the phone stops: close everything."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClosePeer:
    """The adapter must close the connection a PBX opened to the phone's listener."""

    peer: Address
    """Its remote address (the *source* it was fed with)."""


Command = OpenTransport | CloseTransport | ClosePeer


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationSucceeded:
    """The registrar accepted the binding (first time or refresh)."""

    host: SipHost
    """The registrar."""
    expires: int
    """Seconds granted (the Contact's expires, else the Expires header)."""
    contact: str
    """The Contact the phone registered."""
    refresh: bool
    """True for a refresh of a live registration."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationFailed:
    """An attempt failed; the phone retries at ``retry_at`` (None when it stopped)."""

    host: SipHost
    """The registrar tried."""
    error: PhoneSimError
    """What went wrong (``TlsRefused`` with its bitmask, :class:`AuthenticationRefused`...)."""
    retry_at: float | None
    """When the next attempt starts, on the caller's clock."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedOver:
    """The phone moved from one registrar to the other."""

    from_host: SipHost
    """The host given up."""
    to_host: SipHost
    """The host tried next."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionDropped:
    """The registrar closed the connection (or a framing error ended it); the phone
    reconnects and registers again."""

    host: SipHost
    """The registrar."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Unregistered:
    """The phone removed its binding (or gave up waiting) and stopped."""

    host: SipHost | None
    """The registrar, None when the phone was not registered."""
    confirmed: bool
    """True when the registrar answered the un-REGISTER with 2xx."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReprovisionRequested:
    """A ``NOTIFY`` with ``Event: check-sync`` arrived (answered 200)."""

    source: Address
    """Who sent it."""
    reboot: bool
    """True when the event carried ``reboot=true``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """An out-of-dialog MESSAGE arrived (answered 200)."""

    sender: str
    """The From URI."""
    content_type: str | None
    """Its Content-Type."""
    body: bytes
    """Its body, as bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAnswered:
    """The phone answered a request that arrived (OPTIONS, NOTIFY, a refused INVITE...)."""

    method: str
    """The request method."""
    status: int
    """The status sent."""
    source: Address
    """Who sent it."""


PhoneEvent = (
    RegistrationSucceeded
    | RegistrationFailed
    | FailedOver
    | ConnectionDropped
    | Unregistered
    | ReprovisionRequested
    | MessageReceived
    | RequestAnswered
)


class RegState(enum.Enum):
    """Where the registration is."""

    IDLE = "idle"
    CONNECTING = "connecting"
    REGISTERING = "registering"
    REGISTERED = "registered"
    WAITING = "waiting"
    UNREGISTERING = "unregistering"
    STOPPED = "stopped"


# The transition table (STYLE: one table; a pair not in it is a bug, raised as such).
_TRANSITIONS: dict[RegState, frozenset[RegState]] = {
    RegState.IDLE: frozenset({RegState.CONNECTING, RegState.STOPPED}),
    RegState.CONNECTING: frozenset(
        {RegState.REGISTERING, RegState.WAITING, RegState.CONNECTING, RegState.STOPPED}
    ),
    RegState.REGISTERING: frozenset(
        {RegState.REGISTERED, RegState.WAITING, RegState.CONNECTING, RegState.REGISTERING,
         RegState.UNREGISTERING, RegState.STOPPED}
    ),
    RegState.REGISTERED: frozenset(
        {RegState.REGISTERING, RegState.CONNECTING, RegState.WAITING, RegState.UNREGISTERING,
         RegState.STOPPED}
    ),
    RegState.WAITING: frozenset({RegState.CONNECTING, RegState.REGISTERING, RegState.STOPPED}),
    RegState.UNREGISTERING: frozenset({RegState.STOPPED}),
    RegState.STOPPED: frozenset(),
}


class RegistrationStateError(PhoneSimError):
    """A transition the table does not allow (a bug in the caller or here)."""


# --------------------------------------------------------------------------------------------
# The core


class RegistrationCore:
    """The registration of one account over one transport at a time (see module docstring).

    ``rng`` makes Call-IDs, tags, branches and the jitter; seed it for reproducible tests.
    """

    __slots__ = (
        "_attempt_at",
        "_attempt_deadline",
        "_call_id",
        "_commands",
        "_cseq",
        "_events",
        "_expires_asked",
        "_failures",
        "_framer",
        "_from",
        "_host_index",
        "_ka_at",
        "_min_expires_tries",
        "_out",
        "_peers",
        "_probing_primary",
        "_refresh_at",
        "_reg_handle",
        "_registered_host",
        "_remote",
        "_rng",
        "_signature",
        "_state",
        "_ua",
        "_unreg_deadline",
        "account",
        "contact",
        "expires",
        "profile",
        "settings",
        "ua_hook",
    )

    def __init__(
        self,
        profile: FirmwareProfile,
        account: Account,
        *,
        settings: RegistrationSettings | None = None,
        rng: random.Random | None = None,
        signature: PhoneSignature | None = None,
    ) -> None:
        self.profile = profile
        self.account = account
        self.settings = settings or RegistrationSettings()
        # One generator shared by every phone without its own: a Random is 2.5 KB, and a
        # fleet holds thousands of phones.
        self._rng = rng or _SHARED_RNG
        self._signature = signature or _signature_for(profile)
        self._state = RegState.IDLE
        self._host_index = 0
        self._failures = 0
        self._ua: UserAgent | None = None
        self._framer: StreamFramer | None = None
        # Connections the PBX opened to the phone's TCP listener, each with its own framer.
        self._peers: dict[Address, StreamFramer] = {}
        self._remote: Address | None = None
        self._reg_handle: int | None = None
        self._call_id = new_call_id(self._rng)
        self._from: NameAddr | None = None
        self._cseq = self._rng.randint(1, 0x7FFF)
        self._expires_asked = 0
        self._min_expires_tries = 0
        self._probing_primary = False
        self._registered_host: SipHost | None = None
        self._attempt_at: float | None = None
        self._attempt_deadline: float | None = None
        self._refresh_at: float | None = None
        self._ka_at: float | None = None
        self._unreg_deadline: float | None = None
        self._out: list[tuple[bytes, Address]] = []
        # Lists, not deques: a deque costs 760 bytes even when empty, and these stay tiny.
        self._commands: list[Command] = []
        self._events: list[PhoneEvent] = []
        #: The Contact URI registered (after the transport opened).
        self.contact: str | None = None
        #: Seconds granted by the last successful registration.
        self.expires: int | None = None
        #: Offered every SIP core event first (``hook(event, now)``); an event it returns
        #: True for is the hook's (a call layer takes INVITE, BYE, in-dialog requests...).
        self.ua_hook: Callable[[UaEvent, float], bool] | None = None

    def __repr__(self) -> str:
        return (
            f"<RegistrationCore {self.account.username}@{self.host.label} "
            f"{self._state.value}>"
        )

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
    def ua(self) -> UserAgent | None:
        """The SIP user agent core of the open transport (None between transports)."""
        return self._ua

    @property
    def remote(self) -> Address | None:
        """The registrar's address on the open transport, or None."""
        return self._remote

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

    def _set_state(self, new: RegState) -> None:
        old = self._state
        if new not in _TRANSITIONS[old]:
            raise RegistrationStateError(f"registration cannot go {old.value} -> {new.value}")
        if old is not new:
            logger.debug("%s: %s -> %s", self.account.username, old.value, new.value)
        self._state = new

    # -- output ---------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """What to send, as ``(data, destination)``; on a stream the destination is the
        connection's remote address."""
        if self._ua is not None:
            self._out.extend(self._ua.datagrams_to_send())
        out, self._out = self._out, []
        return out

    def next_command(self) -> Command | None:
        """The next transport command for the adapter, or None."""
        return self._commands.pop(0) if self._commands else None

    def next_event(self) -> PhoneEvent | None:
        """The next event, or None."""
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        """The one deadline the adapter arms (None: nothing scheduled)."""
        candidates = [
            self._attempt_at,
            self._attempt_deadline,
            self._refresh_at,
            self._ka_at,
            self._unreg_deadline,
            self._ua.get_timer() if self._ua is not None else None,
        ]
        present = [t for t in candidates if t is not None]
        return min(present) if present else None

    # -- API input --------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: open the transport to the primary and register."""
        if self._state is not RegState.IDLE:
            raise RegistrationStateError(f"start() in state {self._state.value}")
        self._open(now)

    def stop(self, now: float) -> None:
        """Unregister if registered, then close (``Unregistered`` says when it is done)."""
        if self._state in (RegState.STOPPED, RegState.UNREGISTERING):
            return
        self._clear_timers()
        in_flight = self._state is RegState.REGISTERING
        if (self._registered_host is not None or in_flight) and (
            self._ua is not None and self._remote is not None
        ):
            # Abandon any REGISTER in flight; the un-REGISTER supersedes it (and removes a
            # binding the registrar may be creating right now).
            self._set_state(RegState.UNREGISTERING)
            self._send_register(now, expires=0)
            self._unreg_deadline = now + self.settings.unregister_timeout
            return
        self._finish(confirmed=False, host=None)

    # -- transport input ----------------------------------------------------------------------

    def transport_opened(self, local: Address, remote: Address, now: float) -> None:
        """The transport asked for is open: *local* is what goes in Via/Contact and
        *remote* the registrar's address (as :meth:`receive_data` will name it)."""
        if self._state is not RegState.CONNECTING:
            return  # stale: a stop() or failure overtook the connect
        host = self.host
        self._remote = remote
        self._framer = StreamFramer() if host.transport.reliable else None
        local_host = local[0]
        if ":" in local_host and not local_host.startswith("["):
            local_host = f"[{local_host}]"  # RFC 3261 25.1: an IPv6 reference in Via/Contact
        config = UaConfig(
            local_host=local_host,
            local_port=local[1],
            transport=host.transport.value.upper(),
            user=self.account.username,
            signature=self._signature,
            answer_options=False,  # answered here, so that RequestAnswered reports it
            credentials=(
                DigestCredentials(
                    username=self.account.auth_username, password=self.account.password
                ),
            ),
        )
        self._ua = UserAgent(config, rng=self._rng)
        self.contact = str(self._ua.contact.uri)
        domain = self.account.domain_for(host)
        self._from = NameAddr(SipUri("sip", self.account.username, None, domain, None, ()))
        self._from = self._from.with_tag(new_tag(self._rng))
        self._set_state(RegState.REGISTERING)
        self._arm_keepalive(now)
        self._send_register(now, expires=host.reregister)

    def transport_failed(self, error: PhoneSimError, now: float) -> None:
        """Opening the transport failed (refused, TLS refusal, unreachable...)."""
        if self._state is not RegState.CONNECTING:
            return
        self._attempt_failed(error, now)

    def peer_closed(self, peer: Address) -> None:
        """A connection the PBX opened to the phone's listener closed."""
        self._peers.pop(peer, None)

    def transport_lost(self, now: float) -> None:
        """The open transport closed under us (the registrar restarted, a framing error)."""
        state = self._state
        self._drop_transport()
        if state is RegState.UNREGISTERING:
            self._finish(confirmed=False, host=self._registered_host)
            return
        if state in (RegState.REGISTERED, RegState.REGISTERING):
            host = self.host
            self._events.append(ConnectionDropped(host=host))
            if state is RegState.REGISTERING and self._registered_host is None:
                self._attempt_failed(
                    SipTransportError(f"{host.label} closed the connection during REGISTER"),
                    now,
                )
                return
            # doc §reconnect: reconnect at once (plus the fleet jitter), same host.
            self._registered_host = None
            self._clear_timers()
            self._set_state(RegState.WAITING)
            self._attempt_at = now + self._jitter()

    def receive_data(self, data: bytes, source: Address, now: float) -> None:
        """Bytes from the transport: a datagram (UDP) or a piece of the stream.

        On TCP/TLS, bytes from a *source* other than the registrar come from a connection
        the PBX opened to the phone's listener (see :meth:`peer_closed`).
        """
        if self._ua is None:
            return
        framer = self._framer
        if framer is not None and source != self._remote:
            framer = self._peers.get(source)
            if framer is None:
                framer = self._peers[source] = StreamFramer()
        if framer is None:
            self._ua.receive_datagram(data, source, now)
        else:
            try:
                items = framer.feed(data)
            except SipParseError as exc:
                logger.info("framing error from %s: %s; closing", source, exc)
                if source != self._remote:
                    self._peers.pop(source, None)
                    self._commands.append(ClosePeer(peer=source))
                    return
                self._commands.append(CloseTransport(final=False))
                self.transport_lost(now)
                return
            for item in items:
                if isinstance(item, KeepAlivePingReceived):
                    self._out.append((b"\r\n", source))  # RFC 5626 4.4.1 pong
                elif isinstance(item, KeepAlivePongReceived):
                    continue
                elif isinstance(item, MessageRejected):
                    self._answer_rejected(item.error, source)
                else:
                    # The framer has parsed it already: no second parse (docs/sip-transactions.md).
                    self._ua.receive_message(item, source, now)
        self._process_ua(now)

    # -- timers ---------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at *now*."""
        if self._ua is not None:
            self._ua.handle_timer(now)
            self._process_ua(now)
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
                self._commands.append(CloseTransport(final=False))
                self._attempt_failed(error, now)
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
        self._commands.append(
            OpenTransport(host=host, server_name=self.account.tls_name_for(host))
        )

    def _drop_transport(self) -> None:
        self._ua = None
        self._framer = None
        self._remote = None
        self._reg_handle = None
        self._ka_at = None

    def _arm_keepalive(self, now: float) -> None:
        s = self.settings
        interval = s.udp_ka_interval if self.host.transport is SipTransport.UDP else (
            s.stream_ka_interval
        )
        self._ka_at = now + interval if interval > 0 else None

    def _send_keepalive(self, now: float) -> None:
        if self._remote is None:
            self._ka_at = None
            return
        # pjsip: "\r\n\r\n" ping on TCP/TLS (RFC 5626), "\r\n" on UDP.
        ping = b"\r\n" if self.host.transport is SipTransport.UDP else b"\r\n\r\n"
        self._out.append((ping, self._remote))
        self._arm_keepalive(now)

    def _send_register(self, now: float, *, expires: int) -> None:
        assert self._ua is not None and self._remote is not None and self._from is not None
        host = self.host
        domain = self.account.domain_for(host)
        self._expires_asked = expires
        request = self._ua.create_request(
            "REGISTER",
            SipUri("sip", None, None, domain, None, ()),
            from_=self._from,
            to=NameAddr(self._from.uri),
            call_id=self._call_id,
            cseq=self._cseq,
            headers=[("Expires", str(expires))],
        )
        # RFC 3261 10.2.4: same Call-ID, CSeq one higher on every refresh.
        self._cseq += 1
        self._reg_handle = self._ua.send_request(request, now, destination=self._remote)
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
            self._commands.append(CloseTransport(final=False))
            self._drop_transport()
            self._registered_host = None
            self._host_index = 0
            self._failures = 0
            self._set_state(RegState.CONNECTING)
            self._attempt_deadline = now + self.settings.register_timeout
            self._commands.append(
                OpenTransport(host=self.host, server_name=self.account.tls_name_for(self.host))
            )
            return
        self._set_state(RegState.REGISTERING)
        self._send_register(now, expires=self.host.reregister)

    def _process_ua(self, now: float) -> None:
        ua = self._ua
        while ua is not None and (event := ua.next_event()) is not None:
            if self.ua_hook is not None and self.ua_hook(event, now):
                ua = self._ua
                continue
            if isinstance(event, RequestReceived):
                self._on_request(event, now)
            elif event.__class__ is ResponseReceived:
                assert isinstance(event, ResponseReceived)
                if event.transaction == self._reg_handle:
                    self._on_register_response(event.response, event.request, now)
            elif isinstance(event, AuthenticationRejected):
                if event.transaction == self._reg_handle:
                    self._cseq = event.request.cseq.seq + 1
                    status = event.response.status
                    self._register_failed(
                        AuthenticationRefused(
                            f"{self.host.label} refused the credentials of "
                            f"{self.account.auth_username!r} ({status}): {event.reason}",
                            status=status,
                        ),
                        now,
                    )
            elif isinstance(event, TransactionTimedOut):
                if event.transaction == self._reg_handle:
                    self._register_failed(
                        RegistrationTimeout(
                            f"no answer to REGISTER from {self.host.label} (Timer {event.timer})"
                        ),
                        now,
                    )
            elif (
                isinstance(event, TransportFailed) and event.transaction == self._reg_handle
            ):
                self._register_failed(
                    SipTransportError(f"cannot send REGISTER to {self.host.label}"), now
                )
            ua = self._ua

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
                host=host, expires=granted, contact=self.contact or "", refresh=refresh,
            ))
            return
        if status == 423 and self._min_expires_tries < 2:
            # RFC 3261 10.2.8: ask again with at least Min-Expires.
            value = response.headers.get("Min-Expires")
            if value is not None and value.strip().isdigit():
                self._min_expires_tries += 1
                self._send_register(now, expires=max(int(value.strip()), self._expires_asked))
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
        ours: SipUri | None = self._ua.contact.uri if self._ua is not None else None
        try:
            contacts = response.contacts
        except (SipParseError, HeaderValueError):
            contacts = []
        header = response.expires
        found_any = False
        for contact in contacts:
            if ours is not None and _same_contact(contact.uri, ours):
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
        if self.host.transport.reliable:
            self._commands.append(CloseTransport(final=False))
        self._drop_transport()
        self._attempt_failed(error, now)

    def _attempt_failed(self, error: PhoneSimError, now: float) -> None:
        host = self.host
        self._registered_host = None
        self._attempt_deadline = None
        self._refresh_at = None
        self._drop_transport()
        if self._probing_primary and self.account.host_alternate is not None:
            # doc §failback: the primary still fails; back to the alternate at once.
            self._probing_primary = False
            self._host_index = 1
            self._failures = 0
            self._events.append(RegistrationFailed(host=host, error=error, retry_at=now))
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
            self._events.append(RegistrationFailed(host=old, error=error, retry_at=now))
            self._events.append(FailedOver(from_host=old, to_host=self.host))
            self._set_state(RegState.WAITING)
            self._attempt_at = now
            return
        retry_at = now + host.retry + self._jitter()
        self._events.append(RegistrationFailed(host=host, error=error, retry_at=retry_at))
        self._set_state(RegState.WAITING)
        self._attempt_at = retry_at

    def _finish(self, *, confirmed: bool, host: SipHost | None) -> None:
        self._peers.clear()
        self._clear_timers()
        self._unreg_deadline = None
        self._registered_host = None
        self._drop_transport()
        self._set_state(RegState.STOPPED)
        self._commands.append(CloseTransport(final=True))
        self._events.append(Unregistered(host=host, confirmed=confirmed))

    # -- requests that arrive -----------------------------------------------------------------

    def _answer_rejected(self, error: SipParseError, source: Address) -> None:
        partial = error.partial
        if error.status is None or not isinstance(partial, SipRequest) or partial.method == "ACK":
            return
        try:
            response = partial.create_response(error.status)
            response.headers.add("User-Agent", self._signature.user_agent)
            self._out.append((bytes(response), source))
        except (SipParseError, HeaderValueError, ValueError):
            logger.debug("cannot answer a malformed request from %s", source)

    def _on_request(self, event: RequestReceived, now: float) -> None:
        ua = self._ua
        request = event.request
        handle = event.transaction
        if ua is None or handle is None:
            return  # an ACK: nothing to do without calls
        method = request.method
        status = 405
        headers: list[tuple[str, str]] = []
        if request.to_tag is not None:
            status = 481  # RFC 3261 12.2.2: no such dialog
        elif method == "NOTIFY":
            events = [e.split(";")[0].strip().lower() for e in request.tokens("Event")]
            if "check-sync" in events:
                status = 200
                raw = ",".join(request.headers.get_all("Event")).lower()
                self._events.append(
                    ReprovisionRequested(source=event.source, reboot="reboot=true" in raw)
                )
            else:
                status = 489  # RFC 6665 8.2.2: Bad Event
        elif method == "OPTIONS":
            # RFC 3261 11.2: 200 with what the phone supports.
            status = 200
            sig = self._signature
            headers = [("Allow", sig.allow_header), ("Accept", ", ".join(sig.accept))]
            if sig.supported:
                headers.append(("Supported", ", ".join(sig.supported)))
        elif method == "MESSAGE":
            status = 200
            self._events.append(MessageReceived(
                sender=str(request.from_.uri), content_type=request.content_type,
                body=request.body,
            ))
        elif method == "INVITE":
            # Only a core without a call layer sees an INVITE (a Phone's ua_hook takes them).
            status = 480  # Temporarily Unavailable
        elif method in ("BYE", "CANCEL"):
            status = 481
        try:
            ua.respond(handle, status, now, headers=headers)
        except PhoneSimError as exc:
            logger.debug("could not answer %s: %s", method, exc)
            return
        self._events.append(RequestAnswered(method=method, status=status, source=event.source))


def _same_contact(a: SipUri, b: SipUri) -> bool:
    return (
        (a.user or "") == (b.user or "")
        and a.host.lower().strip("[]") == b.host.lower().strip("[]")
        and (a.port or 0) == (b.port or 0)
    )
