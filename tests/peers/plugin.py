"""pytest fixtures and hooks for tests against real peers (Kamailio, baresip, SIPp, tshark).

``tests/peers/conftest.py`` imports this module. Tests elsewhere get the same fixtures with
``from tests.peers.plugin import *`` in their own ``conftest.py`` (or the root conftest may
list ``pytest_plugins = ["tests.peers.plugin"]``).

Every peer started through these fixtures is stopped at teardown, even when the test fails,
and a failing test's report carries the log of every peer it started.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Literal

import pytest

from tests.peers import _process
from tests.peers._process import PeerMissing, PeerProcess, tail
from tests.peers.audio import write_tone_wav
from tests.peers.baresip import Baresip, BaresipAccount, BaresipTransport, MediaEnc
from tests.peers.capture import Capture
from tests.peers.certs import TestPki, make_test_pki
from tests.peers.kamailio import Kamailio, KamailioConfig

_STARTED = pytest.StashKey[list[PeerProcess]]()


def require(binary: str) -> str:
    """The path of ``binary``, or skip the test naming what is missing."""
    try:
        return _process.which(binary)
    except PeerMissing as exc:
        pytest.skip(str(exc))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log of every peer the test started to its report when it fails."""
    report = yield
    if report.failed:
        for peer in item.stash.get(_STARTED, []):
            report.sections.append(
                (f"peer log: {peer.name} ({peer.log_path})", tail(peer.log_text(), 200))
            )
    return report


@pytest.fixture
def peer_tracker(request: pytest.FixtureRequest) -> Iterator[list[PeerProcess]]:
    """Record which peer processes this test started (for the failure report)."""
    before = set(_process.RUNNING)
    started: list[PeerProcess] = []
    request.node.stash[_STARTED] = started
    yield started
    # Whatever a test left running is killed here, whoever started it.
    for peer in list(_process.RUNNING - before):
        peer.stop(timeout=2.0)


@pytest.fixture(scope="session")
def peer_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A TEST-ONLY CA and a server certificate for ``pbx.test`` and 127.0.0.1."""
    return make_test_pki(tmp_path_factory.mktemp("pki"), server_name="pbx.test")


KamailioFactory = Callable[..., Kamailio]


@pytest.fixture
def kamailio_factory(
    tmp_path: Path, peer_pki: TestPki, peer_tracker: list[PeerProcess]
) -> Iterator[KamailioFactory]:
    """``kamailio_factory(config=None, pki=None, **ports)`` starts a Kamailio; all stop at
    teardown. ``pki`` replaces the certificate it serves (see ``make_bad_server_pki``)."""
    require("kamailio")
    require("kamcmd")
    started: list[Kamailio] = []

    def factory(
        config: KamailioConfig | None = None, pki: TestPki | None = None, **ports: int
    ) -> Kamailio:
        kam = Kamailio(tmp_path / f"kamailio{len(started)}", pki or peer_pki, config, **ports)
        started.append(kam)
        peer_tracker.append(kam.process)
        kam.start()
        return kam

    yield factory
    for kam in started:
        kam.close()


@pytest.fixture
def kamailio(kamailio_factory: KamailioFactory) -> Kamailio:
    """A running Kamailio with the default config: users 101-103, expires 60 (2..300)."""
    return kamailio_factory()


BaresipFactory = Callable[..., Baresip]
CaptureFactory = Callable[..., Capture]


@pytest.fixture
async def baresip_factory(
    tmp_path: Path, peer_pki: TestPki, peer_tracker: list[PeerProcess]
) -> AsyncIterator[BaresipFactory]:
    """``baresip_factory(kamailio, "101", transport="tls", tone_hz=1004, ...)`` starts a
    baresip registered (eventually) to ``kamailio`` as that user; all stop at teardown.

    Keyword arguments: ``transport`` (tls/tcp/udp), ``tone_hz`` (the tone it plays, 8 kHz
    WAV) or ``source_wav``, ``mediaenc`` (default ``srtp-mand``), ``regint``, ``answermode``,
    and ``extra_config`` lines for baresip's config file.
    """
    require("baresip")
    started: list[Baresip] = []

    def factory(
        kam: Kamailio,
        user: str,
        *,
        transport: BaresipTransport = "tls",
        tone_hz: float = 1004.0,
        source_wav: Path | None = None,
        mediaenc: MediaEnc = "srtp-mand",
        regint: int = 60,
        answermode: Literal["manual", "auto", "early"] = "manual",
        extra_config: tuple[str, ...] = (),
    ) -> Baresip:
        workdir = tmp_path / f"baresip-{user}-{len(started)}"
        workdir.mkdir(parents=True)
        if source_wav is None:
            source_wav = write_tone_wav(workdir / f"tone-{tone_hz:g}.wav", tone_hz, 30.0)
        sip_user = kam.user(user)
        account = BaresipAccount(
            user=user,
            password=sip_user.password,
            authname=sip_user.authname,
            domain=kam.domain,
            proxy=kam.uri(transport),
            transport=transport,
            mediaenc=mediaenc,
            regint=regint,
            answermode=answermode,
        )
        phone = Baresip(
            workdir, account, source_wav=source_wav, ca_file=peer_pki.ca.cert,
            name=f"baresip-{user}", extra_config=extra_config,
        )
        started.append(phone)
        peer_tracker.append(phone.process)
        phone.start()
        return phone

    yield factory
    for phone in started:
        await phone.aclose()


@pytest.fixture
def capture_factory(tmp_path: Path, peer_tracker: list[PeerProcess]) -> Iterator[CaptureFactory]:
    """``capture_factory(udp_ports=[...], tcp_ports=[...])`` starts tshark on ``lo``."""
    require("tshark")
    started: list[Capture] = []

    def factory(*, udp_ports: Iterable[int] = (), tcp_ports: Iterable[int] = ()) -> Capture:
        cap = Capture(tmp_path / f"capture{len(started)}", udp_ports=udp_ports,
                      tcp_ports=tcp_ports)
        started.append(cap)
        peer_tracker.append(cap.process)
        cap.start()
        return cap

    yield factory
    for cap in started:
        cap.process.stop(timeout=2.0)

