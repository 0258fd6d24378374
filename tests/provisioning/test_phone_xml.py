"""The phone XML model: safe parsing, what each element becomes, errors, and the writer."""

from __future__ import annotations

import functools

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.errors import UsageError
from phone_sim.firmware import FirmwareVersion, Model
from phone_sim.provisioning.phone_xml import (
    MAX_XML_BYTES,
    CaCertificate,
    FirmwareImage,
    PhoneXml,
    PhoneXmlError,
    UnknownElement,
    XmlAccount,
    parse_contacts_xml,
    parse_phone_xml,
)
from phone_sim.tls.pki import make_server_identity

CONFIG = b"""<config>
  <setting id="config_server_url" value="sip:proxy@asterisk.example.com:5061;transport=tls"/>
  <accounts>
    <account index="0" status="1" register="1" account_id="101" username="101" authname="a101"
             password="1234" passcode="1234" line_label="Bobby J" caller_id="Bobby J">
      <host_primary server="asterisk.example.com" port="5061" transport="tls"
                    reregister="120" retry="10" num_retries="2" media_encryption="sdes"/>
      <host_alternate server="192.0.2.20" transport="udp"/>
    </account>
    <account index="1" register="0" username="102" password="x">
      <host_primary server="pbx2.example.com"/>
    </account>
  </accounts>
</config>"""


@functools.cache
def _ca_pem() -> str:
    ca_pem, _chain, _key = make_server_identity(["pbx.phone-sim.test"])
    return ca_pem.decode("ascii")


def test_loads_the_vendor_example() -> None:
    doc = parse_phone_xml(CONFIG)
    account = doc.account()
    assert account.username == "101" and account.auth_username == "a101"
    assert account.password == "1234"
    assert account.line_label == "Bobby J" and account.caller_id == "Bobby J"
    primary = account.host_primary
    assert primary == SipHost(server="asterisk.example.com", port=5061,
                              transport=SipTransport.TLS, reregister=120, retry=10.0,
                              num_retries=2, media_encryption="sdes")
    alternate = account.host_alternate
    assert alternate is not None
    assert alternate.transport is SipTransport.UDP and alternate.effective_port == 5060
    assert alternate.reregister == 300 and alternate.retry == 30.0
    assert account.hosts == (primary, alternate)
    assert doc.setting("config_server_url") == (
        "sip:proxy@asterisk.example.com:5061;transport=tls"
    )
    second = doc.account(1)
    assert second.username == "102" and not second.register and second.enabled


def test_picks_an_account_by_index() -> None:
    doc = parse_phone_xml(CONFIG)
    assert doc.account(1).host_primary.effective_port == 5060
    with pytest.raises(PhoneXmlError, match='index="4"'):
        doc.account(4)


def test_a_bare_account_element_loads() -> None:
    xml = '<account account_id="201" password="p"><host_primary server="pbx"/></account>'
    assert parse_phone_xml(xml).account().username == "201"


def test_kept_attributes_are_secret_in_repr() -> None:
    doc = parse_phone_xml(CONFIG)
    assert ("passcode", "1234") in doc.accounts[0].extra
    for text in (repr(doc), repr(doc.accounts[0]), repr(doc.account())):
        assert "1234" not in text


