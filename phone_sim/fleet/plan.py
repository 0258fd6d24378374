"""A scenario turned into phones and calls: one :class:`~phone_sim.phone.config.PhoneConfig`
per phone, and a seeded call schedule that every shard computes alike.

Everything random is drawn from ``random.Random`` seeded by the scenario's ``seed`` and the
index of what it decides (phone *i*, call *k*), never from a shared stream: shard 3 of 4
picks the same callee for call 17 as a single process does, so a sharded run and a
single-process run of a count-driven scenario make the same calls.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.errors import PhoneSimError
from phone_sim.firmware import FirmwareProfile, profile_for
from phone_sim.fleet.scenario import (
    AccountsCsv,
    Scenario,
    ScenarioError,
    mac_number,
    read_accounts_csv,
)
from phone_sim.phone.config import Impairment, MediaOptions, PhoneConfig
from phone_sim.phone.registration import RegistrationSettings
from phone_sim.tls.client import TrustStore

__all__ = ["CallPlan", "FleetPlan", "PhonePlan"]

#: Calls per second when ``calls.count`` is given without ``rate``.
DEFAULT_COUNT_RATE = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PhonePlan:
    """One phone of the fleet."""

    index: int
    """Its position in the fleet (0-based); shard ``index % shards`` runs it."""
    username: str
    """Its account's user (the number others dial)."""
    password: str
    """Its account's password."""
    authname: str | None
    """Its digest user name, if not the user."""
    mac: str
    """Its MAC address."""
    model: str
    """``D65 2_9_22``: model and firmware, for the records."""
    profile: FirmwareProfile
    """Its firmware profile."""
    register_at: float
    """Seconds after the start that it starts registering (the ramp)."""
    impairment: Impairment | None
    """The access network damaging the RTP it sends, if any (seeded per phone)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallPlan:
    """One call of the schedule."""

    number: int
    """The call's index (0-based)."""
    at: float
    """Seconds after the start that it is placed."""
    caller: int
    """The calling phone's index."""
    to: str
    """The number dialled (a fleet phone's user, or the fixed destination)."""
    callee: int | None
    """The called phone's index when it is a fleet phone."""
    hold: float
    """Seconds the caller keeps the call up once answered."""
    expect_tone: float
    """Hz of the tone the caller expects to hear back."""


