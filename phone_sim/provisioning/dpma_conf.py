"""The old-style ``res_digium_phone.conf`` (PROTOCOL-NOTES §4) as typed, checked data.

:func:`read_dpma_conf` reads the file (Asterisk syntax, :mod:`.asterisk_conf`) and a
``pjsip.conf`` if given; :func:`load_dpma_conf` does the same from parsed files. Every
section needs a ``type``: ``network``, ``line``, ``phone`` or ``firmware``; ``[general]`` is
the module's own. An option phone-sim does not honour is not an error (a real DPMA file has
many: BLF keys, ringtones, logos...): it is listed in :attr:`DpmaConf.notes` with its file and
line, which the lab prints, so a typo shows.

A line's password is where Asterisk keeps it: the ``type=auth`` section that the
``pjsip.conf`` endpoint of the same name points at (``auth=``), else a ``type=auth`` section
named after the line; else the lab's ``--user`` accounts (``passwords``). A line with none
is an error naming the line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from phone_sim.account import AccountError, SipTransport
from phone_sim.firmware import FirmwareError, FirmwareVersion, Model
from phone_sim.phone.config import PhoneConfigError, normalize_mac
from phone_sim.provisioning.asterisk_conf import (
    AsteriskConf,
    ConfError,
    ConfOption,
    ConfSection,
    read_asterisk_conf,
)

__all__ = [
    "CONFIG_AUTH_MODES",
    "DpmaConf",
    "DpmaFirmware",
    "DpmaGeneral",
    "DpmaLine",
    "DpmaNetwork",
    "DpmaPhone",
    "load_dpma_conf",
    "read_dpma_conf",
]

CONFIG_AUTH_MODES = ("disabled", "mac", "pin", "globalpin")
_USERLIST_AUTH = ("disabled", "globalpin")
_UINT = re.compile(r"[0-9]{1,9}")
_PIN = re.compile(r"[0-9*#]{1,32}")
_TRUE = {"yes", "true", "y", "t", "1", "on"}
_FALSE = {"no", "false", "n", "f", "0", "off"}

_GENERAL = {"globalpin", "userlist_auth", "config_auth", "mdns_address", "mdns_port",
            "mdns_transport", "service_name", "service_discovery_enabled", "file_directory"}
_NETWORK = {"type", "alias", "cidr", "registration_address", "registration_port", "transport",
            "file_url_prefix", "alternate_registration_address",
            "alternate_registration_port", "alternate_registration_transport", "ntp_server",
            "network_vlan_discovery_mode", "sip_dscp", "rtp_dscp"}
_LINE = {"type", "line_label", "digit_map", "transport", "media_encryption",
         "reregistration_timeout", "registration_retry_interval", "registration_max_retries",
         "mailbox"}
_PHONE = {"type", "full_name", "mac", "pin", "line", "network", "firmware", "contact",
          "timezone"}
_FIRMWARE = {"type", "model", "version", "file", "public_firmware_url"}



@dataclass(frozen=True, slots=True, kw_only=True)
class DpmaGeneral:
    """``[general]``."""

    globalpin: str | None = field(default=None, repr=False)
    """The global PIN (``config_auth=globalpin``); never in ``repr()``."""
    userlist_auth: str = "disabled"
    """``disabled`` or ``globalpin`` (read, not used: phone-sim has no user list)."""
    config_auth: str = "disabled"
    """``disabled``, ``mac``, ``pin`` or ``globalpin``: how a phone proves itself."""
    mdns_address: str | None = None
    """The address advertised in ``sipUrl``; None: the server's own."""
    mdns_port: int | None = None
    """The port advertised (SRV and ``sipUrl``); None: the server's own for the transport."""
    mdns_transport: SipTransport = SipTransport.UDP
    """The transport advertised (empty means udp)."""
    service_name: str = "Asterisk"
    """The mDNS instance name."""
    service_discovery_enabled: bool = True
    """Advertise over mDNS at all."""
    file_directory: str | None = None
    """Where DPMA keeps files (read, not used)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DpmaNetwork:
    """A ``type=network`` section."""

    name: str
    """The section name."""
    cidr: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    """The phone addresses it serves (default: every address)."""
    alias: str | None = None
    """A human name."""
    registration_address: str | None = None
    """Where the phones register; None: the server itself."""
    registration_port: int | None = None
    """The registration port; None: the server's own for the transport."""
    transport: SipTransport | None = None
    """The network's transport (a line's ``transport`` overrides it); None: udp."""
    alternate_registration_address: str | None = None
    """The alternate registrar (``host_alternate``)."""
    alternate_registration_port: int | None = None
    """Its port."""
    alternate_registration_transport: SipTransport | None = None
    """Its transport (default: the primary's)."""
    file_url_prefix: str | None = None
    """Base URL of firmware and other files."""
    ntp_server: str | None = None
    """Passed to the phone as the ``ntp_server`` setting."""

    def contains(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int | None:
        """The prefix length of the most specific ``cidr`` containing *address*, or None."""
        lengths = [n.prefixlen for n in self.cidr if n.version == address.version
                   and address in n]
        return max(lengths) if lengths else None


@dataclass(frozen=True, slots=True, kw_only=True)
class DpmaLine:
    """A ``type=line`` section; its name is the PJSIP endpoint (the SIP user)."""

    name: str
    """The section name: the SIP user."""
    password: str = field(repr=False)
    """The digest password (from pjsip.conf or the lab's users); never in ``repr()``."""
    authname: str | None = None
    """The digest user name: the auth section's ``username``; None: the line's name."""
    line_label: str | None = None
    """The label on the line key."""
    digit_map: str | None = None
    """The dial plan (written as ``dial_plan``)."""
    transport: SipTransport | None = None
    """Overrides the network's transport."""
    media_encryption: str | None = None
    """``sdes`` for SDES-SRTP."""
    reregistration_timeout: int | None = None
    """``reregister`` in seconds."""
    registration_retry_interval: int | None = None
    """``retry`` in seconds."""
    registration_max_retries: int | None = None
    """``num_retries``."""
    mailbox: str | None = None
    """The voicemail box (written as ``voicemail``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DpmaFirmware:
    """A ``type=firmware`` section (or one named ``<Model>-<version>`` in ``firmware=``)."""

    name: str
    """The section name."""
    model: Model
    """The model it is for."""
    version: FirmwareVersion
    """Its version."""
    file: str | None = None
    """The image's file name, under the network's ``file_url_prefix``."""
    public_firmware_url: str | None = None
    """A full URL, used instead of ``file_url_prefix`` + ``file``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DpmaPhone:
    """A ``type=phone`` section."""

    name: str
    """The section name."""
    lines: tuple[str, ...]
    """``line=`` values in order; the first is the primary."""
    mac: str | None = None
    """The MAC, 12 lower-case hex digits."""
    pin: str | None = field(default=None, repr=False)
    """The phone's PIN (``config_auth=pin``); never in ``repr()``."""
    full_name: str | None = None
    """The user's name."""
    networks: tuple[str, ...] = ()
    """``network=`` values: the networks it may use (default: all)."""
    firmwares: tuple[str, ...] = ()
    """``firmware=`` values: the firmware sections offered to it."""
    contacts: tuple[str, ...] = ()
    """``contact=`` values (read, not served)."""
    timezone: str | None = None
    """Passed as the ``time_zone`` setting."""


@dataclass(frozen=True, kw_only=True)
class DpmaConf:
    """A whole ``res_digium_phone.conf``."""

    file: str
    """The file it came from."""
    general: DpmaGeneral
    """``[general]``."""
    networks: tuple[DpmaNetwork, ...]
    """Networks in file order."""
    lines: Mapping[str, DpmaLine]
    """Lines by name."""
    phones: tuple[DpmaPhone, ...]
    """Phones in file order."""
    firmwares: Mapping[str, DpmaFirmware]
    """Firmware sections by name."""
    notes: tuple[str, ...] = ()
    """Options read but not honoured, ``file:line: option ...`` (typos show here)."""

    def phone_by_mac(self, mac: str) -> DpmaPhone | None:
        """The phone whose ``mac`` is *mac* (any notation), or None."""
        try:
            wanted = normalize_mac(mac)
        except PhoneConfigError:
            return None
        return next((p for p in self.phones if p.mac == wanted), None)

    def network_for(
        self, phone: DpmaPhone, address: str
    ) -> DpmaNetwork | None:
        """The network for *phone* at *address*: among its ``network=`` (else all), the one
        whose ``cidr`` contains the address most specifically (the first on a tie)."""
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return None
        candidates = [n for n in self.networks if not phone.networks or n.name in phone.networks]
        best: DpmaNetwork | None = None
        best_len = -1
        for network in candidates:
            length = network.contains(ip)
            if length is not None and length > best_len:
                best, best_len = network, length
        return best


# --------------------------------------------------------------------------------------------


_Notes = list[tuple[str, int, str]]


def _check_known(section: ConfSection, known: set[str], what: str, notes: _Notes) -> None:
    for option in section.options:
        if option.name.lower() not in known:
            note = (option.file, option.line, f"{option.file}:{option.line}: option "
                    f"{option.name!r} ({what}) is not used by phone-sim")
            if note not in notes:  # once, however many sections inherit it
                notes.append(note)


def _uint(option: ConfOption | None, low: int = 0, high: int = 2**31 - 1) -> int | None:
    if option is None or option.value == "":
        return None
    if not _UINT.fullmatch(option.value) or not low <= int(option.value) <= high:
        raise option.error(f"{option.value!r} is not a whole number in {low}-{high}")
    return int(option.value)


def _bool(option: ConfOption | None, default: bool) -> bool:
    if option is None or option.value == "":
        return default
    value = option.value.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise option.error(f"{option.value!r} is not yes or no")


def _transport(option: ConfOption | None) -> SipTransport | None:
    if option is None or option.value == "":
        return None
    try:
        return SipTransport.parse(option.value)
    except AccountError:
        raise option.error(f"{option.value!r}: expected udp, tcp or tls") from None


def _choice(option: ConfOption | None, choices: tuple[str, ...], default: str) -> str:
    if option is None or option.value == "":
        return default
    value = option.value.lower()
    if value not in choices:
        raise option.error(f"{option.value!r}: expected one of {', '.join(choices)}")
    return value


def _host(option: ConfOption | None) -> str | None:
    if option is None or option.value == "":
        return None
    value = option.value.strip("[]")
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?", value):
        raise option.error(f"{option.value!r} is not a host name or an IP address")
    return value


def _general(section: ConfSection | None, notes: _Notes) -> DpmaGeneral:
    if section is None:
        return DpmaGeneral()
    _check_known(section, _GENERAL, "[general]", notes)
    pin = section.get("globalpin")
    if pin is not None and pin.value and not _PIN.fullmatch(pin.value):
        raise pin.error("a PIN is digits (and * or #)")
    general = DpmaGeneral(
        globalpin=pin.value if pin is not None and pin.value else None,
        userlist_auth=_choice(section.get("userlist_auth"), _USERLIST_AUTH, "disabled"),
        config_auth=_choice(section.get("config_auth"), CONFIG_AUTH_MODES, "disabled"),
        mdns_address=_host(section.get("mdns_address")),
        mdns_port=_uint(section.get("mdns_port"), 1, 65535),
        mdns_transport=_transport(section.get("mdns_transport")) or SipTransport.UDP,
        service_name=section.value("service_name", "Asterisk") or "Asterisk",
        service_discovery_enabled=_bool(section.get("service_discovery_enabled"), True),
        file_directory=section.value("file_directory"),
    )
    if general.config_auth == "globalpin" and general.globalpin is None:
        auth_option = section.get("config_auth")
        assert auth_option is not None
        raise auth_option.error("config_auth=globalpin needs globalpin= in [general]")
    return general


def _network(section: ConfSection, notes: _Notes) -> DpmaNetwork:
    _check_known(section, _NETWORK, "network", notes)
    cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for option in section.get_all("cidr"):
        for item in option.value.split(","):
            try:
                cidrs.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise option.error(f"{item.strip()!r} is not an address/prefix") from None
    if not cidrs:
        cidrs = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    return DpmaNetwork(
        name=section.name,
        cidr=tuple(cidrs),
        alias=section.value("alias"),
        registration_address=_host(section.get("registration_address")),
        registration_port=_uint(section.get("registration_port"), 1, 65535),
        transport=_transport(section.get("transport")),
        alternate_registration_address=_host(section.get("alternate_registration_address")),
        alternate_registration_port=_uint(section.get("alternate_registration_port"), 1,
                                          65535),
        alternate_registration_transport=_transport(
            section.get("alternate_registration_transport")),
        file_url_prefix=section.value("file_url_prefix"),
        ntp_server=section.value("ntp_server"),
    )


def _firmware(section: ConfSection, notes: _Notes) -> DpmaFirmware:
    _check_known(section, _FIRMWARE, "firmware", notes)
    model_opt = section.get("model")
    version_opt = section.get("version")
    if model_opt is None or version_opt is None:
        raise section.error("a type=firmware section needs model= and version=")
    try:
        model = Model.parse(model_opt.value)
    except FirmwareError as exc:
        raise model_opt.error(str(exc)) from None
    try:
        version = FirmwareVersion.parse(version_opt.value)
    except FirmwareError as exc:
        raise version_opt.error(str(exc)) from None
    return DpmaFirmware(name=section.name, model=model, version=version,
                        file=section.value("file"),
                        public_firmware_url=section.value("public_firmware_url"))


def _line(
    section: ConfSection, auth: tuple[str, str | None] | None, notes: _Notes
) -> DpmaLine:
    _check_known(section, _LINE, "line", notes)
    encryption = section.get("media_encryption")
    media: str | None = None
    if encryption is not None and encryption.value:
        value = encryption.value.lower()
        if value == "sdes":
            media = "sdes"
        elif value not in ("no", "none"):
            raise encryption.error(f"{encryption.value!r}: phones support sdes (or no)")
    if auth is None:
        raise section.error(
            "no password for this line: give --pjsip pjsip.conf with an auth section for "
            f"endpoint {section.name!r}, or a lab account --user {section.name}:PASSWORD"
        )
    password, authname = auth
    return DpmaLine(
        name=section.name,
        password=password,
        authname=authname or None,
        line_label=section.value("line_label"),
        digit_map=section.value("digit_map"),
        transport=_transport(section.get("transport")),
        media_encryption=media,
        reregistration_timeout=_uint(section.get("reregistration_timeout"), 0, 86400),
        registration_retry_interval=_uint(section.get("registration_retry_interval"), 1, 86400),
        registration_max_retries=_uint(section.get("registration_max_retries"), 0, 1000),
        mailbox=section.value("mailbox"),
    )


def _phone(section: ConfSection, notes: _Notes) -> DpmaPhone:
    _check_known(section, _PHONE, "phone", notes)
    mac_opt = section.get("mac")
    mac: str | None = None
    if mac_opt is not None and mac_opt.value:
        try:
            mac = normalize_mac(mac_opt.value)
        except PhoneConfigError as exc:
            raise mac_opt.error(str(exc)) from None
    pin_opt = section.get("pin")
    if pin_opt is not None and pin_opt.value and not _PIN.fullmatch(pin_opt.value):
        raise pin_opt.error("a PIN is digits (and * or #)")
    lines = tuple(o.value for o in section.get_all("line") if o.value)
    if not lines:
        raise section.error("a type=phone section needs at least one line=")
    return DpmaPhone(
        name=section.name,
        lines=lines,
        mac=mac,
        pin=pin_opt.value if pin_opt is not None and pin_opt.value else None,
        full_name=section.value("full_name"),
        networks=tuple(o.value for o in section.get_all("network") if o.value),
        firmwares=tuple(o.value for o in section.get_all("firmware") if o.value),
        contacts=tuple(o.value for o in section.get_all("contact") if o.value),
        timezone=section.value("timezone"),
    )


def _pjsip_auth(pjsip: AsteriskConf | None, line: str) -> tuple[str, str | None] | None:
    if pjsip is None:
        return None
    names: list[str] = []
    for section in pjsip.named(line):
        if (section.value("type") or "").lower() == "endpoint":
            for option in section.get_all("auth") + section.get_all("outbound_auth"):
                names += [n.strip() for n in option.value.split(",") if n.strip()]
    names.append(line)
    for name in names:
        for section in pjsip.named(name):
            if (section.value("type") or "").lower() != "auth":
                continue
            auth_type = (section.value("auth_type") or "userpass").lower()
            password = section.value("password")
            if auth_type in ("userpass", "digest") and password is not None:
                return password, section.value("username")
    return None


def load_dpma_conf(
    conf: AsteriskConf,
    *,
    pjsip: AsteriskConf | None = None,
    passwords: Mapping[str, str] | None = None,
) -> DpmaConf:
    """Check and type *conf*; passwords come from *pjsip* (auth sections) or *passwords*
    (the lab's ``--user`` accounts, by user name)."""
    general_section: ConfSection | None = None
    notes: _Notes = []
    networks: list[DpmaNetwork] = []
    line_sections: list[ConfSection] = []
    phone_sections: list[ConfSection] = []
    firmwares: dict[str, DpmaFirmware] = {}
    seen: dict[str, ConfSection] = {}
    for section in conf.sections:
        key = section.name.lower()
        if key == "general":
            if general_section is not None:
                raise section.error("[general] appears twice: use [general](+) to add to it")
            general_section = section
            continue
        if key in seen:
            first = seen[key]
            raise section.error(f"defined twice (first at {first.file}:{first.line})")
        seen[key] = section
        type_opt = section.get("type")
        if type_opt is None or not type_opt.value:
            raise section.error("no type= (network, line, phone or firmware)")
        kind = type_opt.value.lower()
        if kind == "network":
            networks.append(_network(section, notes))
        elif kind == "line":
            line_sections.append(section)
        elif kind == "phone":
            phone_sections.append(section)
        elif kind == "firmware":
            fw = _firmware(section, notes)
            firmwares[fw.name] = fw
        else:
            raise type_opt.error(f"unknown type {type_opt.value!r} "
                                 "(network, line, phone or firmware)")
    lines: dict[str, DpmaLine] = {}
    users = dict(passwords or {})
    for section in line_sections:
        auth = _pjsip_auth(pjsip, section.name)
        if auth is None and section.name in users:
            auth = (users[section.name], None)
        lines[section.name] = _line(section, auth, notes)
    phones = [_phone(s, notes) for s in phone_sections]
    network_names = {n.name for n in networks}
    macs: dict[str, str] = {}
    for phone, section in zip(phones, phone_sections, strict=True):
        for option in section.get_all("line"):
            if option.value and option.value not in lines:
                raise option.error(f"no type=line section [{option.value}]")
        for option in section.get_all("network"):
            if option.value and option.value not in network_names:
                raise option.error(f"no type=network section [{option.value}]")
        for option in section.get_all("firmware"):
            if option.value and option.value not in firmwares:
                implicit = _implicit_firmware(option)
                firmwares[implicit.name] = implicit
        if phone.mac is not None:
            if phone.mac in macs:
                mac_option = section.get("mac")
                assert mac_option is not None
                raise mac_option.error(f"MAC {phone.mac} is also phone [{macs[phone.mac]}]'s")
            macs[phone.mac] = phone.name
    general = _general(general_section, notes)
    if general.config_auth in ("mac", "pin"):
        for phone, section in zip(phones, phone_sections, strict=True):
            if general.config_auth == "mac" and phone.mac is None:
                raise section.error("config_auth=mac: this phone needs mac=")
            if general.config_auth == "pin" and phone.pin is None:
                raise section.error("config_auth=pin: this phone needs pin=")
    return DpmaConf(file=conf.file, general=general, networks=tuple(networks), lines=lines,
                    phones=tuple(phones), firmwares=firmwares,
                    notes=tuple(text for _file, _line, text in sorted(notes)))


def _implicit_firmware(option: ConfOption) -> DpmaFirmware:
    # ``firmware=D65-2_9_22`` without a section of that name: the value names the image.
    model_text, dash, version_text = option.value.partition("-")
    if not dash:
        raise option.error(f"no type=firmware section [{option.value}] (or write "
                           "<Model>-<version>, e.g. D65-2_9_22)")
    try:
        return DpmaFirmware(name=option.value, model=Model.parse(model_text),
                            version=FirmwareVersion.parse(version_text))
    except FirmwareError as exc:
        raise option.error(str(exc)) from None


def read_dpma_conf(
    path: str | os.PathLike[str],
    *,
    pjsip: str | os.PathLike[str] | None = None,
    passwords: Mapping[str, str] | None = None,
) -> DpmaConf:
    """Read ``res_digium_phone.conf`` at *path* (and *pjsip*, a ``pjsip.conf``)."""
    conf = read_asterisk_conf(path)
    pjsip_conf = read_asterisk_conf(pjsip) if pjsip is not None else None
    return load_dpma_conf(conf, pjsip=pjsip_conf, passwords=passwords)


__all__ += ["ConfError"]
