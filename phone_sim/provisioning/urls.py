"""The phone's ``config_server_url``, parsed (PROTOCOL-NOTES §2).

Two forms exist:

- ``sip:proxy@server[:port][;transport=udp|tcp|tls]``: DPMA's SIP MESSAGE exchange
  (``proxy`` is a literal user part);
- ``[protocol://][user:pass@]server[:port][/path]`` with ``http`` or ``https`` (``ftp`` and
  ``ftps`` exist on the firmware but phone-sim does not implement them; TFTP is not supported
  by the firmware itself). Without a protocol the URL is taken as ``http``.

>>> parse_config_url("sip:proxy@pbx.example.com:5061;transport=tls").label
'sip:proxy@pbx.example.com:5061;transport=tls'
>>> parse_config_url("https://pbx.example.com/digium").file_url("000fd3010203.cfg")
'https://pbx.example.com/digium/000fd3010203.cfg'
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from phone_sim.account import SipTransport
from phone_sim.errors import UsageError

__all__ = [
    "ConfigUrlError",
    "ConfigUrlUnsupported",
    "HttpConfigUrl",
    "SipConfigUrl",
    "parse_config_url",
]

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,252}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
_SIP = re.compile(
    r"sips?:proxy@(?P<host>\[[0-9A-Fa-f:.]+\]|[^;:\[\]/?]+)(?::(?P<port>[^;]*))?(?P<params>;.*)?",
    re.IGNORECASE,
)


class ConfigUrlError(UsageError):
    """A ``config_server_url`` that cannot be used."""


class ConfigUrlUnsupported(ConfigUrlError):
    """A config URL of a kind phone-sim does not implement (ftp, ftps) or the phone lacks
    (tftp)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SipConfigUrl:
    """``sip:proxy@host:port;transport=...``: configuration over the DPMA MESSAGE exchange."""

    host: str
    """The server's name or address (what the phone dials and checks the certificate
    against)."""
    port: int | None
    """The port; None means the transport's default."""
    transport: SipTransport
    """UDP (the default), TCP or TLS."""

    @property
    def effective_port(self) -> int:
        """The port dialled."""
        return self.port if self.port is not None else self.transport.default_port

    @property
    def label(self) -> str:
        """The URL as the phone stores it in ``config_server_url``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:proxy@{host}:{self.effective_port};transport={self.transport}"

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfigUrl:
    """``http(s)://[user:pass@]host[:port][/path]``: configuration files over HTTP(S)."""

    scheme: str
    """``http`` or ``https``."""
    host: str
    """The server's name or address."""
    port: int | None
    """The port; None means 80 or 443."""
    path: str = ""
    """The directory of the files, without a trailing ``/`` (``""`` for the root)."""
    username: str | None = None
    """HTTP Basic user from the URL, if any."""
    password: str | None = field(default=None, repr=False)
    """HTTP Basic password from the URL; never in ``repr()`` or :attr:`label`."""

    @property
    def tls(self) -> bool:
        """Whether the files come over HTTPS."""
        return self.scheme == "https"

    @property
    def effective_port(self) -> int:
        """The port dialled."""
        if self.port is not None:
            return self.port
        return 443 if self.tls else 80

    @property
    def label(self) -> str:
        """The URL without credentials, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{host}{port}{self.path or '/'}"

    def file_path(self, name: str) -> str:
        """The request target of *name* in the configuration directory."""
        return f"{self.path}/{quote(name)}"

    def file_url(self, name: str) -> str:
        """The full URL of *name* (without credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{host}{port}{self.file_path(name)}"

    def __str__(self) -> str:
        return self.label


ConfigUrl = SipConfigUrl | HttpConfigUrl


def _host(text: str, url: str) -> str:
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ConfigUrlError(f"bad IPv6 address in config URL {url!r}") from None
        return inner
    if not _HOST.fullmatch(text):
        raise ConfigUrlError(f"bad server {text!r} in config URL {url!r}")
    return text


def _port(text: str | None, url: str) -> int | None:
    if text is None or text == "":
        return None
    if not _PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise ConfigUrlError(f"bad port {text!r} in config URL {url!r}: expected 1-65535")
    return int(text)


_USERINFO = re.compile(r"^(?P<head>[A-Za-z]+://[^/@:]*:)[^/@]*@")


def _masked(url: str) -> str:
    # Error messages show the URL, never a password in it.
    return _USERINFO.sub(lambda m: m.group("head") + "***@", url)


def parse_config_url(text: str) -> SipConfigUrl | HttpConfigUrl:
    """Parse a ``config_server_url`` value; :class:`ConfigUrlError` names what is wrong and
    :class:`ConfigUrlUnsupported` says "not supported by phone-sim" for ftp/ftps. A password
    in the URL never appears in an error message."""
    try:
        return _parse(text.strip())
    except ConfigUrlError as exc:
        masked = _masked(text.strip())
        if masked != text.strip():
            raise type(exc)(str(exc).replace(repr(text.strip()), repr(masked))) from None
        raise


def _parse(url: str) -> SipConfigUrl | HttpConfigUrl:
    if not url:
        raise ConfigUrlError("the config server URL is empty")
    if any(ord(c) < 33 or ord(c) > 126 for c in url):
        raise ConfigUrlError(f"config URL {url!r} has spaces or non-ASCII characters")
    lower = url.lower()
    if lower.startswith(("sip:", "sips:")):
        return _parse_sip(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "http", url
    scheme = scheme.lower()
    if scheme in ("ftp", "ftps"):
        raise ConfigUrlUnsupported(
            f"config URL {url!r}: {scheme}:// is not supported by phone-sim "
            "(use http://, https:// or sip:proxy@...)"
        )
    if scheme == "tftp":
        raise ConfigUrlUnsupported(f"config URL {url!r}: the phone does not support TFTP")
    if scheme not in ("http", "https"):
        raise ConfigUrlError(
            f"config URL {url!r}: unknown protocol {scheme!r} (http, https or sip:proxy@...)"
        )
    authority, slash, path = rest.partition("/")
    if "?" in path or "#" in path:
        raise ConfigUrlError(f"config URL {url!r}: a query or fragment is not allowed")
    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user)
        password = unquote(secret) if colon else ""
    port_text: str | None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ConfigUrlError(f"config URL {url!r}: unclosed [")
        host_text, port_text = hostport[: end + 1], hostport[end + 1 :]
        if port_text and not port_text.startswith(":"):
            raise ConfigUrlError(f"config URL {url!r}: junk after the IPv6 address")
        port_text = port_text[1:] if port_text else None
    else:
        host_text, _, port_text = hostport.partition(":")
    path = ("/" + path).rstrip("/") if slash else ""
    return HttpConfigUrl(
        scheme=scheme,
        host=_host(host_text, url),
        port=_port(port_text, url),
        path=path,
        username=username,
        password=password,
    )


def _parse_sip(url: str) -> SipConfigUrl:
    match = _SIP.fullmatch(url)
    if match is None:
        raise ConfigUrlError(
            f"config URL {url!r}: expected sip:proxy@server[:port][;transport=udp|tcp|tls] "
            "(the user part is the literal 'proxy')"
        )
    transport = SipTransport.UDP
    secure = url.lower().startswith("sips:")
    for param in (match.group("params") or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.lower() == "transport":
            try:
                transport = SipTransport.parse(value)
            except UsageError:
                raise ConfigUrlError(
                    f"config URL {url!r}: unknown transport {value!r} (udp, tcp or tls)"
                ) from None
    if secure:
        transport = SipTransport.TLS
    return SipConfigUrl(
        host=_host(match.group("host"), url),
        port=_port(match.group("port"), url),
        transport=transport,
    )
