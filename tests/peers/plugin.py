"""pytest fixtures and hooks for tests against real peers (Kamailio, baresip, SIPp, tshark).

The root ``tests/conftest.py`` loads this module as a plugin (``pytest_plugins``), so every
test gets the fixtures and the hooks. A pytest run elsewhere gets them with
``-p tests.peers.plugin``.

Every peer started through these fixtures is stopped at teardown, even when the test fails,
and a failing test's report carries the log of every peer it started.

Two rules keep the suite honest:

- In CI (``CI`` set, as CI services set it: ``CI=true``), a missing peer binary fails the test
  that needs it; elsewhere it skips with the reason, for a developer without the packages.
- The ``peer`` marker is exactly the set of tests that start a peer: a test that looks up a
  peer binary (every fixture, peer class and :func:`require` does) without the marker fails,
  and so does a passing test with the marker that never looked one up. ``-m "not peer"`` thus
  runs no peer and deselects nothing that needs none.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Literal

import pytest

from phone_sim.testing import aio_process as _process
from phone_sim.testing.aio_baresip import Baresip, BaresipAccount, BaresipTransport, MediaEnc
from phone_sim.testing.aio_capture import Capture
from phone_sim.testing.aio_kamailio import Kamailio, KamailioConfig
from phone_sim.testing.aio_process import PeerMissing, PeerProcess, tail
from phone_sim.testing.audio import write_tone_wav
from phone_sim.testing.certs import TestPki, make_test_pki

_STARTED = pytest.StashKey[list[PeerProcess]]()

#: The programs the peer tests run (``dumpcap`` is tshark's capture helper).
PEER_BINARIES = ("kamailio", "kamcmd", "baresip", "sipp", "tshark", "dumpcap")

#: Fixtures that find a peer once per session, outside :func:`aio_process.which`
#: (the Asterisk build, tests/asterisk/conftest.py): a test that uses one starts that peer.
PEER_FIXTURES = {"asterisk_install": "asterisk"}


def in_ci() -> bool:
    """Whether this is a CI run, where every real peer must be installed (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(binary: str) -> str:
    """The path of ``binary``; if it is missing, fail the test in CI, else skip it, naming
    what is missing."""
    try:
        return _process.which(binary)
    except PeerMissing as exc:
        if in_ci():
            pytest.fail(f"{exc}; CI={os.environ['CI']} requires every real peer (a developer "
                        "without them gets skips: run without CI)", pytrace=False)
        pytest.skip(str(exc))


def peer_marker_problem(marked: bool, looked_up: Iterable[str]) -> str | None:
    """Why a passing test's ``peer`` marker is wrong, or ``None`` when it is right."""
    used = sorted(set(looked_up))
    if used and not marked:
        return (f"this test starts a real peer ({', '.join(used)}) but is not marked "
                "@pytest.mark.peer: -m 'not peer' would run it")
    if marked and not used:
        return ("this test is marked @pytest.mark.peer but started no peer: -m 'not peer' "
                "would deselect it for nothing; remove the mark")
    return None


def pytest_report_header(config: pytest.Config) -> str:
    """Which peers this run has, and what a missing one does."""
    missing = [b for b in PEER_BINARIES if _process.locate(b) is None]
    rule = "CI: a test that needs a missing peer fails" if in_ci() else (
        "a test that needs a missing peer is skipped (CI=true makes it fail)")
    have = "all installed" if not missing else f"missing {', '.join(missing)}"
    return f"peers: {have}; {rule}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Start recording which peer binaries this test looks up (its fixtures included)."""
    _process.LOOKED_UP.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a passing test whose ``peer`` marker does not match the peers it started."""
    yield  # re-raises what the test raised: only a passing test is checked
    fixtures = getattr(item, "fixturenames", ())
    used = _process.LOOKED_UP | {peer for name, peer in PEER_FIXTURES.items() if name in fixtures}
    problem = peer_marker_problem(item.get_closest_marker("peer") is not None, used)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


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

