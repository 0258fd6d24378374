"""Packet capture on ``lo`` with tshark, filtered on the test's own ports.

:class:`Capture` starts ``tshark -i lo -f "<bpf on your ports>" -w FILE``, waits until it is
capturing, and after :meth:`stop` hands back the UDP datagrams (:meth:`udp_packets`).
:func:`parse_rtp` splits an RTP header from its payload so that a test can check what a
stream carried on the wire.

It needs Debian's ``tshark`` (and the right to capture on ``lo``: root, or membership of the
``wireshark`` group); without it :meth:`Capture.start` raises
:class:`~phone_sim.testing.aio_process.PeerMissing` saying so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from phone_sim.testing.aio_ports import free_port
from phone_sim.testing.aio_process import LOOPBACK, PeerError, PeerProcess, which
from phone_sim.testing.audio import tone_report, ulaw_decode
from phone_sim.testing.errors import PeerUsageError

__all__ = [
    "Capture",
    "RtpView",
    "SrtpWireReport",
    "UdpPacket",
    "bpf_filter",
    "parse_rtp",
    "srtp_wire_report",
]

_PROBE = b"phone-sim capture probe"
_FIELDS = ("frame.time_epoch", "ip.src", "udp.srcport", "ip.dst", "udp.dstport", "udp.payload")


@dataclass(frozen=True, kw_only=True)
class UdpPacket:
    """One captured UDP datagram (or TCP segment, from :meth:`Capture.tcp_segments`)."""

    time: float
    """Capture time (epoch seconds)."""
    src: tuple[str, int]
    """Source address and port."""
    dst: tuple[str, int]
    """Destination address and port."""
    payload: bytes
    """The UDP payload."""


@dataclass(frozen=True, kw_only=True)
class RtpView:
    """The parts of an RTP (or SRTP) packet a wire check needs (RFC 3550 5.1)."""

    payload_type: int
    """PT (7 bits)."""
    sequence: int
    """Sequence number."""
    ssrc: int
    """SSRC."""
    header_length: int
    """Bytes of fixed header, CSRCs and extension."""
    body: bytes
    """Everything after the header: the payload for RTP, payload + auth tag for SRTP."""


def parse_rtp(data: bytes) -> RtpView | None:
    """Parse an RTP header; ``None`` if ``data`` is not RTP (version, length, or RTCP PT)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    payload_type = data[1] & 0x7F
    if 72 <= payload_type <= 76:  # RTCP SR/RR/SDES/BYE/APP share the port range (RFC 5761)
        return None
    length = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < length + 4:
            return None
        length += 4 + 4 * int.from_bytes(data[length + 2 : length + 4], "big")
    if len(data) < length:
        return None
    return RtpView(
        payload_type=payload_type,
        sequence=int.from_bytes(data[2:4], "big"),
        ssrc=int.from_bytes(data[8:12], "big"),
        header_length=length,
        body=data[length:],
    )


@dataclass(frozen=True, kw_only=True)
class SrtpWireReport:
    """What one direction of a captured audio stream looked like on the wire."""

    rtp_packets: int
    """Datagrams with an RTP header (RTCP excluded)."""
    srtp_sized: int
    """Of those, bodies of exactly ``payload_len + auth_tag_len`` bytes."""
    clear_tone_packets: int
    """Packets whose first ``payload_len`` body bytes decode (PCMU) to the tone: plain RTP."""
    payload_types: frozenset[int]
    """The payload types seen."""

    @property
    def looks_like_srtp(self) -> bool:
        """Every RTP packet is SRTP-sized and none carries the tone in clear."""
        return (
            self.rtp_packets > 0
            and self.srtp_sized == self.rtp_packets
            and self.clear_tone_packets == 0
        )


def srtp_wire_report(
    packets: Iterable[UdpPacket],
    *,
    src_port: int,
    dst_port: int,
    tone_hz: float,
    payload_len: int = 160,
    auth_tag_len: int = 10,
) -> SrtpWireReport:
    """Classify the PCMU stream ``src_port -> dst_port``: SRTP-sized? tone in the clear?

    ``payload_len`` is 160 for 20 ms of PCMU; ``auth_tag_len`` 10 for HMAC-SHA1-80, 4 for _32.
    """
    rtp = srtp = clear = 0
    types: set[int] = set()
    for packet in packets:
        if packet.src[1] != src_port or packet.dst[1] != dst_port:
            continue
        view = parse_rtp(packet.payload)
        if view is None:
            continue
        rtp += 1
        types.add(view.payload_type)
        if len(view.body) == payload_len + auth_tag_len:
            srtp += 1
        samples = ulaw_decode(view.body[:payload_len])
        if tone_report(samples, tone_hz, 8000, window=len(samples) / 8000).present:
            clear += 1
    return SrtpWireReport(
        rtp_packets=rtp, srtp_sized=srtp, clear_tone_packets=clear,
        payload_types=frozenset(types),
    )


