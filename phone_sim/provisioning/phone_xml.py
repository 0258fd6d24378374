"""The phone's XML configuration (PROTOCOL-NOTES §3): parsed safely, and written back.

This is the one XML path of phone-sim. :func:`parse_phone_xml` reads a ``<config>`` document
(or a bare ``<account>``, for convenience) into a :class:`PhoneXml`; ``bytes(doc)`` writes
one in a canonical form, which the DPMA emulator serves. Parsing goes through ``defusedxml``:
an entity declaration (the "billion laughs" bomb), an external entity or an external DTD is
refused with a clear error and nothing is ever expanded.

What is understood:

- ``<setting id="..." value="..."/>``: the well-known ids of :data:`KNOWN_SETTINGS` are
  checked (a bad value names the setting); others are kept;
- ``<accounts><account ...>`` with ``<host_primary>``/``<host_alternate>``: each becomes an
  :class:`~phone_sim.account.Account`; attributes phone-sim does not use (``dial_plan``,
  ``passcode``...) are kept for the writer;
- ``<certs><cert type="root_ca">PEM</cert></certs>``: private root CAs for the phone's trust
  store. The element's content is not public ([?] PROTOCOL-NOTES §3); this is phone-sim's
  design, written down in ``docs/provisioning.md``;
- ``<firmwares><firmware model="D65" version="2_9_22" url="..."/></firmwares>``: the images
  the server offers (phone-sim reports an upgrade, never performs one);
- any other element is kept verbatim (the writer puts it back) and reported, never fatal.

Bad XML or an impossible value raises :class:`PhoneXmlError` naming the element and the
attribute. Turning a :class:`PhoneXml` into a phone is :mod:`phone_sim.provisioning.apply`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as SafeET
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from phone_sim.account import Account, AccountError, SipHost, SipTransport
from phone_sim.errors import UsageError
from phone_sim.firmware import FirmwareError, FirmwareVersion, Model
from phone_sim.provisioning.urls import ConfigUrlError, ConfigUrlUnsupported, parse_config_url

__all__ = [
    "KNOWN_SETTINGS",
    "MAX_XML_BYTES",
    "CaCertificate",
    "FirmwareImage",
    "PhoneXml",
    "PhoneXmlError",
    "UnknownElement",
    "XmlAccount",
    "parse_contacts_xml",
    "parse_phone_xml",
    "parse_xml_document",
]

#: The largest configuration document accepted (a real one is a few kilobytes).
MAX_XML_BYTES = 1_048_576

#: Setting ids phone-sim checks, with the kind of value each takes (PROTOCOL-NOTES §3).
KNOWN_SETTINGS: dict[str, str] = {
    "config_server_url": "url",
    "tls_allow_wildcard_certs": "bool",
    "transport_udp_enabled": "bool",
    "transport_tcp_enabled": "bool",
    "transport_tls_allowed": "bool",
    "transport_udp_port": "port",
    "transport_tcp_port": "port",
    "transport_tls_port": "port",
    "udp_ka_interval": "seconds",
    "enable_check_sync": "bool",
    "accept_local_calls": "bool",
    "login_password": "text",
    "ntp_server": "text",
    "time_zone": "text",
}

#: ``<account>`` attributes that become :class:`Account` fields.
_ACCOUNT_FIELDS = ("index", "status", "register", "account_id", "username", "authname",
                   "password", "line_label", "caller_id")
#: ``<account>`` attributes the phone knows and phone-sim keeps without using.
_ACCOUNT_KEPT = ("passcode", "dial_plan", "voicemail", "outbound_proxy", "outbound_port",
                 "conflict")
_HOST_ATTRIBUTES = ("server", "port", "transport", "media_encryption", "reregister", "retry",
                    "num_retries")
_UINT = re.compile(r"[0-9]{1,10}")
_DECIMAL = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")
_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
_NO_ENCRYPTION = {"", "none", "no", "0", "off"}


class PhoneXmlError(UsageError):
    """A phone configuration document that cannot be used: not XML, refused constructs
    (entities), or an impossible value. ``element`` and ``attribute`` say where."""

    def __init__(self, message: str, *, element: str | None = None,
                 attribute: str | None = None) -> None:
        super().__init__(message)
        self.element = element
        self.attribute = attribute


@dataclass(frozen=True, slots=True, kw_only=True)
class XmlAccount:
    """One ``<account>``: the :class:`Account` phone-sim uses and the attributes it keeps."""

    account: Account
    """The account (password hidden from ``repr()``)."""
    extra: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Other attributes as written (``passcode``, ``dial_plan``...), for the writer; hidden
    from ``repr()`` because ``passcode`` is a secret."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CaCertificate:
    """One ``<cert type="root_ca">``: a private root CA to load onto the phone."""

    certificate: x509.Certificate
    """The certificate."""
    name: str | None = None
    """The ``name`` attribute, if any (informational)."""

    @property
    def pem(self) -> str:
        """The certificate as PEM text."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class FirmwareImage:
    """One ``<firmware>`` the server offers."""

    model: Model
    """The model it is for."""
    version: FirmwareVersion
    """Its version."""
    url: str | None = None
    """Where the phone would download it from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownElement:
    """An element phone-sim does not interpret, kept so the writer can put it back."""

    path: str
    """Where it was: ``config/contacts``, ``config/accounts/foo``..."""
    xml: str
    """The element, serialized."""


@dataclass(frozen=True, kw_only=True)
class PhoneXml:
    """A phone configuration document (``<config>``)."""

    settings: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """``<setting id value>`` pairs in document order (``login_password`` and a config URL's
    credentials may be secret: hidden from ``repr()``)."""
    accounts: tuple[XmlAccount, ...] = ()
    """The ``<account>`` elements, in document order."""
    certificates: tuple[CaCertificate, ...] = ()
    """Private root CAs from ``<certs>``."""
    firmwares: tuple[FirmwareImage, ...] = ()
    """Images from ``<firmwares>``."""
    unknown: tuple[UnknownElement, ...] = ()
    """Elements kept without interpretation."""
    notes: tuple[str, ...] = field(default=(), compare=False)
    """What the parser noticed but did not refuse (unknown attributes), for the report."""

    def setting(self, id_: str) -> str | None:
        """The value of setting *id_* (the last one wins, as on the phone), or None."""
        value = None
        for name, text in self.settings:
            if name == id_:
                value = text
        return value

    def account(self, index: int | None = None) -> Account:
        """The account with ``index`` *index*; without *index*, the first registering one
        (else the first)."""
        if not self.accounts:
            raise PhoneXmlError("no <account> element in the configuration", element="account")
        accounts = [a.account for a in self.accounts]
        if index is not None:
            for account in accounts:
                if account.index == index:
                    return account
            raise PhoneXmlError(f'no <account index="{index}"> in the configuration',
                                element="account", attribute="index")
        registering = [a for a in accounts if a.register]
        return (registering or accounts)[0]

    def __bytes__(self) -> bytes:
        return "".join(_write(self)).encode("utf-8")

    def __repr__(self) -> str:
        return (
            f"<PhoneXml {len(self.settings)} settings, {len(self.accounts)} accounts, "
            f"{len(self.certificates)} certs, {len(self.firmwares)} firmwares, "
            f"{len(self.unknown)} unknown elements>"
        )


# --------------------------------------------------------------------------------------------
# Parsing


def parse_xml_document(data: bytes | str, what: str = "the phone configuration") -> ET.Element:
    """Parse *data* with defusedxml and return its root; :class:`PhoneXmlError` for anything
    that is not plain, well-formed XML within :data:`MAX_XML_BYTES`."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_XML_BYTES:
        raise PhoneXmlError(f"{what} is {len(raw)} bytes: more than the {MAX_XML_BYTES} "
                            "accepted")
    try:
        root: ET.Element = SafeET.fromstring(raw, forbid_dtd=False, forbid_entities=True,
                                             forbid_external=True)
    except EntitiesForbidden as exc:
        raise PhoneXmlError(
            f"{what} declares the XML entity {exc.name!r}: entity declarations are refused "
            "and never expanded (an entity bomb?)"
        ) from None
    except ExternalReferenceForbidden as exc:
        raise PhoneXmlError(
            f"{what} refers to an external resource ({exc.sysid or exc.pubid}): refused"
        ) from None
    except DTDForbidden:  # pragma: no cover - DTDs are allowed; only entities are refused
        raise PhoneXmlError(f"{what} has a DTD: refused") from None
    except ET.ParseError as exc:
        raise PhoneXmlError(f"{what} is not well-formed XML: {exc}") from None
    return root


