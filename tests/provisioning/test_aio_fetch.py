"""Fetching the configuration from the lab's DPMA emulator, on real sockets on 127.0.0.1:
the SIP exchange over TLS, TCP and UDP, HTTP and HTTPS, config_auth, and the firmware's TLS
policy applied to provisioning (an expired certificate)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from phone_sim.account import SipTransport
from phone_sim.firmware import profile_for
from phone_sim.lab.aio import Lab
from phone_sim.provisioning.aio_fetch import fetch_config
from phone_sim.provisioning.apply import apply_phone_xml
from phone_sim.provisioning.errors import ConfigFetchError, ConfigRefused
from phone_sim.provisioning.phone_xml import parse_phone_xml
from phone_sim.provisioning.urls import ConfigUrlUnsupported
from phone_sim.tls.verdict import TlsRefused
from tests.provisioning.conftest import MAC, USERS, conf_text, dpma_site

D65 = profile_for("D65", "2_9_2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["tls", "tcp", "udp"])
async def test_sip_exchange_over_each_transport(tmp_path: Path, transport: str) -> None:
    async with dpma_site(tmp_path) as site:
        url = site.lab.uri(transport).replace("sip:", "sip:proxy@")
        fetched = await fetch_config(url, mac=MAC, profile=D65, trust=site.trust, timeout=5)
        done = apply_phone_xml(parse_phone_xml(fetched.document), model="D65",
                               firmware="2_9_2", mac=MAC)
        accounts = done.config.registering_accounts
        assert [a.username for a in accounts] == ["101", "103"]
        assert accounts[0].password == USERS["101"]
        host = accounts[0].host_primary
        assert (host.server, host.port, host.transport) == (
            "127.0.0.1", site.lab.ports["tls"], SipTransport.TLS)
        assert host.media_encryption == "sdes"
        assert done.config.trust.ca_certificates  # the lab's CA came in <certs>
        served = site.dpma.served[-1]
        assert (served.mac, served.phone) == (MAC, "alice")


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_http_and_https(tmp_path: Path, scheme: str) -> None:
    async with dpma_site(tmp_path) as site:
        base = site.dpma.http_url if scheme == "http" else site.dpma.https_url
        assert base is not None
        fetched = await fetch_config(base + "digium_phones", mac=MAC, profile=D65,
                                     trust=site.trust, timeout=5)
        doc = parse_phone_xml(fetched.document)
        assert doc.account(0).username == "101" and fetched.contacts is None
        with pytest.raises(ConfigRefused, match="HTTP 403: unknown phone or wrong PIN"):
            await fetch_config(base, mac="000fd3999999", profile=D65, trust=site.trust,
                               timeout=5)


async def test_unknown_mac_and_wrong_pin_are_refused_alike(tmp_path: Path) -> None:
    text = conf_text(general="config_auth=pin")
    async with dpma_site(tmp_path, text=text) as site:
        sip = site.lab.uri("tls").replace("sip:", "sip:proxy@")
        http = site.dpma.http_url
        assert http is not None
        ok = await fetch_config(sip, mac=MAC, profile=D65, trust=site.trust, pin="1111")
        assert parse_phone_xml(ok.document).account().username == "101"
        messages = []
        for url in (sip, http):
            for mac, pin in ((MAC, "9999"), ("000fd3999999", "1111")):
                with pytest.raises(ConfigRefused) as info:
                    await fetch_config(url, mac=mac, profile=D65, trust=site.trust, pin=pin,
                                       timeout=5)
                assert info.value.exit_code == 1
                messages.append(str(info.value).replace(mac, "MAC"))
            with pytest.raises(ConfigRefused, match="PIN") as info:
                await fetch_config(url, mac=MAC, profile=D65, trust=site.trust, timeout=5)
            # The causes a fleet counts: a refusal is a refusal, a missing PIN is said.
            assert info.value.cause == ("pin required" if url == sip else "refused")
        assert messages[0] == messages[1] and messages[2] == messages[3]
        assert "unknown phone or wrong PIN" in messages[0]


async def test_an_expired_provisioning_certificate_fails_as_the_firmware_would(
    tmp_path: Path,
) -> None:
    async with dpma_site(tmp_path, expired=True) as site:
        https = site.dpma.https_url
        sip = site.lab.uri("tls").replace("sip:", "sip:proxy@")
        assert https is not None
        for url in (https, sip):
            with pytest.raises(TlsRefused) as info:
                await fetch_config(url, mac=MAC, profile=D65, trust=site.trust, timeout=5)
            assert info.value.bitmask == 0x4  # EVALIDITY_PERIOD, nothing else
            assert info.value.exit_code == 1
            # 2_3_9 does not validate: it takes the same certificate
            old = await fetch_config(url, mac=MAC, profile=profile_for("D65", "2_3_9"),
                                     trust=site.trust, timeout=5)
            assert parse_phone_xml(old.document).accounts


async def test_a_registrar_without_dpma_asks_for_digest(tmp_path: Path) -> None:
    async with Lab(USERS, transports=["tcp"], echo=False) as lab:
        url = lab.uri("tcp").replace("sip:", "sip:proxy@")
        with pytest.raises(ConfigFetchError, match=r"407.*without digest") as info:
            await fetch_config(url, mac=MAC, profile=D65, timeout=5)
        assert info.value.cause == "SIP 407"


async def test_unreachable_and_unsupported(tmp_path: Path) -> None:
    port = _free_port()
    for url in (f"sip:proxy@127.0.0.1:{port};transport=tcp", f"http://127.0.0.1:{port}/"):
        with pytest.raises(ConfigFetchError, match="refused") as info:
            await fetch_config(url, mac=MAC, profile=D65, timeout=2)
        assert info.value.exit_code == 2
        assert info.value.cause == "connection refused"  # what a fleet groups failures by
    with pytest.raises(ConfigUrlUnsupported, match="not supported by phone-sim"):
        await fetch_config("ftps://127.0.0.1/cfg", mac=MAC, profile=D65)
