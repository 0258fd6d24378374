"""The :class:`~phone_sim.phone.aio.Phone`'s call API (``dial``, ``next_call``, auto-answer):
phone-sim to phone-sim through Kamailio (both registered, Kamailio routing the calls over
their connections) and through the embedded lab; and what a phone does with no call layer
in use yet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.call.aio import Call, CallFailed, CallTimeout
from phone_sim.call.session import CallConfig, CallState
from phone_sim.errors import UsageError
from phone_sim.firmware import profile_for
from phone_sim.lab import Lab
from phone_sim.media.negotiation import Direction
from phone_sim.phone import Phone, RegistrationSettings, phone_signature
from phone_sim.phone.config import Impairment, MediaOptions, PhoneConfig
from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.testing.certs import TestPki
from phone_sim.tls.client import TrustStore
from tests.phone.registrars import KamailioServer, wait_bindings

pytestmark = pytest.mark.timeout(90)

PROFILE = profile_for("D65", "2_9_22")
FAST = RegistrationSettings(register_timeout=10.0, unregister_timeout=2.0)


def _account(kam: Kamailio, user: str, transport: SipTransport = SipTransport.TLS, *,
             media_encryption: str | None = "sdes") -> Account:
    host = SipHost(server="127.0.0.1", port=kam.port(transport.value), transport=transport,
                   media_encryption=media_encryption, reregister=60)
    return Account(username=user, password=kam.user(user).password, host_primary=host,
                   domain=kam.domain, server_name=kam.domain)


def _trust(pki: TestPki) -> TrustStore:
    return TrustStore.from_files([pki.ca.cert], public_roots=False)


def _direction(call: Call) -> Direction | None:
    return None if call.negotiated is None else call.negotiated.direction


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


# -- without a peer ---------------------------------------------------------------------------


def test_the_phone_advertises_what_its_call_layer_implements() -> None:
    signature = phone_signature(PROFILE)
    assert {"100rel", "timer"} <= set(signature.supported)
    assert {"INVITE", "ACK", "BYE", "CANCEL", "PRACK", "UPDATE"} <= set(signature.allow)
    # The firmware's own methods stay (NOTIFY check-sync, MESSAGE).
    assert {"NOTIFY", "MESSAGE", "OPTIONS"} <= set(signature.allow)
    assert phone_signature(PROFILE) is signature  # one per profile, shared by a fleet
    account = Account(username="101", password="x", host_primary=SipHost(
        server="127.0.0.1", port=5061, transport=SipTransport.TLS))
    phone = Phone(PhoneConfig(profile=PROFILE, accounts=(account,)))
    assert phone.core.signature is signature
    assert phone.calls == {}  # nothing is made before the phone runs


async def test_dial_before_register_is_a_usage_error() -> None:
    account = Account(username="101", password="x", host_primary=SipHost(
        server="127.0.0.1", port=9, transport=SipTransport.UDP))
    async with Phone(PhoneConfig(profile=PROFILE, accounts=(account,))) as phone:
        with pytest.raises(UsageError, match="register first"):
            await phone.dial("102")
        with pytest.raises(CallTimeout, match="no incoming call within"):
            await phone.next_call(timeout=0.05)
    with pytest.raises(UsageError, match="closed"):
        await phone.dial("102")


# -- through Kamailio ---------------------------------------------------------------------------


@pytest.fixture
async def callee(kamailio: Kamailio, peer_pki: TestPki) -> AsyncIterator[Phone]:
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(_account(kamailio, "102"),), trust=_trust(peer_pki),
        registration=FAST)) as phone:
        await phone.register(timeout=10)
        yield phone


@pytest.mark.peer
@pytest.mark.parametrize("transport", [SipTransport.TLS, SipTransport.TCP, SipTransport.UDP],
                         ids=str)
async def test_refused_then_answered_on_the_same_phones_through_kamailio(
    kamailio: Kamailio, peer_pki: TestPki, callee: Phone, transport: SipTransport
) -> None:
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(_account(kamailio, "101", transport),), trust=_trust(peer_pki),
        registration=FAST)) as caller:
        await caller.register(timeout=10)
        assert caller.calls == {}
        # 1. Busy: the callee refuses with 486; the caller's call fails naming it.
        call = await caller.dial("102")
        incoming = await callee.next_call(timeout=10)
        assert incoming.remote.startswith("sip:101@") and incoming.state is CallState.INCOMING
        await incoming.reject(486)
        with pytest.raises(CallFailed) as info:
            await call.wait_answered(timeout=10)
        assert info.value.status == 486
        # The phone advertised what it implements, in the INVITE that went through Kamailio.
        invite = incoming.session.invite
        assert invite is not None
        supported = {t.strip() for v in invite.headers.get_all("Supported")
                     for t in v.split(",")}
        assert {"100rel", "timer"} <= supported
        # 2. Declined with 603, same phones.
        call = await caller.dial("102")
        await (await callee.next_call(timeout=10)).reject(603)
        with pytest.raises(CallFailed) as info:
            await call.wait_answered(timeout=10)
        assert info.value.status == 603
        # 3. Then a call that works: audio both ways over SRTP, DTMF, hold, resume, hang-up.
        call = await caller.dial("102")
        incoming = await callee.next_call(timeout=10)
        await incoming.answer()
        await call.wait_answered(timeout=10)
        call.play_tone(1004)
        incoming.play_tone(697)
        await incoming.wait_tone(1004, timeout=10)
        await call.wait_tone(697, timeout=10)
        await call.send_dtmf("123")
        await incoming.wait_dtmf("123", timeout=10)
        await call.hold()
        assert _direction(call) is Direction.SENDONLY
        assert await _until(lambda: _direction(incoming) is Direction.RECVONLY)
        await call.resume()
        assert _direction(call) is Direction.SENDRECV
        stats = call.stats
        assert stats is not None and stats.encrypted
        assert stats.stream.srtp_auth_failures == 0 and stats.stream.packets_received >= 20
        assert stats.dtmf_received == "" and 697.0 in stats.tones_heard
        ended = await call.hangup()
        assert not ended.by_peer
        assert (await incoming.wait_ended(timeout=10)).by_peer
        assert await _until(lambda: not caller.calls and not callee.calls)
        assert caller.registered and callee.registered


@pytest.mark.peer
async def test_an_unacceptable_offer_gets_488_and_the_phone_takes_the_next_call(
    kamailio: Kamailio, peer_pki: TestPki, callee: Phone
) -> None:
    trust = _trust(peer_pki)
    plain = _account(kamailio, "101", media_encryption=None)  # RTP/AVP: the phone wants SDES
    async with (Phone(PhoneConfig(
        profile=PROFILE, accounts=(plain,), trust=trust, registration=FAST)) as rtp,
                Phone(PhoneConfig(
                    profile=PROFILE, accounts=(_account(kamailio, "103"),), trust=trust,
                    registration=FAST)) as srtp):
        await asyncio.gather(rtp.register(timeout=10), srtp.register(timeout=10))
        call = await rtp.dial("102")
        with pytest.raises(CallFailed) as info:
            await call.wait_answered(timeout=10)
        assert info.value.status == 488
        assert callee.refused == {488: 1}
        # The refusal never reached next_call(); the next good call does.
        good = await srtp.dial("102")
        incoming = await callee.next_call(timeout=10)
        assert incoming.remote.startswith("sip:103@")
        await incoming.answer()
        await good.wait_answered(timeout=10)
        await good.hangup()


@pytest.mark.peer
async def test_auto_answer_with_nobody_waiting_echoes_the_caller(
    kamailio: Kamailio, peer_pki: TestPki
) -> None:
    trust = _trust(peer_pki)
    async with (
        Phone(PhoneConfig(
            profile=PROFILE, accounts=(_account(kamailio, "101"),), trust=trust,
            registration=FAST)) as caller,
        Phone(PhoneConfig(
            profile=PROFILE, accounts=(_account(kamailio, "102"),), trust=trust, registration=FAST,
            auto_answer=True)) as answerer,
    ):
        await asyncio.gather(caller.register(timeout=10), answerer.register(timeout=10))
        for _ in range(2):  # twice: the phone keeps answering with nobody on next_call()
            call = await caller.dial("102")
            await call.wait_answered(timeout=10)
            call.play_tone(1004)
            await call.wait_tone(1004, timeout=10)  # its own tone, echoed by the answerer
            await call.hangup()
        # next_call() still reports the calls, but only those still going.
        # (the caller's hang-up returns once its BYE is out; the BYE reaches the answerer after)
        assert await _until(lambda: not answerer.calls)
        with pytest.raises(CallTimeout):
            await answerer.next_call(timeout=0.2)


@pytest.mark.peer
async def test_a_ringing_phone_nobody_answers_times_out_then_answers_the_next(
    kamailio: Kamailio, peer_pki: TestPki
) -> None:
    trust = _trust(peer_pki)
    async with (
        Phone(PhoneConfig(
            profile=PROFILE, accounts=(_account(kamailio, "101"),), trust=trust,
            registration=FAST)) as caller,
        Phone(PhoneConfig(
            profile=PROFILE, accounts=(_account(kamailio, "102"),), trust=trust, registration=FAST,
            calls=CallConfig(ring_timeout=1.0))) as ringing,
    ):
        await asyncio.gather(caller.register(timeout=10), ringing.register(timeout=10))
        # Nobody waits on next_call(): the phone rings (180), then gives up with 480.
        call = await caller.dial("102")
        with pytest.raises(CallFailed) as info:
            await call.wait_answered(timeout=10)
        assert info.value.status == 480
        assert call.progress[:1] == [180]
        # A call the caller cancels while it rings.
        call = await caller.dial("102")
        assert await _until(lambda: 180 in call.progress)
        await call.hangup()
        # Those two ended unclaimed: next_call() gives the third, which is answered.
        call = await caller.dial("102")
        incoming = await ringing.next_call(timeout=10)
        assert incoming.state is CallState.INCOMING
        await incoming.answer()
        await call.wait_answered(timeout=10)
        await incoming.hangup()
        assert (await call.wait_ended(timeout=10)).by_peer


@pytest.mark.peer
async def test_a_lost_connection_ends_the_call_and_the_phones_call_again_after(
    kamailio: Kamailio, peer_pki: TestPki
) -> None:
    trust = _trust(peer_pki)

    def account(user: str) -> Account:
        base = _account(kamailio, user)
        host = SipHost(server=base.host_primary.server, port=base.host_primary.port,
                       transport=SipTransport.TLS, media_encryption="sdes", retry=0.5)
        return Account(username=user, password=base.password, host_primary=host,
                       domain=kamailio.domain, server_name=kamailio.domain)

    async with (
        Phone(PhoneConfig(
            profile=PROFILE, accounts=(account("101"),), trust=trust, registration=FAST)) as a,
        Phone(PhoneConfig(
            profile=PROFILE, accounts=(account("102"),), trust=trust, registration=FAST,
            auto_answer=True)) as b,
    ):
        await asyncio.gather(a.register(timeout=10), b.register(timeout=10))
        call = await a.dial("102")
        await call.wait_answered(timeout=10)
        (answered,) = b.calls.values()
        # Kamailio goes away: both TLS connections drop, and with them the dialogs.
        await asyncio.to_thread(kamailio.stop)
        for side in (call, answered):
            ended = await side.wait_ended(timeout=5)
            assert ended.status == 503 and "transport" in ended.reason
        assert call.endpoint is None and answered.endpoint is None  # media closed
        # It comes back: the phones re-register by themselves and call again.
        await asyncio.to_thread(kamailio.start)
        await asyncio.gather(a.wait_registered(timeout=20), b.wait_registered(timeout=20))
        # Kamailio's location table is in memory: wait until it holds both new bindings.
        server = KamailioServer(kamailio, trust)
        await asyncio.gather(wait_bindings(server, "101", timeout=20),
                             wait_bindings(server, "102", timeout=20))
        call = await a.dial("102")
        await call.wait_answered(timeout=10)
        call.play_tone(1004)
        await call.wait_tone(1004, timeout=10)
        await call.hangup()


# -- through the embedded lab -------------------------------------------------------------------


def _lab_phone(lab: Lab, user: str, media: MediaOptions | None = None) -> Phone:
    host = SipHost(server=lab.host, port=lab.ports["tls"], transport=SipTransport.TLS,
                   media_encryption="sdes", retry=0.5)
    account = Account(username=user, password="1234", host_primary=host,
                      domain=lab.server_name, server_name=lab.server_name)
    trust = TrustStore.from_pem(lab.ca_pem, public_roots=False)
    return Phone(PhoneConfig(profile=PROFILE, accounts=(account,), trust=trust, registration=FAST,
                             media=media or MediaOptions()))


async def test_phone_to_phone_through_the_lab_refusal_then_call() -> None:
    async with (Lab({"101": "1234", "102": "1234"}) as lab, _lab_phone(lab, "101") as a,
                _lab_phone(lab, "102") as b):
        await asyncio.gather(a.register(timeout=10), b.register(timeout=10))
        call = await a.dial("102")
        await (await b.next_call(timeout=10)).reject(486)
        with pytest.raises(CallFailed) as info:
            await call.wait_answered(timeout=10)
        assert info.value.status == 486
        call = await a.dial("102")
        incoming = await b.next_call(timeout=10)
        await incoming.answer()
        await call.wait_answered(timeout=10)
        incoming.play_tone(697)
        await call.wait_tone(697, timeout=10)
        await incoming.hold()
        await incoming.resume()
        await call.hangup()
        assert (await incoming.wait_ended(timeout=10)).by_peer


async def test_each_phones_impairment_damages_the_audio_it_sends() -> None:
    # The caller's access network loses 20% (dial() opens its media through it), the
    # callee's 5% with jitter (answer() does): each far end counts the other's losses.
    up_net = Impairment(loss_percent=20, seed=1)
    down_net = Impairment(loss_percent=5, jitter_ms=10, seed=2)
    async with (Lab({"101": "1234", "102": "1234"}) as lab,
                _lab_phone(lab, "101", MediaOptions(impairment=up_net)) as a,
                _lab_phone(lab, "102", MediaOptions(impairment=down_net)) as b):
        await asyncio.gather(a.register(timeout=10), b.register(timeout=10))
        call = await a.dial("102")
        incoming = await b.next_call(timeout=10)
        await incoming.answer()
        await call.wait_answered(timeout=10)
        assert call.endpoint is not None and incoming.endpoint is not None
        up, down = call.endpoint.impaired, incoming.endpoint.impaired
        assert up is not None and down is not None
        assert up.impairment is up_net and down.impairment is down_net
        call.play_tone(1004)
        incoming.play_tone(697)
        await incoming.wait_tone(1004, timeout=10)  # the audio gets through, damaged
        await call.wait_tone(697, timeout=10)
        await asyncio.sleep(2.0)
        await call.hangup()
        await incoming.wait_ended(timeout=10)
    assert call.stats is not None and incoming.stats is not None
    heard_by_b, heard_by_a = incoming.stats.stream, call.stats.stream
    assert up.offered >= 100 and down.offered >= 100
    assert 0.1 < up.dropped / up.offered < 0.3
    assert 0.01 < down.dropped / down.offered < 0.12
    assert up.dropped - 3 <= heard_by_b.packets_lost <= up.dropped
    assert down.dropped - 3 <= heard_by_a.packets_lost <= down.dropped
