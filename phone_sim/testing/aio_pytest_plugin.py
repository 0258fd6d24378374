"""phone-sim's pytest plugin: emulated D-Series phones as fixtures, against your server, an
Asterisk started from your configuration directory, or phone-sim's embedded lab.

Installed with phone-sim (entry point ``pytest11``: ``phone_sim``); disable it with
``-p no:phone_sim``. Every name starts with ``phone_sim_`` so that it cannot clash with your
own fixtures:

``phone_sim_phone_factory``
    ``await phone_sim_phone_factory(user="101", password="1234")`` builds a phone from a
    :class:`~phone_sim.PhoneConfig` (``build_phone``) aimed at :func:`phone_sim_target`,
    registers it (``register=False`` not to) and returns the :class:`~phone_sim.Phone`.
    Keyword arguments: ``model``, ``firmware``, ``transport``, ``media_encryption``,
    ``server_name``, ``auto_answer``, ``calls`` (:class:`~phone_sim.CallConfig`), ``media``
    (:class:`~phone_sim.MediaOptions`), ``trust`` (:class:`~phone_sim.TrustStore`).
``phone_sim_phone``
    One registered phone with the default user.
``phone_sim_target``
    Where the phones go (:class:`PhoneSimTarget`): ``--phone-sim-server`` when given, else
    the ``phone_sim_asterisk`` Asterisk when ``--phone-sim-asterisk-config`` is given, else
    the embedded lab. Override this fixture to aim the factory elsewhere.
``phone_sim_lab``
    phone-sim's embedded lab (:class:`phone_sim.lab.Lab`: registrar, proxy, echo at 600) on
    free loopback ports, users 101-199 with password 1234.
``phone_sim_asterisk``
    A real Asterisk (:class:`phone_sim.testing.aio_asterisk.Asterisk`) started from the
    configuration directory ``--phone-sim-asterisk-config`` names (``@@NAME@@``
    placeholders, like ``fixtures/asterisk``) on free loopback ports.
``phone_sim_options``
    The options below, resolved.

Real peers (``phone_sim_kamailio``, ``phone_sim_kamailio_factory``,
``phone_sim_baresip_factory``, ``phone_sim_capture_factory``, ``phone_sim_peer_pki``,
``phone_sim_peer_tracker``) come from :mod:`phone_sim.testing.aio_pytest_peers`, part of this
plugin, with ``--phone-sim-require-peers``.

Options (command line, or the same name with underscores in the pytest ini section, e.g.
``phone_sim_server = pbx.example.com:5061``): ``--phone-sim-server HOST[:PORT]``,
``--phone-sim-transport tls|tcp|udp``, ``--phone-sim-ca FILE`` (private root CA loaded onto
the phones), ``--phone-sim-servername NAME``, ``--phone-sim-domain DOMAIN``,
``--phone-sim-model D65``, ``--phone-sim-firmware 2_9_22``, ``--phone-sim-user 101``,
``--phone-sim-password`` (better: ``$PHONE_SIM_PASSWORD``), ``--phone-sim-media-encryption
sdes|none``, ``--phone-sim-asterisk-config DIR``, ``--phone-sim-asterisk-prefix DIR``.

pytest-asyncio: the fixtures are ``pytest_asyncio`` fixtures, so they work in both modes.
In ``asyncio_mode = auto`` write ``async def test_...`` as usual; in the default strict mode
mark each test ``@pytest.mark.asyncio``. Everything is torn down after each test (phones
closed, lab and Asterisk stopped), and a failing test's report carries its phones' SIP
exchange with the SDES keys and digest responses redacted, and Asterisk's log.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from phone_sim.account import Account, SipHost, SipTransport, parse_server
from phone_sim.call.session import CallConfig
from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.firmware import profile_for
from phone_sim.phone.config import MediaOptions, PhoneConfig
from phone_sim.phone.registration import RegistrationSettings
from phone_sim.sip.wirelog import redact_sip
from phone_sim.testing.aio_asterisk import Asterisk, AsteriskMissing, find_asterisk
from phone_sim.testing.aio_process import tail
from phone_sim.testing.siplog import SipCapture
from phone_sim.tls.client import TrustStore

__all__ = ["PhoneFactory", "PhoneSimOptions", "PhoneSimTarget"]

# The real-peer fixtures (phone_sim_kamailio, phone_sim_baresip_factory...) are part of this
# plugin, in a module of their own.
pytest_plugins = ["phone_sim.testing.aio_pytest_peers"]

LAB_PASSWORD = "1234"  # noqa: S105 - the vendor page's example; a loopback-only lab
LAB_USERS = {str(n): LAB_PASSWORD for n in range(101, 200)}
PASSWORD_ENV = "PHONE_SIM_PASSWORD"  # noqa: S105 - the variable's name

_CAPTURE = pytest.StashKey[SipCapture]()
_ASTERISKS = pytest.StashKey[list[Asterisk]]()

# (option name, help) for every setting; the ini key is the name with underscores.
_OPTIONS: tuple[tuple[str, str], ...] = (
    ("server", "the SIP server the phones register to, HOST[:PORT] (default: the embedded "
               "lab, or the Asterisk of --phone-sim-asterisk-config)"),
    ("transport", "tls, tcp or udp (default tls)"),
    ("ca", "private root CA (PEM) loaded onto the phones; several: separate with commas"),
    ("servername", "the server name configured on the phones (TLS name check and SNI)"),
    ("domain", "the SIP domain of From/To (default the server name)"),
    ("model", "phone model (default D65)"),
    ("firmware", "firmware version (default the newest known for the model)"),
    ("user", "the default user of phone_sim_phone against --phone-sim-server"),
    ("password", f"the default password (prefer ${PASSWORD_ENV})"),
    ("media-encryption", "sdes or none (default sdes over TLS, none otherwise)"),
    ("asterisk-config", "an Asterisk configuration directory with @@NAME@@ placeholders "
                        "(like fixtures/asterisk): phone_sim_asterisk starts it"),
    ("asterisk-prefix", "the prefix of the Asterisk build (default: where "
                        "scripts/build-asterisk installs, or $PHONE_SIM_ASTERISK_PREFIX)"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--phone-sim-*`` and the matching ini keys."""
    group = parser.getgroup("phone-sim", "phone-sim emulated phones")
    for name, help_text in _OPTIONS:
        group.addoption(f"--phone-sim-{name}", dest=f"phone_sim_{name.replace('-', '_')}",
                        default=None, help=help_text)
        parser.addini(f"phone_sim_{name.replace('-', '_')}", help_text, default=None)


