"""The asyncio Phone against real registrars on loopback: Kamailio and the embedded lab.

The registration tests are parametrized over both registrars (tests/phone/registrars.py);
the tests where a PBX sends requests to the phone use Kamailio as the proxy and SIPp as
the PBX.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.firmware import FIRMWARE_CLASSES, FirmwareClass, profile_for
from phone_sim.phone import (
    AuthenticationRefused,
    ConnectionDropped,
    FailedOver,
    MessageReceived,
    Phone,
    PhoneEvent,
    RegistrationFailed,
    RegistrationSettings,
    RegistrationSucceeded,
    ReprovisionRequested,
    RequestAnswered,
    SipTransportError,
)
from phone_sim.phone.config import NetworkOptions, PhoneConfig
from phone_sim.testing.aio_kamailio import Kamailio, KamailioConfig
from phone_sim.testing.aio_ports import free_port_run
from phone_sim.testing.aio_pytest_peers import KamailioFactory, require
from phone_sim.testing.aio_sipp import SippResult, run_sipp
from phone_sim.testing.certs import TestPki
from phone_sim.tls.client import TrustStore
from phone_sim.tls.verdict import TlsRefused
from tests.phone.registrars import KamailioServer, LabServer, Server, wait_bindings

PROFILE = profile_for("D65", "2_9_22")
FAST = RegistrationSettings(register_timeout=5.0, unregister_timeout=2.0)
TRANSPORTS = [SipTransport.TLS, SipTransport.TCP, SipTransport.UDP]


def _account(
    server: Server | Kamailio, transport: SipTransport, *, user: str = "101",
    password: str | None = None, reregister: int = 60, retry: float = 0.5,
) -> Account:
    if isinstance(server, Kamailio):
        server = KamailioServer(server, TrustStore())
    host = SipHost(
        server="127.0.0.1", port=server.port(transport), transport=transport,
        reregister=reregister, retry=retry,
    )
    return Account(
        username=user,
        password=password if password is not None else server.password(user),
        host_primary=host,
        domain=server.domain,
        server_name=server.domain,
    )


def _trust(pki: TestPki) -> TrustStore:
    return TrustStore.from_files([pki.ca.cert], public_roots=False)


async def _make_server(request: pytest.FixtureRequest, *, short: bool) -> AsyncIterator[Server]:
    if request.param == "kamailio":
        # Asked for only here, so that the lab's variants need no Kamailio installed.
        factory: KamailioFactory = request.getfixturevalue("kamailio_factory")
        pki: TestPki = request.getfixturevalue("peer_pki")
        config = KamailioConfig(min_expires=2, default_expires=4, max_expires=4) if short else None
        yield KamailioServer(factory(config), _trust(pki))
        return
    lab = LabServer(min_expires=2, max_expires=4) if short else LabServer(min_expires=2)
    await lab.start()
    try:
        yield lab
    finally:
        await lab.close()


#: Each registrar in turn; only Kamailio's variant starts a peer.
REGISTRARS = [pytest.param("kamailio", marks=pytest.mark.peer), "lab"]


@pytest.fixture(params=REGISTRARS)
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """Each registrar in turn, granting up to 60 s (Kamailio) or the asked 60 s (lab)."""
    async for s in _make_server(request, short=False):
        yield s


@pytest.fixture(params=REGISTRARS)
async def short_server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """Each registrar in turn, granting at most 4 s, so refreshes happen within the test."""
    async for s in _make_server(request, short=True):
        yield s


# -- registering ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
async def test_registers_and_the_registrar_shows_the_contact(
    server: Server, transport: SipTransport
) -> None:
    account = _account(server, transport)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), trust=server.trust, registration=FAST)) as phone:
        done = await phone.register(timeout=10)
        assert isinstance(done, RegistrationSucceeded)
        assert done.expires == 60
        (binding,) = await wait_bindings(server, "101")
        assert binding.contact == phone.contact
        if transport is not SipTransport.UDP:
            assert f";transport={transport.value.upper()}" in binding.contact
        assert binding.user_agent == PROFILE.user_agent
    # Leaving the block unregistered the phone.
    assert await wait_bindings(server, "101", present=False, timeout=5) == []


@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
async def test_refreshes_before_the_granted_expiry(
    short_server: Server, transport: SipTransport
) -> None:
    account = _account(short_server, transport, reregister=4)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), trust=short_server.trust,
        registration=FAST)) as phone:
        events = phone.events()
        first = await phone.register(timeout=10)
        assert first.expires == 4 and not first.refresh
        (before,) = await wait_bindings(short_server, "101")
        # Granted 4 s: the phone refreshes at 2 s (half-way, the 5 s margin does not fit).
        # One refresh shows the rule on the wire; the timing of many is the fake-clock tests'
        # (tests/phone/test_registration.py).
        seen: list[RegistrationSucceeded] = []
        async with asyncio.timeout(6):
            async for event in events:
                if isinstance(event, RegistrationSucceeded):
                    seen.append(event)
                    if len(seen) == 2:
                        break
        assert [e.refresh for e in seen] == [False, True]
        assert seen[1].expires == 4
        (after,) = await wait_bindings(short_server, "101")
        # The same binding, refreshed: CSeq went up (same Call-ID, RFC 3261 10.2.4).
        assert after.cseq > before.cseq
        assert after.contact == before.contact == phone.contact


@pytest.mark.parametrize("transport", [SipTransport.TLS, SipTransport.TCP], ids=str)
async def test_reregisters_by_itself_after_the_registrar_restarts(
    server: Server, transport: SipTransport
) -> None:
    account = _account(server, transport, retry=0.3)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), trust=server.trust, registration=FAST)) as phone:
        events = phone.events()
        await phone.register(timeout=10)
        await wait_bindings(server, "101")
        await server.restart()
        dropped = False
        async with asyncio.timeout(15):
            async for event in events:
                if isinstance(event, ConnectionDropped):
                    dropped = True
                if isinstance(event, RegistrationSucceeded) and dropped:
                    break
        (binding,) = await wait_bindings(server, "101")
        assert binding.contact == phone.contact


async def test_udp_phone_reregisters_after_restart_at_its_refresh(short_server: Server) -> None:
    account = _account(short_server, SipTransport.UDP, reregister=4)
    async with Phone(PhoneConfig(profile=PROFILE, accounts=(account,), registration=FAST)) as phone:
        await phone.register(timeout=10)
        await short_server.restart()
        # UDP has no connection to lose: the next refresh (2 s) puts the binding back.
        (binding,) = await wait_bindings(short_server, "101", timeout=8)
        assert binding.contact == phone.contact


@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
async def test_wrong_password_fails_cleanly(server: Server, transport: SipTransport) -> None:
    account = _account(server, transport, password="not-the-password")
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), trust=server.trust, registration=FAST)) as phone:
        with pytest.raises(AuthenticationRefused) as info:
            await phone.register(timeout=10)
        assert info.value.status in (401, 403)
        assert info.value.exit_code == 1
        assert "not-the-password" not in str(info.value)
        assert "not-the-password" not in repr(phone) + repr(account)
        assert not phone.registered
    assert await server.bindings("101") == []


async def test_untrusted_server_certificate_is_refused_with_the_bitmask(server: Server) -> None:
    # The phone trusts only the public roots: the test CA is unknown to it.
    account = _account(server, SipTransport.TLS)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), trust=TrustStore(), registration=FAST)) as phone:
        with pytest.raises(TlsRefused) as info:
            await phone.register(timeout=10)
    assert info.value.exit_code == 1
    assert info.value.verdict is not None
    assert "EUNTRUSTED" in info.value.verdict.flags
    assert info.value.verdict.bitmask_hex in str(info.value)
    assert await server.bindings("101") == []


async def test_certificate_for_another_name_is_refused(server: Server) -> None:
    base = _account(server, SipTransport.TLS)
    account = Account(
        username="101", password=base.password, host_primary=base.host_primary,
        domain=server.domain, server_name="other.test",
    )
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), trust=server.trust, registration=FAST)) as phone:
        with pytest.raises(TlsRefused) as info:
            await phone.register(timeout=10)
    verdict = info.value.verdict
    assert verdict is not None
    assert verdict.flags == ["EIDENTITY_NOT_MATCH"]


async def test_old_firmware_connects_despite_the_bad_certificate(server: Server) -> None:
    # Firmware before 2_9_0 does not validate: it registers to an untrusted server.
    old = profile_for("D65", "2_3_9")
    account = _account(server, SipTransport.TLS)
    async with Phone(PhoneConfig(
        profile=old, accounts=(account,), trust=TrustStore(), registration=FAST)) as phone:
        done = await phone.register(timeout=10)
        assert done.expires == 60


async def test_fails_over_to_the_alternate_and_back(server: Server) -> None:
    # The primary is a closed port: 1 + num_retries refused attempts, then the alternate.
    from phone_sim.testing.aio_ports import free_port

    dead = SipHost(server="127.0.0.1", port=free_port(), transport=SipTransport.TCP,
                   retry=0.2, num_retries=1, reregister=4)
    alive = SipHost(server="127.0.0.1", port=server.port(SipTransport.TCP),
                    transport=SipTransport.TCP, reregister=4)
    account = Account(username="101", password=server.password("101"), host_primary=dead,
                      host_alternate=alive, domain=server.domain)
    async with Phone(PhoneConfig(profile=PROFILE, accounts=(account,), registration=FAST)) as phone:
        events = phone.events()
        done = await phone.wait_registered(timeout=10)
        assert done.host == alive
        seen: list[PhoneEvent] = []
        async with asyncio.timeout(5):
            while not any(isinstance(e, RegistrationSucceeded) for e in seen):
                seen.append(await anext(events))
        over = [e for e in seen if isinstance(e, FailedOver)]
        assert over and over[0].from_host == dead and over[0].to_host == alive
        (binding,) = await wait_bindings(server, "101")
        assert binding.contact == phone.contact


# -- requests that arrive on the phone's connection (SIPp as the PBX) -------------------------

SCENARIOS = Path(__file__).resolve().parents[2] / "fixtures" / "phone"


async def _sipp(
    scenario: str | Path, target: tuple[str, int], workdir: Path, transport: Literal["udp", "tcp"]
) -> SippResult:
    """SIPp as the PBX, addressing user 101. SIPp binds audio RTP/RTCP at ``-mp`` and video
    at ``-mp+2/+3``: all four are reserved, so it never collides with the phone's socket."""
    return await run_sipp(scenario, target, workdir=workdir, transport=transport,
                          service="101", timeout=10, media_port=free_port_run(4, even=True))


