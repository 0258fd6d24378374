"""SDES-SRTP calls between phone-sim and a real Asterisk 22 from fixtures/asterisk.

Every audio check is a tone detected in what the receiving side decrypted: Asterisk's echo
(600), its milliwatt tone (601), a WAV it plays (602), the other phone of a call through it.
DTMF goes both ways (RFC 4733): Asterisk sends digits (604) and judges the phone's (605).
"""

from __future__ import annotations

import asyncio

import pytest

from phone_sim import Call, CallFailed, Phone
from phone_sim.media.negotiation import Direction
from phone_sim.testing.aio_asterisk import Asterisk
from tests.asterisk.conftest import PhoneFactory

pytestmark = [pytest.mark.asterisk, pytest.mark.peer, pytest.mark.timeout(90)]

OURS = 1004.0
THEIRS = 697.0


def _assert_srtp_flowing(call: Call, codec: str = "G722") -> None:
    stats = call.stats
    assert stats is not None
    assert stats.encrypted, "the media is not SRTP"
    assert stats.codec == codec
    assert stats.stream.srtp_auth_failures == 0
    assert stats.stream.packets_received >= 10, stats.stream


async def _answered(phone: Phone, to: str) -> Call:
    call = await phone.dial(to)
    await call.wait_answered(timeout=10)
    return call


async def test_echo_sends_the_phones_tone_back_over_srtp(phones: PhoneFactory) -> None:
    phone = await phones("101")
    call = await _answered(phone, "600")
    call.play_tone(OURS)
    await call.wait_tone(OURS, timeout=10)
    await asyncio.sleep(0.5)
    _assert_srtp_flowing(call)
    assert call.negotiated is not None
    assert call.negotiated.direction is Direction.SENDRECV
    await call.hangup()


@pytest.mark.parametrize(("number", "hz"), [("601", 1004.0), ("602", 700.0)],
                         ids=["milliwatt", "playback"])
async def test_asterisk_plays_a_tone_the_phone_hears(
    phones: PhoneFactory, number: str, hz: float
) -> None:
    phone = await phones("101")
    call = await _answered(phone, number)
    await call.wait_tone(hz, timeout=10)
    _assert_srtp_flowing(call)
    await call.hangup()


async def test_two_phones_call_through_asterisk_and_hear_each_other(
    asterisk: Asterisk, phones: PhoneFactory
) -> None:
    alice = await phones("101")
    bob = await phones("102")
    outgoing = await alice.dial("102")
    incoming = await bob.next_call(timeout=10)
    assert "101" in incoming.remote
    await incoming.answer()
    await outgoing.wait_answered(timeout=10)
    outgoing.play_tone(OURS)
    incoming.play_tone(THEIRS)
    await outgoing.wait_tone(THEIRS, timeout=10)
    await incoming.wait_tone(OURS, timeout=10)
    _assert_srtp_flowing(outgoing)
    _assert_srtp_flowing(incoming)
    # Asterisk bridged two SRTP legs (not a direct-media shortcut between the phones).
    channels = asterisk.cli("core show channels concise").splitlines()
    assert sorted(c.split("-")[0] for c in channels) == ["PJSIP/101", "PJSIP/102"], channels
    await outgoing.hangup()
    await incoming.wait_ended(timeout=10)


async def test_dtmf_from_asterisk_reaches_the_phone(phones: PhoneFactory) -> None:
    phone = await phones("101")
    call = await _answered(phone, "604")
    await call.wait_dtmf("4567#", timeout=10)
    await call.hangup()


@pytest.mark.parametrize(("digits", "verdict_hz"), [("1234", 1400.0), ("9999", 400.0)],
                         ids=["right-digits", "wrong-digits"])