@dataclass(frozen=True, kw_only=True)
class PhoneSimOptions:
    """The plugin's settings: command line first, then the ini file (then the environment
    for the password)."""

    server: str | None = None
    """``HOST[:PORT]`` of the server under test; None for the lab or Asterisk."""
    transport: SipTransport = SipTransport.TLS
    """The phones' SIP transport."""
    ca_files: tuple[Path, ...] = ()
    """Private root CAs loaded onto the phones (besides the public roots)."""
    server_name: str | None = None
    """The server name configured on the phones."""
    domain: str | None = None
    """The SIP domain."""
    model: str = "D65"
    """The phone model."""
    firmware: str | None = None
    """The firmware version (None: the newest for the model)."""
    user: str | None = None
    """The default user against ``server``."""
    password: str | None = field(default=None, repr=False)
    """The default password (never shown)."""
    media_encryption: str | None = "sdes"
    """``sdes`` or None."""
    asterisk_config: Path | None = None
    """The Asterisk configuration directory for ``phone_sim_asterisk``."""
    asterisk_prefix: Path | None = None
    """The Asterisk build's prefix."""

    @classmethod
    def from_config(cls, config: pytest.Config) -> PhoneSimOptions:
        """Resolve the options of a pytest run; :class:`UsageError` on a bad value."""

        def get(name: str) -> str | None:
            key = f"phone_sim_{name.replace('-', '_')}"
            value = config.getoption(key, default=None) or config.getini(key)
            return str(value).strip() or None if value else None

        def path(value: str) -> Path:
            p = Path(value).expanduser()
            return p if p.is_absolute() else config.rootpath / p

        transport = SipTransport.parse(get("transport") or "tls")
        encryption = get("media-encryption")
        if encryption is None:
            encryption = "sdes" if transport is SipTransport.TLS else "none"
        if encryption not in ("sdes", "none"):
            raise UsageError(f"--phone-sim-media-encryption {encryption!r}: use sdes or none")
        ca = get("ca")
        return cls(
            server=get("server"),
            transport=transport,
            ca_files=tuple(path(p.strip()) for p in ca.split(",") if p.strip()) if ca else (),
            server_name=get("servername"),
            domain=get("domain"),
            model=get("model") or "D65",
            firmware=get("firmware"),
            user=get("user"),
            password=get("password") or os.environ.get(PASSWORD_ENV) or None,
            media_encryption=None if encryption == "none" else "sdes",
            asterisk_config=path(v) if (v := get("asterisk-config")) else None,
            asterisk_prefix=path(v) if (v := get("asterisk-prefix")) else None,
        )


