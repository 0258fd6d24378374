"""baresip through Kamailio: TLS/UDP registration, restart, and an SDES-SRTP call by audio."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from phone_sim.testing.aio_baresip import Baresip, BaresipAccount, BaresipTransport, _read_netstring
from phone_sim.testing.aio_capture import srtp_wire_report
from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.testing.aio_pytest_peers import BaresipFactory, CaptureFactory
from phone_sim.testing.audio import wav_tone_report, write_tone_wav
from phone_sim.testing.certs import TestPki

TONE_A = 1004.0  # what 101 plays
TONE_B = 697.0  # what 102 plays


def _account(**overrides: Any) -> BaresipAccount:
    default = BaresipAccount(
        user="101", password="pw-101", domain="pbx.test",
        proxy="sip:127.0.0.1:5061;transport=tls",
    )
    return dataclasses.replace(default, **overrides)


def test_account_line_asks_for_mandatory_srtp_over_tls() -> None:
    line = _account().account_line()
    assert line.startswith("<sip:101@pbx.test;transport=tls>;")
    assert ";mediaenc=srtp-mand" in line
    assert 'outbound="sip:127.0.0.1:5061;transport=tls"' in line
    assert "pw-101" not in repr(_account())


def test_config_pins_loopback_and_needs_no_sound_card(tmp_path: Path) -> None:
    wav = write_tone_wav(tmp_path / "t.wav", TONE_A, 0.1)
    phone = Baresip(tmp_path, _account(), source_wav=wav)
    config = phone.config_text()
    assert "net_interface\t\t127.0.0.1" in config
    assert "dns_server\t\t127.0.0.1:53" in config
    # baresip 1.0 cuts file names at 127 bytes: the config names files relative to the
    # workdir it runs in, linked there, however long the workdir's path.
    assert "audio_source\t\taufile,config/source.wav" in config
    assert "snd_path\t\trecordings" in config
    assert str(tmp_path) not in config
    phone.write_config()
    assert (tmp_path / "config" / "source.wav").resolve() == wav.resolve()
    assert "alsa" not in config
    assert f"ctrl_tcp_listen\t\t127.0.0.1:{phone.ctrl_port}" in config
    assert f"rtp_ports\t\t{phone.rtp_port}-{phone.rtp_port + 1}" in config


async def _parse_netstrings(data: bytes) -> dict[str, object]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await _read_netstring(reader)


async def test_netstring_reader_takes_json_and_refuses_garbage() -> None:
    body = json.dumps({"event": True, "type": "CALL_CLOSED"}).encode()
    assert await _parse_netstrings(b"%d:%s," % (len(body), body)) == {
        "event": True, "type": "CALL_CLOSED"
    }
    with pytest.raises(ConnectionError, match="length"):
        await _parse_netstrings(b"x1:{},")
    with pytest.raises(ConnectionError, match="comma"):
        await _parse_netstrings(b"2:{};")
    with pytest.raises(ConnectionError, match="exceeds"):
        await _parse_netstrings(b"9999999:")


@pytest.mark.peer
async def test_baresip_registers_over_tls(
    kamailio: Kamailio, baresip_factory: BaresipFactory
) -> None:
    phone = baresip_factory(kamailio, "101", transport="tls")
    await phone.wait_registered()
    (binding,) = await kamailio.wait_bindings("101")
    assert binding.socket == f"tls:127.0.0.1:{kamailio.tls_port}"
    assert binding.user_agent.startswith("baresip")
    assert binding.tcpconn_id >= 0
    # Kamailio reaches the phone over its TLS connection, not at the Contact's port.
    assert binding.received is not None and binding.received.endswith(";transport=tls")
    assert f"127.0.0.1:{phone.sip_tls_port};transport=tls" in binding.contact
    assert binding.expires <= 60


@pytest.mark.peer
async def test_astart_keeps_the_event_loop_running(
    kamailio: Kamailio, peer_pki: TestPki, tmp_path: Path
) -> None:
    wav = write_tone_wav(tmp_path / "t.wav", TONE_A, 1.0)
    phone = Baresip(tmp_path / "b", _account(
        user="103", password=kamailio.user("103").password, proxy=kamailio.uri("tls"),
    ), source_wav=wav, ca_file=peer_pki.ca.cert)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await phone.astart()
        await phone.wait_registered()
    finally:
        task.cancel()
        await phone.aclose()
    assert ticks >= 3  # the loop kept running while baresip started
    assert not phone.running


@pytest.mark.peer
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_baresip_registers_over_udp_and_tcp(
    kamailio: Kamailio, baresip_factory: BaresipFactory, transport: BaresipTransport
) -> None:
    phone = baresip_factory(kamailio, "102", transport=transport)
    await phone.wait_registered()
    (binding,) = await kamailio.wait_bindings("102")
    assert binding.socket == f"{transport}:127.0.0.1:{kamailio.port(transport)}"
    assert (binding.tcpconn_id >= 0) == (transport == "tcp")
    # baresip's Contact: its own UDP/TCP port; UDP is the default and gets no parameter.
    assert f"@127.0.0.1:{phone.sip_port}" in binding.contact
    assert (";transport=tcp" in binding.contact) == (transport == "tcp")


@pytest.mark.peer
async def test_binding_comes_back_after_a_kamailio_restart(
    kamailio: Kamailio, baresip_factory: BaresipFactory
) -> None:
    # baresip 1.0 does not re-register when its TLS connection drops, only when it refreshes,
    # so a short interval keeps this test short.
    phone = baresip_factory(kamailio, "101", regint=4)
    await phone.wait_registered()
    (before,) = await kamailio.wait_bindings("101")

    await asyncio.to_thread(kamailio.restart)
    assert kamailio.ul_dump() == []  # the location table really was lost

    (after,) = await kamailio.wait_bindings("101", timeout=15)
    assert after.contact == before.contact
    assert after.received != before.received  # a new TLS connection from a new port
    assert after.cseq > before.cseq


@pytest.mark.peer
@pytest.mark.parametrize(
    ("caller_transport", "callee_transport"), [("tls", "tls"), ("tls", "udp")],
    ids=["tls-to-tls", "tls-to-udp"],
)
async def test_two_baresips_call_through_kamailio_with_mandatory_srtp(
    kamailio: Kamailio,
    baresip_factory: BaresipFactory,
    capture_factory: CaptureFactory,
    caller_transport: BaresipTransport,
    callee_transport: BaresipTransport,
) -> None:
    caller = baresip_factory(kamailio, "101", tone_hz=TONE_A, transport=caller_transport)
    callee = baresip_factory(kamailio, "102", tone_hz=TONE_B, transport=callee_transport)
    await asyncio.gather(caller.wait_registered(), callee.wait_registered())
    capture = await asyncio.to_thread(
        capture_factory, udp_ports=[*caller.rtp_ports, *callee.rtp_ports],
        tcp_ports=[kamailio.tls_port],
    )

    await caller.dial("102")
    incoming = await callee.wait_event("CALL_INCOMING")
    assert incoming.peer_uri == "sip:101@pbx.test"
    await callee.accept()
    for phone in (caller, callee):
        await phone.wait_event("CALL_ESTABLISHED")
        menc = await phone.wait_event("CALL_MENC")
        assert menc.param == "0,audio,AES_CM_128_HMAC_SHA1_80"
        await phone.wait_event("CALL_RTPESTAB")
    # Enough audio for the checks below: each side decoded 1.5 s (75 packets) of the other's.
    await asyncio.gather(caller.wait_heard(1.5), callee.wait_heard(1.5))
    await caller.hangup()
    await callee.wait_event("CALL_CLOSED")
    await caller.wait_event("CALL_CLOSED")
    await capture.astop()

    # Each side heard the other's tone, and not its own: keys and media path are right.
    (heard_by_callee,) = callee.recordings()
    (heard_by_caller,) = caller.recordings()
    assert wav_tone_report(heard_by_callee, TONE_A).windows_with_tone >= 10
    assert not wav_tone_report(heard_by_callee, TONE_B).present
    assert wav_tone_report(heard_by_caller, TONE_B).windows_with_tone >= 10
    assert not wav_tone_report(heard_by_caller, TONE_A).present

    # On the wire: SRTP only, no packet with the tone in clear.
    packets = capture.udp_packets()
    for src, dst, tone in ((caller, callee, TONE_A), (callee, caller, TONE_B)):
        wire = srtp_wire_report(
            packets, src_port=src.rtp_port, dst_port=dst.rtp_port, tone_hz=tone
        )
        assert wire.rtp_packets >= 50, wire  # at least 75 were decoded
        assert wire.payload_types == {0}  # PCMU
        # 160 bytes of 20 ms PCMU plus the 10-byte HMAC-SHA1-80 tag, and no tone in clear.
        assert wire.looks_like_srtp, wire

    # The signalling on Kamailio's TLS port is TLS application data, never plain SIP.
    segments = capture.tcp_segments()
    assert len(segments) >= 4  # INVITE, 100, 180, 200, ACK, BYE, 200 at least through 101
    assert any(s.payload[:3] == b"\x17\x03\x03" for s in segments)  # TLS application data
    assert not any(b"SIP/2.0" in s.payload or b"INVITE sip:" in s.payload for s in segments)


@pytest.mark.peer
async def test_hold_resume_and_dtmf_between_baresips(
    kamailio: Kamailio, baresip_factory: BaresipFactory
) -> None:
    caller = baresip_factory(kamailio, "101", tone_hz=TONE_A)
    callee = baresip_factory(kamailio, "102", tone_hz=TONE_B, answermode="auto")
    await asyncio.gather(caller.wait_registered(), callee.wait_registered())
    await caller.dial("102")
    await caller.wait_event("CALL_ESTABLISHED")
    await callee.wait_event("CALL_ESTABLISHED")

    mark = len(callee.events)
    await caller.hold()
    await callee.wait_event("CALL_REMOTE_SDP", where=lambda e: e.param == "offer", after=mark)
    mark = len(callee.events)
    await caller.resume()
    await callee.wait_event("CALL_REMOTE_SDP", where=lambda e: e.param == "offer", after=mark)

    mark = len(callee.events)
    await caller.send_dtmf("1#9")
    assert await callee.received_dtmf(3, after=mark) == "1#9"
    with pytest.raises(ValueError, match="DTMF"):
        await caller.send_dtmf("x")

    # The last digit has ended at the callee before the hang-up.
    starts = [i for i, e in enumerate(callee.events) if i >= mark and e.type == "CALL_DTMF_START"]
    await callee.wait_event("CALL_DTMF_END", after=starts[2])
    await caller.hangup()
    await callee.wait_event("CALL_CLOSED")
    assert not any(e.type == "CALL_CLOSED" for e in callee.events[:mark])
    # No recording check here: sndfile reopens its dump file (named to the second) on every
    # re-INVITE, so a hold and resume within one second truncate it (docs/peers.md).


@pytest.mark.peer
async def test_cancel_and_reject_are_relayed_through_kamailio(
    kamailio: Kamailio, baresip_factory: BaresipFactory
) -> None:
    caller = baresip_factory(kamailio, "101")
    callee = baresip_factory(kamailio, "102")
    await asyncio.gather(caller.wait_registered(), callee.wait_registered())

    # The caller gives up while it rings: CANCEL reaches the callee.
    await caller.dial("102")
    await callee.wait_event("CALL_INCOMING")
    await caller.wait_event("CALL_RINGING")
    await caller.hangup()
    cancelled = await callee.wait_event("CALL_CLOSED")
    await caller.wait_event("CALL_CLOSED")
    # baresip 1.0 reports a CANCEL of a ringing call as ECONNRESET.
    assert cancelled.param == "Connection reset by peer"
    assert not any(e.type == "CALL_ESTABLISHED" for e in callee.events)

    # The callee refuses: the final response reaches the caller.
    mark_caller, mark_callee = len(caller.events), len(callee.events)
    await caller.dial("102")
    await callee.wait_event("CALL_INCOMING", after=mark_callee)
    await callee.hangup()
    closed = await caller.wait_event("CALL_CLOSED", after=mark_caller)
    assert closed.param.startswith("4"), closed  # e.g. "486 Busy Here"
    assert not any(e.type == "CALL_ESTABLISHED" for e in caller.events[mark_caller:])
