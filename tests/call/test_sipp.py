"""SIPp (UDP) sends INVITEs to a phone-sim phone (a :class:`UdpCallAgent` on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from phone_sim.call.session import CallConfig
from phone_sim.phone.aio_agent import UdpCallAgent
from phone_sim.testing.aio_ports import free_port
from phone_sim.testing.aio_pytest_peers import require
from phone_sim.testing.aio_sipp import SippResult, run_sipp, sdes_crypto_line

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

CALL_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "call"


@pytest.fixture
async def phone() -> AsyncIterator[UdpCallAgent]:
    require("sipp")
    async with UdpCallAgent("127.0.0.1", user="101", auto_answer=True) as agent:
        yield agent


async def _run(phone: UdpCallAgent, scenario: str | Path, tmp_path: Path,
               keys: dict[str, str]) -> SippResult:
    return await run_sipp(scenario, ("127.0.0.1", phone.port), workdir=tmp_path,
                          service="101", keys=keys, timeout=8)


def _final(result: SippResult) -> int:
    return next(s for s in result.received_statuses() if s >= 200)


@pytest.mark.parametrize(
    ("keys", "warning"),
    [
        ({"profile": "RTP/AVP", "crypto": "a=ptime:20"}, "RTP/AVP"),
        ({"profile": "RTP/SAVP", "crypto": sdes_crypto_line("AES_CM_128_HMAC_SHA1_32")}, "_32"),
    ],
    ids=["rtp-avp", "savp-only-32"],
)
async def test_unacceptable_offers_get_488_with_warning(
    phone: UdpCallAgent, tmp_path: Path, keys: dict[str, str], warning: str
) -> None:
    result = (await _run(phone, "invite_refused", tmp_path, keys)).check()
    assert _final(result) == 488
    (refusal,) = [m for m in result.received_messages() if m.startswith("SIP/2.0 488")]
    assert "Warning: 399 127.0.0.1" in refusal and warning in refusal
    assert phone.refused == {488: 1}


async def test_correct_offer_is_answered_then_ack_and_bye(
    phone: UdpCallAgent, tmp_path: Path
) -> None:
    keys = {"profile": "RTP/SAVP", "crypto": sdes_crypto_line()}
    result = (await _run(phone, "invite_answered", tmp_path, keys)).check()
    assert _final(result) == 200
    (answer,) = [m for m in result.received_messages()
                 if m.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in m]
    assert "RTP/SAVP" in answer and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in answer
    assert "Session-Expires" not in answer  # SIPp did not offer timer
    assert any(m.startswith("SIP/2.0 200") and "CSeq: 2 BYE" in m
               for m in result.received_messages())


async def test_malformed_sdp_gets_400_and_the_phone_keeps_working(
    phone: UdpCallAgent, tmp_path: Path
) -> None:
    result = (await _run(phone, CALL_FIXTURES / "invite_malformed_sdp.xml", tmp_path / "bad",
                         {})).check()
    assert _final(result) == 400
    keys = {"profile": "RTP/SAVP", "crypto": sdes_crypto_line()}
    again = (await _run(phone, "invite_answered", tmp_path / "good", keys)).check()
    assert _final(again) == 200


@pytest.mark.parametrize("rel", ["Require", "Supported"])
async def test_reliable_provisional_and_prack(tmp_path: Path, rel: str) -> None:
    require("sipp")
    # With only "Supported: 100rel" the phone sends its 180 reliably when configured to.
    config = CallConfig(prefer_100rel=rel == "Supported")
    async with UdpCallAgent("127.0.0.1", user="101", auto_answer=True,
                            config=config) as phone:
        keys = {"profile": "RTP/SAVP", "crypto": sdes_crypto_line(), "rel": rel}
        result = (await _run(phone, "invite_100rel", tmp_path, keys)).check()
    messages = result.received_messages()
    (ringing,) = [m for m in messages if m.startswith("SIP/2.0 180")][:1]
    assert "Require: 100rel" in ringing and "RSeq:" in ringing
    assert any(m.startswith("SIP/2.0 200") and "PRACK" in m for m in messages)
    assert _final(result) == 200


async def test_phone_sim_pracks_a_reliable_180_from_sipp(tmp_path: Path) -> None:
    require("sipp")
    uas_port = free_port()
    uas = asyncio.create_task(run_sipp(
        CALL_FIXTURES / "uas_100rel_answer.xml", ("127.0.0.1", 9), workdir=tmp_path,
        local_port=uas_port, service="102", keys={"crypto": sdes_crypto_line()}, timeout=8,
    ))
    try:
        await asyncio.sleep(0.5)  # SIPp binds its port
        async with UdpCallAgent("127.0.0.1", user="101") as phone:
            call = await phone.dial(f"sip:102@127.0.0.1:{uas_port}")
            await call.wait_answered(timeout=8)
            assert call.progress == [180]
            assert call.negotiated is not None and call.negotiated.encrypted
            await call.hangup()
    finally:
        answerer = await uas
    answerer.check()
    prack = next(m for m in answerer.received_messages() if m.startswith("PRACK "))
    invite = next(m for m in answerer.received_messages() if m.startswith("INVITE "))
    cseq = next(line.split()[1] for line in invite.splitlines() if line.startswith("CSeq:"))
    assert f"RAck: 1 {cseq} INVITE" in prack
    assert "Supported: 100rel, timer" in invite
