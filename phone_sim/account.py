"""A SIP account as the phone's XML configuration holds it (PROTOCOL-NOTES §3).

:class:`Account` is one ``<account>`` element: who the phone is (``username``, ``authname``,
``password``), which domain it registers in, and where: ``<host_primary>`` and optionally
``<host_alternate>``, each a :class:`SipHost` with ``server``, ``port``, ``transport``,
``reregister``, ``retry``, ``num_retries`` and ``media_encryption``.

The meaning of ``reregister``, ``retry`` and ``num_retries`` is not public; what phone-sim
does with them is written in ``docs/registration.md`` and implemented in
:mod:`phone_sim.phone.registration`.

The phone XML (``<account>`` inside ``<config>``) is read by
:func:`phone_sim.provisioning.phone_xml.parse_phone_xml`, the one XML path of phone-sim. The
password never appears in ``repr()``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace

from phone_sim.errors import UsageError

__all__ = [
    "Account",
    "AccountError",
    "SipHost",
    "SipTransport",
    "parse_server",
]


class AccountError(UsageError):
    """The account configuration is invalid (a bad port, transport, server...)."""


class SipTransport(enum.Enum):
    """The SIP transport of a host, as ``transport=`` in the XML writes it."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @classmethod
    def parse(cls, text: str) -> SipTransport:
        """``udp``/``tcp``/``tls`` in any case; :class:`AccountError` otherwise."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise AccountError(
                f"unknown SIP transport {text!r}: use udp, tcp or tls"
            ) from None

    @property
    def default_port(self) -> int:
        """5061 for TLS, 5060 otherwise (RFC 3261 19.1.2)."""
        return 5061 if self is SipTransport.TLS else 5060

    @property
    def reliable(self) -> bool:
        """TCP and TLS are connection-oriented."""
        return self is not SipTransport.UDP

    def __str__(self) -> str:
        return self.value


_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+)$"
)
_USER_RE = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,128}$")
_DIGITS_RE = re.compile(r"[0-9]{1,9}")


def _check_host(server: str, what: str) -> str:
    if not server or not _HOST_RE.match(server):
        raise AccountError(f"bad {what} {server!r}: expected a host name or an IP address")
    if ":" not in server:
        # RFC 1035 2.3.4: the resolver refuses these (Python's with a UnicodeError, not the
        # OSError of a name that does not resolve), so say it here, naming the rule.
        if len(server) > 253:
            raise AccountError(f"bad {what} {server[:40]!r}...: a host name has at most 253 "
                               "characters")
        for label in server.split("."):
            if not label:
                raise AccountError(f"bad {what} {server!r}: a host name has no empty label "
                                   "(two dots in a row)")
            if len(label) > 63:
                raise AccountError(f"bad {what} {server!r}: the label {label[:20]!r}... is "
                                   "longer than 63 characters")
    return server.strip("[]") if server.startswith("[") else server


@dataclass(frozen=True, slots=True, kw_only=True)
class SipHost:
    """One registrar the phone may use: ``<host_primary>`` or ``<host_alternate>``."""

    server: str
    """The registrar's host name or IP address (what the phone dials)."""
    port: int | None = None
    """The port; None means the transport's default (5060, 5061 for TLS)."""
    transport: SipTransport = SipTransport.UDP
    """UDP, TCP or TLS."""
    reregister: int = 300
    """The registration period asked for, in seconds (the REGISTER's Expires)."""
    retry: float = 30.0
    """Seconds to wait after a failed registration attempt before the next one."""
    num_retries: int = 3
    """Retries on this host after a failed attempt before failing over to the other host."""
    media_encryption: str | None = None
    """``sdes`` for SRTP with SDES keys; None for plain RTP."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "server", _check_host(self.server, "server"))
        if self.port is not None and not 0 < self.port < 65536:
            raise AccountError(f"port {self.port} out of range (1-65535)")
        if not 0 <= self.reregister <= 2**31 - 1:
            raise AccountError(f"reregister {self.reregister} out of range")
        if not 0 < self.retry <= 86400:
            raise AccountError(f"retry {self.retry} out of range (0 < retry <= 86400 s)")
        if not 0 <= self.num_retries <= 1000:
            raise AccountError(f"num_retries {self.num_retries} out of range (0-1000)")
        if self.media_encryption not in (None, "sdes"):
            raise AccountError(
                f"unknown media_encryption {self.media_encryption!r}: only sdes is known"
            )

    @property
    def effective_port(self) -> int:
        """The port dialled: the configured one or the transport's default."""
        return self.port if self.port is not None else self.transport.default_port

    @property
    def label(self) -> str:
        """``server:port/transport`` for messages."""
        host = f"[{self.server}]" if ":" in self.server else self.server
        return f"{host}:{self.effective_port}/{self.transport}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """One SIP account of the phone (an ``<account>`` element)."""

    username: str
    """The SIP user: the user part of From, To and Contact (``username``/``account_id``)."""
    password: str = field(repr=False)
    """The digest password. Never shown in ``repr()`` or logs."""
    host_primary: SipHost
    """The registrar used first."""
    host_alternate: SipHost | None = None
    """The registrar failed over to when the primary does not answer."""
    authname: str | None = None
    """The digest user name, when it differs from ``username``."""
    domain: str | None = None
    """The SIP domain of From/To/Request-URI; default ``server_name``, else the host."""
    server_name: str | None = None
    """The name the TLS certificate is checked against (and sent as SNI); default the host."""
    index: int = 0
    """The account index (0-5) in the phone's configuration."""
    line_label: str | None = None
    """The label shown on the phone's line key (informational)."""
    caller_id: str | None = None
    """The display name the phone puts in From and Contact (``caller_id``)."""
    enabled: bool = True
    """The line is in use (``status="1"``)."""
    register: bool = True
    """The line registers (``register="1"``); an unregistered line still places calls."""

    def __post_init__(self) -> None:
        if not _USER_RE.match(self.username):
            raise AccountError(f"bad SIP user {self.username!r}")
        if self.authname is not None and (
            not self.authname or any(c in self.authname for c in "\r\n\0\"")
        ):
            raise AccountError(f"bad authname {self.authname!r}")
        if any(c in self.password for c in "\r\n\0"):
            raise AccountError("the password contains a control character")
        if self.domain is not None:
            _check_host(self.domain, "domain")
        if self.server_name is not None:
            _check_host(self.server_name, "server name")
        if not 0 <= self.index <= 5:
            raise AccountError(f"account index {self.index} out of range (0-5)")
        for name in ("line_label", "caller_id"):
            value = getattr(self, name)
            if value is not None and any(c in value for c in '\r\n\0"\\'):
                raise AccountError(f"bad {name} {value!r}: no quotes, backslashes or line breaks")

    @property
    def auth_username(self) -> str:
        """The digest user name: ``authname`` or ``username``."""
        return self.authname or self.username

    def domain_for(self, host: SipHost) -> str:
        """The SIP domain used with *host*: ``domain``, else ``server_name``, else its server."""
        return self.domain or self.server_name or host.server

    def tls_name_for(self, host: SipHost) -> str:
        """The name the certificate of *host* is checked against."""
        return self.server_name or host.server

    @property
    def hosts(self) -> tuple[SipHost, ...]:
        """The primary, then the alternate if any."""
        if self.host_alternate is None:
            return (self.host_primary,)
        return (self.host_primary, self.host_alternate)

    def with_hosts(self, primary: SipHost, alternate: SipHost | None = None) -> Account:
        """A copy with other hosts."""
        return replace(self, host_primary=primary, host_alternate=alternate)


def parse_server(text: str, transport: SipTransport) -> tuple[str, int | None]:
    """Split ``HOST[:PORT]`` (``[v6]:PORT`` for IPv6) as the CLI's ``--server`` takes it."""
    text = text.strip()
    if not text:
        raise AccountError("empty server")
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AccountError(f"bad server {text!r}: unclosed [")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise AccountError(f"bad server {text!r}")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p, text)
    else:
        host = text
    _check_host(host, "server")
    del transport
    return host, port


def _port(text: str, whole: str) -> int:
    if _DIGITS_RE.fullmatch(text) is None or not 0 < int(text) < 65536:
        raise AccountError(f"bad port in {whole!r}: expected 1-65535")
    return int(text)