@pytest.mark.peer
@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
async def test_options_through_kamailio_reaches_the_phone_on_its_connection(
    kamailio: Kamailio, peer_pki: TestPki, tmp_path: Path, transport: SipTransport
) -> None:
    require("sipp")
    account = _account(kamailio, transport)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), trust=_trust(peer_pki), registration=FAST,
        network=NetworkOptions(local_host="127.0.0.1"))) as phone:
        await phone.register(timeout=10)
        await kamailio.wait_bindings("101")
        events = phone.events()
        # SIPp talks to Kamailio over TCP; Kamailio relays over the phone's own connection.
        result = await _sipp("options", ("127.0.0.1", kamailio.tcp_port), tmp_path, "tcp")
        assert result.ok, result.describe()
        assert result.received_statuses()[-1] == 200
        options = result.received_messages()[-1]
        assert f"User-Agent: {PROFILE.user_agent}" in options
        answered = await anext(events)
        assert isinstance(answered, RequestAnswered)
        assert (answered.method, answered.status) == ("OPTIONS", 200)


@pytest.mark.peer
@pytest.mark.parametrize("transport", [SipTransport.TLS, SipTransport.UDP], ids=str)
async def test_check_sync_message_and_info_through_kamailio(
    kamailio: Kamailio, peer_pki: TestPki, tmp_path: Path, transport: SipTransport
) -> None:
    require("sipp")
    account = _account(kamailio, transport)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), trust=_trust(peer_pki), registration=FAST,
        network=NetworkOptions(local_host="127.0.0.1"))) as phone:
        await phone.register(timeout=10)
        await kamailio.wait_bindings("101")
        events = phone.events()
        result = await _sipp(SCENARIOS / "check_sync.xml", ("127.0.0.1", kamailio.udp_port),
                             tmp_path, "udp")
        assert result.ok, result.describe()
        assert result.received_statuses() == [200, 200, 405]
        seen: list[PhoneEvent] = []
        async with asyncio.timeout(2):
            while len(seen) < 4:
                seen.append(await anext(events))
        kinds = [type(e) for e in seen]
        assert ReprovisionRequested in kinds and MessageReceived in kinds
        message = next(e for e in seen if isinstance(e, MessageReceived))
        assert message.body.strip() == b"hello phone"
        assert phone.registered


