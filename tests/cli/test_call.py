"""``phone-sim call`` and ``phone-sim answer`` end to end: the real command in a subprocess,
against Kamailio over TLS with baresip as the other phone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from phone_sim.cli import build_parser
from tests.peers.audio import wav_tone_report
from tests.peers.certs import TestPki
from tests.peers.kamailio import Kamailio
from tests.peers.plugin import BaresipFactory

ROOT = Path(__file__).resolve().parents[2]


def _cmd(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "phone_sim", command, *args]


def _run(command: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(command, *args), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


def _kam_args(kam: Kamailio, pki: TestPki, user: str = "101") -> list[str]:
    return [
        "--server", f"127.0.0.1:{kam.tls_port}", "--transport", "tls", "--user", user,
        "--password", kam.user(user).password, "--servername", kam.domain,
        "--ca", str(pki.ca.cert), "--timeout", "10",
    ]


def _last(paths: list[Path]) -> Path:
    assert paths, "nothing recorded"
    return paths[-1]


BASE = ["--server", "pbx.test", "--user", "101", "--password", "pw"]


def test_call_and_answer_are_subcommands() -> None:
    args = build_parser().parse_args(["call", "--to", "600", "--play", "tone:1004", *BASE])
    assert args.command == "call" and args.to == "600" and args.transport == "tls"
    args = build_parser().parse_args(["answer", "--echo", "--count", "1", *BASE])
    assert args.command == "answer" and args.echo


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [
        ("call", ["--to", "600", "--play", "tone:abc"], "tone:HZ needs a number"),
        ("call", ["--to", "600", "--play", "tone:9000"], "20-3900 Hz"),
        ("call", ["--to", "600", "--play", "/no/such.wav"], "no such file"),
        ("call", ["--to", "600", "--dtmf", "12x"], "digits 0-9"),
        ("call", ["--to", "600", "--duration", "-1"], "--duration"),
        ("call", ["--to", "600", "--record", "/no/such/dir/x.wav"], "does not exist"),
        ("answer", ["--echo", "--play", "tone:440"], "exclude each other"),
        ("answer", ["--count", "0"], "--count"),
    ],
)
def test_usage_errors_exit_2_with_one_line(command: str, extra: list[str], message: str) -> None:
    result = _run(command, *extra, *BASE, timeout=30)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_server_exits_2() -> None:
    result = _run("call", "--to", "600", "--server", "127.0.0.1:9", "--transport", "tcp",
                  "--user", "101", "--password", "pw", "--timeout", "2", timeout=30)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr


@pytest.mark.peer
@pytest.mark.timeout(120)
async def test_call_baresip_hears_the_tone_and_reports_json(
    kamailio: Kamailio, baresip_factory: BaresipFactory, peer_pki: TestPki, tmp_path: Path
) -> None:
    callee = baresip_factory(kamailio, "102", tone_hz=697, answermode="auto")
    await callee.wait_registered()
    recording = tmp_path / "heard.wav"
    result = await asyncio.to_thread(
        _run, "call", "--to", "102", "--play", "tone:1004", "--expect-tone", "697",
        "--duration", "2", "--dtmf", "12", "--record", str(recording), "--json",
        *_kam_args(kamailio, peer_pki))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert wav_tone_report(recording, 697).windows_with_tone >= 10
    assert wav_tone_report(_last(callee.recordings()), 1004).windows_with_tone >= 10
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    final = lines[-1]
    assert final["result"] == "ok" and final["encrypted"] is True
    assert final["packets_received"] > 50 and final["srtp_auth_failures"] == 0
    assert 697.0 in final["tones_heard"]
    assert any(line.get("event") == "stats" for line in lines)
    assert kamailio.user("101").password not in result.stdout
    # The wrong expectation fails with 1 and says why.
    result = await asyncio.to_thread(
        _run, "call", "--to", "102", "--expect-tone", "1633", "--duration", "1",
        *_kam_args(kamailio, peer_pki))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "1633 Hz tone was not heard" in result.stdout


@pytest.mark.peer
@pytest.mark.timeout(120)
async def test_call_to_nobody_exits_1_naming_the_status(
    kamailio: Kamailio, peer_pki: TestPki
) -> None:
    result = await asyncio.to_thread(
        _run, "call", "--to", "103", "--duration", "1", *_kam_args(kamailio, peer_pki))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "call failed" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.peer
@pytest.mark.timeout(120)
async def test_answer_echoes_and_exits_after_count(
    kamailio: Kamailio, baresip_factory: BaresipFactory, peer_pki: TestPki, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_cmd("answer", "--echo", "--count", "1", "--json", *_kam_args(kamailio, peer_pki)),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert first["event"] == "registered"
        caller = baresip_factory(kamailio, "102", tone_hz=697)
        await caller.wait_registered()
        await caller.dial("101")
        await caller.wait_event("CALL_ESTABLISHED", timeout=10)
        await caller.wait_heard(1.5)  # what phone-sim sends back, decoded by baresip
        await caller.hangup()
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (out, err)
    events = [json.loads(line) for line in out.decode().splitlines()]
    ended = [e for e in events if e.get("event") == "ended"]
    assert ended and ended[0]["encrypted"] is True and ended[0]["packets_received"] > 50
    # baresip heard its own tone echoed back over SRTP.
    recordings = caller.recordings()
    assert recordings and wav_tone_report(recordings[-1], 697).windows_with_tone >= 5


@pytest.mark.peer
@pytest.mark.timeout(120)
async def test_answer_plays_and_checks_the_tone(
    kamailio: Kamailio, baresip_factory: BaresipFactory, peer_pki: TestPki
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_cmd("answer", "--play", "tone:1004", "--expect-tone", "697", "--count", "1",
              *_kam_args(kamailio, peer_pki)),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert first.startswith("registered with")
        caller = baresip_factory(kamailio, "102", tone_hz=697)
        await caller.wait_registered()
        await caller.dial("101")
        await caller.wait_event("CALL_ESTABLISHED", timeout=10)
        await caller.wait_heard(1.5)  # what phone-sim sends back, decoded by baresip
        await caller.hangup()
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (out, err)
    assert b"ended" in out and b"SRTP" in out
    assert wav_tone_report(_last(caller.recordings()), 1004).windows_with_tone >= 10
