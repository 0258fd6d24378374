"""The asyncio Phone with several lines against the embedded lab, live reconfiguration, and
a TLS server that accepts connections and never answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.call import CallFailed
from phone_sim.firmware import profile_for
from phone_sim.lab import Lab
from phone_sim.phone import (
    Phone,
    PhoneConfig,
    RegistrationSettings,
    RegistrationSucceeded,
    Unregistered,
    build_phone,
)
from phone_sim.tls.client import TrustStore
from phone_sim.tls.verdict import NotTlsPeer

pytestmark = pytest.mark.timeout(60)

PROFILE = profile_for("D65", "2_9_22")
USERS = {"101": "1234", "102": "1234", "103": "1234", "200": "1234"}
FAST = RegistrationSettings(register_timeout=5.0, unregister_timeout=2.0)


def _line(lab: Lab, user: str, index: int) -> Account:
    host = SipHost(server=lab.host, port=lab.ports["tls"], transport=SipTransport.TLS,
                   media_encryption="sdes", retry=0.5)
    return Account(username=user, password=USERS[user], index=index, caller_id=f"Line {user}",
                   host_primary=host, domain=lab.server_name, server_name=lab.server_name)


def _config(lab: Lab, *accounts: Account) -> PhoneConfig:
    return PhoneConfig(profile=PROFILE, accounts=accounts, registration=FAST,
                       trust=TrustStore.from_pem(lab.ca_pem, public_roots=False))


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(dict(USERS)) as running:
        yield running


async def test_two_lines_register_call_and_take_calls_on_their_own_numbers(lab: Lab) -> None:
    phone = build_phone(_config(lab, _line(lab, "101", 0), _line(lab, "102", 1)))
    other = build_phone(_config(lab, _line(lab, "200", 0)))
    async with phone, other:
        done = await phone.register(timeout=10)
        assert done.account == 0
        await other.register(timeout=10)
        assert phone.registered
        bindings = {user: await lab.wait_binding(user) for user in ("101", "102")}
        assert bindings["101"].flow == bindings["102"].flow  # one TLS connection, two lines
        # A call to 102 rings on line 1; one from line 1 shows 102 as the caller.
        call = await other.dial("102")
        incoming = await phone.next_call(timeout=10)
        assert incoming.account == 1
        await incoming.answer()
        await call.wait_answered(timeout=10)
        incoming.play_tone(1004)
        await call.wait_tone(1004, timeout=10)
        await call.hangup()
        outgoing = await phone.dial("200", account=1)
        arrived = await other.next_call(timeout=10)
        assert arrived.remote.startswith("sip:102@")
        await arrived.reject(486)
        with pytest.raises(CallFailed, match="486"):
            await outgoing.wait_answered(timeout=10)


async def test_reconfigure_moves_a_line_and_keeps_the_call(lab: Lab) -> None:
    config = _config(lab, _line(lab, "101", 0), _line(lab, "102", 1))
    phone = build_phone(config)
    echo_call = None
    async with phone:
        await phone.register(timeout=10)
        events = phone.events()
        echo_call = await phone.dial("600")
        await echo_call.wait_answered(timeout=10)
        await phone.reconfigure(replace(config, accounts=(_line(lab, "101", 0),
                                                          _line(lab, "103", 2))))
        seen: list[object] = []
        async with asyncio.timeout(10):
            async for event in events:
                seen.append(event)
                if isinstance(event, RegistrationSucceeded) and event.account == 2:
                    break
        assert any(isinstance(e, Unregistered) and e.account == 1 for e in seen)
        assert lab.bindings("102") == []
        assert await lab.wait_binding("103")
        echo_call.play_tone(697)
        await echo_call.wait_tone(697, timeout=10)  # the call on line 0 went on
        await echo_call.hangup()


async def test_a_server_that_never_finishes_the_handshake_is_named_at_its_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the ClientHello and never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    account = Account(username="101", password="x", host_primary=SipHost(
        server="127.0.0.1", port=port, transport=SipTransport.TLS))
    settings = RegistrationSettings(register_timeout=20.0, tls_handshake_timeout=0.5)
    started = time.monotonic()
    async with server, Phone(PhoneConfig(profile=PROFILE, accounts=(account,),
                                         registration=settings)) as phone:
        with pytest.raises(NotTlsPeer, match=r"no TLS answer .* within 0\.5 s"):
            await phone.register(timeout=15)
    assert time.monotonic() - started < 5.0
    assert RegistrationSettings().tls_handshake_timeout == 10.0
