"""``phone-sim call`` and ``phone-sim answer`` end to end: the real command in a subprocess,
against Kamailio over TLS with baresip as the other phone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from phone_sim import (
    Account,
    PhoneConfig,
    SipHost,
    SipTransport,
    TrustStore,
    build_phone,
    profile_for,
)
from phone_sim.cli import build_parser
from phone_sim.lab import Lab
from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.testing.aio_pytest_peers import BaresipFactory
from phone_sim.testing.audio import wav_tone_report
from phone_sim.testing.certs import TestPki
from tests.cli.labcli import closed_port, lab_args, run_cli, start_cli

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
    assert "call to sip:103@pbx.test failed: " in result.stdout
    assert "Traceback" not in result.stderr


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


# -- against the embedded lab (issue #10: the CLI as a new user meets it) ---------------------


async def test_call_json_reports_a_failed_registration_as_json() -> None:
    result = await run_cli("call", "--to", "600", "--json", "--server",
                           f"127.0.0.1:{closed_port()}", "--transport", "tcp", "--user", "101",
                           "--password", "pw", "--timeout", "5")
    assert result.code == 2, result
    (line,) = result.out.splitlines()
    obj = json.loads(line)
    assert obj["result"] == "failed" and obj["kind"] == "SipTransportError"
    assert obj["exit_code"] == 2 and "nothing listens on that port" in obj["error"]


async def test_a_refused_call_is_one_message() -> None:
    async with Lab({"101": "1234"}) as lab:
        result = await run_cli("call", "--to", "999", "--duration", "1", *lab_args(lab))
    assert result.code == 1, result
    (line,) = [line for line in result.out.splitlines() if "999" in line and "fail" in line]
    assert line == f"call to sip:999@{lab.server_name} failed: 404 Not Found"


async def test_the_echo_never_speaks_as_this_phone() -> None:
    """The echo service refuses plain RTP with 488; its Warning must not say 'this phone'."""
    async with Lab({"101": "1234"}) as lab:
        result = await run_cli("call", "--to", "600", "--media-encryption", "none",
                               *lab_args(lab))
    assert result.code == 1, result
    assert "488" in result.out and "RTP/SAVP" in result.out
    assert "this phone" not in result.out


async def test_call_says_when_the_expected_tone_is_heard() -> None:
    async with Lab({"101": "1234"}) as lab:
        result = await run_cli("call", "--to", "600", "--play", "tone:1004", "--expect-tone",
                               "1004", "--duration", "1", *lab_args(lab))
        json_result = await run_cli("call", "--to", "600", "--play", "tone:1004",
                                    "--expect-tone", "1004", "--duration", "1", "--json",
                                    *lab_args(lab))
    assert result.code == 0, result
    heard = [line for line in result.out.splitlines() if line.startswith("heard the 1004 Hz")]
    assert len(heard) == 1 and " s after the answer" in heard[0], result.out
    events = [json.loads(line) for line in json_result.out.splitlines()]
    (tone,) = [e for e in events if e.get("event") == "tone-heard"]
    assert tone["hz"] == 1004 and tone["after"] >= 0


async def test_answer_json_says_once_which_tones_were_heard() -> None:
    async with Lab({"101": "1234", "102": "1234"}) as lab:
        proc = await start_cli("answer", "--echo", "--expect-tone", "697", "--count", "1",
                               "--json", *lab_args(lab, "101"))
        try:
            assert proc.stdout is not None
            first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            assert first["event"] == "registered"
            account = Account(username="102", password="1234", server_name=lab.server_name,
                              host_primary=SipHost(server=lab.host, port=lab.ports["tls"],
                                                   transport=SipTransport.TLS,
                                                   media_encryption="sdes"))
            config = PhoneConfig(profile=profile_for("D65"), accounts=(account,),
                                 trust=TrustStore.from_pem(lab.ca_pem))
            async with build_phone(config) as caller:
                await caller.register()
                call = await caller.dial("101")
                await call.wait_answered(timeout=10)
                call.play_tone(697)
                await call.wait_tone(697, timeout=10)  # echoed back: the far end has it too
                await asyncio.sleep(0.5)
                await call.hangup()
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, (out, err)
    events = [json.loads(line) for line in out.decode().splitlines()]
    (heard,) = [e for e in events if e.get("event") == "tone-heard"]
    assert heard["hz"] == 697
    (ended,) = [e for e in events if e.get("event") == "ended"]
    assert "tone_heard" not in ended and ended["result"] == "ok"
    assert 697.0 in ended["tones_heard"]
