"""The DPMA emulator's core: the fixture's XML, config_auth, and what a phone is given."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from phone_sim.account import SipTransport
from phone_sim.provisioning.apply import apply_phone_xml
from phone_sim.provisioning.asterisk_conf import parse_asterisk_conf
from phone_sim.provisioning.dpma import REFUSED, Dpma, DpmaConfigError, DpmaSite
from phone_sim.provisioning.dpma_conf import DpmaConf, load_dpma_conf, read_dpma_conf
from phone_sim.provisioning.exchange import CONFIG_METHOD, CONTACTS_METHOD, ConfigRequest
from phone_sim.provisioning.phone_xml import parse_phone_xml
from phone_sim.tls.pki import make_server_identity

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dpma"
SITE = DpmaSite(address="192.0.2.10", sip_ports={"tls": 5061, "tcp": 5060, "udp": 5060})
MAC = "000fd3010203"


def _fixture() -> DpmaConf:
    return read_dpma_conf(FIXTURES / "res_digium_phone.conf", pjsip=FIXTURES / "pjsip.conf")


def _request(mac: str = MAC, pin: str | None = None,
             method: str = CONFIG_METHOD) -> ConfigRequest:
    return ConfigRequest(method=method, mac=mac, model="D65", firmware="2_9_2", pin=pin)


def test_the_fixture_conf_produces_the_fixture_xml() -> None:
    reply, served = Dpma(_fixture(), SITE).answer(_request(), "192.0.2.50")
    assert reply.ok and served.phone == "bobby" and served.error_code is None
    assert reply.document == (FIXTURES / f"{MAC}.cfg").read_bytes()


@pytest.mark.parametrize(("model", "firmware"),
                         [("D65", "2_9_2"), ("D40", "2_9_22"), ("D80", "1_12_1"),
                          ("D70", "2_3_9")])
def test_the_fixture_xml_configures_phones_as_the_vendor_page_says(model: str,
                                                                   firmware: str) -> None:
    doc = parse_phone_xml((FIXTURES / f"{MAC}.cfg").read_bytes())
    done = apply_phone_xml(doc, model=model, firmware=firmware, mac=MAC)
    config = done.config
    assert [a.username for a in config.registering_accounts] == ["101", "102"]
    for account in config.accounts:
        host = account.host_primary
        assert (host.server, host.port, host.transport, host.media_encryption) == (
            "server.example.com", 5061, SipTransport.TLS, "sdes")
    assert done.config_server_url == "sip:proxy@server.example.com:5061;transport=tls"
    upgrade = "upgrade" if model == "D65" else None
    assert (done.upgrade is not None and "2_9_22" in done.upgrade.text) == bool(upgrade)


def _conf(general: str = "", phones: str = "") -> DpmaConf:
    text = (
        f"[general]\n{general}\n"
        "[lan]\ntype=network\ncidr=10.0.0.0/8\n"
        "[101]\ntype=line\nmedia_encryption=sdes\n[102]\ntype=line\n"
        + (phones or f"[p1]\ntype=phone\nmac={MAC}\npin=1111\nline=101\n")
    )
    return load_dpma_conf(parse_asterisk_conf(text, file="t.conf"),
                          passwords={"101": "pw1", "102": "pw2"})


def test_disabled_serves_known_macs_only_and_refuses_alike() -> None:
    dpma = Dpma(_conf(), SITE)
    assert dpma.answer(_request(), "10.1.1.1")[0].ok
    unknown = dpma.answer(_request(mac="000fd3ffffff"), "10.1.1.1")[0]
    assert (unknown.error_code, unknown.error_message) == ("refused", REFUSED)
    garbage = dpma.answer(_request(mac="zz"), "10.1.1.1")[0]
    assert garbage.error_code == "refused"


def test_pin_mode() -> None:
    dpma = Dpma(_conf("config_auth=pin"), SITE)
    good = dpma.answer(_request(pin="1111"), "10.1.1.1")[0]
    wrong = dpma.answer(_request(pin="2222"), "10.1.1.1")[0]
    unknown = dpma.answer(_request(mac="000fd3ffffff", pin="1111"), "10.1.1.1")[0]
    missing = dpma.answer(_request(), "10.1.1.1")[0]
    assert good.ok
    # an unknown MAC and a wrong PIN cannot be told apart
    assert (wrong.error_code, wrong.error_message) == (unknown.error_code,
                                                      unknown.error_message)
    assert wrong.error_message == REFUSED
    assert missing.error_code == "pin-required"


def test_pin_mode_claims_a_phone_without_mac() -> None:
    phones = ("[p1]\ntype=phone\npin=1111\nline=101\n"
              "[p2]\ntype=phone\npin=2222\nline=102\n")
    dpma = Dpma(_conf("config_auth=pin", phones), SITE)
    reply, served = dpma.answer(_request(pin="2222"), "10.1.1.1")
    assert reply.ok and served.phone == "p2"
    # the MAC keeps its phone; another MAC cannot take it any more
    assert dpma.answer(_request(pin="2222"), "10.1.1.1")[1].phone == "p2"
    assert not dpma.answer(_request(mac="000fd3aaaaaa", pin="2222"), "10.1.1.1")[0].ok
    assert dpma.answer(_request(mac="000fd3aaaaaa", pin="1111"), "10.1.1.1")[1].phone == "p1"


def test_globalpin_mode() -> None:
    dpma = Dpma(_conf("config_auth=globalpin\nglobalpin=9999"), SITE)
    assert dpma.answer(_request(pin="9999"), "10.1.1.1")[0].ok
    assert dpma.answer(_request(pin="1111"), "10.1.1.1")[0].error_message == REFUSED
    assert dpma.answer(_request(mac="000fd3ffffff", pin="9999"),
                       "10.1.1.1")[0].error_message == REFUSED


def test_no_network_and_contacts() -> None:
    dpma = Dpma(_conf(), SITE)
    outside = dpma.answer(_request(), "192.168.1.1")[0]
    assert outside.error_code == "no-network" and "192.168.1.1" in (outside.error_message or "")
    contacts = dpma.answer(_request(method=CONTACTS_METHOD), "10.1.1.1")[0]
    assert contacts.error_code == "not-found"


def test_the_lab_fills_in_what_the_conf_leaves_empty() -> None:
    ca_pem, _, _ = make_server_identity(["lab.phone-sim.test"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    site = DpmaSite(address="127.0.0.1", sip_ports={"tls": 40001, "udp": 40002},
                    ca_certificates=(ca,))
    dpma = Dpma(_conf("mdns_transport=tls"), site)
    assert dpma.sip_url.label == "sip:proxy@127.0.0.1:40001;transport=tls"
    assert dpma.txt_records() == {"sipUrl": "sip:proxy@127.0.0.1:40001;transport=tls",
                                  "serviceType": "asterisk"}
    doc = parse_phone_xml(dpma.answer(_request(), "10.1.1.1")[0].document or b"")
    account = doc.account()
    assert (account.host_primary.server, account.host_primary.port) == ("127.0.0.1", 40002)
    assert account.host_primary.transport is SipTransport.UDP and account.password == "pw1"
    assert doc.certificates[0].certificate == ca
    no_tcp = Dpma(_conf("mdns_transport=tcp"), site)
    with pytest.raises(DpmaConfigError, match="no TCP listener"):
        _ = no_tcp.sip_url


def test_provisioning_only_needs_a_registration_address() -> None:
    with pytest.raises(DpmaConfigError, match=r"\[lan\] has no registration_address"):
        Dpma(_conf(), DpmaSite(address="127.0.0.1", sip_ports={"udp": 5060}, registrar=False))


def test_the_loopback_sample_points_the_vendor_sample_at_the_lab() -> None:
    conf = read_dpma_conf(FIXTURES / "lab-loopback.conf", pjsip=FIXTURES / "pjsip.conf")
    dpma = Dpma(conf, DpmaSite(address="127.0.0.1", sip_ports={"tls": 5061}))
    assert dpma.sip_url.label == "sip:proxy@127.0.0.1:5061;transport=tls"
    doc = parse_phone_xml(dpma.answer(_request(), "127.0.0.1")[0].document or b"")
    assert {(a.account.host_primary.server, a.account.host_primary.port)
            for a in doc.accounts} == {("127.0.0.1", 5061)}
    assert dpma.port_warnings() == []  # the lab on the ports the conf names


def test_a_lab_on_other_ports_than_the_conf_names_is_warned_about() -> None:
    # `phone-sim lab --conf lab-loopback.conf --tls-port 0`: the conf tells phones 5061.
    conf = read_dpma_conf(FIXTURES / "lab-loopback.conf", pjsip=FIXTURES / "pjsip.conf")
    moved = Dpma(conf, DpmaSite(address="127.0.0.1", sip_ports={"tls": 40871}))
    warnings = moved.port_warnings(["localhost"])
    assert len(warnings) == 2
    assert "the advertised sipUrl (mdns_port) sends phones to 127.0.0.1:5061 over TLS, but " \
           "this server listens on 40871: start it on 5061 (--tls-port 5061)" in warnings[0]
    assert "network [tls-network] (registration_port)" in warnings[1]
    # Provisioning only: the phones register elsewhere, so only the sipUrl matters.
    only = Dpma(conf, DpmaSite(address="127.0.0.1", sip_ports={"tls": 40871}, registrar=False))
    assert [w for w in only.port_warnings() if "registration_port" in w] == []
    # The vendor sample names another host (the real PBX): nothing to say about our ports.
    sample = read_dpma_conf(FIXTURES / "res_digium_phone.conf", pjsip=FIXTURES / "pjsip.conf")
    vendor = Dpma(sample, DpmaSite(address="127.0.0.1", sip_ports={"tls": 40871}))
    assert vendor.port_warnings() == []
