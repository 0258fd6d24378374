"""SIPp against Kamailio over UDP and TCP: digest registration, right and wrong password."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from phone_sim.testing.aio_baresip import Baresip
from phone_sim.testing.aio_kamailio import Kamailio, KamailioConfig, SipUser, make_users
from phone_sim.testing.aio_ports import free_port
from phone_sim.testing.aio_process import PeerError
from phone_sim.testing.aio_pytest_peers import BaresipFactory, KamailioFactory, require
from phone_sim.testing.aio_sipp import (
    SippResult,
    SippTransport,
    auth_field,
    run_sipp,
    scenario_path,
    sdes_crypto_line,
    write_injection,
)


def test_injection_refuses_separators(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="may not hold"):
        write_injection(tmp_path / "x.csv", [["a;b"]])
    path = write_injection(tmp_path / "ok.csv", [["101", "pbx.test"]])
    assert path.read_text() == "SEQUENTIAL\n101;pbx.test;\n"
    with pytest.raises(ValueError, match="authentication"):
        auth_field("101", "pass word")


def test_unknown_scenario_is_named() -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.xml"):
        scenario_path("nope")


def test_result_lists_received_statuses_and_explains_failure() -> None:
    sep = "----------------------------------------------- 2026-11-28 06:14:29.036392\n"
    trace = (
        f"{sep}UDP message received [426] bytes :\n\nSIP/2.0 401 Unauthorized\nVia: x\n\n"
        f"{sep}UDP message sent (5 bytes):\n\nREGISTER sip:x SIP/2.0\n\n"
        f"{sep}UDP message received [400] bytes :\n\nSIP/2.0 200 OK\n\n"
        "-----------------------------------------------\n"
        "Unexpected UDP message received:\n\nSIP/2.0 200 OK\n\n"
    )
    result = SippResult(returncode=1, messages=trace, errors="", output="", timed_out=False)
    assert result.received_statuses() == [401, 200]
    assert [m.splitlines()[0] for m in result.received_messages()] == [
        "SIP/2.0 401 Unauthorized", "SIP/2.0 200 OK"
    ]
    assert not result.ok
    with pytest.raises(PeerError, match=r"sipp exited 1 \(at least one call failed\)"):
        result.check()


async def _register(
    kam: Kamailio, tmp_path: Path, transport: SippTransport, password: str
) -> SippResult:
    require("sipp")
    return await run_sipp(
        "register", (kam.host, kam.port(transport)), workdir=tmp_path, transport=transport,
        inject=[["101", auth_field("101", password), kam.domain, "30"]], timeout=4,
    )


@pytest.mark.peer
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_registers_with_digest(
    kamailio: Kamailio, tmp_path: Path, transport: SippTransport
) -> None:
    result = await _register(kamailio, tmp_path, transport, kamailio.user("101").password)
    result.check()
    assert result.received_statuses() == [401, 200]
    (binding,) = kamailio.ul_dump()
    assert binding.aor == "101"
    assert binding.socket == f"{transport}:127.0.0.1:{kamailio.port(transport)}"
    assert binding.expires in range(25, 31)
    assert binding.user_agent == "SIPp phone-sim-test"


@pytest.mark.peer
async def test_wrong_password_is_challenged_again_and_fails(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    result = await _register(kamailio, tmp_path, "udp", "not-the-password")
    assert not result.ok
    assert result.returncode == 1
    assert result.received_statuses()[:2] == [401, 401]
    assert "401 Unauthorized" in result.errors
    assert kamailio.ul_dump() == []
    assert "auth failed for '101'" in kamailio.log_text()


@pytest.mark.peer
async def test_expires_are_clamped_to_the_configured_maximum(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    require("sipp")
    result = await run_sipp(
        "register", (kamailio.host, kamailio.udp_port), workdir=tmp_path,
        inject=[["102", auth_field("102", kamailio.user("102").password), kamailio.domain,
                 "86400"]], timeout=4,
    )
    result.check()
    (binding,) = kamailio.ul_dump()
    assert binding.expires <= kamailio.config.max_expires


def test_sdes_crypto_line_is_fresh_and_sized() -> None:
    line = sdes_crypto_line()
    assert line.startswith("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
    key = base64.b64decode(line.rsplit(":", 1)[1])
    assert len(key) == 30
    assert line != sdes_crypto_line()
    assert len(base64.b64decode(sdes_crypto_line("AES_256_CM_HMAC_SHA1_80").split(":")[-1])) == 46
    with pytest.raises(ValueError, match="unknown SDES"):
        sdes_crypto_line("NULL")


@pytest.fixture
async def auto_answer_phone(kamailio: Kamailio, baresip_factory: BaresipFactory) -> Baresip:
    """baresip 101, registered over TLS and answering by itself, as SIPp's target phone."""
    phone = baresip_factory(kamailio, "101", answermode="auto")
    await phone.wait_registered()
    return phone


