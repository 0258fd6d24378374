"""A third-party phone registers to the lab: baresip 1.0 from Debian, over TLS, TCP and UDP."""

from __future__ import annotations

from pathlib import Path

import pytest

from phone_sim.lab import BindingAdded, BindingRefreshed, Lab, LabUser, RegistrationRefused
from tests.peers.audio import write_tone_wav
from tests.peers.baresip import Baresip, BaresipAccount, BaresipTransport
from tests.peers.plugin import require


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


async def test_baresip_with_a_wrong_password_is_refused(tmp_path: Path) -> None:
    users = [LabUser(username="101", password="1234", authname="auth101")]
    async with Lab(users, transports=["tls"]) as lab:
        phone = _baresip(tmp_path, lab, "tls", password="wrong")
        phone.start()
        try:
            event = await lab.wait_event(lambda e: isinstance(e, RegistrationRefused), timeout=10)
            assert isinstance(event, RegistrationRefused) and event.status == 401
            assert not await phone.is_registered()
            assert lab.bindings("101") == []
        finally:
            await phone.aclose()
