"""DPMA discovery over mDNS/DNS-SD, the policy part (PROTOCOL-NOTES §1), sans-I/O.

DPMA advertises ``_digiumproxy._udp`` with TXT ``sipUrl=sip:proxy@host:port;transport=...``
and ``serviceType=asterisk`` (or ``switchvox``); a firmware-only server says
``serviceType=firmware`` with ``firmwareUrl``, ``firmwareVersion`` and ``<Model>File`` keys.
The phone, when no ``config_server_url`` is set, uses the one server found (after a
countdown), lets the user choose among several, and gives up when none answers. The D80 does
not take part. The browsing itself is :mod:`phone_sim.provisioning.aio_discovery`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from phone_sim.account import SipTransport
from phone_sim.firmware import Model
from phone_sim.provisioning.errors import DiscoveryFailed
from phone_sim.provisioning.urls import ConfigUrlError, SipConfigUrl, parse_config_url

__all__ = [
    "SERVICE_TYPE",
    "DiscoveredServer",
    "choose_server",
    "server_from_txt",
    "uses_mdns",
]

#: The DNS-SD service type DPMA advertises.
SERVICE_TYPE = "_digiumproxy._udp.local."


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveredServer:
    """One advertisement, resolved."""

    instance: str
    """The instance name (DPMA's ``service_name``, ``Asterisk`` by default)."""
    addresses: tuple[str, ...]
    """The addresses of the advertising host."""
    port: int
    """The SRV port (the SIP port)."""
    service_type: str | None = None
    """TXT ``serviceType``: ``asterisk``, ``switchvox`` or ``firmware``."""
    sip_url: str | None = None
    """TXT ``sipUrl`` as advertised."""
    firmware_url: str | None = None
    """TXT ``firmwareUrl`` (firmware-only servers)."""
    firmware_version: str | None = None
    """TXT ``firmwareVersion``."""
    firmware_files: Mapping[str, str] = field(default_factory=dict)
    """TXT ``<Model>File`` keys, by model (``D65``)."""

    @property
    def config_url(self) -> SipConfigUrl | None:
        """Where the phone fetches its configuration: ``sipUrl`` (PROTOCOL-NOTES §1: the
        phone takes it verbatim), else ``sip:proxy@<address>:<port>``; None for a
        firmware-only server or an unusable ``sipUrl``."""
        if self.service_type == "firmware":
            return None
        if self.sip_url:
            try:
                url = parse_config_url(self.sip_url)
            except ConfigUrlError:
                return None
            return url if isinstance(url, SipConfigUrl) else None
        if not self.addresses:
            return None
        return SipConfigUrl(host=self.addresses[0], port=self.port, transport=SipTransport.UDP)

    @property
    def label(self) -> str:
        """``Asterisk (sip:proxy@...)`` for lists."""
        url = self.config_url
        return f"{self.instance} ({url.label if url else 'firmware only'})"

    def matches(self, wanted: str) -> bool:
        """Whether the user's choice *wanted* names this server: its instance name (any
        case), one of its addresses, or its ``sipUrl`` host."""
        key = wanted.strip().lower()
        url = self.config_url
        return (
            key == self.instance.lower()
            or key in (a.lower() for a in self.addresses)
            or (url is not None and key == url.host.lower())
        )


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def server_from_txt(
    instance: str,
    properties: Mapping[bytes, bytes | None] | Mapping[str, str | None],
    addresses: Iterable[str],
    port: int,
) -> DiscoveredServer:
    """A :class:`DiscoveredServer` from a resolved record; TXT keys match without regard
    to case, unknown ones are ignored."""
    txt: dict[str, str] = {}
    for key, value in properties.items():
        name, text = _text(key), _text(value)
        if name and text is not None:
            txt[name.lower()] = text
    files: dict[str, str] = {}
    for model in Model:
        path = txt.get(f"{model.value.lower()}file")
        if path:
            files[model.value] = path
    good = []
    for address in addresses:
        try:
            good.append(str(ipaddress.ip_address(address)))
        except ValueError:
            continue
    service_type = txt.get("servicetype")
    return DiscoveredServer(
        instance=instance,
        addresses=tuple(good),
        port=port,
        service_type=service_type.lower() if service_type else None,
        sip_url=txt.get("sipurl"),
        firmware_url=txt.get("firmwareurl"),
        firmware_version=txt.get("firmwareversion"),
        firmware_files=files,
    )


def uses_mdns(model: Model) -> bool:
    """Whether *model* looks for its server over mDNS (every model except the D80)."""
    return model is not Model.D80


def choose_server(
    servers: Sequence[DiscoveredServer], wanted: str | None, *, timeout: float
) -> DiscoveredServer:
    """The server to use: the one named *wanted*, else the only one found.

    Raises :class:`DiscoveryFailed` for none, for several without a choice (listing them),
    and for a choice that matches none (listing what was found).
    """
    usable = [s for s in servers if s.config_url is not None]
    listing = ", ".join(s.label for s in usable) or "none"
    if wanted:
        chosen = [s for s in usable if s.matches(wanted)]
        if not chosen:
            raise DiscoveryFailed(f"no DPMA server named {wanted!r} answered on "
                                  f"_digiumproxy._udp within {timeout:g} s (found: {listing})",
                                  cause="named server not found")
        return chosen[0]
    if not usable:
        extra = ""
        if servers:
            extra = f" ({len(servers)} firmware-only advertisement(s) ignored)"
        raise DiscoveryFailed(
            f"no DPMA server answered on _digiumproxy._udp within {timeout:g} s{extra}: "
            "give the server with --config-url, or check that it advertises "
            "(service_discovery_enabled=yes) on this network"
        )
    if len(usable) > 1:
        raise DiscoveryFailed(f"{len(usable)} DPMA servers answered: {listing}; choose one "
                              "with --server NAME|ADDRESS", cause="several servers")
    return usable[0]
