"""The fleet scenario file: YAML validated with pydantic, every error naming its field and line.

::

    scenario = load_scenario(Path("fixtures/scenarios/lab-smoke.yaml"))
    scenario.phones.count, scenario.calls, scenario.thresholds

The models are strict (unknown keys are errors: a typo never silently does nothing). The
loader composes the YAML node tree first so that every value keeps its line; a pydantic
error's ``loc`` is mapped back to the deepest node it names. See ``docs/load-testing.md``.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from phone_sim.errors import UsageError
from phone_sim.fleet.metrics import Threshold, parse_threshold
from phone_sim.provisioning.urls import ConfigUrlError, parse_config_url

__all__ = [
    "AccountsCsv",
    "AccountsTemplate",
    "CallsSpec",
    "Destination",
    "Faults",
    "HoldTime",
    "ImpairmentSpec",
    "MdnsSpec",
    "ModelShare",
    "PhonesSpec",
    "ProvisioningSpec",
    "Ramp",
    "RegistrationSpec",
    "Scenario",
    "ScenarioError",
    "ServerSpec",
    "TlsSpec",
    "load_scenario",
    "parse_scenario",
]

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-]?[0-9a-fA-F]{2}){5}")
_PERCENT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*")
_DIGITS = re.compile(r"[0-9]+")
_PIN = re.compile(r"[0-9*#]{1,32}")


class ScenarioError(UsageError):
    """The scenario file cannot be run as written (exit status 2)."""

    exit_code = 2


class _FieldProblems(ValueError):
    """Problems found across sections, each tied to the field it names (so that the loader
    can say that field's line)."""

    def __init__(self, problems: list[tuple[tuple[str, ...], str]]) -> None:
        super().__init__("; ".join(f"{_dotted(loc)}: {text}" for loc, text in problems))
        self.problems = problems


def _percent(value: Any) -> float:
    """``"10%"``, ``10`` or ``10.0`` -> 10.0 (a share in percent, 0-100)."""
    if isinstance(value, bool):
        raise ValueError("a percentage, such as 10%")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and (match := _PERCENT.fullmatch(value)):
        number = float(match.group(1))
    else:
        raise ValueError(f"{value!r} is not a percentage: write it as 10% or 10")
    if not 0.0 <= number <= 100.0:
        raise ValueError(f"{number:g}% is not between 0% and 100%")
    return number


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ServerSpec(_Model):
    """Where the phones register and call through."""

    host: str
    """The registrar/proxy address (an IP address or a name)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Its port (default: 5061 for TLS, else 5060)."""
    transport: Literal["tls", "tcp", "udp"] = "tls"
    """The SIP transport every phone uses."""
    servername: str | None = None
    """The SIP domain and the TLS server name (default: ``host``)."""


class TlsSpec(_Model):
    """The phones' trust store and certificate policy."""

    ca_files: tuple[str, ...] = ()
    """PEM files of private root CAs loaded onto every phone (relative to the scenario)."""
    servername: str | None = None
    """The name the server certificate must carry (default: ``server.servername``)."""
    allow_wildcard: bool | None = None
    """Accept a wildcard certificate (default: what the firmware does)."""


class ModelShare(_Model):
    """One slice of the model/firmware mix."""

    model: str
    """D40, D45, D50, D60, D62, D65, D70 or D80."""
    firmware: str = "2_9_22"
    """The firmware version, as ``profile_for`` takes it."""
    percent: Annotated[float, Field(gt=0, le=100)]
    """The share of the phones, in percent (the shares add up to 100)."""

    @field_validator("percent", mode="before")
    @classmethod
    def _share(cls, value: Any) -> float:
        return _percent(value)


class AccountsTemplate(_Model):
    """Accounts numbered from ``first`` up, one per phone."""

    first: int = Field(ge=0)
    """The first phone's user number; the next phones count up from it."""
    password: str = Field(min_length=1)
    """The password pattern: ``{number}`` is replaced by the user number (``pw{number}``)."""

    @field_validator("password")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            value.format(number=1)
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                "the password pattern may only use {number} (write {{ and }} for braces)"
            ) from None
        return value


