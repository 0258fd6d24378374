"""Two SIP user agents wired together in memory, with a fake clock (aioquic's ``roundtrip``,
h11's ``ConnectionPair``). No sockets: datagrams go from one core's ``data_to_send()``
straight into the other's ``receive_datagram()``.

The ``phone`` side is a :class:`UserAgent` with the phone's signature; the ``server`` side is
another :class:`UserAgent` that plays registrar or callee through small handlers the tests
install. ``drop`` lets a test lose chosen datagrams to exercise retransmissions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from phone_sim.sip.digest import DigestCredentials, DigestServer
from phone_sim.sip.message import SipRequest, parse_message
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.transaction import TimerSettings
from phone_sim.sip.ua import Address, RequestReceived, UaConfig, UaEvent, UserAgent

PHONE_ADDR: Address = ("127.0.0.1", 5062)
SERVER_ADDR: Address = ("127.0.0.1", 5060)
SERVER_SIGNATURE = PhoneSignature(
    user_agent="phone-sim test registrar",
    allow=("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"),
)


@dataclass(slots=True)
class Wire:
    """One datagram as it went over the in-memory network."""

    at: float
    source: Address
    destination: Address
    data: bytes
    dropped: bool = False

    @property
    def first_line(self) -> str:
        """The request or status line."""
        return self.data.split(b"\r\n", 1)[0].decode()


@dataclass
class UaPair:
    """A phone and a server user agent on a shared fake clock."""

    transport: str = "UDP"
    credentials: tuple[DigestCredentials, ...] = (DigestCredentials("101", "secret-1234"),)
    timers: TimerSettings = field(default_factory=TimerSettings)
    seed: int = 1
    now: float = 0.0
    drop: Callable[[Wire], bool] | None = None
    wire: list[Wire] = field(default_factory=list)
    phone_events: list[UaEvent] = field(default_factory=list)
    server_events: list[UaEvent] = field(default_factory=list)
    on_server_request: Callable[[UaPair, RequestReceived], None] | None = None
    on_phone_event: Callable[[UaPair, UaEvent], None] | None = None

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.phone = UserAgent(
            UaConfig(
                local_host=PHONE_ADDR[0], local_port=PHONE_ADDR[1], transport=self.transport,
                user="101", credentials=self.credentials, timers=self.timers,
            ),
            rng=random.Random(rng.random()),
        )
        self.server = UserAgent(
            UaConfig(
                local_host=SERVER_ADDR[0], local_port=SERVER_ADDR[1],
                transport=self.transport, user="pbx", signature=SERVER_SIGNATURE,
                timers=self.timers,
            ),
            rng=random.Random(rng.random()),
        )
        self._addr = {id(self.phone): PHONE_ADDR, id(self.server): SERVER_ADDR}

    # -- the network ------------------------------------------------------------------------

    def _peer(self, ua: UserAgent) -> UserAgent:
        return self.server if ua is self.phone else self.phone

    def pump(self) -> None:
        """Deliver datagrams and dispatch events until both sides are quiet."""
        for _ in range(10_000):
            moved = False
            for ua in (self.phone, self.server):
                for data, destination in ua.data_to_send():
                    moved = True
                    peer = self._peer(ua)
                    wire = Wire(self.now, self._addr[id(ua)], destination, data)
                    assert destination == self._addr[id(peer)], (
                        f"{ua!r} sent to {destination}, which is not its peer"
                    )
                    if self.drop is not None and self.drop(wire):
                        wire.dropped = True
                    self.wire.append(wire)
                    if not wire.dropped:
                        peer.receive_datagram(data, wire.source, self.now)
                while (event := ua.next_event()) is not None:
                    moved = True
                    if ua is self.phone:
                        self.phone_events.append(event)
                        if self.on_phone_event is not None:
                            self.on_phone_event(self, event)
                    else:
                        self.server_events.append(event)
                        if isinstance(event, RequestReceived) and self.on_server_request:
                            self.on_server_request(self, event)
            if not moved:
                return
        raise AssertionError("the pair never went quiet")

    def advance(self, seconds: float) -> None:
        """Move the clock forward, firing every timer on the way, in order."""
        target = self.now + seconds
        self.pump()
        while True:
            deadlines = [t for t in (self.phone.get_timer(), self.server.get_timer())
                         if t is not None and t <= target]
            if not deadlines:
                break
            self.now = max(self.now, min(deadlines))
            self.phone.handle_timer(self.now)
            self.server.handle_timer(self.now)
            self.pump()
        self.now = target

    # -- helpers ------------------------------------------------------------------------------

    def sent_by(self, ua: UserAgent, start: str = "") -> list[Wire]:
        """Datagrams *ua* sent whose first line starts with *start*."""
        addr = self._addr[id(ua)]
        return [w for w in self.wire if w.source == addr and w.first_line.startswith(start)]

    def of_type(self, events: list[UaEvent], kind: type) -> list[UaEvent]:
        """The events of one class."""
        return [e for e in events if isinstance(e, kind)]

    def message(self, wire: Wire) -> SipRequest:
        """Parse a captured request."""
        message = parse_message(wire.data)
        assert isinstance(message, SipRequest)
        return message


class Registrar:
    """A digest-protected registrar policy for the server side of a :class:`UaPair`."""

    def __init__(
        self,
        passwords: dict[str, str],
        *,
        realm: str = "asterisk",
        nonce_lifetime: float = 300.0,
        always_challenge: bool = False,
    ) -> None:
        self.digest = DigestServer(realm, nonce_lifetime=nonce_lifetime, secret=b"t" * 32)
        self.passwords = passwords
        self.always_challenge = always_challenge
        self.bindings: dict[str, str] = {}
        self.challenges = 0

    def __call__(self, pair: UaPair, event: RequestReceived) -> None:
        request = event.request
        if request.method != "REGISTER" or event.transaction is None:
            return
        authorization = request.headers.get("Authorization")
        stale = False
        if authorization is not None and not self.always_challenge:
            verdict = self.digest.verify(
                authorization, method="REGISTER", passwords=self.passwords, now=pair.now
            )
            if verdict.ok:
                assert verdict.username is not None
                contact = request.headers.get("Contact") or ""
                self.bindings[verdict.username] = contact
                pair.server.respond(event.transaction, 200, pair.now,
                                    headers=[("Contact", f"{contact};expires=300")])
                return
            stale = verdict.stale
        self.challenges += 1
        pair.server.respond(
            event.transaction, 401, pair.now,
            headers=[("WWW-Authenticate", str(self.digest.challenge(pair.now, stale=stale)))],
        )
