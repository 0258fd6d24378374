"""The bodies of the DPMA configuration exchange over SIP MESSAGE, behind one interface.

What is public (PROTOCOL-NOTES §2): the phone sends a MESSAGE to ``sip:proxy@server``; DPMA
answers with a MESSAGE of its own to the phone's source address; phone applications use a
Switchvox-style envelope, ``<request method="...">`` and
``<response method="..."><result>...</result></response>``. The bodies themselves, their
Content-Type and how the phone identifies itself are **not** public. :class:`PhoneSimExchange`
is phone-sim's own design on that model, written down with a transcript in
``docs/provisioning.md``:

- the request carries ``<parameters>`` with ``mac``, ``model``, ``firmware`` and, when the
  phone has one, ``pin``;
- a success carries the document (``<config>`` or ``<contacts>``) as the only child of
  ``<result>``;
- a failure carries ``<errors><error code="..." message="..."/></errors>`` (Switchvox's
  error form); ``code`` is one of :data:`ERROR_CODES`.

Both ends use :class:`ConfigExchange` only, so a captured real exchange can replace this one
in one place (a class with the same four methods and a ``content_type``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Protocol
from xml.sax.saxutils import escape, quoteattr

from phone_sim.errors import ProtocolError
from phone_sim.provisioning.phone_xml import PhoneXmlError, parse_xml_document

__all__ = [
    "CONFIG_METHOD",
    "CONTACTS_METHOD",
    "ERROR_CODES",
    "ConfigExchange",
    "ConfigReply",
    "ConfigRequest",
    "ExchangeError",
    "PhoneSimExchange",
]

#: The request for the phone's configuration document (``<mac>.cfg`` over HTTP).
CONFIG_METHOD = "dpma.phone.getConfig"
#: The request for the phone's contacts (``<mac>-contacts.xml`` over HTTP).
CONTACTS_METHOD = "dpma.phone.getContacts"
#: Error codes of a refused request: ``refused`` (unknown phone or wrong PIN: one answer for
#: both, so nobody can probe which MACs exist), ``pin-required`` (config_auth asks for a PIN
#: and the request has none), ``no-network`` (no network of the server serves the phone's
#: address), ``bad-request`` (the request could not be read), ``not-found`` (no such
#: document, e.g. no contacts).
ERROR_CODES = ("refused", "pin-required", "no-network", "bad-request", "not-found")
_MAC = re.compile(r"[0-9a-f]{12}")
_TOKEN = re.compile(r"[A-Za-z0-9_.*#-]{1,64}")


class ExchangeError(ProtocolError):
    """A configuration request or reply body that does not follow the exchange."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigRequest:
    """What the phone asks for and how it identifies itself."""

    method: str
    """:data:`CONFIG_METHOD` or :data:`CONTACTS_METHOD`."""
    mac: str
    """The phone's MAC, 12 lower-case hex digits."""
    model: str
    """``D65``..."""
    firmware: str
    """``2_9_2``..."""
    pin: str | None = field(default=None, repr=False)
    """The PIN the user gave, if any; never in ``repr()``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReply:
    """The server's answer: a document, or an error."""

    method: str
    """The method answered."""
    document: bytes | None = field(default=None, repr=False)
    """The document (``<config>`` or ``<contacts>``) on success; it holds passwords, so it
    is not in ``repr()``."""
    error_code: str | None = None
    """One of :data:`ERROR_CODES` on failure."""
    error_message: str | None = None
    """The server's words on failure."""

    @property
    def ok(self) -> bool:
        """Whether it carries a document."""
        return self.document is not None


class ConfigExchange(Protocol):
    """How the bodies of the MESSAGE exchange are written and read, at both ends."""

    content_type: str
    """The Content-Type of both MESSAGEs."""

    def encode_request(self, request: ConfigRequest) -> bytes:
        """The phone's MESSAGE body."""
        ...

    def decode_request(self, body: bytes) -> ConfigRequest:
        """Read the phone's body; :class:`ExchangeError` if it cannot."""
        ...

    def encode_reply(self, reply: ConfigReply) -> bytes:
        """The server's MESSAGE body."""
        ...

    def decode_reply(self, body: bytes) -> ConfigReply:
        """Read the server's body; :class:`ExchangeError` if it cannot."""
        ...


