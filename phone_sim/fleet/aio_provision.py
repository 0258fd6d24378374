"""Fleet phones that boot like real ones (the scenario's ``provisioning``), for one shard:
find the configuration server, fetch the phone's own configuration by its MAC, apply it.

Each phone takes the single-phone boot's own steps, :func:`~phone_sim.provisioning.aio_boot.
discover` and :func:`~phone_sim.provisioning.aio_boot.provision` (the firmware's TLS policy,
the DPMA exchange or ``<mac>.cfg``, the same XML path), with its MAC, model and firmware, the
scenario's trust store, and the scenario's media and registration timing for what the XML
does not say. Registering is the shard's, as for any fleet phone.

Discovery: with ``mdns.browse: phone`` every phone opens its own mDNS browse, as a real one
does; with ``shard`` (the default) the shard opens one :class:`~phone_sim.provisioning.
aio_discovery.ServerBrowser` and every phone it boots asks it. One browse per phone costs a
socket per phone and multicast traffic that every other browsing phone of the process must
read: measured (benchmarks/bench_fleet_boot.py, docs/load-testing.md), 1.2 times the CPU of
a shared browse for 200 phones booting at 100/s, 1.7 times for 1,000 at 200/s, whose
discovery p95 then nears the 5 s timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from phone_sim.fleet.plan import FleetPlan, PhonePlan
from phone_sim.provisioning.aio_boot import BootEvent, BootOptions, discover, provision
from phone_sim.provisioning.aio_discovery import ServerBrowser
from phone_sim.provisioning.apply import ProvisionedConfig
from phone_sim.provisioning.errors import ConfigUnusable
from phone_sim.provisioning.urls import HttpConfigUrl, parse_config_url

__all__ = ["FleetBoot", "ShardProvisioner"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetBoot:
    """A phone's configuration, and how long getting it took."""

    provisioned: ProvisionedConfig
    """The configuration applied to the phone."""
    url: str = field(repr=False)
    """Where it was fetched: the ``config_server_url`` in force (it may hold credentials:
    :attr:`label` is for records)."""
    discovery: float | None
    """Seconds spent finding the server (None: ``config_server_url`` was given)."""
    fetch: float
    """Seconds spent fetching and applying the configuration."""

    @property
    def user(self) -> str:
        """The number of its first registering line (what other fleet phones dial)."""
        return self.provisioned.config.registering_accounts[0].username

    @property
    def label(self) -> str:
        """Where it was fetched, without credentials."""
        return parse_config_url(self.url).label

    @property
    def via(self) -> str:
        """``sip``, ``http`` or ``https``."""
        parsed = parse_config_url(self.url)
        return parsed.scheme if isinstance(parsed, HttpConfigUrl) else "sip"


def _ignore(_event: BootEvent) -> None:
    """The fleet records timings and outcomes, not each boot step."""


class ShardProvisioner:
    """Boots the phones of one shard through discovery and configuration fetch."""

    def __init__(self, plan: FleetPlan) -> None:
        spec = plan.scenario.provisioning
        if spec is None:
            raise ValueError("the scenario has no provisioning section")
        self.plan = plan
        self.spec = spec
        self.browser: ServerBrowser | None = None
        if spec.discovers and spec.discovery.browse == "shard":
            self.browser = ServerBrowser(interfaces=spec.discovery.interfaces)
        self._registration = plan.registration_settings()

    def options(self, phone: PhonePlan) -> BootOptions:
        """The single-phone boot options of *phone*."""
        spec = self.spec
        mdns = spec.discovery
        profile = phone.profile
        return BootOptions(
            mac=phone.mac, model=profile.model, firmware=str(profile.version),
            config_url=spec.config_server_url, pin=spec.pin, trust=self.plan.trust,
            mdns_interfaces=mdns.interfaces, discovery_timeout=mdns.timeout,
            server_choice=mdns.server, countdown=mdns.countdown, fetch_timeout=spec.timeout,
            register_timeout=self.plan.scenario.ramp.timeout, auto_answer=False,
            registration=self._registration, media=self.plan.media_options(phone),
        )  # fmt: skip

    async def boot(self, phone: PhonePlan) -> FleetBoot:
        """Discover (or take the given URL), fetch and apply *phone*'s configuration; raises
        what stopped it (``DiscoveryFailed``, ``ConfigRefused``, ``TlsRefused``,
        ``ConfigUnusable`` for a configuration with no line that registers...)."""
        options = self.options(phone)
        loop = asyncio.get_running_loop()
        started = loop.time()
        url = await discover(options, _ignore, browser=self.browser)
        found = loop.time()
        provisioned = await provision(options, url, _ignore)
        if not provisioned.config.registering_accounts:
            raise ConfigUnusable(f"the configuration from {parse_config_url(url).label} has "
                                 "no enabled account that registers", cause="no account")
        return FleetBoot(
            provisioned=provisioned, url=url,
            discovery=None if options.config_url else found - started,
            fetch=loop.time() - found,
        )

    async def refetch(self, phone: PhonePlan, booted: FleetBoot) -> ProvisionedConfig:
        """Fetch *phone*'s configuration again (a check-sync): from the configuration's own
        ``config_server_url``, else where it came from."""
        url = booted.provisioned.config_server_url or booted.url
        return await provision(self.options(phone), url, _ignore)

    async def close(self) -> None:
        """Stop the shard's browse, if any."""
        if self.browser is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self.browser.close()
