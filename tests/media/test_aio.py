"""Real UDP on loopback: two media endpoints exchange SRTP and hear each other's tone."""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import uvloop

from phone_sim.media.aio import MediaClock, MediaEndpoint, MediaEndpointError, MediaTimeout
from phone_sim.media.codecs import get_codec
from phone_sim.media.impairment import Impairment
from phone_sim.media.sinks import ToneDetector
from phone_sim.media.sources import tone
from phone_sim.media.stream import (
    DtmfReceived,
    MediaStream,
    RtcpByeReceived,
    StreamStatistics,
    ToneDetected,
)
from phone_sim.testing.aio_pytest_peers import require


async def call(
    codec_name: str = "PCMU", *, srtp: bool = True, rtcp_interval: float = 0.3
) -> tuple[MediaEndpoint, MediaEndpoint, MediaClock]:
    codec = get_codec(codec_name)
    key_a = key_b = None
    if srtp:
        key_a, key_b = os.urandom(30), os.urandom(30)
    ep_a = await MediaEndpoint.open("127.0.0.1")
    ep_b = await MediaEndpoint.open("127.0.0.1")
    a = MediaStream(codec=codec, tx_key=key_a, rx_key=key_b, source=tone(codec, 1000),
                    sinks=[ToneDetector(codec, 1633, sample_every=5)], rtcp_interval=rtcp_interval)
    b = MediaStream(codec=codec, tx_key=key_b, rx_key=key_a, source=tone(codec, 1633),
                    sinks=[ToneDetector(codec, 1000, sample_every=5)], rtcp_interval=rtcp_interval)
    clock = MediaClock()
    ep_a.attach(a, remote_host="127.0.0.1", remote_rtp_port=ep_b.local_rtp_port, clock=clock)
    ep_b.attach(b, remote_host="127.0.0.1", remote_rtp_port=ep_a.local_rtp_port, clock=clock)
    return ep_a, ep_b, clock


@pytest.mark.parametrize("codec", ["PCMU", "G722"])
async def test_two_endpoints_hear_each_others_tone_over_srtp(codec: str) -> None:
    ep_a, ep_b, clock = await call(codec)
    try:
        heard_by_a = await ep_a.wait_for(ToneDetected, timeout=3)
        heard_by_b = await ep_b.wait_for(ToneDetected, timeout=3)
        assert heard_by_a.frequency_hz == 1633
        assert heard_by_b.frequency_hz == 1000
        for _ in range(40):  # RTT needs an SR each way, then a report back
            if all(ep.stream and ep.stream.rtt is not None for ep in (ep_a, ep_b)):
                break
            await asyncio.sleep(0.05)
        for ep in (ep_a, ep_b):
            assert ep.stream is not None
            st = ep.stream.statistics()
            assert st.packets_received >= 10
            assert st.srtp_auth_failures == 0
            assert st.rtcp_sr_received >= 1
            assert st.rtt is not None and st.rtt < 0.05
    finally:
        ep_a.close()
        await asyncio.sleep(0.05)
        ep_b.close()
        clock.close()
    assert any(isinstance(e, RtcpByeReceived) for e in ep_b.events)


async def test_dtmf_over_loopback() -> None:
    ep_a, ep_b, clock = await call()
    try:
        assert ep_a.stream is not None
        ep_a.stream.send_dtmf("42")
        ep_a.wake()
        await ep_b.wait_for(DtmfReceived, timeout=2)
        await asyncio.sleep(0.4)
        assert [e.digit for e in ep_b.events if isinstance(e, DtmfReceived)] == ["4", "2"]
    finally:
        ep_a.close()
        ep_b.close()
        clock.close()


async def test_wait_for_times_out_with_a_clear_error() -> None:
    ep = await MediaEndpoint.open("127.0.0.1")
    try:
        with pytest.raises(MediaTimeout, match=r"no ToneDetected on 127\.0\.0\.1:\d+ within 0"):
            await ep.wait_for(ToneDetected, timeout=0.05)
    finally:
        ep.close()


