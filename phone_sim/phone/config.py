"""One frozen description of a phone: :class:`PhoneConfig`.

Everything that makes phones (the CLI, provisioning from DPMA XML, fleet scenarios, the pytest
plugin) produces a :class:`PhoneConfig` and hands it to
:func:`~phone_sim.phone.aio.build_phone`. Nothing else configures a phone.

How many lines (accounts) each model has is not public in a form we can cite; the table
:data:`MODEL_LINES` is our reading of the models' published specifications, written down in
``docs/firmware.md`` and replaceable here alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from phone_sim.account import Account
from phone_sim.call.session import CallConfig
from phone_sim.errors import UsageError
from phone_sim.firmware import FirmwareProfile, Model
from phone_sim.media.impairment import Impairment
from phone_sim.media.payloads import codec_by_name
from phone_sim.phone.registration import RegistrationSettings
from phone_sim.tls.client import TrustStore

__all__ = [
    "MODEL_LINES",
    "Impairment",
    "MediaOptions",
    "NetworkOptions",
    "PhoneConfig",
    "PhoneConfigError",
    "normalize_mac",
]

#: Lines (SIP accounts, one per line key) per model. [?] Our reading of the published specs;
#: see docs/firmware.md. The XML ``<account index>`` of a phone runs from 0 to lines - 1.
MODEL_LINES: dict[Model, int] = {
    Model.D40: 2,
    Model.D45: 6,
    Model.D50: 4,
    Model.D60: 6,
    Model.D62: 2,
    Model.D65: 6,
    Model.D70: 6,
    Model.D80: 6,
}

_MAC_DIGITS = re.compile(r"[0-9a-fA-F]{12}")


class PhoneConfigError(UsageError):
    """A phone configuration that cannot describe a real phone."""


def normalize_mac(text: str) -> str:
    """``00:0F:D3:01:02:03``, ``00-0f-d3-01-02-03`` or ``000fd3010203`` -> ``000fd3010203``
    (the form the phone's ``<mac>.cfg`` file name uses); :class:`PhoneConfigError` otherwise."""
    compact = text.strip().replace(":", "").replace("-", "").replace(".", "")
    if not _MAC_DIGITS.fullmatch(compact):
        raise PhoneConfigError(
            f"bad MAC address {text!r}: expected 12 hex digits such as 00:0f:d3:01:02:03"
        )
    return compact.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaOptions:
    """What the phone offers for audio."""

    codecs: tuple[str, ...] = ("G722", "PCMU", "PCMA")
    """Codec names in preference order (G722, PCMU, PCMA: the ones phone-sim can encode)."""
    ptime_ms: int = 20
    """Packetization asked for in ``a=ptime``."""
    dtmf: bool = True
    """Offer and accept RFC 4733 ``telephone-event/8000``."""
    find_tones: bool = True
    """Look for a steady tone of any frequency in what each call receives, so it shows in
    the call's ``tones_heard`` without being asked for (a milliwatt, a test extension's
    beep). It samples the audio: about 0.3 ms of CPU per second of call for the first five
    seconds, 0.03 ms after that (PCMU). Tones asked for (``wait_tone``, ``detect_tone``,
    ``play_tone``) are always listened for."""
    impairment: Impairment | None = None
    """An access network damaging the RTP every call sends (loss, jitter, reordering,
    seeded), to reproduce what the far end hears in the field; None: a clean path."""

    def __post_init__(self) -> None:
        if not self.codecs:
            raise PhoneConfigError("the phone needs at least one codec")
        for name in self.codecs:
            codec_by_name(name)  # raises UnknownCodecError naming the codec
        if len({n.upper() for n in self.codecs}) != len(self.codecs):
            raise PhoneConfigError(f"a codec is listed twice in {', '.join(self.codecs)}")
        if self.ptime_ms not in (10, 20, 30, 40):
            raise PhoneConfigError(f"ptime {self.ptime_ms} ms: use 10, 20, 30 or 40")


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkOptions:
    """Where the phone lives on the network."""

    local_host: str | None = None
    """The address UDP binds and SIP/RTP advertise (default: the route towards the server)."""
    sip_port: int = 0
    """The UDP port the phone's SIP socket binds (the firmware's 5060; 0: any free one)."""
    listen_port: int | None = None
    """Also listen for TCP on this port (0: any free one), as the firmware listens on 5060;
    None: no listener."""

    def __post_init__(self) -> None:
        if self.listen_port is not None and not 0 <= self.listen_port < 65536:
            raise PhoneConfigError(f"listen port {self.listen_port} out of range (0-65535)")
        if not 0 <= self.sip_port < 65536:
            raise PhoneConfigError(f"SIP port {self.sip_port} out of range (0-65535)")


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneConfig:
    """One emulated phone: its firmware, its lines and how it behaves.

    >>> from phone_sim.account import Account, SipHost
    >>> from phone_sim.firmware import profile_for
    >>> config = PhoneConfig(profile=profile_for("D65", "2_9_22"),
    ...                      accounts=(Account(username="101", password="1234",
    ...                                        host_primary=SipHost(server="127.0.0.1")),))
    >>> config.primary_account.username
    '101'
    """

    profile: FirmwareProfile
    """Model and firmware (User-Agent, digest algorithms, TLS policy, wildcard setting)."""
    accounts: tuple[Account, ...]
    """The phone's lines, each with its ``index``; every enabled one with ``register``
    registers. At most :data:`MODEL_LINES` of the model."""
    mac: str | None = None
    """The MAC address, normalised to 12 lower-case hex digits (``normalize_mac``); needed
    for provisioning (``<mac>.cfg``), else informational."""
    trust: TrustStore = field(default_factory=TrustStore)
    """The phone's trust store: public roots plus any private root CA loaded onto it."""
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    """Registration timing (timeouts, keep-alives, jitter, failback)."""
    calls: CallConfig = field(default_factory=CallConfig)
    """Call behaviour (session timers, 100rel, ring timeout)."""
    media: MediaOptions = field(default_factory=MediaOptions)
    """Codecs, packetization and DTMF."""
    network: NetworkOptions = field(default_factory=NetworkOptions)
    """Local address and TCP listener."""
    auto_answer: bool = False
    """Answer every incoming call at once and echo the caller's audio."""

    def __post_init__(self) -> None:
        if self.mac is not None:
            object.__setattr__(self, "mac", normalize_mac(self.mac))
        accounts = tuple(self.accounts)
        object.__setattr__(self, "accounts", accounts)
        if not accounts:
            raise PhoneConfigError("the phone has no account: give at least one line")
        model = self.profile.model
        lines = MODEL_LINES[model]
        seen: set[int] = set()
        for account in accounts:
            if account.index in seen:
                raise PhoneConfigError(f"two accounts have index {account.index}")
            seen.add(account.index)
            if account.index >= lines:
                raise PhoneConfigError(
                    f"account index {account.index} ({account.username!r}): a {model.value} "
                    f"has {lines} lines (index 0-{lines - 1})"
                )

    @property
    def primary_account(self) -> Account:
        """The account calls use by default: the enabled one with the lowest index."""
        enabled = [a for a in self.accounts if a.enabled] or list(self.accounts)
        return min(enabled, key=lambda a: a.index)

    @property
    def registering_accounts(self) -> tuple[Account, ...]:
        """The accounts that register, by index."""
        return tuple(sorted((a for a in self.accounts if a.enabled and a.register),
                            key=lambda a: a.index))

    def account(self, which: int | str) -> Account:
        """The account with index *which* (int) or username *which* (str)."""
        for account in self.accounts:
            if (account.index == which) if isinstance(which, int) else (
                account.username == which
            ):
                return account
        raise PhoneConfigError(f"the phone has no account {which!r}")