class AccountsCsv(_Model):
    """Accounts listed in a CSV file with a header line: ``username,password[,authname]``."""

    csv: str
    """The file (relative to the scenario)."""


class PhonesSpec(_Model):
    """Which phones the fleet has."""

    count: int = Field(ge=1, le=1_000_000)
    """How many phones."""
    mac_first: str = "00:0f:d3:00:00:01"
    """The first phone's MAC address; the others count up from it."""
    mac_last: str | None = None
    """The last MAC address the range allows (the count must fit)."""
    models: tuple[ModelShare, ...] = (ModelShare(model="D65", firmware="2_9_22", percent=100),)
    """The model/firmware mix in percent."""
    accounts: AccountsTemplate | AccountsCsv | None = None
    """Where the accounts come from: a template or a CSV file (none with ``provisioning``:
    each phone's configuration gives its accounts)."""

    @field_validator("mac_first", "mac_last")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is not None and not _MAC.fullmatch(value):
            raise ValueError(f"{value!r} is not a MAC address such as 00:0f:d3:00:00:01")
        return value

    @field_validator("models")
    @classmethod
    def _mix(cls, value: tuple[ModelShare, ...]) -> tuple[ModelShare, ...]:
        if not value:
            raise ValueError("give at least one model")
        total = sum(m.percent for m in value)
        if abs(total - 100.0) > 0.01:
            raise ValueError(f"the model shares add up to {total:g}%, not 100%")
        return value

    @model_validator(mode="after")
    def _range(self) -> PhonesSpec:
        first = mac_number(self.mac_first)
        last = mac_number(self.mac_last) if self.mac_last else 0xFFFF_FFFF_FFFF
        if first + self.count - 1 > last:
            raise ValueError(
                f"{self.count} phones do not fit in the MAC range {self.mac_first} - "
                f"{self.mac_last or 'ff:ff:ff:ff:ff:ff'}"
            )
        return self


class Ramp(_Model):
    """How fast the phones come up."""

    rate: float = Field(default=100.0, gt=0, le=100_000)
    """Phones started per second, over the whole fleet: their first registration, or with
    ``provisioning`` their whole boot (discovery, configuration fetch, registration)."""
    timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds a phone's first registration may take before it counts as failed."""


class RegistrationSpec(_Model):
    """How the phones recover after a dropped connection (default: the phone's own timing,
    ``RegistrationSettings``)."""

    reconnect_window: float | None = Field(default=None, ge=0, le=3600)
    """After a dropped connection, each phone's first reconnect waits a random 0 to this many
    seconds, so that a fleet does not come back in one burst; 0 reconnects at once."""
    reconnect_backoff: float | None = Field(default=None, ge=0, le=3600)
    """After a failed reconnect the next waits 0.5-1 x this many seconds, doubling per
    failure up to the server's retry interval; 0 uses the retry interval alone."""


class HoldTime(_Model):
    """How long an answered call lasts, in seconds."""

    distribution: Literal["fixed", "uniform", "exponential"] = "fixed"
    """fixed (``mean``), uniform (``min`` to ``max``) or exponential (``mean``, cut to
    ``min``-``max``)."""
    mean: float = Field(default=5.0, gt=0, le=86_400)
    """The mean hold time."""
    min: float = Field(default=1.0, ge=0.5, le=86_400)
    """The shortest hold time (also the floor of the exponential)."""
    max: float = Field(default=60.0, gt=0, le=86_400)
    """The longest hold time (also the cap of the exponential)."""

    @model_validator(mode="after")
    def _order(self) -> HoldTime:
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g} s) is above max ({self.max:g} s)")
        return self


