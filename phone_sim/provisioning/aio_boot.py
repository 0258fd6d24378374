"""The boot of a D-Series phone, on asyncio: discover, fetch, apply, register, stay up.

::

    booted = await boot(BootOptions(mac="00:0f:d3:01:02:03", model="D65", firmware="2_9_2"),
                        on_event=print)
    ...                                   # the phones answer calls (auto-answer, echo)
    await booted.close()

1. **Discovery** (:mod:`.aio_discovery`), unless a ``config_server_url`` is given or the
   model is a D80 (which does not use mDNS): one server is used after ``countdown``
   seconds, several need ``server_choice``, none is :class:`DiscoveryFailed`;
2. **fetch** (:mod:`.aio_fetch`): the firmware's TLS policy applies;
3. **apply** (:mod:`.apply`): the XML becomes a :class:`~phone_sim.phone.config.PhoneConfig`;
   what is not applied is reported, an offered firmware is reported as an upgrade;
4. **register** every enabled, registering account (one :class:`Phone`, every line);
5. **stay up**: :meth:`BootedPhone.serve` reports registration and call events, and a
   ``NOTIFY Event: check-sync`` (the phone takes it only from a server a line registered
   with) re-fetches the configuration and applies it with ``Phone.reconfigure``: changed or
   new lines register, removed ones unregister, calls go on.

Each step is reported as it happens through *on_event* (frozen dataclasses below).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from phone_sim.account import Account
from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.firmware import Model, profile_for
from phone_sim.phone import (
    MediaOptions,
    NetworkOptions,
    Phone,
    PhoneConfig,
    RegistrationFailed,
    RegistrationSettings,
    RegistrationSucceeded,
    ReprovisionRequested,
    build_phone,
    normalize_mac,
)
from phone_sim.provisioning.aio_discovery import DEFAULT_MDNS_INTERFACES, ServerBrowser, browse
from phone_sim.provisioning.aio_fetch import FetchedConfig, fetch_config
from phone_sim.provisioning.apply import ProvisionedConfig, apply_phone_xml
from phone_sim.provisioning.discovery import DiscoveredServer, choose_server, uses_mdns
from phone_sim.provisioning.errors import ConfigUnusable
from phone_sim.provisioning.phone_xml import PhoneXmlError, parse_phone_xml
from phone_sim.tls.client import TrustStore

__all__ = [
    "AccountRegistered",
    "AccountRegistrationFailed",
    "AccountRegistrationStarted",
    "BootEvent",
    "BootOptions",
    "BootedPhone",
    "ConfigApplied",
    "ConfigReceived",
    "CountdownStarted",
    "DiscoverySkipped",
    "DiscoveryStarted",
    "PhoneEventSeen",
    "Reprovisioned",
    "ServerChosen",
    "ServerFound",
    "boot",
    "default_interfaces",
    "discover",
    "provision",
]


@dataclass(frozen=True, kw_only=True)
class BootOptions:
    """One phone to boot."""

    mac: str
    """Its MAC (any notation)."""
    model: Model | str
    """Its model."""
    firmware: str | None = None
    """Its firmware (default: the newest known for the model)."""
    config_url: str | None = None
    """A ``config_server_url`` already set: discovery is skipped."""
    pin: str | None = field(default=None, repr=False)
    """The PIN the user types when the server asks for one."""
    trust: TrustStore = field(default_factory=TrustStore)
    """What the phone trusts before provisioning (public roots; a CA loaded by hand)."""
    mdns_interfaces: tuple[str, ...] = DEFAULT_MDNS_INTERFACES
    """Where discovery multicasts (loopback unless told otherwise)."""
    discovery_timeout: float = 5.0
    """How long to wait for a first server."""
    server_choice: str | None = None
    """The server to take among several (instance name or address)."""
    countdown: float = 3.0
    """Seconds before the phone connects to the one server it found."""
    accept: Callable[[DiscoveredServer], bool] | None = None
    """Ignore advertisements this rejects (another lab on the same loopback)."""
    fetch_timeout: float = 10.0
    """How long the configuration fetch may take."""
    register_timeout: float = 32.0
    """How long each account's first registration may take."""
    network: NetworkOptions = field(default_factory=NetworkOptions)
    """Where the phone lives."""
    auto_answer: bool = True
    """Answer incoming calls at once and echo the caller's audio."""
    registration: RegistrationSettings | None = None
    """Registration timing the XML does not set (its ``udp_ka_interval`` still applies);
    default: the phone's own."""
    media: MediaOptions | None = None
    """Codecs and media options the XML does not set; default: the phone's own."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", normalize_mac(self.mac))
        for name in ("discovery_timeout", "fetch_timeout", "register_timeout"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name.replace('_', ' ')} must be positive")
        if self.countdown < 0:
            raise UsageError("the countdown cannot be negative")


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoverySkipped:
    """No mDNS: a ``config_server_url`` was given, or the model is a D80."""

    reason: str
    """Why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryStarted:
    """Browsing ``_digiumproxy._udp``."""

    interfaces: tuple[str, ...]
    """Where."""
    timeout: float
    """For how long at most."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerFound:
    """An advertisement resolved."""

    server: DiscoveredServer
    """What it says."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerChosen:
    """The server the phone will use."""

    server: DiscoveredServer
    """It."""
    found: int
    """How many were found."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CountdownStarted:
    """One server found: the phone connects after a countdown (Ctrl-C stops it)."""

    seconds: float
    """How long."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReceived:
    """The configuration document arrived."""

    fetched: FetchedConfig
    """Where from, and the bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigApplied:
    """The document configures the phone."""

    provisioned: ProvisionedConfig
    """The resulting PhoneConfig and the report."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRegistrationStarted:
    """An account starts registering."""

    account: Account
    """It."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRegistered:
    """An account's first registration succeeded."""

    account: Account
    """It."""
    result: RegistrationSucceeded
    """The registrar's answer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRegistrationFailed:
    """An account's first registration failed (the boot fails with this error)."""

    account: Account
    """It."""
    error: PhoneSimError
    """Why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneEventSeen:
    """An event of the booted phone (``phone_sim.phone``'s registration and call events)."""

    account: Account | None
    """The line it concerns, when it names one."""
    event: object
    """The phone's event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reprovisioned:
    """A check-sync NOTIFY made the phone fetch its configuration again."""

    applied: bool
    """Whether the new configuration was applied to the running phone."""
    detail: str
    """What happened."""


BootEvent = (
    DiscoverySkipped | DiscoveryStarted | ServerFound | ServerChosen | CountdownStarted
    | ConfigReceived | ConfigApplied | AccountRegistrationStarted | AccountRegistered
    | AccountRegistrationFailed | PhoneEventSeen | Reprovisioned
)


# -- the boot ------------------------------------------------------------------------------------


async def discover(
    options: BootOptions,
    on_event: Callable[[BootEvent], None],
    *,
    browser: ServerBrowser | None = None,
) -> str:
    """Step 1: the config URL (given, or found over mDNS). *browser* is an open browse to
    ask instead of browsing anew (a fleet shard shares one among its phones)."""
    model = Model.parse(options.model) if isinstance(options.model, str) else options.model
    if options.config_url:
        on_event(DiscoverySkipped(reason="config_server_url is set"))
        return options.config_url
    if not uses_mdns(model):
        raise UsageError(f"the {model.value} does not use mDNS: give its configuration server "
                         "with --config-url")
    on_event(DiscoveryStarted(interfaces=options.mdns_interfaces,
                              timeout=options.discovery_timeout))
    if browser is not None:
        servers = await browser.servers(timeout=options.discovery_timeout,
                                        wanted=options.server_choice)
        if options.accept is not None:
            servers = [s for s in servers if options.accept(s)]
        for server in servers:
            on_event(ServerFound(server=server))
    else:
        servers = await browse(interfaces=options.mdns_interfaces,
                               timeout=options.discovery_timeout,
                               wanted=options.server_choice, accept=options.accept,
                               on_found=lambda s: on_event(ServerFound(server=s)))
    chosen = choose_server(servers, options.server_choice, timeout=options.discovery_timeout)
    on_event(ServerChosen(server=chosen, found=len(servers)))
    if options.server_choice is None and options.countdown > 0:
        on_event(CountdownStarted(seconds=options.countdown))
        await asyncio.sleep(options.countdown)
    url = chosen.config_url
    assert url is not None  # choose_server returns usable servers only
    return url.label


async def provision(
    options: BootOptions, url: str, on_event: Callable[[BootEvent], None]
) -> ProvisionedConfig:
    """Steps 2 and 3: fetch from *url* and apply."""
    profile = profile_for(options.model, options.firmware)
    fetched = await fetch_config(url, mac=options.mac, profile=profile, trust=options.trust,
                                 pin=options.pin, timeout=options.fetch_timeout,
                                 local_host=options.network.local_host)
    on_event(ConfigReceived(fetched=fetched))
    try:
        provisioned = apply_phone_xml(
            parse_phone_xml(fetched.document), model=profile.model, firmware=profile.version,
            mac=options.mac, trust=options.trust, registration=options.registration,
            media=options.media, network=options.network, auto_answer=options.auto_answer,
        )
    except PhoneXmlError as exc:
        raise ConfigUnusable(f"the configuration from {fetched.url} cannot configure this "
                             f"phone: {exc}") from None
    on_event(ConfigApplied(provisioned=provisioned))
    return provisioned


class BootedPhone:
    """A phone that booted: its configuration and the :class:`Phone` with every line.

    One task reads the phone's event stream from the start: during the boot it turns each
    line's first outcome into :class:`AccountRegistered` or
    :class:`AccountRegistrationFailed`; once up, every event is reported as
    :class:`PhoneEventSeen`, and a check-sync (which the phone accepts only from a server a
    line registered with) re-provisions the phone."""

    def __init__(
        self,
        options: BootOptions,
        config_url: str,
        provisioned: ProvisionedConfig,
        phone: Phone,
        on_event: Callable[[BootEvent], None],
    ) -> None:
        self.options = options
        self.config_url = config_url
        self.provisioned = provisioned
        self.phone = phone
        self._on_event = on_event
        self._up = False
        self._closed = False
        self._first: set[int] = set()
        self._all_first = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher = asyncio.ensure_future(self._watch(phone.events()))

    @property
    def config(self) -> PhoneConfig:
        """The configuration in force."""
        return self.provisioned.config

    @property
    def lines(self) -> tuple[Account, ...]:
        """The lines that register, by index."""
        return self.config.registering_accounts

    def _account(self, index: object) -> Account | None:
        if not isinstance(index, int):
            return None
        return next((a for a in self.config.accounts if a.index == index), None)

    async def _register(self) -> None:
        lines = self.lines
        for account in lines:
            self._on_event(AccountRegistrationStarted(account=account))
        await self.phone.register(timeout=self.options.register_timeout)
        # The phone dispatched every line's first outcome before register() returned; the
        # watcher reports them in the order they came.
        async with asyncio.timeout(5.0):
            await self._all_first.wait()
        self._up = True

    async def _watch(self, events: AsyncIterator[object]) -> None:
        registering = {a.index for a in self.lines}
        async for event in events:
            account = self._account(getattr(event, "account", None))
            if not self._up:
                if account is not None and account.index not in self._first:
                    if isinstance(event, RegistrationSucceeded):
                        self._first.add(account.index)
                        self._on_event(AccountRegistered(account=account, result=event))
                    elif isinstance(event, RegistrationFailed):
                        self._first.add(account.index)
                        self._on_event(AccountRegistrationFailed(account=account,
                                                                 error=event.error))
                    if registering <= self._first:
                        self._all_first.set()
                continue
            self._on_event(PhoneEventSeen(account=account, event=event))
            if isinstance(event, ReprovisionRequested) and self.provisioned.check_sync:
                task = asyncio.ensure_future(self._reprovision())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def serve(self) -> None:
        """Keep reporting until cancelled (the phone answers calls meanwhile)."""
        await asyncio.shield(self._watcher)

    async def _reprovision(self) -> None:
        url = self.provisioned.config_server_url or self.config_url
        try:
            new = await provision(self.options, url, self._on_event)
            await self.phone.reconfigure(new.config)
        except PhoneSimError as exc:
            self._on_event(Reprovisioned(applied=False, detail=f"not applied: {exc}"))
            return
        self.provisioned = new
        self._on_event(Reprovisioned(applied=True, detail=f"applied the configuration of {url}"))

    async def close(self) -> None:
        """Hang up, unregister every line and release everything."""
        if self._closed:
            return
        self._closed = True
        for task in (self._watcher, *self._tasks):
            task.cancel()
        await asyncio.gather(self._watcher, *self._tasks, return_exceptions=True)
        await self.phone.close()


async def boot(
    options: BootOptions, *, on_event: Callable[[BootEvent], None] | None = None
) -> BootedPhone:
    """Boot one phone from nothing to registered; raises what stopped it (every line
    that did register is unregistered again first)."""
    emit = on_event or (lambda _event: None)
    url = await discover(options, emit)
    provisioned = await provision(options, url, emit)
    if not provisioned.config.registering_accounts:
        raise ConfigUnusable("the configuration has no enabled account that registers",
                             cause="no account")
    booted = BootedPhone(options, url, provisioned, build_phone(provisioned.config), emit)
    try:
        await booted._register()
    except BaseException:
        with contextlib.suppress(Exception):
            await booted.close()
        raise
    return booted


def default_interfaces(given: Sequence[str] | None) -> tuple[str, ...]:
    """The ``--mdns-interface`` values, or loopback."""
    return tuple(given) if given else DEFAULT_MDNS_INTERFACES

