"""docker-compose.yml run on this machine, which has no container engine: the commands of its
certs, asterisk-config, asterisk, lab and phones services, exactly as the file and
Dockerfile.asterisk give them, with a free loopback port for each standard one, 127.0.0.1 for
each service name and a private directory for each volume, against the real Asterisk 22 the
image builds. A phone boots from the lab, registers to Asterisk with what the lab handed out,
and hears its tone back from Asterisk's echo at 600: that is what makes the compose file
trustworthy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from phone_sim.testing.aio_asterisk import AsteriskInstall
from phone_sim.testing.aio_ports import free_port, free_port_run, release_ports
from phone_sim.testing.aio_process import PeerProcess, tail

pytestmark = [pytest.mark.asterisk, pytest.mark.peer, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
LOOPBACK = "127.0.0.1"
SERVICE_NAMES = ("asterisk", "lab")
#: The image's entry points, as this machine runs them.
PHONE_SIM = [sys.executable, "-m", "phone_sim"]
PYTHON = [sys.executable]
RTP_PORTS = 64


def _dockerfile_entrypoint(path: Path) -> list[str]:
    for line in reversed(path.read_text(encoding="utf-8").replace("\\\n", " ").splitlines()):
        if line.startswith("ENTRYPOINT "):
            entry = json.loads(line.removeprefix("ENTRYPOINT "))
            assert isinstance(entry, list)
            return [str(word) for word in entry]
    raise AssertionError(f"{path.name} has no ENTRYPOINT")


def _swap(argv: list[str], flag: str, expected: str, local: str) -> None:
    """Replace the value of ``flag``, which must be the standard ``expected`` one: a change to
    the compose file this test does not know about fails here, not silently."""
    at = argv.index(flag) + 1
    assert argv[at] == expected, f"{flag} is {argv[at]!r} in docker-compose.yml"
    argv[at] = local


@dataclass
class LocalCompose:
    """The compose file's services as commands on this machine."""

    compose: dict[str, Any]
    root: Path
    install: AsteriskInstall
    ports: dict[str, int] = field(default_factory=dict)
    processes: list[PeerProcess] = field(default_factory=list)

    def service(self, name: str) -> dict[str, Any]:
        service = self.compose["services"][name]
        assert isinstance(service, dict)
        return service

    def mounts(self, name: str) -> list[tuple[str, Path]]:
        """``(container path, local path)`` for the service's volumes, longest first."""
        out = []
        for mount in self.service(name).get("volumes", []):
            source, target = mount.split(":")[:2]
            local = REPO / source if source.startswith(".") else self.root / "volumes" / source
            local.mkdir(parents=True, exist_ok=True)
            out.append((target, local))
        return sorted(out, key=lambda m: -len(m[0]))

    def path(self, names: tuple[str, ...], container_path: str) -> str:
        """Where a container path is here: in the directory of a volume the first of
        ``names`` (services) that mounts it there, the Asterisk build for the image's prefix,
        else in one directory standing for the images' own files (the render names the
        state directories Dockerfile.asterisk makes)."""
        prefix = "/opt/phone-sim/asterisk-22.10.1"
        if container_path == prefix or container_path.startswith(prefix + "/"):
            return str(self.install.prefix) + container_path[len(prefix):]
        for name in names:
            for target, local in self.mounts(name):
                if container_path == target or container_path.startswith(target + "/"):
                    return str(local) + container_path[len(target):]
        return str(self.root / "fs") + container_path

    def command(self, name: str, argv: list[str], *, for_service: str | None = None) -> list[str]:
        """``argv`` of service ``name`` with its container paths, and the service names and
        wildcard address given as option values, made local. ``for_service``: the paths
        are also ones that service will open (asterisk-config names Asterisk's files)."""
        names = (name,) if for_service is None else (name, for_service)
        out = []
        for at, word in enumerate(argv):
            if word.startswith("/"):
                out.append(self.path(names, word))
            elif at and argv[at - 1].startswith("--") and (
                    word in SERVICE_NAMES or word == "0.0.0.0"):
                out.append(LOOPBACK)
            else:
                out.append(word)
        return out

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, cwd=self.root)

    def start(self, name: str, argv: list[str]) -> PeerProcess:
        process = PeerProcess(name, argv, cwd=self.root, log_path=self.root / f"{name}.log")
        self.processes.append(process)
        process.start()
        return process

    def wait_healthy(self, name: str, test: list[str], process: PeerProcess) -> None:
        """Run the service's healthcheck as compose would: every interval, up to retries."""
        health = self.service(name)["healthcheck"]
        assert test[0] == "CMD"
        interval = float(health["interval"].removesuffix("s"))
        retries = int(health["retries"])
        for _ in range(retries * 4):  # this machine is shared: four times compose's patience
            if not process.running:
                raise process.fail(f"exited with status {process.returncode}")
            if self.run(test[1:], timeout=10).returncode == 0:
                return
            time.sleep(min(interval, 0.5))
        raise process.fail("never healthy")


