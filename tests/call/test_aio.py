"""Two phone-sim phones without a registrar (UdpCallAgent) calling each other over UDP on
127.0.0.1, with SRTP media: the asyncio Call."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import resource
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from phone_sim.call.aio import Call, CallFailed, CallTimeout, shared_media_clock
from phone_sim.call.session import CallState
from phone_sim.errors import UsageError
from phone_sim.media.negotiation import Direction
from phone_sim.phone.aio_agent import UdpCallAgent
from phone_sim.testing.aio_ports import free_port_pair

pytestmark = pytest.mark.timeout(60)


def _direction(call: Call) -> Direction:
    assert call.negotiated is not None
    return call.negotiated.direction


async def _pair(auto_answer: bool = False) -> tuple[UdpCallAgent, UdpCallAgent]:
    a = await UdpCallAgent("127.0.0.1", user="101").__aenter__()
    b = await UdpCallAgent("127.0.0.1", user="102", auto_answer=auto_answer).__aenter__()
    return a, b


async def _connected(a: UdpCallAgent, b: UdpCallAgent) -> tuple[Call, Call]:
    call = await a.dial(str(b.uri))
    incoming = await b.next_call(timeout=10)
    assert incoming.incoming and incoming.state is CallState.INCOMING
    await incoming.answer()
    await call.wait_answered(timeout=10)
    return call, incoming


async def test_tones_cross_over_srtp_both_ways_and_hangup() -> None:
    a, b = await _pair()
    try:
        call, incoming = await _connected(a, b)
        assert a.media_clock is b.media_clock is shared_media_clock()  # one pacer per loop
        assert call.progress == [180]
        call.play_tone(1004)
        incoming.play_tone(697)
        await incoming.wait_tone(1004, timeout=10)
        await call.wait_tone(697, timeout=10)
        stats = call.stats
        assert stats is not None and stats.encrypted and stats.direction == "sendrecv"
        assert stats.stream.packets_received > 0 and stats.stream.srtp_auth_failures == 0
        assert stats.as_dict()["tones_heard"] == [697.0]
        ended = await call.hangup()
        assert not ended.by_peer
        peer_ended = await incoming.wait_ended(timeout=10)
        assert peer_ended.by_peer
    finally:
        await a.close()
        await b.close()


async def test_a_tone_nobody_asked_for_is_heard_at_its_frequency() -> None:
    a, b = await _pair()
    try:
        call, incoming = await _connected(a, b)
        incoming.play_tone(1400)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while loop.time() < deadline and not (call.stats and call.stats.tones_heard):
            await asyncio.sleep(0.05)
        stats = call.stats
        assert stats is not None and stats.tones_heard == (1400.0,)
        await call.wait_tone(1400, timeout=5)  # asked for now: still one tone
        assert call.stats is not None and call.stats.tones_heard == (1400.0,)
        await call.hangup()
    finally:
        await a.close()
        await b.close()


async def test_dtmf_hold_and_resume() -> None:
    a, b = await _pair()
    try:
        call, incoming = await _connected(a, b)
        await call.send_dtmf("123")
        await incoming.wait_dtmf("123", timeout=10)
        await call.hold()
        assert call.negotiated is not None
        assert call.negotiated.direction is Direction.SENDONLY
        assert incoming.negotiated is not None
        assert incoming.negotiated.direction is Direction.RECVONLY
        assert incoming.stream is not None and incoming.stream.direction == "recvonly"
        await call.resume()
        assert _direction(call) is Direction.SENDRECV
        incoming.play_tone(941)
        await call.wait_tone(941, timeout=10)
        await incoming.hangup()
        assert (await call.wait_ended(timeout=10)).by_peer
    finally:
        await a.close()
        await b.close()


async def test_reject_and_auto_answer_echo() -> None:
    a, b = await _pair()
    try:
        call = await a.dial(str(b.uri))
        incoming = await b.next_call(timeout=10)
        await incoming.reject(486)
        with pytest.raises(CallFailed, match="486") as info:
            await call.wait_answered(timeout=10)
        assert info.value.status == 486 and info.value.exit_code == 1
    finally:
        await b.close()
    echo = await UdpCallAgent("127.0.0.1", user="600", auto_answer=True).__aenter__()
    try:
        call = await a.dial(str(echo.uri))
        await call.wait_answered(timeout=10)
        call.play_tone(1004)
        await call.wait_tone(1004, timeout=10)  # our own tone, echoed back over SRTP
        await call.hangup()
    finally:
        await a.close()
        await echo.close()


async def test_unanswered_call_can_be_cancelled_and_bad_targets_are_clear() -> None:
    a, b = await _pair()
    try:
        call = await a.dial(str(b.uri))
        incoming = await b.next_call(timeout=10)
        await asyncio.sleep(0.05)
        ended = await call.hangup()
        assert ended.status == 487
        assert (await incoming.wait_ended(timeout=10)).status == 487
        with pytest.raises(UsageError, match="bad call target"):
            await a.dial("10 2")
        with pytest.raises(UsageError, match="no media"):
            await incoming.send_dtmf("1")
    finally:
        await a.close()
        await b.close()


async def test_ipv6_loopback_call() -> None:
    async with (
        UdpCallAgent("::1", user="101") as a,
        UdpCallAgent("::1", user="102", auto_answer=True) as b,
    ):
        assert str(b.uri).startswith("sip:102@[::1]:")
        call = await a.dial(str(b.uri))
        await call.wait_answered(timeout=10)
        call.play_tone(1004)
        await call.wait_tone(1004, timeout=10)  # echoed by b
        assert call.negotiated is not None and call.negotiated.remote_host == "::1"
        await call.hangup()


async def test_media_that_cannot_start_ends_the_call_cleanly() -> None:
    async with (
        UdpCallAgent("127.0.0.1", user="101") as a,
        UdpCallAgent("127.0.0.1", user="102", auto_answer=True) as b,
    ):
        call = await a.dial(str(b.uri))
        assert call.endpoint is not None
        call.endpoint.close()  # the media sockets are gone before the answer arrives
        ended = await call.wait_ended(timeout=10)
        assert call.media_error is not None and "closed" in call.media_error
        assert not ended.by_peer


async def test_next_call_skips_calls_that_ended_while_nobody_waited() -> None:
    a, b = await _pair()
    try:
        cancelled = await a.dial(str(b.uri))
        await cancelled.hangup(timeout=10)  # CANCEL while it rings: nobody took it
        assert await _until(lambda: not b.calls)
        call = await a.dial(str(b.uri))
        incoming = await b.next_call(timeout=10)
        assert incoming.call_id == call.call_id
        await incoming.reject(486)
        with pytest.raises(CallFailed):
            await call.wait_answered(timeout=10)
        # A waiter that closes with the agent is told so, not left hanging.
        waiting = asyncio.ensure_future(b.next_call())
        await asyncio.sleep(0)
        await b.close()
        with pytest.raises(CallFailed, match="closed"):
            await waiting
    finally:
        await a.close()
        await b.close()


async def test_an_auto_answering_agent_nobody_reads_keeps_only_live_calls_queued() -> None:
    a, b = await _pair(auto_answer=True)
    try:
        for _ in range(20):
            call = await a.dial(str(b.uri))
            await call.wait_answered(timeout=10)
            await call.hangup(timeout=10)
        assert await _until(lambda: not b.calls)
        assert len(b._incoming) < 16
        with pytest.raises(CallFailed, match="no incoming call"):
            await b.next_call(timeout=0.1)
    finally:
        await a.close()
        await b.close()


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


# -- re-INVITEs refused or never answered: a tiny UDP UAS in the test ---------------------------


class _ReofferUas(asyncio.DatagramProtocol):
    """A tiny UDP user agent on 127.0.0.1: answers the first INVITE (SDES, PCMU), then each
    re-INVITE as ``reoffers`` says, in turn: ``"accept"`` (200, the direction mirrored), a
    status (``488``: refused), or ``None`` (never answered). A BYE gets 200."""

    def __init__(self, reoffers: list[str | int | None], media_port: int) -> None:
        self.reoffers = list(reoffers)
        self.media_port = media_port
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.invites = 0
        self.methods: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = int(transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        head, _, body = data.decode().partition("\r\n\r\n")
        lines = head.split("\r\n")
        if lines[0].startswith("SIP/2.0"):
            return
        method = lines[0].split(" ", 1)[0]
        self.methods.append(method)
        if method == "INVITE":
            self.invites += 1
            what = "accept" if self.invites == 1 else self.reoffers.pop(0)
            if what == "accept":
                self._reply(lines, addr, 200, "OK", self._answer(body))
            elif isinstance(what, int):
                self._reply(lines, addr, what, "Not Acceptable Here")
        elif method == "BYE":
            self._reply(lines, addr, 200, "OK")

    def _answer(self, offer: str) -> str:
        crypto = re.search(r"a=crypto:(\d+) AES_CM_128_HMAC_SHA1_80 ", offer)
        assert crypto is not None, offer
        direction = next((d for d in ("sendonly", "recvonly", "inactive") if f"a={d}" in offer),
                         "sendrecv")
        mirrored = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction, direction)
        key = base64.b64encode(os.urandom(30)).decode()
        return "\r\n".join([
            "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
            f"m=audio {self.media_port} RTP/SAVP 0", "a=rtpmap:0 PCMU/8000",
            f"a=crypto:{crypto.group(1)} AES_CM_128_HMAC_SHA1_80 inline:{key}",
            f"a={mirrored}", "",
        ])

    def _reply(self, lines: list[str], addr: tuple[str | Any, int], status: int,
               reason: str, body: str = "") -> None:
        out = [f"SIP/2.0 {status} {reason}"]
        for line in lines[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if name in ("via", "from", "call-id", "cseq"):
                out.append(line)
            elif name == "to":
                out.append(line if ";tag=" in line else f"{line};tag=uas")
        out.append(f"Contact: <sip:uas@127.0.0.1:{self.port}>")
        if body:
            out.append("Content-Type: application/sdp")
        out += [f"Content-Length: {len(body)}", "", body]
        assert self.transport is not None
        self.transport.sendto("\r\n".join(out).encode(), addr)


class _Sink(asyncio.DatagramProtocol):
    """Swallows the media sent to the tiny UAS."""


async def _reoffer_call(reoffers: list[str | int | None]) -> tuple[Call, _ReofferUas,
                                                                     UdpCallAgent, list[Any]]:
    loop = asyncio.get_running_loop()
    media = free_port_pair()
    sinks = [(await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.0.1", port)))[0]
             for port in (media, media + 1)]
    transport, uas = await loop.create_datagram_endpoint(
        lambda: _ReofferUas(reoffers, media), local_addr=("127.0.0.1", 0))
    agent = await UdpCallAgent("127.0.0.1", user="101").__aenter__()
    call = await agent.dial(f"sip:uas@127.0.0.1:{uas.port}")
    await call.wait_answered(timeout=10)
    assert _direction(call) is Direction.SENDRECV
    return call, uas, agent, [transport, *sinks]


async def test_hold_and_resume_refused_through_the_call_keep_the_call_as_it_was() -> None:
    call, uas, agent, transports = await _reoffer_call([488, "accept", 488])
    try:
        with pytest.raises(CallFailed, match="hold refused: 488") as info:
            await call.hold()
        assert info.value.status == 488
        # RFC 3261 14.1: a refused re-INVITE leaves the session as it was.
        assert _direction(call) is Direction.SENDRECV and not call.on_hold
        assert call.state is CallState.CONFIRMED
        await call.hold()
        assert _direction(call) is Direction.SENDONLY and call.on_hold
        with pytest.raises(CallFailed, match="resume refused: 488"):
            await call.resume()
        assert _direction(call) is Direction.SENDONLY and call.on_hold  # still on hold
        ended = await call.hangup()
        assert not ended.by_peer
        assert uas.methods.count("INVITE") == 4 and "BYE" in uas.methods
    finally:
        await agent.close()
        for transport in transports:
            transport.close()


async def test_hold_and_resume_never_answered_time_out_and_the_call_can_still_end() -> None:
    call, uas, agent, transports = await _reoffer_call(["accept", None])
    try:
        await call.hold()
        assert _direction(call) is Direction.SENDONLY
        with pytest.raises(CallTimeout, match=r"resume not answered within 0\.3 s"):
            await call.resume(timeout=0.3)
        assert _direction(call) is Direction.SENDONLY  # nothing changed without an answer
        ended = await call.hangup()
        assert not ended.by_peer
        assert "BYE" in uas.methods
    finally:
        await agent.close()
        for transport in transports:
            transport.close()


async def test_a_hold_never_answered_times_out() -> None:
    call, _, agent, transports = await _reoffer_call([None])
    try:
        with pytest.raises(CallTimeout, match=r"hold not answered within 0\.3 s"):
            await call.hold(timeout=0.3)
        assert _direction(call) is Direction.SENDRECV and not call.on_hold
        await call.hangup()
    finally:
        await agent.close()
        for transport in transports:
            transport.close()


# -- call error paths --------------------------------------------------------------------------


@contextlib.contextmanager
def _no_free_descriptors() -> Iterator[None]:
    """This process at its descriptor limit: every lower descriptor number taken, and the
    limit set to the next one, so that opening a socket fails with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    ceiling = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    try:
        while not fillers or fillers[-1] <= ceiling:
            fillers.append(os.open(os.devnull, os.O_RDONLY))  # fills the gaps below
        resource.setrlimit(resource.RLIMIT_NOFILE, (fillers[-1], hard))
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)


