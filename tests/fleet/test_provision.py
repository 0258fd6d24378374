"""Fleets that boot like real phones (``provisioning:``), against the lab running the DPMA
emulator in its own process (``phone-sim lab --conf``): mDNS discovery on loopback, the SIP
MESSAGE exchange, HTTP(S) ``<mac>.cfg``; phones that get no configuration, a server that is
down, a plain web server with missing and broken files, a TLS refusal; check-sync; faults;
thresholds on the provisioning metrics."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from phone_sim.fleet import FleetPlan, load_scenario, parse_scenario
from phone_sim.fleet.aio_fleet import FleetRun
from phone_sim.fleet.report import render_report
from phone_sim.lab.aio import Lab
from phone_sim.provisioning.aio_dpma import DpmaEmulator
from phone_sim.provisioning.dpma_conf import read_dpma_conf
from phone_sim.tls.pki import make_server_identity
from tests.fleet.conftest import (
    LAB_USERS,
    PHONE_SIM,
    SCENARIOS,
    DpmaLabInfo,
    fleet_conf,
    mac_of,
    records,
)

pytestmark = pytest.mark.timeout(120)


def _fleet(scenario: str, env: dict[str, str], tmp_path: Path, *args: str
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PHONE_SIM, "fleet", str(SCENARIOS / scenario), "-o", str(tmp_path / "r.jsonl"),
         "--no-live", *args], env=env, capture_output=True, text=True, timeout=100,
        check=False)


def _summary(tmp_path: Path) -> dict[str, object]:
    summary: dict[str, object] = json.loads((tmp_path / "r.summary.json").read_text())
    return summary


def test_the_fixture_conf_is_the_tests_conf() -> None:
    # The lab the tests run serves fleet_conf(200); the fixture is its first 20 phones.
    assert fleet_conf(20) == (SCENARIOS / "lab-boot.conf").read_text()
    conf = read_dpma_conf(SCENARIOS / "lab-boot.conf", passwords=LAB_USERS)
    assert [p.mac for p in conf.phones] == [mac_of(i).replace(":", "") for i in range(20)]


def test_two_hundred_phones_discover_fetch_register_and_call(dpma_lab: DpmaLabInfo,
                                                              tmp_path: Path) -> None:
    done = _fleet("lab-boot.yaml", dpma_lab.env(PHONES="200", CALLS="30", CALLS_START="7"),
                  tmp_path, "--processes", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"provision\.p95 < 3s: [0-9.]+ held", done.stdout), done.stdout
    rs = records(tmp_path / "r.jsonl")
    assert rs[0]["provisioning"] == "mdns"
    provs = [r for r in rs if r["ev"] == "prov"]
    assert len(provs) == 200 and all(r["ok"] for r in provs)
    # Each phone found the lab over mDNS, fetched its own configuration over the SIP
    # exchange, and registers the line the conf gives its MAC.
    for r in provs:
        assert r["via"] == "sip" and r["server"] == dpma_lab.sip_url
        assert 0 <= r["discovery"] < r["latency"]
        assert r["phone"] == str(3000 + int(r["index"])) and r["mac"] == mac_of(r["index"])
    # One browse per shard (docs/load-testing.md): the phones that started before it heard
    # the lab found the server the moment it did; the later ones (if mDNS was quicker than
    # the 2 s ramp) at once, with no mDNS of their own.
    started = {r["mac"]: r["t"] for r in rs if r["ev"] == "prov_start"}
    for shard in (0, 1):
        found = {r["mac"]: (started[r["mac"]], r["discovery"]) for r in provs
                 if r["shard"] == shard}
        heard = min(start + took for start, took in found.values())
        assert heard > min(start for start, _ in found.values())  # mDNS took a while
        for mac, (start, took) in found.items():
            assert start + took - max(start, heard) < 0.3, (mac, start, took, heard)
            if start > heard + 0.05:
                assert took < 0.01, (mac, start, took, heard)
    assert Counter(r["model"] for r in provs) == {"D65 2_9_22": 140, "D45 2_9_2": 60}
    regs = [r for r in rs if r["ev"] == "reg"]
    assert len(regs) == 200 and all(r["ok"] and r["boot"] > r["latency"] for r in regs)
    # Calls go to the number each callee was given, across the two shards.
    shard_of = {r["phone"]: r["shard"] for r in provs}
    calls = [r for r in rs if r["ev"] == "call_end"]
    legs = {r["call_id"]: r for r in rs if r["ev"] == "leg_end"}
    assert len(calls) == 30
    for call in calls:
        assert call["answered"] and "cause" not in call and call["tone_ok"], call
        assert legs[call["call_id"]]["phone"] == call["to"] and legs[call["call_id"]]["dtmf_ok"]
    assert any(shard_of[c["from"]] != shard_of[c["to"]] for c in calls)
    summary = _summary(tmp_path)
    metrics = summary["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["phones.provisioned"] == 200 and metrics["provision.failed"] == 0
    # With the shared browse the phones that start after it heard the lab (often more than
    # half of them) find the server at once: the median may be 0 (the waits are checked above).
    assert 0 <= metrics["discovery.p50"] <= metrics["provision.p50"] < metrics["boot.p50"]
    assert summary["provisioning"] == "mdns" and summary["breached"] == []


async def test_http_form_and_the_d80(dpma_lab: DpmaLabInfo, tmp_path: Path) -> None:
    env = dpma_lab.env(PHONES="60", DPMA_URL=dpma_lab.http_url)
    plan = FleetPlan(load_scenario(SCENARIOS / "lab-boot-url.yaml", env))
    summary = await FleetRun(plan, results=tmp_path / "r.jsonl").run()
    rs = records(tmp_path / "r.jsonl")
    provs = [r for r in rs if r["ev"] == "prov"]
    assert {r["via"] for r in provs} == {"http"} and all(r["ok"] for r in provs)
    assert all(r["discovery"] is None for r in provs)  # the URL was given: no mDNS
    assert Counter(r["model"] for r in provs) == {"D65 2_9_22": 36, "D80 1_12_1": 24}
    assert summary["metrics"]["phones.registered"] == 60
    assert summary["metrics"]["calls.answered"] == 10
    assert summary["metrics"]["discovery.p50"] is None
    assert summary["breached"] == []
    # The report shows the boot: its plot has data, its table the provisioning metrics.
    html = render_report(rs, thresholds=plan.scenario.parsed_thresholds())
    assert "time to configuration" in html and "phones.provisioned" in html
    assert f"booted through provisioning ({dpma_lab.http_url})" in html


def test_phones_without_configuration_fail_on_their_own(dpma_lab: DpmaLabInfo,
                                                        tmp_path: Path) -> None:
    # 30 phones from the 181st MAC: the server knows the first 20 (users 3180-3199), not the
    # last 10. Those are refused (DPMA answers an unknown MAC as a wrong PIN), counted by
    # cause; the run goes on; the calls placed by or to them fail; the thresholds on the
    # provisioning metrics hold or break as they should.
    env = dpma_lab.env(PHONES="30", MAC_FIRST=mac_of(180), CALLS="20", CALLS_FAILED="90%",
                       PROVISION_FAILED="1%", CALLS_START="6")
    done = _fleet("lab-boot.yaml", env, tmp_path)
    assert done.returncode == 1
    assert "provision.failed < 1%: 33.33 % (BREACHED)" in done.stderr
    summary = _summary(tmp_path)
    assert summary["failures"]["provision: refused"] == 10
    metrics = summary["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["phones.provisioned"] == 20 and metrics["phones.registered"] == 20
    assert metrics["register.failed"] == 0.0  # of the phones that had a configuration
    rs = records(tmp_path / "r.jsonl")
    refused = {r["mac"] for r in rs if r["ev"] == "prov" and not r["ok"]}
    assert refused == {mac_of(i) for i in range(200, 210)}
    assert all("unknown phone or wrong PIN" in r["detail"] for r in rs
               if r["ev"] == "prov" and not r["ok"])
    plan = FleetPlan(load_scenario(SCENARIOS / "lab-boot.yaml", env))
    expected = {}
    for call in plan.calls():
        assert call.callee is not None
        expected[call.number] = ("caller not registered" if call.caller >= 20 else
                                 "callee not provisioned" if call.callee >= 20 else None)
    got = {r["call"]: r.get("cause") for r in rs if r["ev"] == "call_end"}
    assert got == expected and any(expected.values()) and None in expected.values()
    assert rs[-1]["ev"] == "end" and rs[-1]["reason"] == "finished"
    # The same run with a bound it meets: it holds.
    ok = _fleet("lab-boot.yaml", {**env, "PROVISION_FAILED": "40%"}, tmp_path)
    assert "provision.failed < 40%: 33.33 held" in ok.stdout, ok.stdout


def test_a_server_that_is_down(dpma_lab: DpmaLabInfo, tmp_path: Path) -> None:
    # Nothing listens on the port once this socket is closed.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for url, cause in ((f"sip:proxy@127.0.0.1:{port};transport=tls", "connection refused"),
                       (f"http://127.0.0.1:{port}/", "connection refused")):
        env = dpma_lab.env(PHONES="10", DPMA_URL=url, CALLS="0")
        done = _fleet("lab-boot-url.yaml", env, tmp_path)
        assert done.returncode == 1, done.stderr
        summary = _summary(tmp_path)
        assert summary["failures"] == {f"provision: {cause}": 10}, summary["failures"]
        rs = records(tmp_path / "r.jsonl")
        assert not [r for r in rs if r["ev"] == "reg"]
        assert rs[-1]["ev"] == "end" and rs[-1]["reason"] == "finished"
        assert "Traceback" not in done.stderr


def test_plain_web_server_404_and_bad_xml(dpma_lab: DpmaLabInfo, tmp_path: Path) -> None:
    # The configurations exported to a plain web server (Python's http.server), as some
    # sites do: two phones have no file (404) and one file is broken.
    files = tmp_path / "www"
    files.mkdir()
    for i in range(12):
        mac = mac_of(i).replace(":", "")
        request = urllib.request.Request(f"{dpma_lab.http_url}{mac}.cfg",
                                         headers={"User-Agent": "Digium D65 2_9_22"})
        with urllib.request.urlopen(request, timeout=10) as response:
            (files / f"{mac}.cfg").write_bytes(response.read())
    for i in (3, 7):
        (files / f"{mac_of(i).replace(':', '')}.cfg").unlink()
    broken = files / f"{mac_of(5).replace(':', '')}.cfg"
    broken.write_bytes(broken.read_bytes()[:200])
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind",
                               "127.0.0.1", "0"], cwd=files, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        port = re.search(r"port ([0-9]+)", server.stdout.readline())
        assert port is not None
        env = dpma_lab.env(PHONES="12", DPMA_URL=f"http://127.0.0.1:{port.group(1)}/",
                           CALLS="0")
        done = _fleet("lab-boot-url.yaml", env, tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert done.returncode == 1
    summary = _summary(tmp_path)
    assert summary["failures"] == {"provision: HTTP 404": 2, "provision: bad config": 1}
    metrics = summary["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["phones.provisioned"] == 9 and metrics["phones.registered"] == 9
    rs = records(tmp_path / "r.jsonl")
    bad = next(r for r in rs if r["ev"] == "prov" and r.get("cause") == "bad config")
    assert bad["mac"] == mac_of(5) and "cannot configure this phone" in bad["detail"]


def test_tls_refusal_of_the_configuration_server(dpma_lab: DpmaLabInfo,
                                                 tmp_path: Path) -> None:
    # The phones trust another CA: a validating firmware refuses the HTTPS server's
    # certificate with its pjlib flags, and the failures are grouped by them.
    other_ca, _chain, _key = make_server_identity(["elsewhere.test"])
    (tmp_path / "other-ca.pem").write_bytes(other_ca)
    env = dpma_lab.env(PHONES="10", DPMA_URL=dpma_lab.https_url, CALLS="0",
                       LAB_CA_FILE=str(tmp_path / "other-ca.pem"))
    done = _fleet("lab-boot-url.yaml", env, tmp_path)
    assert done.returncode == 1
    [(cause, count)] = _summary(tmp_path)["failures"].items()
    assert count == 10
    assert cause.startswith("provision: tls ") and "EUNTRUSTED" in cause.split()[-1].split("|")


async def test_per_phone_browse(dpma_lab: DpmaLabInfo, tmp_path: Path) -> None:
    text = (SCENARIOS / "lab-boot.yaml").read_text().replace(
        '    server: "${DPMA_SERVER:-phone-sim-fleet}"',
        '    server: "${DPMA_SERVER}"\n    browse: phone')
    plan = FleetPlan(parse_scenario(text, environ=dpma_lab.env(PHONES="20", CALLS="4")))
    assert plan.scenario.provisioning is not None
    assert plan.scenario.provisioning.discovery.browse == "phone"
    summary = await FleetRun(plan, results=tmp_path / "r.jsonl").run()
    provs = [r for r in records(tmp_path / "r.jsonl") if r["ev"] == "prov"]
    assert len(provs) == 20 and all(r["ok"] for r in provs)
    # Each phone browsed on its own: none found the server at once, as the phones sharing
    # their shard's browse do once it has heard the lab.
    assert all(r["discovery"] > 0.01 for r in provs)
    assert summary["metrics"]["calls.answered"] == 4


async def test_dropped_connections_go_through_a_relay_per_server(dpma_lab: DpmaLabInfo,
                                                                 tmp_path: Path) -> None:
    text = (f"tls: {{ca_files: ['{dpma_lab.ca_file}']}}\n"
            "phones: {count: 10, mac_first: '00:0f:d3:20:00:00'}\n"
            f"provisioning: {{config_server_url: '{dpma_lab.sip_url}'}}\n"
            "registration: {reconnect_window: 0.5}\n"
            "faults: {drop_connections: [{at: 1.5, share: 50%}]}\n"
            "duration: 4\n")
    plan = FleetPlan(parse_scenario(text))
    await FleetRun(plan, results=tmp_path / "r.jsonl").run()
    rs = records(tmp_path / "r.jsonl")
    assert sum(1 for r in rs if r["ev"] == "reg" and r["ok"]) == 10
    [fault] = [r for r in rs if r["ev"] == "fault"]
    assert fault["dropped"] == 5
    drops = [r for r in rs if r["ev"] == "reg_event" and r["what"] == "dropped"]
    back = [r for r in rs if r["ev"] == "reg_event" and r["what"] == "registered"]
    assert len(drops) == 5 and len(back) >= 5


async def test_check_sync_makes_provisioned_phones_fetch_again(tmp_path: Path) -> None:
    # Lab and emulator in this process, so the test can change the conf and send the
    # NOTIFYs as Asterisk would.
    users = {str(3000 + i): f"secret-{3000 + i}" for i in range(8)}
    ca, chain, key = make_server_identity(["127.0.0.1", "lab.phone-sim.test"])
    (tmp_path / "ca.pem").write_bytes(ca)
    conf = tmp_path / "res_digium_phone.conf"
    conf.write_text(fleet_conf(6))
    async with Lab(users, cert_chain_pem=chain, key_pem=key, ca_pem=ca) as lab:
        emulator = DpmaEmulator(read_dpma_conf(conf, passwords=users), lab,
                                cert_chain_pem=chain, key_pem=key, advertise=False)
        async with emulator:
            text = (f"tls: {{ca_files: ['{tmp_path / 'ca.pem'}']}}\n"
                    "phones: {count: 6, mac_first: '00:0f:d3:20:00:00'}\n"
                    f"provisioning: {{config_server_url: '{emulator.sip_url}'}}\n"
                    "duration: 5\n")
            run = FleetRun(FleetPlan(parse_scenario(text)), results=tmp_path / "r.jsonl")
            task = asyncio.ensure_future(run.run())
            for _ in range(80):
                if run.state.registered == 6:
                    break
                await asyncio.sleep(0.05)
            assert run.state.registered == 6
            # Phone 3000 is given a second line; then the server asks three phones to sync.
            conf.write_text(fleet_conf(6).replace("line=3000\n", "line=3000\nline=3007\n")
                            + "\n[3007](fleet-line)\n")
            assert emulator.dpma is not None
            emulator.dpma.conf = read_dpma_conf(conf, passwords=users)
            for user in ("3000", "3001", "3002"):
                response = await lab.request(user, "NOTIFY", headers=[("Event", "check-sync")])
                assert response.status == 200
            binding = await lab.wait_binding("3007", timeout=5)
            assert binding.flow_alive
            summary = await task
    rs = records(tmp_path / "r.jsonl")
    reprovs = [r for r in rs if r["ev"] == "reprov"]
    assert sorted(r["phone"] for r in reprovs) == ["3000", "3001", "3002"]
    assert all(r["ok"] for r in reprovs)
    assert next(r for r in reprovs if r["phone"] == "3000")["lines"] == 2
    assert summary["metrics"]["reprovisioned"] == 3