@pytest.mark.peer
async def test_sipp_malformed_request_gets_400_then_options_200_over_udp(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    require("sipp")
    account = _account(kamailio, SipTransport.UDP)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), registration=FAST,
        network=NetworkOptions(local_host="127.0.0.1"))) as phone:
        await phone.register(timeout=10)
        assert phone.contact is not None
        port = int(phone.contact.rsplit(":", 1)[1].split(";")[0])
        # Straight to the phone's socket: Kamailio's sanity checks would drop the bad one.
        result = await _sipp("malformed_request", ("127.0.0.1", port), tmp_path, "udp")
        assert result.ok, result.describe()
        assert result.received_statuses() == [400, 200]
        assert phone.registered


async def test_fails_back_to_the_primary_when_it_returns() -> None:
    # Two embedded registrars: the primary starts later, on the port the phone is given.
    from phone_sim.testing.aio_ports import free_port

    primary = LabServer(min_expires=2, max_expires=4)
    primary.ports = {"tls": free_port(), "tcp": free_port(), "udp": free_port()}
    alternate = LabServer(min_expires=2, max_expires=4)
    await alternate.start()
    try:
        first = SipHost(server="127.0.0.1", port=primary.ports["tcp"],
                        transport=SipTransport.TCP, retry=0.2, num_retries=0, reregister=4)
        second = SipHost(server="127.0.0.1", port=alternate.port(SipTransport.TCP),
                         transport=SipTransport.TCP, reregister=4)
        account = Account(username="101", password=alternate.password("101"),
                          host_primary=first, host_alternate=second, domain=alternate.domain)
        async with Phone(PhoneConfig(
            profile=PROFILE, accounts=(account,), registration=FAST)) as phone:
            done = await phone.wait_registered(timeout=10)
            assert done.host == second
            await primary.start()
            # Registered on the alternate with 4 s: the primary is tried again after 2 s.
            events = phone.events()
            async with asyncio.timeout(8):
                async for event in events:
                    if isinstance(event, RegistrationSucceeded) and event.host == first:
                        break
            (binding,) = await wait_bindings(primary, "101")
            assert binding.contact == phone.contact
            assert phone.host == first
    finally:
        await primary.close()
        await alternate.close()


