"""The fixtures' promises: peers stop even when a test fails, and the report shows their log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from phone_sim.testing.aio_process import live_group_members
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


def test_a_missing_binary_skips_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-peer-binary is not installed"):
        require("no-such-peer-binary")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no-such-peer-binary is not installed"):
        require("no-such-peer-binary")


def test_in_ci_a_missing_binary_fails_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception,
                       match=r"no-such-peer-binary is not installed.*CI=true requires"):
        require("no-such-peer-binary")


RULES_TEST = '''
import pytest
from tests.peers.plugin import require

def test_unmarked_but_starts_a_peer():
    require("sh")  # any binary the harness looks up counts as a peer

@pytest.mark.peer
def test_marked_but_starts_none():
    pass

@pytest.mark.peer
def test_marked_and_starts_one():
    require("sh")

@pytest.mark.peer
def test_needs_a_missing_peer():
    require("no-such-peer-binary")

def test_fails_on_its_own():
    require("sh")
    assert False, "its own failure"
'''


@pytest.mark.parametrize("ci", ["", "true"])
def test_the_peer_marker_must_match_what_the_test_starts(tmp_path: Path, ci: str) -> None:
    test_file = tmp_path / "test_rules.py"
    test_file.write_text(RULES_TEST)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": ci}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.peers.plugin", "-v",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull,
         str(test_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    outcomes = dict(re.findall(r"test_rules\.py::(\w+) (PASSED|FAILED|SKIPPED|ERROR)", out))
    assert outcomes == {
        "test_unmarked_but_starts_a_peer": "FAILED",
        "test_marked_but_starts_none": "FAILED",
        "test_marked_and_starts_one": "PASSED",
        "test_needs_a_missing_peer": "FAILED" if ci else "SKIPPED",
        "test_fails_on_its_own": "FAILED",
    }, out
    assert "starts a real peer (sh) but is not marked @pytest.mark.peer" in out
    assert "marked @pytest.mark.peer but started no peer" in out
    assert "its own failure" in out
    assert ("CI=true requires every real peer" in out) == bool(ci)