def parse_phone_xml(data: bytes | str) -> PhoneXml:
    """Parse a ``<config>`` document (or a bare ``<account>``) into a :class:`PhoneXml`."""
    root = parse_xml_document(data)
    if root.tag == "account":
        wrapper = ET.Element("config")
        accounts = ET.SubElement(wrapper, "accounts")
        accounts.append(root)
        root = wrapper
    if root.tag != "config":
        raise PhoneXmlError(f"the phone configuration's root is <{root.tag}>, not <config>",
                            element=root.tag)
    return _Reader().read(root)


class _Reader:
    def __init__(self) -> None:
        self.settings: list[tuple[str, str]] = []
        self.accounts: list[XmlAccount] = []
        self.certs: list[CaCertificate] = []
        self.firmwares: list[FirmwareImage] = []
        self.unknown: list[UnknownElement] = []
        self.notes: list[str] = []

    def read(self, root: ET.Element) -> PhoneXml:
        _no_text(root, "config")
        for child in root:
            tag = child.tag
            if tag == "setting":
                self._setting(child)
            elif tag == "accounts":
                for el in child:
                    if el.tag == "account":
                        self.accounts.append(_account(el, self.notes))
                    else:
                        self._keep(el, "config/accounts")
            elif tag == "account":  # tolerated outside <accounts>
                self.accounts.append(_account(child, self.notes))
            elif tag == "certs":
                for el in child:
                    if el.tag == "cert":
                        self.certs.append(_cert(el))
                    else:
                        self._keep(el, "config/certs")
            elif tag == "firmwares":
                for el in child:
                    if el.tag == "firmware":
                        self.firmwares.append(_firmware(el))
                    else:
                        self._keep(el, "config/firmwares")
            else:
                self._keep(child, "config")
        indexes: dict[int, str] = {}
        for xa in self.accounts:
            a = xa.account
            if a.index in indexes:
                raise PhoneXmlError(
                    f'two <account> elements have index="{a.index}" '
                    f"({indexes[a.index]!r} and {a.username!r})",
                    element="account", attribute="index",
                )
            indexes[a.index] = a.username
        return PhoneXml(
            settings=tuple(self.settings),
            accounts=tuple(self.accounts),
            certificates=tuple(self.certs),
            firmwares=tuple(self.firmwares),
            unknown=tuple(self.unknown),
            notes=tuple(self.notes),
        )

    def _setting(self, el: ET.Element) -> None:
        id_ = el.get("id")
        if not id_:
            raise PhoneXmlError("<setting> without an id attribute", element="setting",
                                attribute="id")
        value = el.get("value")
        if value is None:
            value = (el.text or "").strip()
        self.settings.append((id_, check_setting(id_, value)))
        extra = sorted(set(el.attrib) - {"id", "value"})
        if extra:
            self.notes.append(f'<setting id="{id_}">: attributes {", ".join(extra)} ignored')

    def _keep(self, el: ET.Element, parent: str) -> None:
        text = ET.tostring(el, encoding="unicode").strip()
        self.unknown.append(UnknownElement(path=f"{parent}/{el.tag}", xml=text))


