"""The DPMA emulator's side of the configuration exchange over SIP, sans-I/O.

A phone's ``MESSAGE sip:proxy@...`` is answered 200 at once, without digest (the phone
proves itself with its MAC and PIN, :mod:`phone_sim.provisioning.dpma`); the answer then
goes out as the server's own MESSAGE to the phone's source address, over the same
connection on TCP/TLS, with ``In-Reply-To`` naming the phone's Call-ID. A body that cannot
be read gets 400, another Content-Type 415, and no answer MESSAGE.

:class:`DpmaSipServer` keeps one :class:`~phone_sim.sip.ua.UserAgent` per transport (its
Via is the lab's listener of that transport). The lab's asyncio layer offers it every
message first (:meth:`DpmaSipServer.wants`) and sends what
:meth:`DpmaSipServer.data_to_send` returns on the connection (or UDP socket) it names.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from phone_sim.provisioning.dpma import ConfigRequestAnswered, Dpma
from phone_sim.provisioning.exchange import ConfigExchange, ExchangeError, PhoneSimExchange
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import (
    Address,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportFailed,
    UaConfig,
    UserAgent,
)
from phone_sim.sip.uri import SipUri

__all__ = ["DPMA_SIGNATURE", "DpmaSipServer", "ExchangeRejected", "ReplyNotDelivered",
           "SipServerEvent"]

#: What the emulator's SIP side says about itself.
DPMA_SIGNATURE = PhoneSignature(user_agent="phone-sim DPMA emulator",
                                allow=("MESSAGE", "OPTIONS"), outbound=False)
#: How many answer MESSAGEs may be outstanding at once (a flood guard).
MAX_PENDING = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeRejected:
    """A configuration MESSAGE that could not be read (answered 400 or 415)."""

    source: Address
    """Who sent it."""
    status: int
    """The answer."""
    reason: str
    """Why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyNotDelivered:
    """The phone did not take the server's MESSAGE (no answer, or an error)."""

    mac: str
    """The phone's MAC."""
    destination: Address
    """Where it was sent."""
    reason: str
    """What happened."""


SipServerEvent = ConfigRequestAnswered | ExchangeRejected | ReplyNotDelivered


class DpmaSipServer:
    """The emulator's SIP side for every listener of one lab."""

    def __init__(
        self,
        dpma: Dpma,
        listeners: Mapping[str, Address],
        *,
        exchange: ConfigExchange | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """*listeners* maps ``TLS``/``TCP``/``UDP`` to the lab's address for it."""
        self.dpma = dpma
        self.exchange: ConfigExchange = exchange or PhoneSimExchange()
        self._uas = {
            transport.upper(): UserAgent(
                UaConfig(local_host=host, local_port=port, transport=transport.upper(),
                         user="proxy", signature=DPMA_SIGNATURE),
                rng=rng,
            )
            for transport, (host, port) in listeners.items()
        }
        self._pending: dict[str, str] = {}  # Call-ID of our MESSAGE -> the phone's MAC
        self._events: deque[SipServerEvent] = deque()

    # -- the lab's questions ------------------------------------------------------------------

    def wants(self, message: SipRequest | SipResponse) -> bool:
        """Whether *message* is the exchange's: a MESSAGE to ``sip:proxy@`` outside a
        dialog, or a response to one of the server's own MESSAGEs."""
        if isinstance(message, SipResponse):
            try:
                return message.call_id in self._pending
            except SipParseError:
                return False  # a broken Call-ID is the lab's to discard
        return (
            message.method == "MESSAGE"
            and message.uri.user == "proxy"
            and "tag=" not in (message.headers.get("To") or "")
        )

    def receive_message(
        self, message: SipRequest | SipResponse, transport: str, source: Address, now: float
    ) -> None:
        """Take a message :meth:`wants` accepted, from *source* over *transport*."""
        ua = self._uas.get(transport.upper())
        if ua is None:
            return
        ua.receive_message(message, source, now)
        self._drain(transport.upper(), ua, now)

    def data_to_send(self) -> list[tuple[str, bytes, Address]]:
        """What to send, as ``(transport, data, destination)``."""
        out: list[tuple[str, bytes, Address]] = []
        for transport, ua in self._uas.items():
            out.extend((transport, data, dest) for data, dest in ua.data_to_send())
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction."""
        timers = [t for ua in self._uas.values() if (t := ua.get_timer()) is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        """Fire what is due."""
        for transport, ua in self._uas.items():
            ua.handle_timer(now)
            self._drain(transport, ua, now)

    def next_event(self) -> SipServerEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    # -- inside -------------------------------------------------------------------------------

    def _drain(self, transport: str, ua: UserAgent, now: float) -> None:
        while (event := ua.next_event()) is not None:
            if isinstance(event, RequestReceived):
                if event.transaction is not None:
                    self._on_message(transport, ua, event, now)
            elif isinstance(event, ResponseReceived):
                self._on_response(event.response, event.request)
            elif isinstance(event, TransactionTimedOut | TransportFailed):
                call_id = event.request.call_id
                pending = self._pending.pop(call_id, None)
                if pending is not None:
                    self._events.append(ReplyNotDelivered(
                        mac=pending, destination=_destination(event.request),
                        reason="no answer" if isinstance(event, TransactionTimedOut)
                        else "connection lost"))

    def _on_response(self, response: SipResponse, request: SipRequest) -> None:
        if response.status < 200:
            return
        pending = self._pending.pop(response.call_id, None)
        if pending is not None and response.status >= 300:
            self._events.append(ReplyNotDelivered(
                mac=pending, destination=_destination(request),
                reason=f"{response.status} {response.reason}"))

    def _on_message(self, transport: str, ua: UserAgent, event: RequestReceived,
                    now: float) -> None:
        request = event.request
        handle = event.transaction
        assert handle is not None
        source = event.source
        if request.method != "MESSAGE":
            ua.respond(handle, 405, now, headers=[("Allow", "MESSAGE, OPTIONS")])
            return
        if request.media_type != self.exchange.content_type:
            ua.respond(handle, 415, now, headers=[("Accept", self.exchange.content_type)])
            self._events.append(ExchangeRejected(
                source=source, status=415,
                reason=f"Content-Type {request.content_type!r}"))
            return
        try:
            config_request = self.exchange.decode_request(request.body)
        except ExchangeError as exc:
            ua.respond(handle, 400, now, reason="Bad Request (not a configuration request)")
            self._events.append(ExchangeRejected(source=source, status=400, reason=str(exc)))
            return
        if len(self._pending) >= MAX_PENDING:
            ua.respond(handle, 503, now, headers=[("Retry-After", "5")])
            return
        ua.respond(handle, 200, now)
        reply, served = self.dpma.answer(config_request, source[0])
        self._events.append(served)
        host = source[0]
        params: tuple[tuple[str, str | None], ...] = ()
        if transport != "UDP":
            params = (("transport", transport.lower()),)
        server_host = request.uri.host
        answer = ua.create_request(
            "MESSAGE",
            SipUri("sip", None, None, host, source[1], params),
            from_=NameAddr(SipUri("sip", "proxy", None, server_host, None, ())),
            to=NameAddr(SipUri("sip", config_request.mac, None, host, None, ())),
            headers=[("In-Reply-To", request.call_id)],
            body=self.exchange.encode_reply(reply),
            content_type=self.exchange.content_type,
        )
        ua.send_request(answer, now, destination=source, authenticate=False)
        self._pending[answer.call_id] = config_request.mac


def _destination(request: SipRequest) -> Address:
    uri = request.uri
    return (uri.host.strip("[]"), uri.port or 5060)
