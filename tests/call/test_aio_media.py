"""A phone's call media against peers that are not phone-sim phones: what the call's stats show.

- A peer written here, on a real UDP socket, answers the phone's INVITE with its own SDP, in
  which telephone-event has another number than in the phone's offer (RFC 3264 6.1 only says
  the answer SHOULD keep the offer's numbers), then sends SRTP RFC 4733 events with the
  project's own :class:`MediaStream` keyed from that exchange.
- ``phone-sim call`` against the embedded lab's echo (600): the digits and the tone it sends
  back show in the final JSON without ``--expect-tone`` or anyone waiting for them.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from phone_sim.call.aio import Call
from phone_sim.lab import Lab
from phone_sim.media.aio import MediaClock, MediaEndpoint
from phone_sim.media.sdes import CryptoAttribute, generate_key
from phone_sim.media.sdp import SdpSession
from phone_sim.media.stream import DtmfReceived, MediaStream
from phone_sim.phone.aio_agent import UdpCallAgent
from phone_sim.sip.message import SipRequest, parse_message

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
_RTPMAP = re.compile(r"(\d+) ([^/]+)/")


class _Peer(asyncio.DatagramProtocol):
    """A SIP peer on one UDP socket: answers the INVITE with :attr:`answer_sdp`, then 200
    to BYE."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.invite: asyncio.Future[SipRequest] = asyncio.get_running_loop().create_future()
        self.answer_sdp = b""
        self.bye = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        message = parse_message(data)
        if not isinstance(message, SipRequest):
            return
        if message.method == "INVITE" and not self.invite.done():
            self.invite.set_result(message)
            self._source = addr
        elif message.method == "BYE":
            self.transport.sendto(bytes(message.create_response(200)), addr)
            if not self.bye.done():
                self.bye.set_result(None)

    def answer(self, invite: SipRequest, sdp: bytes) -> None:
        assert self.transport is not None
        port = self.transport.get_extra_info("sockname")[1]
        response = invite.create_response(
            200, to_tag="peer-1", body=sdp,
            headers=[("Contact", f"<sip:200@127.0.0.1:{port}>"),
                     ("Content-Type", "application/sdp")],
        )
        self.transport.sendto(bytes(response), self._source)


def _offer(invite: SipRequest) -> tuple[int, int, int, bytes]:
    """The phone's RTP port, PCMU and telephone-event numbers, and its SDES key."""
    sdp = SdpSession.parse(invite.body)
    media = sdp.media[0]
    numbers = {}
    for attribute in media.get_attributes("rtpmap"):
        match = _RTPMAP.match(attribute.value or "")
        assert match is not None
        numbers[match.group(2).lower()] = int(match.group(1))
    crypto = CryptoAttribute.parse(media.get_attributes("crypto")[0].value or "")
    assert crypto.tag == 1
    return media.port, numbers.get("pcmu", 0), numbers["telephone-event"], crypto.key_salt


async def _wait_stats(call: Call, check: str, timeout: float = 5.0) -> None:
    """Until the call's stats show *check* as dtmf_received (looking, not awaiting wait_dtmf)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (stats := call.stats) is None or stats.dtmf_received != check:
        assert loop.time() < deadline, f"no DTMF {check!r} in the call's stats: {stats}"
        await asyncio.sleep(0.05)


async def test_peer_numbering_telephone_event_differently_is_decoded_both_ways() -> None:
    """Issue #9: the phone offers telephone-event on one number, the peer's answer uses
    another. Each side sends with the other's number (RFC 3264 6.1: a payload type number
    says what its offerer/answerer receives), and each decodes the other's digits; none is
    counted as an unknown payload."""
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(_Peer, local_addr=("127.0.0.1", 0))
    peer_port = transport.get_extra_info("sockname")[1]
    media = await MediaEndpoint.open("127.0.0.1")
    clock = MediaClock()
    try:
        async with UdpCallAgent("127.0.0.1", user="101") as phone:
            call = await phone.dial(f"sip:200@127.0.0.1:{peer_port}")
            invite = await asyncio.wait_for(peer.invite, 10)
            phone_rtp, pcmu, phone_te, phone_key = _offer(invite)
            peer_te = 96 if phone_te != 96 else 101  # not the phone's number
            peer_key = generate_key()
            peer_crypto = CryptoAttribute.for_key(peer_key).serialize()
            peer.answer(invite, (
                "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=peer\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {media.local_rtp_port} RTP/SAVP {pcmu} {peer_te}\r\n"
                f"a=rtpmap:{pcmu} PCMU/8000\r\na=rtpmap:{peer_te} telephone-event/8000\r\n"
                f"a=fmtp:{peer_te} 0-16\r\na=crypto:{peer_crypto}\r\na=ptime:20\r\n"
                "a=sendrecv\r\n"
            ).encode())
            await call.wait_answered(timeout=10)
            assert call.negotiated is not None
            assert call.negotiated.dtmf_payload_type == peer_te
            assert call.negotiated.rx_dtmf_payload_type == phone_te
            stream = MediaStream(
                codec="PCMU", payload_type=pcmu, dtmf_payload_type=phone_te,
                rx_dtmf_payload_type=peer_te, tx_key=peer_key, rx_key=phone_key,
            )
            media.attach(stream, remote_host="127.0.0.1", remote_rtp_port=phone_rtp,
                         clock=clock)
            stream.send_dtmf("159#")
            media.wake()
            await _wait_stats(call, "159#")
            await call.send_dtmf("42")
            async with asyncio.timeout(5):
                while [e.digit for e in media.events if isinstance(e, DtmfReceived)] != [
                        "4", "2"]:
                    await asyncio.sleep(0.05)
            stats = call.stats
            assert stats is not None and stats.encrypted
            assert stats.stream.unknown_payload_type == 0
            assert stats.stream.srtp_auth_failures == 0
            assert stats.stream.packets_received > 20
            assert stream.statistics().unknown_payload_type == 0
            await call.hangup()
            await asyncio.wait_for(peer.bye, 5)
    finally:
        media.close()
        clock.close()
        transport.close()


async def test_call_stats_show_the_echoed_digits_and_tone_without_waiting() -> None:
    """Issue #9: ``phone-sim call --to 600 --dtmf 123 --play tone:1004 --json`` against an
    echo ended with ``"dtmf_received": ""`` and, without ``--expect-tone``, no tone heard."""
    async with Lab({"101": "1234"}, transports=["tls"]) as lab:
        assert lab.ca_file is not None
        command = [
            sys.executable, "-m", "phone_sim", "call", "--to", "600", "--dtmf", "123",
            "--play", "tone:1004", "--duration", "4", "--json",
            "--server", f"127.0.0.1:{lab.ports['tls']}", "--transport", "tls",
            "--user", "101", "--password", "1234", "--servername", lab.server_name,
            "--ca", str(lab.ca_file), "--timeout", "10",
        ]
        result = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=45, cwd=ROOT,
            check=False)
    assert result.returncode == 0, (result.stdout, result.stderr)
    final = json.loads(result.stdout.splitlines()[-1])
    assert final["result"] == "ok"
    assert final["dtmf_received"] == "123"
    assert final["tones_heard"] == [1004.0]
    assert final["packets_received"] > 100
