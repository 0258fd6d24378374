"""An in-memory network for the sans-I/O phone core: fake registrars (real digest
challenges from the SIP core's ``DigestServer``) and a driver that runs the core's transport
commands, carries what it sends and advances a fake clock. Addresses are from the
documentation ranges and never touch a socket."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from phone_sim.account import SipHost, SipTransport
from phone_sim.phone.core import CloseTransport, OpenTransport, PhoneCore, Shutdown
from phone_sim.phone.events import PhoneEvent
from phone_sim.phone.registration import Registration, SipTransportError
from phone_sim.sip.digest import DigestServer
from phone_sim.sip.message import SipRequest, SipResponse, parse_message
from phone_sim.sip.ua import Address

E = TypeVar("E")

PHONE_ADDR: Address = ("198.51.100.7", 40000)


@dataclass
class FakeRegistrar:
    """A registrar that answers REGISTER (digest, then 200) and records what it saw."""

    address: Address
    passwords: dict[str, str] = field(default_factory=lambda: {"101": "secret"})
    max_expires: int = 3600
    min_expires: int | None = None
    min_expires_text: str | None = None  # the Min-Expires value sent, when not min_expires
    up: bool = True
    answering: bool = True
    refuse_with: int | None = None
    seen: list[SipRequest] = field(default_factory=list)
    bindings: dict[str, int] = field(default_factory=dict)
    keepalives: int = 0
    digest: DigestServer = field(default_factory=lambda: DigestServer("pbx.test"))

    def handle(self, data: bytes, now: float) -> list[bytes]:
        if data.strip(b"\r\n") == b"":
            self.keepalives += 1
            return []
        message = parse_message(data)
        if isinstance(message, SipResponse):
            return []
        self.seen.append(message)
        if not self.answering or message.method != "REGISTER":
            return []  # a registrar only: other requests are seen and left unanswered
        if self.refuse_with is not None:
            return [bytes(message.create_response(self.refuse_with, to_tag="r"))]
        auth = message.headers.get("Authorization")
        verdict = (
            self.digest.verify(auth, method="REGISTER", passwords=self.passwords, now=now)
            if auth is not None
            else None
        )
        if verdict is None or not verdict.ok:
            challenge = self.digest.challenge(now)
            return [bytes(message.create_response(
                401, to_tag="r", headers=[("WWW-Authenticate", str(challenge))]))]
        asked = message.expires if message.expires is not None else 3600
        if self.min_expires is not None and 0 < asked < self.min_expires:
            return [bytes(message.create_response(
                423, to_tag="r",
                headers=[("Min-Expires", self.min_expires_text or str(self.min_expires))]))]
        contact = message.contacts[0]
        granted = min(asked, self.max_expires)
        user = contact.uri.user or ""
        if granted == 0:
            self.bindings.pop(str(contact.uri), None)
            return [bytes(message.create_response(200, to_tag="r"))]
        self.bindings[str(contact.uri)] = granted
        del user
        return [bytes(message.create_response(
            200, to_tag="r",
            headers=[("Contact", f"{contact};expires={granted}"), ("Expires", str(granted))]))]


class Net:
    """Drives a phone core: runs its transport commands, carries what it sends, advances a
    fake clock. Each registrar is one host; a TCP/TLS flow is a connection to it."""

    def __init__(self, core: PhoneCore, *registrars: FakeRegistrar) -> None:
        self.core = core
        self.registrars = {r.address[0]: r for r in registrars}
        self.now = 1000.0
        self.events: list[PhoneEvent] = []
        self.opened: list[str] = []
        self.closed: list[CloseTransport] = []
        self.shutdown = False
        self.flows: dict[int, FakeRegistrar] = {}
        self.to_phone: list[tuple[int | None, bytes, Address]] = []  # sent elsewhere

    @property
    def reg(self) -> Registration:
        """The primary line's registration."""
        return self.core.primary

    @property
    def contact(self) -> str | None:
        contact = self.reg.contact
        return str(contact.uri) if contact is not None else None

    def registrar_for(self, host: SipHost) -> FakeRegistrar | None:
        return self.registrars.get(host.server)

    def lose(self) -> None:
        """The primary line's connection closes under the phone."""
        flow = self.reg.flow
        assert flow is not None
        self.flows.pop(flow, None)
        self.core.transport_lost(flow, self.now)

    def deliver(self, data: bytes, source: Address) -> None:
        """Bytes from *source* to the phone: on the primary line's flow for TCP/TLS, as a
        datagram for UDP."""
        flow = self.reg.flow
        if self.reg.host.transport is SipTransport.UDP or flow is None:
            self.core.receive_datagram(data, source, self.now)
        else:
            self.core.receive_data(flow, data, self.now)

    def pump(self) -> None:
        core = self.core
        for _ in range(100):
            busy = False
            while (command := core.next_command()) is not None:
                busy = True
                if isinstance(command, OpenTransport):
                    self.opened.append(command.host.server)
                    registrar = self.registrar_for(command.host)
                    if registrar is None or not registrar.up:
                        core.transport_failed(
                            command.flow,
                            SipTransportError(f"connection refused by {command.host.label}"),
                            self.now,
                        )
                    else:
                        self.flows[command.flow] = registrar
                        core.transport_opened(command.flow, PHONE_ADDR, registrar.address,
                                              self.now)
                elif isinstance(command, CloseTransport):
                    self.closed.append(command)
                    self.flows.pop(command.flow, None)
                else:
                    assert isinstance(command, Shutdown)
                    self.shutdown = True
            for flow, data, destination in core.data_to_send():
                busy = True
                registrar = self.registrars.get(destination[0])
                if registrar is None or registrar.address != destination:
                    self.to_phone.append((flow, data, destination))
                    continue
                if not registrar.up:
                    continue
                if flow is not None and self.flows.get(flow) is not registrar:
                    continue  # a connection the phone closed meanwhile
                for reply in registrar.handle(data, self.now):
                    if flow is None:
                        core.receive_datagram(reply, registrar.address, self.now)
                    else:
                        core.receive_data(flow, reply, self.now)
            while (event := core.next_event()) is not None:
                busy = True
                self.events.append(event)
            if not busy:
                return
        raise AssertionError("the core does not settle")

    def run_until(self, t: float) -> None:
        self.pump()
        while True:
            at = self.core.get_timer()
            if at is None or at > t:
                break
            self.now = max(self.now, at)
            self.core.handle_timer(self.now)
            self.pump()
        self.now = t

    def advance(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]
