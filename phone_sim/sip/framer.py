"""Splitting a TLS/TCP byte stream into SIP messages (RFC 3261 18.3, RFC 5626 4.4.1).

:class:`StreamFramer` is sans-I/O: feed it whatever the connection delivered and it returns,
in order, the messages and keep-alives it completed. On a stream Content-Length is mandatory:
a message without one, with conflicting ones, or with a header section or body over the
limits cannot be delimited, so the framer raises :class:`SipParseError` and stays closed (the
transport drops the connection). A message that is well delimited but malformed inside (a bad
To, a CSeq mismatch) does not desynchronise the stream; it comes out as
:class:`MessageRejected`, so the transaction layer can answer it with its ``status``.
A framing error raises :class:`FramingError`, whose ``events`` keeps what the same call
completed before the error.

Keep-alives between messages: ``CRLFCRLF`` is a ping (:class:`KeepAlivePingReceived`; answer
with one CRLF) and a lone ``CRLF`` is a pong (:class:`KeepAlivePongReceived`). A CRLF that
arrives alone at the end of what was fed is taken as a pong at once rather than waiting for a
possible second one: pongs must be seen promptly for the RFC 5626 10-second check, and peers
send a ping's four octets together.
"""

from __future__ import annotations

from dataclasses import dataclass

from phone_sim.sip.limits import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    STATUS_MESSAGE_TOO_LARGE,
    SipParseError,
)
from phone_sim.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    _build,
    _partial,
    _split_header_lines,
    content_length,
)

__all__ = [
    "FramerEvent",
    "FramingError",
    "KeepAlivePingReceived",
    "KeepAlivePongReceived",
    "MessageRejected",
    "StreamFramer",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class KeepAlivePingReceived:
    """The peer sent a double-CRLF ping (RFC 5626 4.4.1); answer with a single CRLF."""


@dataclass(frozen=True, kw_only=True, slots=True)
class KeepAlivePongReceived:
    """The peer sent a single-CRLF pong, answering our ping."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageRejected:
    """A well-delimited message failed to parse; the stream stays usable."""

    #: Why it failed; ``error.status`` is the response to send (``None`` for a response:
    #: drop it) and ``error.partial`` the message as far as it was split.
    error: SipParseError


FramerEvent = (
    SipRequest | SipResponse | KeepAlivePingReceived | KeepAlivePongReceived | MessageRejected
)


class FramingError(SipParseError):
    """The stream can no longer be delimited; the connection must be dropped.

    ``events`` holds what the same :meth:`StreamFramer.feed` call completed before the error
    (a valid message followed by garbage in one segment is not lost).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 400,
        partial: SipMessage | None = None,
        events: list[FramerEvent],
    ) -> None:
        super().__init__(message, status=status, partial=partial)
        self.events = events


_PING = KeepAlivePingReceived()
_PONG = KeepAlivePongReceived()


class StreamFramer:
    """Delimits SIP messages on a stream by Content-Length; one instance per connection."""

    __slots__ = ("_buf", "_error", "_max_body", "_max_header", "_pending", "_scan")

    def __init__(
        self, *, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self._buf = bytearray()
        self._scan = 0
        self._pending: tuple[str, list[tuple[str, str]], int, int, SipParseError | None] | None = (
            None
        )
        self._error: SipParseError | None = None
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes

    @property
    def closed(self) -> bool:
        """Whether a framing error ended the stream."""
        return self._error is not None

    @property
    def buffered(self) -> int:
        """Octets received but not yet part of a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[FramerEvent]:
        """Add received octets; return the messages and keep-alives completed, in order.

        Raises :class:`FramingError` (a :class:`SipParseError`) on a framing error, with the
        events completed before it in ``error.events``; then on every later call.
        """
        if self._error is not None:
            raise FramingError(
                f"stream closed after a framing error: {self._error}", status=None, events=[]
            )
        events: list[FramerEvent] = []
        try:
            self._feed(data, events)
        except SipParseError as exc:
            self._buf.clear()
            self._pending = None
            error = FramingError(str(exc), status=exc.status, partial=exc.partial, events=events)
            self._error = error
            raise error from None
        return events

    def _feed(self, data: bytes, events: list[FramerEvent]) -> None:
        buf = self._buf
        buf += data
        while buf:
            if self._pending is None:
                if buf[0] == 0x0D:
                    # RFC 3261 7.5 / RFC 5626 4.4.1: CRLFs between messages are keep-alives.
                    if buf.startswith(b"\r\n\r\n"):
                        del buf[:4]
                        events.append(_PING)
                        continue
                    if buf.startswith(b"\r\n") and (len(buf) == 2 or buf[2] != 0x0D):
                        del buf[:2]
                        events.append(_PONG)
                        continue
                    if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                        break  # the rest of a ping is still on its way
                    raise SipParseError("stray CR between messages")
                end = buf.find(b"\r\n\r\n", self._scan)
                if end < 0:
                    if len(buf) > self._max_header:
                        raise SipParseError(
                            f"no end of header section within {self._max_header} octets",
                            status=STATUS_MESSAGE_TOO_LARGE,
                        )
                    self._scan = max(0, len(buf) - 3)
                    break
                self._scan = 0
                if end > self._max_header:
                    raise SipParseError(
                        f"header section of {end} octets exceeds {self._max_header}",
                        status=STATUS_MESSAGE_TOO_LARGE,
                    )
                head_error: SipParseError | None = None
                try:
                    start, entries = _split_header_lines(bytes(buf[:end]))
                except SipParseError as exc:
                    # A malformed header line spoils the message, not the stream, as long as
                    # the remaining lines still say where the message ends.
                    if exc.partial is None or exc.status != 400:
                        raise
                    head_error = exc
                    start, entries = "", exc.partial.headers.items()
                length = content_length(entries)
                if length is None:
                    raise SipParseError(
                        "message without Content-Length on a stream (RFC 3261 18.3)",
                        partial=_partial(start, entries),
                    )
                if length > self._max_body:
                    raise SipParseError(
                        f"Content-Length {length} exceeds {self._max_body}", status=413
                    )
                self._pending = (start, entries, end + 4, length, head_error)
            start, entries, body_at, length, head_error = self._pending
            if len(buf) < body_at + length:
                break
            body = bytes(buf[body_at : body_at + length])
            del buf[: body_at + length]
            self._pending = None
            if head_error is not None:
                events.append(MessageRejected(error=head_error))
                continue
            try:
                events.append(_build(start, entries, body))
            except SipParseError as exc:
                events.append(MessageRejected(error=exc))
