"""SRTP layer: RFC 3711 vectors and interop with an independent implementation."""

from __future__ import annotations

import base64
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.media.srtp import (
    SrtpContext,
    SrtpKeyError,
    SrtpPacketError,
    check_key_material,
    is_plain_rtcp,
)
from tests.media import rfc3711

# RFC 3711 Appendix B.3.
MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
CIPHER_KEY = bytes.fromhex("C61E7A93744F39EE10734AFE3FF7A087")
CIPHER_SALT = bytes.fromhex("30CBBC08863D8C85D49DB34A9AE1")
AUTH_KEY_PREFIX = bytes.fromhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")


def rtp(seq: int, *, ssrc: int = 0xDEADBEEF, ts: int = 1000, payload: bytes = b"\x55" * 160,
        pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + payload


def rtcp_rr(ssrc: int = 0xDEADBEEF) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def test_key_derivation_matches_rfc3711_b3() -> None:
    assert rfc3711.derive(MASTER_KEY, MASTER_SALT, rfc3711.LABEL_RTP_ENCRYPTION, 16) == CIPHER_KEY
    assert rfc3711.derive(MASTER_KEY, MASTER_SALT, rfc3711.LABEL_RTP_SALT, 14) == CIPHER_SALT
    assert rfc3711.derive(MASTER_KEY, MASTER_SALT, rfc3711.LABEL_RTP_AUTH, 20) == AUTH_KEY_PREFIX


def test_project_packets_equal_reference_packets_byte_for_byte() -> None:
    key = MASTER_KEY + MASTER_SALT
    ours = SrtpContext(tx_key=key, rx_key=os.urandom(30))
    ref = rfc3711.ReferenceSrtp(key)
    # libsrtp numbers SRTCP from 1; the index travels in the packet, so any start interoperates.
    ref.rtcp_index = 1
    # Cross the 16-bit wrap so the rollover counter is exercised too.
    for seq in [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2]:
        packet = rtp(seq, ts=seq * 160, payload=os.urandom(160))
        assert ours.protect_rtp(packet) == ref.protect_rtp(packet)
    assert ref.roc == 1
    for _ in range(3):
        report = rtcp_rr() + os.urandom(24)
        assert ours.protect_rtcp(report) == ref.protect_rtcp(report)


def test_protected_packet_is_not_the_plain_payload() -> None:
    key = os.urandom(30)
    payload = bytes(range(160))
    protected = SrtpContext(tx_key=key, rx_key=key).protect_rtp(rtp(1, payload=payload))
    assert payload not in protected
    assert len(protected) == 12 + 160 + 10


@pytest.mark.parametrize("count", [1, 5])
def test_reference_to_project_both_rtp_and_rtcp(count: int) -> None:
    key = os.urandom(30)
    ref = rfc3711.ReferenceSrtp(key)
    ours = SrtpContext(tx_key=os.urandom(30), rx_key=key)
    for seq in range(100, 100 + count):
        packet = rtp(seq, payload=os.urandom(80))
        assert ours.unprotect_rtp(ref.protect_rtp(packet)) == packet
        report = rtcp_rr() + os.urandom(20)
        assert ours.unprotect_rtcp(ref.protect_rtcp(report)) == report
    assert ours.counters.auth_failures == 0


def test_project_to_reference_both_rtp_and_rtcp() -> None:
    key = os.urandom(30)
    ours = SrtpContext(tx_key=key, rx_key=os.urandom(30))
    ref = rfc3711.ReferenceSrtp(key)
    for seq in range(7):
        packet = rtp(seq)
        assert ref.unprotect_rtp(ours.protect_rtp(packet)) == packet
        report = rtcp_rr() + bytes(8)
        assert ref.unprotect_rtcp(ours.protect_rtcp(report)) == report


def test_two_contexts_talk_both_ways() -> None:
    a_key, b_key = os.urandom(30), os.urandom(30)
    a = SrtpContext(tx_key=a_key, rx_key=b_key)
    b = SrtpContext(tx_key=b_key, rx_key=a_key)
    assert b.unprotect_rtp(a.protect_rtp(rtp(1))) == rtp(1)
    assert a.unprotect_rtp(b.protect_rtp(rtp(9))) == rtp(9)
    assert a.unprotect_rtcp(b.protect_rtcp(rtcp_rr())) == rtcp_rr()


def test_tampered_packet_is_counted_and_dropped() -> None:
    key = os.urandom(30)
    ctx = SrtpContext(tx_key=key, rx_key=key)
    protected = bytearray(ctx.protect_rtp(rtp(1)))
    protected[20] ^= 1
    assert ctx.unprotect_rtp(bytes(protected)) is None
    assert ctx.counters.rtp_auth_failures == 1


def test_replay_is_counted_and_dropped() -> None:
    key = os.urandom(30)
    sender = SrtpContext(tx_key=key, rx_key=key)
    receiver = SrtpContext(tx_key=key, rx_key=key)
    packet = sender.protect_rtp(rtp(5))
    assert receiver.unprotect_rtp(packet) == rtp(5)
    assert receiver.unprotect_rtp(packet) is None
    assert receiver.counters.rtp_replay_failures == 1
    report = sender.protect_rtcp(rtcp_rr())
    assert receiver.unprotect_rtcp(report) is not None
    assert receiver.unprotect_rtcp(report) is None
    assert receiver.counters.rtcp_replay_failures == 1
    assert receiver.counters.replay_failures == 2


def counts(ctx: SrtpContext) -> dict[str, int]:
    c = ctx.counters
    return {"rtp_auth": c.rtp_auth_failures, "rtp_replay": c.rtp_replay_failures,
            "rtcp_auth": c.rtcp_auth_failures, "rtcp_replay": c.rtcp_replay_failures,
            "rtcp_unprotected": c.rtcp_unprotected, "other": c.other_failures}


NONE = dict.fromkeys(["rtp_auth", "rtp_replay", "rtcp_auth", "rtcp_replay",
                      "rtcp_unprotected", "other"], 0)


def test_stray_unprotected_rtcp_is_counted_apart_not_an_exception() -> None:
    # baresip sends one unprotected RTCP at the start and BYE/SDES at hangup.
    ctx = SrtpContext(tx_key=os.urandom(30), rx_key=os.urandom(30))
    bye = struct.pack("!BBHI", 0x81, 203, 1, 0x1234)
    sdes = struct.pack("!BBHI", 0x81, 202, 3, 0x1234) + b"\x01\x03abc\x00\x00\x00"
    assert ctx.unprotect_rtcp(bye + sdes) is None  # libsrtp: the E flag is clear
    assert counts(ctx) == {**NONE, "rtcp_unprotected": 1}
    assert ctx.unprotect_rtcp(rtcp_rr()) is None  # libsrtp: too short for a trailer
    assert counts(ctx) == {**NONE, "rtcp_unprotected": 2}
    # Plain RTCP whose bytes where the E flag would be have it set: libsrtp checks the tag and
    # calls it an authentication failure, but it is plain RTCP all the same.
    rr = struct.pack("!BBHI", 0x81, 201, 7, 0x1234) + b"\xff" * 24
    assert rr[-14] & 0x80
    assert ctx.unprotect_rtcp(rr) is None
    assert counts(ctx) == {**NONE, "rtcp_unprotected": 3}
    # What is not RTCP at all is malformed, on either port.
    assert ctx.unprotect_rtcp(b"\x80") is None
    assert ctx.unprotect_rtp(b"") is None
    assert counts(ctx) == {**NONE, "rtcp_unprotected": 3, "other": 2}
    assert ctx.counters.auth_failures == 0


def test_tampered_srtcp_is_an_auth_failure() -> None:
    key = os.urandom(30)
    sender = SrtpContext(tx_key=key, rx_key=os.urandom(30))
    receiver = SrtpContext(tx_key=os.urandom(30), rx_key=key)
    report = rtcp_rr() + os.urandom(24)
    for index in (4, 12, -12, -1):  # the SSRC, the encrypted body, the index, the tag
        protected = bytearray(sender.protect_rtcp(report))
        protected[index] ^= 0x01
        assert receiver.unprotect_rtcp(bytes(protected)) is None
    assert counts(receiver) == {**NONE, "rtcp_auth": 4}
    # The receiver is intact: the next good packet goes through.
    assert receiver.unprotect_rtcp(sender.protect_rtcp(report)) == report
    assert receiver.counters.auth_failures == 4


def test_srtcp_under_the_wrong_key_is_an_auth_failure() -> None:
    ours, theirs = os.urandom(30), os.urandom(30)
    receiver = SrtpContext(tx_key=os.urandom(30), rx_key=ours)
    wrong = SrtpContext(tx_key=theirs, rx_key=os.urandom(30))
    for _ in range(3):
        assert receiver.unprotect_rtcp(wrong.protect_rtcp(rtcp_rr() + bytes(24))) is None
    assert counts(receiver) == {**NONE, "rtcp_auth": 3}
    assert receiver.counters.auth_failures == 3


@given(st.lists(st.binary(min_size=24, max_size=24), max_size=31), st.integers(0, 2**32 - 1))
def test_plain_rtcp_is_told_from_srtcp(blocks: list[bytes], ssrc: int) -> None:
    report = struct.pack("!BBHI", 0x80 | len(blocks), 201, 1 + 6 * len(blocks), ssrc)
    report += b"".join(blocks)
    assert is_plain_rtcp(report)
    key = os.urandom(30)
    protected = SrtpContext(tx_key=key, rx_key=key).protect_rtcp(report)
    assert not is_plain_rtcp(protected)
    assert not is_plain_rtcp(report[:-1]) and not is_plain_rtcp(report + b"\x00")


@pytest.mark.parametrize("bad", [b"", b"x" * 29, b"x" * 31, "x" * 30])
def test_bad_key_material_is_a_clear_error(bad: object) -> None:
    with pytest.raises(SrtpKeyError, match=r"(30 bytes|must be bytes)"):
        check_key_material(bad)  # type: ignore[arg-type]


def test_oversized_packet_is_a_clear_error() -> None:
    key = os.urandom(30)
    with pytest.raises(SrtpPacketError, match="cannot protect RTP packet of 1500 bytes"):
        SrtpContext(tx_key=key, rx_key=key).protect_rtp(rtp(1, payload=bytes(1488)))


def test_keys_never_in_repr() -> None:
    key = os.urandom(30)
    text = repr(SrtpContext(tx_key=key, rx_key=key))
    assert "redacted" in text
    for form in (key.hex(), key.hex().upper(), base64.b64encode(key).decode(), repr(key)):
        assert form not in text


def test_keys_equal() -> None:
    a, b = os.urandom(30), os.urandom(30)
    ctx = SrtpContext(tx_key=a, rx_key=b)
    assert ctx.keys_equal(tx_key=a, rx_key=b)
    assert not ctx.keys_equal(tx_key=b, rx_key=a)


@pytest.mark.parametrize("direct", [True, False], ids=["direct-libsrtp", "public-pylibsrtp"])
def test_both_libsrtp_call_paths_match_the_reference(
    direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phone_sim.media import srtp

    if direct and not srtp.DIRECT_LIBSRTP:
        pytest.skip("this pylibsrtp does not pass the direct-call self-check")
    monkeypatch.setattr(srtp, "DIRECT_LIBSRTP", direct)
    key = os.urandom(30)
    ours = SrtpContext(tx_key=key, rx_key=key)
    ref = rfc3711.ReferenceSrtp(key)
    ref.rtcp_index = 1
    for seq in (1, 2, 3):
        packet = rtp(seq)
        assert ours.protect_rtp(packet) == ref.protect_rtp(packet)
        assert ours.protect_rtcp(rtcp_rr()) == ref.protect_rtcp(rtcp_rr())
    receiver = SrtpContext(tx_key=key, rx_key=key)
    assert receiver.unprotect_rtp(ref.protect_rtp(rtp(4))) == rtp(4)
    assert receiver.unprotect_rtp(b"\x80" * 30) is None
    assert receiver.counters.rtp_auth_failures == 1
