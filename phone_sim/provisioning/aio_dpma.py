"""The DPMA emulator on asyncio, attached to a running :class:`~phone_sim.lab.aio.Lab`.

::

    async with Lab(users, cert_chain_pem=chain, key_pem=key, ca_pem=ca) as lab:
        async with DpmaEmulator(conf, lab, cert_chain_pem=chain, key_pem=key) as dpma:
            dpma.sip_url      # sip:proxy@127.0.0.1:40123;transport=tls (advertised over mDNS)
            dpma.http_url     # http://127.0.0.1:40200/ (also https_url)

It takes the lab's ``MESSAGE sip:proxy@`` traffic through the lab's message hook (answered
by :class:`~phone_sim.provisioning.sip_server.DpmaSipServer` on the same connections),
serves ``<mac>.cfg`` over HTTP and HTTPS (:mod:`.aio_http`), and advertises itself over mDNS
as ``[general]`` says (:mod:`.aio_discovery`). Every decision is
:class:`~phone_sim.provisioning.dpma.Dpma`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from cryptography import x509

from phone_sim.lab.aio import Lab
from phone_sim.lab.registrar import Flow
from phone_sim.lab.tls import TlsServerContext
from phone_sim.provisioning.aio_discovery import DEFAULT_MDNS_INTERFACES, MdnsAdvertiser
from phone_sim.provisioning.aio_http import ConfigHttpServer
from phone_sim.provisioning.dpma import ConfigRequestAnswered, Dpma, DpmaConfigError, DpmaSite
from phone_sim.provisioning.dpma_conf import DpmaConf
from phone_sim.provisioning.sip_server import DpmaSipServer, SipServerEvent
from phone_sim.sip.message import SipRequest, SipResponse

__all__ = ["DpmaEmulator", "DpmaEvent"]

DpmaEvent = SipServerEvent
#: Connections remembered to answer on (the newest ones; a phone's exchange is short).
_MAX_FLOWS = 4096


class DpmaEmulator:
    """DPMA for one lab: the SIP exchange, HTTP(S) and the mDNS advertisement."""

    def __init__(
        self,
        conf: DpmaConf,
        lab: Lab,
        *,
        cert_chain_pem: bytes | None = None,
        key_pem: bytes | None = None,
        http_port: int | None = 0,
        https_port: int | None = 0,
        mdns_interfaces: Sequence[str] = DEFAULT_MDNS_INTERFACES,
        advertise: bool | None = None,
        instance_name: str | None = None,
        provisioning_only: bool = False,
        on_event: Callable[[DpmaEvent], None] | None = None,
    ) -> None:
        """*cert_chain_pem*/*key_pem*: the lab's certificate, for HTTPS (no HTTPS without
        them). ``None`` ports turn HTTP or HTTPS off. *advertise* defaults to
        ``service_discovery_enabled``; *instance_name* to ``service_name``.
        *provisioning_only*: the phones register elsewhere (every network names its
        ``registration_address``)."""
        self.conf = conf
        self.lab = lab
        self.mdns_interfaces = tuple(mdns_interfaces)
        self.advertise = conf.general.service_discovery_enabled if advertise is None else (
            advertise)
        self.instance_name = instance_name or conf.general.service_name
        self.provisioning_only = provisioning_only
        self.on_event = on_event
        self._tls = (
            TlsServerContext(cert_chain_pem, key_pem)
            if cert_chain_pem is not None and key_pem is not None else None
        )
        self._ports = (http_port, https_port if self._tls is not None else None)
        self.dpma: Dpma | None = None
        self.sip: DpmaSipServer | None = None
        self.http: ConfigHttpServer | None = None
        self.https: ConfigHttpServer | None = None
        self.advertiser: MdnsAdvertiser | None = None
        self._flows: OrderedDict[tuple[str, tuple[str, int]], Flow] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.served: list[ConfigRequestAnswered] = []

    async def __aenter__(self) -> DpmaEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def address(self) -> str:
        """Where phones reach the emulator: the lab's address (loopback for a wildcard)."""
        host = self.lab.host
        if host in ("0.0.0.0", "localhost"):  # noqa: S104 - a comparison, not a bind
            return "127.0.0.1"
        return "::1" if host == "::" else host

    @property
    def sip_url(self) -> str:
        """The ``sipUrl`` advertised (and written as ``config_server_url``)."""
        assert self.dpma is not None, "start the emulator first"
        return self.dpma.sip_url.label

    @property
    def http_url(self) -> str | None:
        """The HTTP base URL, if HTTP runs."""
        return self.http.url if self.http is not None else None

    @property
    def https_url(self) -> str | None:
        """The HTTPS base URL, if HTTPS runs."""
        return self.https.url if self.https is not None else None

    async def start(self) -> None:
        """Attach to the (started) lab, start HTTP(S) and the advertisement."""
        lab = self.lab
        if not lab.ports:
            raise DpmaConfigError("start the lab before the DPMA emulator")
        self._loop = asyncio.get_running_loop()
        ca = tuple(x509.load_pem_x509_certificates(lab.ca_pem)) if lab.ca_pem else ()
        address = self.address
        site = DpmaSite(address=address, sip_ports=dict(lab.ports), ca_certificates=ca,
                        registrar=not self.provisioning_only)
        self.dpma = dpma = Dpma(self.conf, site)
        sip_url = dpma.sip_url  # checks that the advertised transport exists
        self.sip = DpmaSipServer(
            dpma, {t.upper(): (address, port) for t, port in lab.ports.items()})
        lab.message_hook = self._offer
        try:
            http_port, https_port = self._ports
            if http_port is not None:
                self.http = ConfigHttpServer(dpma, host=lab.host, port=http_port,
                                             on_event=self._served)
                await self.http.start()
            if https_port is not None:
                self.https = ConfigHttpServer(dpma, host=lab.host, port=https_port,
                                              tls=self._tls, on_event=self._served)
                await self.https.start()
            if self.advertise:
                advertised = sip_url.host
                try:
                    ipaddress.ip_address(advertised)
                except ValueError:
                    advertised = address  # mdns_address is a name: the A record is ours
                self.advertiser = MdnsAdvertiser(
                    instance=self.instance_name, port=sip_url.effective_port,
                    address=advertised, txt=dpma.txt_records(),
                    interfaces=self.mdns_interfaces,
                )
                await self.advertiser.start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop advertising and serving; detach from the lab."""
        if self.lab.message_hook == self._offer:
            self.lab.message_hook = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for closer in (self.advertiser, self.https, self.http):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()
        self.advertiser = self.https = self.http = None

    def port_warnings(self) -> list[str]:
        """:meth:`Dpma.port_warnings` for this lab's addresses (empty before start)."""
        if self.dpma is None:
            return []
        own = [self.lab.host, self.address]
        if self.address in ("127.0.0.1", "::1"):
            own.append("localhost")
        return self.dpma.port_warnings(own)

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts (``phone-sim lab --conf --json``)."""
        return {
            "sip_url": self.sip_url if self.dpma is not None else None,
            "http_url": self.http_url,
            "https_url": self.https_url,
            "mdns": {"service": self.instance_name, "interfaces": list(self.mdns_interfaces)}
            if self.advertiser is not None else None,
            "phones": [p.name for p in self.conf.phones],
            "config_auth": self.conf.general.config_auth,
            "provisioning_only": self.provisioning_only,
            "notes": list(self.conf.notes),
            "warnings": self.port_warnings(),
        }

    # -- the SIP side ---------------------------------------------------------------------------

    def _offer(self, message: SipRequest | SipResponse, flow: Flow, now: float) -> bool:
        sip = self.sip
        if sip is None or not sip.wants(message):
            return False
        key = (flow.transport, flow.remote)
        self._flows[key] = flow
        self._flows.move_to_end(key)
        while len(self._flows) > _MAX_FLOWS:
            self._flows.popitem(last=False)
        sip.receive_message(message, flow.transport, flow.remote, now)
        self._pump()
        return True

    def _pump(self) -> None:
        sip = self.sip
        if sip is None or self._loop is None:
            return
        for transport, data, destination in sip.data_to_send():
            flow = self._flows.get((transport, destination))
            if flow is None and transport == "UDP":
                flow = next((f for (t, _), f in reversed(self._flows.items()) if t == "UDP"),
                            None)
            if flow is not None:
                self.lab.send_to(flow, data, destination)
        while (event := sip.next_event()) is not None:
            if isinstance(event, ConfigRequestAnswered):
                self._served(event)
            elif self.on_event is not None:
                self.on_event(event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = sip.get_timer()
        if at is not None:
            self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.sip is not None and self._loop is not None:
            self.sip.handle_timer(self._loop.time())
            self._pump()

    def _served(self, event: ConfigRequestAnswered) -> None:
        self.served.append(event)
        del self.served[:-1000]
        if self.on_event is not None:
            self.on_event(event)
