"""RTP/RTCP wire formats: our light header codec agrees with aiortc's, errors are ours."""

from __future__ import annotations

import contextlib
import struct

import pytest
from aiortc.rtp import RtpPacket as AiortcRtpPacket
from hypothesis import assume, given
from hypothesis import strategies as st

from phone_sim.errors import ProtocolError
from phone_sim.media.rtp import (
    RtcpByePacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    RtpPacketError,
    is_rtcp,
    pack_rtp_header,
    parse_rtcp,
    serialize_rtcp,
)

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none() | st.tuples(
        st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))
    ),
    padding_size=st.sampled_from([0, 1, 4]),
)


@given(packets)
def test_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(bytes(packet)) == packet


@given(packets)
def test_agrees_with_aiortc(packet: RtpPacket) -> None:
    # aiortc decodes RFC 8285 extensions (profiles 0xBEDE and 0x100X) and refuses malformed
    # ones; the phone keeps every extension opaque (RFC 3550 5.3.1). Compare the rest.
    assume(packet.extension is None or (
        packet.extension[0] != 0xBEDE and packet.extension[0] & 0xFFF0 != 0x1000))
    theirs = AiortcRtpPacket.parse(bytes(packet))
    assert theirs.payload_type == packet.payload_type
    assert theirs.sequence_number == packet.sequence_number
    assert theirs.timestamp == packet.timestamp
    assert theirs.ssrc == packet.ssrc
    assert bool(theirs.marker) == packet.marker
    assert tuple(theirs.csrc) == packet.csrc
    assert theirs.payload == packet.payload


def test_hot_path_header_matches_the_dataclass() -> None:
    header = pack_rtp_header(9, 65535, 123456, 0xCAFEBABE, marker=True)
    assert header + b"abc" == bytes(
        RtpPacket(payload_type=9, sequence_number=65535, timestamp=123456, ssrc=0xCAFEBABE,
                  payload=b"abc", marker=True)
    )


@given(st.binary(max_size=40))
def test_garbage_never_escapes_as_anything_but_our_error(data: bytes) -> None:
    with contextlib.suppress(RtpPacketError):
        RtpPacket.parse(data)
    with contextlib.suppress(RtpPacketError):
        parse_rtcp(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00", "shorter than the 12-byte header"),
        (b"\x40" + bytes(11), "version 1"),
        (b"\x82" + bytes(11) + bytes(4), "truncated CSRC"),
        (b"\x90" + bytes(11) + b"\x00\x00", "truncated extension header"),
        (b"\x90" + bytes(11) + b"\x00\x00\x00\x02", "truncated extension"),
        (b"\xa0" + bytes(11) + b"\x00", "invalid padding length 0"),
        (b"\xa0" + bytes(11) + b"\x09", "invalid padding length 9"),
    ],
)
def test_malformed_rtp_is_named(data: bytes, message: str) -> None:
    with pytest.raises(RtpPacketError, match=message):
        RtpPacket.parse(data)
    assert issubclass(RtpPacketError, ProtocolError)


def test_rtcp_round_trip_through_aiortc_classes() -> None:
    sr = RtcpSrPacket(
        ssrc=1,
        sender_info=RtcpSenderInfo(ntp_timestamp=1 << 40, rtp_timestamp=160, packet_count=5,
                                   octet_count=800),
        reports=[RtcpReceiverInfo(ssrc=2, fraction_lost=3, packets_lost=4, highest_sequence=5,
                                  jitter=6, lsr=7, dlsr=8)],
    )
    compound = serialize_rtcp([sr, RtcpByePacket(sources=[1])])
    assert is_rtcp(compound)
    parsed = parse_rtcp(compound)
    assert parsed[0] == sr
    assert isinstance(parsed[1], RtcpByePacket) and parsed[1].sources == [1]
    assert parse_rtcp(bytes(RtcpRrPacket(ssrc=9, reports=[]))) == [RtcpRrPacket(ssrc=9)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80", "shorter than its 4-byte header"),
        (struct.pack("!BBH", 0x40, 200, 0), "invalid version"),
        (struct.pack("!BBH", 0x80, 200, 5), "truncated"),
    ],
)
def test_malformed_rtcp_is_named(data: bytes, message: str) -> None:
    with pytest.raises(RtpPacketError, match=message):
        parse_rtcp(data)


def test_rtp_is_not_rtcp() -> None:
    assert not is_rtcp(pack_rtp_header(0, 1, 2, 3))
    assert not is_rtcp(pack_rtp_header(96, 1, 2, 3, marker=True))
    assert is_rtcp(struct.pack("!BBH", 0x80, 201, 1))
