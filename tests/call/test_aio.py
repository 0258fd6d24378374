"""Two phone-sim phones without a registrar (UdpCallAgent) calling each other over UDP on
127.0.0.1, with SRTP media: the asyncio Call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from phone_sim.call.aio import Call, CallFailed, shared_media_clock
from phone_sim.call.session import CallState
from phone_sim.errors import UsageError
from phone_sim.media.negotiation import Direction
from phone_sim.phone.aio_agent import UdpCallAgent

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
