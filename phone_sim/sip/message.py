"""SIP requests and responses: the model, the datagram parser and the serializer (RFC 3261 7).

``parse_message(data)`` takes one datagram and returns a :class:`SipRequest` or a
:class:`SipResponse`; anything malformed raises :class:`SipParseError` with a message naming
the problem and, where the RFC names one, the status to answer a request with.

The parser splits the start line and header fields, then checks the header fields every
layer above relies on (Via, From, To, Call-ID, CSeq, Max-Forwards, Contact, Route,
Record-Route, Date, Content-Length) against their grammar, caching the parsed values, so the
accessors (:attr:`SipMessage.top_via`, :attr:`SipMessage.cseq`...) cost nothing afterwards.
Other header fields stay text until someone asks for them. Whether a request is *complete*
(mandatory header fields present, no duplicates, supported extensions) is the request
validator's business (:mod:`phone_sim.sip.validate`), as RFC 4475 3.3 separates it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from phone_sim.sip.headers import (
    LIST_HEADERS,
    CSeq,
    Headers,
    HeaderValue,
    HeaderValueError,
    NameAddr,
    Via,
    canonical_name,
    is_token,
    parse_date,
    parse_delta_seconds,
    parse_int,
    parse_max_forwards,
    split_commas,
)
from phone_sim.sip.limits import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_LINE_LENGTH,
    STATUS_BODY_TOO_LARGE,
    STATUS_MESSAGE_TOO_LARGE,
    SipParseError,
)
from phone_sim.sip.uri import SipUri

__all__ = [
    "REASON_PHRASES",
    "SIP_VERSION",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "content_length",
    "is_keepalive",
    "parse_message",
    "split_commas",
]

SIP_VERSION = "SIP/2.0"
T = TypeVar("T")
M = TypeVar("M", bound="SipMessage")

#: RFC 3261 21 (and RFC 3262, 3265, 3329, 4028, 6665) default reason phrases.
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip

_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.IGNORECASE)
_STATUS_RE = re.compile(r"[1-6][0-9][0-9]\Z")  # [0-9]: in a str pattern \d takes "٠"
_CALL_ID_BAD_RE = re.compile(r"[\s]")
_START_LINE_BAD_RE = re.compile(r"[\s]")
_PASSWORD_IN_LINE_RE = re.compile(r"(sips?:[^:@;?\s]*:)[^@\s]*@", re.IGNORECASE)


def _mask_password(text: str) -> str:
    return _PASSWORD_IN_LINE_RE.sub(r"\1***@", text)


def _required(values: list[T], name: str) -> T:
    if len(values) != 1:
        what = "missing" if not values else f"{len(values)} values for"
        raise SipParseError(f"{what} {name} header")
    return values[0]


def _parse_call_id(value: str) -> str:
    if not value or _CALL_ID_BAD_RE.search(value):
        raise SipParseError(f"bad Call-ID {value[:60]!r}")
    return value


#: Longest header value text the parse memos keep, and how many values each keeps.
_MEMO_MAX_TEXT = 256
_MEMO_SIZE = 512
#: Every memo, so tests can empty them and compare against fresh parses.
_MEMOS: list[dict[str, Any]] = []


def _memoized(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` with a bounded memo of its results by value text.

    A phone's From, To and Contact, its registrar's Request-URI and most CSeq values come
    back in message after message (the 401 and the retried REGISTER, each refresh, every
    response), and parsing them again costs more than the rest of the message. The results
    are immutable (frozen dataclasses, ``int``, ``str``), so sharing one between messages is
    safe. Errors are never kept, so a malformed value is refused every time with the same
    message. Bounds: values longer than ``_MEMO_MAX_TEXT`` are not kept, and the memo is
    emptied when ``_MEMO_SIZE`` are held, so a hostile peer can cost us at most a few
    megabytes and cache misses, never growth. (Emptying beats evicting the oldest entry:
    ``next(iter(d))`` walks the deleted slots at the front of a dict, several microseconds
    at this size, and an OrderedDict costs three times a dict per miss. What a memo is for,
    a value seen again within a few hundred messages, survives either way.)
    """
    memo: dict[str, T] = {}
    _MEMOS.append(memo)
    get = memo.get

    def cached(text: str) -> T:
        value = get(text)
        if value is None:
            value = parse(text)
            if len(text) <= _MEMO_MAX_TEXT:
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                memo[text] = value
        return value

    return cached


# Via is not memoized: every transaction has its own branch, so it would only churn a memo.
_parse_via = Via.parse
_parse_cseq = _memoized(CSeq.parse)
_parse_request_uri = _memoized(SipUri.parse)


