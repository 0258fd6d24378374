"""The tshark capture on lo and the RTP view used for wire checks."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from phone_sim.testing.aio_capture import UdpPacket, bpf_filter, parse_rtp, srtp_wire_report
from phone_sim.testing.aio_ports import free_port
from phone_sim.testing.aio_pytest_peers import CaptureFactory
from phone_sim.testing.audio import tone_samples, ulaw_encode


def _rtp(pt: int = 0, csrc: int = 0, ext_words: int | None = None, body: bytes = b"x") -> bytes:
    first = 0x80 | csrc | (0x10 if ext_words is not None else 0)
    header = bytes([first, pt]) + (7).to_bytes(2, "big") + (160).to_bytes(4, "big")
    header += (0x1234).to_bytes(4, "big") + b"\0\0\0\1" * csrc
    if ext_words is not None:
        header += b"\xbe\xde" + ext_words.to_bytes(2, "big") + b"\0" * (4 * ext_words)
    return header + body


def test_parse_rtp_reads_the_header() -> None:
    view = parse_rtp(_rtp(body=b"abc"))
    assert view is not None
    assert (view.payload_type, view.sequence, view.ssrc) == (0, 7, 0x1234)
    assert view.header_length == 12
    assert view.body == b"abc"


def test_parse_rtp_skips_csrcs_and_extension() -> None:
    view = parse_rtp(_rtp(csrc=2, ext_words=1, body=b"p"))
    assert view is not None
    assert view.header_length == 12 + 8 + 8
    assert view.body == b"p"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80\x00", b"\x40" + b"\0" * 20, _rtp(pt=200 & 0x7F) , _rtp(csrc=3)[:20],
     _rtp(ext_words=5, body=b"")[:18]],
    ids=["empty", "short", "version-1", "rtcp", "truncated-csrc", "truncated-extension"],
)
def test_parse_rtp_refuses_what_is_not_rtp(data: bytes) -> None:
    assert parse_rtp(data) is None


def _packet(src: int, dst: int, payload: bytes) -> UdpPacket:
    return UdpPacket(time=0.0, src=("127.0.0.1", src), dst=("127.0.0.1", dst), payload=payload)


def test_wire_report_tells_plain_rtp_from_srtp() -> None:
    tone = ulaw_encode(tone_samples(1004, 0.02))
    plain = [_packet(4000, 5000, _rtp(body=tone)) for _ in range(3)]
    noise = bytes(random.Random(1).randrange(256) for _ in range(170))
    srtp = [_packet(4000, 5000, _rtp(body=noise)) for _ in range(3)]
    rtcp = [_packet(4001, 5001, b"\x81\xc9" + b"\0" * 30)]
    other_way = [_packet(5000, 4000, _rtp(body=tone))]

    clear = srtp_wire_report(plain + rtcp + other_way, src_port=4000, dst_port=5000,
                             tone_hz=1004)
    assert (clear.rtp_packets, clear.srtp_sized, clear.clear_tone_packets) == (3, 0, 3)
    assert not clear.looks_like_srtp

    secure = srtp_wire_report(srtp + rtcp, src_port=4000, dst_port=5000, tone_hz=1004)
    assert (secure.rtp_packets, secure.srtp_sized, secure.clear_tone_packets) == (3, 3, 0)
    assert secure.payload_types == {0}
    assert secure.looks_like_srtp

    empty = srtp_wire_report([], src_port=4000, dst_port=5000, tone_hz=1004)
    assert not empty.looks_like_srtp


def test_filter_names_only_the_given_ports() -> None:
    assert bpf_filter([5004, 5005], [5061]) == "udp port 5004 or udp port 5005 or tcp port 5061"
    with pytest.raises(ValueError, match="never capture all"):
        bpf_filter()


@pytest.mark.peer
def test_capture_sees_every_datagram_on_its_ports_only(
    capture_factory: CaptureFactory, tmp_path: Path
) -> None:
    watched, ignored = free_port(), free_port()
    capture = capture_factory(udp_ports=[watched])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for i in range(5):
            sock.sendto(b"watched-%d" % i, ("127.0.0.1", watched))
            sock.sendto(b"ignored-%d" % i, ("127.0.0.1", ignored))
        source = sock.getsockname()[1]
    capture.stop()
    packets = capture.udp_packets()
    # The first and the last datagram are there: start and stop are synchronised.
    assert [p.payload for p in packets] == [b"watched-%d" % i for i in range(5)]
    assert {p.src for p in packets} == {("127.0.0.1", source)}
    assert {p.dst for p in packets} == {("127.0.0.1", watched)}
    assert capture.tcp_segments() == []
