"""Shards as Ray actors: a private local Ray on 127.0.0.1 (no dashboard, usage statistics
off) gives the same totals as one process for a scenario driven by counts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fleet.conftest import PHONE_SIM, SCENARIOS, DpmaLabInfo, LabInfo

pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(240)

TOTALS = ("phones.registered", "calls.attempted", "calls.answered", "register.failed",
          "calls.failed", "tones.failed", "dtmf.failed")


def _run(lab: LabInfo, tmp_path: Path, name: str, *args: str) -> dict[str, object]:
    env = lab.env(PHONES="40", CALLS="12")
    env.pop("RAY_ADDRESS", None)  # never join someone else's cluster
    results = tmp_path / f"{name}.jsonl"
    done = subprocess.run([*PHONE_SIM, "fleet", str(SCENARIOS / "lab-calls.yaml"), "-o",
                           str(results), "--no-live", *args], env=env, capture_output=True,
                          text=True, timeout=200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, object] = json.loads(
        (tmp_path / f"{name}.summary.json").read_text())
    return summary


def test_two_ray_shards_same_totals_as_one_process(lab: LabInfo, tmp_path: Path) -> None:
    single = _run(lab, tmp_path, "single")
    ray = _run(lab, tmp_path, "ray", "--ray", "auto", "--processes", "2")
    assert ray["shards"] == 2 and single["shards"] == 1
    m1, m2 = single["metrics"], ray["metrics"]
    assert isinstance(m1, dict) and isinstance(m2, dict)
    assert {k: m2[k] for k in TOTALS} == {k: m1[k] for k in TOTALS}
    assert m1["calls.answered"] == 12 and m1["phones.registered"] == 40
    records = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert records[0]["backend"] == "ray"
    assert {r["shard"] for r in records if r["ev"] == "reg"} == {0, 1}
    # Calls crossed shards: a caller in one actor reached a phone run by the other.
    shard_of = {r["phone"]: r["shard"] for r in records if r["ev"] == "reg"}
    crossing = [r for r in records if r["ev"] == "call_end" and r["answered"]
                and shard_of[r["from"]] != shard_of[r["to"]]]
    assert crossing


def test_ray_shards_boot_through_provisioning(dpma_lab: DpmaLabInfo, tmp_path: Path) -> None:
    # Each actor boots its own phones from the DPMA emulator; a caller dials the number the
    # other actor's phone was given, which this process passed on to it.
    env = dpma_lab.env(PHONES="40", CALLS="12")
    env.pop("RAY_ADDRESS", None)
    results = tmp_path / "r.jsonl"
    done = subprocess.run([*PHONE_SIM, "fleet", str(SCENARIOS / "lab-boot-url.yaml"), "-o",
                           str(results), "--no-live", "--ray", "auto", "--processes", "2"],
                          env=env, capture_output=True, text=True, timeout=200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["metrics"]["phones.provisioned"] == 40
    assert summary["metrics"]["calls.answered"] == 12
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert records[0]["backend"] == "ray"
    shard_of = {r["phone"]: r["shard"] for r in records if r["ev"] == "prov"}
    assert set(shard_of.values()) == {0, 1}
    assert [r for r in records if r["ev"] == "call_end" and r["answered"]
            and shard_of[r["from"]] != shard_of[r["to"]]]


LOOPBACK_CHECK = """
import subprocess
from phone_sim.fleet.aio_ray import _connect
_connect("auto", 2)  # before anything imports ray, as in phone-sim fleet --ray auto
import ray
@ray.remote
class Probe:
    def ping(self): return 1
ray.get(Probe.remote().ping.remote())
pids = set(subprocess.run(["pgrep", "-s", "0"], capture_output=True, text=True).stdout.split())
out = subprocess.run(["ss", "-tuanp"], capture_output=True, text=True).stdout
for line in out.splitlines()[1:]:
    if any(f"pid={p}," in line for p in pids):
        print(line.split()[4], line.split()[5])
ray.shutdown()
"""


def test_private_ray_stays_on_loopback() -> None:
    import os
    import sys

    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", LOOPBACK_CHECK], env=env, capture_output=True,
                          text=True, timeout=200, check=False, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    sockets = [line.split() for line in done.stdout.splitlines() if line.strip()]
    assert len(sockets) > 5  # Ray's processes were seen
    for local, peer in sockets:
        for address in (local, peer):
            host = address.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")
            assert host in ("127.0.0.1", "*", "0.0.0.0") or host.startswith("127."), (
                local, peer)
            assert host not in ("*", "0.0.0.0") or address == peer, (local, peer)
