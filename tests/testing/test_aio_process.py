"""A peer program that is not installed: every helper says which Debian package to install,
before it writes or starts anything that needs the program."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from phone_sim.testing import aio_process
from phone_sim.testing.aio_baresip import Baresip, BaresipAccount
from phone_sim.testing.aio_capture import Capture
from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.testing.aio_process import DEBIAN_PACKAGES, PeerMissing, PeerProcess, which
from phone_sim.testing.aio_sipp import run_sipp_sync
from phone_sim.testing.audio import write_tone_wav
from phone_sim.testing.certs import make_test_pki


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without any peer program (as a user's may be)."""
    monkeypatch.setattr(aio_process, "locate", lambda binary: None)


def _kamailio(tmp_path: Path) -> None:
    kam = Kamailio(tmp_path / "kam", make_test_pki(tmp_path / "pki"))
    try:
        kam.start()
    finally:
        kam.close()


def _baresip(tmp_path: Path) -> None:
    account = BaresipAccount(user="101", password="pw-101", domain="pbx.test",
                             proxy="sip:127.0.0.1:5061;transport=tls")
    wav = write_tone_wav(tmp_path / "tone.wav", 1004.0, 0.1)
    Baresip(tmp_path / "baresip", account, source_wav=wav).start()


def _capture(tmp_path: Path) -> None:
    Capture(tmp_path / "capture", udp_ports=[40000]).start()


def _sipp(tmp_path: Path) -> None:
    run_sipp_sync("options", ("127.0.0.1", 5060), workdir=tmp_path / "sipp")


@pytest.mark.usefixtures("nothing_installed")
@pytest.mark.parametrize(("start", "package"), [
    (_kamailio, "kamailio kamailio-tls-modules"),
    (_baresip, "baresip-core"),
    (_capture, "tshark"),
    (_sipp, "sip-tester"),
], ids=["kamailio", "baresip", "tshark", "sipp"])
def test_a_missing_peer_names_its_debian_package(
    tmp_path: Path, start: Callable[[Path], None], package: str
) -> None:
    running = set(aio_process.RUNNING)
    with pytest.raises(PeerMissing, match=rf"\(Debian/Ubuntu: sudo apt-get install {package}\)$"):
        start(tmp_path)
    assert set(aio_process.RUNNING) == running  # nothing started


@pytest.mark.usefixtures("nothing_installed")
def test_a_program_of_your_own_says_to_put_it_on_path(tmp_path: Path) -> None:
    process = PeerProcess("mine", ["my-sip-server", "-v"], cwd=tmp_path,
                          log_path=tmp_path / "mine.log")
    with pytest.raises(PeerMissing, match=r"^my-sip-server is not installed \(install it, or put "
                                          r"it on PATH\)$"):
        process.start()
    assert not process.running
    with pytest.raises(PeerMissing, match=r"\(build it: docs/x.md\)$"):
        which("my-sip-server", hint="build it: docs/x.md")


def test_every_peer_program_has_a_package() -> None:
    assert set(DEBIAN_PACKAGES) >= {"kamailio", "kamcmd", "baresip", "sipp", "tshark", "dumpcap"}
    assert all(DEBIAN_PACKAGES.values())
