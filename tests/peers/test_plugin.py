"""The fixtures' promises: peers stop even when a test fails, and the report shows their log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers._process import live_group_members
from tests.peers.plugin import require

ROOT = Path(__file__).resolve().parents[2]

INNER_TEST = '''
import pytest
from pathlib import Path

@pytest.mark.peer
def test_fails_with_kamailio_running(kamailio):
    Path(PID_FILE).write_text(str(kamailio.process.pid))
    assert kamailio.running
    assert False, "deliberate failure"
'''


@pytest.mark.peer
def test_a_failing_test_stops_its_peers_and_reports_their_log(tmp_path: Path) -> None:
    require("kamailio")
    pid_file = tmp_path / "pid"
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(f"PID_FILE = {str(pid_file)!r}\n" + INNER_TEST)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.peers.plugin", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull,
         str(test_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "deliberate failure" in result.stdout
    assert "peer log: kamailio" in result.stdout
    log_section = result.stdout.split("peer log: kamailio", 1)[1]
    assert "ksr_tls_fill_missing" in log_section  # Kamailio's own start-up lines
    assert live_group_members(int(pid_file.read_text())) == []


def test_a_missing_binary_skips_with_its_name() -> None:
    with pytest.raises(pytest.skip.Exception, match="no-such-peer-binary is not installed"):
        require("no-such-peer-binary")