@dataclass(frozen=True, kw_only=True)
class PhoneSimTarget:
    """Where the factory's phones register and how they trust it."""

    kind: str
    """``server``, ``asterisk`` or ``lab``."""
    host: str
    """What the phones dial (a name or an address)."""
    port: int | None
    """The port; None for the transport's default."""
    transport: SipTransport
    """The SIP transport."""
    trust: TrustStore
    """The phones' trust store."""
    server_name: str | None = None
    """The server name configured on the phones."""
    domain: str | None = None
    """The SIP domain."""
    ports: Mapping[str, int] = field(default_factory=dict)
    """Its port per transport (``tls``, ``udp``...) when known: a phone asking for another
    transport than ``transport`` dials that one."""
    passwords: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Known users and their passwords (the lab's, Asterisk's)."""
    default_user: str | None = None
    """The user ``phone_sim_phone`` registers as."""
    default_password: str | None = field(default=None, repr=False)
    """The password for users not in ``passwords``."""
    media_encryption: str | None = "sdes"
    """``sdes`` or None."""

    def password_for(self, user: str) -> str:
        """The password of ``user``; :class:`UsageError` naming the ways to give one."""
        password = self.passwords.get(user) or self.default_password
        if password is None:
            raise UsageError(
                f"no password for user {user!r}: pass password= to the factory, or set "
                f"--phone-sim-password / ${PASSWORD_ENV}"
            )
        return password


PhoneFactory = Callable[..., Awaitable[Any]]


def _fail(exc: PhoneSimError) -> None:
    pytest.fail(f"phone-sim: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def phone_sim_options(pytestconfig: pytest.Config) -> PhoneSimOptions:
    """The plugin's options, resolved from the command line and the ini file."""
    try:
        return PhoneSimOptions.from_config(pytestconfig)
    except PhoneSimError as exc:
        _fail(exc)
        raise  # unreachable: pytest.fail raises


