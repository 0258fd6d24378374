"""``phone-sim register`` without ``--once`` against the embedded lab: what it prints while
it stays registered (the first registration once, then only what happens after)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from phone_sim.lab.aio_process import LabProcess

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


async def test_the_first_registration_is_reported_once() -> None:
    # The event stream replays the registration register() already returned: it used to be
    # printed a second time as "registered again ... expires 300 s".
    async with LabProcess({"101": "1234"}, transports=("tls",),
                          extra_args=["--min-expires", "2"]) as lab:
        assert lab.ca_file is not None
        command = [
            sys.executable, "-m", "phone_sim", "register", "--json",
            "--server", f"127.0.0.1:{lab.ports['tls']}", "--user", "101",
            "--password", "1234", "--servername", lab.server_name, "--ca", str(lab.ca_file),
            "--expires", "4",
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            first = json.loads(process.stdout.readline())
            assert first["result"] == "registered" and first["expires"] == 4
            # A 4 s grant refreshes at 2 s: wait for the refresh, which must be reported.
            refreshed = json.loads(process.stdout.readline())
            assert refreshed == {"event": "refreshed", "expires": 4}
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert [line.get("event") or line.get("result") for line in lines] == ["unregistered"]
        assert process.returncode == 0, err
