"""About 200 phones against the embedded lab (in its own process): TLS registration,
phone-to-phone SRTP calls with tone and DTMF checks, thresholds, faults, Ctrl-C and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from phone_sim.fleet import FleetPlan, load_scenario, read_results
from phone_sim.fleet.aio_fleet import FleetRun
from tests.fleet.conftest import PHONE_SIM, SCENARIOS, LabInfo, records

pytestmark = pytest.mark.timeout(120)


async def test_two_hundred_phones_register_and_call(lab: LabInfo, tmp_path: Path) -> None:
    env = lab.env(PHONES="200", CALLS="30")
    plan = FleetPlan(load_scenario(SCENARIOS / "lab-calls.yaml", env))
    results = tmp_path / "r.jsonl"
    summary = await FleetRun(plan, results=results).run()
    rs = records(results)
    regs = [r for r in rs if r["ev"] == "reg"]
    assert len(regs) == 200 and all(r["ok"] for r in regs)
    assert Counter(r["model"] for r in regs) == {"D65 2_9_22": 140, "D80 1_12_1": 60}
    calls = [r for r in rs if r["ev"] == "call_end"]
    legs = {r["call_id"]: r for r in rs if r["ev"] == "leg_end"}
    assert len(calls) == 30
    for call in calls:
        assert call["answered"] and "cause" not in call, call
        assert call["srtp"] and call["tone_ok"], call
        leg = legs[call["call_id"]]  # the far end heard the caller's tone and digits
        assert leg["phone"] == call["to"] and leg["srtp"]
        assert leg["tone_ok"] and leg["dtmf_ok"], leg
        assert leg["received"] > 50 and call["received"] > 50
    assert sum(1 for r in rs if r["ev"] == "unreg" and r["ok"]) == 200
    assert rs[-1]["ev"] == "end" and rs[-1]["reason"] == "finished"
    assert summary["breached"] == []
    assert summary["metrics"]["phones.registered"] == 200
    assert summary["metrics"]["calls.answered"] == 30


def _fleet(scenario: str, env: dict[str, str], tmp_path: Path, *args: str
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PHONE_SIM, "fleet", str(SCENARIOS / scenario), "-o", str(tmp_path / "r.jsonl"),
         *args], env=env, capture_output=True, text=True, timeout=90, check=False)


def test_thresholds_pass_and_fail_with_exit_status(lab: LabInfo, tmp_path: Path) -> None:
    ok = _fleet("lab-register.yaml", lab.env(), tmp_path, "--processes", "2")
    assert ok.returncode == 0, ok.stderr
    assert "register.p95 < 2s" in ok.stdout and "held" in ok.stdout
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["metrics"]["phones.registered"] == 20 and summary["shards"] == 2
    # A bound no TLS registration can meet: breached, named, exit status 1.
    bad = _fleet("lab-register.yaml", lab.env(REGISTER_P95="0.01ms"), tmp_path)
    assert bad.returncode == 1, bad.stderr
    assert "thresholds breached: register.p95 < 0.01ms" in bad.stderr
    assert "BREACHED" in bad.stdout


def test_refused_certificate_is_counted_by_flag_names(lab: LabInfo, tmp_path: Path) -> None:
    # Without the lab's CA the phones refuse its certificate: each failure is counted, named
    # by the pjlib flags, and the run goes on to its end.
    scenario = (SCENARIOS / "lab-register.yaml").read_text().replace(
        'ca_files: ["${LAB_CA_FILE}"]', "ca_files: []")
    path = tmp_path / "untrusted.yaml"
    path.write_text(scenario)
    done = subprocess.run([*PHONE_SIM, "fleet", str(path), "-o", str(tmp_path / "r.jsonl")],
                          env=lab.env(PHONES="10"), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    assert "register.failed < 1%: 100 %" in done.stderr
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    [(cause, count)] = summary["failures"].items()
    assert count == 10
    assert cause.startswith("register: tls ") and "EUNTRUSTED" in cause.split()[-1].split("|")


def test_bad_scenario_exit_status_two(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server: {host: 127.0.0.1}\nphones:\n  count: 0\n"
                    "  accounts: {first: 1, password: x}\n")
    done = subprocess.run([*PHONE_SIM, "fleet", str(path)], capture_output=True, text=True,
                          timeout=30, check=False, cwd=tmp_path)
    assert done.returncode == 2
    assert "bad scenario" in done.stderr
    assert "line 3: phones.count: Input should be greater than or equal to 1" in done.stderr
    assert "Traceback" not in done.stderr


async def test_faults_drops_and_impairment_measured_at_far_end(lab: LabInfo,
                                                               tmp_path: Path) -> None:
    plan = FleetPlan(load_scenario(SCENARIOS / "lab-faults.yaml", lab.env()))
    results = tmp_path / "r.jsonl"
    await FleetRun(plan, results=results).run()
    rs = records(results)
    [fault] = [r for r in rs if r["ev"] == "fault"]
    assert fault["dropped"] == 10
    drops = [r for r in rs if r["ev"] == "reg_event" and r["what"] == "dropped"]
    back = [r for r in rs if r["ev"] == "reg_event" and r["what"] == "registered"]
    assert len(drops) == 10 and len(back) >= 10
    calls = [r for r in rs if r["ev"] == "call_end" and r.get("answered")]
    legs = {r["call_id"]: r for r in rs if r["ev"] == "leg_end"}
    assert len(calls) >= 6
    offered = dropped = measured = expected = 0
    for call in calls:
        leg = legs.get(call["call_id"])
        if leg is None:  # the echo answers with its own numbering: it reveals no loss
            continue
        # Each phone's access network (MediaOptions.impairment) damages what it sends: what
        # it dropped is what the far end counted lost, both ways (but for drops after the
        # last packet the far end got, which no later packet reveals).
        for sender, receiver in ((call, leg), (leg, call)):
            assert 0 <= sender["impaired"]["dropped"] - receiver["lost"] <= 3, (call, leg)
            offered += sender["impaired"]["offered"]
            dropped += sender["impaired"]["dropped"]
            measured += receiver["lost"]
            expected += receiver["lost"] + receiver["received"]
        assert call["impaired"]["reordered"] >= 0 and call["impaired"]["delayed"] > 0
        assert leg["jitter_ms"] > 1.0 and call["jitter_ms"] > 1.0  # 10 ms of jitter set
    assert offered > 500
    assert 0.06 < dropped / offered < 0.14
    assert 0.06 < measured / expected < 0.14


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _wait_lines(path: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count('"call_end"') >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not get {count} calls in {timeout} s")


def test_sigkill_mid_run_leaves_results_report_accepts(lab: LabInfo, tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    process = subprocess.Popen(
        [*PHONE_SIM, "fleet", str(SCENARIOS / "lab-soak.yaml"), "-o", str(results),
         "--processes", "2"], env=lab.env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        _wait_lines(results, 3)
        children = _children(process.pid)
        assert len(children) >= 2
        seen = results.read_text().count("\n")
        time.sleep(1.2)  # what was recorded up to a second ago must survive the kill
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    kept = read_results(results)
    assert not kept.complete and len(kept.records) >= seen
    # The shards notice their parent is gone and stop.
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(c) for c in children)
    report = tmp_path / "report.html"
    done = subprocess.run([*PHONE_SIM, "report", str(results), "-o", str(report)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "the run did not finish" in report.read_text()


def test_ctrl_c_ends_cleanly_and_metrics_are_served(lab: LabInfo, tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    process = subprocess.Popen(
        [*PHONE_SIM, "fleet", str(SCENARIOS / "lab-soak.yaml"), "-o", str(results),
         "--metrics-port", "0"],
        env=lab.env(PHONES="20"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("metrics: http://127.0.0.1:"), first
        _wait_lines(results, 2)
        with urllib.request.urlopen(first.split()[1], timeout=10) as response:
            metrics = response.read().decode()
        assert "phonesim_fleet_phones 20.0" in metrics
        assert "phonesim_fleet_calls_answered_total" in metrics
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode in (0, 1), err
    rs = records(results)
    assert rs[-1]["ev"] == "end" and rs[-1]["reason"] == "interrupted"
    assert sum(1 for r in rs if r["ev"] == "unreg" and r["ok"]) == 20
    assert "(stopped: interrupted)" in out
    assert rs[-1]["t"] < 20
