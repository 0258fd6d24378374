"""A third-party phone registers to the lab: baresip 1.0 from Debian, over TLS, TCP and UDP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from phone_sim.lab import BindingAdded, BindingRefreshed, BindingRefused, Lab, LabUser
from phone_sim.testing.aio_baresip import Baresip, BaresipAccount, BaresipTransport
from phone_sim.testing.aio_capture import srtp_wire_report
from phone_sim.testing.aio_pytest_peers import CaptureFactory, require
from phone_sim.testing.audio import wav_tone_report, write_tone_wav


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _baresip(
    tmp_path: Path, lab: Lab, transport: BaresipTransport, *, password: str = "1234"
) -> Baresip:
    require("baresip")
    account = BaresipAccount(
        user="101",
        password=password,
        authname="auth101",
        domain=lab.server_name,
        proxy=lab.uri(transport),
        transport=transport,
        mediaenc="none",
        regint=60,
    )
    wav = write_tone_wav(tmp_path / "tone.wav", 1004.0, 1.0)
    return Baresip(tmp_path, account, source_wav=wav, ca_file=lab.ca_file)


@pytest.mark.peer
@pytest.mark.parametrize("transport", ["tls", "tcp", "udp"])
async def test_baresip_registers(tmp_path: Path, transport: BaresipTransport) -> None:
    users = [LabUser(username="101", password="1234", authname="auth101")]
    async with Lab(users) as lab:
        phone = _baresip(tmp_path, lab, transport)
        phone.start()
        try:
            await phone.wait_registered(timeout=10)
            binding = await lab.wait_binding("101", timeout=5)
            assert binding.flow.transport == transport.upper()
            assert binding.flow_alive
            assert binding.aor == f"sip:101@{lab.server_name}"
            assert binding.user_agent is not None and "baresip" in binding.user_agent.lower()
            assert binding.expires == 60
            if transport == "tls":
                assert lab.tls_handshakes >= 1 and lab.tls_failures == 0
            # baresip answered a challenge: the first REGISTER was refused with 401.
            assert lab.registrar.stats["challenges"] >= 1
            assert any(isinstance(e, BindingAdded | BindingRefreshed) for e in lab.events)
        finally:
            await phone.aclose()


@pytest.mark.peer
async def test_baresip_with_a_wrong_password_is_refused(tmp_path: Path) -> None:
    users = [LabUser(username="101", password="1234", authname="auth101")]
    async with Lab(users, transports=["tls"]) as lab:
        phone = _baresip(tmp_path, lab, "tls", password="wrong")
        phone.start()
        try:
            event = await lab.wait_event(lambda e: isinstance(e, BindingRefused), timeout=10)
            assert isinstance(event, BindingRefused) and event.status == 401
            assert not await phone.is_registered()
            assert lab.bindings("101") == []
        finally:
            await phone.aclose()


# -- calls through the lab's proxy -----------------------------------------------------------

TONE_101 = 1004.0
TONE_102 = 697.0


def _srtp_baresip(
    tmp_path: Path, lab: Lab, user: str, tone: float, *, answermode: str = "manual"
) -> Baresip:
    require("baresip")
    workdir = tmp_path / f"baresip-{user}"
    workdir.mkdir()
    account = BaresipAccount(
        user=user, password="1234", domain=lab.server_name, proxy=lab.uri("tls"),
        transport="tls", mediaenc="srtp-mand", regint=60,
        answermode=answermode,  # type: ignore[arg-type]
    )
    wav = write_tone_wav(workdir / f"tone-{tone:g}.wav", tone, 30.0)
    return Baresip(workdir, account, source_wav=wav, ca_file=lab.ca_file, name=f"baresip-{user}")


@pytest.mark.peer
@pytest.mark.timeout(60)
async def test_two_baresips_call_each_other_through_the_lab_over_tls(
    tmp_path: Path, capture_factory: CaptureFactory
) -> None:
    async with Lab({"101": "1234", "102": "1234"}, transports=["tls"]) as lab:
        caller = _srtp_baresip(tmp_path, lab, "101", TONE_101)
        callee = _srtp_baresip(tmp_path, lab, "102", TONE_102, answermode="auto")
        caller.start()
        callee.start()
        try:
            await caller.wait_registered(timeout=10)
            await callee.wait_registered(timeout=10)
            capture = await asyncio.to_thread(
                capture_factory, udp_ports=[*caller.rtp_ports, *callee.rtp_ports]
            )
            await caller.dial("102")
            await caller.wait_event("CALL_ESTABLISHED", timeout=10)
            await callee.wait_event("CALL_ESTABLISHED", timeout=10)
            # Enough audio for the checks below: each side has decoded 1.5 s of the other's.
            await asyncio.gather(caller.wait_heard(1.5), callee.wait_heard(1.5))
            await caller.hangup()  # the BYE follows the route set through the lab
            await callee.wait_event("CALL_CLOSED", timeout=10)
            await caller.wait_event("CALL_CLOSED", timeout=10)
            await capture.astop()
        finally:
            await caller.aclose()
            await callee.aclose()
        # The media went straight between the two phones, as SRTP (no tone in the clear).
        packets = capture.udp_packets()
        for src, dst, tone in ((caller.rtp_ports[0], callee.rtp_ports[0], TONE_101),
                               (callee.rtp_ports[0], caller.rtp_ports[0], TONE_102)):
            wire = srtp_wire_report(packets, src_port=src, dst_port=dst, tone_hz=tone)
            assert wire.rtp_packets >= 50, wire
            assert wire.looks_like_srtp, wire
        proxy = lab.registrar.proxy.stats
        assert proxy["challenges"] >= 1  # baresip's INVITE was challenged with 407
        assert proxy["routed"] >= 3  # INVITE, ACK, BYE
        # Each side heard the other's tone (decrypted with the keys of its SDES answer).
        [heard_by_caller] = caller.recordings()[-1:]
        [heard_by_callee] = callee.recordings()[-1:]
        assert wav_tone_report(heard_by_caller, TONE_102).windows_with_tone >= 10
        assert wav_tone_report(heard_by_callee, TONE_101).windows_with_tone >= 10


@pytest.mark.peer
@pytest.mark.timeout(60)
async def test_baresip_calls_the_echo_and_hears_its_own_tone(tmp_path: Path) -> None:
    async with Lab({"101": "1234"}, transports=["tls"]) as lab:
        phone = _srtp_baresip(tmp_path, lab, "101", TONE_101)
        phone.start()
        try:
            await phone.wait_registered(timeout=10)
            await phone.dial("600")
            await phone.wait_event("CALL_ESTABLISHED", timeout=10)
            mark = len(phone.events)
            # The recording checked below: sndfile stops adding to it at a re-INVITE.
            await phone.wait_heard(1.5)
            await phone.send_dtmf("7")
            assert await phone.received_dtmf(1, after=mark, timeout=5) == "7"
            # Hold and resume by re-INVITE through the lab; the echo answers both.
            proxy = lab.registrar.proxy.stats
            routed = proxy["routed"]
            await phone.hold()
            assert await _until(lambda: proxy["routed"] >= routed + 2)  # re-INVITE + ACK
            await phone.resume()
            assert await _until(lambda: proxy["routed"] >= routed + 4)  # 2 re-INVITEs + ACKs
            assert not any(e.type == "CALL_CLOSED" for e in phone.events[mark:])
            await phone.hangup()
            await phone.wait_event("CALL_CLOSED", timeout=10)
        finally:
            await phone.aclose()
        assert lab.echo is not None and lab.echo.calls_answered == 1
        [heard] = phone.recordings()[-1:]
        assert wav_tone_report(heard, TONE_101).windows_with_tone >= 10
