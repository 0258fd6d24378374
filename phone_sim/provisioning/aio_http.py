"""The DPMA emulator's HTTP(S) server: ``<mac>.cfg`` and ``<mac>-contacts.xml`` with h11.

Any path ending in ``/<mac>.cfg`` (12 hex digits, lower case) is that phone's configuration,
as the emulator's :class:`~phone_sim.provisioning.dpma.Dpma` decides it; the phone's model
and firmware come from its User-Agent (``Digium D65 2_9_2``). A PIN comes as HTTP Basic
(user = the MAC, password = the PIN). Answers: 200 with the XML; 401 with
``WWW-Authenticate: Basic`` when a PIN is needed and none was given; 403 for an unknown MAC
and a wrong PIN alike; 404 for anything else. HTTPS runs the lab's certificate through the
lab's own TLS engine (:mod:`phone_sim.lab.tls`); one connection, one request
(``Connection: close``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any, cast

import h11

from phone_sim.lab.tls import TlsAcceptError, TlsServerConnection, TlsServerContext
from phone_sim.provisioning.dpma import ConfigRequestAnswered, Dpma, DpmaConfigError
from phone_sim.provisioning.exchange import CONFIG_METHOD, CONTACTS_METHOD, ConfigRequest

__all__ = ["ConfigHttpServer"]

logger = logging.getLogger(__name__)

_FILE = re.compile(r"(?:.*/)?(?P<mac>[0-9a-f]{12})(?P<kind>\.cfg|-contacts\.xml)")
_AGENT = re.compile(r"Digium (?P<model>D[0-9]{2}) (?P<firmware>[0-9A-Za-z_]{1,40})")
#: A connection that has not sent a whole request by then is closed.
REQUEST_TIMEOUT = 10.0


class _HttpConnection(asyncio.Protocol):
    def __init__(self, server: ConfigHttpServer) -> None:
        self.server = server
        self.h11 = h11.Connection(h11.SERVER)
        self.tls: TlsServerConnection | None = (
            server.tls.accept() if server.tls is not None else None
        )
        self.transport: asyncio.Transport | None = None
        self.peer = ("", 0)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.server.connections.add(self)
        self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.tls is not None:
            try:
                data = self.tls.receive_data(data)
            except TlsAcceptError as exc:
                logger.info("HTTPS from %s:%d dropped: %s", *self.peer, exc)
                self._write_raw(self.tls.data_to_send())
                self.close()
                return
            self._write_raw(self.tls.data_to_send())
        if not data:
            return
        self.h11.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self.h11.receive_data(b"")
        self._process()
        return False

    def _process(self) -> None:
        try:
            while True:
                event: Any = self.h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Request):
                    self._answer(event)
                elif isinstance(event, h11.ConnectionClosed):
                    self.close()
                    return
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            with contextlib.suppress(h11.LocalProtocolError):
                self._send(status, b"bad request\n", "text/plain")
            self.close()

    def _answer(self, request: h11.Request) -> None:
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace").split("?", 1)[0]
        headers = {name.decode("ascii").lower(): value.decode("latin-1")
                   for name, value in request.headers}
        if method not in ("GET", "HEAD"):
            self._send(405, b"only GET\n", "text/plain", [("Allow", "GET, HEAD")])
            return
        match = _FILE.fullmatch(target)
        if match is None:
            self._send(404, b"not found\n", "text/plain")
            return
        mac = match["mac"]
        agent = _AGENT.search(headers.get("user-agent", ""))
        pin = _basic_pin(headers.get("authorization"), mac)
        request_ = ConfigRequest(
            method=CONFIG_METHOD if match["kind"] == ".cfg" else CONTACTS_METHOD,
            mac=mac,
            model=agent["model"] if agent else "unknown",
            firmware=agent["firmware"] if agent else "unknown",
            pin=pin,
        )
        reply, served = self.server.dpma.answer(request_, self.peer[0])
        if self.server.on_event is not None:
            self.server.on_event(served)
        body = reply.document if method == "GET" and reply.document is not None else b""
        if reply.document is not None:
            self._send(200, body, "application/xml")
        elif reply.error_code == "pin-required":
            self._send(401, b"a PIN is needed\n", "text/plain",
                       [("WWW-Authenticate", 'Basic realm="phone-sim DPMA"')])
        elif reply.error_code == "refused":
            self._send(403, (reply.error_message or "refused").encode() + b"\n", "text/plain")
        else:
            self._send(404, (reply.error_message or "not found").encode() + b"\n",
                       "text/plain")

    def _send(self, status: int, body: bytes, content_type: str,
              extra: list[tuple[str, str]] | None = None) -> None:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                   ("Connection", "close"), ("Server", "phone-sim DPMA emulator"),
                   *(extra or [])]
        out = self.h11.send(h11.Response(status_code=status, headers=headers))
        out += self.h11.send(h11.Data(data=body)) if body else b""
        out += self.h11.send(h11.EndOfMessage())
        self._write(out)
        self.close()

    def _write(self, data: bytes) -> None:
        if self.tls is not None:
            self.tls.send(data)
            data = self.tls.data_to_send()
        self._write_raw(data)

    def _write_raw(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.tls is not None:
            self.tls.close()
            self._write_raw(self.tls.data_to_send())
        if self.transport is not None:
            self.transport.close()


def _basic_pin(header: str | None, mac: str) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    if user.replace(":", "").lower() not in (mac, ""):
        return None
    return password or None


class ConfigHttpServer:
    """Serves the emulator's configurations over HTTP, or HTTPS with *tls*."""

    def __init__(
        self,
        dpma: Dpma,
        *,
        host: str,
        port: int = 0,
        tls: TlsServerContext | None = None,
        on_event: Callable[[ConfigRequestAnswered], None] | None = None,
    ) -> None:
        self.dpma = dpma
        self.host = host
        self.requested_port = port
        self.tls = tls
        self.on_event = on_event
        self.connections: set[_HttpConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL a phone's ``config_server_url`` takes."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    async def start(self) -> None:
        """Listen."""
        loop = asyncio.get_running_loop()
        try:
            # A fleet boots hundreds of phones at once, one connection each: with asyncio's
            # default backlog of 100 the rest wait for a SYN retry (1 s), as the lab's own
            # listeners would without theirs.
            self._server = await loop.create_server(lambda: _HttpConnection(self), self.host,
                                                    self.requested_port, backlog=4096)
        except OSError as exc:
            raise DpmaConfigError(f"cannot listen for HTTP on {self.host}:"
                                  f"{self.requested_port}: {exc.strerror or exc}") from None
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None
