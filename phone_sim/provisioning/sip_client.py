"""The phone's side of the DPMA configuration exchange over SIP, sans-I/O.

:class:`SipConfigClient` sends one MESSAGE to ``sip:proxy@server`` through the project's SIP
:class:`~phone_sim.sip.ua.UserAgent` (transactions, retransmissions on UDP, the phone's
signature) and waits for the server's own MESSAGE carrying the answer; it answers that one
200 and reports :class:`ConfigFetched`, or :class:`ConfigFetchFailed` once. Feed it what
arrives (:meth:`~SipConfigClient.receive_data` on a stream, framed here;
:meth:`~SipConfigClient.receive_datagram` on UDP) and the timer; take out
:meth:`~SipConfigClient.data_to_send`, :meth:`~SipConfigClient.next_event` and
:meth:`~SipConfigClient.get_timer`. The asyncio shell is
:mod:`phone_sim.provisioning.aio_fetch`.

The server's MESSAGE is recognised by ``In-Reply-To`` carrying our Call-ID (RFC 3261 20.21),
which is how phone-sim's exchange ties the two MESSAGEs together (docs/provisioning.md).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from phone_sim.account import SipTransport
from phone_sim.errors import PhoneSimError
from phone_sim.provisioning.errors import ConfigFetchError
from phone_sim.provisioning.exchange import (
    ConfigExchange,
    ConfigReply,
    ConfigRequest,
    ExchangeError,
    PhoneSimExchange,
)
from phone_sim.provisioning.urls import SipConfigUrl
from phone_sim.sip.framer import StreamFramer
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import (
    Address,
    AuthenticationRejected,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportFailed,
    UaConfig,
    UserAgent,
)
from phone_sim.sip.uri import SipUri

__all__ = ["ConfigFetchFailed", "ConfigFetched", "SipConfigClient", "SipFetchEvent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigFetched:
    """The server's answer arrived (a document, or the server's refusal)."""

    reply: ConfigReply
    """What it said."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigFetchFailed:
    """The exchange failed: no answer, an error response, an unreadable answer."""

    error: PhoneSimError
    """Why."""


SipFetchEvent = ConfigFetched | ConfigFetchFailed


