"""A real Asterisk 22 from the project's fixtures (fixtures/asterisk), for tests marked
``asterisk``.

It is found where scripts/build-asterisk installs it (scripts/test builds it once per
machine). Without a build the tests skip with a reason that says how to get one, except when
CI is set: there they fail, so that CI cannot pass without having tested Asterisk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from phone_sim import (
    Account,
    CallConfig,
    FirmwareProfile,
    Phone,
    PhoneConfig,
    RegistrationSettings,
    SipHost,
    SipTransport,
    TrustStore,
    build_phone,
    profile_for,
)
from phone_sim.sip.wirelog import redact_sip
from phone_sim.testing.aio_asterisk import Asterisk, AsteriskInstall, AsteriskMissing, find_asterisk
from phone_sim.testing.aio_process import tail
from phone_sim.testing.aio_pytest_peers import missing_peer

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "asterisk"
PROFILE = profile_for("D65", "2_9_22")
FAST = RegistrationSettings(register_timeout=10.0, unregister_timeout=2.0)

_STARTED = pytest.StashKey[list[Asterisk]]()


@pytest.fixture(scope="session")
def asterisk_install() -> AsteriskInstall:
    """The Asterisk build the tests run (skip, or fail under CI, when there is none)."""
    try:
        return find_asterisk()
    except AsteriskMissing as exc:
        missing_peer(exc)  # skips, or under CI (tests/peer_rules.py) fails


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report carries the log of every Asterisk it started (redacted)."""
    report = yield
    if report.failed:
        for pbx in item.stash.get(_STARTED, []):
            # Asterisk logs every SIP message (sip_debug): keys and digests are redacted.
            text = redact_sip(tail(pbx.log_text(), 300))
            report.sections.append((f"asterisk log ({pbx.workdir})", text))
    return report


AsteriskFactory = Callable[..., Asterisk]


@pytest.fixture
def asterisk_factory(
    request: pytest.FixtureRequest, tmp_path: Path, asterisk_install: AsteriskInstall
) -> Iterator[AsteriskFactory]:
    """``asterisk_factory(**kwargs)`` starts an Asterisk from fixtures/asterisk (keyword
    arguments go to :class:`Asterisk`); all stop at teardown."""
    started: list[Asterisk] = []
    request.node.stash[_STARTED] = started

    def factory(**kwargs: object) -> Asterisk:
        pbx = Asterisk(tmp_path / f"asterisk{len(started)}", FIXTURES,
                       install=asterisk_install, **kwargs)  # type: ignore[arg-type]
        started.append(pbx)
        pbx.start()
        return pbx

    yield factory
    for pbx in started:
        pbx.close()


@pytest.fixture
def asterisk(asterisk_factory: AsteriskFactory) -> Asterisk:
    """A running Asterisk with the project's configuration: users 101-199, password 1234."""
    return asterisk_factory()


def account(
    pbx: Asterisk,
    user: str,
    *,
    transport: SipTransport = SipTransport.TLS,
    sdes: bool = True,
    server_name: str | None = None,
) -> Account:
    """An account of ``user`` on ``pbx`` dialled at 127.0.0.1 (TLS checked against the
    certificate's name unless ``server_name`` says otherwise)."""
    port = pbx.tls_port if transport is SipTransport.TLS else pbx.udp_port
    host = SipHost(server="127.0.0.1", port=port, transport=transport,
                   media_encryption="sdes" if sdes else None, reregister=300)
    return Account(username=user, password=pbx.user(user).password, host_primary=host,
                   server_name=server_name or pbx.server_name)


def phone_config(
    pbx: Asterisk,
    user: str,
    *,
    profile: FirmwareProfile = PROFILE,
    trust: TrustStore | None = None,
    calls: CallConfig | None = None,
    auto_answer: bool = False,
    transport: SipTransport = SipTransport.TLS,
    sdes: bool = True,
    server_name: str | None = None,
) -> PhoneConfig:
    """A phone of ``user`` that trusts the Asterisk's private CA (unless ``trust``)."""
    if trust is None:
        trust = TrustStore.from_files([pbx.certs.ca_file], public_roots=False)
    return PhoneConfig(
        profile=profile,
        accounts=(account(pbx, user, transport=transport, sdes=sdes, server_name=server_name),),
        trust=trust, registration=FAST, calls=calls or CallConfig(), auto_answer=auto_answer,
    )


PhoneFactory = Callable[..., Awaitable[Phone]]


@pytest.fixture
async def phones(asterisk: Asterisk) -> AsyncIterator[PhoneFactory]:
    """``await phones("101", register=True, **phone_config_options)``: a phone on the
    ``asterisk`` fixture, registered unless told not to; all closed at teardown."""
    async with AsyncExitStack() as stack:

        async def factory(user: str, *, register: bool = True, **options: object) -> Phone:
            phone = await stack.enter_async_context(
                build_phone(phone_config(asterisk, user, **options)))  # type: ignore[arg-type]
            if register:
                await phone.register(timeout=10)
            return phone

        yield factory