@pytest.mark.peer
@pytest.mark.parametrize(
    ("scenario", "keys", "statuses"),
    [
        ("options", {}, [200]),
        ("invite_refused", {"profile": "RTP/AVP", "crypto": "a=ptime:20"}, [488]),
        ("invite_answered", {"profile": "RTP/SAVP", "crypto": "SDES_80"}, [200]),
    ],
    ids=["options-200", "rtp-avp-488", "savp-80-answered-then-bye"],
)
async def test_sipp_scenarios_against_a_phone_over_udp(
    auto_answer_phone: Baresip,
    tmp_path: Path,
    scenario: str,
    keys: dict[str, str],
    statuses: list[int],
) -> None:
    require("sipp")
    keys = {k: sdes_crypto_line() if v == "SDES_80" else v for k, v in keys.items()}
    result = await run_sipp(
        scenario, ("127.0.0.1", auto_answer_phone.sip_port), workdir=tmp_path,
        service="101", keys=keys, timeout=5,
    )
    result.check()
    final = [s for s in result.received_statuses() if s >= 200]
    assert final[0] == statuses[0]
    if scenario == "invite_answered":
        assert "BYE sip:" in result.messages
        (answer,) = {
            m for m in result.received_messages()
            if m.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in m
        }
        assert "m=audio" in answer and "RTP/SAVP" in answer
        assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in answer
        await auto_answer_phone.wait_event("CALL_CLOSED")