class FleetPlan:
    """The phones and calls of a scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        s = scenario
        self.count = s.phones.count
        accounts = s.phones.accounts
        if isinstance(accounts, AccountsCsv):
            rows = read_accounts_csv(s.base_dir / accounts.csv)
            if len(rows) < self.count:
                raise ScenarioError(
                    f"{accounts.csv} lists {len(rows)} accounts for {self.count} phones"
                )
            self._accounts = rows[: self.count]
        else:
            self._accounts = [
                (str(accounts.first + i), accounts.password.format(number=accounts.first + i),
                 None) for i in range(self.count)
            ]
        if len({u for u, _, _ in self._accounts}) != self.count:
            raise ScenarioError("two phones have the same user name: each needs its own")
        self._users = {u: i for i, (u, _, _) in enumerate(self._accounts)}
        try:
            self._profiles = [
                profile_for(m.model, m.firmware, allow_wildcard=bool(s.tls.allow_wildcard))
                for m in s.phones.models
            ]
        except PhoneSimError as exc:
            raise ScenarioError(f"phones.models: {exc}") from None
        # Largest-remainder split of the count, then a seeded shuffle of who gets what.
        shares = [m.percent * self.count / 100.0 for m in s.phones.models]
        sizes = [math.floor(x) for x in shares]
        for i in sorted(range(len(shares)), key=lambda i: sizes[i] - shares[i])[
            : self.count - sum(sizes)
        ]:
            sizes[i] += 1
        kinds = [k for k, n in enumerate(sizes) for _ in range(n)]
        random.Random(f"{s.seed}:models").shuffle(kinds)
        self._kinds = kinds
        impairment = s.faults.impairment
        if impairment is not None:
            pick = random.Random(f"{s.seed}:impaired")
            self._impaired = {i for i in range(self.count)
                              if pick.random() * 100.0 < impairment.phones}
        else:
            self._impaired = set()
        self._mac0 = mac_number(s.phones.mac_first)

    # -- phones --------------------------------------------------------------------------------

    def phone(self, index: int) -> PhonePlan:
        """Phone *index* of the fleet."""
        user, password, authname = self._accounts[index]
        kind = self._kinds[index]
        model = self.scenario.phones.models[kind]
        mac = f"{self._mac0 + index:012x}"
        return PhonePlan(
            index=index, username=user, password=password, authname=authname,
            mac=":".join(mac[i:i + 2] for i in range(0, 12, 2)),
            model=f"{model.model} {model.firmware}", profile=self._profiles[kind],
            register_at=index / self.scenario.ramp.rate,
            impairment=self._impairment(index),
        )  # fmt: skip

    def _impairment(self, index: int) -> Impairment | None:
        spec = self.scenario.faults.impairment
        if spec is None or index not in self._impaired:
            return None
        # Seeded per phone: phones are damaged independently, a phone's calls alike, and a
        # rerun of the scenario alike.
        return Impairment(loss_percent=spec.loss, jitter_ms=spec.jitter_ms,
                          reorder_percent=spec.reorder,
                          seed=f"{self.scenario.seed}:impairment:{index}")

    def shard_phones(self, shard: int, shards: int) -> list[PhonePlan]:
        """The phones shard *shard* of *shards* runs."""
        return [self.phone(i) for i in range(shard, self.count, shards)]

    def accounts(self) -> dict[str, str]:
        """User -> password of every phone (to configure a test registrar)."""
        return {u: p for u, p, _ in self._accounts}

    def index_of(self, user: str) -> int | None:
        """The index of the phone with user *user*."""
        return self._users.get(user)

    @cached_property
    def trust(self) -> TrustStore:
        """The trust store every phone shares."""
        files = [self.scenario.base_dir / f for f in self.scenario.tls.ca_files]
        try:
            return TrustStore.from_files(files)
        except PhoneSimError as exc:
            raise ScenarioError(f"tls.ca_files: {exc}") from None

    def config(self, phone: PhonePlan, *, connect: tuple[str, int] | None = None
               ) -> PhoneConfig:
        """The :class:`PhoneConfig` of *phone*; ``connect`` replaces the server's address (the
        fault relay sits there) while the SIP domain and TLS name stay the server's."""
        s = self.scenario
        transport = SipTransport(s.server.transport)
        host, port = connect or (s.server.host, s.server.port or (
            5061 if transport is SipTransport.TLS else 5060))
        name = s.tls.servername or s.server.servername or s.server.host
        domain = s.server.servername or s.server.host
        sip_host = SipHost(
            server=host, port=port, transport=transport,
            media_encryption="sdes" if transport is SipTransport.TLS else None,
            reregister=300, retry=5.0, num_retries=3,
        )
        account = Account(username=phone.username, password=phone.password,
                          authname=phone.authname, host_primary=sip_host, domain=domain,
                          server_name=name, index=0, line_label=phone.username)
        codecs: tuple[str, ...] = ("G722", "PCMU", "PCMA")
        if s.calls is not None and s.calls.codec is not None:
            codecs = (s.calls.codec, *(c for c in codecs if c != s.calls.codec))
        # Recovery timing the scenario leaves out stays the phone core's own.
        registration = RegistrationSettings(register_timeout=s.ramp.timeout)
        if s.registration.reconnect_window is not None:
            registration = replace(registration,
                                   reconnect_window=s.registration.reconnect_window)
        if s.registration.reconnect_backoff is not None:
            registration = replace(registration,
                                   reconnect_backoff=s.registration.reconnect_backoff)
        return PhoneConfig(
            profile=phone.profile, accounts=(account,), mac=phone.mac, trust=self.trust,
            registration=registration,
            # The fleet listens for the tones it expects (detectors at those frequencies):
            # finding other tones would cost CPU on every call for nothing it reports.
            media=MediaOptions(codecs=codecs, impairment=phone.impairment, find_tones=False),
        )

    # -- calls ---------------------------------------------------------------------------------

    @property
    def call_rate(self) -> float:
        """Calls per second over the fleet (0 without calls)."""
        calls = self.scenario.calls
        if calls is None:
            return 0.0
        if calls.busy_hour is not None:
            return self.count * calls.busy_hour / 3600.0
        return calls.rate if calls.rate is not None else DEFAULT_COUNT_RATE

    @property
    def calls_start(self) -> float:
        """Seconds after the start of the first call."""
        calls = self.scenario.calls
        if calls is not None and calls.start is not None:
            return calls.start
        return self.scenario.ramp_seconds + 1.0

    def calls(self) -> Iterator[CallPlan]:
        """The call schedule, in time order (bounded by the count or the duration)."""
        s = self.scenario
        calls = s.calls
        if calls is None:
            return
        rate = self.call_rate
        start = self.calls_start
        mix = calls.destination_mix()
        k = 0
        while True:
            if calls.count is not None and k >= calls.count:
                return
            at = start + k / rate
            if s.duration is not None and at >= s.duration:
                return
            pick = random.Random(f"{s.seed}:call:{k}")
            caller = pick.randrange(self.count)
            callee: int | None = None
            roll = pick.random() * 100.0
            destination = mix[-1]
            for candidate in mix:
                roll -= candidate.percent
                if roll < 0:
                    destination = candidate
                    break
            if destination.to == "fleet":
                if self.count < 2:
                    raise ScenarioError("calls to the fleet need at least two phones")
                callee = pick.randrange(self.count - 1)
                callee += callee >= caller  # anyone but the caller
                to = self._accounts[callee][0]
                expect = destination.tone or calls.answer_tone
            else:
                to = destination.to
                expect = destination.tone or calls.tone
            yield CallPlan(number=k, at=at, caller=caller, to=to, callee=callee,
                           hold=self._hold(pick), expect_tone=expect)
            k += 1

    def _hold(self, pick: random.Random) -> float:
        calls = self.scenario.calls
        assert calls is not None
        hold = calls.hold
        if hold.distribution == "uniform":
            return pick.uniform(hold.min, hold.max)
        if hold.distribution == "exponential":
            return min(max(pick.expovariate(1.0 / hold.mean), hold.min), hold.max)
        return hold.mean

    def expected_end(self) -> float:
        """When the last scheduled thing should be over (for a run without duration)."""
        s = self.scenario
        if s.duration is not None:
            return s.duration
        last = s.ramp_seconds + s.ramp.timeout
        calls = s.calls
        if calls is not None and calls.count:
            start = self.calls_start + (calls.count - 1) / self.call_rate
            final = start + calls.setup_timeout + calls.hold.max
            last = max(last, final)
        return last

    def describe(self) -> dict[str, object]:
        """For the run record."""
        return {"name": self.scenario.name, "phones": self.count, "seed": self.scenario.seed,
                "server": f"{self.scenario.server.transport}:{self.scenario.server.host}"}
