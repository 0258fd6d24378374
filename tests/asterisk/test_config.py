"""The project's Asterisk configuration (fixtures/asterisk) as a real Asterisk 22 loads it:
the vendor page's TLS transport, SDES endpoints, and exactly the modules the build makes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from phone_sim.testing.aio_asterisk import Asterisk

pytestmark = [pytest.mark.asterisk, pytest.mark.peer, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]


def _built_modules() -> set[str]:
    lines = (REPO / "scripts" / "asterisk" / "modules.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_the_transports_are_tls_and_udp_on_the_rendered_ports(asterisk: Asterisk) -> None:
    out = asterisk.cli("pjsip show transports")
    assert re.search(rf"transport-tls\s+tls\s.*127\.0\.0\.1:{asterisk.tls_port}\b", out), out
    assert re.search(rf"transport-udp\s+udp\s.*127\.0\.0\.1:{asterisk.udp_port}\b", out), out
    tls = asterisk.cli("pjsip show transport transport-tls")
    assert re.search(r"\bmethod\s*:\s*sslv23\b", tls), tls
    assert re.search(rf"\bcert_file\s*:\s*{re.escape(str(asterisk.certs.cert_file))}", tls), tls


def test_an_endpoint_is_sdes_with_contact_rewriting_and_g722_then_ulaw(
    asterisk: Asterisk,
) -> None:
    out = asterisk.cli("pjsip show endpoint 101")
    assert re.search(r"\bmedia_encryption\s*:\s*sdes\b", out), out
    assert re.search(r"\brewrite_contact\s*:\s*true\b", out), out
    assert re.search(r"\ballow\s*:\s*\(g722\|ulaw\)", out), out
    assert re.search(r"\bdtmf_mode\s*:\s*rfc4733\b", out), out
    assert re.search(r"InAuth:\s+101/101", out), out
    # 99 phones: 101-199.
    endpoints = asterisk.cli("pjsip show endpoints")
    assert "Objects found: 99" in endpoints, endpoints[-200:]


def test_exactly_the_built_modules_are_loaded(asterisk: Asterisk) -> None:
    out = asterisk.cli("module show")
    loaded = set(re.findall(r"^(\w+)\.so\b", out, flags=re.MULTILINE))
    assert loaded == _built_modules(), sorted(loaded ^ _built_modules())


def test_the_rtp_range_is_the_rendered_one(asterisk: Asterisk) -> None:
    assert f"port range {asterisk.rtp_start} -> {asterisk.rtp_end}" in asterisk.log_text()


def test_the_private_key_is_not_readable_by_others(asterisk: Asterisk) -> None:
    assert asterisk.certs.key_file.stat().st_mode & 0o077 == 0
