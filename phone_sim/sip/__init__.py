"""SIP, sans-I/O: messages, stream framing, request validation (and, beside them, the
transaction, dialog and digest layers).

The message layer (this package's ``message``, ``headers``, ``uri``, ``framer``, ``validate``
and ``limits`` modules) turns bytes into :class:`SipRequest` / :class:`SipResponse` and back.
See ``docs/sip-messages.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phone_sim._lazy import lazy_exports
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

#: The user agent core (transactions, dialogs, digest) loads on first use (PEP 562): the
#: message layer alone stays light.
_EXPORTS: dict[str, str] = {
    "UaConfig": "phone_sim.sip.ua",
    "UserAgent": "phone_sim.sip.ua",
}

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
    "UaConfig",
    "UserAgent",
    "Via",
    "is_keepalive",
    "parse_message",
    "validate_request",
]

if TYPE_CHECKING:
    from phone_sim.sip.ua import UaConfig, UserAgent

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