@_memoized
def _parse_contact(value: str) -> NameAddr:
    return NameAddr.parse(value, "Contact")


@_memoized
def _parse_name_addr_from(value: str) -> NameAddr:
    return NameAddr.parse(value, "From")


@_memoized
def _parse_name_addr_to(value: str) -> NameAddr:
    return NameAddr.parse(value, "To")


@_memoized
def _parse_route(value: str) -> NameAddr:
    return NameAddr.parse(value, "Route")


@_memoized
def _parse_record_route(value: str) -> NameAddr:
    return NameAddr.parse(value, "Record-Route")


def _parse_content_length(value: str) -> int:
    return parse_int(value, "Content-Length", 2**63)


#: Header fields parse_message() checks (and caches), by lookup key.
_EAGER_PARSERS: dict[str, Callable[[str], Any]] = {
    "via": _parse_via,
    "from": _parse_name_addr_from,
    "to": _parse_name_addr_to,
    "call-id": _parse_call_id,
    "cseq": _parse_cseq,
    "max-forwards": parse_max_forwards,
    "contact": _parse_contact,
    "route": _parse_route,
    "record-route": _parse_record_route,
    "date": parse_date,
}


class SipMessage:
    """What requests and responses share: header fields, a body of bytes, the accessors."""

    __slots__ = ()

    headers: Headers
    body: bytes
    is_request: ClassVar[bool]

    def start_line(self) -> str:
        """The request or status line, without CRLF."""
        raise NotImplementedError

    def copy(self: M) -> M:
        """A copy with its own Headers (to change before sending it again)."""
        return replace(self, headers=self.headers.copy())  # type: ignore[type-var]

    # -- serialization ----------------------------------------------------------------------

    def __bytes__(self) -> bytes:
        """The wire form, with Content-Length set to the body's length (RFC 3261 20.14)."""
        body = self.body
        parts = [self.start_line(), "\r\n"]
        length = str(len(body))
        seen_length = False
        for name, value in self.headers._entries:
            if name == "Content-Length":
                if seen_length:
                    continue
                seen_length = True
                parts.append(f"Content-Length: {length}\r\n")
                continue
            parts.append(name)
            parts.append(": ")
            parts.append(value)
            parts.append("\r\n")
        if not seen_length:
            parts.append("Content-Length: ")
            parts.append(length)
            parts.append("\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape") + body

    # -- accessors --------------------------------------------------------------------------
    # Mandatory single-valued header fields raise SipParseError (400) when missing or repeated;
    # optional ones return None when absent.

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first."""
        return self.headers.parsed("Via", _parse_via)

    @property
    def top_via(self) -> Via:
        """The topmost Via; :class:`SipParseError` if there is none."""
        vias = self.vias
        if not vias:
            raise SipParseError("missing Via header")
        return vias[0]

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return _required(self.headers.parsed("Call-ID", _parse_call_id), "Call-ID")

    @property
    def cseq(self) -> CSeq:
        """The CSeq."""
        return _required(self.headers.parsed("CSeq", _parse_cseq), "CSeq")

    @property
    def from_(self) -> NameAddr:
        """The From header (``from`` is a Python keyword)."""
        values = self.headers.parsed("From", _parse_name_addr_from)
        return _required(values, "From")

    @property
    def to(self) -> NameAddr:
        """The To header."""
        return _required(self.headers.parsed("To", _parse_name_addr_to), "To")

    @property
    def from_tag(self) -> str | None:
        """The From tag, or ``None``."""
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        """The To tag, or ``None``."""
        return self.to.tag

    @property
    def contact_is_wildcard(self) -> bool:
        """Whether the message has ``Contact: *`` (a REGISTER removing every binding)."""
        return self.headers.lines("Contact") == ["*"]

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact value (empty for none and for ``Contact: *``)."""
        if self.contact_is_wildcard:
            return []
        return self.headers.parsed("Contact", _parse_contact)

    @property
    def routes(self) -> list[NameAddr]:
        """Every Route value, in order."""
        return self.headers.parsed("Route", _parse_route)

    @property
    def record_routes(self) -> list[NameAddr]:
        """Every Record-Route value, in order."""
        return self.headers.parsed("Record-Route", _parse_record_route)

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards, or ``None`` when absent."""
        values = self.headers.parsed("Max-Forwards", parse_max_forwards)
        return values[0] if values else None

    @property
    def expires(self) -> int | None:
        """The Expires header, or ``None`` when absent or malformed.

        RFC 4475 3.1.2.8: an out-of-range expiry may be treated as absent (the default applies).
        """
        value = self.headers.get("Expires")
        if value is None:
            return None
        try:
            return parse_delta_seconds(value)
        except SipParseError:
            return None

    @property
    def content_type(self) -> str | None:
        """The Content-Type value as sent (with parameters), or ``None``."""
        return self.headers.get("Content-Type")

    @property
    def media_type(self) -> str | None:
        """The Content-Type's ``type/subtype``, lower case, without parameters; or ``None``."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip(" \t").lower()

    def tokens(self, name: str) -> list[str]:
        """The values of a token-list header (Allow, Supported, Require...), as sent."""
        return [t for v in self.headers.get_all(name) for t in [v.strip(" \t")] if t]

    def _check(self, method: str | None = None) -> None:
        """Check the header fields the layers above rely on; cache their parsed values."""
        h = self.headers
        index = h._index if h._index is not None else h._build_index()
        entries = h._entries
        cache = h._cache
        # Headers.parsed() inlined: this loop runs for every message received.
        for key, positions in index.items():
            parser = _EAGER_PARSERS.get(key)
            if parser is None:
                continue
            cached = cache.get(key)
            if cached is not None and cached[0] == parser:
                values = cached[1]
            else:
                lines = [entries[i][1] for i in positions]
                if key in LIST_HEADERS:
                    if key == "contact" and lines == ["*"]:
                        continue
                    texts = []
                    for line in lines:
                        texts.extend(split_commas(line))
                else:
                    texts = lines
                values = [parser(text) for text in texts]
                cache[key] = (parser, values)
            if key == "via":
                for via in values:
                    if via.protocol != "SIP" or via.version != "2.0":
                        raise SipParseError(f"Via with protocol {via.protocol}/{via.version}")
            elif key == "cseq" and method is not None:
                for cseq in values:
                    if cseq.method != method:
                        raise SipParseError(
                            f"CSeq method {cseq.method!r} does not match the request method"
                            f" {method!r}"
                        )


