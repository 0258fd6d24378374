"""Finding and starting an Asterisk build (phone_sim.testing.aio_asterisk)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from phone_sim.testing import aio_asterisk as asterisk_module
from phone_sim.testing.aio_asterisk import (
    HOW_TO_BUILD,
    Asterisk,
    AsteriskInstall,
    AsteriskMissing,
    find_asterisk,
    make_asterisk_certs,
)
from phone_sim.testing.aio_process import PeerError
from phone_sim.tls.client import TrustStore

REPO = Path(__file__).resolve().parents[2]


def _fake_prefix(root: Path, script: str) -> Path:
    """A prefix whose sbin/asterisk is a shell script (for start-up failure paths)."""
    binary = root / "sbin" / "asterisk"
    binary.parent.mkdir(parents=True)
    (root / "lib" / "asterisk" / "modules").mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\n{script}\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return root


def test_an_explicit_prefix_without_asterisk_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(AsteriskMissing) as info:
        find_asterisk(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "scripts/build-asterisk" in str(info.value)


def test_the_environment_variable_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = _fake_prefix(tmp_path / "p", "exit 0")
    monkeypatch.setenv("PHONE_SIM_ASTERISK_PREFIX", str(prefix))
    assert find_asterisk() == AsteriskInstall(prefix=prefix.resolve())
    monkeypatch.setenv("PHONE_SIM_ASTERISK_PREFIX", str(tmp_path / "nothing"))
    with pytest.raises(AsteriskMissing, match="PHONE_SIM_ASTERISK_PREFIX"):
        find_asterisk()


def test_without_any_build_the_message_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PHONE_SIM_ASTERISK_PREFIX", raising=False)
    monkeypatch.setattr(asterisk_module, "default_prefixes", lambda: [tmp_path / "none"])
    with pytest.raises(AsteriskMissing) as info:
        find_asterisk()
    assert str(info.value) == HOW_TO_BUILD
    assert "--download" in HOW_TO_BUILD


def test_an_asterisk_that_dies_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    prefix = _fake_prefix(tmp_path / "p", 'echo "bad config line 3" >&2; exit 7')
    pbx = Asterisk(tmp_path / "w", REPO / "fixtures" / "asterisk",
                   install=AsteriskInstall(prefix=prefix))
    with pytest.raises(PeerError) as info:
        pbx.start(timeout=5)
    assert "exited with status 7" in str(info.value)
    assert "bad config line 3" in str(info.value)
    assert not pbx.running
    pbx.close()


def test_a_long_work_directory_gets_a_short_private_run_directory(tmp_path: Path) -> None:
    prefix = _fake_prefix(tmp_path / "p", "exit 0")
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    pbx = Asterisk(deep, REPO / "fixtures" / "asterisk", install=AsteriskInstall(prefix=prefix))
    assert len(str(pbx.run_dir / "asterisk.ctl")) <= 100
    assert pbx.run_dir.exists()
    pbx.close()
    assert not pbx.run_dir.exists()


def test_the_certificates_come_from_the_projects_pki(tmp_path: Path) -> None:
    certs = make_asterisk_certs(tmp_path, "pbx.example.test")
    assert stat.S_IMODE(os.stat(certs.key_file).st_mode) == 0o600
    assert b"PRIVATE KEY" in certs.key_file.read_bytes()
    TrustStore.from_files([certs.ca_file], public_roots=False)  # loads as a phone's CA
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(certs.cert_file.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "pbx.example.test" in names.get_values_for_type(x509.DNSName)


def test_the_command_without_a_build_exits_2_saying_how_to_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phone_sim.testing.aio_asterisk import main

    assert main([str(REPO / "fixtures" / "asterisk"), "--prefix", str(tmp_path)]) == 2
    assert "scripts/build-asterisk" in capsys.readouterr().err


@pytest.mark.asterisk
@pytest.mark.peer
def test_the_command_runs_asterisk_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], asterisk_install: AsteriskInstall
) -> None:
    import json

    from phone_sim.testing.aio_asterisk import main

    code = main([str(REPO / "fixtures" / "asterisk"), "--prefix", str(asterisk_install.prefix),
                 "--workdir", str(tmp_path / "w"), "--json", "--duration", "0.5"])
    assert code == 0
    ready = json.loads(capsys.readouterr().out.splitlines()[0])
    assert ready["server_name"] == "pbx.phone-sim.test"
    assert Path(ready["ca_file"]).is_file() and ready["users"] == "101-199"
    assert ready["tls_port"] != ready["udp_port"]

