"""phone-sim's own Phone (issue #4 part A) against the lab: register over TLS with the lab's
generated CA, then the lab reaches the phone over the phone's connection."""

from __future__ import annotations

import asyncio

import pytest

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.firmware import profile_for
from phone_sim.lab import BindingRemoved, Lab
from phone_sim.phone import Phone, RegistrationSettings, ReprovisionRequested
from phone_sim.phone.config import PhoneConfig
from phone_sim.tls.client import TrustStore
from phone_sim.tls.verdict import TlsRefused

PROFILE = profile_for("D65", "2_9_22")
FAST = RegistrationSettings(register_timeout=5.0, unregister_timeout=2.0)


def _account(lab: Lab, transport: SipTransport, password: str = "1234") -> Account:
    return Account(
        username="101",
        password=password,
        host_primary=SipHost(
            server=lab.host, port=lab.ports[transport.value], transport=transport, retry=0.5
        ),
        domain=lab.server_name,
        server_name=lab.server_name,
    )


@pytest.mark.parametrize("transport", [SipTransport.TLS, SipTransport.TCP, SipTransport.UDP])
async def test_phone_registers_and_the_lab_reaches_it(transport: SipTransport) -> None:
    async with Lab({"101": "1234"}) as lab:
        trust = TrustStore.from_pem(lab.ca_pem, public_roots=False)
        async with Phone(PhoneConfig(
            profile=PROFILE, accounts=(_account(lab, transport),), trust=trust,
            registration=FAST)) as phone:
            await phone.register(timeout=10)
            binding = await lab.wait_binding("101")
            assert str(binding.uri) == phone.contact
            assert binding.flow.transport == transport.value.upper()
            # Asterisk-style requests over the phone's own connection.
            events = phone.events()
            options = await lab.request("101", "OPTIONS", timeout=5)
            assert options.status == 200
            notify = await lab.request(
                "101",
                "NOTIFY",
                headers=[("Event", "check-sync"), ("Subscription-State", "terminated")],
                timeout=5,
            )
            assert notify.status == 200
            async with asyncio.timeout(5):
                async for event in events:
                    if isinstance(event, ReprovisionRequested):
                        break
        # Leaving the block unregistered the phone.
        assert any(isinstance(e, BindingRemoved) for e in lab.events)
        assert lab.bindings("101") == []


async def test_validating_phone_refuses_a_lab_it_was_not_given_the_ca_of() -> None:
    async with Lab({"101": "1234"}, transports=["tls"]) as lab:
        account = _account(lab, SipTransport.TLS)
        phone = Phone(PhoneConfig(
            profile=PROFILE, accounts=(account,), trust=TrustStore(public_roots=False),
            registration=FAST))
        async with phone:
            with pytest.raises(TlsRefused) as info:
                await phone.register(timeout=10)
        assert info.value.bitmask & 0x2  # EUNTRUSTED
        assert lab.bindings("101") == []