@dataclass(eq=True, slots=True)
class SipRequest(SipMessage):
    """A SIP request."""

    #: The method, case-sensitive (``INVITE``, ``REGISTER``...).
    method: str
    #: The Request-URI.
    uri: SipUri
    #: The header fields.
    headers: Headers = field(default_factory=Headers)
    #: The body, bytes until the parser for its Content-Type takes it.
    body: bytes = b""

    is_request: ClassVar[bool] = True

    def start_line(self) -> str:
        """``Method SP Request-URI SP SIP/2.0``."""
        uri = str(self.uri)
        if not is_token(self.method) or _START_LINE_BAD_RE.search(uri):
            raise HeaderValueError(f"cannot send request line {self.method!r} {uri!r}")
        return f"{self.method} {uri} {SIP_VERSION}"

    def create_response(
        self,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, HeaderValue]] = (),
        body: bytes = b"",
    ) -> SipResponse:
        """A response to this request, with Via, From, To, Call-ID and CSeq copied (RFC 3261
        8.2.6.2); ``to_tag`` is added to To when it has none (except for 100 Trying).

        Record-Route and Contact are the dialog layer's business and are not copied.
        """
        out = Headers()
        for name, text in self.headers._entries:
            if name in ("Via", "From", "To", "Call-ID", "CSeq"):
                if name == "To" and to_tag is not None and status != 100:
                    to = _parse_name_addr_to(text)
                    if to.tag is None:
                        text = str(to.with_tag(to_tag))  # noqa: PLW2901
                out._entries.append((name, text))
        for extra_name, extra_value in headers:
            out.add(extra_name, extra_value)
        return SipResponse(status, reason or REASON_PHRASES.get(status, ""), out, body)

    def __repr__(self) -> str:
        # The body may carry SDES keys: only its size is shown.
        return (
            f"SipRequest({self.method} {self.uri!r}, {len(self.headers)} headers, "
            f"{len(self.body)} body bytes)"
        )