@pytest.mark.parametrize(
    ("xml", "message", "element", "attribute"),
    [
        ("<config>", "well-formed", None, None),
        ("<config/>", "no <account>", "account", None),
        ("<phone/>", "root is <phone>", "phone", None),
        ('<account password="p"><host_primary server="x"/></account>', "username", "account",
         "username"),
        ('<account username="1"/>', "host_primary", "host_primary", None),
        ('<account username="1"><host_primary/></account>', "server", "host_primary", "server"),
        ('<account username="1"><host_primary server="x" transport="sctp"/></account>',
         "transport", "host_primary", "transport"),
        ('<account username="1"><host_primary server="x" port="http"/></account>',
         "whole number", "host_primary", "port"),
        ('<account username="1"><host_primary server="x" port="70000"/></account>', "port",
         "host_primary", "port"),
        ('<account username="1"><host_primary server="x" port="²"/></account>', "port",
         "host_primary", "port"),
        ('<account username="1"><host_primary server="x" port="٥٠٦٠"/></account>', "port",
         "host_primary", "port"),
        ('<account username="1"><host_primary server="x" retry=" 3_0"/></account>', "retry",
         "host_primary", "retry"),
        ('<account username="1"><host_primary server="x" retry="0"/></account>', "retry",
         "host_primary", "retry"),
        ('<account username="1"><host_primary server="x" media_encryption="zrtp"/></account>',
         "media_encryption", "host_primary", "media_encryption"),
        ('<account username="1"><host_primary server="bad host"/></account>', "server",
         "host_primary", "server"),
        ('<account username="1"><host_primary server="x" colour="red"/></account>', "colour",
         "host_primary", "colour"),
        ('<account username="1" index="9"><host_primary server="x"/></account>', "index",
         "account", None),
        ('<account username="1" status="maybe"><host_primary server="x"/></account>', "status",
         "account", "status"),
        ('<config><setting value="1"/></config>', "without an id", "setting", "id"),
        ('<config><setting id="udp_ka_interval" value="-5"/></config>', "udp_ka_interval",
         "setting", "value"),
        ('<config><setting id="tls_allow_wildcard_certs" value="maybe"/></config>',
         "tls_allow_wildcard_certs", "setting", "value"),
        ('<config><setting id="transport_tls_port" value="0"/></config>', "transport_tls_port",
         "setting", "value"),
        ('<config><setting id="config_server_url" value="gopher://x"/></config>', "gopher",
         "setting", "value"),
        ('<config><certs><cert type="root_ca">not a cert</cert></certs></config>', "PEM",
         "cert", None),
        ('<config><certs><cert type="client">x</cert></certs></config>', "unknown type",
         "cert", "type"),
        ('<config><firmwares><firmware model="D99" version="2_9_2"/></firmwares></config>',
         "D99", "firmware", "model"),
        ('<config><firmwares><firmware model="D65" version="two"/></firmwares></config>',
         "two", "firmware", "version"),
        ('<config><accounts><account index="0" username="1"><host_primary server="a"/></account>'
         '<account index="0" username="2"><host_primary server="b"/></account></accounts>'
         "</config>", 'index="0"', "account", "index"),
    ],
)
def test_bad_configuration_names_the_element_and_attribute(
    xml: str, message: str, element: str | None, attribute: str | None
) -> None:
    with pytest.raises(PhoneXmlError, match=message) as info:
        parse_phone_xml(xml).account()
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert info.value.element == element
    if attribute is not None:
        assert info.value.attribute == attribute


def test_an_entity_bomb_is_refused_without_expansion() -> None:
    lol = "".join(
        f'<!ENTITY lol{n} "{"&lol" + str(n - 1) + ";" if n else "lol"}' + (
            f'&lol{n - 1};' * 9 if n else "") + '">'
        for n in range(10)
    )
    bomb = f'<?xml version="1.0"?><!DOCTYPE config [{lol}]><config>&lol9;</config>'
    with pytest.raises(PhoneXmlError, match=r"entity 'lol0'.*never expanded"):
        parse_phone_xml(bomb)


