"""Named size limits of the SIP parser, and the error it raises.

The limits bound what one message may cost us. A phone-sim process runs thousands of phones,
so a hostile or broken peer must not be able to make one connection hold megabytes. The
values are generous for anything a PBX sends a desk phone (the largest real messages are
provisioning bodies of a few kilobytes) and are named so callers and tests refer to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phone_sim.errors import ProtocolError

if TYPE_CHECKING:
    from phone_sim.sip.message import SipMessage

#: Most octets in the start line and header fields of one message, CRLFs included.
MAX_HEADER_BYTES = 65_536
#: Most octets in one header line (after unfolding) or in the start line.
MAX_LINE_LENGTH = 8_192
#: Most header fields in one message (one per line; a comma list counts once).
MAX_HEADER_COUNT = 256
#: Largest accepted message body, in octets (the Content-Length we accept).
MAX_BODY_BYTES = 262_144

#: RFC 3261 8.1.1.5: the CSeq sequence number MUST be less than 2**31.
MAX_CSEQ = 2**31 - 1
#: RFC 3261 20.22: Max-Forwards is 0-255.
MAX_FORWARDS_LIMIT = 255
#: RFC 3261 20.19 / 25.1: delta-seconds values are at most 2**32 - 1.
MAX_DELTA_SECONDS = 2**32 - 1

#: Status for a request whose header section breaks a limit (RFC 3261 21.5.14).
STATUS_MESSAGE_TOO_LARGE = 513
#: Status for a request whose body breaks the limit (RFC 3261 21.4.11).
STATUS_BODY_TOO_LARGE = 413


class SipParseError(ProtocolError):
    """A SIP message (or part of one) that does not follow the grammar of RFC 3261 25.

    ``status`` is the response a server should answer a *request* with (400 unless the RFC
    names another code, e.g. 505 for a wrong version); responses that fail to parse are
    dropped. ``partial`` holds the message as far as it could be split into a start line and
    header fields, so a caller can still build the error response from its Via, From, To,
    Call-ID and CSeq; it is ``None`` when even that failed.
    """

    def __init__(
        self, message: str, *, status: int | None = 400, partial: SipMessage | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.partial: SipMessage | None = partial