@pytest.mark.peer
async def test_sipp_over_tcp_to_the_phones_listener_options_and_malformed(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    require("sipp")
    account = _account(kamailio, SipTransport.TCP)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), registration=FAST,
        network=NetworkOptions(local_host="127.0.0.1", listen_port=0))) as phone:
        await phone.register(timeout=10)
        address = phone.listen_address
        assert address is not None
        options = await _sipp("options", address, tmp_path, "tcp")
        assert options.ok, options.describe()
        assert options.received_statuses() == [200]
        malformed = await _sipp("malformed_request", address, tmp_path, "tcp")
        assert malformed.ok, malformed.describe()
        assert malformed.received_statuses() == [400, 200]
        # The registration's own connection was never disturbed.
        assert phone.registered
        (binding,) = await kamailio.wait_bindings("101")
        assert binding.contact == phone.contact


@pytest.mark.parametrize("transport", [SipTransport.TLS, SipTransport.UDP], ids=str)
async def test_keepalives_reach_the_lab(transport: SipTransport) -> None:
    lab = LabServer(min_expires=2)
    await lab.start()
    try:
        assert lab.lab is not None
        settings = RegistrationSettings(register_timeout=5.0, stream_ka_interval=0.2,
                                        udp_ka_interval=0.2)
        async with Phone(PhoneConfig(
            profile=PROFILE, accounts=(_account(lab, transport),), trust=lab.trust,
            registration=settings)) as phone:
            await phone.register(timeout=10)
            before = lab.lab.registrar.stats["keepalives"]
            await asyncio.sleep(1.1)
            # CRLF-CRLF pings on TLS (answered with pongs the phone reads), CRLF on UDP.
            assert lab.lab.registrar.stats["keepalives"] - before >= 3
            assert phone.registered
    finally:
        await lab.close()


# -- TLS refusal at registration, per firmware class (the golden table's rows, through Phone) --

#: What each class does with a trusted ``*.pbx.test`` certificate when its configured server
#: name is ``sip.pbx.test``: fixtures/tls/golden.txt, row wildcard-san (0x40000000 =
#: EIDENTITY_NOT_MATCH). Firmware before 2_9_0 does not validate and registers anyway.
WILDCARD_VERDICTS = {
    "2_2_0_4": "registers", "2_3_9": "registers",
    "2_9_0": "refused", "2_9_2": "refused", "2_9_2+wild": "registers",
    "d80-1_12_0": "refused", "d80-1_12_1": "refused", "d80-1_12_1+wild": "registers",
}
TLS_CLASSES = [c for c in FIRMWARE_CLASSES if c.profile.tls_supported]