class Destination(_Model):
    """One slice of the destination mix."""

    to: str
    """``fleet`` (another phone of the fleet) or a number (``600``)."""
    percent: float
    """The share of calls, in percent (the shares add up to 100)."""
    tone: float | None = Field(default=None, ge=100, le=3900)
    """Hz of the tone the caller expects back (default: ``answer_tone`` from a fleet
    phone, else its own ``tone`` echoed)."""

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: Any) -> str:
        return _destination(value)

    @field_validator("percent", mode="before")
    @classmethod
    def _share(cls, value: Any) -> float:
        return _percent(value)


def _destination(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not (
        value == "fleet" or re.fullmatch(r"[0-9A-Za-z*#+._-]{1,64}", value)
    ):
        raise ValueError("write fleet, or the number to call such as 600")
    return value


class CallsSpec(_Model):
    """The calls the fleet makes. Give exactly one of ``rate``, ``busy_hour`` or ``count``
    (``count`` may be paced with ``rate``)."""

    rate: float | None = Field(default=None, gt=0, le=10_000)
    """Calls started per second over the fleet."""
    busy_hour: float | None = Field(default=None, gt=0, le=1_000)
    """Busy-hour call attempts per phone (calls/s = phones x this / 3600)."""
    count: int | None = Field(default=None, ge=0, le=10_000_000)
    """A fixed number of calls (started at ``rate`` per second, default 10)."""
    start: float | None = Field(default=None, ge=0)
    """Seconds after the run starts that the first call is placed (default: when the ramp
    ends, plus 1 s)."""
    hold: HoldTime = HoldTime()
    """The hold-time distribution."""
    destinations: str | tuple[Destination, ...] = "fleet"
    """``fleet`` (another phone of the fleet, picked at random), a number to call (``600``,
    the lab's echo), or a mix: a list of ``{to, percent, tone}``."""
    pick: Literal["idle", "any"] = "idle"
    """Who places and who takes each call. ``idle``: a caller and a fleet callee that the
    schedule has in no other call at that moment, as people at desk phones call (one call
    each); when every phone is busy, any phone. ``any``: any phone, one already in a call
    too (it then takes a second call, as call waiting does)."""
    codec: Literal["G722", "PCMU", "PCMA"] | None = None
    """The codec the phones offer first (default: the phone's preference order)."""
    tone: float = Field(default=1004.0, ge=100, le=3900)
    """Hz of the tone the caller sends; the far end checks it arrives."""
    answer_tone: float = Field(default=697.0, ge=100, le=3900)
    """Hz of the tone a fleet phone sends when it answers; the caller checks it."""
    dtmf: str | None = Field(default=None, pattern=r"^[0-9*#A-D]{1,16}$")
    """RFC 4733 digits the caller sends after the tones; the far end checks them."""
    setup_timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds from INVITE to answer before the call counts as failed."""

    @field_validator("destinations", mode="before")
    @classmethod
    def _destinations(cls, value: Any) -> Any:
        return value if isinstance(value, list | tuple) else _destination(value)

    @field_validator("destinations")
    @classmethod
    def _mix(cls, value: str | tuple[Destination, ...]) -> str | tuple[Destination, ...]:
        if isinstance(value, tuple):
            if not value:
                raise ValueError("give at least one destination")
            total = sum(d.percent for d in value)
            if abs(total - 100.0) > 0.01:
                raise ValueError(f"the destination shares add up to {total:g}%, not 100%")
        return value

    def destination_mix(self) -> tuple[Destination, ...]:
        """The destinations as a mix (one slice of 100% for a single one)."""
        if isinstance(self.destinations, tuple):
            return self.destinations
        return (Destination(to=self.destinations, percent=100.0),)

    @model_validator(mode="after")
    def _one_driver(self) -> CallsSpec:
        if self.busy_hour is not None and (self.rate is not None or self.count is not None):
            raise ValueError("busy_hour sets the call rate: give it alone (not rate or count)")
        if self.rate is None and self.busy_hour is None and self.count is None:
            raise ValueError("say how many calls: rate, busy_hour or count")
        return self


class DropConnections(_Model):
    """At ``at`` seconds into the run, cut ``share`` of the phones' TCP/TLS connections."""

    at: float = Field(ge=0)
    """Seconds after the start."""
    share: float
    """The share of connections cut, in percent."""

    @field_validator("share", mode="before")
    @classmethod
    def _share(cls, value: Any) -> float:
        return _percent(value)


class ImpairmentSpec(_Model):
    """An access network damaging the RTP some phones send (their ``MediaOptions.impairment``,
    seeded per phone from the scenario's seed)."""

    phones: float = 100.0
    """The share of phones behind this network, in percent (picked with the seed)."""
    loss: float = 0.0
    """RTP packets lost, in percent, each on its own."""
    jitter_ms: float = Field(default=0.0, ge=0, le=1000)
    """Extra delay, uniform from 0 to this many milliseconds, per packet (in order)."""
    reorder: float = 0.0
    """Packets on a slower path that the next packet overtakes, in percent."""

    @field_validator("phones", "loss", "reorder", mode="before")
    @classmethod
    def _share(cls, value: Any) -> float:
        return _percent(value)


class Faults(_Model):
    """Faults injected during the run."""

    drop_connections: tuple[DropConnections, ...] = ()
    """Times at which a share of the connections are cut."""
    impairment: ImpairmentSpec | None = None
    """Media impairment on some phones' uplink."""


class MdnsSpec(_Model):
    """Discovery of the configuration server over mDNS (``_digiumproxy._udp``)."""

    interfaces: tuple[str, ...] = ("127.0.0.1",)
    """Interface addresses to browse on (loopback unless told otherwise)."""
    server: str | None = None
    """The server to take when several answer: its instance name (DPMA's
    ``service_name``), an address or its ``sipUrl`` host, as a person picks on the phone."""
    timeout: float = Field(default=5.0, gt=0, le=300)
    """Seconds a phone waits for a first server."""
    countdown: float = Field(default=0.0, ge=0, le=60)
    """Seconds a phone waits after finding its one server before it connects, when no
    ``server`` is named (a real phone counts down 3 s so that a person can stop it; the
    fleet does not wait by default)."""
    browse: Literal["shard", "phone"] = "shard"
    """``shard``: one browse per shard, which its phones share; ``phone``: one browse per
    phone, as real phones do (costly beyond a few hundred phones per process)."""

    @field_validator("interfaces")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one interface address, such as 127.0.0.1")
        for address in value:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address: give the interface's "
                                 "address, such as 127.0.0.1") from None
        return value


