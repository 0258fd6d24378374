"""scripts/: one apt helper that waits for the dpkg lock, and a bootstrap that says what it does
while it makes .venv (issue #10, "The CLI, tried as a new user would")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def test_every_apt_install_goes_through_the_helper() -> None:
    calls = re.compile(r"^\s*(?:\w+=\S+\s+)*apt-get\s", re.M)
    direct = [p.name for p in SCRIPTS.iterdir()
              if p.is_file() and p.name != "apt-install" and calls.search(p.read_text())]
    assert direct == [], f"call scripts/apt-install instead of apt-get in {direct}"


@pytest.mark.skipif(os.geteuid() != 0, reason="scripts/apt-install needs root")
def test_apt_install_waits_for_the_dpkg_lock(tmp_path: Path) -> None:
    """apt-get here is a stand-in on PATH that records how it was called: the real one would
    change the machine (and another engineer's apt may hold the real lock)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    fake = bindir / "apt-get"
    fake.write_text(f'#!/bin/sh\necho "DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}} $*" >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "APT_LOCK_TIMEOUT": "90"}
    result = subprocess.run([SCRIPTS / "apt-install", "kamailio", "sip-tester"], env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    update, install = log.read_text().splitlines()
    assert "-o DPkg::Lock::Timeout=90 update" in update
    assert install.startswith("DEBIAN_FRONTEND=noninteractive ")
    assert "-o DPkg::Lock::Timeout=90 install -y -q kamailio sip-tester" in install
    assert "installing kamailio sip-tester" in result.stderr and "90 s" in result.stderr
    log.unlink()
    result = subprocess.run([SCRIPTS / "apt-install", "--no-install-recommends", "a"], env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines()[1].endswith("install -y -q --no-install-recommends a")
    bad = subprocess.run([SCRIPTS / "apt-install", "x"], capture_output=True, text=True,
                         env={**env, "APT_LOCK_TIMEOUT": "soon"}, check=False)
    assert bad.returncode == 2 and "APT_LOCK_TIMEOUT" in bad.stderr
    assert subprocess.run([SCRIPTS / "apt-install"], capture_output=True, check=False,
                          env=env).returncode == 2


@pytest.mark.timeout(120)
def test_bootstrap_says_what_it_does_and_nothing_when_done(tmp_path: Path) -> None:
    """The real bootstrap in a checkout whose package cannot be installed offline: what it
    says while it makes .venv, and that an install it already did is left alone."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("bootstrap", "apt-install"):
        shutil.copy2(SCRIPTS / name, checkout / "scripts" / name)
    pyproject = checkout / "pyproject.toml"
    pyproject.write_text('[build-system]\nrequires = ["no-such-build-backend-for-tests"]\n'
                         '[project]\nname = "tiny"\nversion = "0"\n')
    env = {**os.environ, "PIP_NO_INDEX": "1",
           "PYTHON": shutil.which("python3") or sys.executable}
    # Reached through a link, as the docs test's scratch directories reach it: it works in
    # the checkout it lives in.
    (tmp_path / "link").symlink_to(checkout / "scripts", target_is_directory=True)

    def bootstrap(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tmp_path / "link" / "bootstrap", *args], env=env,
                              capture_output=True, text=True, timeout=100, check=False)

    first = bootstrap("test")
    assert first.returncode != 0
    assert "bootstrap: creating the virtual environment .venv (Python 3." in first.stderr
    assert "installing phone-sim with its test extra and its dependencies" in first.stderr
    assert (checkout / ".venv" / "bin" / "python").exists()
    assert not (tmp_path / ".venv").exists()
    # Installed (as far as the stamps say): nothing to do, nothing said.
    (checkout / ".venv" / ".phone-sim-installed-test").touch()
    again = bootstrap("test")
    assert again.returncode == 0 and again.stderr == "", again.stderr
    # The package alone is part of what the test extra installed.
    plain = bootstrap()
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    # A changed pyproject.toml is installed again.
    stamp = (checkout / ".venv" / ".phone-sim-installed-test").stat().st_mtime
    os.utime(pyproject, (stamp + 10, stamp + 10))
    changed = bootstrap()
    assert "installing phone-sim and its dependencies" in changed.stderr
