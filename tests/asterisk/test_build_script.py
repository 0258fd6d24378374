"""scripts/build-asterisk: where it installs, what it refuses, and that the modules it builds
are the ones fixtures/asterisk loads. (The build itself runs in scripts/test, once.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build-asterisk"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, **(env or {})})


def _modules_txt() -> list[str]:
    lines = (REPO / "scripts" / "asterisk" / "modules.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_modules_conf_loads_exactly_the_modules_that_are_built() -> None:
    conf = (REPO / "fixtures" / "asterisk" / "modules.conf").read_text()
    loaded = re.findall(r"^load\s*=>\s*(\w+)\.so\s*$", conf, flags=re.MULTILINE)
    assert sorted(loaded) == sorted(_modules_txt())
    assert re.search(r"^autoload\s*=\s*no\s*$", conf, flags=re.MULTILINE)


def test_the_prefix_comes_from_the_environment(tmp_path: Path) -> None:
    result = _run("--print-prefix", env={"PHONE_SIM_ASTERISK_PREFIX": str(tmp_path / "ast")})
    assert result.returncode == 0
    assert result.stdout.strip() == str(tmp_path / "ast")


def test_check_says_whether_a_build_is_there(tmp_path: Path) -> None:
    result = _run("--check", env={"PHONE_SIM_ASTERISK_PREFIX": str(tmp_path / "ast")})
    assert result.returncode == 1


@pytest.mark.parametrize("prefix", ["relative/dir", "{repo}/build"])
def test_a_prefix_inside_the_checkout_or_relative_is_refused(prefix: str) -> None:
    result = _run(env={"PHONE_SIM_ASTERISK_PREFIX": prefix.format(repo=REPO)})
    assert result.returncode == 2
    assert "prefix" in result.stderr


def test_without_a_source_it_says_where_it_looked_and_what_to_do(tmp_path: Path) -> None:
    result = _run(env={"PHONE_SIM_ASTERISK_PREFIX": str(tmp_path / "ast"),
                       "PHONE_SIM_SHARED": str(tmp_path / "no-shared")})
    assert result.returncode == 2
    assert str(tmp_path / "no-shared" / "peers" / "asterisk") in result.stderr
    assert "--download" in result.stderr
    assert not (tmp_path / "ast").exists()


def test_a_source_with_the_wrong_checksum_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "asterisk-22.10.1.tar.xz"
    fake.write_bytes(b"not the release")
    result = _run(env={"PHONE_SIM_ASTERISK_PREFIX": str(tmp_path / "ast"),
                       "PHONE_SIM_ASTERISK_SOURCE": str(fake)})
    assert result.returncode == 1
    assert "sha256 mismatch" in result.stderr
    assert not (tmp_path / "ast").exists()


def test_a_release_tarball_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "asterisk-22.10.1.tar.gz"
    fake.write_bytes(b"not the release tarball")
    result = _run("--source", str(fake), env={"PHONE_SIM_ASTERISK_PREFIX": str(tmp_path / "ast")})
    assert result.returncode == 1
    assert "sha256 mismatch" in result.stderr
    assert "0953564c44fa49827f3c9d70ca6e80db83828c9848440852c6be44c961855353" in result.stderr
    assert not (tmp_path / "ast").exists()


def test_a_source_nobody_pinned_needs_a_checksum(tmp_path: Path) -> None:
    fake = tmp_path / "asterisk-22.10.1-patched.tar.gz"
    fake.write_bytes(b"a tarball of someone's own")
    result = _run(env={"PHONE_SIM_ASTERISK_PREFIX": str(tmp_path / "ast"),
                       "PHONE_SIM_ASTERISK_SOURCE": str(fake)})
    assert result.returncode == 2
    assert "PHONE_SIM_ASTERISK_SHA256" in result.stderr


def test_the_shared_sources_and_the_release_tarball_are_pinned() -> None:
    sums = (REPO / "scripts" / "asterisk" / "SHA256SUMS").read_text()
    assert re.search(r"^[0-9a-f]{64}  asterisk-22\.10\.1\.tar\.xz$", sums, flags=re.MULTILINE)
    assert re.search(r"^[0-9a-f]{64}  pjproject-2\.17\.tar\.bz2$", sums, flags=re.MULTILINE)
    assert re.search(r"^[0-9a-f]{64}  asterisk-22\.10\.1\.tar\.gz$", sums, flags=re.MULTILINE)


def test_a_download_is_checked_against_the_pin_only() -> None:
    # A checksum fetched from the server the tarball came from proves nothing: the script
    # no longer asks for one, and tries old-releases/ once 22.10.1 has moved there.
    script = SCRIPT.read_text()
    assert ".sha256" not in script
    assert "/releases/asterisk-$VERSION.tar.gz" in script
    assert "/old-releases/asterisk-$VERSION.tar.gz" in script
