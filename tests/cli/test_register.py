"""``phone-sim register`` end to end: a real Kamailio, the real command in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phone_sim.cli import build_parser
from tests.peers.certs import TestPki
from tests.peers.kamailio import Kamailio

ROOT = Path(__file__).resolve().parents[2]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "phone_sim", "register", *args]


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def _kam_args(kam: Kamailio, pki: TestPki, transport: str, password: str) -> list[str]:
    return [
        "--server", f"127.0.0.1:{kam.port(transport)}",  # type: ignore[arg-type]
        "--transport", transport,
        "--user", "101",
        "--password", password,
        "--servername", kam.domain,
        "--ca", str(pki.ca.cert),
        "--timeout", "5",
    ]


def test_register_is_a_subcommand() -> None:
    args = build_parser().parse_args(
        ["register", "--server", "pbx:5061", "--transport", "tls", "--user", "101",
         "--password", "x", "--once"]
    )
    assert args.command == "register" and args.once


def test_usage_errors_exit_2_without_traceback() -> None:
    result = _run("--server", "pbx:99999", "--transport", "tls", "--user", "101",
                  "--password", "secret-xyz", "--once")
    assert result.returncode == 2
    assert "bad port" in result.stderr
    assert "Traceback" not in result.stderr
    assert "secret-xyz" not in result.stderr + result.stdout


def test_no_answer_exits_2() -> None:
    result = _run("--server", "127.0.0.1:9", "--transport", "tcp", "--user", "101",
                  "--password", "secret-xyz", "--once", "--timeout", "2")
    assert result.returncode == 2
    assert "127.0.0.1:9/tcp" in result.stderr
    assert "secret-xyz" not in result.stderr + result.stdout


@pytest.mark.peer
@pytest.mark.parametrize("transport", ["tls", "tcp", "udp"])
def test_once_registers_and_unregisters(
    kamailio: Kamailio, peer_pki: TestPki, transport: str
) -> None:
    password = kamailio.user("101").password
    result = _run(*_kam_args(kamailio, peer_pki, transport, password), "--once", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["result"] == "registered"
    assert lines[0]["aor"] == "101@pbx.test"
    assert lines[-1] == {"result": "unregistered"}
    assert password not in result.stdout + result.stderr
    assert kamailio.bindings("101") == []


@pytest.mark.peer
def test_wrong_password_exits_1(kamailio: Kamailio, peer_pki: TestPki) -> None:
    result = _run(*_kam_args(kamailio, peer_pki, "tls", "wrong-pass-123"), "--once")
    assert result.returncode == 1
    assert "refused the credentials" in result.stderr
    assert "wrong-pass-123" not in result.stdout + result.stderr


@pytest.mark.peer
def test_untrusted_certificate_exits_1_with_the_bitmask(
    kamailio: Kamailio, peer_pki: TestPki
) -> None:
    args = _kam_args(kamailio, peer_pki, "tls", "x")
    ca = args.index("--ca")
    del args[ca : ca + 2]
    result = _run(*args, "--once", "--json")
    assert result.returncode == 1
    obj = json.loads(result.stdout)
    assert obj["kind"] == "TlsRefused"
    assert "EUNTRUSTED" in obj["tls"]["flags"]
    assert obj["tls"]["bitmask"] & 0x2


@pytest.mark.peer
def test_ctrl_c_unregisters_and_exits_0(
    kamailio: Kamailio, peer_pki: TestPki
) -> None:
    password = kamailio.user("101").password
    proc = subprocess.Popen(
        _cmd(*_kam_args(kamailio, peer_pki, "tls", password)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("registered 101@pbx.test"), first
        deadline = time.monotonic() + 5
        while not kamailio.bindings("101"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "unregistered" in out
    assert password not in out + err
    assert kamailio.bindings("101") == []


@pytest.mark.parametrize("transport", ["tls", "udp"])
async def test_once_against_the_embedded_lab_as_its_banner_says(transport: str) -> None:
    from phone_sim.lab.aio_process import LabProcess

    async with LabProcess({"101": "lab-pw-101"}) as lab:
        assert lab.ca_file is not None
        args = ["--server", f"127.0.0.1:{lab.ports[transport]}", "--transport", transport,
                "--user", "101", "--password", "lab-pw-101", "--domain", lab.server_name,
                "--servername", lab.server_name, "--ca", str(lab.ca_file), "--once", "--json"]
        proc = await asyncio.create_subprocess_exec(
            *_cmd(*args), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert lines[0]["result"] == "registered"
    assert lines[-1] == {"result": "unregistered"}
    assert b"lab-pw-101" not in out + err