class SipConfigClient:
    """One configuration request over SIP MESSAGE, from the phone's side."""

    def __init__(
        self,
        *,
        request: ConfigRequest,
        server: SipConfigUrl,
        local: Address,
        signature: PhoneSignature,
        exchange: ConfigExchange | None = None,
        timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        """*local* is the address of the phone's socket (Via and Contact); *timeout* bounds
        the whole exchange, the server's MESSAGE included."""
        self.request = request
        self.server = server
        self.exchange: ConfigExchange = exchange or PhoneSimExchange()
        self.timeout = timeout
        transport = str(server.transport).upper()
        self.ua = UserAgent(
            UaConfig(local_host=local[0], local_port=local[1], transport=transport,
                     user=request.mac, signature=signature),
            rng=rng,
        )
        self._framer = StreamFramer() if server.transport is not SipTransport.UDP else None
        self._events: deque[SipFetchEvent] = deque()
        self._deadline: float | None = None
        self._handle: int | None = None
        self._call_id: str | None = None
        self.done = False

    @property
    def call_id(self) -> str | None:
        """The Call-ID of our MESSAGE, once sent."""
        return self._call_id

    # -- driving ----------------------------------------------------------------------------

    def start(self, now: float, destination: Address) -> None:
        """Send the MESSAGE to *destination* (the server's resolved address)."""
        server = self.server
        params: tuple[tuple[str, str | None], ...] = ()
        if server.transport is not SipTransport.UDP:
            params = (("transport", str(server.transport)),)
        uri = SipUri("sip", "proxy", None, server.host, server.effective_port, params)
        message = self.ua.create_request(
            "MESSAGE", uri,
            from_=NameAddr(SipUri("sip", self.request.mac, None, server.host, None, ())),
            to=NameAddr(SipUri("sip", "proxy", None, server.host, None, ())),
            body=self.exchange.encode_request(self.request),
            content_type=self.exchange.content_type,
        )
        self._call_id = message.call_id
        self._handle = self.ua.send_request(message, now, destination=destination,
                                            authenticate=False)
        self._deadline = now + self.timeout
        self._drain(now)

    def receive_data(self, data: bytes, source: Address, now: float) -> None:
        """Bytes from the stream (TCP/TLS) connection."""
        assert self._framer is not None, "receive_data is for stream transports"
        try:
            events = self._framer.feed(data)
        except SipParseError as exc:
            self._fail(ConfigFetchError(f"the configuration server sent broken SIP: {exc}",
                                         cause="bad answer"))
            return
        for event in events:
            # Keep-alives and malformed messages carry nothing for this exchange.
            if isinstance(event, SipRequest | SipResponse):
                self.ua.receive_message(event, source, now)
        self._drain(now)

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """One UDP datagram."""
        self.ua.receive_datagram(data, source, now)
        self._drain(now)

    def connection_lost(self, now: float) -> None:
        """The stream connection closed."""
        if not self.done:
            self._fail(ConfigFetchError(
                f"{self.server.label} closed the connection before sending the configuration",
                cause="connection closed"))

    def handle_timer(self, now: float) -> None:
        """Fire what is due."""
        self.ua.handle_timer(now)
        self._drain(now)
        if not self.done and self._deadline is not None and now >= self._deadline:
            self._fail(ConfigFetchError(
                f"no configuration from {self.server.label} within {self.timeout:g} s",
                cause="timeout"))

    def get_timer(self) -> float | None:
        """The next deadline."""
        if self.done:
            return None
        at = self.ua.get_timer()
        if self._deadline is not None and (at is None or self._deadline < at):
            return self._deadline
        return at

    def data_to_send(self) -> list[tuple[bytes, Address]]:
        """What to send, as ``(data, destination)``."""
        return self.ua.data_to_send()

    def next_event(self) -> SipFetchEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    # -- inside -------------------------------------------------------------------------------

    def _fail(self, error: PhoneSimError) -> None:
        if not self.done:
            self.done = True
            self._events.append(ConfigFetchFailed(error=error))

    def _drain(self, now: float) -> None:
        while (event := self.ua.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self._on_request(event, now)
            elif isinstance(event, ResponseReceived) and event.transaction == self._handle:
                self._on_response(event.response)
            elif isinstance(event, TransactionTimedOut) and event.transaction == self._handle:
                self._fail(ConfigFetchError(
                    f"no answer to MESSAGE {event.request.uri} (timer {event.timer})",
                    cause="timeout"))
            elif isinstance(event, TransportFailed) and event.transaction == self._handle:
                self._fail(ConfigFetchError(f"cannot send to {self.server.label}",
                                            cause="connection"))
            elif isinstance(event, AuthenticationRejected):
                self._fail(ConfigFetchError("the configuration server asked for digest "
                                            "authentication: DPMA answers without it",
                                            cause="digest asked"))

    def _on_response(self, response: SipResponse) -> None:
        status = response.status
        if status < 200 or 200 <= status < 300:
            return
        if status in (401, 407):
            hint = ": the DPMA exchange is answered without digest (is it a plain registrar?)"
        elif status in (404, 405, 501):
            hint = ": is it a DPMA server (sip:proxy@)?"
        else:
            hint = ""
        self._fail(ConfigFetchError(
            f"{self.server.label} answered the configuration MESSAGE with {status} "
            f"{response.reason}{hint}", cause=f"SIP {status}"))

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        handle = event.transaction
        if handle is None:
            return  # an ACK: nothing to do
        if request.method != "MESSAGE":
            self.ua.respond(handle, 405, now, headers=[("Allow", "MESSAGE, OPTIONS")])
            return
        if self._call_id is None or request.headers.get("In-Reply-To") != self._call_id:
            # Not the answer to our request: nobody else may talk to a phone provisioning.
            self.ua.respond(handle, 403, now, reason="Forbidden (not a reply to our request)")
            return
        if request.media_type != self.exchange.content_type:
            self.ua.respond(handle, 415, now, headers=[("Accept", self.exchange.content_type)])
            self._fail(ConfigFetchError(
                f"the configuration reply has Content-Type {request.content_type!r}, not "
                f"{self.exchange.content_type!r}", cause="bad answer"))
            return
        try:
            reply = self.exchange.decode_reply(request.body)
        except ExchangeError as exc:
            self.ua.respond(handle, 400, now, reason="Bad Request")
            self._fail(ConfigFetchError(f"unreadable configuration reply: {exc}",
                                        cause="bad answer"))
            return
        self.ua.respond(handle, 200, now)
        if not self.done:
            self.done = True
            self._events.append(ConfigFetched(reply=reply))
