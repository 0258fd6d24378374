"""Fixtures for the fleet tests: the embedded lab in its own process, with the accounts of
``fixtures/scenarios/lab-*.yaml`` (users 3000-3199, password ``secret-<user>``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers.plugin import *  # noqa: F403  (Kamailio, baresip)

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


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    """``phone-sim lab`` on TLS, loopback, free port, in another process (one per module)."""
    args = [*PHONE_SIM, "lab", "--json", "--quiet", "--transport", "tls", "--tls-port", "0",
            "--tcp-port", "0", "--udp-port", "0"]
    for user, password in LAB_USERS.items():
        args += ["--user", f"{user}:{password}"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            err = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"the lab did not start: {err}")
        info = json.loads(line)
        yield LabInfo(port=info["ports"]["tls"], ca_file=info["ca_file"], pid=process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def records(path: Path) -> list[dict[str, object]]:
    """The records of a results file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
