"""What a user agent server checks before it acts on a request (RFC 3261 8.2, RFC 4475 3.3).

The parser accepts anything that follows the grammar. :func:`validate_request` decides
whether a phone can act on it, and if not returns the response to send:

- 400 when a mandatory header field is missing or repeated (RFC 3261 8.1.1; RFC 4475
  ``insuf``, ``multi01``); a Max-Forwards is not required, so RFC 2543 requests pass;
- 405 with ``Allow`` for a method the phone does not implement (8.2.1; a phone is not a
  registrar, so REGISTER gets 405);
- 416 for a Request-URI scheme it does not know (8.2.2.1; ``unkscm``);
- 420 with ``Unsupported`` for a ``Require`` option tag it does not support (8.2.2.3;
  ``bext01``; ``Proxy-Require`` is for proxies and ignored);
- 415 with ``Accept``/``Accept-Encoding`` for a body it cannot read (8.2.3; ``invut``),
  unless its Content-Disposition says ``handling=optional`` (20.11), and 415 for a
  disposition type it does not know.

ACK is never answered (RFC 3261 17.2.3): the function returns ``None`` for it. Whether an
INVITE's SDP is acceptable (406/488) is the call layer's decision, not this module's.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse

__all__ = [
    "DEFAULT_ACCEPT",
    "DEFAULT_METHODS",
    "KNOWN_SCHEMES",
    "validate_request",
]

#: Methods answered by default; the user agent passes the Allow list it really implements.
DEFAULT_METHODS: tuple[str, ...] = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "MESSAGE",
    "NOTIFY",
)

#: Body types understood per method; a method not listed accepts any type.
DEFAULT_ACCEPT: Mapping[str, tuple[str, ...]] = {
    "INVITE": ("application/sdp",),
    "ACK": ("application/sdp",),
    "UPDATE": ("application/sdp",),
    "PRACK": ("application/sdp",),
    "OPTIONS": ("application/sdp",),
    "BYE": ("application/sdp",),
    "CANCEL": ("application/sdp",),
}

#: URI schemes a phone recognises in a Request-URI (RFC 4475 3.3.6 and 3.3.7: an unknown
#: scheme gets 416, a known but atypical one such as ``soap.beep`` is processed like any other
#: URI the phone cannot route). The list is IANA's permanent schemes that can appear in SIP.
KNOWN_SCHEMES: frozenset[str] = frozenset(
    {
        "sip", "sips", "tel", "fax", "modem", "im", "pres", "mailto", "http", "https", "h323",
        "urn", "cid", "mid", "soap.beep", "soap.beeps", "xmpp", "iax", "iax2", "data",
    }
)  # fmt: skip

#: Content-Disposition types understood (RFC 3261 20.11, RFC 3959).
KNOWN_DISPOSITIONS: frozenset[str] = frozenset(
    {"session", "render", "icon", "alert", "early-session"}
)

#: Content codings understood (RFC 3261 20.12: identity only unless more are implemented).
ACCEPT_ENCODINGS: tuple[str, ...] = ("identity",)

_SINGLE_HEADERS = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type")
_REQUIRED_HEADERS = ("From", "To", "Call-ID", "CSeq", "Via")


def _bad_request(req: SipRequest, detail: str, to_tag: str | None) -> SipResponse:
    try:
        return req.create_response(400, f"Bad Request ({detail})", to_tag=to_tag)
    except SipParseError:
        return req.create_response(400, f"Bad Request ({detail})")


def validate_request(
    req: SipRequest,
    *,
    allowed_methods: Collection[str] = DEFAULT_METHODS,
    supported: Collection[str] = (),
    accept: Mapping[str, Collection[str]] = DEFAULT_ACCEPT,
    known_schemes: Collection[str] = KNOWN_SCHEMES,
    to_tag: str | None = None,
) -> SipResponse | None:
    """The error response a phone sends for ``req``, or ``None`` when it may process it.

    ``allowed_methods`` is the phone's Allow list, ``supported`` its option tags (Supported),
    ``accept`` the body types it reads per method. ``to_tag`` is added to the response's To
    when the request has none (RFC 3261 8.2.6.2).
    """
    h = req.headers
    # RFC 3261 8.1.1: the mandatory header fields, once each (RFC 4475 insuf, multi01).
    for name in _REQUIRED_HEADERS:
        if name not in h:
            if req.method == "ACK":
                return None
            return _bad_request(req, f"missing {name} header", to_tag)
    for name in _SINGLE_HEADERS:
        if h.count(name) > 1 or len(h.get_all(name)) > 1:
            if req.method == "ACK":
                return None
            return _bad_request(req, f"more than one {name} header", to_tag)
    if req.method == "ACK":
        return None
    try:
        req.cseq  # noqa: B018 - parsed and checked by the parser; re-raises if changed since
        req.from_  # noqa: B018
        req.to  # noqa: B018
        req.call_id  # noqa: B018
        req.vias  # noqa: B018
    except SipParseError as exc:
        return _bad_request(req, str(exc), to_tag)

    # RFC 3261 8.2.1: method inspection.
    if req.method not in allowed_methods:
        return req.create_response(
            405, to_tag=to_tag, headers=[("Allow", ", ".join(allowed_methods))]
        )

    # RFC 3261 8.2.2.1: the Request-URI scheme (RFC 4475 unkscm).
    if req.uri.scheme not in {s.lower() for s in known_schemes}:
        return req.create_response(416, to_tag=to_tag)

    # RFC 3261 8.2.2.3: Require (not for CANCEL; ACK returned above). RFC 4475 bext01.
    if req.method != "CANCEL":
        supported_l = {s.lower() for s in supported}
        unsupported = [t for t in req.tokens("Require") if t.lower() not in supported_l]
        if unsupported:
            return req.create_response(
                420, to_tag=to_tag, headers=[("Unsupported", ", ".join(unsupported))]
            )

    # RFC 3261 8.2.3: content processing (RFC 4475 invut).
    if req.body:
        media_type = req.media_type
        if media_type is None:
            return _bad_request(req, "body without Content-Type", to_tag)
        # RFC 3261 20.11: a body marked handling=optional may be ignored instead.
        disposition = (req.headers.get("Content-Disposition") or "").lower()
        optional = re.search(r";\s*handling\s*=\s*optional\b", disposition) is not None
        disposition_type = disposition.split(";", 1)[0].strip()
        if disposition_type and disposition_type not in KNOWN_DISPOSITIONS and not optional:
            return req.create_response(
                415, f"Unsupported Content-Disposition {disposition_type[:40]}", to_tag=to_tag
            )
        types = accept.get(req.method)
        if types is not None and media_type not in {t.lower() for t in types} and not optional:
            return req.create_response(415, to_tag=to_tag, headers=[("Accept", ", ".join(types))])
        encodings = [e.lower() for e in req.tokens("Content-Encoding")]
        if any(e not in ACCEPT_ENCODINGS for e in encodings):
            return req.create_response(
                415, to_tag=to_tag, headers=[("Accept-Encoding", ", ".join(ACCEPT_ENCODINGS))]
            )
    return None
