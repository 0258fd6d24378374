"""Discovery policy (sans-I/O) and mDNS with zeroconf bound to loopback: one, several and
no servers, and the emulator's own advertisement."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from phone_sim.account import SipTransport
from phone_sim.firmware import Model
from phone_sim.provisioning.aio_discovery import MdnsAdvertiser, ServerBrowser, browse
from phone_sim.provisioning.discovery import (
    DiscoveredServer,
    choose_server,
    server_from_txt,
    uses_mdns,
)
from phone_sim.provisioning.errors import DiscoveryFailed
from phone_sim.provisioning.urls import SipConfigUrl
from tests.provisioning.conftest import dpma_site


def _server(name: str, url: str | None = "sip:proxy@10.0.0.1:5061;transport=tls",
            kind: str | None = "asterisk") -> DiscoveredServer:
    return DiscoveredServer(instance=name, addresses=("10.0.0.1",), port=5061,
                            service_type=kind, sip_url=url)


def test_txt_records() -> None:
    server = server_from_txt(
        "Asterisk",
        {b"sipUrl": b"sip:proxy@pbx.example.com:5061;transport=tls",
         b"serviceType": b"asterisk", b"junk": None},
        ["192.0.2.10", "not an address"], 5061,
    )
    assert server.addresses == ("192.0.2.10",)
    assert server.config_url == SipConfigUrl(host="pbx.example.com", port=5061,
                                             transport=SipTransport.TLS)
    firmware = server_from_txt(
        "fw", {"serviceType": "firmware", "firmwareUrl": "http://h/", "firmwareVersion":
               "2_0_2_0_78957", "D40File": "d40.eff", "D65File": "d65.eff"}, ["10.0.0.9"], 80)
    assert firmware.config_url is None and firmware.firmware_version == "2_0_2_0_78957"
    assert dict(firmware.firmware_files) == {"D40": "d40.eff", "D65": "d65.eff"}
    bare = server_from_txt("x", {}, ["10.0.0.2"], 5070)
    assert bare.config_url == SipConfigUrl(host="10.0.0.2", port=5070,
                                           transport=SipTransport.UDP)


def test_choosing() -> None:
    one, two = _server("Asterisk"), _server("Lab B", "sip:proxy@10.0.0.2:5060")
    assert choose_server([one], None, timeout=1) is one
    with pytest.raises(DiscoveryFailed, match=r"2 DPMA servers answered: Asterisk .*Lab B") as e:
        choose_server([one, two], None, timeout=1)
    assert e.value.exit_code == 1 and e.value.cause == "several servers"
    assert choose_server([one, two], "lab b", timeout=1) is two
    assert choose_server([one, two], "10.0.0.2", timeout=1) is two
    with pytest.raises(DiscoveryFailed, match="no DPMA server named 'other'"):
        choose_server([one, two], "other", timeout=1)
    with pytest.raises(DiscoveryFailed, match=r"within 3 s.*--config-url") as e:
        choose_server([], None, timeout=3)
    assert e.value.exit_code == 1 and e.value.cause == "no server"
    with pytest.raises(DiscoveryFailed, match="firmware-only"):
        choose_server([_server("fw", None, "firmware")], None, timeout=1)
    assert not uses_mdns(Model.D80) and uses_mdns(Model.D65)


def _tag() -> str:
    # Other tests (and other people's labs) may advertise on this loopback at the same time:
    # each test only looks at its own instances.
    return f"psim-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def test_one_server_through_the_emulator(tmp_path: Path) -> None:
    tag = _tag()
    async with dpma_site(tmp_path, advertise=True, instance_name=f"{tag} lab") as site:
        seen: list[DiscoveredServer] = []
        servers = await browse(timeout=5, settle=0.3, on_found=seen.append,
                               accept=lambda s: s.instance.startswith(tag))
        assert servers == seen
        (server,) = servers
        assert server.instance == f"{tag} lab" and server.service_type == "asterisk"
        assert server.sip_url == site.dpma.sip_url
        assert server.port == site.lab.ports["tls"] and server.addresses == ("127.0.0.1",)
        chosen = choose_server(servers, None, timeout=5)
        assert chosen.config_url is not None
        assert chosen.config_url.label == site.dpma.sip_url


async def test_several_servers_and_a_choice() -> None:
    tag = _tag()
    advertisers = [
        MdnsAdvertiser(instance=f"{tag} {n}", port=5060 + n, address="127.0.0.1",
                       txt={"sipUrl": f"sip:proxy@127.0.0.1:{5060 + n}", "serviceType":
                            "asterisk"})
        for n in (1, 2)
    ]
    await asyncio.gather(*(a.start() for a in advertisers))
    try:
        servers = await browse(timeout=5, settle=2.0,
                               accept=lambda s: s.instance.startswith(tag))
        assert sorted(s.instance for s in servers) == [f"{tag} 1", f"{tag} 2"]
        with pytest.raises(DiscoveryFailed, match="2 DPMA servers answered"):
            choose_server(servers, None, timeout=5)
        named = await browse(timeout=5, wanted=f"{tag} 2",
                             accept=lambda s: s.instance.startswith(tag))
        assert choose_server(named, f"{tag} 2", timeout=5).port == 5062
    finally:
        await asyncio.gather(*(a.close() for a in advertisers))


async def test_no_server_within_the_timeout() -> None:
    tag = _tag()
    loop = asyncio.get_running_loop()
    started = loop.time()
    servers = await browse(timeout=0.8, accept=lambda s: s.instance.startswith(tag))
    assert servers == [] and 0.7 < loop.time() - started < 3
    with pytest.raises(DiscoveryFailed, match="no DPMA server answered"):
        choose_server(servers, None, timeout=0.8)


async def test_one_browser_shared_by_many_phones() -> None:
    # A fleet shard opens one browse and lets every phone it boots ask it: the phones asking
    # at the start wait for the server as a phone browsing alone does; later ones know at
    # once.
    tag = _tag()
    advertiser = MdnsAdvertiser(instance=f"{tag} shared", port=5061, address="127.0.0.1",
                                txt={"sipUrl": "sip:proxy@127.0.0.1:5061;transport=tls"})
    await advertiser.start()
    loop = asyncio.get_running_loop()
    try:
        async with ServerBrowser(accept=lambda s: s.instance.startswith(tag)) as browser:
            first = await asyncio.gather(*(browser.servers(timeout=5, wanted=f"{tag} shared")
                                           for _ in range(20)))
            assert all([s.instance for s in found] == [f"{tag} shared"] for found in first)
            again = loop.time()
            later = await browser.servers(timeout=5, wanted=f"{tag} shared")
            assert [s.port for s in later] == [5061] and loop.time() - again < 0.05
            # Unnamed, a phone waits until 1 s after the browser first heard a server, in
            # case a second shows itself; once that has passed, it knows at once.
            await browser.servers(timeout=5, settle=1.0)
            assert browser.first_heard is not None
            assert loop.time() >= browser.first_heard + 1.0
            again = loop.time()
            assert len(await browser.servers(timeout=5, settle=1.0)) == 1
            assert loop.time() - again < 0.05
    finally:
        await advertiser.close()


async def test_a_shared_browser_wakes_every_phone_when_a_second_server_shows() -> None:
    # A server the phones do not want answers first, the one they named later: every phone
    # waiting on the shared browse hears the named one when it comes, not only the last to
    # look (an Event that each woken waiter replaced left the others waiting on old ones:
    # with another lab on the loopback, most of a fleet's phones sat out the whole timeout).
    tag = _tag()
    other = MdnsAdvertiser(instance=f"{tag} other", port=5071, address="127.0.0.1",
                           txt={"sipUrl": "sip:proxy@127.0.0.1:5071;transport=tls"})
    wanted = MdnsAdvertiser(instance=f"{tag} wanted", port=5072, address="127.0.0.1",
                            txt={"sipUrl": "sip:proxy@127.0.0.1:5072;transport=tls"})
    await other.start()
    loop = asyncio.get_running_loop()
    try:
        async with ServerBrowser(accept=lambda s: s.instance.startswith(tag)) as browser:
            phones = [asyncio.ensure_future(browser.servers(timeout=8, wanted=f"{tag} wanted"))
                      for _ in range(20)]
            async with asyncio.timeout(5):
                while not browser.found:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # the first phones woke, looked, and wait again
            phones += [asyncio.ensure_future(browser.servers(timeout=8,
                                                             wanted=f"{tag} wanted"))
                       for _ in range(20)]
            await asyncio.sleep(0.1)
            assert not any(p.done() for p in phones)
            await wanted.start()
            started = loop.time()
            answers = await asyncio.gather(*phones)
            assert loop.time() - started < 4.0  # not the 8 s timeout
            assert all(f"{tag} wanted" in [s.instance for s in found] for found in answers)
    finally:
        await asyncio.gather(other.close(), wanted.close())