async def test_asterisk_reads_the_phones_dtmf(
    phones: PhoneFactory, digits: str, verdict_hz: float
) -> None:
    phone = await phones("101")
    call = await _answered(phone, "605")
    await asyncio.sleep(0.5)  # Read() starts listening once Answer() is done
    await call.send_dtmf(digits)
    await call.wait_tone(verdict_hz, timeout=10)
    await call.hangup()


async def test_dtmf_both_ways_between_two_phones(phones: PhoneFactory) -> None:
    alice = await phones("101")
    bob = await phones("102")
    outgoing = await alice.dial("102")
    incoming = await bob.next_call(timeout=10)
    await incoming.answer()
    await outgoing.wait_answered(timeout=10)
    await outgoing.send_dtmf("159")
    await incoming.wait_dtmf("159", timeout=10)
    await incoming.send_dtmf("4#")
    await outgoing.wait_dtmf("4#", timeout=10)
    await outgoing.hangup()


async def test_echo_sends_the_phones_dtmf_back(phones: PhoneFactory) -> None:
    phone = await phones("101")
    call = await _answered(phone, "600")
    await asyncio.sleep(0.5)
    await call.send_dtmf("123*0")
    await call.wait_dtmf("123*0", timeout=10)
    await call.hangup()


async def test_hold_and_resume_against_asterisk(phones: PhoneFactory) -> None:
    phone = await phones("101")
    call = await _answered(phone, "600")
    call.play_tone(OURS)
    await call.wait_tone(OURS, timeout=10)
    await call.hold()
    assert call.on_hold
    assert call.negotiated is not None
    assert call.negotiated.direction is Direction.SENDONLY
    await call.resume()
    assert not call.on_hold
    assert call.negotiated.direction is Direction.SENDRECV
    # A new tone after the resume comes back through the echo: media flows again.
    call.play_tone(1400.0)
    await call.wait_tone(1400.0, timeout=10)
    _assert_srtp_flowing(call)
    await call.hangup()


async def test_asterisk_holds_and_resumes_the_phone(phones: PhoneFactory) -> None:
    # Bob holds Alice through Asterisk: Asterisk re-INVITEs Alice (or tells her by its own
    # means) and the call survives with audio afterwards.
    alice = await phones("101")
    bob = await phones("102")
    outgoing = await alice.dial("102")
    incoming = await bob.next_call(timeout=10)
    await incoming.answer()
    await outgoing.wait_answered(timeout=10)
    await incoming.hold()
    assert incoming.on_hold
    await incoming.resume()
    outgoing.play_tone(OURS)
    await incoming.wait_tone(OURS, timeout=10)
    incoming.play_tone(THEIRS)
    await outgoing.wait_tone(THEIRS, timeout=10)
    await outgoing.hangup()


@pytest.mark.parametrize("method", ["UPDATE", "INVITE"])
async def test_session_refresh_is_accepted_and_the_call_goes_on(
    asterisk: Asterisk, phones: PhoneFactory, method: str
) -> None:
    from phone_sim import CallConfig

    phone = await phones("101", calls=CallConfig(refresh_method=method))
    call = await _answered(phone, "600")
    call.play_tone(OURS)
    await call.wait_tone(OURS, timeout=10)
    await call.refresh()
    await call.refresh()
    call.play_tone(1400.0)
    await call.wait_tone(1400.0, timeout=10)
    _assert_srtp_flowing(call)
    await call.hangup()


async def test_a_phone_without_sdes_gets_488(phones: PhoneFactory) -> None:
    # The endpoints demand SDES-SRTP: a plain RTP/AVP offer is not acceptable.
    phone = await phones("101", sdes=False)
    call = await phone.dial("600")
    with pytest.raises(CallFailed) as info:
        await call.wait_answered(timeout=10)
    assert info.value.status == 488


async def test_the_busy_number_gets_486(phones: PhoneFactory) -> None:
    phone = await phones("101")
    call = await phone.dial("603")
    with pytest.raises(CallFailed) as info:
        await call.wait_answered(timeout=10)
    assert info.value.status == 486
