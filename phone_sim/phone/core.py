"""The whole phone, sans-I/O: :class:`PhoneCore`.

One core per phone, built from its :class:`~phone_sim.phone.config.PhoneConfig`. It owns

- the phone's *flows*: one per distinct next hop (transport, server, port, TLS name) that a
  line uses, each TCP/TLS flow with its own connection, :class:`StreamFramer` and
  :class:`~phone_sim.sip.ua.UserAgent`; every UDP flow shares the phone's one UDP socket and
  its one user agent, as pjsip's accounts share its transports; connections a PBX opens to
  the phone's TCP listener are flows too;
- one :class:`~phone_sim.phone.registration.Registration` per enabled line;
- the :class:`~phone_sim.call.router.CallRouter` with every call.

It does no I/O and reads no clock (aioquic's ``QuicConnection`` is the model). The asyncio
shell (:mod:`phone_sim.phone.aio`) feeds it bytes and ``now``:
``receive_data(flow, data, now)`` (stream bytes), ``receive_datagram(data, source, now)``
(the UDP socket), ``transport_opened/failed/lost(flow, ...)``, ``connection_accepted()``,
``handle_timer(now)`` and API calls (``start``, ``stop``, ``dial``, ``reconfigure``, and
``calls`` for the call router's by-Call-ID API); and takes out ``data_to_send()``
(``(flow, data, destination)``; flow None is the UDP socket), ``next_command()``
(:class:`OpenTransport`, :class:`CloseTransport`, :class:`Shutdown`), ``next_event()``
(:data:`~phone_sim.phone.events.PhoneEvent`) and one deadline, ``get_timer()``.

Every UA event is routed here, by the core: a REGISTER transaction's events to its
registration, a call's to the router, a new INVITE to the line whose Contact it was sent to,
OPTIONS/NOTIFY/MESSAGE to the phone's own answers. Nothing calls back up.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.call.events import (
    CallAnswered,
    CallArrived,
    CallFinished,
    CallMediaNegotiated,
    CallPlaced,
    CallProgressed,
    CallRefreshed,
    CallUpdateRefused,
)
from phone_sim.call.router import CallRouter
from phone_sim.call.session import call_signature
from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.firmware import FirmwareProfile
from phone_sim.media.negotiation import LocalAudio, MediaEncryption
from phone_sim.media.payloads import codec_by_name
from phone_sim.phone.config import PhoneConfig
from phone_sim.phone.events import (
    MessageReceived,
    PhoneEvent,
    PhoneStopped,
    ReprovisionRequested,
    RequestAnswered,
    Unregistered,
)
from phone_sim.phone.registration import (
    CloseFlow,
    OpenFlow,
    Registration,
    RegState,
)
from phone_sim.sip.framer import (
    KeepAlivePingReceived,
    KeepAlivePongReceived,
    MessageRejected,
    StreamFramer,
)
from phone_sim.sip.headers import HeaderValueError, NameAddr
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest
from phone_sim.sip.routing import Address
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import RequestReceived, UaConfig, UaEvent, UserAgent
from phone_sim.sip.uri import SipUri

__all__ = [
    "CALL_EVENTS",
    "EXTRA_METHODS",
    "CloseTransport",
    "OpenTransport",
    "PhoneCore",
    "Shutdown",
    "TransportCommand",
    "parse_target",
    "phone_signature",
]

logger = logging.getLogger(__name__)

_SHARED_RNG = random.Random()

#: Methods the phone answers beyond the SIP core's (check-sync NOTIFY, MESSAGE).
EXTRA_METHODS = ("NOTIFY", "MESSAGE")

_SIGNATURES: dict[FirmwareProfile, PhoneSignature] = {}


def phone_signature(profile: FirmwareProfile) -> PhoneSignature:
    """What a :class:`Phone` of *profile* advertises: the firmware's User-Agent, Allow and
    Supported, with ``100rel, timer`` and PRACK/UPDATE because the phone's call layer
    implements them (:func:`~phone_sim.call.session.call_signature`). One per profile."""
    signature = _SIGNATURES.get(profile)
    if signature is None:
        signature = _SIGNATURES[profile] = call_signature(
            PhoneSignature.for_profile(profile, extra_methods=EXTRA_METHODS)
        )
    return signature


#: The phone events that name a call (``event.call_id``).
CALL_EVENTS = (CallPlaced, CallArrived, CallProgressed, CallMediaNegotiated, CallAnswered,
               CallUpdateRefused, CallRefreshed, CallFinished)

#: Characters that never belong in an extension typed for ``dial()``.
_BAD_EXTENSION_CHARS = frozenset(" <>\"@;:/\\?\t\r\n\0")


def parse_target(text: str, domain: str) -> SipUri:
    """What ``dial()`` calls: ``"102"`` is an extension at *domain*; a ``sip:``/``sips:`` URI
    is taken as it is. :class:`UsageError` names anything else (``abc def``, ``<>``,
    ``http://x``), before any SIP is sent."""
    text = text.strip()
    if text.startswith(("sip:", "sips:")):
        try:
            uri = SipUri.parse(text)
        except SipParseError as exc:
            raise UsageError(f"bad call target {text!r}: {exc}") from None
        if not uri.host:
            raise UsageError(f"bad call target {text!r}: the URI has no host")
        return uri
    if not text:
        raise UsageError("empty call target: give an extension (600) or a sip: URI")
    if ":" in text.split("@")[0] and not text.startswith(("sip:", "sips:")):
        scheme = text.split(":", 1)[0]
        raise UsageError(f"bad call target {text!r}: {scheme}: is not a SIP URI "
                         "(give an extension such as 600, or sip:user@host)")
    if any(c in _BAD_EXTENSION_CHARS for c in text) or not text.isprintable():
        raise UsageError(f"bad call target {text!r}: an extension (600) or a sip: URI")
    return SipUri("sip", text, None, domain, None, ())


# --------------------------------------------------------------------------------------------
# Commands for the shell


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTransport:
    """Open flow *flow*: connect (TCP, TLS) to *host*, or, on UDP, bind the phone's socket if
    it is not bound yet and resolve *host*; then report ``transport_opened``/``_failed``."""

    flow: int
    """The flow's id, for the report."""
    host: SipHost
    """Where to."""
    server_name: str
    """The name to check the TLS certificate against (and send as SNI)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseTransport:
    """Close flow *flow*'s connection (nothing to do for a UDP flow)."""

    flow: int
    """The flow's id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown:
    """The phone stopped: close every socket, listener and connection."""


TransportCommand = OpenTransport | CloseTransport | Shutdown


class _FlowState(enum.Enum):
    OPENING = "opening"
    OPEN = "open"


class _Flow:
    """One next hop of the phone (see the module docstring)."""

    __slots__ = ("framer", "id", "ka_at", "key", "remote", "state", "transport", "ua", "users")

    def __init__(self, id_: int, transport: SipTransport, key: tuple[object, ...]) -> None:
        self.id = id_
        self.transport = transport
        self.key = key
        self.state = _FlowState.OPENING
        self.remote: Address | None = None
        self.framer: StreamFramer | None = None
        self.ua: UserAgent | None = None
        # The registrations that use it (none for a PBX's connection).
        self.users: set[Registration] = set()
        self.ka_at: float | None = None

    def __repr__(self) -> str:
        return f"<flow {self.id} {self.transport} {self.remote} {self.state.value}>"


# --------------------------------------------------------------------------------------------
# The core


class PhoneCore:
    """One phone, sans-I/O (see the module docstring).

    *signature* is what the phone advertises (User-Agent, Allow, Supported); *rng* makes
    Call-IDs, tags, branches and the jitter (seed it for reproducible tests); *key_factory*
    makes SDES keys (tests).
    """

    def __init__(
        self,
        config: PhoneConfig,
        *,
        signature: PhoneSignature,
        rng: random.Random | None = None,
        key_factory: Callable[[], bytes] | None = None,
    ) -> None:
        self.config = config
        self.signature = signature
        # One generator shared by every phone without its own: a Random is 2.5 KB, and a
        # fleet holds thousands of phones.
        self._rng = rng or _SHARED_RNG
        #: Every call, by Call-ID (answer, reject, hangup, hold, resume, refresh).
        self.calls = CallRouter(config=config.calls, rng=self._rng, key_factory=key_factory)
        #: The lines, by account index (in index order).
        self.registrations: dict[int, Registration] = {}
        # Registrations of accounts a reconfigure() removed or replaced, still unregistering.
        self._retiring: list[Registration] = []
        self._flows: dict[int, _Flow] = {}
        self._by_key: dict[tuple[object, ...], _Flow] = {}
        self._next_flow = 1
        self._udp_ua: UserAgent | None = None
        self._out: list[tuple[int | None, bytes, Address]] = []
        # Lists, not deques: an empty deque costs 760 bytes, and a fleet holds thousands of
        # phones whose queues stay short.
        self._commands: list[TransportCommand] = []
        self._events: list[PhoneEvent] = []
        self._started = False
        self._stopping = False
        self._stopped = False
        self._unconfirmed = False
        self._was_registered = False
        for account in config.accounts:
            if account.enabled:
                self.registrations[account.index] = self._new_registration(account)

    def __repr__(self) -> str:
        lines = ", ".join(f"{i}:{r.state.value}" for i, r in self.registrations.items())
        return f"<PhoneCore {self.config.profile.label} [{lines}] flows={len(self._flows)}>"

    def _new_registration(self, account: Account) -> Registration:
        return Registration(account, settings=self.config.registration,
                            signature=self.signature, rng=self._rng, register=account.register)

    # -- state ----------------------------------------------------------------------------------

    @property
    def primary(self) -> Registration:
        """The line calls use by default: the enabled account with the lowest index."""
        return self.registrations[self.config.primary_account.index]

    @property
    def stopped(self) -> bool:
        """Whether the phone has stopped (every line unregistered, every socket to close)."""
        return self._stopped

    def registration(self, account: int | None = None) -> Registration:
        """The line of account index *account* (default: the primary)."""
        if account is None:
            return self.primary
        reg = self.registrations.get(account)
        if reg is None:
            raise UsageError(f"the phone has no enabled account with index {account}")
        return reg

    # -- output -----------------------------------------------------------------------------------

    def data_to_send(self) -> list[tuple[int | None, bytes, Address]]:
        """What to send, as ``(flow, data, destination)``: flow None is the UDP socket (send
        to *destination*); otherwise write *data* on that flow's connection."""
        out = self._out
        if self._udp_ua is not None:
            out.extend((None, data, dest) for data, dest in self._udp_ua.data_to_send())
        for flow in self._flows.values():
            if flow.ua is not None and flow.transport is not SipTransport.UDP:
                out.extend((flow.id, data, dest) for data, dest in flow.ua.data_to_send())
        for reg in self._all_registrations():
            if reg.flow is not None:
                out.extend((None, data, dest) for data, dest in reg.data_to_send())
        self._out = []
        return out

    def next_command(self) -> TransportCommand | None:
        """The next transport command for the shell, or None."""
        return self._commands.pop(0) if self._commands else None

    def next_event(self) -> PhoneEvent | None:
        """The next event, or None."""
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        """The one deadline the shell arms (None: nothing scheduled)."""
        times: list[float] = []
        for reg in self._all_registrations():
            at = reg.get_timer()
            if at is not None:
                times.append(at)
        if self._udp_ua is not None and (at := self._udp_ua.get_timer()) is not None:
            times.append(at)
        for flow in self._flows.values():
            if flow.ka_at is not None:
                times.append(flow.ka_at)
            if flow.ua is not None and flow.transport is not SipTransport.UDP:
                at = flow.ua.get_timer()
                if at is not None:
                    times.append(at)
        at = self.calls.get_timer()
        if at is not None:
            times.append(at)
        return min(times) if times else None

    # -- API input ------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Bring every enabled line up: open its flow and register (``register="0"``: just
        open the flow)."""
        if self._started:
            raise UsageError("the phone is already started")
        self._started = True
        for reg in self.registrations.values():
            reg.start(now)
        self._settle(now)

    def stop(self, now: float) -> None:
        """Hang up every call, unregister every line, then close everything
        (:class:`PhoneStopped` says when it is done)."""
        if self._stopping:
            return
        self._stopping = True
        self._was_registered = any(r.registered for r in self._all_registrations())
        for call_id in list(self.calls.sessions):
            try:
                self.calls.hangup(call_id, now)
            except PhoneSimError as exc:
                logger.debug("call %s: hang-up at stop: %s", call_id, exc)
        for reg in self._all_registrations():
            reg.stop(now)
        self._settle(now)

    def reconfigure(self, config: PhoneConfig, now: float) -> None:
        """Apply a changed configuration (a re-provisioning): new or changed lines register
        anew, removed ones unregister, unchanged ones and calls in progress go on. The
        firmware, trust store and network cannot change without a restart."""
        old = self.config
        if (config.profile, config.trust, config.network, config.mac) != (
            old.profile, old.trust, old.network, old.mac
        ):
            raise UsageError("a new firmware, trust store, network or MAC needs a restart of "
                             "the phone; only accounts and behaviour change live")
        self.config = config
        self.calls.config = config.calls
        wanted = {a.index: a for a in config.accounts if a.enabled}
        for index in list(self.registrations):
            reg = self.registrations[index]
            account = wanted.get(index)
            if account is None or account != reg.account or (
                config.registration != old.registration
            ):
                del self.registrations[index]
                self._retiring.append(reg)
                reg.stop(now)
        for index, account in sorted(wanted.items()):
            if index not in self.registrations:
                reg = self.registrations[index] = self._new_registration(account)
                if self._started and not self._stopping:
                    reg.start(now)
        self._settle(now)

    # -- calls -----------------------------------------------------------------------------------

    def dial(
        self, target: str | SipUri, now: float, *, local: LocalAudio,
        account: int | None = None,
    ) -> str:
        """Place a call from *account* (default: the primary line) to *target* (an
        extension at the line's domain, or a ``sip:`` URI), media at *local*
        (:meth:`local_audio`). Returns its Call-ID; the INVITE goes at once, over the
        line's flow to its registrar."""
        if self._stopping:
            raise UsageError("the phone is stopping")
        reg = self.registration(account)
        if not reg.usable or reg.ua is None:
            raise UsageError(
                f"account {reg.account.username!r} has no SIP connection yet: register first")
        uri = target if isinstance(target, SipUri) else parse_target(target, reg.domain)
        acct = reg.account
        # A registered line sends every call to its registrar (an outbound proxy, as pjsip's
        # account with a registrar does); a line that does not register sends a sip: URI
        # straight to its host, and a bare extension to its server.
        direct = not acct.register and (
            isinstance(target, SipUri) or target.strip().startswith(("sip:", "sips:")))
        destination = None if direct else reg.remote
        from_ = NameAddr(SipUri("sip", acct.username, None, reg.domain, None, ()),
                         acct.caller_id)
        call_id = self.calls.dial(
            reg.ua, uri, now, account=reg.index, from_=from_, local=local,
            contact=reg.contact, auth=reg.digest, destination=destination,
        )
        self._settle(now)
        return call_id

    def answer(self, call_id: str, now: float, *, local: LocalAudio) -> None:
        """Answer incoming call *call_id* (200 OK with the SDES answer), media at *local*."""
        self.calls.answer(call_id, now, local=local)
        self._settle(now)

    def reject(self, call_id: str, now: float, status: int = 486) -> None:
        """Refuse incoming call *call_id* (486 Busy Here, 603 Decline...)."""
        self.calls.reject(call_id, now, status)
        self._settle(now)

    def hangup(self, call_id: str, now: float) -> None:
        """End call *call_id*: CANCEL, BYE or 603, whatever its state needs."""
        self.calls.hangup(call_id, now)
        self._settle(now)

    def hold(self, call_id: str, now: float) -> None:
        """Put call *call_id* on hold (re-INVITE, sendonly)."""
        self.calls.hold(call_id, now)
        self._settle(now)

    def resume(self, call_id: str, now: float) -> None:
        """Take call *call_id* off hold (re-INVITE, sendrecv)."""
        self.calls.resume(call_id, now)
        self._settle(now)

    def refresh(self, call_id: str, now: float) -> None:
        """Refresh call *call_id*'s RFC 4028 session timer now."""
        self.calls.refresh(call_id, now)
        self._settle(now)

    def media_host(self, account: int | None = None, *, call_id: str | None = None) -> str:
        """The address RTP uses for a call of *account* (or of call *call_id*): the address
        its SIP flow uses, as the firmware does."""
        ua: UserAgent | None
        if call_id is not None:
            ua = self.calls.session(call_id).ua
        else:
            ua = self.registration(account).ua
        if ua is not None:
            return ua.config.local_host.strip("[]")
        return self.config.network.local_host or "127.0.0.1"

    def local_audio(
        self, rtp_port: int, *, account: int | None = None, call_id: str | None = None
    ) -> LocalAudio:
        """The phone's side of the audio for a call of *account* (or call *call_id*), RTP on
        *rtp_port*: its address, the line's media encryption (of the host in use), the
        configured codecs, packetization and DTMF; RTCP announced on the next port."""
        if call_id is not None:
            account = self.calls.account_of(call_id)
        reg = self.registration(account)
        media = self.config.media
        return LocalAudio(
            host=self.media_host(account, call_id=call_id),
            rtp_port=rtp_port,
            rtcp_port=rtp_port + 1 if rtp_port < 65535 else None,
            codecs=tuple(codec_by_name(name) for name in media.codecs),
            dtmf=media.dtmf,
            media_encryption=MediaEncryption.from_config(reg.host.media_encryption),
            ptime_ms=media.ptime_ms,
        )

    # -- transport input ----------------------------------------------------------------------

    def transport_opened(self, flow_id: int, local: Address, remote: Address, now: float) -> None:
        """Flow *flow_id* is open: *local* is what goes in Via/Contact, *remote* the peer's
        address (for UDP: the resolved registrar, the UDP socket's *local*)."""
        flow = self._flows.get(flow_id)
        if flow is None or flow.state is not _FlowState.OPENING:
            return  # stale: closed meanwhile
        flow.state = _FlowState.OPEN
        flow.remote = remote
        if flow.transport is SipTransport.UDP:
            if self._udp_ua is None:
                self._udp_ua = self._new_ua(local, SipTransport.UDP)
            flow.ua = self._udp_ua
        else:
            flow.framer = StreamFramer()
            flow.ua = self._new_ua(local, flow.transport)
            interval = self.config.registration.stream_ka_interval
            flow.ka_at = now + interval if interval > 0 else None
        for reg in list(flow.users):
            reg.flow_opened(flow.id, flow.ua, remote, now)
        self._settle(now)

    def transport_failed(self, flow_id: int, error: PhoneSimError, now: float) -> None:
        """Opening flow *flow_id* failed (refused, TLS refusal, unreachable...)."""
        flow = self._forget_flow(flow_id)
        if flow is None:
            return
        for reg in flow.users:
            if reg.flow in (None, flow_id):
                reg.flow_failed(error, now)
        self._settle(now)

    def transport_lost(self, flow_id: int, now: float) -> None:
        """Flow *flow_id*'s connection closed under the phone."""
        flow = self._forget_flow(flow_id)
        if flow is None:
            return
        if flow.ua is not None and flow.ua is not self._udp_ua:
            self.calls.detach(flow.ua)
        for reg in flow.users:
            if reg.flow == flow_id:
                reg.flow_lost(now)
        self._settle(now)

    def connection_accepted(self, local: Address, remote: Address, now: float) -> int:
        """A PBX opened a TCP connection to the phone's listener; returns its flow id (feed
        its bytes with :meth:`receive_data`, its end with :meth:`transport_lost`)."""
        flow = self._new_flow(SipTransport.TCP, ("accepted", remote))
        flow.state = _FlowState.OPEN
        flow.remote = remote
        flow.framer = StreamFramer()
        flow.ua = self._new_ua(local, SipTransport.TCP)
        return flow.id

    def receive_data(self, flow_id: int, data: bytes, now: float) -> None:
        """Bytes that arrived on flow *flow_id*'s connection."""
        flow = self._flows.get(flow_id)
        if flow is None or flow.framer is None or flow.ua is None or flow.remote is None:
            return
        source = flow.remote
        try:
            items = flow.framer.feed(data)
        except SipParseError as exc:
            logger.info("framing error from %s: %s; closing", source, exc)
            self._commands.append(CloseTransport(flow=flow_id))
            self.transport_lost(flow_id, now)
            return
        ua = flow.ua
        for item in items:
            if isinstance(item, KeepAlivePingReceived):
                self._out.append((flow_id, b"\r\n", source))  # RFC 5626 4.4.1 pong
            elif isinstance(item, KeepAlivePongReceived):
                continue
            elif isinstance(item, MessageRejected):
                self._answer_rejected(item.error, flow_id, source)
            else:
                # The framer has parsed it already: no second parse.
                ua.receive_message(item, source, now)
        self._settle(now)

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """A datagram that arrived on the phone's UDP socket from *source*."""
        if self._udp_ua is None:
            return
        self._udp_ua.receive_datagram(data, source, now)
        self._settle(now)

    # -- timers ---------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at *now*."""
        if self._udp_ua is not None:
            self._udp_ua.handle_timer(now)
        for flow in list(self._flows.values()):
            if flow.ua is not None and flow.transport is not SipTransport.UDP:
                flow.ua.handle_timer(now)
            if flow.ka_at is not None and now >= flow.ka_at and flow.remote is not None:
                # pjsip: a "\r\n\r\n" ping on TCP/TLS (RFC 5626 4.4.1).
                self._out.append((flow.id, b"\r\n\r\n", flow.remote))
                flow.ka_at = now + self.config.registration.stream_ka_interval
        self._settle(now)
        for reg in list(self._all_registrations()):
            reg.handle_timer(now)
        self.calls.handle_timer(now)
        self._settle(now)

    # -- internals ------------------------------------------------------------------------------

    def _all_registrations(self) -> list[Registration]:
        return [*self.registrations.values(), *self._retiring]

    def _new_ua(self, local: Address, transport: SipTransport) -> UserAgent:
        host = local[0]
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # RFC 3261 25.1: an IPv6 reference in Via/Contact
        config = UaConfig(
            local_host=host,
            local_port=local[1],
            transport=transport.value.upper(),
            user=self.config.primary_account.username,
            signature=self.signature,
            answer_options=False,  # answered here, so that RequestAnswered reports it
        )
        return UserAgent(config, rng=self._rng)

    def _new_flow(self, transport: SipTransport, key: tuple[object, ...]) -> _Flow:
        flow = _Flow(self._next_flow, transport, key)
        self._next_flow += 1
        self._flows[flow.id] = flow
        self._by_key[key] = flow
        return flow

    def _forget_flow(self, flow_id: int) -> _Flow | None:
        flow = self._flows.pop(flow_id, None)
        if flow is not None and self._by_key.get(flow.key) is flow:
            del self._by_key[flow.key]
        return flow

    def _acquire(self, reg: Registration, command: OpenFlow, now: float) -> None:
        host = command.host
        key = (host.transport, host.server.lower(), host.effective_port,
               command.server_name.lower())
        flow = self._by_key.get(key)
        if flow is None:
            flow = self._new_flow(host.transport, key)
            self._commands.append(OpenTransport(flow=flow.id, host=host,
                                                server_name=command.server_name))
        flow.users.add(reg)
        if flow.state is _FlowState.OPEN and flow.ua is not None and flow.remote is not None:
            reg.flow_opened(flow.id, flow.ua, flow.remote, now)

    def _release(self, reg: Registration, flow_id: int) -> None:
        flow = self._flows.get(flow_id)
        if flow is None:
            return
        flow.users.discard(reg)
        if flow.users:
            return
        self._forget_flow(flow_id)
        if flow.transport is not SipTransport.UDP:
            self._commands.append(CloseTransport(flow=flow_id))
            if flow.ua is not None:
                self.calls.detach(flow.ua, "the line's connection was closed")

    def _settle(self, now: float) -> None:
        """Route every pending UA event and registration command, until nothing moves."""
        for _ in range(1000):
            moved = False
            for ua, flow in self._live_uas():
                while (event := ua.next_event()) is not None:
                    moved = True
                    self._route(ua, flow, event, now)
            for reg in self._all_registrations():
                while (command := reg.next_command()) is not None:
                    moved = True
                    if isinstance(command, OpenFlow):
                        self._acquire(reg, command, now)
                    else:
                        assert isinstance(command, CloseFlow)
                        self._release(reg, command.flow)
                while (reg_event := reg.next_event()) is not None:
                    moved = True
                    if isinstance(reg_event, Unregistered) and reg_event.host is not None and (
                        not reg_event.confirmed
                    ):
                        self._unconfirmed = True
                    self._events.append(reg_event)
            while (call_event := self.calls.next_event()) is not None:
                self._events.append(call_event)
            if not moved:
                break
        self._retiring = [r for r in self._retiring if r.state is not RegState.STOPPED]
        if self._stopping and not self._stopped and all(
            r.state is RegState.STOPPED for r in self._all_registrations()
        ):
            self._stopped = True
            self._events.append(PhoneStopped(confirmed=not self._unconfirmed,
                                             registered=self._was_registered))
            self._power_off()

    def _power_off(self) -> None:
        # Everything the UAs still had to say goes out first; then they are gone with their
        # transactions (nothing is left scheduled), and so is every call still held.
        self._out.extend(self.data_to_send())
        for ua, _ in self._live_uas():
            self.calls.detach(ua, "the phone stopped")
        while (event := self.calls.next_event()) is not None:
            self._events.append(event)
        self._flows.clear()
        self._by_key.clear()
        self._udp_ua = None
        self._commands.append(Shutdown())

    def _live_uas(self) -> list[tuple[UserAgent, _Flow | None]]:
        uas: list[tuple[UserAgent, _Flow | None]] = []
        if self._udp_ua is not None:
            uas.append((self._udp_ua, None))
        for flow in self._flows.values():
            if flow.ua is not None and flow.transport is not SipTransport.UDP:
                uas.append((flow.ua, flow))
        return uas

    def _route(self, ua: UserAgent, flow: _Flow | None, event: UaEvent, now: float) -> None:
        for reg in self._all_registrations():
            if reg.owns(event, ua):
                reg.handle_ua_event(event, now)
                return
        if self.calls.handle_event(event, now):
            return
        if isinstance(event, RequestReceived):
            request = event.request
            if request.method == "INVITE" and request.to_tag is None:
                self._incoming_call(ua, flow, event, now)
            else:
                self._answer_request(ua, flow, event, now)

    def _line_for(self, request: SipRequest, ua: UserAgent) -> Registration:
        # pjsua_acc_find_for_incoming: the line whose Contact user the Request-URI names,
        # preferring one on this flow; else a line on this flow; else the primary.
        user = request.uri.user
        regs = list(self.registrations.values())
        on_flow = [r for r in regs if r.ua is ua]
        for candidates in (on_flow, regs):
            for reg in candidates:
                if user is not None and reg.account.username == user:
                    return reg
        return on_flow[0] if on_flow else self.primary

    def _contact_on(self, reg: Registration, ua: UserAgent) -> NameAddr:
        if reg.ua is ua and reg.contact is not None:
            return reg.contact
        c = ua.config
        contact = self.signature.contact(reg.account.username, c.local_host, c.local_port,
                                         c.transport)
        return NameAddr(contact.uri, reg.account.caller_id)

    def _incoming_call(
        self, ua: UserAgent, flow: _Flow | None, event: RequestReceived, now: float
    ) -> None:
        handle = event.transaction
        if handle is None:
            return
        if self._stopping:
            ua.respond(handle, 480, now)
            return
        reg = self._line_for(event.request, ua)
        media_host = ua.config.local_host.strip("[]")
        template = replace(self.local_audio(9, account=reg.index), host=media_host)
        call_id = self.calls.incoming(ua, event, now, account=reg.index, local=template,
                                      contact=self._contact_on(reg, ua), auth=reg.digest)
        if call_id is not None:
            # The phone rings at once, as the firmware does, whoever answers later.
            self.calls.ring(call_id, now)

    def _from_registrar(self, ua: UserAgent, flow: _Flow | None, source: Address) -> bool:
        # A check-sync must come from a server a line registered with: over the line's own
        # connection, or (UDP) from its registrar's address.
        for reg in self._all_registrations():
            if reg.ua is not ua:
                continue
            if flow is not None or reg.remote == source:
                return True
        return False

    def _answer_request(
        self, ua: UserAgent, flow: _Flow | None, event: RequestReceived, now: float
    ) -> None:
        request = event.request
        handle = event.transaction
        if handle is None:
            return  # an ACK of no call: nothing to do
        method = request.method
        status = 405
        headers: list[tuple[str, str]] = []
        if request.to_tag is not None:
            status = 481  # RFC 3261 12.2.2: no such dialog
        elif method == "NOTIFY":
            events = [e.split(";")[0].strip().lower() for e in request.tokens("Event")]
            if "check-sync" not in events:
                status = 489  # RFC 6665 8.2.2: Bad Event
            elif not self._from_registrar(ua, flow, event.source):
                status = 403  # only the server the phone registered with may re-provision it
            else:
                status = 200
                raw = ",".join(request.headers.get_all("Event")).lower()
                self._events.append(
                    ReprovisionRequested(source=event.source, reboot="reboot=true" in raw))
        elif method == "OPTIONS":
            # RFC 3261 11.2: 200 with what the phone supports.
            status = 200
            sig = self.signature
            headers = [("Allow", sig.allow_header), ("Accept", ", ".join(sig.accept))]
            if sig.supported:
                headers.append(("Supported", ", ".join(sig.supported)))
        elif method == "MESSAGE":
            status = 200
            reg = self._line_for(request, ua)
            self._events.append(MessageReceived(
                account=reg.index, sender=str(request.from_.uri),
                content_type=request.content_type, body=request.body,
            ))
        elif method in ("BYE", "CANCEL"):
            status = 481
        try:
            ua.respond(handle, status, now, headers=headers)
        except PhoneSimError as exc:
            logger.debug("could not answer %s: %s", method, exc)
            return
        self._events.append(RequestAnswered(method=method, status=status, source=event.source))

    def _answer_rejected(self, error: SipParseError, flow_id: int, source: Address) -> None:
        partial = error.partial
        if error.status is None or not isinstance(partial, SipRequest) or partial.method == "ACK":
            return
        try:
            response = partial.create_response(error.status)
            response.headers.add("User-Agent", self.signature.user_agent)
            self._out.append((flow_id, bytes(response), source))
        except (SipParseError, HeaderValueError, ValueError):
            logger.debug("cannot answer a malformed request from %s", source)