@pytest.fixture
def phone_sim_asterisk(
    request: pytest.FixtureRequest,
    phone_sim_options: PhoneSimOptions,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Asterisk]:
    """A real Asterisk from ``--phone-sim-asterisk-config`` on free loopback ports (skipped,
    with how to build one, when there is no Asterisk build; failed under
    ``--phone-sim-require-peers``)."""
    config_dir = phone_sim_options.asterisk_config
    if config_dir is None:
        pytest.fail("phone_sim_asterisk needs --phone-sim-asterisk-config DIR (or "
                    "phone_sim_asterisk_config in the ini file): an Asterisk configuration "
                    "directory such as phone-sim's fixtures/asterisk", pytrace=False)
    try:
        install = find_asterisk(phone_sim_options.asterisk_prefix)
    except AsteriskMissing as exc:
        # Imported here: pytest_plugins above must be the first to import that module, or
        # pytest warns that it cannot rewrite its asserts.
        from phone_sim.testing.aio_pytest_peers import missing_peer  # noqa: PLC0415

        missing_peer(exc)
    pbx = Asterisk(tmp_path_factory.mktemp("asterisk"), config_dir, install=install)
    request.node.stash.setdefault(_ASTERISKS, []).append(pbx)
    try:
        pbx.start()
    except PhoneSimError as exc:
        pbx.close()
        _fail(exc)
    yield pbx
    pbx.close()


def _lab_fixture() -> Callable[..., AsyncIterator[Any]]:
    async def phone_sim_lab() -> AsyncIterator[Any]:
        """phone-sim's embedded lab on free loopback ports: users 101-199, password 1234,
        echo at 600."""
        from phone_sim.lab import Lab  # noqa: PLC0415 - the lab loads only when asked for

        async with Lab(LAB_USERS) as lab:
            yield lab

    return phone_sim_lab


@pytest.fixture
def phone_sim_target(
    request: pytest.FixtureRequest, phone_sim_options: PhoneSimOptions
) -> PhoneSimTarget:
    """Where the phones go: ``--phone-sim-server``, else ``phone_sim_asterisk`` when an
    Asterisk configuration is named, else ``phone_sim_lab``."""
    opts = phone_sim_options
    try:
        if opts.server:
            host, port = parse_server(opts.server, opts.transport)
            return PhoneSimTarget(
                kind="server", host=host, port=port, transport=opts.transport,
                trust=TrustStore.from_files(list(opts.ca_files)) if opts.ca_files
                else TrustStore(),
                server_name=opts.server_name, domain=opts.domain, default_user=opts.user,
                default_password=opts.password, media_encryption=opts.media_encryption,
            )
        if opts.asterisk_config is not None:
            pbx: Asterisk = request.getfixturevalue("phone_sim_asterisk")
            tls = opts.transport is SipTransport.TLS
            return PhoneSimTarget(
                kind="asterisk", host="127.0.0.1",
                port=pbx.tls_port if tls else pbx.udp_port, transport=opts.transport,
                ports={"tls": pbx.tls_port, "udp": pbx.udp_port},
                trust=TrustStore.from_files([pbx.certs.ca_file], public_roots=False),
                server_name=pbx.server_name, domain=opts.domain,
                passwords={u.user: u.password for u in pbx.users},
                default_user=pbx.users[0].user if pbx.users else None,
                default_password=opts.password, media_encryption=opts.media_encryption,
            )
        lab = request.getfixturevalue("phone_sim_lab")
        transport = opts.transport.value
        return PhoneSimTarget(
            kind="lab", host=lab.host, port=lab.ports[transport], transport=opts.transport,
            ports=dict(lab.ports),
            trust=TrustStore.from_files([lab.ca_file], public_roots=False),
            server_name=lab.server_name, domain=lab.server_name, passwords=LAB_USERS,
            default_user="101", media_encryption=opts.media_encryption,
        )
    except PhoneSimError as exc:
        _fail(exc)
        raise  # unreachable