def _no_text(el: ET.Element, name: str) -> None:
    if el.text and el.text.strip():
        raise PhoneXmlError(f"<{name}> has text content {el.text.strip()[:40]!r}", element=name)


def check_setting(id_: str, value: str) -> str:
    """*value* if it suits setting *id_* (:data:`KNOWN_SETTINGS`); :class:`PhoneXmlError`
    naming the setting otherwise. Unknown ids pass unchecked."""
    kind = KNOWN_SETTINGS.get(id_)
    where = f'<setting id="{id_}"> value={value!r}'
    if kind == "bool" and value.strip().lower() not in _TRUE | _FALSE:
        raise PhoneXmlError(f"{where}: expected 0 or 1", element="setting", attribute="value")
    if kind == "port":
        text = value.strip()
        if not _UINT.fullmatch(text) or not 0 < int(text) < 65536:
            raise PhoneXmlError(f"{where}: expected a port 1-65535", element="setting",
                                attribute="value")
    if kind == "seconds":
        text = value.strip()
        if not _UINT.fullmatch(text) or int(text) > 86400:
            raise PhoneXmlError(f"{where}: expected whole seconds 0-86400", element="setting",
                                attribute="value")
    if kind == "url" and value.strip():
        try:
            parse_config_url(value)
        except ConfigUrlUnsupported:
            pass  # a valid URL phone-sim cannot use: the boot says so when it gets there
        except ConfigUrlError as exc:
            raise PhoneXmlError(f"{where}: {exc}", element="setting",
                                attribute="value") from None
    return value


