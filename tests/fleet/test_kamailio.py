"""The small fleet against Kamailio (TLS registrations, SRTP calls between the phones through
it), with baresip answering some of the calls."""

from __future__ import annotations

import pytest

from phone_sim.fleet import FleetPlan, load_scenario
from phone_sim.fleet.aio_fleet import FleetRun
from phone_sim.testing.aio_kamailio import KamailioConfig, SipUser, make_users
from phone_sim.testing.aio_pytest_peers import BaresipFactory, KamailioFactory
from phone_sim.testing.certs import TestPki
from tests.fleet.conftest import SCENARIOS

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]

BARESIP_USER = "4999"


async def test_fleet_against_kamailio_with_baresip(
    kamailio_factory: KamailioFactory, baresip_factory: BaresipFactory, peer_pki: TestPki,
    tmp_path: object,
) -> None:
    users = (*make_users(200, first=4000), SipUser(user=BARESIP_USER, password="pw-4999"))
    kam = kamailio_factory(KamailioConfig(users=users))
    baresip = baresip_factory(kam, BARESIP_USER, tone_hz=1500.0, answermode="auto")
    await baresip.wait_registered(timeout=15)
    env = {"KAMAILIO_TLS_PORT": str(kam.tls_port), "KAMAILIO_CA_FILE": str(peer_pki.ca.cert),
           "BARESIP_USER": BARESIP_USER}
    plan = FleetPlan(load_scenario(SCENARIOS / "kamailio-baresip.yaml", env))
    collected: list[dict[str, object]] = []
    run = FleetRun(plan, results=None, on_record=collected.append)
    summary = await run.run()
    regs = [r for r in collected if r["ev"] == "reg"]
    assert len(regs) == 200 and all(r["ok"] for r in regs)
    calls = [r for r in collected if r["ev"] == "call_end"]
    assert len(calls) == 10
    to_baresip = [c for c in calls if c["to"] == BARESIP_USER]
    to_fleet = [c for c in calls if c["to"] != BARESIP_USER]
    assert to_baresip and to_fleet
    for call in calls:
        assert call["answered"] and call["srtp"] and call["tone_ok"], str(call)
    legs = {r["call_id"]: r for r in collected if r["ev"] == "leg_end"}
    for call in to_fleet:
        assert legs[call["call_id"]]["tone_ok"]
    assert summary["breached"] == []
