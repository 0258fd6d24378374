"""SDP (RFC 4566): a session description as frozen dataclasses, parsed and serialized.

``SdpSession.parse(body)`` takes the raw bytes of a SIP body; they become text here and
nowhere else. ``bytes(session)`` gives the canonical form back (CRLF line ends, the field
order of RFC 4566 5), so ``bytes(SdpSession.parse(x)) == x`` for every canonical body.
Attributes keep their order. A malformed body raises :class:`SdpParseError` with the line
number and what is wrong; nothing else escapes the parser.

The parser is lenient where peers differ harmlessly (LF-only line ends, optional lines of a
section in any order, trailing blank lines, an empty ``s=``) and strict where the meaning
would be ambiguous (a missing ``v=``/``o=``/``s=``/``t=``, a media line without a
connection, an unknown type letter, which RFC 4566 5 says must reject the description).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from phone_sim.errors import ProtocolError
from phone_sim.media.sdes import redact

MAX_SDP_BYTES = 65536
"""The largest SDP body parsed."""
MAX_LINE_LENGTH = 4096
"""The longest line (characters, without the line end)."""
MAX_MEDIA = 32
"""The most ``m=`` sections in one body."""
MAX_LINES_PER_SECTION = 512
"""The most lines in the session section or in one media section."""

# RFC 4566 9: token-char = %x21 / %x23-27 / %x2A-2B / %x2D-2E / %x30-39 / %x41-5A / %x5E-7E
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_DIGITS_RE = re.compile(r"[0-9]{1,20}")
_PORT_RE = re.compile(r"([0-9]{1,5})(?:/([0-9]{1,5}))?")
_TYPE_LETTERS = frozenset("vosiuepcbtrzkam")


class SdpParseError(ProtocolError):
    """A malformed SDP body. Carries the SIP status to answer with (400) and the line number."""

    def __init__(self, message: str, *, line: int | None = None, status: int = 400) -> None:
        super().__init__(message if line is None else f"SDP line {line}: {message}", status=status)
        self.line = line


def _excerpt(text: str) -> str:
    """A short, key-free quote of a bad line for an error message."""
    shown = redact(text)
    return repr(shown if len(shown) <= 60 else shown[:57] + "...")


def _token(value: str, what: str, line: int) -> str:
    if _TOKEN_RE.fullmatch(value) is None:
        raise SdpParseError(f"{what} {_excerpt(value)} is not a token", line=line)
    return value


def _integer(value: str, what: str, line: int) -> int:
    if _DIGITS_RE.fullmatch(value) is None:
        raise SdpParseError(f"{what} {_excerpt(value)} is not a decimal number", line=line)
    return int(value)


def _fields(value: str, count: int, what: str, line: int) -> list[str]:
    parts = value.split(" ")
    if len(parts) != count or not all(parts):
        raise SdpParseError(
            f"{what} needs {count} fields separated by single spaces: {_excerpt(value)}",
            line=line,
        )
    return parts


@dataclass(frozen=True, kw_only=True)
class SdpOrigin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str = "-"
    """The originator's login, ``-`` when none."""
    session_id: int
    """The session id, constant for the whole session."""
    session_version: int
    """The version, incremented by each new offer that changes the session (RFC 3264 8)."""
    net_type: str = "IN"
    """Network type, ``IN``."""
    addr_type: str = "IP4"
    """``IP4`` or ``IP6``."""
    address: str
    """The originator's address."""

    @classmethod
    def parse(cls, value: str, line: int) -> SdpOrigin:
        """Parse the value of an ``o=`` line."""
        user, sid, version, net, addr_type, address = _fields(value, 6, "o=", line)
        return cls(
            username=user,
            session_id=_integer(sid, "o= session id", line),
            session_version=_integer(version, "o= session version", line),
            net_type=_token(net, "o= network type", line),
            addr_type=_token(addr_type, "o= address type", line),
            address=address,
        )

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.net_type} {self.addr_type} {self.address}"
        )