def setting_flag(value: str | None, default: bool) -> bool:
    """A checked boolean setting's value."""
    if value is None or not value.strip():
        return default
    return value.strip().lower() in _TRUE


def _uint(el: ET.Element, name: str, where: str, default: int) -> int:
    text = el.get(name)
    if text is None or text.strip() == "":
        return default
    if not _UINT.fullmatch(text.strip()):
        raise PhoneXmlError(f"{where} {name}={text!r}: not a whole number", element=el.tag,
                            attribute=name)
    return int(text)


def _flag(el: ET.Element, name: str, where: str, default: bool) -> bool:
    text = el.get(name)
    if text is None or text.strip() == "":
        return default
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise PhoneXmlError(f"{where} {name}={text!r}: expected 0 or 1", element=el.tag,
                        attribute=name)


def _account(el: ET.Element, notes: list[str]) -> XmlAccount:
    index_text = el.get("index", "0")
    where = f'<account index="{index_text}">'
    index = _uint(el, "index", where, 0)
    username = el.get("username") or el.get("account_id")
    if not username:
        raise PhoneXmlError(f"{where} has neither username nor account_id", element="account",
                            attribute="username")
    where = f'<account index="{index}" username="{username}">'
    primary = el.find("host_primary")
    if primary is None:
        raise PhoneXmlError(f"{where} has no <host_primary>", element="host_primary")
    alternate = el.find("host_alternate")
    for child in el:
        if child.tag not in ("host_primary", "host_alternate"):
            notes.append(f"{where}: element <{child.tag}> ignored")
    try:
        account = Account(
            username=username,
            password=el.get("password") or "",
            authname=el.get("authname") or None,
            host_primary=_host(primary, where),
            host_alternate=_host(alternate, where) if alternate is not None else None,
            index=index,
            line_label=el.get("line_label") or None,
            caller_id=el.get("caller_id") or None,
            enabled=_flag(el, "status", where, True),
            register=_flag(el, "register", where, True),
        )
    except AccountError as exc:
        raise PhoneXmlError(f"{where}: {exc}", element="account") from None
    extra: list[tuple[str, str]] = []
    for name, value in el.attrib.items():
        if name in _ACCOUNT_FIELDS:
            continue
        extra.append((name, value))
        if name not in _ACCOUNT_KEPT:
            notes.append(f"{where}: attribute {name} kept, not used")
        elif name == "outbound_proxy" and value.strip():
            notes.append(f"{where}: outbound_proxy={value!r} is not used by phone-sim")
    if el.get("account_id") and el.get("username") and el.get("account_id") != username:
        notes.append(f"{where}: account_id {el.get('account_id')!r} differs from username")
    return XmlAccount(account=account, extra=tuple(extra))


