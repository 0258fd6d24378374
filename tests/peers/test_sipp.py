"""SIPp against Kamailio over UDP and TCP: digest registration, right and wrong password."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers._process import PeerError
from tests.peers.kamailio import Kamailio
from tests.peers.plugin import require
from tests.peers.sipp import (
    SippResult,
    SippTransport,
    auth_field,
    run_sipp,
    scenario_path,
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
    trace = (
        "----\nUDP message received [426] bytes :\n\nSIP/2.0 401 Unauthorized\nVia: x\n"
        "----\nUDP message sent (5 bytes):\n\nREGISTER sip:x SIP/2.0\n"
        "----\nUDP message received [400] bytes :\n\nSIP/2.0 200 OK\n"
        "Unexpected UDP message received:\n\nSIP/2.0 200 OK\n"
    )
    result = SippResult(returncode=1, messages=trace, errors="", output="", timed_out=False)
    assert result.received_statuses() == [401, 200]
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
