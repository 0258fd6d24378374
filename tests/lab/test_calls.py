"""Calls through the lab on real sockets: phone-sim phones over TLS to the echo at 600 and to
each other; the lab's proxy routes them over the phones' own connections."""

from __future__ import annotations

import asyncio

import pytest

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.call.aio import Call, CallFailed
from phone_sim.firmware import profile_for
from phone_sim.lab import Lab
from phone_sim.media.negotiation import Direction
from phone_sim.phone import Phone, RegistrationSettings
from phone_sim.phone.config import PhoneConfig
from phone_sim.tls.client import TrustStore

pytestmark = pytest.mark.timeout(60)

PROFILE = profile_for("D65", "2_9_22")
FAST = RegistrationSettings(register_timeout=5.0, unregister_timeout=2.0)


def _account(lab: Lab, user: str, transport: SipTransport = SipTransport.TLS) -> Account:
    host = SipHost(server=lab.host, port=lab.ports[transport.value], transport=transport,
                   media_encryption="sdes", retry=0.5)
    return Account(username=user, password="1234", host_primary=host, domain=lab.server_name,
                   server_name=lab.server_name)


def _phone(lab: Lab, user: str, transport: SipTransport = SipTransport.TLS) -> Phone:
    trust = TrustStore.from_pem(lab.ca_pem, public_roots=False)
    return Phone(PhoneConfig(
        profile=PROFILE, accounts=(_account(lab, user, transport),), trust=trust,
        registration=FAST))


def _direction(call: Call) -> Direction:
    assert call.negotiated is not None
    return call.negotiated.direction


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_phone_sim_calls_the_echo_and_hears_itself(host: str) -> None:
    async with Lab({"101": "1234"}, host=host) as lab, _phone(lab, "101") as phone:
        await phone.register(timeout=10)
        call = await phone.dial("600")
        await call.wait_answered(timeout=10)
        call.play_tone(1004)
        await call.wait_tone(1004, timeout=10)  # its own tone, echoed
        await call.send_dtmf("42")
        await call.wait_dtmf("42", timeout=10)  # RFC 4733 digits echoed as events
        stats = call.stats
        assert stats is not None and stats.encrypted
        assert stats.stream.srtp_auth_failures == 0 and stats.stream.packets_received >= 20
        # The echo is a stream of its own (re-encrypted with its key, its SSRC), not a reflection.
        assert call.stream is not None and call.stream.remote_ssrc is not None
        assert call.stream.remote_ssrc != call.stream.ssrc
        # Hold and resume by re-INVITE through the lab.
        await call.hold()
        assert _direction(call) is Direction.SENDONLY
        await call.resume()
        assert _direction(call) is Direction.SENDRECV
        await call.hangup()
        assert lab.echo is not None and lab.echo.calls_answered == 1
        assert lab.echo.digits_echoed >= 2
        proxy = lab.registrar.proxy.stats
        assert proxy["challenges"] >= 1 and proxy["routed"] >= 4


async def test_phone_sim_calls_phone_sim_through_the_lab_over_tls_and_udp() -> None:
    async with (
        Lab({"101": "1234", "102": "1234"}) as lab,
        _phone(lab, "101") as caller,
        _phone(lab, "102", SipTransport.UDP) as callee,
    ):
        await caller.register(timeout=10)
        await callee.register(timeout=10)
        call = await caller.dial("102")
        incoming = await callee.next_call(timeout=10)
        await incoming.answer()
        await call.wait_answered(timeout=10)
        call.play_tone(1004)
        incoming.play_tone(697)
        await call.wait_tone(697, timeout=10)
        await incoming.wait_tone(1004, timeout=10)
        await incoming.hangup()  # the callee's BYE crosses UDP -> TLS by the route set
        ended = await call.wait_ended(timeout=10)
        assert ended.by_peer


async def test_calls_to_nobody_and_to_an_unregistered_user_fail_with_the_lab_s_status() -> None:
    async with Lab({"101": "1234", "103": "1234"}) as lab, _phone(lab, "101") as phone:
        await phone.register(timeout=10)
        for target, status in (("999", 404), ("103", 480)):
            call = await phone.dial(target)
            with pytest.raises(CallFailed) as failed:
                await call.wait_answered(timeout=10)
            assert failed.value.status == status


async def test_caller_cancels_a_ringing_call() -> None:
    async with (
        Lab({"101": "1234", "102": "1234"}) as lab,
        _phone(lab, "101") as caller,
        _phone(lab, "102") as callee,
    ):
        await caller.register(timeout=10)
        await callee.register(timeout=10)
        call = await caller.dial("102")
        incoming = await callee.next_call(timeout=10)
        await asyncio.sleep(0.2)
        ended = await call.hangup()  # CANCEL
        assert ended.status in (487, None)
        callee_end = await incoming.wait_ended(timeout=10)
        assert callee_end.by_peer
        assert lab.registrar.proxy.stats["cancelled"] == 1


async def test_the_echo_refuses_plain_rtp_with_488_and_keeps_working() -> None:
    async with Lab({"101": "1234", "102": "1234"}) as lab:
        plain = Account(username="102", password="1234", domain=lab.server_name,
                        server_name=lab.server_name,
                        host_primary=SipHost(server=lab.host, port=lab.ports["tls"],
                                             transport=SipTransport.TLS,
                                             media_encryption=None, retry=0.5))
        trust = TrustStore.from_pem(lab.ca_pem, public_roots=False)
        async with Phone(PhoneConfig(
            profile=PROFILE, accounts=(plain,), trust=trust, registration=FAST)) as phone:
            await phone.register(timeout=10)
            call = await phone.dial("600")
            with pytest.raises(CallFailed) as failed:
                await call.wait_answered(timeout=10)
            assert failed.value.status == 488
        assert lab.echo is not None and lab.echo.refused.get(488) == 1
        async with _phone(lab, "101") as phone:  # the echo still answers SDES calls
            await phone.register(timeout=10)
            call = await phone.dial("600")
            await call.wait_answered(timeout=10)
            await call.hangup()


async def test_the_echo_takes_sip_only_from_the_lab() -> None:
    async with Lab({"101": "1234"}) as lab:
        assert lab.echo is not None
        loop = asyncio.get_running_loop()
        received: asyncio.Queue[bytes] = asyncio.Queue()

        class _Sock(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                received.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(_Sock, local_addr=("127.0.0.1", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            options = (
                f"OPTIONS sip:600@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKdirect1\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:600@127.0.0.1>\r\n"
                "Call-ID: direct1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            transport.sendto(options, lab.echo.address)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await received.get()  # the echo ignores what does not come from the lab
            lab.echo.accept_only_from()  # open it: the same request is answered
            transport.sendto(options, lab.echo.address)
            async with asyncio.timeout(2):
                answer = await received.get()
            assert answer.startswith(b"SIP/2.0 200")
        finally:
            transport.close()