def bpf_filter(udp_ports: Iterable[int] = (), tcp_ports: Iterable[int] = ()) -> str:
    """A capture filter for traffic to or from the given ports (and nothing else)."""
    parts = [f"udp port {p}" for p in sorted(set(udp_ports))]
    parts += [f"tcp port {p}" for p in sorted(set(tcp_ports))]
    if not parts:
        raise PeerUsageError("a capture needs at least one port: never capture all of lo")
    return " or ".join(parts)


class Capture:
    """tshark on ``lo`` restricted to the given ports; a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        udp_ports: Iterable[int] = (),
        tcp_ports: Iterable[int] = (),
        interface: str = "lo",
        name: str = "capture",
    ) -> None:
        self.workdir = workdir
        # Readiness: tshark says "Capture started" before the filter really sees packets, so
        # the harness sends probes to a port of its own until tshark prints one (-P -l).
        self.probe_port = free_port()
        self.filter = bpf_filter([*udp_ports, self.probe_port], tcp_ports)
        self.interface = interface
        self.pcap = workdir / f"{name}.pcapng"
        workdir.mkdir(parents=True, exist_ok=True)
        self._process = PeerProcess(
            name,
            ["tshark", "-n", "-l", "-P", "-i", interface, "-f", self.filter,
             "-w", str(self.pcap)],
            cwd=workdir,
            log_path=workdir / f"{name}.log",
        )

    @property
    def tshark(self) -> str:
        """The ``tshark`` program (looked up when used: preparing needs none)."""
        return which("tshark")

    @property
    def process(self) -> PeerProcess:
        """The tshark process."""
        return self._process

    def start(self, timeout: float = 15.0) -> None:
        """Start tshark and wait until it reports it is capturing."""
        self.pcap.unlink(missing_ok=True)
        self._process.start()
        deadline = time.monotonic() + timeout
        self._sync(deadline, timeout)

    def _probes_seen(self) -> int:
        return self._process.log_text().count(f"\u2192 {self.probe_port} ")

    def _sync(self, deadline: float, timeout: float) -> None:
        """Send probes until tshark prints one more: everything sent before is captured."""
        seen = self._probes_seen()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            while self._probes_seen() <= seen:
                if not self._process.running:
                    raise self._process.fail(
                        f"exited with {self._process.returncode} while capturing"
                    )
                if time.monotonic() > deadline:
                    self._process.stop()
                    raise self._process.fail(f"probe not seen after {timeout} s")
                probe.sendto(_PROBE, (LOOPBACK, self.probe_port))
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Let tshark catch up (a last probe), then stop it with SIGINT, which flushes."""
        if self._process.running:
            try:
                self._sync(time.monotonic() + timeout, timeout)
            finally:
                self._process.stop(timeout=5.0, sig=signal.SIGINT)

    async def astop(self, timeout: float = 10.0) -> None:
        """:meth:`stop` in a thread, so phones in the event loop keep running."""
        await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def udp_packets(self) -> list[UdpPacket]:
        """Every UDP datagram in the capture, in order (call after :meth:`stop`)."""
        return [p for p in self._read("udp") if p.dst[1] != self.probe_port]

    def tcp_segments(self) -> list[UdpPacket]:
        """Every TCP segment with a payload, in order (call after :meth:`stop`).

        Segments are not reassembled; enough to check that a TLS port carries no plain SIP.
        """
        return [p for p in self._read("tcp") if p.payload]

    def _read(self, proto: str) -> list[UdpPacket]:
        if self._process.running:
            raise PeerError("stop the capture before reading it")
        if not self.pcap.exists():
            raise self._process.fail(f"no capture file {self.pcap}")
        fields: list[str] = []
        for name in _FIELDS:
            fields += ["-e", name.replace("udp.", f"{proto}.")]
        result = subprocess.run(  # noqa: S603 - our binary and file, no shell
            [self.tshark, "-n", "-r", str(self.pcap), "-Y", proto, "-T", "fields",
             "-E", "separator=\t", *fields],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        if result.returncode != 0:
            raise PeerError(f"tshark could not read {self.pcap}: {result.stderr}")
        packets = []
        for line in result.stdout.splitlines():
            cols = line.split("\t")
            if len(cols) != len(_FIELDS) or not cols[2]:
                continue
            packets.append(
                UdpPacket(
                    time=float(cols[0]),
                    src=(cols[1], int(cols[2])),
                    dst=(cols[3], int(cols[4])),
                    payload=bytes.fromhex(cols[5].replace(":", "")),
                )
            )
        return packets
