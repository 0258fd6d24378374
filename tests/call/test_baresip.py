"""phone-sim and baresip call each other through Kamailio over TLS with SDES-SRTP.

Each side's tone is detected at the far end (phone-sim's Goertzel on what it decrypts,
baresip's recording of what it decrypts), the RTP on the wire is SRTP, and hold/resume and
RFC 4733 DTMF work against baresip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.call.aio import Call
from phone_sim.firmware import profile_for
from phone_sim.media.negotiation import Direction
from phone_sim.phone import Phone, RegistrationSettings
from phone_sim.phone.config import PhoneConfig
from phone_sim.testing.aio_baresip import Baresip
from phone_sim.testing.aio_capture import Capture, srtp_wire_report
from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.testing.aio_pytest_peers import BaresipFactory, CaptureFactory
from phone_sim.testing.audio import wav_tone_report
from phone_sim.testing.certs import TestPki
from phone_sim.tls.client import TrustStore

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

PROFILE = profile_for("D65", "2_9_22")
FAST = RegistrationSettings(register_timeout=10.0, unregister_timeout=2.0)
OURS = 1004.0
THEIRS = 697.0


def _account(kam: Kamailio, user: str, transport: SipTransport = SipTransport.TLS) -> Account:
    host = SipHost(server="127.0.0.1", port=kam.port(transport.value),
                   transport=transport, media_encryption="sdes", reregister=60)
    return Account(username=user, password=kam.user(user).password, host_primary=host,
                   domain=kam.domain, server_name=kam.domain)


@pytest.fixture
async def phone(kamailio: Kamailio, peer_pki: TestPki) -> AsyncIterator[Phone]:
    trust = TrustStore.from_files([peer_pki.ca.cert], public_roots=False)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(_account(kamailio, "101"),), trust=trust,
        registration=FAST)) as phone:
        await phone.register(timeout=10)
        yield phone


def _direction(call: Call) -> Direction:
    assert call.negotiated is not None
    return call.negotiated.direction


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


def _heard(recordings: list[Path]) -> Path:
    assert recordings, "baresip recorded nothing"
    return recordings[-1]


@pytest.mark.parametrize("transport", [SipTransport.TLS, SipTransport.UDP], ids=str)
async def test_phone_sim_calls_baresip_both_tones_heard_and_srtp_on_the_wire(
    kamailio: Kamailio, baresip_factory: BaresipFactory, capture_factory: CaptureFactory,
    peer_pki: TestPki, transport: SipTransport,
) -> None:
    callee = baresip_factory(kamailio, "102", tone_hz=THEIRS, answermode="auto")
    await callee.wait_registered()
    capture = await asyncio.to_thread(capture_factory, udp_ports=[*callee.rtp_ports])
    trust = TrustStore.from_files([peer_pki.ca.cert], public_roots=False)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(_account(kamailio, "101", transport),), trust=trust,
        registration=FAST)) as phone:
        await phone.register(timeout=10)
        await _call_baresip(phone, callee, capture)


async def _call_baresip(phone: Phone, callee: Baresip, capture: Capture) -> None:
    call = await phone.dial("102")
    await call.wait_answered(timeout=10)
    call.play_tone(OURS)
    heard_before_the_tone = callee.heard_seconds()
    await call.wait_tone(THEIRS, timeout=10)
    # Enough audio for the checks below: baresip decoded 1.5 s of our tone, we 50 packets.
    await callee.wait_heard(heard_before_the_tone + 1.5)
    assert await _until(lambda: call.stats is not None
                        and call.stats.stream.packets_received >= 50)
    stats = call.stats
    assert stats is not None and stats.encrypted
    assert stats.stream.srtp_auth_failures == 0 and stats.stream.packets_received >= 50
    assert call.endpoint is not None
    our_port = call.endpoint.local_rtp_port
    await call.hangup()
    await callee.wait_event("CALL_CLOSED")
    await capture.astop()
    assert wav_tone_report(_heard(callee.recordings()), OURS).windows_with_tone >= 10
    packets = capture.udp_packets()
    theirs = callee.rtp_ports[0]
    for src, dst, tone in ((our_port, theirs, OURS), (theirs, our_port, THEIRS)):
        wire = srtp_wire_report(packets, src_port=src, dst_port=dst, tone_hz=tone)
        assert wire.rtp_packets >= 50, wire
        assert wire.looks_like_srtp, wire


async def test_baresip_calls_phone_sim_hold_resume_and_dtmf(
    kamailio: Kamailio, baresip_factory: BaresipFactory, phone: Phone,
) -> None:
    caller = baresip_factory(kamailio, "102", tone_hz=THEIRS)
    await caller.wait_registered()
    await caller.dial("101")
    call = await phone.next_call(timeout=10)
    assert call.incoming and "102" in call.remote
    await call.answer()
    await call.wait_answered(timeout=10)
    await caller.wait_event("CALL_ESTABLISHED")
    call.play_tone(OURS)
    await call.wait_tone(THEIRS, timeout=10)
    # phone-sim holds baresip, then resumes.
    await call.hold()
    assert _direction(call) is Direction.SENDONLY
    await call.resume()
    assert _direction(call) is Direction.SENDRECV
    # DTMF both ways (RFC 4733).
    mark = len(caller.events)
    await call.send_dtmf("159")
    assert await caller.received_dtmf(3, after=mark) == "159"
    await caller.send_dtmf("4#")
    await call.wait_dtmf("4#", timeout=10)
    # baresip holds phone-sim: phone-sim answers the re-INVITE and stops sending.
    await caller.hold()
    assert await _until(lambda: call.on_hold)
    assert call.stream is not None and call.stream.direction in ("recvonly", "inactive")
    await caller.resume()
    assert await _until(lambda: not call.on_hold)
    assert call.stream.direction == "sendrecv"
    await caller.hangup()
    ended = await call.wait_ended(timeout=10)
    assert ended.by_peer


async def test_baresip_calls_an_auto_answering_phone_nobody_waits_on_and_hears_its_echo(
    kamailio: Kamailio, baresip_factory: BaresipFactory, peer_pki: TestPki,
) -> None:
    trust = TrustStore.from_files([peer_pki.ca.cert], public_roots=False)
    async with Phone(PhoneConfig(
        profile=PROFILE, accounts=(_account(kamailio, "101"),), trust=trust, registration=FAST,
        auto_answer=True)) as phone:
        await phone.register(timeout=10)
        caller = baresip_factory(kamailio, "102", tone_hz=THEIRS)
        await caller.wait_registered()
        await caller.dial("101")  # no next_call(): the phone answers and echoes by itself
        await caller.wait_event("CALL_ESTABLISHED")
        (call,) = phone.calls.values()
        await call.wait_tone(THEIRS, timeout=10)
        await caller.wait_heard(1.5)  # its own tone, echoed
        await caller.hangup()
        assert (await call.wait_ended(timeout=10)).by_peer
        await caller.wait_event("CALL_CLOSED")
    # baresip recorded what it received: its own tone, echoed by phone-sim over SRTP.
    assert wav_tone_report(_heard(caller.recordings()), THEIRS).windows_with_tone >= 10