async def test_bad_ports_are_clear_errors() -> None:
    with pytest.raises(MediaEndpointError, match="must be even"):
        await MediaEndpoint.open("127.0.0.1", rtp_port=5001)
    ep = await MediaEndpoint.open("127.0.0.1")
    try:
        with pytest.raises(MediaEndpointError, match=r"cannot bind RTP socket"):
            await MediaEndpoint.open("127.0.0.1", rtp_port=ep.local_rtp_port)
        with pytest.raises(MediaEndpointError, match="not in 1-65535"):
            ep.attach(MediaStream(codec="PCMU"), remote_host="127.0.0.1", remote_rtp_port=0,
                      clock=MediaClock())
        with pytest.raises(MediaEndpointError, match="not an IP address"):
            ep.attach(MediaStream(codec="PCMU"), remote_host="pbx.example", remote_rtp_port=4000,
                      clock=MediaClock())
        with pytest.raises(MediaEndpointError, match="is IPv6 but this endpoint"):
            ep.attach(MediaStream(codec="PCMU"), remote_host="::1", remote_rtp_port=4000,
                      clock=MediaClock())
    finally:
        ep.close()


async def test_a_failing_endpoint_does_not_stop_the_shared_clock() -> None:
    ep_a, ep_b, clock = await call()
    try:
        assert ep_a._rtp is not None

        class Broken:
            def sendto(self, data: bytes, addr: object = None) -> None:
                raise OSError("network is unreachable")

            def close(self) -> None:
                pass

        ep_a._rtp = Broken()  # type: ignore[assignment]
        await asyncio.sleep(0.3)
        assert ep_a.send_errors >= 5
        assert ep_b.stream is not None
        before = ep_b.stream.sent.packets_sent
        await asyncio.sleep(0.2)
        assert ep_b.stream.sent.packets_sent >= before + 5  # B still paced
    finally:
        ep_a.close()
        ep_b.close()
        clock.close()


async def test_ipv6_loopback() -> None:
    try:
        ep_a = await MediaEndpoint.open("::1")
    except MediaEndpointError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    ep_b = await MediaEndpoint.open("::1")
    clock = MediaClock()
    codec = get_codec("PCMU")
    key_a, key_b = os.urandom(30), os.urandom(30)
    ep_a.attach(MediaStream(codec=codec, tx_key=key_a, rx_key=key_b, source=tone(codec, 800)),
                remote_host="::1", remote_rtp_port=ep_b.local_rtp_port, clock=clock)
    ep_b.attach(MediaStream(codec=codec, tx_key=key_b, rx_key=key_a,
                            sinks=[ToneDetector(codec, 800, sample_every=3)]),
                remote_host="::1", remote_rtp_port=ep_a.local_rtp_port, clock=clock)
    try:
        await ep_b.wait_for(ToneDetected, timeout=3)
    finally:
        ep_a.close()
        ep_b.close()
        clock.close()


def _tshark_payloads(tshark: str, pcap: Path, port: int) -> list[bytes]:
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-Y", f"udp.dstport == {port}", "-T", "fields",
         "-e", "udp.payload"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return [bytes.fromhex(line.replace(":", "")) for line in out.split() if line]