@dataclass(frozen=True, kw_only=True)
class SdpConnection:
    """``c=<nettype> <addrtype> <connection-address>``."""

    net_type: str = "IN"
    """Network type, ``IN``."""
    addr_type: str = "IP4"
    """``IP4`` or ``IP6``."""
    address: str
    """The address as written, with any multicast ``/ttl/count`` suffix."""

    @classmethod
    def parse(cls, value: str, line: int) -> SdpConnection:
        """Parse the value of a ``c=`` line."""
        net, addr_type, address = _fields(value, 3, "c=", line)
        return cls(
            net_type=_token(net, "c= network type", line),
            addr_type=_token(addr_type, "c= address type", line),
            address=address,
        )

    def __str__(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"


@dataclass(frozen=True, kw_only=True)
class SdpBandwidth:
    """``b=<bwtype>:<bandwidth>``."""

    bwtype: str
    """``AS``, ``CT``, ``TIAS``, ``RS``, ``RR``..."""
    bandwidth: int
    """The value, in the unit of ``bwtype``."""

    @classmethod
    def parse(cls, value: str, line: int) -> SdpBandwidth:
        """Parse the value of a ``b=`` line."""
        bwtype, colon, amount = value.partition(":")
        if not colon:
            raise SdpParseError(f"b= is not <type>:<bandwidth>: {_excerpt(value)}", line=line)
        return cls(
            bwtype=_token(bwtype, "b= type", line),
            bandwidth=_integer(amount, "b= bandwidth", line),
        )

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True, kw_only=True)
class SdpTiming:
    """``t=<start-time> <stop-time>`` and the ``r=`` lines that follow it."""

    start: int = 0
    """NTP start time, 0 for unbounded."""
    stop: int = 0
    """NTP stop time, 0 for unbounded."""
    repeats: tuple[str, ...] = ()
    """The ``r=`` values, as written."""

    @classmethod
    def parse(cls, value: str, line: int) -> SdpTiming:
        """Parse the value of a ``t=`` line."""
        start, stop = _fields(value, 2, "t=", line)
        return cls(start=_integer(start, "t= start", line), stop=_integer(stop, "t= stop", line))

    def lines(self) -> list[str]:
        """The ``t=`` line and its ``r=`` lines."""
        return [f"t={self.start} {self.stop}", *(f"r={r}" for r in self.repeats)]


