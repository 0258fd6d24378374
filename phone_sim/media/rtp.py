"""RTP and RTCP wire formats (RFC 3550).

RTP headers use a small codec of our own: on this machine aiortc's ``RtpPacket`` costs about
0.9 µs to serialize and 2.2 µs to parse a 172-byte packet, about half of what the crypto costs
(3.4 µs protect, 2.9 µs unprotect), while a ``struct`` pack or unpack of the fixed header costs
0.15-0.2 µs. With a 1.5x budget over the floor every microsecond per packet counts, so the hot
path packs and unpacks the fixed header itself (``benchmarks/bench_media_calls.py`` prints the
figures). RTCP goes at one compound packet per five seconds, so aiortc's RTCP classes are used
as they are, behind :func:`parse_rtcp` which turns their errors into ours.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from aiortc import rtp as _aiortc_rtp

from phone_sim.errors import ProtocolError

RTP_VERSION = 2
RTP_HEADER_LENGTH = 12
#: The fixed RTP header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
RTP_HEADER = struct.Struct("!BBHII")

RtcpSrPacket = _aiortc_rtp.RtcpSrPacket
RtcpRrPacket = _aiortc_rtp.RtcpRrPacket
RtcpSdesPacket = _aiortc_rtp.RtcpSdesPacket
RtcpByePacket = _aiortc_rtp.RtcpByePacket
RtcpSenderInfo = _aiortc_rtp.RtcpSenderInfo
RtcpReceiverInfo = _aiortc_rtp.RtcpReceiverInfo
RtcpSourceInfo = _aiortc_rtp.RtcpSourceInfo


class RtpPacketError(ProtocolError):
    """An RTP or RTCP packet from the peer is malformed."""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet: the fixed header fields, CSRCs, a raw header extension and payload."""

    #: Payload type, 0-127.
    payload_type: int
    #: Sequence number, 0-65535.
    sequence_number: int
    #: Media timestamp in clock-rate units, 0-2**32-1.
    timestamp: int
    #: Synchronisation source.
    ssrc: int
    #: The payload, padding removed.
    payload: bytes = b""
    #: The marker bit.
    marker: bool = False
    #: Contributing sources.
    csrc: tuple[int, ...] = ()
    #: The header extension as ``(profile, data)``, data a multiple of 4 bytes, if present.
    extension: tuple[int, bytes] | None = None
    #: Number of padding bytes (including the count byte); 0 for none.
    padding_size: int = field(default=0)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet; raise :class:`RtpPacketError` naming what is wrong."""
        if len(data) < RTP_HEADER_LENGTH:
            raise RtpPacketError(
                f"RTP packet is {len(data)} bytes, shorter than the {RTP_HEADER_LENGTH}-byte header"
            )
        first, m_pt, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpPacketError(f"RTP packet has version {first >> 6}, expected 2")
        cc = first & 0x0F
        pos = RTP_HEADER_LENGTH + 4 * cc
        if len(data) < pos:
            raise RtpPacketError("RTP packet has truncated CSRC list")
        csrc = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_LENGTH)
        extension = None
        if first & 0x10:
            if len(data) < pos + 4:
                raise RtpPacketError("RTP packet has truncated extension header")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpPacketError("RTP packet has truncated extension")
            extension = (profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or padding > end - pos:
                raise RtpPacketError(f"RTP packet has invalid padding length {padding}")
            end -= padding
        return cls(
            payload_type=m_pt & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(m_pt & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding_size=padding,
        )

    def __bytes__(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type {self.payload_type} is not in 0-127")
        if len(self.csrc) > 15:
            raise ValueError("RTP packet can carry at most 15 CSRCs")
        first = 0x80 | len(self.csrc)
        if self.extension is not None:
            first |= 0x10
        if self.padding_size:
            first |= 0x20
        out = bytearray(
            RTP_HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
        )
        for source in self.csrc:
            out += struct.pack("!I", source)
        if self.extension is not None:
            profile, value = self.extension
            if len(value) % 4:
                raise ValueError("RTP header extension length must be a multiple of 4")
            out += struct.pack("!HH", profile, len(value) // 4) + value
        out += self.payload
        if self.padding_size:
            out += bytes(self.padding_size - 1) + bytes([self.padding_size])
        return bytes(out)


def pack_rtp_header(
    payload_type: int, sequence_number: int, timestamp: int, ssrc: int, *, marker: bool = False
) -> bytes:
    """The 12-byte fixed header, for the hot path (no CSRC, extension or padding)."""
    return RTP_HEADER.pack(
        0x80, (0x80 if marker else 0) | payload_type, sequence_number, timestamp, ssrc
    )


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 4: a packet on a multiplexed port is RTCP if its type octet is 192-223."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtcp(data: bytes) -> list[object]:
    """Parse a compound RTCP packet into aiortc's packet objects.

    Raises :class:`RtpPacketError` for malformed input, never aiortc's bare ``ValueError``.
    """
    if len(data) < 4:
        raise RtpPacketError(f"RTCP packet is {len(data)} bytes, shorter than its 4-byte header")
    try:
        return list(_aiortc_rtp.RtcpPacket.parse(data))
    except (ValueError, IndexError, struct.error) as exc:
        raise RtpPacketError(f"malformed RTCP packet: {exc}") from None


def serialize_rtcp(packets: list[object]) -> bytes:
    """A compound RTCP packet from aiortc's packet objects."""
    return b"".join(bytes(p) for p in packets)  # type: ignore[call-overload]