@dataclass(eq=True, slots=True)
class SipResponse(SipMessage):
    """A SIP response."""

    #: The status code, 100-699.
    status: int
    #: The reason phrase (may be empty).
    reason: str = ""
    #: The header fields.
    headers: Headers = field(default_factory=Headers)
    #: The body.
    body: bytes = b""

    is_request: ClassVar[bool] = False

    def start_line(self) -> str:
        """``SIP/2.0 SP Status-Code SP Reason-Phrase``."""
        if not 100 <= self.status <= 699 or "\r" in self.reason or "\n" in self.reason:
            raise HeaderValueError(f"cannot send status line {self.status} {self.reason!r}")
        return f"{SIP_VERSION} {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        """Whether this is a 1xx response."""
        return self.status < 200

    @property
    def is_success(self) -> bool:
        """Whether this is a 2xx response."""
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        return (
            f"SipResponse({self.status} {self.reason!r}, {len(self.headers)} headers, "
            f"{len(self.body)} body bytes)"
        )


# -- parsing -------------------------------------------------------------------------------

# Header names as written -> canonical names. Bounded, so hostile peers cannot grow it.
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_SIZE = 512


def _split_header_lines(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Split a header section (start line + header lines, no final blank line) into the start
    line and canonical ``(name, value)`` entries, unfolding continuation lines."""
    if len(head) > MAX_HEADER_BYTES:
        raise SipParseError(
            f"header section of {len(head)} octets exceeds {MAX_HEADER_BYTES}",
            status=STATUS_MESSAGE_TOO_LARGE,
        )
    text = head.decode("utf-8", "surrogateescape")
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf:
        raise SipParseError("bare CR or LF in the header section (lines end with CRLF)")
    lines = text.split("\r\n")
    folded = "\r\n " in text or "\r\n\t" in text
    if len(lines) > MAX_HEADER_COUNT + 1 and (
        not folded or sum(1 for x in lines if x[:1] not in (" ", "\t")) > MAX_HEADER_COUNT + 1
    ):
        raise SipParseError(
            f"more than {MAX_HEADER_COUNT} header fields", status=STATUS_MESSAGE_TOO_LARGE
        )
    # No line (and no unfolded value) can be longer than the whole section.
    check_lengths = len(text) > MAX_LINE_LENGTH
    if check_lengths:
        for line in lines:
            if len(line) > MAX_LINE_LENGTH:
                raise SipParseError(
                    f"line of {len(line)} characters exceeds {MAX_LINE_LENGTH}",
                    status=STATUS_MESSAGE_TOO_LARGE,
                )
    entries: list[tuple[str, str]] = []
    start = lines[0]
    problem: str | None = None
    names = _NAME_CACHE
    for line in lines[1:]:
        if folded and line[:1] in (" ", "\t"):
            # RFC 3261 7.3.1: a line starting with whitespace continues the previous one.
            if not entries:
                problem = problem or "continuation line before the first header field"
                continue
            name, value = entries[-1]
            more = line.strip(" \t")
            entries[-1] = (name, f"{value} {more}" if value and more else value or more)
            continue
        raw, colon, value = line.partition(":")
        if not colon:
            problem = problem or f"header line without a colon: {line[:60]!r}"
            continue
        canon = names.get(raw)
        if canon is None:
            stripped = raw.rstrip(" \t")
            if not is_token(stripped):
                problem = problem or f"bad header name {stripped[:60]!r}"
                continue
            canon = canonical_name(stripped)
            if len(names) < _NAME_CACHE_SIZE:
                names[raw] = canon
        entries.append((canon, value.strip(" \t")))
    if problem is not None:
        # The lines that did parse still let the caller answer the request with a 400.
        raise SipParseError(problem, partial=_partial(start, entries))
    if check_lengths:
        for _, value in entries:
            if len(value) > MAX_LINE_LENGTH:
                raise SipParseError(
                    f"header value of {len(value)} characters exceeds {MAX_LINE_LENGTH}",
                    status=STATUS_MESSAGE_TOO_LARGE,
                )
    return start, entries


def _build(start: str, entries: list[tuple[str, str]], body: bytes) -> SipRequest | SipResponse:
    """Build and check a message from its start line, header entries and body."""
    headers = Headers._from_wire(entries)
    msg: SipRequest | SipResponse
    if start[:4].upper() == "SIP/":
        # Status-Line (RFC 3261 7.2). A response that fails is dropped: no status.
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if version.upper() != SIP_VERSION:
            raise SipParseError(f"response with unsupported version {version[:20]!r}", status=None)
        if not _STATUS_RE.match(code):
            raise SipParseError(f"bad status code {code[:20]!r} in status line", status=None)
        msg = SipResponse(int(code), reason, headers, body)
        try:
            msg._check()
        except SipParseError as exc:
            raise SipParseError(str(exc), status=None, partial=msg) from None
        return msg
    # Request-Line (RFC 3261 7.1): exactly Method SP Request-URI SP SIP-Version.
    parts = start.split(" ")
    if len(parts) != 3:
        raise SipParseError(
            f"bad request line {_mask_password(start)[:80]!r}:"
            " Method SP Request-URI SP SIP-Version expected",
            partial=_partial(start, entries),
        )
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError(f"bad method {method[:40]!r}")
    try:
        uri = _parse_request_uri(uri_text)
    except SipParseError as exc:
        raise SipParseError(f"bad Request-URI: {exc}", partial=_partial(start, entries)) from None
    msg = SipRequest(method, uri, headers, body)
    if version.upper() != SIP_VERSION:
        if _VERSION_RE.match(version):
            raise SipParseError(f"unsupported SIP version {version!r}", status=505, partial=msg)
        raise SipParseError(f"bad SIP version {version[:20]!r} in request line", partial=msg)
    try:
        msg._check(method)
    except SipParseError as exc:
        raise SipParseError(str(exc), status=exc.status, partial=msg) from None
    return msg