@pytest.mark.peer
async def test_capture_shows_srtp_not_rtp_on_the_wire() -> None:
    tshark = require("tshark")
    dumpcap = require("dumpcap")
    codec = get_codec("PCMU")
    plain_frames = set(tone(codec, 1000).frames)
    ep_a = await MediaEndpoint.open("127.0.0.1")
    ep_b = await MediaEndpoint.open("127.0.0.1")
    ports = (ep_a.local_rtp_port, ep_b.local_rtp_port)
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "media.pcap"
        capture = subprocess.Popen(
            [dumpcap, "-q", "-i", "lo", "-f", f"udp port {ports[0]} or udp port {ports[1]}",
             "-w", str(pcap)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 5
            while not pcap.exists() and capture.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            if capture.poll() is not None or not pcap.exists():
                err = capture.stderr.read().decode() if capture.stderr else ""
                pytest.skip(f"cannot capture on lo here: {err.strip()[:200]}")
            key_a, key_b = os.urandom(30), os.urandom(30)
            clock = MediaClock()
            ep_a.attach(MediaStream(codec=codec, tx_key=key_a, rx_key=key_b,
                                    source=tone(codec, 1000)),
                        remote_host="127.0.0.1", remote_rtp_port=ports[1], clock=clock)
            ep_b.attach(MediaStream(codec=codec, tx_key=key_b, rx_key=key_a,
                                    sinks=[ToneDetector(codec, 1000, sample_every=3)]),
                        remote_host="127.0.0.1", remote_rtp_port=ports[0], clock=clock)
            await ep_b.wait_for(ToneDetected, timeout=3)
            await asyncio.sleep(0.8)
        finally:
            capture.terminate()
            capture.wait(timeout=10)
            ep_a.close()
            ep_b.close()
        payloads = _tshark_payloads(tshark, pcap, ports[1])
    assert len(payloads) >= 10, "the capture saw too few packets to judge"
    for datagram in payloads:
        assert len(datagram) == 12 + 160 + 10  # header, payload, 80-bit tag
        assert datagram[12:172] not in plain_frames  # the tone is not on the wire in clear


async def test_hold_address_sends_nothing_and_retarget_resumes() -> None:
    codec = get_codec("PCMU")
    ep_a = await MediaEndpoint.open("127.0.0.1")
    ep_b = await MediaEndpoint.open("127.0.0.1")
    clock = MediaClock()
    try:
        ep_a.attach(MediaStream(codec=codec, source=tone(codec, 700)), remote_host="0.0.0.0",
                    remote_rtp_port=9, clock=clock)
        ep_b.attach(MediaStream(codec=codec, direction="recvonly"), remote_host="127.0.0.1",
                    remote_rtp_port=ep_a.local_rtp_port, clock=clock)
        await asyncio.sleep(0.2)
        assert ep_b.stream is not None
        assert ep_b.stream.statistics().packets_received == 0
        ep_a.retarget(remote_host="127.0.0.1", remote_rtp_port=ep_b.local_rtp_port,
                      remote_rtcp_host="127.0.0.1", remote_rtcp_port=ep_b.local_rtcp_port)
        await asyncio.sleep(0.2)
        assert ep_b.stream.statistics().packets_received >= 5
        assert ep_a.send_errors == 0
    finally:
        ep_a.close()
        ep_b.close()
        clock.close()


@pytest.mark.parametrize("use_uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_rtcp_round_trips_are_never_below_zero(use_uvloop: bool) -> None:
    """uvloop's ``loop.time()`` counts whole milliseconds: an SR's arrival read from it is up
    to 1 ms early, and the DLSR built on it longer than the peer's clock allows (Asterisk:
    "Internal RTCP NTP clock skew detected"). The endpoints read a full-resolution clock."""

    async def main() -> tuple[int, int, int]:
        ep_a, ep_b, clock = await call(srtp=False, rtcp_interval=0.04)
        try:
            await asyncio.sleep(2.0)
            assert ep_a.stream is not None and ep_b.stream is not None
            a, b = ep_a.stream.statistics(), ep_b.stream.statistics()
            return (a.rtcp_clock_skews + b.rtcp_clock_skews,
                    min(a.rtcp_sr_received, b.rtcp_sr_received),
                    min(a.rtcp_sr_sent, b.rtcp_sr_sent))
        finally:
            ep_a.close()
            ep_b.close()
            clock.close()

    factory = uvloop.new_event_loop if use_uvloop else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        skews, received, sent = runner.run(main())
    assert received >= 20 and sent >= 20
    assert skews == 0


def test_a_uvloop_endpoint_reports_no_dlsr_longer_than_its_peer_measured() -> None:
    """A peer on a full-resolution clock (Asterisk, pjmedia; here a stock asyncio loop in a
    thread) against an endpoint on uvloop, whose ``loop.time()`` counts whole milliseconds:
    a DLSR built on it is up to 1 ms off either way, and on loopback every report that is
    too long puts the peer's round trip below zero (Asterisk: "Internal RTCP NTP clock skew
    detected"). The endpoints read the same monotonic clock at full resolution."""
    ports: queue.Queue[int] = queue.Queue()
    back: queue.Queue[int] = queue.Queue()
    peer_stats: list[object] = []

    async def run(port_out: queue.Queue[int], port_in: queue.Queue[int]) -> object:
        endpoint = await MediaEndpoint.open("127.0.0.1")
        port_out.put(endpoint.local_rtp_port)
        remote = port_in.get(timeout=10)  # nothing else runs on this loop yet
        clock = MediaClock()
        stream = MediaStream(codec="PCMU", rtcp_interval=0.04)
        endpoint.attach(stream, remote_host="127.0.0.1", remote_rtp_port=remote, clock=clock)
        try:
            await asyncio.sleep(2.5)
            return stream.statistics()
        finally:
            endpoint.close()
            clock.close()

    peer = threading.Thread(target=lambda: peer_stats.append(asyncio.run(run(ports, back))))
    peer.start()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            ours = runner.run(run(back, ports))
    finally:
        peer.join(timeout=10)
    theirs = peer_stats[0]
    assert isinstance(ours, StreamStatistics) and isinstance(theirs, StreamStatistics)
    assert theirs.rtcp_rr_received + theirs.rtcp_sr_received >= 20
    assert theirs.rtcp_clock_skews == 0  # the peer never saw our DLSR run past its clock
    assert ours.rtcp_clock_skews == 0


async def test_an_impaired_endpoint_damages_the_rtp_it_sends_as_set() -> None:
    # A sends through 10% loss, 15 ms jitter and 5% reordering over SRTP; B measures it.
    codec = get_codec("PCMU")
    key_a, key_b = os.urandom(30), os.urandom(30)
    impairment = Impairment(loss_percent=10, jitter_ms=15, reorder_percent=5, seed="wire")
    ep_a = await MediaEndpoint.open("127.0.0.1", impairment=impairment)
    ep_b = await MediaEndpoint.open("127.0.0.1")
    clock = MediaClock()
    a = MediaStream(codec=codec, tx_key=key_a, rx_key=key_b, source=tone(codec, 1000),
                    rtcp_interval=0.3)
    b = MediaStream(codec=codec, tx_key=key_b, rx_key=key_a, source=tone(codec, 700),
                    rtcp_interval=0.3)
    try:
        ep_a.attach(a, remote_host="127.0.0.1", remote_rtp_port=ep_b.local_rtp_port,
                    clock=clock)
        ep_b.attach(b, remote_host="127.0.0.1", remote_rtp_port=ep_a.local_rtp_port,
                    clock=clock)
        await asyncio.sleep(3.0)
        model = ep_a.impaired
        assert model is not None and ep_b.impaired is None
        sent = a.statistics()
    finally:
        ep_a.close()
        await asyncio.sleep(0.1)
        ep_b.close()
        clock.close()
    heard = b.statistics()
    assert model.offered == sent.packets_sent >= 120
    # The loss B counts is what the network dropped (but for drops after the last packet
    # B got, which no later packet reveals).
    assert 0.04 < model.dropped / model.offered < 0.18
    assert model.dropped - 3 <= heard.packets_lost <= model.dropped
    # Every packet that survived arrived once (but those still delayed when A closed).
    passed = model.offered - model.dropped
    assert passed - 3 <= heard.packets_received <= passed
    assert heard.duplicates == 0 and heard.srtp_auth_failures == 0
    assert heard.srtp_replay_failures == 0  # late packets stay inside the replay window
    # Reordered packets arrive late; delays show as jitter; B's own clean stream does not.
    assert 1 <= heard.reordered <= model.reordered
    assert heard.jitter > 0.002 and heard.jitter > 2 * a.statistics().jitter
    # RTCP is not impaired: B got every report A sent but the one still in flight.
    assert heard.rtcp_sr_received >= sent.rtcp_sr_sent - 1