@pytest.mark.peer
async def test_malformed_request_gets_400_and_the_proxy_keeps_routing(
    kamailio_factory: KamailioFactory, baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    # Kamailio answers the broken From with 400 itself; the following OPTIONS for 101 is
    # routed (unauthenticated, as from the PBX) over baresip's own TLS connection and
    # baresip answers 200.
    kam = kamailio_factory()
    phone = baresip_factory(kam, "101")
    await phone.wait_registered()
    await kam.wait_bindings("101")
    require("sipp")
    result = await run_sipp(
        "malformed_request", (kam.host, kam.udp_port), workdir=tmp_path, service="101",
        timeout=5,
    )
    result.check()
    assert result.received_statuses() == [400, 200]
    assert "400 Invalid From Header" in result.messages
    assert "Server: baresip" in result.messages.rsplit("SIP/2.0 200", 1)[1]


@pytest.mark.peer
async def test_notify_check_sync_reaches_the_phone_over_its_own_connection(
    kamailio: Kamailio, baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    # baresip 1.0 refuses an out-of-dialog NOTIFY with 481 (a D-series phone answers 200 and
    # re-provisions), so this proves the scenario and the route, not the phone's answer.
    phone = baresip_factory(kamailio, "101")
    await phone.wait_registered()
    require("sipp")
    result = await run_sipp(
        "notify_check_sync", (kamailio.host, kamailio.udp_port), workdir=tmp_path,
        service="101", timeout=5,
    )
    assert not result.ok
    assert result.received_statuses() == [481]
    (answer,) = result.received_messages()
    assert "Server: baresip" in answer
    assert "NOTIFY sip:101@" in result.messages and "Event: check-sync" in result.messages


async def _run_100rel(target_port: int, tmp_path: Path, rel: str) -> SippResult:
    return await run_sipp(
        "invite_100rel", ("127.0.0.1", target_port), workdir=tmp_path / "uac", service="101",
        keys={"profile": "RTP/SAVP", "crypto": sdes_crypto_line(), "rel": rel}, timeout=5,
    )


@pytest.mark.peer
@pytest.mark.parametrize("rel", ["Require", "Supported"])
async def test_prack_scenario_passes_against_a_reliable_answerer(tmp_path: Path, rel: str) -> None:
    require("sipp")
    uas_port = free_port()
    uas = asyncio.create_task(
        run_sipp("uas_100rel", ("127.0.0.1", 9), workdir=tmp_path / "uas",
                 local_port=uas_port, service="101", timeout=6)
    )
    try:
        uac = await _run_100rel(uas_port, tmp_path, rel)
    finally:
        answerer = await uas
    uac.check()
    answerer.check()
    assert uac.received_statuses() == [180, 200, 200, 200]  # 180, PRACK 200, INVITE 200, BYE
    prack = next(m for m in answerer.received_messages() if m.startswith("PRACK "))
    assert "RAck: 1 1 INVITE" in prack


@pytest.mark.peer
@pytest.mark.parametrize("rel", ["Require", "Supported"])
async def test_prack_scenario_fails_against_baresip_without_100rel(
    auto_answer_phone: Baresip, tmp_path: Path, rel: str
) -> None:
    # The negative control: baresip 1.0 has no RFC 3262, so the scenario must fail on it.
    result = await _run_100rel(auto_answer_phone.sip_port, tmp_path, rel)
    assert not result.ok
    if rel == "Require":
        assert 420 in result.received_statuses()  # Bad Extension
    else:
        assert "RSeq: not found" in result.errors  # an unreliable 180


@pytest.mark.peer
async def test_many_distinct_users_register_over_tcp(
    kamailio_factory: KamailioFactory, tmp_path: Path
) -> None:
    require("sipp")
    users = make_users(300)
    kam = kamailio_factory(KamailioConfig(users=users))
    result = await run_sipp(
        "register", (kam.host, kam.tcp_port), workdir=tmp_path, transport="tcp",
        inject=[[u.user, auth_field(u.user, u.password), kam.domain, "60"] for u in users],
        calls=len(users), rate=1000, timeout=30,
    )
    result.check()
    # 300 bindings are past kamcmd's 64 KB reply limit: the JSON-RPC FIFO still dumps them.
    assert sorted(b.aor for b in kam.ul_dump()) == sorted(u.user for u in users)
    with pytest.raises(PeerError, match="reply too big"):
        kam.ul_dump_kamcmd()
    assert [b.aor for b in kam.bindings("1299")] == ["1299"]


@pytest.mark.peer
async def test_a_distinct_auth_name_registers_only_its_own_user(
    kamailio_factory: KamailioFactory, tmp_path: Path
) -> None:
    require("sipp")
    kam = kamailio_factory(KamailioConfig(users=(
        SipUser(user="201", password="pw-201", authname="auth201"),
        SipUser(user="202", password="pw-202"),
    )))

    async def register(user: str, authname: str, password: str) -> SippResult:
        return await run_sipp(
            "register", (kam.host, kam.udp_port), workdir=tmp_path / f"{user}-{authname}",
            inject=[[user, auth_field(authname, password), kam.domain, "30"]], timeout=4,
        )

    (await register("201", "auth201", "pw-201")).check()
    assert [b.aor for b in kam.ul_dump()] == ["201"]
    stolen = await register("202", "auth201", "pw-201")  # right password, wrong user
    assert stolen.received_statuses()[:2] == [401, 403]
    assert [b.aor for b in kam.ul_dump()] == ["201"]


@pytest.mark.peer
async def test_a_silent_target_fails_on_the_timeout(tmp_path: Path) -> None:
    require("sipp")
    silent = free_port()  # nothing listens: SIPp retransmits until its global timeout
    result = await run_sipp(
        "options", ("127.0.0.1", silent), workdir=tmp_path, service="101", timeout=1
    )
    assert not result.ok
    assert result.received_statuses() == []
    assert "timed out" in result.errors or "timeout" in result.output.lower()
    with pytest.raises(PeerError, match="sipp exited"):
        result.check()
    with pytest.raises(ValueError, match="loopback"):
        await run_sipp("options", ("192.0.2.1", 5060), workdir=tmp_path)
