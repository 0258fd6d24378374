"""Fifty phones register to a real Asterisk at once and call each other in 25 SRTP calls
through it, every one with a tone heard both ways."""

from __future__ import annotations

import asyncio
import re

import pytest

from phone_sim import Call, Phone
from phone_sim.testing.aio_asterisk import Asterisk
from tests.asterisk.conftest import PhoneFactory

pytestmark = [pytest.mark.asterisk, pytest.mark.peer, pytest.mark.timeout(180)]

PHONES = 50
OURS = 1004.0
THEIRS = 697.0


async def _call(caller: Phone, callee: Phone, callee_user: str) -> tuple[Call, Call]:
    outgoing = await caller.dial(callee_user)
    incoming = await callee.next_call(timeout=30)
    await incoming.answer()
    await outgoing.wait_answered(timeout=30)
    outgoing.play_tone(OURS)
    incoming.play_tone(THEIRS)
    await outgoing.wait_tone(THEIRS, timeout=30)
    await incoming.wait_tone(OURS, timeout=30)
    return outgoing, incoming


async def test_fifty_phones_register_and_call_at_once(
    asterisk: Asterisk, phones: PhoneFactory
) -> None:
    users = [str(n) for n in range(110, 110 + PHONES)]
    # All fifty TLS connections and registrations at once.
    group = await asyncio.gather(*(phones(user) for user in users))
    assert all(p.registered for p in group)
    contacts = asterisk.cli("pjsip show contacts")
    assert len(re.findall(r"Contact:\s+1\d\d/sip:", contacts)) == PHONES, contacts
    half = PHONES // 2
    calls = await asyncio.gather(*(
        _call(group[i], group[half + i], users[half + i]) for i in range(half)
    ))
    counts = asterisk.cli("core show channels count")
    assert f"{PHONES} active channels" in counts, counts
    assert f"{half} active calls" in counts, counts
    for outgoing, incoming in calls:
        for call in (outgoing, incoming):
            stats = call.stats
            assert stats is not None and stats.encrypted
            assert stats.stream.srtp_auth_failures == 0, stats.stream
    ended = await asyncio.gather(*(outgoing.hangup(timeout=15) for outgoing, _ in calls))
    assert len(ended) == half
    await asyncio.gather(*(incoming.wait_ended(timeout=15) for _, incoming in calls))
