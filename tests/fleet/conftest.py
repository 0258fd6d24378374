"""Fixtures for the fleet tests: the embedded lab in its own process, with the accounts of
``fixtures/scenarios/lab-*.yaml`` (users 3000-3199, password ``secret-<user>``); and the same
lab with the DPMA emulator serving those 200 phones (``lab-boot*.yaml``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "fixtures" / "scenarios"
PHONE_SIM = [sys.executable, "-m", "phone_sim"]
LAB_USERS = {str(n): f"secret-{n}" for n in range(3000, 3200)}


@dataclass(frozen=True)
class LabInfo:
    """A running lab process."""

    port: int
    ca_file: str
    pid: int

    def env(self, **more: str) -> dict[str, str]:
        """The environment a lab scenario needs."""
        env = dict(os.environ)
        env.update(LAB_TLS_PORT=str(self.port), LAB_CA_FILE=self.ca_file,
                   RAY_USAGE_STATS_ENABLED="0")
        env.update(more)
        return env


@dataclass(frozen=True)
class DpmaLabInfo(LabInfo):
    """A running lab with the DPMA emulator (``phone-sim lab --conf``)."""

    sip_url: str
    http_url: str
    https_url: str
    service: str

    def env(self, **more: str) -> dict[str, str]:
        """The environment a ``lab-boot*`` scenario needs (the SIP exchange by default)."""
        values = {"DPMA_SERVER": self.service, "DPMA_URL": self.sip_url}
        values.update(more)
        return super().env(**values)


def _lab_process(*extra: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    args = [*PHONE_SIM, "lab", "--json", "--quiet", "--transport", "tls", "--tls-port", "0",
            "--tcp-port", "0", "--udp-port", "0", *extra]
    for user, password in LAB_USERS.items():
        args += ["--user", f"{user}:{password}"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        err = process.stderr.read() if process.stderr else ""
        process.wait()
        raise RuntimeError(f"the lab did not start: {err}")
    info: dict[str, object] = json.loads(line)
    return process, info


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    """``phone-sim lab`` on TLS, loopback, free port, in another process (one per module)."""
    process, info = _lab_process()
    try:
        ports = info["ports"]
        assert isinstance(ports, dict)
        yield LabInfo(port=ports["tls"], ca_file=str(info["ca_file"]), pid=process.pid)
    finally:
        _stop(process)


#: The first MAC of the DPMA lab's phones (as in fixtures/scenarios/lab-boot.conf).
FIRST_MAC = 0x000FD3200000


def mac_of(index: int) -> str:
    """The MAC of phone *index* of the DPMA lab (``00:0f:d3:20:00:05``)."""
    text = f"{FIRST_MAC + index:012x}"
    return ":".join(text[i:i + 2] for i in range(0, 12, 2))


def fleet_conf(count: int, *, service: str = "phone-sim-fleet",
               skip: Collection[int] = ()) -> str:
    """fixtures/scenarios/lab-boot.conf for *count* phones (user 3000+i, MAC
    ``mac_of(i)``), advertised as *service*; the phones *skip* have no section (the server
    has no configuration for them)."""
    fixture = (SCENARIOS / "lab-boot.conf").read_text()
    head = fixture[: fixture.index("[3000](fleet-line)")]
    head = head.replace("service_name=phone-sim-fleet", f"service_name={service}")
    phones = [f"[{3000 + i}](fleet-line)\n[phone-{3000 + i}](fleet-phone)\n"
              f"mac={mac_of(i)}\nline={3000 + i}\n" for i in range(count) if i not in skip]
    return head + "\n".join(phones)


@pytest.fixture(scope="module")
def dpma_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DpmaLabInfo]:
    """The lab with the DPMA emulator for 200 phones (users 3000-3199), advertised over mDNS
    on 127.0.0.1 under a name of its own (other labs may advertise on the same loopback)."""
    service = f"psim-fleet-{uuid.uuid4().hex[:10]}"
    conf = tmp_path_factory.mktemp("dpma") / "res_digium_phone.conf"
    conf.write_text(fleet_conf(len(LAB_USERS), service=service))
    process, info = _lab_process("--conf", str(conf))
    try:
        ports, dpma = info["ports"], info["dpma"]
        assert isinstance(ports, dict) and isinstance(dpma, dict)
        yield DpmaLabInfo(port=ports["tls"], ca_file=str(info["ca_file"]), pid=process.pid,
                          sip_url=dpma["sip_url"], http_url=dpma["http_url"],
                          https_url=dpma["https_url"], service=service)
    finally:
        _stop(process)


def records(path: Path) -> list[dict[str, object]]:
    """The records of a results file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
