"""The DPMA emulator's decisions, sans-I/O: who gets a configuration, and which.

:class:`Dpma` holds a :class:`~phone_sim.provisioning.dpma_conf.DpmaConf` and what the server
knows about itself (:class:`DpmaSite`: its address, its SIP ports, its CA). It answers a
:class:`~phone_sim.provisioning.exchange.ConfigRequest` from a phone's address with a
:class:`~phone_sim.provisioning.exchange.ConfigReply`: the phone's XML, or an error. The SIP
and HTTP servers around it (``aio_dpma.py``, ``aio_http.py``) only move bytes.

How a phone proves itself (``config_auth``, PROTOCOL-NOTES §2; the details are ours,
documented in ``docs/provisioning.md``):

- ``disabled``: the phone is found by its MAC; no PIN is asked;
- ``mac``: the same, and only phones with ``mac=`` are ever served;
- ``pin``: the PIN must be the phone's ``pin=``. A phone section without ``mac=`` is claimed
  by the first phone that gives its PIN (DPMA's "enter the PIN to assign the phone");
- ``globalpin``: the PIN must be ``[general] globalpin``, and the phone is found by MAC.

An unknown MAC and a wrong PIN get the same answer (:data:`REFUSED`), so a client cannot
probe which MACs exist; a missing PIN when one is needed is said as such
(``pin-required``), which reveals only the server's mode.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from cryptography import x509

from phone_sim.account import Account, AccountError, SipHost, SipTransport
from phone_sim.errors import UsageError
from phone_sim.phone.config import PhoneConfigError, normalize_mac
from phone_sim.provisioning.dpma_conf import DpmaConf, DpmaLine, DpmaNetwork, DpmaPhone
from phone_sim.provisioning.exchange import (
    CONFIG_METHOD,
    CONTACTS_METHOD,
    ConfigReply,
    ConfigRequest,
)
from phone_sim.provisioning.phone_xml import CaCertificate, FirmwareImage, PhoneXml, XmlAccount
from phone_sim.provisioning.urls import SipConfigUrl

__all__ = [
    "REFUSED",
    "ConfigRequestAnswered",
    "Dpma",
    "DpmaConfigError",
    "DpmaSite",
]

#: The one answer to an unknown MAC and to a wrong PIN.
REFUSED = "configuration refused: unknown phone or wrong PIN"
#: The mDNS service type DPMA advertises (PROTOCOL-NOTES §1).
SERVICE_TYPE = "_digiumproxy._udp.local."


class DpmaConfigError(UsageError):
    """The emulator cannot serve as configured (provisioning-only without a registrar...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DpmaSite:
    """What the emulator knows about itself."""

    address: str
    """The address phones reach it at (SIP and HTTP)."""
    sip_ports: Mapping[str, int]
    """Its SIP listeners: ``{"tls": 5061, "tcp": 5060, "udp": 5060}`` (lower case)."""
    http_url: str | None = None
    """Where it serves ``<mac>.cfg`` over HTTP(S), if it does."""
    ca_certificates: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    """Private root CAs put in every phone's ``<certs>`` (the lab's CA)."""
    registrar: bool = True
    """The phones may register to the emulator's own lab (False: provisioning only, every
    network must name its ``registration_address``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigRequestAnswered:
    """A request answered (for the emulator's log): who asked, and what it got."""

    mac: str
    """The MAC in the request."""
    source: str
    """The phone's address."""
    method: str
    """What it asked for."""
    phone: str | None
    """The phone section served, or None when refused."""
    error_code: str | None
    """The error code when refused."""


class Dpma:
    """The emulator's core: a configuration and the site it runs on."""

    def __init__(self, conf: DpmaConf, site: DpmaSite) -> None:
        self.conf = conf
        self.site = site
        self._claims: dict[str, str] = {}  # mac -> phone name claimed by PIN
        if not site.registrar:
            for network in conf.networks:
                if network.registration_address is None:
                    raise DpmaConfigError(
                        f"{conf.file}: network [{network.name}] has no registration_address: "
                        "in provisioning-only mode the phones must register elsewhere"
                    )

    # -- what is advertised -------------------------------------------------------------------

    @property
    def sip_url(self) -> SipConfigUrl:
        """The ``sipUrl`` advertised and written as ``config_server_url``:
        ``sip:proxy@<mdns_address>:<mdns_port>;transport=<mdns_transport>``, the server's own
        address and port where ``[general]`` leaves them empty."""
        general = self.conf.general
        transport = general.mdns_transport
        port = general.mdns_port or self.site.sip_ports.get(str(transport))
        if port is None:
            raise DpmaConfigError(
                f"{self.conf.file}: mdns_transport={transport} but the server has no "
                f"{str(transport).upper()} listener and [general] gives no mdns_port"
            )
        return SipConfigUrl(host=general.mdns_address or self.site.address, port=port,
                            transport=transport)

    def port_warnings(self, own_hosts: Iterable[str] = ()) -> list[str]:
        """Where the configuration sends phones to this server on a port it does not listen
        on: the advertised ``sipUrl`` (``mdns_port``) and, when the lab registers the
        phones, each network's ``registration_port``, for an address that is this server's
        (*own_hosts*, besides ``site.address``). The phones would be told that port and
        fail; DPMA does the same with a wrong ``mdns_port``, so this warns rather than
        rewrites."""
        own = {self.site.address.lower(), *(h.lower() for h in own_hosts)}
        warnings: list[str] = []

        def check(what: str, host: str, port: int | None, transport: SipTransport) -> None:
            listening = self.site.sip_ports.get(str(transport))
            if host.lower() in own and port is not None and listening is not None and (
                    port != listening):
                warnings.append(
                    f"{self.conf.file}: {what} sends phones to {host}:{port} over "
                    f"{str(transport).upper()}, but this server listens on {listening}: "
                    f"start it on {port} (--{transport!s}-port {port}) or change the conf")

        url = self.sip_url
        check("the advertised sipUrl (mdns_port)", url.host, url.effective_port, url.transport)
        if self.site.registrar:
            for network in self.conf.networks:
                if network.registration_address is not None:
                    # The network's own transport (a line may override it: not checked).
                    transport = network.transport or SipTransport.UDP
                    port = network.registration_port or transport.default_port
                    check(f"network [{network.name}] (registration_port)",
                          network.registration_address, port, transport)
        return warnings

    def txt_records(self) -> dict[str, str]:
        """The mDNS TXT record: ``sipUrl`` and ``serviceType``."""
        return {"sipUrl": self.sip_url.label, "serviceType": "asterisk"}

    # -- answering ------------------------------------------------------------------------------

    def answer(
        self, request: ConfigRequest, source: str
    ) -> tuple[ConfigReply, ConfigRequestAnswered]:
        """The reply to *request* from the phone at *source*, and a log record."""
        phone, code = self._authorize(request)
        document: bytes | None = None
        message: str | None = None
        if phone is not None:
            if request.method == CONFIG_METHOD:
                network = self.conf.network_for(phone, source)
                if network is None:
                    code = "no-network"
                    message = (f"no network of the server serves address {source} "
                               "(check the cidr= of the type=network sections)")
                else:
                    document = bytes(self.phone_xml(phone, network))
            elif request.method == CONTACTS_METHOD:
                code, message = "not-found", "no contacts for this phone"
        elif code == "pin-required":
            message = "this server needs a PIN to give out configuration (config_auth)"
        else:
            message = REFUSED
        reply = ConfigReply(method=request.method, document=document,
                            error_code=None if document is not None else code,
                            error_message=message if document is None else None)
        served = ConfigRequestAnswered(mac=request.mac, source=source, method=request.method,
                              phone=phone.name if document is not None and phone else None,
                              error_code=reply.error_code)
        return reply, served

    def _authorize(self, request: ConfigRequest) -> tuple[DpmaPhone | None, str]:
        general = self.conf.general
        mode = general.config_auth
        try:
            mac = normalize_mac(request.mac)
        except PhoneConfigError:
            return None, "refused"
        phone = self.conf.phone_by_mac(mac)
        if phone is None and mac in self._claims:
            phone = next((p for p in self.conf.phones if p.name == self._claims[mac]), None)
        if mode in ("pin", "globalpin") and request.pin is None:
            return None, "pin-required"
        if mode in {"disabled", "mac"}:
            return (phone, "") if phone is not None else (None, "refused")
        assert request.pin is not None
        given = request.pin.encode()
        if mode == "globalpin":
            expected = (general.globalpin or "").encode()
            ok = phone is not None and hmac.compare_digest(given, expected)
            return (phone, "") if ok else (None, "refused")
        # mode == "pin"
        if phone is not None:
            ok = phone.pin is not None and hmac.compare_digest(given, phone.pin.encode())
            return (phone, "") if ok else (None, "refused")
        claimed = set(self._claims.values())
        for candidate in self.conf.phones:
            if (candidate.mac is None and candidate.name not in claimed
                    and candidate.pin is not None
                    and hmac.compare_digest(given, candidate.pin.encode())):
                self._claims[mac] = candidate.name
                return candidate, ""
        return None, "refused"

    # -- the phone's XML ----------------------------------------------------------------------

    def phone_xml(self, phone: DpmaPhone, network: DpmaNetwork) -> PhoneXml:
        """The configuration document of *phone* on *network*."""
        settings: list[tuple[str, str]] = [("config_server_url", self.sip_url.label)]
        accounts = tuple(
            self._account(self.conf.lines[name], index, phone, network)
            for index, name in enumerate(phone.lines)
        )
        transports = {xa.account.host_primary.transport for xa in accounts}
        if SipTransport.TLS in transports:
            settings.append(("transport_tls_allowed", "1"))
        if network.ntp_server:
            settings.append(("ntp_server", network.ntp_server))
        if phone.timezone:
            settings.append(("time_zone", phone.timezone))
        firmwares = []
        for name in phone.firmwares:
            fw = self.conf.firmwares[name]
            url = fw.public_firmware_url
            if url is None and fw.file and network.file_url_prefix:
                url = f"{network.file_url_prefix.rstrip('/')}/{fw.file}"
            firmwares.append(FirmwareImage(model=fw.model, version=fw.version, url=url))
        return PhoneXml(
            settings=tuple(settings),
            accounts=accounts,
            certificates=tuple(
                CaCertificate(certificate=c, name="phone-sim lab root CA")
                for c in self.site.ca_certificates
            ),
            firmwares=tuple(firmwares),
        )

    def _registrar(self, network: DpmaNetwork, transport: SipTransport) -> tuple[str, int | None]:
        if network.registration_address is not None:
            return network.registration_address, network.registration_port
        port = network.registration_port or self.site.sip_ports.get(str(transport))
        if port is None:
            raise DpmaConfigError(
                f"{self.conf.file}: network [{network.name}]: the phones would register over "
                f"{str(transport).upper()} but the lab has no such listener"
            )
        return self.site.address, port

    def _account(
        self, line: DpmaLine, index: int, phone: DpmaPhone, network: DpmaNetwork
    ) -> XmlAccount:
        # The vendor page: a line's transport overrides the network's.
        transport = line.transport or network.transport or SipTransport.UDP
        server, port = self._registrar(network, transport)
        defaults = SipHost(server=server)
        reregister = line.reregistration_timeout
        retry = line.registration_retry_interval
        retries = line.registration_max_retries
        try:
            primary = SipHost(
                server=server, port=port, transport=transport,
                media_encryption=line.media_encryption,
                reregister=defaults.reregister if reregister is None else reregister,
                retry=defaults.retry if retry is None else float(retry),
                num_retries=defaults.num_retries if retries is None else retries,
            )
            alternate = None
            if network.alternate_registration_address is not None:
                alternate = replace(
                    primary, server=network.alternate_registration_address,
                    port=network.alternate_registration_port,
                    transport=network.alternate_registration_transport or transport,
                )
            label = line.line_label or phone.full_name
            account = Account(username=line.name, password=line.password,
                              authname=line.authname or line.name, host_primary=primary,
                              host_alternate=alternate, index=index, line_label=label,
                              caller_id=label)
        except AccountError as exc:
            raise DpmaConfigError(f"{self.conf.file}: line [{line.name}]: {exc}") from None
        extra: list[tuple[str, str]] = []
        if line.digit_map:
            extra.append(("dial_plan", line.digit_map))
        if line.mailbox:
            extra.append(("voicemail", line.mailbox))
        return XmlAccount(account=account, extra=tuple(extra))

