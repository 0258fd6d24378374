"""pytest fixtures and hooks for tests against real peers (Kamailio, baresip, SIPp, tshark).

``tests/peers/conftest.py`` imports this module. Tests elsewhere get the same fixtures with
``from tests.peers.plugin import *`` in their own ``conftest.py`` (or the root conftest may
list ``pytest_plugins = ["tests.peers.plugin"]``).

Every peer started through these fixtures is stopped at teardown, even when the test fails,
and a failing test's report carries the log of every peer it started.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.peers import _process
from tests.peers._process import PeerMissing, PeerProcess, tail
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
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A TEST-ONLY CA and a server certificate for ``pbx.test`` and 127.0.0.1."""
    return make_test_pki(tmp_path_factory.mktemp("pki"), server_name="pbx.test")


KamailioFactory = Callable[..., Kamailio]


@pytest.fixture
def kamailio_factory(
    tmp_path: Path, test_pki: TestPki, peer_tracker: list[PeerProcess]
) -> Iterator[KamailioFactory]:
    """``kamailio_factory(config=None, **ports)`` starts a Kamailio; all stop at teardown."""
    require("kamailio")
    require("kamcmd")
    started: list[Kamailio] = []

    def factory(config: KamailioConfig | None = None, **ports: int) -> Kamailio:
        kam = Kamailio(tmp_path / f"kamailio{len(started)}", test_pki, config, **ports)
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