def _host(el: ET.Element, account: str) -> SipHost:
    where = f"{account} <{el.tag}>"
    server = el.get("server")
    if not server:
        raise PhoneXmlError(f"{where} has no server attribute", element=el.tag,
                            attribute="server")
    transport_text = el.get("transport") or "udp"
    try:
        transport = SipTransport.parse(transport_text)
    except AccountError:
        raise PhoneXmlError(f"{where} transport={transport_text!r}: expected udp, tcp or tls",
                            element=el.tag, attribute="transport") from None
    port: int | None = None
    if (el.get("port") or "").strip():
        port = _uint(el, "port", where, 0)
        if not 0 < port < 65536:
            raise PhoneXmlError(f"{where} port={el.get('port')!r}: expected 1-65535",
                                element=el.tag, attribute="port")
    retry_text = (el.get("retry") or "").strip()
    retry = 30.0
    if retry_text:
        if not _DECIMAL.fullmatch(retry_text):
            raise PhoneXmlError(f"{where} retry={retry_text!r}: not a number of seconds",
                                element=el.tag, attribute="retry")
        retry = float(retry_text)
    encryption_text = (el.get("media_encryption") or "").strip().lower()
    if encryption_text in _NO_ENCRYPTION:
        encryption: str | None = None
    elif encryption_text == "sdes":
        encryption = "sdes"
    else:
        raise PhoneXmlError(
            f"{where} media_encryption={el.get('media_encryption')!r}: expected sdes or none",
            element=el.tag, attribute="media_encryption",
        )
    for name in el.attrib:
        if name not in _HOST_ATTRIBUTES:
            raise PhoneXmlError(f"{where}: unknown attribute {name}", element=el.tag,
                                attribute=name)
    try:
        return SipHost(
            server=server.strip(),
            port=port,
            transport=transport,
            reregister=_uint(el, "reregister", where, 300),
            retry=retry,
            num_retries=_uint(el, "num_retries", where, 3),
            media_encryption=encryption,
        )
    except AccountError as exc:
        attribute = next((a for a in _HOST_ATTRIBUTES if a in str(exc)), None)
        raise PhoneXmlError(f"{where}: {exc}", element=el.tag, attribute=attribute) from None


def _cert(el: ET.Element) -> CaCertificate:
    kind = el.get("type", "root_ca")
    name = el.get("name")
    where = f'<cert type="{kind}"' + (f' name="{name}">' if name else ">")
    if kind != "root_ca":
        raise PhoneXmlError(f"{where}: unknown type (phone-sim loads root_ca certificates)",
                            element="cert", attribute="type")
    text = (el.text or "").strip()
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise PhoneXmlError(f"{where} does not hold a PEM certificate", element="cert") from None
    if len(certs) != 1:
        raise PhoneXmlError(f"{where} holds {len(certs)} certificates: put one per <cert>",
                            element="cert")
    return CaCertificate(certificate=certs[0], name=name)


def _firmware(el: ET.Element) -> FirmwareImage:
    model_text = el.get("model") or ""
    version_text = el.get("version") or ""
    where = f'<firmware model="{model_text}" version="{version_text}">'
    try:
        model = Model.parse(model_text)
    except FirmwareError as exc:
        raise PhoneXmlError(f"{where}: {exc}", element="firmware", attribute="model") from None
    try:
        version = FirmwareVersion.parse(version_text)
    except FirmwareError as exc:
        raise PhoneXmlError(f"{where}: {exc}", element="firmware",
                            attribute="version") from None
    return FirmwareImage(model=model, version=version, url=el.get("url") or None)


