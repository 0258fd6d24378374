"""Applying the phone XML to a model and firmware: the PhoneConfig and the report."""

from __future__ import annotations

import pytest
from cryptography import x509

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.firmware import profile_for
from phone_sim.phone.config import PhoneConfig
from phone_sim.phone.registration import RegistrationSettings
from phone_sim.provisioning.apply import apply_phone_xml, phone_xml_from_config
from phone_sim.provisioning.phone_xml import PhoneXmlError, parse_phone_xml
from phone_sim.tls.client import TrustStore
from phone_sim.tls.pki import make_server_identity

ACCOUNT = ('<accounts><account index="0" username="101" password="1234">'
           '<host_primary server="pbx" port="5061" transport="tls" media_encryption="sdes"/>'
           "</account></accounts>")


def _doc(body: str = "", accounts: str = ACCOUNT) -> bytes:
    return f"<config>{body}{accounts}</config>".encode()


def test_a_vendor_style_document_becomes_a_phone_config() -> None:
    doc = parse_phone_xml(_doc(
        '<setting id="config_server_url" value="sip:proxy@pbx:5061;transport=tls"/>'
        '<setting id="udp_ka_interval" value="25"/>'
    ))
    done = apply_phone_xml(doc, model="D65", firmware="2_9_2", mac="00:0F:D3:01:02:03")
    config = done.config
    assert config.profile == profile_for("D65", "2_9_2")
    assert config.mac == "000fd3010203"
    assert config.primary_account.host_primary.transport is SipTransport.TLS
    assert config.registration.udp_ka_interval == 25.0
    assert done.config_server_url == "sip:proxy@pbx:5061;transport=tls"
    assert done.check_sync and done.upgrade is None and done.notices == ()


def test_wildcard_setting() -> None:
    on = _doc('<setting id="tls_allow_wildcard_certs" value="1"/>')
    done = apply_phone_xml(parse_phone_xml(on), model="D80", firmware="1_12_1")
    assert done.config.profile.allow_wildcard
    with pytest.raises(PhoneXmlError, match=r"tls_allow_wildcard_certs.*first appears in") as info:
        apply_phone_xml(parse_phone_xml(on), model="D65", firmware="2_9_1")
    assert info.value.element == "setting" and info.value.attribute == "value"
    off = _doc('<setting id="tls_allow_wildcard_certs" value="0"/>')
    assert not apply_phone_xml(parse_phone_xml(off), model="D65",
                               firmware="2_9_1").config.profile.allow_wildcard


def test_a_disabled_transport_refuses_the_account() -> None:
    doc = parse_phone_xml(_doc('<setting id="transport_tls_allowed" value="0"/>'))
    with pytest.raises(PhoneXmlError, match=r'transport="tls".*transport_tls_allowed'):
        apply_phone_xml(doc, model="D65")
    disabled = ACCOUNT.replace('index="0"', 'index="0" status="0"')
    doc = parse_phone_xml(_doc('<setting id="transport_tls_allowed" value="0"/>', disabled))
    assert not apply_phone_xml(doc, model="D65").config.accounts[0].enabled


def test_private_ca_joins_the_trust_store() -> None:
    ca_pem, _, _ = make_server_identity(["pbx.phone-sim.test"])
    other_pem, _, _ = make_server_identity(["other.phone-sim.test"])
    doc = parse_phone_xml(_doc(f'<certs><cert type="root_ca">{ca_pem.decode()}</cert></certs>'))
    base = TrustStore.from_pem(other_pem, public_roots=False)
    config = apply_phone_xml(doc, model="D65", trust=base).config
    assert config.trust.public_roots is False
    assert config.trust.ca_certificates == (
        x509.load_pem_x509_certificate(other_pem), x509.load_pem_x509_certificate(ca_pem))
    again = apply_phone_xml(doc, model="D65", trust=config.trust).config
    assert again.trust == config.trust  # not added twice


def test_firmware_upgrade_is_reported_never_applied() -> None:
    doc = parse_phone_xml(_doc(
        '<firmwares><firmware model="D65" version="2_9_22" url="http://pbx/fw/D65.eff"/>'
        '<firmware model="D80" version="1_12_1"/></firmwares>'
    ))
    done = apply_phone_xml(doc, model="D65", firmware="2_9_2")
    assert done.upgrade is not None
    assert done.upgrade.text == (
        "the phone would upgrade from 2_9_2 to 2_9_22 (http://pbx/fw/D65.eff)"
    )
    assert done.config.profile.firmware == "2_9_2"
    assert [n.kind for n in done.notices] == ["firmware-upgrade"]
    same = apply_phone_xml(doc, model="D80", firmware="1_12_1")
    assert same.upgrade is None


def test_what_is_not_applied_is_reported() -> None:
    doc = parse_phone_xml(_doc(
        '<setting id="ntp_server" value="pool.ntp.org"/>'
        '<setting id="login_password" value="9876"/>'
        '<setting id="blf_page" value="2"/><contacts/>'
    ))
    done = apply_phone_xml(doc, model="D65")
    texts = [n.text for n in done.notices]
    assert "setting ntp_server='pool.ntp.org' is not used by phone-sim" in texts
    assert "unknown setting 'blf_page' kept, not applied" in texts
    assert "element <config/contacts> kept, not applied" in texts
    assert not any("9876" in t for t in texts)


def test_too_many_lines_for_the_model() -> None:
    accounts = "".join(
        f'<account index="{i}" username="10{i}" password="p"><host_primary server="pbx"/>'
        "</account>"
        for i in range(3)
    )
    doc = parse_phone_xml(_doc("", f"<accounts>{accounts}</accounts>"))
    assert len(apply_phone_xml(doc, model="D65").config.accounts) == 3
    with pytest.raises(PhoneXmlError, match="D40 has 2 lines"):
        apply_phone_xml(doc, model="D40")
    with pytest.raises(PhoneXmlError, match="no <account>"):
        apply_phone_xml(parse_phone_xml(b"<config/>"), model="D40")


def test_phone_config_round_trips_through_xml() -> None:
    ca_pem, _, _ = make_server_identity(["pbx.phone-sim.test"])
    host = SipHost(server="192.0.2.10", port=5061, transport=SipTransport.TLS,
                   media_encryption="sdes", reregister=120, retry=5.0, num_retries=1)
    config = PhoneConfig(
        profile=profile_for("D65", "2_9_2", allow_wildcard=True),
        accounts=(
            Account(username="101", password="s3cret", host_primary=host, index=0,
                    caller_id="Bobby J", line_label="Bobby J"),
            Account(username="102", password="x", authname="a102", index=3, register=False,
                    host_primary=SipHost(server="pbx"), host_alternate=host),
        ),
        trust=TrustStore.from_pem(ca_pem),
        registration=RegistrationSettings(udp_ka_interval=20.0),
    )
    doc = phone_xml_from_config(config, config_server_url="https://pbx/cfg")
    back = apply_phone_xml(parse_phone_xml(bytes(doc)), model="D65", firmware="2_9_2")
    assert back.config == config
    assert back.config_server_url == "https://pbx/cfg"