@pytest.fixture
def local_compose(asterisk_install: AsteriskInstall) -> Iterator[LocalCompose]:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    # A short root: Asterisk's control socket path must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="psc-"))
    stack = LocalCompose(compose=compose, root=root, install=asterisk_install)
    stack.ports = {"asterisk_tls": free_port(), "asterisk_udp": free_port(),
                   "lab_tls": free_port(),
                   "rtp": free_port_run(RTP_PORTS, even=True, udp_only=True)}
    try:
        yield stack
    finally:
        for process in reversed(stack.processes):
            process.stop(timeout=3.0)
        ports = stack.ports
        release_ports([ports["asterisk_tls"], ports["asterisk_udp"], ports["lab_tls"],
                       *range(ports["rtp"], ports["rtp"] + RTP_PORTS)])
        shutil.rmtree(root, ignore_errors=True)


def _lines(text: str) -> str:
    return tail(text, 80)


def test_compose_phones_boot_from_the_lab_register_to_asterisk_and_hear_the_echo(
    local_compose: LocalCompose,
) -> None:
    stack = local_compose
    ports = stack.ports
    rtp = f"{ports['rtp']}-{ports['rtp'] + RTP_PORTS - 1}"

    # certs and asterisk-config: the image's entrypoint is python -m ...
    for name in ("certs", "asterisk-config"):
        service = stack.service(name)
        argv = [*service["entrypoint"], *service["command"]]
        assert argv[0] == "python"
        argv = argv[1:]
        if name == "asterisk-config":
            _swap(argv, "--tls-port", "5061", str(ports["asterisk_tls"]))
            _swap(argv, "--udp-port", "5060", str(ports["asterisk_udp"]))
            _swap(argv, "--rtp", "10000-10199", rtp)
            _swap(argv, "--dpma-port", "5061", str(ports["lab_tls"]))
        # The render names the files Asterisk opens, as the asterisk service mounts them.
        local = stack.command(name, argv, for_service="asterisk")
        result = stack.run([*PYTHON, *local], timeout=60)
        assert result.returncode == 0, f"{name}: {result.stderr}"

    # asterisk: Dockerfile.asterisk's entrypoint, healthy by the compose healthcheck.
    asterisk_argv = stack.command("asterisk",
                                  _dockerfile_entrypoint(REPO / "Dockerfile.asterisk"))
    asterisk = stack.start("asterisk", asterisk_argv)
    stack.wait_healthy("asterisk", stack.command(
        "asterisk", stack.service("asterisk")["healthcheck"]["test"]), asterisk)

    # lab: phone-sim's image, its command; healthy by its healthcheck (python -c ...).
    lab_argv = list(stack.service("lab")["command"])
    _swap(lab_argv, "--tls-port", "5061", str(ports["lab_tls"]))
    lab = stack.start("lab", [*PHONE_SIM, *stack.command("lab", lab_argv)])
    health = list(stack.service("lab")["healthcheck"]["test"])
    assert health[1] == "python" and "('127.0.0.1', 5061)" in health[3]
    health = ["CMD", *PYTHON, health[2],
              health[3].replace("('127.0.0.1', 5061)", f"('127.0.0.1', {ports['lab_tls']})")]
    stack.wait_healthy("lab", health, lab)

    # phones: boots, registers to Asterisk, calls 600 and hears its tone (exit 0).
    phones_argv = list(stack.service("phones")["command"])
    _swap(phones_argv, "--config-url", "sip:proxy@lab:5061;transport=tls",
          f"sip:proxy@{LOOPBACK}:{ports['lab_tls']};transport=tls")
    phones = stack.run([*PHONE_SIM, *stack.command("phones", phones_argv)], timeout=120)
    out = phones.stdout
    assert phones.returncode == 0, (
        f"phones exited {phones.returncode}\n{_lines(out)}\n{phones.stderr}\n--- lab ---\n"
        f"{_lines(lab.log_text())}\n--- asterisk ---\n{_lines(asterisk.log_text())}")
    tls = f"{LOOPBACK}:{ports['asterisk_tls']}/tls"
    assert f"configuration from sip:proxy@{LOOPBACK}:{ports['lab_tls']};transport=tls" in out
    assert f"line 0: 101 at {tls} (SDES-SRTP)" in out
    assert f"registered 101 with {tls}" in out
    assert "media: G722 SRTP" in out and "heard 1004 Hz" in out
    assert out.rstrip().endswith("unregistered")
    # The lab only provisioned (no registrar, no echo): it was Asterisk that answered.
    assert "phone-101 served to 000fd3000101" in lab.log_text()
    messages = (Path(stack.path(("asterisk",), "/var/lib/phone-sim/asterisk")) / "log"
                / "messages.log").read_text(encoding="utf-8", errors="replace")
    assert "INVITE sip:600@" in messages and "User-Agent: Digium D65" in messages

    # A phone the configuration does not know is refused by the lab, and says so.
    stranger = list(phones_argv)
    _swap(stranger, "--mac", "00:0f:d3:00:01:01", "00:0f:d3:00:02:00")
    refused = stack.run([*PHONE_SIM, *stack.command("phones", stranger)], timeout=60)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "unknown phone or wrong PIN" in refused.stderr + refused.stdout