def parse_contacts_xml(data: bytes | str) -> int:
    """Check a ``<mac>-contacts.xml`` document and return how many ``<contact>`` it holds."""
    root = parse_xml_document(data, "the contacts file")
    return sum(1 for el in root.iter("contact"))


# --------------------------------------------------------------------------------------------
# Writing


def _attrs(pairs: Iterable[tuple[str, str]]) -> str:
    return "".join(f" {name}={quoteattr(value)}" for name, value in pairs)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _host_pairs(host: SipHost) -> list[tuple[str, str]]:
    pairs = [("server", host.server)]
    if host.port is not None:
        pairs.append(("port", str(host.port)))
    pairs.append(("transport", str(host.transport)))
    if host.media_encryption is not None:
        pairs.append(("media_encryption", host.media_encryption))
    pairs += [("reregister", str(host.reregister)), ("retry", _number(host.retry)),
              ("num_retries", str(host.num_retries))]
    return pairs


def _account_pairs(xa: XmlAccount) -> list[tuple[str, str]]:
    a = xa.account
    pairs = [
        ("index", str(a.index)),
        ("status", "1" if a.enabled else "0"),
        ("register", "1" if a.register else "0"),
        ("account_id", a.username),
        ("username", a.username),
    ]
    if a.authname is not None:
        pairs.append(("authname", a.authname))
    pairs.append(("password", a.password))
    if a.line_label is not None:
        pairs.append(("line_label", a.line_label))
    if a.caller_id is not None:
        pairs.append(("caller_id", a.caller_id))
    pairs += [(n, v) for n, v in xa.extra if n != "account_id"]
    return pairs


def _write(doc: PhoneXml) -> Iterator[str]:
    yield '<?xml version="1.0" encoding="UTF-8"?>\n<config>\n'
    for id_, value in doc.settings:
        yield f"  <setting{_attrs([('id', id_), ('value', value)])}/>\n"
    if doc.accounts:
        yield "  <accounts>\n"
        for xa in doc.accounts:
            yield f"    <account{_attrs(_account_pairs(xa))}>\n"
            yield f"      <host_primary{_attrs(_host_pairs(xa.account.host_primary))}/>\n"
            if xa.account.host_alternate is not None:
                pairs = _host_pairs(xa.account.host_alternate)
                yield f"      <host_alternate{_attrs(pairs)}/>\n"
            yield "    </account>\n"
        yield "  </accounts>\n"
    if doc.certificates:
        yield "  <certs>\n"
        for cert in doc.certificates:
            pairs = [("type", "root_ca")] + ([("name", cert.name)] if cert.name else [])
            yield f"    <cert{_attrs(pairs)}>\n{escape(cert.pem)}    </cert>\n"
        yield "  </certs>\n"
    if doc.firmwares:
        yield "  <firmwares>\n"
        for fw in doc.firmwares:
            pairs = [("model", fw.model.value), ("version", str(fw.version))]
            if fw.url:
                pairs.append(("url", fw.url))
            yield f"    <firmware{_attrs(pairs)}/>\n"
        yield "  </firmwares>\n"
    # Unknown children of <accounts>/<certs>/<firmwares> go back into a container of their
    # own kind after the known elements (consecutive ones share it): the order of the unknown
    # elements is kept, not their place among known siblings.
    open_container: str | None = None
    for el in doc.unknown:
        parts = el.path.split("/")
        container = parts[1] if len(parts) > 2 else None
        if container != open_container:
            if open_container is not None:
                yield f"  </{open_container}>\n"
            if container is not None:
                yield f"  <{container}>\n"
            open_container = container
        yield f"{'    ' if container else '  '}{el.xml}\n"
    if open_container is not None:
        yield f"  </{open_container}>\n"
    yield "</config>\n"
