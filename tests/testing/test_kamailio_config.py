"""Kamailio's configuration and location table, without a Kamailio
(phone_sim.testing.kamailio_config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phone_sim.testing.errors import PeerUsageError
from phone_sim.testing.kamailio_config import (
    KamailioConfig,
    SipUser,
    bindings_from_rpc,
    parse_ul_dump,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "peers"


def test_parse_ul_dump_reads_every_contact() -> None:
    bindings = parse_ul_dump((FIXTURES / "ul_dump.txt").read_text())
    assert [(b.aor, b.contact) for b in bindings] == [
        ("101", "sip:101@127.0.0.1:36463;transport=UDP"),
        ("101", "sip:101@127.0.0.1:5070;transport=tls"),
        ("102", "sip:102@127.0.0.1:5072;transport=tcp"),
    ]
    tls = bindings[1]
    assert tls.expires == 57
    assert tls.received == "sip:127.0.0.1:40012;transport=tls"
    assert tls.socket == "tls:127.0.0.1:45453"
    assert tls.tcpconn_id == 3
    assert tls.user_agent.startswith("baresip")
    assert bindings[2].received is None


def test_bindings_from_the_json_rpc_dump_and_lookup() -> None:
    result = json.loads((FIXTURES / "ul_dump.json").read_text())
    bindings = bindings_from_rpc(result)
    assert sorted(b.aor for b in bindings) == ["101", "102"]
    one = next(b for b in bindings if b.aor == "101")
    assert one.contact.startswith("sip:101@127.0.0.1:") and one.contact.endswith("transport=UDP")
    assert one.socket.startswith("udp:127.0.0.1:")
    assert one.tcpconn_id == -1 and one.cseq == 2 and one.expires == 30
    lookup = {"AoR": "101", "Contacts": [{"Contact": {"Address": "sip:x", "Expires": 5}}]}
    assert [(b.aor, b.contact, b.expires) for b in bindings_from_rpc(lookup)] == [
        ("101", "sip:x", 5)
    ]
    assert bindings_from_rpc({"Domains": [{"Domain": {"AoRs": []}}]}) == []


def test_parse_ul_dump_of_an_empty_table() -> None:
    assert parse_ul_dump("{\n\tDomains: {\n\t\tDomain: {\n\t\t\tAoRs: {\n\t\t\t}\n}}}\n") == []


def test_user_table_refuses_what_the_cfg_cannot_hold() -> None:
    with pytest.raises(PeerUsageError, match="password"):
        SipUser(user="101", password='a"b')
    with pytest.raises(PeerUsageError, match="user"):
        SipUser(user="10 1", password="x")
    assert "secret" not in repr(SipUser(user="101", password="secret"))


def test_expires_must_be_ordered() -> None:
    with pytest.raises(PeerUsageError, match="expires"):
        KamailioConfig(min_expires=60, default_expires=30)


def test_only_real_methods_can_be_challenged() -> None:
    with pytest.raises(PeerUsageError, match="ACK"):
        KamailioConfig(auth_methods=("INVITE", "ACK"))
    with pytest.raises(PeerUsageError, match="invite"):
        KamailioConfig(auth_methods=("invite",))
