"""SIP header fields: the ordered multi-dict and the structured values (RFC 3261 7.3, 20, 25).

:class:`Headers` keeps header fields in wire order as ``(name, value)`` text pairs, one per
header line. Names are canonicalised when stored (``v`` and ``VIA`` become ``Via``; unknown
names keep their spelling) and looked up case-insensitively. Values are kept verbatim apart
from unfolding and the trimming of surrounding whitespace, so a canonical message serializes
back byte for byte. For the header fields whose grammar is a comma list, :meth:`Headers.get_all`
splits values on commas outside quotes and angle brackets.

Structured values (:class:`NameAddr`, :class:`Via`, :class:`CSeq`) are immutable and parsed
on demand; :meth:`Headers.parsed` caches them until the headers change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from phone_sim.errors import UsageError
from phone_sim.sip.limits import MAX_CSEQ, MAX_DELTA_SECONDS, MAX_FORWARDS_LIMIT, SipParseError
from phone_sim.sip.uri import Params, SipUri, _find_param, _set_param, split_hostport

__all__ = [
    "CSeq",
    "HeaderValueError",
    "Headers",
    "NameAddr",
    "Via",
    "canonical_name",
    "parse_date",
    "parse_delta_seconds",
    "parse_max_forwards",
    "split_commas",
]

T = TypeVar("T")

#: RFC 3261 7.3.3 and the IANA registry: compact form -> full name.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version",
    "Organization", "Path", "P-Asserted-Identity", "P-Preferred-Identity", "Priority",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
)  # fmt: skip
_CANONICAL: dict[str, str] = {n.lower(): n for n in _KNOWN_NAMES}
_CANONICAL.update(COMPACT_FORMS)

#: Header fields whose grammar is a comma-separated list (RFC 3261 7.3.1 allows splitting).
LIST_HEADERS = frozenset(
    n.lower()
    for n in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info",
        "In-Reply-To", "Path", "P-Asserted-Identity", "Proxy-Require", "Reason",
        "Record-Route", "Require", "Route", "Service-Route", "Supported", "Unsupported", "Via",
        "Warning", "Accept-Contact", "Reject-Contact", "Request-Disposition", "Security-Client",
        "Security-Server", "Security-Verify", "Resource-Priority", "Accept-Resource-Priority",
        "P-Associated-URI", "History-Info", "Diversion", "Permission-Missing", "Trigger-Consent",
        "Policy-Contact",
    )
)  # fmt: skip

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
# gen-value = token / host / quoted-string: a token run plus IPv6 reference characters.
_GEN_VALUE_CHARS = _TOKEN_CHARS | frozenset("[]:")
_WS = " \t"


class HeaderValueError(UsageError, ValueError):
    """A header name or value given to :class:`Headers` cannot be sent (e.g. contains CR/LF)."""


def canonical_name(name: str) -> str:
    """The canonical spelling of header ``name``: compact forms expanded, known names cased."""
    return _CANONICAL.get(name.lower(), name)


# Lookup keys (lower-case canonical names) by name as asked; bounded like any memo fed by
# peers.
_KEYS: dict[str, str] = {}
_KEYS_SIZE = 1024


def header_key(name: str) -> str:
    """The lookup key of header ``name``: its canonical name in lower case."""
    key = _KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_KEYS) < _KEYS_SIZE:
            _KEYS[name] = key
    return key


def is_token(text: str) -> bool:
    """Whether ``text`` is a non-empty RFC 3261 token."""
    return _TOKEN_RE.match(text) is not None


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quoted strings and angle brackets.

    Elements are stripped; empty elements are dropped (RFC 7230 7 list leniency).
    """
    if "," not in value:
        value = value.strip(_WS)
        return [value] if value else []
    if '"' not in value and "<" not in value:
        return [p for p in (s.strip(_WS) for s in value.split(",")) if p]
    out: list[str] = []
    start = 0
    i = 0
    n = len(value)
    in_quote = False
    in_angle = False
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif in_angle:
            if c == ">":
                in_angle = False
        elif c == "<":
            in_angle = True
        elif c == ",":
            out.append(value[start:i])
            start = i + 1
        i += 1
    out.append(value[start:])
    return [p for p in (s.strip(_WS) for s in out) if p]