def test_an_external_entity_is_refused() -> None:
    xxe = ('<?xml version="1.0"?><!DOCTYPE config [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           "<config>&x;</config>")
    with pytest.raises(PhoneXmlError, match="entity"):
        parse_phone_xml(xxe)


def test_a_plain_doctype_is_harmless() -> None:
    doc = parse_phone_xml(b"<!DOCTYPE config><config/>")
    assert doc.accounts == ()


def test_oversized_documents_are_refused() -> None:
    with pytest.raises(PhoneXmlError, match="more than"):
        parse_phone_xml(b"<config>" + b" " * MAX_XML_BYTES + b"</config>")


def test_unknown_elements_are_kept_and_written_back() -> None:
    xml = b"""<config>
      <setting id="ringtone_volume" value="7"/>
      <contacts><contact first_name="A"/></contacts>
      <accounts><account username="1"><host_primary server="x"/><blf/></account><foo a="1"/>
      </accounts>
      <codecs><codec id="g722"/></codecs>
    </config>"""
    doc = parse_phone_xml(xml)
    assert [u.path for u in doc.unknown] == ["config/contacts", "config/accounts/foo",
                                             "config/codecs"]
    assert doc.setting("ringtone_volume") == "7"
    assert any("<blf>" in note for note in doc.notes)
    again = parse_phone_xml(bytes(doc))
    assert again == doc
    assert b'<contact first_name="A" />' in bytes(doc)


def test_certs_and_firmwares() -> None:
    pem = _ca_pem()
    xml = f"""<config>
      <certs><cert type="root_ca" name="lab">{pem}</cert></certs>
      <firmwares><firmware model="D65" version="2_9_22" url="http://pbx/D65.eff"/>
                 <firmware model="d80" version="1_12_1"/></firmwares>
    </config>"""
    doc = parse_phone_xml(xml)
    assert doc.certificates[0].name == "lab"
    assert doc.certificates[0].certificate == x509.load_pem_x509_certificate(pem.encode())
    assert doc.firmwares == (
        FirmwareImage(model=Model.D65, version=FirmwareVersion.parse("2_9_22"),
                      url="http://pbx/D65.eff"),
        FirmwareImage(model=Model.D80, version=FirmwareVersion.parse("1_12_1")),
    )
    assert parse_phone_xml(bytes(doc)) == doc


def test_writer_output_is_canonical() -> None:
    doc = parse_phone_xml(CONFIG)
    written = bytes(doc)
    assert written.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<config>\n')
    assert parse_phone_xml(written) == doc
    assert bytes(parse_phone_xml(written)) == written


def test_contacts_file() -> None:
    assert parse_contacts_xml(b"<contacts><contact/><contact/></contacts>") == 2
    with pytest.raises(PhoneXmlError, match="contacts file"):
        parse_contacts_xml(b"<contacts>")


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
_labels = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF,
                                         blacklist_characters='"\\'), max_size=20)
_hosts = st.builds(
    SipHost,
    server=st.sampled_from(["pbx.example.com", "192.0.2.10", "2001:db8::1", "lab"]),
    port=st.none() | st.integers(1, 65535),
    transport=st.sampled_from(list(SipTransport)),
    reregister=st.integers(0, 86400),
    retry=st.integers(1, 86400).map(float) | st.sampled_from([0.5, 2.25]),
    num_retries=st.integers(0, 1000),
    media_encryption=st.sampled_from([None, "sdes"]),
)


@st.composite
def _documents(draw: st.DrawFn) -> PhoneXml:
    indexes = draw(st.lists(st.integers(0, 5), unique=True, max_size=6))
    accounts = tuple(
        XmlAccount(
            account=Account(
                username=draw(_names), password=draw(_labels.filter(lambda s: "\r" not in s)),
                authname=draw(st.none() | _names), host_primary=draw(_hosts),
                host_alternate=draw(st.none() | _hosts), index=i,
                line_label=draw(st.none() | _labels.filter(bool)),
                caller_id=draw(st.none() | _labels.filter(bool)),
                enabled=draw(st.booleans()), register=draw(st.booleans()),
            ),
            extra=tuple(draw(st.lists(st.tuples(st.sampled_from(["dial_plan", "passcode"]),
                                                _labels), unique_by=lambda t: t[0]))),
        )
        for i in indexes
    )
    settings = draw(st.lists(st.tuples(_names, _labels), max_size=5))
    unknown = draw(st.lists(_names.map(lambda n: UnknownElement(
        path=f"config/x{n}", xml=f'<x{n} v="1" />')), max_size=3))
    return PhoneXml(settings=tuple(settings), accounts=accounts, unknown=tuple(unknown))


@given(_documents())
def test_round_trip(doc: PhoneXml) -> None:
    written = bytes(doc)
    assert parse_phone_xml(written) == doc
    assert bytes(parse_phone_xml(written)) == written


def test_certificate_pem_round_trip() -> None:
    cert = x509.load_pem_x509_certificate(_ca_pem().encode())
    doc = PhoneXml(certificates=(CaCertificate(certificate=cert, name="a&b"),))
    assert parse_phone_xml(bytes(doc)) == doc
