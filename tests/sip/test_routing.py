"""Response routing (RFC 3261 18.2.2, RFC 3581) and default ports, written once in sip/."""

from __future__ import annotations

import pytest

from phone_sim.sip.headers import Via
from phone_sim.sip.routing import default_port, response_destination

SOURCE = ("203.0.113.9", 40123)


@pytest.mark.parametrize(("via", "expected"), [
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", ("192.0.2.1", 5060)),
    ("SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK1", ("192.0.2.1", 5061)),
    ("SIP/2.0/UDP 192.0.2.1;received=198.51.100.2;branch=z9hG4bK1", ("198.51.100.2", 5060)),
    ("SIP/2.0/UDP 192.0.2.1:5070;rport=4000;received=198.51.100.2;branch=z9hG4bK1",
     ("198.51.100.2", 4000)),
    ("SIP/2.0/UDP 192.0.2.1:5070;rport;branch=z9hG4bK1", ("192.0.2.1", 40123)),
    ("SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1", ("2001:db8::1", 5070)),
])
def test_unreliable_responses_follow_received_rport_and_sent_by(
    via: str, expected: tuple[str, int]
) -> None:
    assert response_destination(Via.parse(via), SOURCE, reliable=False) == expected


def test_reliable_responses_go_back_on_the_connection() -> None:
    via = Via.parse("SIP/2.0/TLS 192.0.2.1:5070;rport=4000;branch=z9hG4bK1")
    assert response_destination(via, SOURCE, reliable=True) == SOURCE


def test_default_ports() -> None:
    assert (default_port("udp"), default_port("TCP"), default_port("TLS")) == (5060, 5060, 5061)
