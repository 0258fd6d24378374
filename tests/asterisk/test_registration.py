"""Phones register to a real Asterisk 22 over TLS, as each firmware class would, and refuse
it with the firmware's bitmask when its certificate names another host or comes from a CA
the phone does not know."""

from __future__ import annotations

import pytest

from phone_sim import SipTransport, TlsRefused, TrustStore, build_phone
from phone_sim.firmware import FIRMWARE_CLASSES, FirmwareClass
from phone_sim.testing.aio_asterisk import Asterisk
from phone_sim.tls.flags import CertVerifyFlag
from tests.asterisk.conftest import PhoneFactory, phone_config

pytestmark = [pytest.mark.asterisk, pytest.mark.peer, pytest.mark.timeout(60)]

TLS_CLASSES = [c for c in FIRMWARE_CLASSES if c.profile.tls_supported]
VALIDATING = [c for c in TLS_CLASSES if c.profile.validates_server]
NOT_VALIDATING = [c for c in TLS_CLASSES if not c.profile.validates_server]


def _ids(classes: list[FirmwareClass]) -> list[str]:
    return [c.id for c in classes]


async def _contacts(pbx: Asterisk, user: str) -> str:
    return pbx.cli(f"pjsip show aor {user}")


@pytest.mark.parametrize("fw", TLS_CLASSES, ids=_ids(TLS_CLASSES))
async def test_every_tls_firmware_registers_over_tls(
    asterisk: Asterisk, phones: PhoneFactory, fw: FirmwareClass
) -> None:
    phone = await phones("101", profile=fw.profile)
    assert phone.registered
    # Asterisk holds the binding, rewritten to the connection the phone registered on.
    aor = await _contacts(asterisk, "101")
    assert "sip:101@127.0.0.1" in aor, aor
    assert "transport=tls" in aor.lower() or "transport=TLS" in aor, aor
    await phone.unregister()
    assert "sip:101@" not in await _contacts(asterisk, "101")


async def test_firmware_without_tls_registers_over_udp(
    asterisk: Asterisk, phones: PhoneFactory
) -> None:
    no_tls = next(c for c in FIRMWARE_CLASSES if not c.profile.tls_supported)
    phone = await phones("102", profile=no_tls.profile, transport=SipTransport.UDP)
    assert phone.registered
    assert "sip:102@127.0.0.1" in await _contacts(asterisk, "102")


@pytest.mark.parametrize("fw", VALIDATING, ids=_ids(VALIDATING))
async def test_a_certificate_for_another_name_is_refused_with_its_bitmask(
    asterisk: Asterisk, fw: FirmwareClass
) -> None:
    # The phone is configured with a name the certificate does not carry.
    config = phone_config(asterisk, "103", profile=fw.profile,
                          server_name="other.phone-sim.test")
    async with build_phone(config) as phone:
        with pytest.raises(TlsRefused) as info:
            await phone.register(timeout=10)
    assert info.value.bitmask == CertVerifyFlag.EIDENTITY_NOT_MATCH
    assert "0x40000000" in str(info.value)
    assert "sip:103@" not in await _contacts(asterisk, "103")


@pytest.mark.parametrize("fw", VALIDATING, ids=_ids(VALIDATING))
async def test_a_certificate_from_an_unknown_ca_is_refused_with_its_bitmask(
    asterisk: Asterisk, fw: FirmwareClass
) -> None:
    # The phone has only the public roots: Asterisk's private CA was never loaded onto it.
    config = phone_config(asterisk, "104", profile=fw.profile, trust=TrustStore())
    async with build_phone(config) as phone:
        with pytest.raises(TlsRefused) as info:
            await phone.register(timeout=10)
    assert info.value.bitmask == CertVerifyFlag.EISSUER_MISMATCH | CertVerifyFlag.EUNTRUSTED
    assert "0x00000022" in str(info.value)
    assert "sip:104@" not in await _contacts(asterisk, "104")


@pytest.mark.parametrize("fw", NOT_VALIDATING, ids=_ids(NOT_VALIDATING))
async def test_firmware_before_validation_registers_despite_name_and_ca(
    asterisk: Asterisk, phones: PhoneFactory, fw: FirmwareClass
) -> None:
    phone = await phones("105", profile=fw.profile, trust=TrustStore(),
                         server_name="other.phone-sim.test")
    assert phone.registered
    assert "sip:105@127.0.0.1" in await _contacts(asterisk, "105")


async def test_a_wrong_password_is_refused_by_asterisk(asterisk: Asterisk) -> None:
    from dataclasses import replace

    from phone_sim import RemoteError

    config = phone_config(asterisk, "106")
    bad = replace(config, accounts=(replace(config.accounts[0], password="not-1234"),))
    async with build_phone(bad) as phone:
        with pytest.raises(RemoteError) as info:
            await phone.register(timeout=10)
    assert getattr(info.value, "status", None) in (401, 403)
    assert "not-1234" not in str(info.value)