@dataclass(frozen=True, kw_only=True)
class SdpAttribute:
    """``a=<name>`` (a property) or ``a=<name>:<value>``."""

    name: str
    """The attribute name (``rtpmap``, ``sendrecv``, ``crypto``)."""
    value: str | None = None
    """The value after the colon; ``None`` for a property attribute."""

    @classmethod
    def parse(cls, text: str, line: int) -> SdpAttribute:
        """Parse the part of an ``a=`` line after ``a=``."""
        name, colon, value = text.partition(":")
        _token(name, "attribute name", line)
        return cls(name=name, value=value if colon else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"

    def __repr__(self) -> str:
        # A crypto line carries an SRTP master key: repr() must never show it.
        shown = None if self.value is None else redact(f"{self.name}:{self.value}")
        value = None if shown is None else shown.partition(":")[2]
        return f"SdpAttribute(name={self.name!r}, value={value!r})"


def _find(attributes: tuple[SdpAttribute, ...], name: str) -> tuple[SdpAttribute, ...]:
    lowered = name.lower()
    return tuple(a for a in attributes if a.name.lower() == lowered)


@dataclass(frozen=True, kw_only=True)
class SdpMedia:
    """One media description: ``m=<media> <port>[/<count>] <proto> <fmt> ...`` and its lines."""

    media: str = "audio"
    """``audio``, ``video``, ``application``..."""
    port: int
    """The transport port; 0 means the stream is rejected or disabled (RFC 3264 6)."""
    port_count: int | None = None
    """The ``/<number of ports>`` suffix, if written."""
    proto: str = "RTP/AVP"
    """``RTP/AVP``, ``RTP/SAVP``, ``UDP/TLS/RTP/SAVPF``..."""
    formats: tuple[str, ...]
    """The media formats: RTP payload type numbers for RTP profiles."""
    information: str | None = None
    """``i=``, the media title."""
    connections: tuple[SdpConnection, ...] = ()
    """The media-level ``c=`` lines (normally none or one)."""
    bandwidths: tuple[SdpBandwidth, ...] = ()
    """The media-level ``b=`` lines."""
    key: str | None = field(default=None, repr=False)
    """``k=`` (obsolete encryption key). Never shown."""
    attributes: tuple[SdpAttribute, ...] = ()
    """The media-level ``a=`` lines, in order."""

    @property
    def connection(self) -> SdpConnection | None:
        """The first media-level connection, or ``None``."""
        return self.connections[0] if self.connections else None

    def get_attributes(self, name: str) -> tuple[SdpAttribute, ...]:
        """The attributes called ``name`` (case-insensitive), in order."""
        return _find(self.attributes, name)

    def has_attribute(self, name: str) -> bool:
        """Whether an attribute called ``name`` is present."""
        return bool(self.get_attributes(name))

    def attribute_value(self, name: str) -> str | None:
        """The value of the first attribute called ``name``, or ``None``."""
        for attribute in self.get_attributes(name):
            return attribute.value
        return None

    def lines(self) -> list[str]:
        """The lines of this media section, canonical order."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.information is not None:
            out.append(f"i={self.information}")
        out.extend(f"c={c}" for c in self.connections)
        out.extend(f"b={b}" for b in self.bandwidths)
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"a={a}" for a in self.attributes)
        return out

    @classmethod
    def _parse_m_line(cls, value: str, line: int) -> SdpMedia:
        parts = value.split(" ")
        if len(parts) < 4 or not all(parts):
            raise SdpParseError(
                "m= needs <media> <port> <proto> <fmt>... separated by single spaces: "
                f"{_excerpt(value)}",
                line=line,
            )
        media, port_text, proto, *formats = parts
        match = _PORT_RE.fullmatch(port_text)
        if match is None:
            raise SdpParseError(f"m= port {_excerpt(port_text)} is not a number", line=line)
        port = int(match.group(1))
        if port > 65535:
            raise SdpParseError(f"m= port {port} is above 65535", line=line)
        count = None if match.group(2) is None else int(match.group(2))
        if count == 0:
            raise SdpParseError("m= number of ports is 0", line=line)
        for proto_part in proto.split("/"):
            _token(proto_part, "m= protocol", line)
        for fmt in formats:
            _token(fmt, "m= format", line)
        return cls(
            media=_token(media, "m= media", line),
            port=port,
            port_count=count,
            proto=proto,
            formats=tuple(formats),
        )


@dataclass(frozen=True, kw_only=True)
class SdpSession:
    """A whole session description (RFC 4566 5)."""

    version: int = 0
    """``v=``, always 0."""
    origin: SdpOrigin
    """``o=``."""
    session_name: str = "-"
    """``s=``."""
    information: str | None = None
    """``i=``."""
    uri: str | None = None
    """``u=``."""
    emails: tuple[str, ...] = ()
    """``e=`` lines."""
    phones: tuple[str, ...] = ()
    """``p=`` lines."""
    connection: SdpConnection | None = None
    """The session-level ``c=``, the default for media without their own."""
    bandwidths: tuple[SdpBandwidth, ...] = ()
    """Session-level ``b=`` lines."""
    timings: tuple[SdpTiming, ...] = (SdpTiming(),)
    """``t=`` lines with their ``r=`` lines; at least one."""
    time_zones: str | None = None
    """``z=``, as written."""
    key: str | None = field(default=None, repr=False)
    """``k=`` (obsolete encryption key). Never shown."""
    attributes: tuple[SdpAttribute, ...] = ()
    """Session-level ``a=`` lines, in order."""
    media: tuple[SdpMedia, ...] = ()
    """The media descriptions, in order."""

    def get_attributes(self, name: str) -> tuple[SdpAttribute, ...]:
        """The session-level attributes called ``name`` (case-insensitive), in order."""
        return _find(self.attributes, name)

    def has_attribute(self, name: str) -> bool:
        """Whether a session-level attribute called ``name`` is present."""
        return bool(self.get_attributes(name))

    def connection_for(self, media: SdpMedia) -> SdpConnection | None:
        """The connection that applies to ``media``: its own, else the session's."""
        return media.connection or self.connection

    def lines(self) -> list[str]:
        """Every line, canonical order."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={e}" for e in self.emails)
        out.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={b}" for b in self.bandwidths)
        for timing in self.timings:
            out.extend(timing.lines())
        if self.time_zones is not None:
            out.append(f"z={self.time_zones}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"a={a}" for a in self.attributes)
        for media in self.media:
            out.extend(media.lines())
        return out

    def __bytes__(self) -> bytes:
        return ("\r\n".join(self.lines()) + "\r\n").encode("utf-8")

    def redacted(self) -> str:
        """The body as text with every key replaced: the only form fit for a log."""
        return redact("\r\n".join(self.lines()) + "\r\n")

    @classmethod
    def parse(cls, data: bytes) -> SdpSession:
        """Parse an SDP body; raises :class:`SdpParseError` when it is malformed."""
        return _Parser(data).parse()


def parse(data: bytes) -> SdpSession:
    """Parse an SDP body: :meth:`SdpSession.parse`."""
    return SdpSession.parse(data)


class _Section:
    """The lines of one section as they are read, before they become a dataclass."""

    def __init__(self, start_line: int) -> None:
        self.start_line = start_line
        self.singles: dict[str, str] = {}
        self.connections: list[SdpConnection] = []
        self.bandwidths: list[SdpBandwidth] = []
        self.attributes: list[SdpAttribute] = []
        self.emails: list[str] = []
        self.phones: list[str] = []
        self.timings: list[SdpTiming] = []
        self.count = 0


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def _text_lines(self) -> list[str]:
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise SdpParseError(f"SDP body must be bytes, not {type(self.data).__name__}")
        if len(self.data) == 0:
            raise SdpParseError("SDP body is empty")
        if len(self.data) > MAX_SDP_BYTES:
            raise SdpParseError(
                f"SDP body is {len(self.data)} bytes, over the limit of {MAX_SDP_BYTES}"
            )
        try:
            text = bytes(self.data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpParseError(f"SDP body is not UTF-8 (byte {exc.start})") from None
        # RFC 4566 5: lines end in CRLF, but parsers should also accept a bare LF.
        lines = text.split("\n")
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
        while lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise SdpParseError("SDP body has no lines")
        return lines

    def parse(self) -> SdpSession:
        lines = self._text_lines()
        session = _Section(1)
        media: list[tuple[SdpMedia, _Section]] = []
        current = session
        for number, text in enumerate(lines, start=1):
            if len(text) > MAX_LINE_LENGTH:
                raise SdpParseError(
                    f"line is {len(text)} characters, over the limit of {MAX_LINE_LENGTH}",
                    line=number,
                )
            if "\r" in text or "\x00" in text:
                raise SdpParseError("line contains a bare CR or a NUL", line=number)
            if text == "":
                raise SdpParseError("line is empty", line=number)
            if number == 1 and not text.startswith("v="):
                raise SdpParseError(
                    f"an SDP body starts with v=, not {_excerpt(text)}", line=number
                )
            if len(text) < 2 or text[1] != "=":
                raise SdpParseError(f"is not <type>=<value>: {_excerpt(text)}", line=number)
            kind, value = text[0], text[2:]
            if kind not in _TYPE_LETTERS:
                # RFC 4566 5: a description with an unknown type letter must be ignored.
                raise SdpParseError(f"unknown type letter {kind!r}", line=number)
            if number == 1:
                if kind != "v":
                    raise SdpParseError("an SDP body starts with v=", line=number)
                if value != "0":
                    raise SdpParseError(f"v={_excerpt(value)} is not version 0", line=number)
                continue
            if kind == "v":
                raise SdpParseError("v= appears again", line=number)
            if kind == "m":
                if len(media) >= MAX_MEDIA:
                    raise SdpParseError(f"more than {MAX_MEDIA} m= lines", line=number)
                current = _Section(number)
                media.append((SdpMedia._parse_m_line(value, number), current))
                continue
            current.count += 1
            if current.count > MAX_LINES_PER_SECTION:
                raise SdpParseError(
                    f"more than {MAX_LINES_PER_SECTION} lines in one section", line=number
                )
            self._line(current, kind, value, number, is_session=current is session)
        return self._build(session, media)

    @staticmethod
    def _line(section: _Section, kind: str, value: str, number: int, *, is_session: bool) -> None:
        where = "session" if is_session else "media"
        if kind == "a":
            section.attributes.append(SdpAttribute.parse(value, number))
        elif kind == "b":
            section.bandwidths.append(SdpBandwidth.parse(value, number))
        elif kind == "c":
            if is_session and section.connections:
                raise SdpParseError("a second session-level c= line", line=number)
            section.connections.append(SdpConnection.parse(value, number))
        elif kind in "ik":
            if kind in section.singles:
                raise SdpParseError(f"a second {where}-level {kind}= line", line=number)
            section.singles[kind] = value
        elif not is_session:
            raise SdpParseError(f"{kind}= is not allowed in a media section", line=number)
        elif kind == "o":
            if "o" in section.singles:
                raise SdpParseError("a second o= line", line=number)
            SdpOrigin.parse(value, number)
            section.singles["o"] = value
            section.singles["o#"] = str(number)
        elif kind in "suz":
            if kind in section.singles:
                raise SdpParseError(f"a second {kind}= line", line=number)
            section.singles[kind] = value
        elif kind == "e":
            section.emails.append(value)
        elif kind == "p":
            section.phones.append(value)
        elif kind == "t":
            section.timings.append(SdpTiming.parse(value, number))
        elif kind == "r":
            if not section.timings:
                raise SdpParseError("r= before any t= line", line=number)
            last = section.timings[-1]
            section.timings[-1] = SdpTiming(
                start=last.start, stop=last.stop, repeats=(*last.repeats, value)
            )

    @staticmethod
    def _build(session: _Section, media_sections: list[tuple[SdpMedia, _Section]]) -> SdpSession:
        singles = session.singles
        if "o" not in singles:
            raise SdpParseError("no o= line (RFC 4566 5.2 requires one)")
        if "s" not in singles:
            raise SdpParseError("no s= line (RFC 4566 5.3 requires one)")
        if not session.timings:
            raise SdpParseError("no t= line (RFC 4566 5.9 requires one)")
        session_connection = session.connections[0] if session.connections else None
        media: list[SdpMedia] = []
        for index, (m_line, section) in enumerate(media_sections, start=1):
            if session_connection is None and not section.connections:
                raise SdpParseError(
                    f"media {index} ({m_line.media}) has no c= line and the session has "
                    "none (RFC 4566 5.7)",
                    line=section.start_line,
                )
            media.append(
                replace(
                    m_line,
                    information=section.singles.get("i"),
                    connections=tuple(section.connections),
                    bandwidths=tuple(section.bandwidths),
                    key=section.singles.get("k"),
                    attributes=tuple(section.attributes),
                )
            )
        return SdpSession(
            origin=SdpOrigin.parse(singles["o"], int(singles["o#"])),
            session_name=singles["s"],
            information=singles.get("i"),
            uri=singles.get("u"),
            emails=tuple(session.emails),
            phones=tuple(session.phones),
            connection=session_connection,
            bandwidths=tuple(session.bandwidths),
            timings=tuple(session.timings),
            time_zones=singles.get("z"),
            key=singles.get("k"),
            attributes=tuple(session.attributes),
            media=tuple(media),
        )