def content_length(entries: list[tuple[str, str]]) -> int | None:
    """The Content-Length of header entries, ``None`` if absent; conflicting values are an
    error (RFC 4475 mcl01: 400)."""
    values = {_parse_content_length(v) for n, v in entries if n == "Content-Length"}
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError(f"conflicting Content-Length values {sorted(values)}")
    (length,) = values
    if length > MAX_BODY_BYTES:
        raise SipParseError(
            f"Content-Length {length} exceeds {MAX_BODY_BYTES}", status=STATUS_BODY_TOO_LARGE
        )
    return length


def is_keepalive(data: bytes) -> bool:
    """Whether a datagram is only CRLFs (an RFC 5626 4.4.1 / RFC 3261 7.5 keep-alive)."""
    return bool(data) and not data.strip(b"\r\n")


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one datagram into a request or a response (RFC 3261 7 and 18.3).

    A Content-Length larger than the data is an error; octets after the body are ignored;
    without Content-Length the rest of the datagram is the body. CRLFs before the start line
    are skipped (RFC 3261 7.5). Raises :class:`SipParseError`.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SipParseError(f"parse_message wants bytes, not {type(data).__name__}", status=None)
    data = bytes(data)
    offset = 0
    while data.startswith(b"\r\n", offset):
        offset += 2
    if offset == len(data):
        raise SipParseError(
            "no SIP message in the datagram (empty or a CRLF keep-alive)", status=None
        )
    end = data.find(b"\r\n\r\n", offset)
    if end < 0:
        # RFC 3261 7: the empty line is mandatory even without a body. Answer a request 400.
        partial = None
        with contextlib.suppress(SipParseError):
            partial = _partial(*_split_header_lines(data[offset:].rstrip(b"\r\n")))
        status = 400 if isinstance(partial, SipRequest) else None
        raise SipParseError("no empty line ends the header section", status=status, partial=partial)
    start, entries = _split_header_lines(data[offset:end])
    if not start:
        raise SipParseError("empty start line", status=None)
    available = len(data) - end - 4
    try:
        length = content_length(entries)
    except SipParseError as exc:
        raise SipParseError(str(exc), status=exc.status, partial=_partial(start, entries)) from None
    if length is None:
        # RFC 3261 18.3: over UDP a missing Content-Length means the rest is the body.
        if available > MAX_BODY_BYTES:
            raise SipParseError(
                f"body of {available} octets exceeds {MAX_BODY_BYTES}",
                status=STATUS_BODY_TOO_LARGE,
                partial=_partial(start, entries),
            )
        length = available
    elif length > available:
        raise SipParseError(
            f"Content-Length {length} is larger than the {available} body octets received",
            partial=_partial(start, entries),
        )
    return _build(start, entries, data[end + 4 : end + 4 + length])


def _partial(start: str, entries: list[tuple[str, str]]) -> SipRequest | SipResponse | None:
    """The message without checks, for building an error response; ``None`` if impossible."""
    try:
        if start[:4].upper() == "SIP/":
            _, _, rest = start.partition(" ")
            code, _, reason = rest.partition(" ")
            if not _STATUS_RE.match(code):
                return None
            return SipResponse(int(code), reason, Headers._from_wire(list(entries)))
        words = start.split()
        if len(words) < 2 or not is_token(words[0]):
            return None
        try:
            uri = SipUri.parse(words[1])
        except SipParseError:
            # Keep the headers usable for a 400 even when the Request-URI is unreadable.
            uri = SipUri(scheme="invalid", opaque=words[1])
        return SipRequest(words[0], uri, Headers._from_wire(list(entries)))
    except (SipParseError, ValueError):
        return None