class PhoneSimExchange:
    """phone-sim's exchange: Switchvox-style XML (see the module docstring)."""

    #: [?] DPMA's real Content-Type is not public: a vendor tree name says it is ours.
    content_type = "application/vnd.phone-sim.dpma+xml"

    def encode_request(self, request: ConfigRequest) -> bytes:
        """``<request method><parameters><mac/><model/><firmware/>[<pin/>]</parameters>``."""
        params = [("mac", request.mac), ("model", request.model),
                  ("firmware", request.firmware)]
        if request.pin is not None:
            params.append(("pin", request.pin))
        inner = "".join(f"    <{n}>{escape(v)}</{n}>\n" for n, v in params)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<request method={quoteattr(request.method)}>\n"
            f"  <parameters>\n{inner}  </parameters>\n</request>\n"
        ).encode()

    def decode_request(self, body: bytes) -> ConfigRequest:
        """Read a request body."""
        root = _parse(body, "the configuration request")
        if root.tag != "request":
            raise ExchangeError(f"the configuration request's root is <{root.tag}>, "
                                "not <request>")
        method = root.get("method") or ""
        if method not in (CONFIG_METHOD, CONTACTS_METHOD):
            raise ExchangeError(f"unknown request method {method!r}")
        params = root.find("parameters")
        if params is None:
            raise ExchangeError("the configuration request has no <parameters>")
        values = {child.tag: (child.text or "").strip() for child in params}
        mac = values.get("mac", "").lower()
        if not _MAC.fullmatch(mac):
            raise ExchangeError(f"<mac> {values.get('mac', '')[:40]!r} is not 12 hex digits")
        for name in ("model", "firmware"):
            if not _TOKEN.fullmatch(values.get(name, "")):
                raise ExchangeError(f"<{name}> missing or malformed")
        pin = values.get("pin")
        if pin is not None and not _TOKEN.fullmatch(pin):
            raise ExchangeError("<pin> is malformed")
        return ConfigRequest(method=method, mac=mac, model=values["model"],
                             firmware=values["firmware"], pin=pin)

    def encode_reply(self, reply: ConfigReply) -> bytes:
        """``<response method><result>DOCUMENT</result>`` or ``<errors><error/></errors>``."""
        head = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<response method={quoteattr(reply.method)}>\n")
        if reply.document is not None:
            root = parse_xml_document(reply.document, "the document to send")
            ET.indent(root, space="  ", level=2)  # text content (a PEM) is left as it is
            inner = ET.tostring(root, encoding="unicode")
            return (head + f"  <result>\n    {inner}\n  </result>\n</response>\n").encode()
        code = reply.error_code or "refused"
        message = reply.error_message or code
        return (head + f"  <errors><error code={quoteattr(code)} "
                f"message={quoteattr(message)}/></errors>\n</response>\n").encode()

    def decode_reply(self, body: bytes) -> ConfigReply:
        """Read a reply body."""
        root = _parse(body, "the configuration reply")
        if root.tag != "response":
            raise ExchangeError(f"the configuration reply's root is <{root.tag}>, "
                                "not <response>")
        method = root.get("method") or ""
        result = root.find("result")
        if result is not None:
            children = list(result)
            if len(children) != 1:
                raise ExchangeError(f"<result> holds {len(children)} elements, not one document")
            document = ET.tostring(children[0], encoding="utf-8", xml_declaration=True)
            return ConfigReply(method=method, document=document)
        error = root.find("errors/error")
        if error is None:
            raise ExchangeError("the configuration reply has neither <result> nor <errors>")
        return ConfigReply(method=method, error_code=error.get("code") or "refused",
                           error_message=error.get("message") or None)


def _parse(body: bytes, what: str) -> ET.Element:
    try:
        return parse_xml_document(body, what)
    except PhoneXmlError as exc:
        raise ExchangeError(str(exc)) from None