def test_every_firmware_class_with_tls_has_a_wildcard_verdict() -> None:
    assert sorted(WILDCARD_VERDICTS) == sorted(c.id for c in TLS_CLASSES)


@pytest.fixture
async def wildcard_lab() -> AsyncIterator[LabServer]:
    """The embedded lab presenting a ``*.pbx.test`` certificate from a CA the phone trusts."""
    lab = LabServer(min_expires=2, names=["*.pbx.test"])
    await lab.start()
    try:
        yield lab
    finally:
        await lab.close()


def _named_account(server: Server, server_name: str) -> Account:
    host = SipHost(server="127.0.0.1", port=server.port(SipTransport.TLS),
                   transport=SipTransport.TLS, reregister=60, retry=0.5)
    return Account(username="101", password=server.password("101"), host_primary=host,
                   domain=server.domain, server_name=server_name)


@pytest.mark.parametrize("firmware", TLS_CLASSES, ids=lambda c: c.id)
async def test_a_wildcard_certificate_at_registration_per_firmware_class(
    wildcard_lab: LabServer, firmware: FirmwareClass
) -> None:
    account = _named_account(wildcard_lab, "sip.pbx.test")
    async with Phone(PhoneConfig(profile=firmware.profile, accounts=(account,),
                                 trust=wildcard_lab.trust, registration=FAST)) as phone:
        if WILDCARD_VERDICTS[firmware.id] == "registers":
            done = await phone.register(timeout=10)
            assert done.expires == 60
            (binding,) = await wait_bindings(wildcard_lab, "101")
            assert binding.user_agent == firmware.profile.user_agent
            return
        with pytest.raises(TlsRefused) as info:
            await phone.register(timeout=10)
    assert info.value.exit_code == 1
    verdict = info.value.verdict
    assert verdict is not None
    assert verdict.flags == ["EIDENTITY_NOT_MATCH"] and verdict.bitmask == 0x40000000
    assert verdict.server_name == "sip.pbx.test" and verdict.profile == firmware.profile
    # The name would have matched, had this firmware (or its setting) allowed wildcards.
    assert verdict.name_check is not None and verdict.name_check.wildcard_refused
    assert await wildcard_lab.bindings("101") == []


@pytest.mark.parametrize("firmware", [c for c in TLS_CLASSES if c.profile.model.value == "D80"],
                         ids=lambda c: c.id)
async def test_a_d80_refuses_a_server_its_trust_store_does_not_know(
    server: Server, firmware: FirmwareClass
) -> None:
    # The lab's CA is not loaded on the phone: the D80 (1_12_0 and 1_12_1, wildcard setting on
    # or off) refuses with EUNTRUSTED (golden table row unknown-ca).
    account = _named_account(server, server.domain)
    async with Phone(PhoneConfig(profile=firmware.profile, accounts=(account,),
                                 trust=TrustStore(), registration=FAST)) as phone:
        with pytest.raises(TlsRefused) as info:
            await phone.register(timeout=10)
    verdict = info.value.verdict
    assert verdict is not None and "EUNTRUSTED" in verdict.flags
    assert info.value.exit_code == 1
    assert await server.bindings("101") == []


async def test_a_udp_phone_whose_server_name_does_not_resolve_fails_naming_it() -> None:
    # An address-like name that is no address: the resolver library refuses it by itself,
    # without a DNS query, so nothing leaves the machine (a made-up DNS name would be asked of
    # the machine's real resolver).
    name = "1:2:3:4:5:6:7:8:9"
    host = SipHost(server=name, port=5060, transport=SipTransport.UDP, retry=0.2)
    account = Account(username="101", password="x", host_primary=host, domain="pbx.test")
    async with Phone(PhoneConfig(profile=PROFILE, accounts=(account,),
                                 registration=FAST)) as phone:
        events = phone.events()
        with pytest.raises(SipTransportError) as info:
            await phone.register(timeout=10)
        assert str(info.value).startswith(f"cannot resolve {name!r}: ")
        assert info.value.exit_code == 2
        assert not phone.registered
        # The phone reports it and keeps retrying by itself, as with any network error.
        failed = await asyncio.wait_for(anext(events), 5)
        assert isinstance(failed, RegistrationFailed) and failed.retry_at is not None
        assert "cannot resolve" in str(failed.error)
