"""The SIP messages a user agent sends and receives, on the ``phone_sim.sip.wire`` logger.

Nothing is formatted unless a handler asked for DEBUG on that logger: the user agent pays
one ``isEnabledFor`` check per message. Secrets never reach a log record: SDES inline keys
(``a=crypto`` ``inline:``) and digest responses are replaced by :func:`redact_sip` before
the text is formed. Each record carries ``sip_direction`` (``sent``/``received``),
``sip_local`` (the user agent's Contact) and ``sip_peer`` (``host:port``) as attributes.
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "WIRE_LOGGER", "log_wire", "redact_sip", "wire_enabled"]

WIRE_LOGGER = logging.getLogger("phone_sim.sip.wire")
REDACTED = "[redacted]"

# RFC 4568 6.1: inline:<key||salt base64>[|lifetime][|MKI:length]; the key ends at "|", ";"
# (another key-param) or white space.
_INLINE_KEY = re.compile(r"(inline:)[^|;\s]+", re.IGNORECASE)
# RFC 3261 22.4 / RFC 7616: the digest response in Authorization or Proxy-Authorization.
_AUTH_LINE = re.compile(r"^((?:Proxy-)?Authorization\s*:.*)$", re.IGNORECASE | re.MULTILINE)
_RESPONSE = re.compile(r'(\bresponse\s*=\s*)(?:"[^"]*"|[^\s,]+)', re.IGNORECASE)


def redact_sip(text: str) -> str:
    """``text`` with every SDES inline key and digest response replaced by ``[redacted]``."""
    text = _INLINE_KEY.sub(rf"\g<1>{REDACTED}", text)
    return _AUTH_LINE.sub(lambda m: _RESPONSE.sub(rf'\g<1>"{REDACTED}"', m.group(1)), text)


def wire_enabled() -> bool:
    """Whether anyone listens to the wire log (check before serialising a message for it)."""
    return WIRE_LOGGER.isEnabledFor(logging.DEBUG)


def log_wire(direction: str, local: str, peer: tuple[str, int], data: bytes) -> None:
    """Log one message ``sent`` to or ``received`` from ``peer``, redacted."""
    if not WIRE_LOGGER.isEnabledFor(logging.DEBUG):
        return
    host, port = peer
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    text = redact_sip(data.decode("utf-8", errors="replace"))
    WIRE_LOGGER.debug(
        "%s %s %s\n%s", local, "->" if direction == "sent" else "<-", where, text,
        extra={"sip_direction": direction, "sip_local": local, "sip_peer": where},
    )
