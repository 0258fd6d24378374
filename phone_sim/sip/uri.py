"""SIP, SIPS and other URIs (RFC 3261 19.1 and 25.1, RFC 3966 for ``tel:``).

A :class:`SipUri` is immutable. User, password, parameter names and values and URI headers
are stored *unescaped*; :meth:`SipUri.__str__` escapes exactly the characters the grammar
does not allow in each part, so a URI written with minimal escaping comes back unchanged and
``sip:%75ser@host`` compares equal to ``sip:user@host`` (RFC 3261 19.1.4).

Schemes other than ``sip``, ``sips`` and ``tel`` are kept as an opaque string, so a
Request-URI such as ``soap.beep://192.0.2.103:3002`` parses and the request validator can
answer 416 (RFC 4475 3.3.6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from phone_sim.sip.limits import SipParseError

__all__ = ["SipUri", "escape", "unescape"]

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_UNRESERVED = _ALNUM + "-_.!~*'()"
#: RFC 3261 25.1: characters allowed unescaped in each URI component.
USER_CHARS = frozenset(_UNRESERVED + "&=+$,;?/")
PASSWORD_CHARS = frozenset(_UNRESERVED + "&=+$,")
PARAM_CHARS = frozenset(_UNRESERVED + "[]/:&+$")
HEADER_CHARS = frozenset(_UNRESERVED + "[]/?:+$")

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
# Characters no URI may contain unescaped (RFC 3986 / RFC 3261 25.1).
_BAD_URI_CHAR_RE = re.compile(r'[\x00-\x20\x7f<>"\\^`{|}]')
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_\-.]*[A-Za-z0-9.])?\Z")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
_FAST_SIP_RE = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)(?::([A-Za-z0-9\-_.!~*'()&=+$,]*))?@)?"
    r"([A-Za-z0-9](?:[A-Za-z0-9_\-.]*[A-Za-z0-9.])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+)?)*)\Z"
)
_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PERCENT_RE = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


_PASSWORD_RE = re.compile(r"\A(sips?:[^:@;?]*:)[^@]*@", re.IGNORECASE)


def _shown(text: str) -> str:
    """``text`` for an error message: password masked, at most 100 characters."""
    text = _PASSWORD_RE.sub(r"\1***@", text)
    return repr(text if len(text) <= 100 else text[:100] + "...")


def unescape(text: str, what: str = "URI") -> str:
    """Decode ``%XX`` escapes (as UTF-8 octets; invalid UTF-8 is kept byte for byte)."""
    if "%" not in text:
        return text
    if _ESCAPE_RE.search(text):
        shown = "" if what == "password" else f" {_shown(text)}"
        raise SipParseError(f"bad %-escape in {what}{shown}")
    return _PERCENT_RE.sub(
        lambda m: bytes.fromhex(m.group(0).replace("%", "")).decode("utf-8", "surrogateescape"),
        text,
    )


def escape(text: str, allowed: frozenset[str]) -> str:
    """Escape every character of ``text`` not in ``allowed`` as ``%XX`` of its UTF-8 octets."""
    if allowed.issuperset(text):  # in C, not a generator per character
        return text
    out: list[str] = []
    for c in text:
        if c in allowed:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
    return "".join(out)


Params = tuple[tuple[str, str | None], ...]

#: RFC 3261 19.1.4: parameters that must match when either URI carries them.
_STRICT_PARAMS = frozenset({"user", "ttl", "method", "maddr", "transport"})


def _find_param(params: Params, name: str) -> tuple[bool, str | None]:
    low = name.lower()
    for key, value in params:
        if key.lower() == low:
            return True, value
    return False, None


def _set_param(params: Params, name: str, value: str | None) -> Params:
    """``params`` with ``name`` set: in place of the first one present, else appended."""
    low = name.lower()
    out: list[tuple[str, str | None]] = []
    done = False
    for key, old in params:
        if key.lower() != low:
            out.append((key, old))
        elif not done:
            out.append((key, value))
            done = True
    if not done:
        out.append((name, value))
    return tuple(out)


def check_host(host: str, what: str = "host") -> str:
    """Validate a hostname, IPv4 address or bracketed IPv6 reference; return it."""
    if not host:
        raise SipParseError(f"missing host in {what}")
    if host.startswith("["):
        if not _IPV6_RE.match(host):
            raise SipParseError(f"bad IPv6 reference {host!r} in {what}")
    elif not _HOSTNAME_RE.match(host):
        raise SipParseError(f"bad host {host!r} in {what}")
    return host


def parse_port(text: str, what: str = "port") -> int:
    """Parse a port number (0-65535)."""
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535:
        raise SipParseError(f"bad {what} {_shown(text)}")
    return int(text)


def split_hostport(text: str, what: str = "hostport") -> tuple[str, int | None]:
    """Split ``host[:port]`` with IPv6 references in brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what} {_shown(text)}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {what} {_shown(text)}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
    check_host(host, what)
    return host, (
        parse_port(port_text, f"port in {what} {_shown(text)}") if port_text is not None else None
    )


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI, a ``tel:`` URI, or another absolute URI kept opaque."""

    #: The scheme, lower case: ``sip``, ``sips``, ``tel`` or anything else.
    scheme: str = "sip"
    #: The user part, unescaped (for ``tel:`` the number); ``None`` when absent.
    user: str | None = None
    #: The password, unescaped; ``None`` when absent. Never logged by phone-sim.
    password: str | None = None
    #: Host name, IPv4 address or IPv6 reference in brackets (``[2001:db8::1]``).
    host: str = ""
    #: The port, or ``None`` for the scheme's default.
    port: int | None = None
    #: URI parameters in wire order, unescaped; a flag parameter has the value ``None``.
    params: Params = ()
    #: URI headers (``?name=value&...``) in wire order, unescaped.
    headers: tuple[tuple[str, str], ...] = ()
    #: For schemes other than sip/sips/tel: everything after the colon, verbatim.
    opaque: str | None = None

    def __post_init__(self) -> None:
        if self.scheme != self.scheme.lower():
            object.__setattr__(self, "scheme", self.scheme.lower())
        if ":" in self.host and not self.host.startswith("["):
            object.__setattr__(self, "host", f"[{self.host}]")

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse an absolute URI; raise :class:`SipParseError` naming what is wrong."""
        m = _FAST_SIP_RE.match(text)
        if m is not None:
            # The common case (no escapes, no URI headers, lower-case scheme), in one regex
            # that accepts a subset of what the general path below accepts.
            port_text = m[5]
            port = int(port_text) if port_text is not None else None
            if port is None or port <= 65535:
                ptext = m[6]
                params: Params = ()
                if ptext:
                    params = tuple(
                        (name, value if eq else None)
                        for name, eq, value in (p.partition("=") for p in ptext[1:].split(";"))
                    )
                return cls(m[1], m[2], m[3], m[4], port, params)
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> SipUri:
        if not text:
            raise SipParseError("empty URI")
        bad = _BAD_URI_CHAR_RE.search(text)
        if bad:
            raise SipParseError(f"illegal character {bad.group(0)!r} in URI {_shown(text)}")
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME_RE.match(scheme):
            raise SipParseError(f"URI without a valid scheme: {_shown(text)}")
        scheme = scheme.lower()
        if scheme in ("sip", "sips"):
            return cls._parse_sip(scheme, rest, text)
        if scheme == "tel":
            number, _, ptext = rest.partition(";")
            if not number:
                raise SipParseError(f"tel URI without a number: {_shown(text)}")
            return cls(scheme="tel", user=unescape(number), params=_parse_uri_params(ptext, text))
        if not rest:
            raise SipParseError(f"empty URI after scheme: {_shown(text)}")
        return cls(scheme=scheme, opaque=rest)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str, text: str) -> SipUri:
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            if "@" in rest:
                raise SipParseError(f"more than one '@' in URI {_shown(text)}")
            u, colon, p = userinfo.partition(":")
            if not u:
                raise SipParseError(f"empty user part in URI {_shown(text)}")
            user = unescape(u, "user part")
            password = unescape(p, "password") if colon else None
        rest, qmark, htext = rest.partition("?")
        hostport, semi, ptext = rest.partition(";")
        host, port = split_hostport(hostport, f"URI {_shown(text)}")
        headers: tuple[tuple[str, str], ...] = ()
        if qmark:
            items = []
            for item in htext.split("&"):
                name, eq, value = item.partition("=")
                if not name or not eq:
                    raise SipParseError(f"bad URI header {item!r} in {_shown(text)}")
                items.append((unescape(name), unescape(value)))
            headers = tuple(items)
        if semi and not ptext:
            raise SipParseError(f"empty parameter in URI {_shown(text)}")
        params = _parse_uri_params(ptext, text)
        return cls(scheme, user, password, host, port, params, headers)

    # -- convenience -------------------------------------------------------------------------

    def param(self, name: str, default: str | None = None) -> str | None:
        """The value of parameter ``name`` (case-insensitive); ``default`` if absent.

        A flag parameter (``;lr``) has the value ``None``; use :meth:`has_param` for it.
        """
        found, value = _find_param(self.params, name)
        return value if found else default

    def has_param(self, name: str) -> bool:
        """Whether parameter ``name`` is present (case-insensitive)."""
        return _find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        """A copy with parameter ``name`` set (replacing any existing one)."""
        return replace(self, params=_set_param(self.params, name, value))

    def without_param(self, name: str) -> SipUri:
        """A copy without parameter ``name``."""
        low = name.lower()
        return replace(self, params=tuple(p for p in self.params if p[0].lower() != low))

    def equivalent(self, other: SipUri) -> bool:
        """URI comparison of RFC 3261 19.1.4 (``==`` compares the fields exactly).

        User and password compare case-sensitively (after unescaping), the host
        case-insensitively; a default port never equals an explicit one; ``user``, ``ttl``,
        ``method``, ``maddr`` and ``transport`` must match when either URI has them; other
        parameters only when both have them; URI headers must all match.
        """
        if self.opaque is not None or other.opaque is not None:
            return (self.scheme, self.opaque) == (other.scheme, other.opaque)
        if (self.scheme, self.user, self.password, self.port) != (
            other.scheme,
            other.user,
            other.password,
            other.port,
        ):
            return False
        if self.host.lower() != other.host.lower():
            return False
        mine = {k.lower(): v for k, v in self.params}
        theirs = {k.lower(): v for k, v in other.params}
        for name in mine.keys() | theirs.keys():
            in_both = name in mine and name in theirs
            if name in _STRICT_PARAMS and not in_both:
                return False
            if in_both:
                a, b = mine[name], theirs[name]
                if (a is None) != (b is None) or (a or "").lower() != (b or "").lower():
                    return False
        return {(k.lower(), v) for k, v in self.headers} == {
            (k.lower(), v) for k, v in other.headers
        }

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower case, or ``None``."""
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def host_address(self) -> str:
        """The host without IPv6 brackets, as a socket API wants it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def is_secure(self) -> bool:
        """Whether this is a ``sips:`` URI."""
        return self.scheme == "sips"

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(escape(self.user or "", PARAM_CHARS | {"+"}))
        else:
            if self.user is not None:
                parts.append(escape(self.user, USER_CHARS))
                if self.password is not None:
                    parts.append(":")
                    parts.append(escape(self.password, PASSWORD_CHARS))
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts.append(f":{self.port}")
        for name, value in self.params:
            parts.append(";" + escape(name, PARAM_CHARS))
            if value is not None:
                parts.append("=" + escape(value, PARAM_CHARS))
        if self.headers:
            parts.append("?")
            parts.append(
                "&".join(
                    f"{escape(n, HEADER_CHARS)}={escape(v, HEADER_CHARS)}" for n, v in self.headers
                )
            )
        return "".join(parts)

    def __repr__(self) -> str:
        # The password never reaches a log or a repr.
        shown = self if self.password is None else replace(self, password="***")  # noqa: S106
        return f"SipUri({str(shown)!r})"


def _parse_uri_params(ptext: str, text: str) -> Params:
    if not ptext:
        return ()
    params: list[tuple[str, str | None]] = []
    for item in ptext.split(";"):
        name, eq, value = item.partition("=")
        if not name:
            raise SipParseError(f"empty parameter in URI {_shown(text)}")
        if eq and not value:
            raise SipParseError(f"parameter {name!r} with empty value in URI {_shown(text)}")
        params.append(
            (unescape(name, "URI parameter"), unescape(value, "URI parameter") if eq else None)
        )
    return tuple(params)