def _read_quoted(text: str, i: int, what: str) -> tuple[str, int]:
    """Read the quoted string starting at ``text[i] == '"'``; return (raw incl. quotes, end)."""
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == '"':
            return text[i : j + 1], j + 1
        j += 1
    raise SipParseError(f"unterminated quoted string in {what}")


def unquote(raw: str) -> str:
    """The content of a quoted string (with its quotes), backslash escapes resolved."""
    inner = raw[1:-1]
    if "\\" not in inner:
        return inner
    return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)


def quote(text: str) -> str:
    """``text`` as a quoted string, escaping backslash and double quote."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PARAM_RE = re.compile(
    r"[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)"
    r"(?:[ \t]*=[ \t]*(\"(?:[^\"\\]|\\[\s\S])*\"|[A-Za-z0-9\-.!%*_+`'~\[\]:]+))?"
)


def parse_params(text: str, what: str) -> Params:
    """Parse ``*( SEMI generic-param )`` with LWS around ``;`` and ``=`` (RFC 3261 25.1).

    Values are kept raw: a quoted-string value keeps its quotes.
    """
    params: list[tuple[str, str | None]] = []
    pos = 0
    n = len(text)
    match = _PARAM_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            break
        params.append((m[1], m[2]))
        pos = m.end()
    if pos == n or not text[pos:].strip(_WS):
        return tuple(params)
    # The slow path below names the problem precisely.
    return _parse_params_slowly(text, what)


def _parse_params_slowly(text: str, what: str) -> Params:
    params: list[tuple[str, str | None]] = []
    i = 0
    n = len(text)
    while True:
        while i < n and text[i] in _WS:
            i += 1
        if i >= n:
            return tuple(params)
        if text[i] != ";":
            raise SipParseError(f"unexpected {text[i : i + 20]!r} in {what}, ';' expected")
        i += 1
        while i < n and text[i] in _WS:
            i += 1
        start = i
        while i < n and text[i] in _TOKEN_CHARS:
            i += 1
        name = text[start:i]
        if not name:
            raise SipParseError(f"empty parameter in {what}")
        while i < n and text[i] in _WS:
            i += 1
        value: str | None = None
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in _WS:
                i += 1
            if i < n and text[i] == '"':
                value, i = _read_quoted(text, i, what)
            else:
                start = i
                while i < n and text[i] in _GEN_VALUE_CHARS:
                    i += 1
                value = text[start:i]
                if not value:
                    raise SipParseError(f"parameter {name!r} without a value in {what}")
        params.append((name, value))


def format_params(params: Params) -> str:
    """Serialize header parameters as ``;name=value...``."""
    if not params:
        return ""
    return "".join([";" + n if v is None else f";{n}={v}" for n, v in params])


def parse_int(text: str, what: str, maximum: int) -> int:
    """A decimal integer 0..``maximum``; :class:`SipParseError` otherwise."""
    text = text.strip(_WS)
    if not text or not text.isascii() or not text.isdigit():
        raise SipParseError(f"{what} is not a number: {text[:40]!r}")
    if len(text.lstrip("0")) > len(str(maximum)) or int(text) > maximum:
        raise SipParseError(f"{what} out of range: {text[:40]!r}")
    return int(text)


def parse_max_forwards(text: str) -> int:
    """Parse Max-Forwards (RFC 3261 20.22: 0-255)."""
    return parse_int(text, "Max-Forwards", MAX_FORWARDS_LIMIT)


def parse_delta_seconds(text: str, what: str = "Expires") -> int:
    """Parse delta-seconds (RFC 3261 25.1: at most 2**32 - 1)."""
    return parse_int(text, what, MAX_DELTA_SECONDS)


# [0-9], not \d: in a str pattern \d takes every Unicode decimal digit ("١٥").
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" ([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT\Z"
)


def parse_date(text: str) -> str:
    """Validate a Date value (RFC 3261 20.17: rfc1123-date, always GMT); return it."""
    m = _DATE_RE.match(text)
    if not m:
        raise SipParseError(f"bad Date {text[:60]!r}: RFC 1123 date in GMT expected")
    day, hour, minute, second = int(m[2]), int(m[5]), int(m[6]), int(m[7])
    if not (1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise SipParseError(f"bad Date {text[:60]!r}: field out of range")
    return text


# -- structured values ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A ``name-addr`` or ``addr-spec`` with header parameters: From, To, Contact, Route..."""

    #: The URI.
    uri: SipUri
    #: The display name, unquoted and unescaped; ``None`` when absent.
    display_name: str | None = None
    #: Header parameters in wire order (``tag``, ``expires``, ``q``...); values raw.
    params: Params = ()

    @classmethod
    def parse(cls, text: str, what: str = "name-addr") -> NameAddr:
        """Parse ``[display-name] <uri> *(;param)`` or ``addr-spec *(;param)``."""
        m = _NAME_ADDR_FAST_RE.match(text)
        if m is not None:
            # The common ``["name"] <uri>`` shape in one regex; the general path below
            # accepts a superset and names problems precisely.
            quoted, tokens, uri_text = m.groups()
            if quoted is not None:
                display: str | None = unquote(f'"{quoted}"') if "\\" in quoted else quoted
            elif tokens is not None:
                display = " ".join(tokens.split())
            else:
                display = None
            return cls(SipUri.parse(uri_text), display, parse_params(text[m.end() :], what))
        return cls._parse_general(text, what)

    @classmethod
    def _parse_general(cls, text: str, what: str = "name-addr") -> NameAddr:
        text = text.strip(_WS)
        if not text:
            raise SipParseError(f"empty {what}")
        display: str | None = None
        if text[0] == '"':
            raw, i = _read_quoted(text, 0, what)
            display = unquote(raw)
            while i < len(text) and text[i] in _WS:
                i += 1
            if i >= len(text) or text[i] != "<":
                raise SipParseError(f"display name not followed by <URI> in {what}")
            lt = i
        else:
            lt = text.find("<")
            if lt >= 0:
                words = text[:lt].split()
                if not all(_TOKEN_RE.match(w) for w in words):
                    raise SipParseError(
                        f"display name {text[:lt].strip()!r} in {what} must be tokens or quoted"
                    )
                display = " ".join(words) if words else None
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"missing '>' in {what}")
            uri = SipUri.parse(text[lt + 1 : gt])
            rest = text[gt + 1 :]
        else:
            # addr-spec: RFC 3261 20 says a URI with ',', '?' or ';' must be in angle brackets,
            # so here the URI ends at the first ';' (or whitespace).
            end = len(text)
            for stop in (";", " ", "\t"):
                k = text.find(stop)
                if 0 <= k < end:
                    end = k
            spec = text[:end]
            if "?" in spec or "," in spec:
                raise SipParseError(
                    f"URI {spec!r} in {what} contains '?' or ',' and must be in angle brackets"
                )
            uri = SipUri.parse(spec)
            rest = text[end:]
        return cls(uri, display, parse_params(rest, what))

    def param(self, name: str, default: str | None = None) -> str | None:
        """The raw value of header parameter ``name`` (case-insensitive), or ``default``."""
        found, value = _find_param(self.params, name)
        return value if found else default

    def has_param(self, name: str) -> bool:
        """Whether header parameter ``name`` is present."""
        return _find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        """A copy with header parameter ``name`` set."""
        # Constructed directly: dataclasses.replace() costs several times more.
        return NameAddr(self.uri, self.display_name, _set_param(self.params, name, value))

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To), or ``None``."""
        return self.param("tag")

    def with_tag(self, tag: str) -> NameAddr:
        """A copy with ``tag`` set."""
        return self.with_param("tag", tag)

    @property
    def expires(self) -> int | None:
        """The Contact ``expires`` parameter, or ``None`` when absent or malformed.

        RFC 4475 3.1.2.8: an out-of-range expiry may be treated as absent.
        """
        value = self.param("expires")
        try:
            return parse_delta_seconds(value or "", "expires") if value is not None else None
        except SipParseError:
            return None

    def __str__(self) -> str:
        name = f"{quote(self.display_name)} " if self.display_name is not None else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"


_NAME_ADDR_FAST_RE = re.compile(
    r'[ \t]*(?:"((?:[^"\\]|\\[\s\S])*)"[ \t]*'
    r"|([A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*)[ \t]*)?"
    r"<([^<>]*)>"
)
_VIA_FAST_RE = re.compile(
    r"[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
    r"([A-Za-z0-9](?:[A-Za-z0-9_\-.]*[A-Za-z0-9.])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::([0-9]{1,5}))?(?=[ \t;]|\Z)"
)
_VIA_SENT_RE = re.compile(
    r"([^\s/]+)[ \t]*/[ \t]*([^\s/]+)[ \t]*/[ \t]*([^\s/;]+)[ \t]+([^\s;]+)[ \t]*"
)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 20.42): ``SIP/2.0/TLS host:port;branch=...;rport``."""

    #: Transport token, upper case as sent (``UDP``, ``TCP``, ``TLS``, ``SCTP``, ``WS``...).
    transport: str
    #: The sent-by host (IPv6 in brackets).
    host: str
    #: The sent-by port, or ``None``.
    port: int | None = None
    #: Via parameters in wire order; values raw; ``rport`` may be a flag (``None``).
    params: Params = ()
    #: Protocol name and version; only ``SIP``/``2.0`` is valid in a message we accept.
    protocol: str = "SIP"
    version: str = "2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via value (no commas)."""
        m = _VIA_FAST_RE.match(text)
        if m is not None:
            # ``SIP/2.0/<transport> host[:port]`` in one regex; the general path accepts a
            # superset and names problems precisely.
            transport, host, port_text = m.groups()
            port = int(port_text) if port_text is not None else None
            if port is None or port <= 65535:
                params = parse_params(text[m.end() :], "Via")
                return cls(transport.upper(), host, port, params)
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> Via:
        m = _VIA_SENT_RE.match(text.strip(_WS))
        if not m:
            raise SipParseError(f"bad Via {text[:80]!r}")
        protocol, version, transport, sent_by = m.groups()
        for part in (protocol, version, transport):
            if not _TOKEN_RE.match(part):
                raise SipParseError(f"bad sent-protocol in Via {text[:80]!r}")
        host, port = split_hostport(sent_by, "Via sent-by")
        params = parse_params(text.strip(_WS)[m.end() :], "Via")
        return cls(transport.upper(), host, port, params, protocol.upper(), version)

    def param(self, name: str, default: str | None = None) -> str | None:
        """The raw value of parameter ``name`` (case-insensitive), or ``default``."""
        found, value = _find_param(self.params, name)
        return value if found else default

    def has_param(self, name: str) -> bool:
        """Whether parameter ``name`` is present."""
        return _find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None = None) -> Via:
        """A copy with parameter ``name`` set (e.g. ``received``, ``rport``)."""
        return Via(
            self.transport,
            self.host,
            self.port,
            _set_param(self.params, name, value),
            self.protocol,
            self.version,
        )

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter, or ``None`` (an RFC 2543 client)."""
        return self.param("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter, or ``None``."""
        return self.param("received")

    @property
    def rport(self) -> int | bool | None:
        """``None`` if absent, ``True`` for the bare flag, the port number when filled in."""
        found, value = _find_param(self.params, "rport")
        if not found:
            return None
        if value is None:
            return True
        return parse_int(value, "Via rport", 65535)

    @property
    def sent_by(self) -> str:
        """``host[:port]`` as written in the Via."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.version}/{self.transport} {self.sent_by}" + format_params(
            self.params
        )


@dataclass(frozen=True, slots=True)
class CSeq:
    """A CSeq value (RFC 3261 20.16): sequence number and method."""

    #: The sequence number, 0 to 2**31 - 1 (RFC 3261 8.1.1.5).
    seq: int
    #: The method, case-sensitive.
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse ``1*DIGIT LWS Method``."""
        parts = text.split()
        if len(parts) != 2:
            raise SipParseError(f"bad CSeq {text[:60]!r}: number and method expected")
        if not _TOKEN_RE.match(parts[1]):
            raise SipParseError(f"bad CSeq method {parts[1][:40]!r}")
        return cls(parse_int(parts[0], "CSeq number", MAX_CSEQ), parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


HeaderValue = str | SipUri | NameAddr | Via | CSeq | int


# -- the multi-dict ---------------------------------------------------------------------------


def _check_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise HeaderValueError(f"header {name} value contains CR or LF")
    return value


_NONE: list[int] = []


class Headers:
    """Ordered, case-insensitive multi-dict of SIP header fields (one entry per header line).

    ``headers.get("v")`` and ``headers.get("VIA")`` both find ``Via``. For list headers
    (Via, Contact, Route, Allow, Supported...) :meth:`get_all` returns the comma-separated
    elements across all lines; for other headers it returns one value per line.
    """

    __slots__ = ("_cache", "_entries", "_index")

    def __init__(self, items: Iterable[tuple[str, HeaderValue]] = ()) -> None:
        self._entries: list[tuple[str, str]] = []
        self._index: dict[str, list[int]] | None = None
        self._cache: dict[str, Any] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_wire(cls, entries: list[tuple[str, str]]) -> Headers:
        """Adopt already-canonical, already-checked entries from the parser (no copy)."""
        h = cls.__new__(cls)
        h._entries = entries
        h._index = None
        h._cache = {}
        return h

    # -- lookup -----------------------------------------------------------------------------

    def _build_index(self) -> dict[str, list[int]]:
        index: dict[str, list[int]] = {}
        for i, (n, _) in enumerate(self._entries):
            key = _KEYS.get(n) or header_key(n)
            found = index.get(key)
            if found is None:
                index[key] = [i]
            else:
                found.append(i)
        self._index = index
        return index

    def _positions(self, name: str) -> list[int]:
        index = self._index
        if index is None:
            index = self._build_index()
        return index.get(header_key(name), _NONE)

    def _values(self, key: str) -> list[str]:
        """Like :meth:`get_all`, by lookup key."""
        index = self._index
        if index is None:
            index = self._build_index()
        positions = index.get(key)
        if positions is None:
            return []
        entries = self._entries
        lines = [entries[i][1] for i in positions]
        if key in LIST_HEADERS and not (key == "contact" and lines == ["*"]):
            out: list[str] = []
            for line in lines:
                out.extend(split_commas(line))
            return out
        return lines

    def lines(self, name: str) -> list[str]:
        """The raw values of every ``name`` line, in order, without comma splitting."""
        entries = self._entries
        return [entries[i][1] for i in self._positions(name)]

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``: list headers split on commas, others one per line."""
        return self._values(header_key(name))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (the first list element for list headers)."""
        values = self.get_all(name)
        return values[0] if values else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._positions(name))

    def count(self, name: str) -> int:
        """How many lines carry ``name``."""
        return len(self._positions(name))

    def parsed(self, name: str, parser: Callable[[str], T]) -> list[T]:
        """``parser`` applied to each of :meth:`get_all`, cached until the headers change."""
        key = _KEYS.get(name) or header_key(name)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == parser:
            return cached[1]  # type: ignore[no-any-return]
        values = [parser(v) for v in self._values(key)]
        self._cache[key] = (parser, values)
        return values

    # -- mutation ---------------------------------------------------------------------------

    def _changed(self, name: str) -> None:
        # Line positions moved, so the index goes; of the parsed values only those of
        # ``name`` depend on what changed, and the others stay cached.
        self._index = None
        if self._cache:
            self._cache.pop(header_key(name), None)

    def add(self, name: str, value: HeaderValue) -> None:
        """Append a header line ``name: value`` (after any existing ones)."""
        if not is_token(name):
            raise HeaderValueError(f"bad header name {name!r}")
        canon = canonical_name(name)
        entries = self._entries
        entries.append((canon, _check_value(canon, str(value))))
        # Appending moves no other line: the index is extended rather than rebuilt, as a
        # message under construction is looked up between additions (Via, CSeq, tags).
        key = header_key(canon)
        index = self._index
        if index is not None:
            found = index.get(key)
            if found is None:
                index[key] = [len(entries) - 1]
            else:
                found.append(len(entries) - 1)
        if self._cache:
            self._cache.pop(key, None)

    def set(self, name: str, value: HeaderValue) -> None:
        """Replace every ``name`` line with one, at the position of the first (or the end)."""
        if not is_token(name):
            raise HeaderValueError(f"bad header name {name!r}")
        canon = canonical_name(name)
        text = _check_value(canon, str(value))
        positions = self._positions(canon)
        if not positions:
            self._entries.append((canon, text))
        else:
            first = positions[0]
            drop = set(positions[1:])
            self._entries[first] = (canon, text)
            if drop:
                self._entries = [e for i, e in enumerate(self._entries) if i not in drop]
        self._changed(canon)

    def set_all(self, name: str, values: Iterable[HeaderValue]) -> None:
        """Replace every ``name`` line with one line per value, where the first one was."""
        canon = canonical_name(name)
        new = [(canon, _check_value(canon, str(v))) for v in values]
        positions = self._positions(name)
        at = positions[0] if positions else len(self._entries)
        drop = set(positions)
        before = [e for i, e in enumerate(self._entries[:at]) if i not in drop]
        after = [e for i, e in enumerate(self._entries[at:], at) if i not in drop]
        self._entries = before + new + after
        self._changed(canon)

    def insert(self, index: int, name: str, value: HeaderValue) -> None:
        """Insert a header line at ``index`` of the line list (0 = first; a proxy's Via)."""
        if not is_token(name):
            raise HeaderValueError(f"bad header name {name!r}")
        canon = canonical_name(name)
        self._entries.insert(index, (canon, _check_value(canon, str(value))))
        self._changed(canon)

    def remove(self, name: str) -> int:
        """Remove every ``name`` line; return how many were removed."""
        drop = set(self._positions(name))
        if drop:
            self._entries = [e for i, e in enumerate(self._entries) if i not in drop]
            self._changed(name)
        return len(drop)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first element of ``name`` (the top Via, the first Route)."""
        positions = self._positions(name)
        if not positions:
            return None
        i = positions[0]
        canon, line = self._entries[i]
        elements = split_commas(line) if canon.lower() in LIST_HEADERS else [line]
        if len(elements) > 1:
            self._entries[i] = (canon, ", ".join(elements[1:]))
        else:
            del self._entries[i]
        self._changed(canon)
        return elements[0] if elements else line

    def replace_first(self, name: str, value: HeaderValue) -> None:
        """Replace the first element of ``name`` where it stands (e.g. the top Via, to add
        ``received`` and ``rport`` as RFC 3261 18.2.1 and RFC 3581 ask); add it if absent."""
        canon = canonical_name(name)
        text = _check_value(canon, str(value))
        positions = self._positions(canon)
        if not positions:
            self._entries.append((canon, text))
        else:
            i = positions[0]
            line = self._entries[i][1]
            elements = split_commas(line) if header_key(canon) in LIST_HEADERS else [line]
            self._entries[i] = (canon, ", ".join([text, *elements[1:]]))
        self._changed(canon)

    # -- iteration and comparison -------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._entries))

    def items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` line in wire order."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def copy(self) -> Headers:
        """A shallow copy (values are strings, so independent)."""
        return Headers._from_wire(list(self._entries))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._entries == other._entries

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({[n for n, _ in self._entries]!r})"

    def to_text(self) -> str:
        """The header lines, each ``Name: value`` followed by CRLF."""
        return "".join(f"{n}: {v}\r\n" for n, v in self._entries)
