"""The options ``register``, ``call`` and ``answer`` share (``phone_sim/cli/_phone.py``): where
the password comes from, what help says about models and firmware, and what is checked before
anything is sent (issue #10, "The CLI, tried as a new user would")."""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import pytest

from phone_sim.cli import main
from phone_sim.lab import Lab
from tests.cli.labcli import closed_port, lab_args, run_cli

PASSWORD = "pw-Secret-77"


def _nowhere(*extra: str) -> list[str]:
    """Phone options pointing at a closed port: anything checked later than the first
    connection fails as 'connection refused' instead of naming the bad option."""
    return ["--server", f"127.0.0.1:{closed_port()}", "--transport", "tcp", "--user", "101",
            "--timeout", "5", *extra]


@pytest.mark.parametrize("how", ["env", "file"])
async def test_password_from_the_environment_or_a_file(how: str, tmp_path: Path) -> None:
    async with Lab({"101": PASSWORD}) as lab:
        args = lab_args(lab, password=None)
        env = {"PHONE_SIM_PASSWORD": PASSWORD} if how == "env" else {}
        if how == "file":
            secret = tmp_path / "password"
            secret.write_text(PASSWORD + "\n")
            args += ["--password-file", str(secret)]
        result = await run_cli("register", *args, "--once", env=env)
    assert result.code == 0, result
    assert result.out.startswith("registered 101@") and PASSWORD not in result.out + result.err


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        ([], {}, "no password: give --password-file FILE, set PHONE_SIM_PASSWORD, or give "
                 "--password"),
        (["--password", "x", "--password-file", "/dev/null"], {},
         "--password and --password-file exclude each other"),
        (["--password-file", "/no/such/file"], {}, "--password-file /no/such/file: cannot read"),
        (["--password-file", "/dev/null"], {}, "--password-file /dev/null: the file is empty"),
        ([], {"PHONE_SIM_PASSWORD": ""}, "PHONE_SIM_PASSWORD is empty"),
    ],
)
async def test_password_sources_are_checked_first(
    extra: list[str], env: dict[str, str], message: str
) -> None:
    result = await run_cli("register", *_nowhere(*extra), "--once", env=env)
    assert result.code == 2, result
    assert message in result.err and len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["register", "call", "answer", "tls-check", "boot"])
def test_help_lists_models_and_firmwares(command: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(out.getvalue().split())
    assert "D40, D45, D50, D60, D62, D65, D70, D80" in text
    assert "2_9_22" in text and "1_4_0_0_57389" in text and "1_12_1" in text


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("abc def", "bad call target 'abc def'"),
        ("", "empty call target"),
        ("<>", "bad call target '<>'"),
        ("http://x", "bad call target 'http://x': http: is not a SIP URI"),
    ],
)
async def test_call_target_is_checked_before_registering(target: str, message: str) -> None:
    result = await run_cli("call", "--to", target, *_nowhere("--password", "x"))
    assert result.code == 2, result
    assert message in result.err and "refused" not in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1


def _wav(path: Path, payload: bytes) -> Path:
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(payload)) + b"WAVE" + payload)
    return path


@pytest.mark.parametrize("command", ["call", "answer"])
async def test_play_file_is_checked_before_registering(command: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 10)
    broken = _wav(tmp_path / "broken.wav", b"fmt \x10\x00\x00\x00" + b"\xff" * 16)
    extra = ["--to", "600"] if command == "call" else []
    result = await run_cli(command, *extra, "--play", str(text), *_nowhere("--password", "x"))
    assert result.code == 2, result
    assert f"--play {str(text)!r}: not a WAV file (no RIFF/WAVE header)" in result.err
    result = await run_cli(command, *extra, "--play", str(broken), *_nowhere("--password", "x"))
    assert result.code == 2, result
    assert f"--play {str(broken)!r}:" in result.err and "refused" not in result.err
    assert "Errno" not in result.err and len(result.err.strip().splitlines()) == 1
