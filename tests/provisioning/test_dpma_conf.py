"""res_digium_phone.conf as typed data: options, passwords, errors naming file/line/option."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from phone_sim.account import SipTransport
from phone_sim.provisioning.asterisk_conf import ConfError, parse_asterisk_conf
from phone_sim.provisioning.dpma_conf import DpmaConf, load_dpma_conf, read_dpma_conf

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dpma"


def test_the_vendor_page_fixture() -> None:
    conf = read_dpma_conf(FIXTURES / "res_digium_phone.conf", pjsip=FIXTURES / "pjsip.conf")
    general = conf.general
    assert general.mdns_transport is SipTransport.TLS and general.mdns_port == 5061
    assert general.mdns_address == "server.example.com" and general.service_name == "Asterisk"
    assert general.config_auth == "disabled" and general.globalpin == "1234"
    assert "1234" not in repr(general)
    (network,) = conf.networks
    assert network.transport is SipTransport.TLS and network.registration_port == 5061
    assert network.cidr == (ipaddress.ip_network("0.0.0.0/0"),)
    assert set(conf.lines) == {"101", "102"}
    line = conf.lines["101"]
    assert line.media_encryption == "sdes" and line.password == "1234"
    assert line.transport is None and conf.lines["102"].transport is SipTransport.TLS
    assert "1234" not in repr(line)
    (phone,) = conf.phones
    assert phone.mac == "000fd3010203" and phone.lines == ("101", "102")
    assert phone.firmwares == ("D65-2_9_22",) and conf.firmwares["D65-2_9_22"].file
    assert conf.phone_by_mac("00-0F-D3-01-02-03") is phone
    assert conf.phone_by_mac("not a mac") is None
    assert conf.network_for(phone, "192.0.2.7") is network


def _load(text: str, passwords: dict[str, str] | None = None,
          pjsip: str | None = None) -> DpmaConf:
    conf = parse_asterisk_conf(text, file="res_digium_phone.conf")
    pj = parse_asterisk_conf(pjsip, file="pjsip.conf") if pjsip is not None else None
    return load_dpma_conf(conf, pjsip=pj, passwords=passwords or {"101": "pw"})


LINE = "[101]\ntype=line\n"
PHONE = "[p]\ntype=phone\nmac=000fd3010203\nline=101\n"


def test_passwords_from_the_lab_users_or_pjsip() -> None:
    assert _load(LINE + PHONE).lines["101"].password == "pw"
    pjsip = ("[101]\ntype=endpoint\nauth=a101\n[101]\ntype=aor\n"
             "[a101]\ntype=auth\nusername=bob\npassword=secret\n")
    line = _load(LINE + PHONE, pjsip=pjsip).lines["101"]
    assert line.password == "secret" and line.authname == "bob"
    named = "[101]\ntype=auth\npassword=byname\n"
    assert _load(LINE + PHONE, pjsip=named).lines["101"].password == "byname"
    with pytest.raises(ConfError, match=r"\[101\]: no password.*--user 101:PASSWORD"):
        _load(LINE + PHONE, passwords={"999": "x"})


def test_network_choice_by_cidr() -> None:
    conf = _load(
        "[wide]\ntype=network\ncidr=10.0.0.0/8\nregistration_address=wide.example\n"
        "[narrow]\ntype=network\ncidr=10.1.0.0/16, 192.168.0.0/24\n"
        "registration_address=narrow.example\n"
        + LINE + PHONE
    )
    phone = conf.phones[0]
    network = conf.network_for(phone, "10.1.2.3")
    assert network is not None and network.name == "narrow"
    network = conf.network_for(phone, "10.200.0.1")
    assert network is not None and network.name == "wide"
    assert conf.network_for(phone, "172.16.0.1") is None
    only = _load("[wide]\ntype=network\ncidr=10.0.0.0/8\n[narrow]\ntype=network\n"
                 "cidr=10.1.0.0/16\n" + LINE + PHONE + "network=wide\n")
    network = only.network_for(only.phones[0], "10.1.2.3")
    assert network is not None and network.name == "wide"


def test_config_auth_modes_need_their_options() -> None:
    with pytest.raises(ConfError, match="needs pin="):
        _load("[general]\nconfig_auth=pin\n" + LINE + PHONE)
    with pytest.raises(ConfError, match="needs globalpin="):
        _load("[general]\nconfig_auth=globalpin\n" + LINE + PHONE)
    with pytest.raises(ConfError, match="needs mac="):
        _load("[general]\nconfig_auth=mac\n" + LINE + "[p]\ntype=phone\nline=101\n")
    assert _load("[general]\nconfig_auth=pin\n" + LINE + PHONE + "pin=42\n").phones[0].pin


@pytest.mark.parametrize(
    ("text", "line", "option", "message"),
    [
        ("[general]\nconfig_auth=sometimes\n", 2, "config_auth", "expected one of"),
        ("[general]\nmdns_port=99999\n", 2, "mdns_port", "not a whole number"),
        ("[general]\nmdns_transport=sctp\n", 2, "mdns_transport", "udp, tcp or tls"),
        ("[general]\nservice_discovery_enabled=perhaps\n", 2, "service_discovery_enabled",
         "yes or no"),
        ("[general]\nglobalpin=12ab\n", 2, "globalpin", "PIN"),
        ("[n]\ntype=network\ncidr=10.0.0.0/33\n", 3, "cidr", "address/prefix"),
        ("[n]\ntype=network\nregistration_address=bad host\n", 3, "registration_address",
         "host name"),
        ("[101]\ntype=line\nmedia_encryption=zrtp\n", 3, "media_encryption", "sdes"),
        ("[101]\ntype=line\nreregistration_timeout=soon\n", 3, "reregistration_timeout",
         "whole number"),
        ("[p]\ntype=phone\nmac=00:11\nline=101\n" + LINE, 3, "mac", "bad MAC"),
        ("[p]\ntype=phone\nline=999\n" + LINE, 3, "line", "no type=line section [999]"),
        ("[p]\ntype=phone\nline=101\nnetwork=none\n" + LINE, 4, "network",
         "no type=network section"),
        ("[p]\ntype=phone\nline=101\nfirmware=latest\n" + LINE, 4, "firmware",
         "no type=firmware section"),
        ("[p]\ntype=phone\nline=101\nfirmware=D99-2_9_2\n" + LINE, 4, "firmware", "D99"),
        ("[x]\ntype=printer\n", 2, "type", "unknown type"),
        ("[f]\ntype=firmware\nmodel=D65\nversion=x\n", 4, "version", "malformed"),
        (LINE + PHONE + "[q]\ntype=phone\nline=101\nmac=00:0f:d3:01:02:03\n", 10, "mac",
         "also phone [p]"),
    ],
)
def test_errors_name_file_line_and_option(text: str, line: int, option: str,
                                          message: str) -> None:
    with pytest.raises(ConfError, match=re.escape(message)) as info:
        _load(text)
    error = info.value
    assert (error.file, error.line, error.option) == ("res_digium_phone.conf", line, option)
    assert str(error).startswith(f"res_digium_phone.conf:{line}: option {option!r}:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[x]\nfoo=1\n", "no type="),
        ("[p]\ntype=phone\n", "at least one line="),
        ("[f]\ntype=firmware\nmodel=D65\n", "needs model= and version="),
        (LINE + "[101]\ntype=line\n", "defined twice"),
        ("[general]\n[general]\n", "use [general](+)"),
    ],
)
def test_section_errors_name_the_section(text: str, message: str) -> None:
    with pytest.raises(ConfError, match=re.escape(message)) as info:
        _load(text)
    assert info.value.line is not None


def test_implicit_firmware() -> None:
    conf = _load(LINE + PHONE + "firmware=D65-2_9_22\n")
    assert conf.firmwares["D65-2_9_22"].version.numbers == (2, 9, 22)


def test_options_not_honoured_are_noted_with_file_and_line() -> None:
    conf = _load("[general]\nmdns_adress=10.0.0.1\n[n]\ntype=network\nsyslog_server=x\n"
                 "[tpl](!)\ntype=line\nringtone=bells\n[101](tpl)\n[102](tpl)\n" + PHONE,
                 passwords={"101": "a", "102": "b"})
    assert conf.notes == (
        "res_digium_phone.conf:2: option 'mdns_adress' ([general]) is not used by phone-sim",
        "res_digium_phone.conf:5: option 'syslog_server' (network) is not used by phone-sim",
        "res_digium_phone.conf:8: option 'ringtone' (line) is not used by phone-sim",
    )
    assert conf.general.mdns_address is None