async def test_an_auto_answer_that_cannot_open_media_refuses_with_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = await _pair(auto_answer=True)
    try:
        call = await a.dial(str(b.uri))  # the caller's media sockets are open
        # The answering phone runs out of file descriptors: its media sockets cannot open.
        with _no_free_descriptors(), pytest.raises(CallFailed) as info:
            await call.wait_answered(timeout=10)
        assert info.value.status == 500  # refused at once rather than ringing to the timeout
        assert "cannot auto-answer" in caplog.text and "cannot bind RTP socket" in caplog.text
        assert await _until(lambda: not b.calls)
        # With descriptors back, the next call is answered.
        call = await a.dial(str(b.uri))
        await call.wait_answered(timeout=10)
        await call.hangup()
    finally:
        await a.close()
        await b.close()


async def test_a_call_that_ends_while_a_tone_is_awaited_says_so() -> None:
    a, b = await _pair()
    try:
        call, incoming = await _connected(a, b)
        waiting = asyncio.ensure_future(call.wait_tone(1633, timeout=10))  # never played
        dtmf = asyncio.ensure_future(call.wait_dtmf("9", timeout=10))  # never sent
        await asyncio.sleep(0)
        await incoming.hangup()
        with pytest.raises(CallFailed, match="the call ended before a 1633 Hz tone"):
            await waiting
        with pytest.raises(CallFailed, match="the call ended before DTMF '9'"):
            await dtmf
        assert (await call.wait_ended(timeout=10)).by_peer
        with pytest.raises(CallFailed, match="the call ended before"):
            await call.wait_tone(1633, timeout=10)  # and any wait started afterwards
    finally:
        await a.close()
        await b.close()
