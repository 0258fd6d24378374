"""The suite's own peer rules (tests/peer_rules.py): the ``peer`` marker must match the peers a
test starts, and under CI=true a missing peer fails its test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


RULES_TEST = '''
import pytest
from phone_sim.testing.aio_pytest_peers import require

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
        [sys.executable, "-m", "pytest", "-p", "tests.peer_rules", "-v",
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
    assert ("this run requires every real peer" in out) == bool(ci)
