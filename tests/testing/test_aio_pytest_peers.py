"""The plugin's peer fixtures (phone_sim.testing.aio_pytest_peers): peers stop even when a test
fails, the report shows their log, and a missing peer skips (or fails, when required) with the
package to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from phone_sim.testing import aio_process, aio_pytest_peers
from phone_sim.testing.aio_process import PeerMissing, live_group_members
from phone_sim.testing.aio_pytest_peers import require

INNER_TEST = '''
import pytest
from pathlib import Path

def test_fails_with_kamailio_running(phone_sim_kamailio):
    Path(PID_FILE).write_text(str(phone_sim_kamailio.process.pid))
    assert phone_sim_kamailio.running
    assert False, "deliberate failure"
'''


@pytest.mark.peer
def test_a_failing_test_stops_its_peers_and_reports_their_log(tmp_path: Path) -> None:
    require("kamailio")
    pid_file = tmp_path / "pid"
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(f"PID_FILE = {str(pid_file)!r}\n" + INNER_TEST)
    # A user's run: the installed plugin alone (its entry point), none of the suite's rules.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(test_file)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "deliberate failure" in result.stdout
    assert "peer log: kamailio" in result.stdout
    log_section = result.stdout.split("peer log: kamailio", 1)[1]
    assert "ksr_tls_fill_missing" in log_section  # Kamailio's own start-up lines
    assert live_group_members(int(pid_file.read_text())) == []


def test_a_missing_binary_skips_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aio_pytest_peers, "peers_required", lambda: False)
    with pytest.raises(pytest.skip.Exception, match="no-such-peer-binary is not installed"):
        require("no-such-peer-binary")
    monkeypatch.setattr(aio_process, "locate", lambda binary: None)
    with pytest.raises(pytest.skip.Exception, match=(
            r"^baresip is not installed \(Debian/Ubuntu: sudo apt-get install baresip-core\)$")):
        require("baresip")
    with pytest.raises(PeerMissing, match=r"apt-get install kamailio kamailio-tls-modules"):
        aio_process.which("kamailio")


def test_a_missing_binary_fails_when_peers_are_required(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile("""
        from phone_sim.testing.aio_pytest_peers import require

        def test_needs_it():
            require("no-such-peer-binary")
    """)
    skipped = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    skipped.assert_outcomes(skipped=1)
    failed = pytester.runpytest("-p", "no:cacheprovider", "--phone-sim-require-peers")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["*no-such-peer-binary is not installed (install it, or put it "
                                 "on PATH), and this run requires every real peer*"])
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "phone_sim_require_peers = true\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(failed=1)
