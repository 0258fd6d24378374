"""The asyncio Phone against real registrars on loopback: Kamailio (and the embedded lab)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.firmware import profile_for
from phone_sim.phone import (
    AuthenticationRefused,
    ConnectionDropped,
    MessageReceived,
    Phone,
    PhoneEvent,
    RegistrationSettings,
    RegistrationSucceeded,
    ReprovisionRequested,
    RequestAnswered,
)
from phone_sim.tls.client import TrustStore
from phone_sim.tls.verdict import TlsRefused
from tests.peers.certs import TestPki
from tests.peers.kamailio import Kamailio, KamailioConfig
from tests.peers.plugin import KamailioFactory, require
from tests.peers.sipp import run_sipp

pytestmark = pytest.mark.peer

PROFILE = profile_for("D65", "2_9_22")
FAST = RegistrationSettings(register_timeout=5.0, unregister_timeout=2.0)
TRANSPORTS = [SipTransport.TLS, SipTransport.TCP, SipTransport.UDP]


def _account(
    kam: Kamailio, transport: SipTransport, *, user: str = "101", password: str | None = None,
    reregister: int = 60, retry: float = 0.5,
) -> Account:
    host = SipHost(
        server="127.0.0.1", port=kam.port(transport.value), transport=transport,
        reregister=reregister, retry=retry,
    )
    return Account(
        username=user,
        password=password if password is not None else kam.user(user).password,
        host_primary=host,
        domain=kam.domain,
        server_name=kam.domain,
    )


def _trust(pki: TestPki) -> TrustStore:
    return TrustStore.from_files([pki.ca.cert], public_roots=False)


@pytest.fixture
def short_kamailio(kamailio_factory: KamailioFactory) -> Kamailio:
    """Kamailio granting at most 4 s, so refreshes happen within the test."""
    return kamailio_factory(KamailioConfig(min_expires=2, default_expires=4, max_expires=4))


@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
async def test_registers_and_kamailio_shows_the_contact(
    kamailio: Kamailio, peer_pki: TestPki, transport: SipTransport
) -> None:
    account = _account(kamailio, transport)
    async with Phone(PROFILE, account, trust=_trust(peer_pki), settings=FAST) as phone:
        done = await phone.register(timeout=10)
        assert isinstance(done, RegistrationSucceeded)
        assert done.expires == 60
        bindings = await kamailio.wait_bindings("101")
        assert len(bindings) == 1
        binding = bindings[0]
        assert binding.contact == phone.contact
        assert f"transport={transport.value.upper()}" in binding.contact or transport is (
            SipTransport.UDP
        )
        assert binding.user_agent == PROFILE.user_agent
        assert binding.socket.startswith(f"{transport.value}:127.0.0.1:")
    # Leaving the block unregistered the phone.
    assert await kamailio.wait_bindings("101", until=lambda b: not b, timeout=5) == []


@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
async def test_refreshes_before_the_granted_expiry(
    short_kamailio: Kamailio, peer_pki: TestPki, transport: SipTransport
) -> None:
    account = _account(short_kamailio, transport, reregister=4)
    async with Phone(PROFILE, account, trust=_trust(peer_pki), settings=FAST) as phone:
        events = phone.events()
        first = await phone.register(timeout=10)
        assert first.expires == 4 and not first.refresh
        # Granted 4 s: the phone refreshes at 2 s (half-way, the 5 s margin does not fit).
        seen: list[RegistrationSucceeded] = []
        async with asyncio.timeout(8):
            async for event in events:
                if isinstance(event, RegistrationSucceeded):
                    seen.append(event)
                    if len(seen) == 3:
                        break
        assert [e.refresh for e in seen] == [False, True, True]
        binding = (await short_kamailio.wait_bindings("101"))[0]
        # The same binding, refreshed: CSeq went up, Call-ID stayed.
        assert binding.cseq >= 3
        assert binding.contact == phone.contact


@pytest.mark.parametrize("transport", [SipTransport.TLS, SipTransport.TCP], ids=str)
async def test_reregisters_by_itself_after_kamailio_restarts(
    kamailio: Kamailio, peer_pki: TestPki, transport: SipTransport
) -> None:
    account = _account(kamailio, transport, retry=0.3)
    async with Phone(PROFILE, account, trust=_trust(peer_pki), settings=FAST) as phone:
        events = phone.events()
        await phone.register(timeout=10)
        await kamailio.wait_bindings("101")
        await asyncio.to_thread(kamailio.restart)
        assert kamailio.ul_dump() == []  # the restart really lost the location table
        dropped = False
        async with asyncio.timeout(15):
            async for event in events:
                if isinstance(event, ConnectionDropped):
                    dropped = True
                if isinstance(event, RegistrationSucceeded) and dropped:
                    break
        bindings = await kamailio.wait_bindings("101")
        assert bindings[0].contact == phone.contact


async def test_udp_phone_reregisters_after_restart_at_its_refresh(
    short_kamailio: Kamailio, peer_pki: TestPki
) -> None:
    account = _account(short_kamailio, SipTransport.UDP, reregister=4)
    async with Phone(PROFILE, account, settings=FAST) as phone:
        await phone.register(timeout=10)
        await asyncio.to_thread(short_kamailio.restart)
        # UDP has no connection to lose: the next refresh (2 s) puts the binding back.
        bindings = await short_kamailio.wait_bindings("101", timeout=8)
        assert bindings[0].contact == phone.contact


@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
async def test_wrong_password_fails_cleanly(
    kamailio: Kamailio, peer_pki: TestPki, transport: SipTransport
) -> None:
    account = _account(kamailio, transport, password="not-the-password")
    async with Phone(PROFILE, account, trust=_trust(peer_pki), settings=FAST) as phone:
        with pytest.raises(AuthenticationRefused) as info:
            await phone.register(timeout=10)
        assert info.value.status in (401, 403)
        assert info.value.exit_code == 1
        assert "not-the-password" not in str(info.value)
        assert "not-the-password" not in repr(phone) + repr(account)
        assert not phone.registered
    assert kamailio.bindings("101") == []


async def test_untrusted_server_certificate_is_refused_with_the_bitmask(
    kamailio: Kamailio,
) -> None:
    # The phone trusts only the public roots: the test CA is unknown to it.
    account = _account(kamailio, SipTransport.TLS)
    async with Phone(PROFILE, account, trust=TrustStore(), settings=FAST) as phone:
        with pytest.raises(TlsRefused) as info:
            await phone.register(timeout=10)
    assert info.value.exit_code == 1
    assert info.value.bitmask != 0
    assert info.value.verdict is not None
    assert "EUNTRUSTED" in info.value.verdict.flags
    assert info.value.verdict.bitmask_hex in str(info.value)
    assert kamailio.bindings("101") == []


async def test_certificate_for_another_name_is_refused(
    kamailio: Kamailio, peer_pki: TestPki
) -> None:
    account = _account(kamailio, SipTransport.TLS)
    account = Account(
        username="101", password=kamailio.user("101").password,
        host_primary=account.host_primary, domain=kamailio.domain, server_name="other.test",
    )
    async with Phone(PROFILE, account, trust=_trust(peer_pki), settings=FAST) as phone:
        with pytest.raises(TlsRefused) as info:
            await phone.register(timeout=10)
    verdict = info.value.verdict
    assert verdict is not None
    assert verdict.flags == ["EIDENTITY_NOT_MATCH"]


async def test_old_firmware_connects_despite_the_bad_certificate(kamailio: Kamailio) -> None:
    # Firmware before 2_9_0 does not validate: it registers to an untrusted server.
    old = profile_for("D65", "2_3_9")
    account = _account(kamailio, SipTransport.TLS)
    async with Phone(old, account, trust=TrustStore(), settings=FAST) as phone:
        done = await phone.register(timeout=10)
        assert done.expires == 60


# -- requests that arrive on the phone's connection (SIPp as the PBX) -------------------------

SCENARIOS = Path(__file__).resolve().parents[2] / "fixtures" / "phone"


@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
async def test_options_through_kamailio_reaches_the_phone_on_its_connection(
    kamailio: Kamailio, peer_pki: TestPki, tmp_path: Path, transport: SipTransport
) -> None:
    require("sipp")
    account = _account(kamailio, transport)
    async with Phone(PROFILE, account, trust=_trust(peer_pki), settings=FAST,
                     local_host="127.0.0.1") as phone:
        await phone.register(timeout=10)
        await kamailio.wait_bindings("101")
        events = phone.events()
        # SIPp talks to Kamailio over TCP; Kamailio relays over the phone's own connection.
        result = await run_sipp("options", ("127.0.0.1", kamailio.tcp_port), workdir=tmp_path,
                                transport="tcp", service="101", timeout=10)
        assert result.ok, result.describe()
        assert result.received_statuses()[-1] == 200
        options = result.received_messages()[-1]
        assert f"User-Agent: {PROFILE.user_agent}" in options
        answered = await anext(events)
        assert isinstance(answered, RequestAnswered)
        assert (answered.method, answered.status) == ("OPTIONS", 200)


@pytest.mark.parametrize("transport", [SipTransport.TLS, SipTransport.UDP], ids=str)
async def test_check_sync_message_and_info_through_kamailio(
    kamailio: Kamailio, peer_pki: TestPki, tmp_path: Path, transport: SipTransport
) -> None:
    require("sipp")
    account = _account(kamailio, transport)
    async with Phone(PROFILE, account, trust=_trust(peer_pki), settings=FAST,
                     local_host="127.0.0.1") as phone:
        await phone.register(timeout=10)
        await kamailio.wait_bindings("101")
        events = phone.events()
        result = await run_sipp(SCENARIOS / "check_sync.xml", ("127.0.0.1", kamailio.udp_port),
                                workdir=tmp_path, transport="udp", service="101", timeout=10)
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


async def test_sipp_malformed_request_gets_400_then_options_200_over_udp(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    require("sipp")
    account = _account(kamailio, SipTransport.UDP)
    async with Phone(PROFILE, account, settings=FAST, local_host="127.0.0.1") as phone:
        await phone.register(timeout=10)
        assert phone.contact is not None
        port = int(phone.contact.rsplit(":", 1)[1].split(";")[0])
        # Straight to the phone's socket: Kamailio's sanity checks would drop the bad one.
        result = await run_sipp("malformed_request", ("127.0.0.1", port), workdir=tmp_path,
                                transport="udp", service="101", timeout=10)
        assert result.ok, result.describe()
        assert result.received_statuses() == [400, 200]
        assert phone.registered