def _factory_fixture() -> Callable[..., AsyncIterator[PhoneFactory]]:
    async def phone_sim_phone_factory(
        request: pytest.FixtureRequest,
        phone_sim_target: PhoneSimTarget,
        phone_sim_options: PhoneSimOptions,
    ) -> AsyncIterator[PhoneFactory]:
        """``await phone_sim_phone_factory(user=..., password=..., **options)``: a
        registered phone aimed at ``phone_sim_target``; all are closed after the test."""
        from phone_sim.phone.aio import build_phone  # noqa: PLC0415 - loads the media stack

        capture = request.node.stash.get(_CAPTURE, None)
        if capture is None:
            capture = request.node.stash[_CAPTURE] = SipCapture()
        capture.attach()
        target = phone_sim_target
        opts = phone_sim_options
        try:
            async with AsyncExitStack() as stack:

                async def factory(
                    user: str | None = None,
                    password: str | None = None,
                    *,
                    register: bool = True,
                    model: str | None = None,
                    firmware: str | None = None,
                    transport: SipTransport | str | None = None,
                    media_encryption: str | None = "default",
                    server_name: str | None = None,
                    auto_answer: bool = False,
                    calls: CallConfig | None = None,
                    media: MediaOptions | None = None,
                    trust: TrustStore | None = None,
                    register_timeout: float = 10.0,
                ) -> Any:
                    user = user or target.default_user
                    if user is None:
                        raise UsageError("which user? pass user= to the factory or set "
                                         "--phone-sim-user")
                    if isinstance(transport, str):
                        transport = SipTransport.parse(transport)
                    transport = transport or target.transport
                    port = (target.port if transport is target.transport
                            else target.ports.get(transport.value))
                    encryption = (target.media_encryption if media_encryption == "default"
                                  else media_encryption)
                    account = Account(
                        username=user,
                        password=password if password is not None else target.password_for(user),
                        host_primary=SipHost(server=target.host, port=port, transport=transport,
                                             media_encryption=encryption),
                        server_name=server_name or target.server_name,
                        domain=target.domain,
                    )
                    config = PhoneConfig(
                        profile=profile_for(model or opts.model, firmware or opts.firmware),
                        accounts=(account,),
                        trust=trust or target.trust,
                        registration=RegistrationSettings(register_timeout=register_timeout),
                        calls=calls or CallConfig(),
                        media=media or MediaOptions(),
                        auto_answer=auto_answer,
                    )
                    phone = await stack.enter_async_context(build_phone(config))
                    if register:
                        await phone.register(timeout=register_timeout)
                    return phone

                yield factory
        finally:
            capture.detach()

    return phone_sim_phone_factory


def _phone_fixture() -> Callable[..., AsyncIterator[Any]]:
    async def phone_sim_phone(phone_sim_phone_factory: PhoneFactory) -> AsyncIterator[Any]:
        """One phone with the target's default user, registered."""
        yield await phone_sim_phone_factory()

    return phone_sim_phone


if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    phone_sim_lab = pytest_asyncio.fixture(_lab_fixture())
    phone_sim_phone_factory = pytest_asyncio.fixture(_factory_fixture())
    phone_sim_phone = pytest_asyncio.fixture(_phone_fixture())
else:  # pragma: no cover - phone-sim[pytest] brings pytest-asyncio

    def _needs_pytest_asyncio() -> None:
        pytest.fail("phone-sim's async fixtures need pytest-asyncio: "
                    "pip install 'phone-sim[pytest]'", pytrace=False)

    phone_sim_lab = pytest.fixture(name="phone_sim_lab")(_needs_pytest_asyncio)
    phone_sim_phone_factory = pytest.fixture(name="phone_sim_phone_factory")(
        _needs_pytest_asyncio)
    phone_sim_phone = pytest.fixture(name="phone_sim_phone")(_needs_pytest_asyncio)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report carries its phones' SIP exchange and Asterisk's log, with
    SDES keys and digest responses redacted."""
    report = yield
    if report.failed:
        capture = item.stash.get(_CAPTURE, None)
        if capture is not None:
            report.sections.append(("phone-sim SIP exchange", capture.report()))
        for pbx in item.stash.get(_ASTERISKS, []):
            report.sections.append(
                (f"phone-sim asterisk log ({pbx.workdir})", redact_sip(tail(pbx.log_text(), 200)))
            )
    return report
