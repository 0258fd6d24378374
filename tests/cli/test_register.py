"""``phone-sim register`` end to end: a real Kamailio, the real command in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest

from phone_sim.cli import build_parser
from phone_sim.lab import Lab
from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.testing.certs import TestPki
from tests.cli.labcli import closed_port, lab_args, run_cli

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
    assert "connection refused by 127.0.0.1:9" in result.stderr
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
    assert "rejected the credentials of '101'" in result.stderr
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


# -- the exits no real registrar provokes: a tiny UDP registrar in the test ----------------------


class _TinyRegistrar(asyncio.DatagramProtocol):
    """A UDP "registrar" on 127.0.0.1 that answers a REGISTER with 200 (binding granted for
    60 s) or not at all: ``answer_register=False`` never answers anything, and
    ``answer_unregister=False`` never confirms a REGISTER with ``Expires: 0``."""

    def __init__(self, *, answer_register: bool, answer_unregister: bool) -> None:
        self.answer_register = answer_register
        self.answer_unregister = answer_unregister
        self.registers: list[bytes] = []
        self.unregisters: list[bytes] = []
        self.got_register = asyncio.Event()
        self.got_unregister = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not data.startswith(b"REGISTER "):
            return
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        lines = head.split("\r\n")[1:]
        unregister = any(re.fullmatch(r"(?i)expires:\s*0\s*", line) for line in lines)
        if unregister:
            self.unregisters.append(data)
            self.got_unregister.set()
        else:
            self.registers.append(data)
            self.got_register.set()
        if not (self.answer_unregister if unregister else self.answer_register):
            return
        keep = ("via:", "from:", "call-id:", "cseq:")
        reply = ["SIP/2.0 200 OK", *(line for line in lines if line.lower().startswith(keep))]
        reply += [line + ";tag=tiny" for line in lines if line.lower().startswith("to:")]
        reply += [f"{line};expires=60" for line in lines if line.lower().startswith("contact:")]
        reply += ["Content-Length: 0", "", ""]
        assert self.transport is not None
        self.transport.sendto("\r\n".join(reply).encode(), addr)


async def _tiny_registrar(
    *, answer_register: bool, answer_unregister: bool
) -> tuple[_TinyRegistrar, asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _TinyRegistrar(answer_register=answer_register,
                               answer_unregister=answer_unregister),
        local_addr=("127.0.0.1", 0),
    )
    return protocol, transport, int(transport.get_extra_info("sockname")[1])


def _tiny_args(port: int, *extra: str) -> list[str]:
    return _cmd("--server", f"127.0.0.1:{port}", "--transport", "udp", "--user", "101",
                "--password", "tiny-secret-101", "--domain", "pbx.test", *extra)


async def _communicate(proc: asyncio.subprocess.Process, timeout: float) -> tuple[str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return out.decode(), err.decode()


async def test_ctrl_c_before_the_registration_completes_exits_2() -> None:
    # The REGISTER is never answered. (The phone still clears the binding it may have made on
    # its way out: that un-REGISTER is confirmed, so the command does not wait 5 s for it.)
    registrar, transport, port = await _tiny_registrar(answer_register=False,
                                                       answer_unregister=True)
    try:
        proc = await asyncio.create_subprocess_exec(
            *_tiny_args(port, "--json"), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        # The REGISTER is out (so the command is waiting for its answer): Ctrl-C.
        await asyncio.wait_for(registrar.got_register.wait(), 60)
        proc.send_signal(signal.SIGINT)
        out, err = await _communicate(proc, 30)
    finally:
        transport.close()
    assert proc.returncode == 2, (out, err)
    assert [json.loads(line) for line in out.splitlines()] == [{"result": "interrupted"}]
    assert "Traceback" not in err
    assert "tiny-secret-101" not in out + err


async def test_a_slow_stop_says_so_and_a_second_ctrl_c_quits_at_once() -> None:
    # Nothing is ever answered: after Ctrl-C the un-REGISTER would wait its 5 s. The command
    # says what it is waiting for, and a second Ctrl-C quits (130) instead of waiting on.
    registrar, transport, port = await _tiny_registrar(answer_register=False,
                                                       answer_unregister=False)
    try:
        proc = await asyncio.create_subprocess_exec(
            *_tiny_args(port), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        await asyncio.wait_for(registrar.got_register.wait(), 60)
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(registrar.got_unregister.wait(), 30)
        assert proc.stderr is not None
        hint = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert hint.decode() == "unregistering... (Ctrl-C again to quit at once)\n"
        proc.send_signal(signal.SIGINT)
        out, err = await _communicate(proc, 30)
    finally:
        transport.close()
    assert proc.returncode == 130, (out, err)  # 2, had it waited the un-REGISTER out
    assert out == "interrupted before the registration completed\n"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


async def test_an_unregister_never_confirmed_exits_2() -> None:
    registrar, transport, port = await _tiny_registrar(answer_register=True,
                                                       answer_unregister=False)
    try:
        proc = await asyncio.create_subprocess_exec(
            *_tiny_args(port, "--once", "--json"), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        # The phone's un-REGISTER waits 5 s (RegistrationSettings.unregister_timeout).
        out, err = await _communicate(proc, 30)
    finally:
        transport.close()
    assert proc.returncode == 2, (out, err)
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["result"] == "registered" and lines[0]["expires"] == 60
    assert len(lines) == 1  # never "unregistered"
    assert "the registrar did not confirm the un-REGISTER" in err
    assert "Traceback" not in err
    assert registrar.unregisters  # it was sent (and retransmitted), never answered


async def test_ctrl_c_while_the_phone_is_being_set_up_exits_130(tmp_path: Path) -> None:
    # A CA file that is a FIFO holds the command in its start-up (reading --ca), before the
    # registration installs its own Ctrl-C handling: there Ctrl-C is a KeyboardInterrupt.
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)
    # Ctrl-C as at a terminal: a suite run as a background job (`pytest &`) has SIGINT
    # ignored, its children inherit that, and Python then installs no KeyboardInterrupt.
    proc = await asyncio.create_subprocess_exec(
        *_cmd("--server", "127.0.0.1:9", "--transport", "tls", "--user", "101",
              "--password", "x", "--ca", str(fifo), "--once"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    writer = None
    try:
        deadline = time.monotonic() + 60  # a loaded machine starts Python slowly
        while writer is None:
            try:  # succeeds once the command has the FIFO open for reading
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert time.monotonic() < deadline, "phone-sim never opened its --ca file"
                await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = await _communicate(proc, 30)
    finally:
        if writer is not None:
            os.close(writer)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


@pytest.mark.parametrize(("model", "firmware"), [("D65", "2_0_2_0_78957"), ("D80", "1_11_0")])
async def test_a_firmware_without_tls_asked_for_tls_exits_1(model: str, firmware: str) -> None:
    from phone_sim.lab import Lab

    async with Lab({"101": "lab-pw-101"}, transports=["tls"]) as lab:
        assert lab.ca_file is not None
        proc = await asyncio.create_subprocess_exec(
            *_cmd("--server", f"127.0.0.1:{lab.ports['tls']}", "--transport", "tls",
                  "--user", "101", "--password", "lab-pw-101", "--domain", lab.server_name,
                  "--servername", lab.server_name, "--ca", str(lab.ca_file),
                  "--model", model, "--firmware", firmware, "--once", "--json"),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await _communicate(proc, 30)
        assert lab.tls_handshakes == 0 and lab.bindings("101") == []
    assert proc.returncode == 1, (out, err)
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert result["result"] == "failed" and result["kind"] == "TlsNotSupported"
    assert result["exit_code"] == 1
    assert f"firmware {firmware} on the {model} has no TLS" in result["error"]
    assert "Traceback" not in err


# -- the same failure in the same words (issue #10) -------------------------------------------


def test_a_closed_port_reads_the_same_on_tcp_and_tls() -> None:
    port = closed_port()
    messages = []
    for transport in ("tcp", "tls"):
        result = _run("--server", f"127.0.0.1:{port}", "--transport", transport, "--user",
                      "101", "--password", "x", "--once", "--timeout", "5")
        assert result.returncode == 2, result
        messages.append(result.stderr.strip())
    expected = (f"phone-sim register: error: connection refused by 127.0.0.1:{port}: nothing "
                "listens on that port")
    assert messages == [expected, expected]


async def test_wrong_credentials_are_one_message() -> None:
    async with Lab({"101": "1234"}) as lab:
        args = lab_args(lab, password="wrong-pass-123")
        result = await run_cli("register", *args, "--once")
    assert result.code == 1, result
    assert result.err.strip() == (
        f"phone-sim register: error: {lab.host}:{lab.ports['tls']}/tls: the server rejected "
        f"the credentials of '101' for realm '{lab.server_name}' (401)")
