"""SIP, sans-I/O: messages, stream framing, request validation (and, beside them, the
transaction, dialog and digest layers).

The message layer (this package's ``message``, ``headers``, ``uri``, ``framer``, ``validate``
and ``limits`` modules) turns bytes into :class:`SipRequest` / :class:`SipResponse` and back.
See ``docs/sip-messages.md``.
"""

from __future__ import annotations

from phone_sim.sip.framer import (
    FramingError,
    KeepAlivePingReceived,
    KeepAlivePongReceived,
    MessageRejected,
    StreamFramer,
)
from phone_sim.sip.headers import CSeq, Headers, HeaderValueError, NameAddr, Via
from phone_sim.sip.limits import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_LINE_LENGTH,
    SipParseError,
)
from phone_sim.sip.message import (
    REASON_PHRASES,
    SipMessage,
    SipRequest,
    SipResponse,
    is_keepalive,
    parse_message,
)
from phone_sim.sip.uri import SipUri
from phone_sim.sip.validate import validate_request

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_COUNT",
    "MAX_LINE_LENGTH",
    "REASON_PHRASES",
    "CSeq",
    "FramingError",
    "HeaderValueError",
    "Headers",
    "KeepAlivePingReceived",
    "KeepAlivePongReceived",
    "MessageRejected",
    "NameAddr",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "StreamFramer",
    "Via",
    "is_keepalive",
    "parse_message",
    "validate_request",
]
