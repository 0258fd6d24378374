"""phone-sim's pytest fixtures for real peers: Kamailio, baresip and tshark on free loopback
ports, with a TEST-ONLY PKI.

Part of phone-sim's pytest plugin (:mod:`phone_sim.testing.aio_pytest_plugin` loads it), so
``-p no:phone_sim`` turns it off too. Every name starts with ``phone_sim_``:

``phone_sim_peer_pki`` (session)
    A :class:`~phone_sim.testing.certs.TestPki`: a TEST-ONLY CA and a server certificate for
    ``pbx.test`` and 127.0.0.1, which the peers present.
``phone_sim_kamailio``
    A running :class:`~phone_sim.testing.aio_kamailio.Kamailio` registrar/proxy with the
    default :class:`~phone_sim.testing.kamailio_config.KamailioConfig` (users 101-103).
``phone_sim_kamailio_factory``
    ``phone_sim_kamailio_factory(config=None, pki=None, **ports)`` starts more, or other ones.
``phone_sim_baresip_factory``
    ``phone_sim_baresip_factory(kamailio, "101", transport="tls", tone_hz=1004, ...)`` starts
    a :class:`~phone_sim.testing.aio_baresip.Baresip` phone registering to that Kamailio.
``phone_sim_capture_factory``
    ``phone_sim_capture_factory(udp_ports=[...], tcp_ports=[...])`` starts a
    :class:`~phone_sim.testing.aio_capture.Capture` (tshark on ``lo``).
``phone_sim_peer_tracker``
    The peer processes this test started; at teardown it kills whatever a test left running.

Every peer is stopped at teardown, even when the test fails, and a failing test's report
carries the log of every peer it started (``peer log: kamailio (...)`` sections).

A test that needs a peer program that is not installed is skipped, the reason naming the
Debian package to install (:func:`require`); with ``--phone-sim-require-peers`` (ini
``phone_sim_require_peers = true``), as a CI job that must not pass without its peers wants,
it fails instead. The same holds for ``phone_sim_asterisk`` without an Asterisk build.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Literal, NoReturn

import pytest

from phone_sim.testing import aio_process
from phone_sim.testing.aio_baresip import Baresip, BaresipAccount, BaresipTransport, MediaEnc
from phone_sim.testing.aio_capture import Capture
from phone_sim.testing.aio_kamailio import Kamailio, KamailioConfig
from phone_sim.testing.aio_process import PeerMissing, PeerProcess, tail
from phone_sim.testing.audio import write_tone_wav
from phone_sim.testing.certs import TestPki, make_test_pki

__all__ = [
    "BaresipFactory",
    "CaptureFactory",
    "KamailioFactory",
    "missing_peer",
    "peers_required",
    "require",
]

_STARTED = pytest.StashKey[list[PeerProcess]]()
_REQUIRE_OPTION = "phone_sim_require_peers"
_REQUIRE_HELP = ("fail, instead of skip, a test whose real peer (kamailio, baresip, sipp, "
                 "tshark) is not installed, as a CI job that must test them wants")

# The configured pytest runs, innermost last (pytester runs one inside another): require()
# asks the one whose test is running.
_CONFIGS: list[pytest.Config] = []

KamailioFactory = Callable[..., Kamailio]
BaresipFactory = Callable[..., Baresip]
CaptureFactory = Callable[..., Capture]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--phone-sim-require-peers`` and its ini key."""
    group = parser.getgroup("phone-sim", "phone-sim emulated phones")
    group.addoption("--phone-sim-require-peers", dest=_REQUIRE_OPTION, action="store_true",
                    default=None, help=_REQUIRE_HELP)
    parser.addini(_REQUIRE_OPTION, _REQUIRE_HELP, type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    """Make this run the one :func:`require` asks."""
    _CONFIGS.append(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Forget this run."""
    if config in _CONFIGS:
        _CONFIGS.remove(config)


def peers_required() -> bool:
    """Whether the running pytest wants a missing peer to fail its test
    (``--phone-sim-require-peers`` or ``phone_sim_require_peers = true``)."""
    if not _CONFIGS:
        return False
    config = _CONFIGS[-1]
    option = config.getoption(_REQUIRE_OPTION, default=None)
    return bool(option) if option is not None else bool(config.getini(_REQUIRE_OPTION))


def missing_peer(exc: PeerMissing) -> NoReturn:
    """Skip the running test because of ``exc`` (a peer that is not installed, the message
    saying how to get it), or fail it under ``--phone-sim-require-peers``."""
    if peers_required():
        pytest.fail(f"{exc}, and this run requires every real peer "
                    "(--phone-sim-require-peers)", pytrace=False)
    pytest.skip(str(exc))


def require(binary: str) -> str:
    """The path of the peer program ``binary``; when it is missing, skip the test, or fail
    it under ``--phone-sim-require-peers``, naming the Debian package that installs it."""
    try:
        return aio_process.which(binary)
    except PeerMissing as exc:
        missing_peer(exc)


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
def phone_sim_peer_tracker(request: pytest.FixtureRequest) -> Iterator[list[PeerProcess]]:
    """The peer processes this test started (for the failure report); at teardown, whatever
    the test left running is killed, whoever started it."""
    before = set(aio_process.RUNNING)
    started: list[PeerProcess] = []
    request.node.stash[_STARTED] = started
    yield started
    for peer in list(aio_process.RUNNING - before):
        peer.stop(timeout=2.0)


@pytest.fixture(scope="session")
def phone_sim_peer_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A TEST-ONLY CA and a server certificate for ``pbx.test`` and 127.0.0.1."""
    return make_test_pki(tmp_path_factory.mktemp("pki"), server_name="pbx.test")


@pytest.fixture
def phone_sim_kamailio_factory(
    tmp_path: Path, phone_sim_peer_pki: TestPki, phone_sim_peer_tracker: list[PeerProcess]
) -> Iterator[KamailioFactory]:
    """``phone_sim_kamailio_factory(config=None, pki=None, **ports)`` starts a Kamailio; all
    stop at teardown. ``pki`` replaces the certificate it serves (``make_bad_server_pki``)."""
    require("kamailio")
    require("kamcmd")
    started: list[Kamailio] = []

    def factory(
        config: KamailioConfig | None = None, pki: TestPki | None = None, **ports: int
    ) -> Kamailio:
        kam = Kamailio(tmp_path / f"kamailio{len(started)}", pki or phone_sim_peer_pki, config,
                       **ports)
        started.append(kam)
        phone_sim_peer_tracker.append(kam.process)
        kam.start()
        return kam

    yield factory
    for kam in started:
        kam.close()


@pytest.fixture
def phone_sim_kamailio(phone_sim_kamailio_factory: KamailioFactory) -> Kamailio:
    """A running Kamailio with the default config: users 101-103, expires 60 (2..300)."""
    return phone_sim_kamailio_factory()


@pytest.fixture
def phone_sim_capture_factory(
    tmp_path: Path, phone_sim_peer_tracker: list[PeerProcess]
) -> Iterator[CaptureFactory]:
    """``phone_sim_capture_factory(udp_ports=[...], tcp_ports=[...])`` starts tshark on
    ``lo``, filtered on those ports; all stop at teardown."""
    require("tshark")
    started: list[Capture] = []

    def factory(*, udp_ports: Iterable[int] = (), tcp_ports: Iterable[int] = ()) -> Capture:
        cap = Capture(tmp_path / f"capture{len(started)}", udp_ports=udp_ports,
                      tcp_ports=tcp_ports)
        started.append(cap)
        phone_sim_peer_tracker.append(cap.process)
        cap.start()
        return cap

    yield factory
    for cap in started:
        cap.process.stop(timeout=2.0)


def _baresip_fixture() -> Callable[..., AsyncIterator[BaresipFactory]]:
    async def phone_sim_baresip_factory(
        tmp_path: Path, phone_sim_peer_pki: TestPki, phone_sim_peer_tracker: list[PeerProcess]
    ) -> AsyncIterator[BaresipFactory]:
        """``phone_sim_baresip_factory(kamailio, "101", transport="tls", tone_hz=1004, ...)``
        starts a baresip registered (eventually) to ``kamailio`` as that user; all stop at
        teardown.

        Keyword arguments: ``transport`` (tls/tcp/udp), ``tone_hz`` (the tone it plays, 8 kHz
        WAV) or ``source_wav``, ``mediaenc`` (default ``srtp-mand``), ``regint``,
        ``answermode``, and ``extra_config`` lines for baresip's config file.
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
                workdir, account, source_wav=source_wav, ca_file=phone_sim_peer_pki.ca.cert,
                name=f"baresip-{user}", extra_config=extra_config,
            )
            started.append(phone)
            phone_sim_peer_tracker.append(phone.process)
            phone.start()
            return phone

        yield factory
        for phone in started:
            await phone.aclose()

    return phone_sim_baresip_factory


if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    phone_sim_baresip_factory = pytest_asyncio.fixture(_baresip_fixture())
else:  # pragma: no cover - phone-sim[pytest] brings pytest-asyncio

    def _needs_pytest_asyncio() -> None:
        pytest.fail("phone-sim's async fixtures need pytest-asyncio: "
                    "pip install 'phone-sim[pytest]'", pytrace=False)

    phone_sim_baresip_factory = pytest.fixture(name="phone_sim_baresip_factory")(
        _needs_pytest_asyncio)
