"""Running ``phone-sim`` in a subprocess against the embedded lab in the test's event loop."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from phone_sim.lab import Lab

__all__ = ["CliResult", "closed_port", "lab_args", "run_cli", "start_cli"]

ROOT = Path(__file__).resolve().parents[2]


class CliResult:
    """What a finished command did."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"


def lab_args(lab: Lab, user: str = "101", *, transport: str = "tls",
             password: str | None = "1234") -> list[str]:
    """The shared phone options pointing at ``lab``."""
    args = ["--server", f"{lab.host}:{lab.ports[transport]}", "--transport", transport,
            "--user", user, "--servername", lab.server_name, "--ca", str(lab.ca_file),
            "--timeout", "10"]
    return args + (["--password", password] if password is not None else [])


async def start_cli(*args: str, env: dict[str, str] | None = None,
                    ) -> asyncio.subprocess.Process:
    """``python -m phone_sim ARGS`` started, with pipes; ``PHONE_SIM_PASSWORD`` only when
    ``env`` gives it."""
    inherited = {k: v for k, v in os.environ.items() if k != "PHONE_SIM_PASSWORD"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phone_sim", *args, cwd=ROOT,
        env={**inherited, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def run_cli(*args: str, env: dict[str, str] | None = None,
                  timeout: float = 60) -> CliResult:
    """``python -m phone_sim ARGS`` to its end."""
    proc = await start_cli(*args, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (TCP), right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