class ProvisioningSpec(_Model):
    """The phones boot like real ones: find the configuration server (given, or over mDNS),
    fetch their own configuration by MAC, apply it, and register as it says."""

    config_server_url: str | None = None
    """``sip:proxy@host:port;transport=tls`` (DPMA's MESSAGE exchange) or
    ``http(s)://host[:port]/path/`` (``<mac>.cfg``); omit it to discover the server over
    mDNS."""
    mdns: MdnsSpec | None = None
    """How the phones discover the server when no ``config_server_url`` is given."""
    pin: str | None = Field(default=None, repr=False)
    """The PIN every phone gives when the server asks for one (``config_auth=globalpin``)."""
    timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds a configuration fetch may take."""

    @field_validator("config_server_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_config_url(value)
            except ConfigUrlError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and not _PIN.fullmatch(value):
            raise ValueError("a PIN is 1-32 digits (and * or #), such as 1234")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> ProvisioningSpec:
        if self.config_server_url is not None and self.mdns is not None:
            raise ValueError("give config_server_url (the phones skip discovery) or mdns, "
                             "not both")
        return self

    @property
    def discovers(self) -> bool:
        """Whether the phones find the server over mDNS."""
        return self.config_server_url is None

    @property
    def discovery(self) -> MdnsSpec:
        """The discovery settings (the defaults when none were given)."""
        return self.mdns or MdnsSpec()


class Scenario(_Model):
    """A fleet load test."""

    name: str = "fleet"
    """A name for the run (shown in the live view and the report)."""
    seed: int = 1
    """Seeds every random choice (model mix, call targets, hold times, faults)."""
    server: ServerSpec | None = None
    """Where the phones register (none with ``provisioning``: each phone's configuration
    says where)."""
    tls: TlsSpec = TlsSpec()
    """Trust and certificate policy."""
    phones: PhonesSpec
    """The phones."""
    ramp: Ramp = Ramp()
    """Registration pace."""
    registration: RegistrationSpec = RegistrationSpec()
    """Recovery after a dropped connection."""
    calls: CallsSpec | None = None
    """The calls (none: the phones only register)."""
    duration: float | None = Field(default=None, gt=0, le=7 * 86_400)
    """Seconds the run lasts (default: until the ramp and every counted call are done)."""
    faults: Faults = Faults()
    """Faults to inject."""
    provisioning: ProvisioningSpec | None = None
    """Boot the phones through discovery and configuration fetch: their accounts, servers
    and TLS settings come from the configuration server, not from this file."""
    thresholds: tuple[str, ...] = ()
    """Pass/fail rules such as ``register.p95 < 2s`` (see the metrics list)."""

    #: Where relative paths (CA files, CSV) are resolved; set by the loader.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        errors = []
        for text in value:
            try:
                parse_threshold(text)
            except UsageError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError("; ".join(errors))
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Scenario:
        if self.duration is None and self.calls is not None and self.calls.count is None:
            raise ValueError("calls at a rate need a duration (or give calls.count)")
        problems = self._provisioning_problems()
        if problems:
            raise _FieldProblems(problems)
        return self

    def _provisioning_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """What the file gives that provisioning decides instead (or what it lacks without
        provisioning): each a field and what to do."""
        problems: list[tuple[tuple[str, ...], str]] = []
        p = self.provisioning
        if p is None:
            if self.server is None:
                problems.append((("server",), "this field is required (or give "
                                 "provisioning: the phones then register where their "
                                 "configuration says)"))
            if self.phones.accounts is None:
                problems.append((("phones", "accounts"), "this field is required (or give "
                                 "provisioning: each phone's configuration then gives its "
                                 "accounts)"))
            return problems
        if self.server is not None:
            problems.append((("server",), "with provisioning the phones register where their "
                             "configuration says: remove server (or provisioning)"))
        if self.phones.accounts is not None:
            problems.append((("phones", "accounts"), "with provisioning each phone's "
                             "configuration gives its accounts: remove phones.accounts (or "
                             "provisioning)"))
        if self.tls.servername is not None:
            problems.append((("tls", "servername"), "with provisioning the TLS name is each "
                             "account's server from the configuration: remove it"))
        if self.tls.allow_wildcard is not None:
            problems.append((("tls", "allow_wildcard"), "with provisioning the "
                             "configuration's tls_allow_wildcard_certs setting decides: "
                             "remove it"))
        if p.discovers:
            d80 = [m for m in self.phones.models if m.model.strip().upper() == "D80"]
            if d80:
                problems.append((("phones", "models"), "the D80 does not use mDNS: give "
                                 "provisioning.config_server_url, or leave the D80 out"))
        return problems

    def parsed_thresholds(self) -> list[Threshold]:
        """The thresholds, parsed."""
        return [parse_threshold(t) for t in self.thresholds]

    @property
    def ramp_seconds(self) -> float:
        """How long the ramp takes."""
        return self.phones.count / self.ramp.rate


def mac_number(text: str) -> int:
    """``00:0f:d3:00:00:01`` -> its 48-bit value."""
    return int(text.replace(":", "").replace("-", ""), 16)


# -- loading with line numbers -----------------------------------------------------------------


def _construct(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(io.StringIO("")).construct_object(key_node)
            if not isinstance(key, str | int | float | bool):
                raise ScenarioError(
                    f"line {key_node.start_mark.line + 1}: a key must be a plain name"
                )
            if key in result:
                raise ScenarioError(
                    f"line {key_node.start_mark.line + 1}: {_dotted((*path, key))} is given twice"
                )
            result[key] = _construct(value_node, (*path, key), lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines) for i, item in enumerate(node.value)]
    if path and path[-1] in ("firmware", "pin") and isinstance(node, yaml.ScalarNode):
        # YAML 1.1 reads 2_9_22 as the integer 2922 and the PIN 0012 as octal: keep the text
        return node.value
    return yaml.SafeLoader(io.StringIO("")).construct_object(node)


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    # pydantic adds the union member's name to a loc (accounts.AccountsCsv.csv): skip the
    # parts the YAML does not have and keep the deepest that it does.
    best = lines.get(())
    path: tuple[Any, ...] = ()
    for part in loc:
        candidate = (*path, part)
        if candidate in lines:
            path = candidate
            best = lines[candidate]
    return best


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(text: str, source: str, environ: Mapping[str, str]) -> str:
    """``${NAME}`` and ``${NAME:-default}`` from the environment (a lab's port, a CA file)."""
    out = []
    for number, line in enumerate(text.split("\n"), start=1):
        def value(match: re.Match[str], number: int = number) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ScenarioError(
                f"{source}: line {number}: ${{{name}}} is not set in the environment "
                f"(set it, or write ${{{name}:-default}})"
            )

        out.append(_VARIABLE.sub(value, line))
    return "\n".join(out)


def parse_scenario(text: str, *, source: str = "<scenario>", base_dir: Path | None = None,
                   environ: Mapping[str, str] | None = None) -> Scenario:
    """Validate a scenario given as YAML text; :class:`ScenarioError` names field and line.

    ``${NAME}`` (or ``${NAME:-default}``) is replaced from *environ* first (default: none
    set)."""
    text = _expand(text, source, environ or {})
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(f"{source}:{where}: not valid YAML: {problem}") from None
    if node is None:
        raise ScenarioError(f"{source}: the file is empty; see docs/load-testing.md")
    lines: dict[tuple[Any, ...], int] = {}
    try:
        data = _construct(node, (), lines)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: line 1: the scenario must be a mapping of fields")
    data["base_dir"] = base_dir or Path(".")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            cross = error.get("ctx", {}).get("error")
            if isinstance(cross, _FieldProblems):
                for field_loc, text in cross.problems:
                    line = _line_for((*loc, *field_loc), lines)
                    where = f"line {line}: " if line is not None else ""
                    problems.append(f"{source}: {where}{_dotted((*loc, *field_loc))}: {text}")
                continue
            # Drop pydantic's union member tags so the field reads as written.
            shown = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()))
            line = _line_for(loc, lines)
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field (see docs/load-testing.md for the fields)"
            elif error["type"] == "missing":
                message = "this field is required"
            where = f"line {line}: " if line is not None else ""
            problems.append(f"{source}: {where}{_dotted(shown)}: {message}")
        # A union error repeats for every member; say each once.
        unique = list(dict.fromkeys(problems))
        raise ScenarioError("\n".join(unique)) from None


def load_scenario(path: Path, environ: Mapping[str, str] | None = None) -> Scenario:
    """Read and validate a scenario file (``${NAME}`` from *environ*)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    return parse_scenario(text, source=str(path), base_dir=path.parent, environ=environ)


def read_accounts_csv(path: Path) -> list[tuple[str, str, str | None]]:
    """``username,password[,authname]`` rows of a CSV file with a header line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read accounts file {path}: {exc.strerror}") from None
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    if "username" not in fields or "password" not in fields:
        raise ScenarioError(
            f"{path}: line 1 must be a header naming username and password (and optionally "
            f"authname); found {','.join(fields) or 'nothing'}"
        )
    rows = []
    for number, row in enumerate(reader, start=2):
        user = (row.get("username") or "").strip()
        password = row.get("password") or ""
        if not user or not password:
            raise ScenarioError(f"{path}: line {number}: username and password are required")
        rows.append((user, password, (row.get("authname") or "").strip() or None))
    return rows
