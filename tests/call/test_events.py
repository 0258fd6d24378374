"""Call lifecycle facts on ``Phone.events()``: placed or arrived, answered, finished, for
outgoing and incoming calls through the embedded lab; nothing of the kind on a phone that
never calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.call.aio import CallFailed
from phone_sim.call.events import (
    CallAnswered,
    CallArrived,
    CallFinished,
    CallPlaced,
    PhoneCallEvent,
)
from phone_sim.firmware import profile_for
from phone_sim.lab import Lab
from phone_sim.phone import Phone, PhoneEvent, RegistrationSettings, RegistrationSucceeded
from phone_sim.phone.config import PhoneConfig
from phone_sim.tls.client import TrustStore

pytestmark = pytest.mark.timeout(60)

PROFILE = profile_for("D65", "2_9_22")
FAST = RegistrationSettings(register_timeout=5.0, unregister_timeout=2.0)
CALL_EVENTS = (CallPlaced, CallArrived, CallAnswered, CallFinished)


def _phone(lab: Lab, user: str, transport: SipTransport = SipTransport.TLS, *,
           auto_answer: bool = False) -> Phone:
    host = SipHost(server=lab.host, port=lab.ports[transport.value], transport=transport,
                   media_encryption="sdes", retry=0.5)
    account = Account(username=user, password="1234", host_primary=host,
                      domain=lab.server_name, server_name=lab.server_name)
    trust = TrustStore.from_pem(lab.ca_pem, public_roots=False)
    return Phone(PhoneConfig(
        profile=PROFILE, accounts=(account,), trust=trust, registration=FAST,
        auto_answer=auto_answer))


class _Recorder:
    """Everything a phone's events() yields, collected by a task."""

    def __init__(self, phone: Phone) -> None:
        self.events: list[PhoneEvent | PhoneCallEvent] = []
        self._task = asyncio.get_running_loop().create_task(self._run(phone.events()))

    async def _run(self, stream: AsyncIterator[PhoneEvent | PhoneCallEvent]) -> None:
        async for event in stream:
            self.events.append(event)

    def calls(self) -> list[PhoneCallEvent]:
        return [e for e in self.events if isinstance(e, CALL_EVENTS)]

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.02)

    async def until_finished(self, count: int = 1) -> None:
        await self.until(lambda: sum(isinstance(e, CallFinished) for e in self.events) >= count)

    def stop(self) -> None:
        self._task.cancel()


async def test_an_answered_call_is_placed_arrived_answered_and_finished_on_both_phones() -> None:
    async with (
        Lab({"101": "1234", "102": "1234"}) as lab,
        _phone(lab, "101") as caller,
        _phone(lab, "102", SipTransport.UDP) as callee,
    ):
        caller_events, callee_events = _Recorder(caller), _Recorder(callee)
        await caller.register(timeout=10)
        await callee.register(timeout=10)
        call = await caller.dial("102")
        incoming = await callee.next_call(timeout=10)
        await incoming.answer()
        await call.wait_answered(timeout=10)
        await callee_events.until(lambda: any(isinstance(e, CallAnswered)
                                              for e in callee_events.events))
        await incoming.hangup()
        await call.wait_ended(timeout=10)
        await caller_events.until_finished()
        await callee_events.until_finished()
        call_id = call.call_id
        assert incoming.call_id == call_id  # the lab proxies, it does not bridge
        placed, answered, finished = caller_events.calls()
        assert placed == CallPlaced(call_id=call_id, account=0,
                                    remote=f"sip:102@{lab.server_name}")
        assert answered == CallAnswered(call_id=call_id, incoming=False)
        assert isinstance(finished, CallFinished) and finished.call_id == call_id
        assert finished.by_peer and finished.status is None and finished.reason
        arrived, answered, ended = callee_events.calls()
        assert isinstance(arrived, CallArrived) and arrived.call_id == call_id
        assert arrived.remote == incoming.remote and "101@" in arrived.remote
        assert answered == CallAnswered(call_id=call_id, incoming=True)
        assert isinstance(ended, CallFinished) and ended.call_id == call_id
        assert not ended.by_peer and ended.reason
        # Registration events still come first, on the same stream.
        assert isinstance(caller_events.events[0], RegistrationSucceeded)
        assert caller_events.events.index(caller_events.calls()[0]) > 0
        caller_events.stop()
        callee_events.stop()


async def test_a_refused_call_is_placed_then_finished_with_the_status_never_answered() -> None:
    async with Lab({"101": "1234"}) as lab, _phone(lab, "101") as phone:
        recorder = _Recorder(phone)
        await phone.register(timeout=10)
        call = await phone.dial("999")
        with pytest.raises(CallFailed):
            await call.wait_answered(timeout=10)
        await recorder.until_finished()
        placed, finished = recorder.calls()
        assert placed == CallPlaced(call_id=call.call_id, account=0,
                                    remote=f"sip:999@{lab.server_name}")
        assert isinstance(finished, CallFinished)
        assert finished.call_id == call.call_id
        assert finished.status == 404 and finished.by_peer
        recorder.stop()


async def test_a_cancelled_incoming_call_arrives_and_finishes_by_the_peer() -> None:
    async with (
        Lab({"101": "1234", "102": "1234"}) as lab,
        _phone(lab, "101") as caller,
        _phone(lab, "102") as callee,
    ):
        recorder = _Recorder(callee)
        await caller.register(timeout=10)
        await callee.register(timeout=10)
        call = await caller.dial("102")
        incoming = await callee.next_call(timeout=10)
        await call.hangup()  # CANCEL while it rings
        await incoming.wait_ended(timeout=10)
        await recorder.until_finished()
        arrived, finished = recorder.calls()
        assert isinstance(arrived, CallArrived)
        assert isinstance(finished, CallFinished) and finished.by_peer
        assert arrived.call_id == finished.call_id == call.call_id
        recorder.stop()


async def test_an_auto_answered_call_nobody_takes_still_shows_on_the_stream() -> None:
    async with (
        Lab({"101": "1234", "102": "1234"}) as lab,
        _phone(lab, "101") as caller,
        _phone(lab, "102", auto_answer=True) as callee,
    ):
        recorder = _Recorder(callee)
        await caller.register(timeout=10)
        await callee.register(timeout=10)
        call = await caller.dial("102")
        await call.wait_answered(timeout=10)
        await recorder.until(lambda: any(isinstance(e, CallAnswered) for e in recorder.events))
        await call.hangup()
        await recorder.until_finished()
        call_id = call.call_id
        arrived, answered, finished = recorder.calls()
        assert isinstance(arrived, CallArrived) and arrived.call_id == call_id
        assert answered == CallAnswered(call_id=call_id, incoming=True)
        assert isinstance(finished, CallFinished) and finished.by_peer
        recorder.stop()


async def test_a_phone_that_never_calls_has_only_registration_events_and_no_calls() -> None:
    async with Lab({"101": "1234"}) as lab:
        phone = _phone(lab, "101")
        recorder = _Recorder(phone)
        await phone.register(timeout=10)
        await phone.close()
        await recorder.until(lambda: len(recorder.events) >= 2)
        assert recorder.calls() == []
        assert phone.calls == {} and phone.core.calls.sessions == {}
        recorder.stop()
