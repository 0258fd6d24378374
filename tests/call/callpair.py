"""Two phones' call layers wired together in memory with a fake clock (h11's
``ConnectionPair``): each side is a :class:`UserAgent` with the call signature and a
:class:`CallRouter`. Datagrams go straight from one core to the other; ``drop`` loses chosen
ones. A new INVITE goes to the router's ``incoming`` (the phone core's job in a phone); events
the routers do not take (OPTIONS, stray responses) land in ``unrouted``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phone_sim.call.events import CallArrived, PhoneCallEvent
from phone_sim.call.router import CallRouter
from phone_sim.call.session import CallConfig, CallSession, call_signature
from phone_sim.errors import UsageError
from phone_sim.media.negotiation import LocalAudio
from phone_sim.sip.digest import DigestCredentials
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.message import SipRequest, SipResponse, parse_message
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import Address, RequestReceived, UaConfig, UaEvent, UserAgent
from phone_sim.sip.uri import SipUri

A_ADDR: Address = ("127.0.0.1", 5062)
B_ADDR: Address = ("127.0.0.1", 5064)


@dataclass(slots=True)
class Wire:
    """One datagram on the in-memory network."""

    at: float
    source: Address
    destination: Address
    data: bytes
    dropped: bool = False

    @property
    def first_line(self) -> str:
        """The request or status line."""
        return self.data.split(b"\r\n", 1)[0].decode()

    @property
    def message(self) -> SipRequest | SipResponse:
        """The parsed message."""
        return parse_message(self.data)


def make_ua(
    addr: Address,
    user: str,
    *,
    transport: str = "UDP",
    calls: bool = True,
    credentials: tuple[DigestCredentials, ...] = (),
    seed: int = 1,
) -> UserAgent:
    """A phone UA; ``calls=False`` leaves 100rel/timer/PRACK/UPDATE out of its signature."""
    signature = PhoneSignature()
    if calls:
        signature = call_signature(signature)
    return UserAgent(
        UaConfig(local_host=addr[0], local_port=addr[1], transport=transport, user=user,
                 signature=signature, credentials=credentials),
        rng=random.Random(seed),
    )


@dataclass
class CallPair:
    """Phone A (101) and phone B (102) with call routers on a shared fake clock."""

    transport: str = "UDP"
    config_a: CallConfig = field(default_factory=CallConfig)
    config_b: CallConfig = field(default_factory=CallConfig)
    calls_a: bool = True
    calls_b: bool = True
    credentials_a: tuple[DigestCredentials, ...] = ()
    now: float = 0.0
    drop: Callable[[Wire], bool] | None = None
    wire: list[Wire] = field(default_factory=list)
    unrouted: list[tuple[str, UaEvent]] = field(default_factory=list)
    events: dict[str, list[PhoneCallEvent]] = field(default_factory=dict)
    on_incoming: Callable[[CallPair, CallSession], None] | None = None
    #: Hook for B's raw UA events that its router did not take (a scripted peer).
    on_b_unrouted: Callable[[CallPair, UaEvent], None] | None = None
    incoming: list[CallSession] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.a = make_ua(A_ADDR, "101", transport=self.transport, calls=self.calls_a,
                         credentials=self.credentials_a, seed=11)
        self.b = make_ua(B_ADDR, "102", transport=self.transport, calls=self.calls_b, seed=22)
        self.ra = CallRouter(config=self.config_a, rng=random.Random(1))
        self.rb = CallRouter(config=self.config_b, rng=random.Random(2))
        self._addr = {id(self.a): A_ADDR, id(self.b): B_ADDR}

    @staticmethod
    def audio(side: str) -> LocalAudio:
        """The LocalAudio of a side (A listens on 4000, B on 6000)."""
        return LocalAudio(host="127.0.0.1", rtp_port=4000 if side == "a" else 6000)

    def dial(self, user: str = "102", **kwargs: object) -> CallSession:
        """A calls *user* at B."""
        target = SipUri("sip", user, None, B_ADDR[0], B_ADDR[1], ())
        from_ = NameAddr(SipUri("sip", "101", None, "127.0.0.1", None, ()))
        call_id = self.ra.dial(self.a, target, self.now, account=0, from_=from_,
                               local=self.audio("a"), **kwargs)  # type: ignore[arg-type]
        session = self.ra.sessions[call_id]
        self.pump()
        return session

    def pump(self) -> None:
        """Deliver datagrams and dispatch events until both sides are quiet."""
        for _ in range(10_000):
            moved = False
            for ua, router, name in ((self.a, self.ra, "a"), (self.b, self.rb, "b")):
                peer = self.b if ua is self.a else self.a
                for data, destination in ua.data_to_send():
                    moved = True
                    wire = Wire(self.now, self._addr[id(ua)], destination, data)
                    assert destination == self._addr[id(peer)], f"sent to {destination}"
                    if self.drop is not None and self.drop(wire):
                        wire.dropped = True
                    self.wire.append(wire)
                    if not wire.dropped:
                        peer.receive_datagram(data, wire.source, self.now)
                while (event := ua.next_event()) is not None:
                    moved = True
                    if router.handle_event(event, self.now):
                        continue
                    if (
                        isinstance(event, RequestReceived)
                        and event.request.method == "INVITE"
                        and event.request.to_tag is None
                    ):
                        router.incoming(ua, event, self.now, account=0, local=self.audio(name))
                        continue
                    self.unrouted.append((name, event))
                    if name == "b" and self.on_b_unrouted is not None:
                        self.on_b_unrouted(self, event)
                while (call_event := router.next_event()) is not None:
                    moved = True
                    self.events.setdefault(call_event.call_id + name, []).append(call_event)
                    if isinstance(call_event, CallArrived):
                        self._on_arrived(router.sessions[call_event.call_id])
            if not moved:
                return
        raise AssertionError("the pair never went quiet")

    def _on_arrived(self, session: CallSession) -> None:
        self.incoming.append(session)
        if self.on_incoming is not None:
            self.on_incoming(self, session)

    def router_of(self, session: CallSession) -> CallRouter | None:
        """The router holding *session* (A and B hold a call under the same Call-ID);
        None once it was forgotten (over)."""
        for router in (self.ra, self.rb):
            if router.sessions.get(session.call_id) is session:
                return router
        return None

    def act(self, session: CallSession, verb: str, *args: Any, **kwargs: Any) -> None:
        """Call the router API *verb* (answer, reject, hangup, hold...) on *session*, as a
        phone does. A call the router forgot is over: hanging it up does nothing, anything
        else is a :class:`UsageError`, as the router says for an unknown Call-ID."""
        router = self.router_of(session)
        if router is None:
            if verb == "hangup":
                return
            raise UsageError(f"call {session.call_id} is over: cannot {verb}")
        getattr(router, verb)(session.call_id, self.now, *args, **kwargs)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer on the way in order."""
        target = self.now + seconds
        self.pump()
        while True:
            deadlines = [
                t for t in (self.a.get_timer(), self.b.get_timer(), self.ra.get_timer(),
                            self.rb.get_timer())
                if t is not None and t <= target
            ]
            if not deadlines:
                break
            self.now = max(self.now, min(deadlines))
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
            self.ra.handle_timer(self.now)
            self.rb.handle_timer(self.now)
            self.pump()
        self.now = target

    def of(
        self, session: CallSession, side: str, kind: type | None = None
    ) -> list[PhoneCallEvent]:
        """A session's events (of one class)."""
        events = self.events.get(session.call_id + side, [])
        return [e for e in events if kind is None or isinstance(e, kind)]

    def lines(self, source: Address | None = None, start: str = "") -> list[str]:
        """First lines of the datagrams (from *source*) starting with *start*."""
        return [w.first_line for w in self.wire
                if (source is None or w.source == source) and w.first_line.startswith(start)]

    def sent(self, source: Address, start: str) -> list[SipRequest | SipResponse]:
        """Parsed messages from *source* whose first line starts with *start*."""
        return [w.message for w in self.wire
                if w.source == source and w.first_line.startswith(start)]


def answer_at_once(pair: CallPair, session: CallSession) -> None:
    """B's behaviour: ring, then answer."""
    pair.act(session, "ring")
    pair.act(session, "answer", local=pair.audio("b"))


def ring_only(pair: CallPair, session: CallSession) -> None:
    """B's behaviour: ring and wait."""
    pair.act(session, "ring")
