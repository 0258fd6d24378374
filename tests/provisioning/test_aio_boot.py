"""The whole boot against the lab's DPMA emulator: mDNS, fetch, apply, register over TLS;
the sample res_digium_phone.conf for several models and firmwares; check-sync."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from phone_sim.account import SipTransport
from phone_sim.errors import UsageError
from phone_sim.lab.aio import Lab
from phone_sim.phone import ReprovisionRequested
from phone_sim.provisioning.aio_boot import (
    AccountRegistered,
    BootEvent,
    BootOptions,
    ConfigApplied,
    ConfigReceived,
    CountdownStarted,
    DiscoverySkipped,
    PhoneEventSeen,
    Reprovisioned,
    ServerChosen,
    boot,
)
from phone_sim.provisioning.dpma_conf import read_dpma_conf
from phone_sim.provisioning.errors import ConfigRefused, DiscoveryFailed
from phone_sim.tls.verdict import TlsNotSupported
from tests.provisioning.conftest import MAC, USERS, conf_text, dpma_site

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dpma"


async def test_boot_through_mdns_registers_every_account_over_tls(tmp_path: Path) -> None:
    tag = f"psim-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    async with dpma_site(tmp_path, advertise=True, instance_name=tag) as site:
        events: list[BootEvent] = []
        options = BootOptions(mac="00:0F:D3:01:02:03", model="D65", firmware="2_9_2",
                              trust=site.trust, countdown=0.05,
                              accept=lambda s: s.instance == tag)
        booted = await boot(options, on_event=events.append)
        try:
            kinds = [type(e).__name__ for e in events]
            assert kinds[:2] == ["DiscoveryStarted", "ServerFound"]
            chosen = next(e for e in events if isinstance(e, ServerChosen))
            assert chosen.found == 1 and chosen.server.instance == tag
            assert any(isinstance(e, CountdownStarted) for e in events)
            registered = [e for e in events if isinstance(e, AccountRegistered)]
            assert sorted(e.account.username for e in registered) == ["101", "103"]
            for event in registered:
                assert event.result.host.transport is SipTransport.TLS
            for user in ("101", "103"):
                binding = await site.lab.wait_binding(user, timeout=5)
                assert binding.flow.transport == "TLS"
                assert binding.user_agent == "Digium D65 2_9_2"
            assert booted.config_url == site.dpma.sip_url
        finally:
            await booted.close()


@pytest.mark.parametrize(("model", "firmware"),
                         [("D65", "2_9_2"), ("D40", "2_9_22"), ("D80", "1_12_1"),
                          ("D70", "2_3_9")])
async def test_the_sample_conf_boots_each_model(tmp_path: Path, model: str,
                                                firmware: str) -> None:
    def text(lab: Lab) -> str:
        # The vendor-page sample as it is, pointed at this lab: Asterisk's (+) adds to the
        # sections, and the last value of an option wins.
        return (f"#include {FIXTURES / 'res_digium_phone.conf'}\n"
                f"[general](+)\nmdns_address=127.0.0.1\nmdns_port={lab.ports['tls']}\n"
                f"[tls-network](+)\nregistration_address=127.0.0.1\n"
                f"registration_port={lab.ports['tls']}\n")

    users = {"101": "1234", "102": "5678"}  # fixtures/dpma/pjsip.conf's auth sections
    async with dpma_site(tmp_path, text=text, users=users) as site:
        events: list[BootEvent] = []
        options = BootOptions(mac=MAC, model=model, firmware=firmware, trust=site.trust,
                              config_url=site.dpma.sip_url)
        booted = await boot(options, on_event=events.append)
        try:
            assert isinstance(events[0], DiscoverySkipped)
            applied = next(e for e in events if isinstance(e, ConfigApplied)).provisioned
            upgrade = applied.upgrade
            assert (upgrade is not None) == (model == "D65")
            users_registered = sorted(
                e.account.username for e in events
                if isinstance(e, AccountRegistered))
            assert users_registered == ["101", "102"]
            for account in booted.config.accounts:
                assert account.host_primary.media_encryption == "sdes"
            binding = await site.lab.wait_binding("102", timeout=5)
            assert binding.user_agent == f"Digium {model} {firmware}"
        finally:
            await booted.close()


async def test_failures_are_clear(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="D80 does not use mDNS"):
        await boot(BootOptions(mac=MAC, model="D80"))
    tag = f"psim-none-{uuid.uuid4().hex}"
    with pytest.raises(DiscoveryFailed, match="no DPMA server answered") as info:
        await boot(BootOptions(mac=MAC, model="D65", discovery_timeout=0.5,
                               accept=lambda s: s.instance == tag))
    assert info.value.exit_code == 1
    async with dpma_site(tmp_path, text=conf_text(general="config_auth=pin")) as site:
        with pytest.raises(ConfigRefused, match="unknown phone or wrong PIN"):
            await boot(BootOptions(mac=MAC, model="D65", pin="0000", trust=site.trust,
                                   config_url=site.dpma.sip_url))
        with pytest.raises(TlsNotSupported):
            await boot(BootOptions(mac=MAC, model="D65", firmware="2_0_2_0_78957",
                                   trust=site.trust, config_url=site.dpma.sip_url))
        assert site.lab.registrar.binding_count == 0


async def test_check_sync_refetches_and_applies(tmp_path: Path) -> None:
    async with dpma_site(tmp_path) as site:
        events: list[BootEvent] = []
        booted = await boot(BootOptions(mac=MAC, model="D65", trust=site.trust,
                                        config_url=site.dpma.sip_url),
                            on_event=events.append)
        try:
            await site.lab.wait_binding("103", timeout=5)
            # The server's configuration changes: alice keeps only line 101.
            changed = tmp_path / "changed.conf"
            changed.write_text(conf_text().replace("line=101\nline=103\n", "line=101\n"))
            assert site.dpma.dpma is not None
            site.dpma.dpma.conf = read_dpma_conf(changed, passwords=USERS)
            served_before = len(site.dpma.served)
            response = await site.lab.request("101", "NOTIFY",
                                              headers=[("Event", "check-sync")])
            assert response.status == 200
            for _ in range(100):
                if any(isinstance(e, Reprovisioned) for e in events):
                    break
                await asyncio.sleep(0.05)
            done = next(e for e in events if isinstance(e, Reprovisioned))
            assert done.applied, done.detail
            assert any(isinstance(e, PhoneEventSeen)
                       and isinstance(e.event, ReprovisionRequested) for e in events)
            assert len(site.dpma.served) == served_before + 1  # fetched again
            assert [a.username for a in booted.lines] == ["101"]
            for _ in range(100):  # line 103 unregisters; 101 stays
                if not any(b.flow_alive for b in site.lab.bindings("103")):
                    break
                await asyncio.sleep(0.05)
            assert not any(b.flow_alive for b in site.lab.bindings("103"))
            assert any(b.flow_alive for b in site.lab.bindings("101"))
        finally:
            await booted.close()


async def test_provisioning_only_registers_elsewhere(tmp_path: Path) -> None:
    # The "real Asterisk" is another registrar; the emulator's lab takes no accounts.
    async with Lab(USERS, transports=["udp"], echo=False) as pbx:
        def text(lab: Lab) -> str:
            return conf_text(transport="udp").replace(
                "transport=udp\n\n[sdes]",
                f"transport=udp\nregistration_address=127.0.0.1\n"
                f"registration_port={pbx.ports['udp']}\n\n[sdes]", 1)

        async with dpma_site(tmp_path, text=text, users={}, passwords=USERS,
                             provisioning_only=True) as site:
            assert site.dpma.provisioning_only
            booted = await boot(BootOptions(mac=MAC, model="D65", trust=site.trust,
                                            config_url=site.dpma.sip_url))
            try:
                binding = await pbx.wait_binding("101", timeout=5)
                assert binding.flow.transport == "UDP"
                assert site.lab.registrar.binding_count == 0
            finally:
                await booted.close()


async def test_boot_over_https(tmp_path: Path) -> None:
    async with dpma_site(tmp_path) as site:
        url = site.dpma.https_url
        assert url is not None
        events: list[BootEvent] = []
        booted = await boot(BootOptions(mac=MAC, model="D80", firmware="1_12_1",
                                        trust=site.trust, config_url=url + "digium_phones/"),
                            on_event=events.append)
        try:
            received = next(e for e in events if isinstance(e, ConfigReceived))
            assert received.fetched.url.startswith("https://127.0.0.1:")
            await site.lab.wait_binding("103", timeout=5)
        finally:
            await booted.close()
