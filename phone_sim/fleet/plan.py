"""A scenario turned into phones and calls: one :class:`~phone_sim.phone.config.PhoneConfig`
per phone, and a seeded call schedule that every shard computes alike.

With ``provisioning`` a phone's accounts and servers are not known here: each phone fetches
its configuration when it boots (:mod:`~phone_sim.fleet.aio_provision`), and a call to a
fleet phone dials the number that phone was given (``CallPlan.to`` is None).

Everything random is drawn from ``random.Random`` seeded by the scenario's ``seed`` and the
index of what it decides (phone *i*, call *k*), never from a shared stream; who is idle when
call *k* is due follows from the calls before it. Every shard computes the whole schedule and
places its own phones' calls: shard 3 of 4 picks the same callee for call 17 as a single
process does, so a sharded run and a single-process run of a count-driven scenario make the
same calls.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
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
from phone_sim.provisioning.urls import parse_config_url
from phone_sim.tls.client import TrustStore

__all__ = ["CallPlan", "FleetPlan", "PhonePlan", "peak_calls"]

#: Calls per second when ``calls.count`` is given without ``rate``.
DEFAULT_COUNT_RATE = 10.0
#: Seconds added to the default first call when phones boot through provisioning.
PROVISIONING_HEADROOM = 2.0
#: Seconds the schedule adds to a call's hold time, for its set-up and hang-up, when it
#: decides who is idle (``calls.pick: idle``). A call whose set-up takes longer may meet its
#: phones' next call, which they then take as a second call.
BUSY_GUARD = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PhonePlan:
    """One phone of the fleet."""

    index: int
    """Its position in the fleet (0-based); shard ``index % shards`` runs it."""
    username: str | None
    """Its account's user (the number others dial); None until provisioning gives one."""
    password: str | None = field(repr=False)
    """Its account's password (None with provisioning)."""
    authname: str | None
    """Its digest user name, if not the user."""
    mac: str
    """Its MAC address."""
    model: str
    """``D65 2_9_22``: model and firmware, for the records."""
    profile: FirmwareProfile
    """Its firmware profile."""
    register_at: float
    """Seconds after the start that it starts (the ramp): its registration, or with
    provisioning its whole boot."""
    impairment: Impairment | None
    """The access network damaging the RTP it sends, if any (seeded per phone)."""

    @property
    def name(self) -> str:
        """How the records name it: its user, else (before provisioning) its MAC."""
        return self.username if self.username is not None else self.mac


@dataclass(frozen=True, slots=True, kw_only=True)
class CallPlan:
    """One call of the schedule."""

    number: int
    """The call's index (0-based)."""
    at: float
    """Seconds after the start that it is placed."""
    caller: int
    """The calling phone's index."""
    to: str | None
    """The number dialled (a fleet phone's user, or the fixed destination); None for a
    fleet phone whose number its provisioning gives (known when the call is due)."""
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
        self._accounts: Sequence[tuple[str | None, str | None, str | None]]
        if accounts is None:  # provisioning: each phone's configuration gives its accounts
            self._accounts = [(None, None, None)] * self.count
        elif isinstance(accounts, AccountsCsv):
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
        if accounts is not None and len({u for u, _, _ in self._accounts}) != self.count:
            raise ScenarioError("two phones have the same user name: each needs its own")
        self._users = {u: i for i, (u, _, _) in enumerate(self._accounts) if u is not None}
        try:
            # With provisioning a phone boots with its firmware's defaults; the wildcard
            # setting then comes from its configuration.
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
        """User -> password of every phone (to configure a test registrar); empty with
        provisioning (the configuration server knows them)."""
        return {u: p for u, p, _ in self._accounts if u is not None and p is not None}

    @property
    def provisioning(self) -> bool:
        """Whether the phones boot through discovery and configuration fetch."""
        return self.scenario.provisioning is not None

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

    def registration_settings(self) -> RegistrationSettings:
        """Every phone's registration timing: the ramp's timeout, the scenario's recovery
        timing, the phone core's own for the rest."""
        s = self.scenario
        registration = RegistrationSettings(register_timeout=s.ramp.timeout)
        if s.registration.reconnect_window is not None:
            registration = replace(registration,
                                   reconnect_window=s.registration.reconnect_window)
        if s.registration.reconnect_backoff is not None:
            registration = replace(registration,
                                   reconnect_backoff=s.registration.reconnect_backoff)
        return registration

    def media_options(self, phone: PhonePlan) -> MediaOptions:
        """*phone*'s media: the scenario's codec first, its access network's impairment."""
        s = self.scenario
        codecs: tuple[str, ...] = ("G722", "PCMU", "PCMA")
        if s.calls is not None and s.calls.codec is not None:
            codecs = (s.calls.codec, *(c for c in codecs if c != s.calls.codec))
        # The fleet listens for the tones it expects (detectors at those frequencies):
        # finding other tones would cost CPU on every call for nothing it reports.
        return MediaOptions(codecs=codecs, impairment=phone.impairment, find_tones=False)

    def config(self, phone: PhonePlan, *, connect: tuple[str, int] | None = None
               ) -> PhoneConfig:
        """The :class:`PhoneConfig` of *phone*; ``connect`` replaces the server's address (the
        fault relay sits there) while the SIP domain and TLS name stay the server's. Not
        with provisioning: the configuration server makes each phone's."""
        s = self.scenario
        if s.server is None or phone.username is None or phone.password is None:
            raise ScenarioError("with provisioning each phone's configuration comes from its "
                                "configuration server")
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
        return PhoneConfig(
            profile=phone.profile, accounts=(account,), mac=phone.mac, trust=self.trust,
            registration=self.registration_settings(), media=self.media_options(phone),
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
        """Seconds after the start of the first call: ``calls.start``, else when the ramp
        ends plus 1 s (plus :data:`PROVISIONING_HEADROOM` when the phones boot through
        provisioning: discovery and the fetch come before the registration)."""
        calls = self.scenario.calls
        if calls is not None and calls.start is not None:
            return calls.start
        headroom = PROVISIONING_HEADROOM if self.provisioning else 0.0
        return self.scenario.ramp_seconds + 1.0 + headroom

    def calls(self) -> Iterator[CallPlan]:
        """The call schedule, in time order (bounded by the count or the duration)."""
        s = self.scenario
        calls = s.calls
        if calls is None:
            return
        rate = self.call_rate
        start = self.calls_start
        mix = calls.destination_mix()
        idle = _Idle(self.count) if calls.pick == "idle" else None
        k = 0
        while True:
            if calls.count is not None and k >= calls.count:
                return
            at = start + k / rate
            if s.duration is not None and at >= s.duration:
                return
            pick = random.Random(f"{s.seed}:call:{k}")
            if idle is not None:
                idle.release(at)
            drawn = idle.draw(pick) if idle is not None else None
            caller = drawn if drawn is not None else pick.randrange(self.count)
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
                callee = idle.draw(pick) if idle is not None else None
                if callee is None:
                    callee = pick.randrange(self.count - 1)
                    callee += callee >= caller  # anyone but the caller
                to: str | None = self._accounts[callee][0]
                expect = destination.tone or calls.answer_tone
            else:
                to = destination.to
                expect = destination.tone or calls.tone
            hold = self._hold(pick)
            if idle is not None:
                idle.busy(caller, at + BUSY_GUARD + hold)
                if callee is not None:
                    idle.busy(callee, at + BUSY_GUARD + hold)
            yield CallPlan(number=k, at=at, caller=caller, to=to, callee=callee,
                           hold=hold, expect_tone=expect)
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
        if s.provisioning is not None:
            discovery = s.provisioning.discovery
            if s.provisioning.discovers:
                last += discovery.timeout + discovery.countdown
            last += s.provisioning.timeout
        calls = s.calls
        if calls is not None and calls.count:
            start = self.calls_start + (calls.count - 1) / self.call_rate
            final = start + calls.setup_timeout + calls.hold.max
            last = max(last, final)
        return last

    def describe(self) -> dict[str, object]:
        """For the run record."""
        s = self.scenario
        out: dict[str, object] = {"name": s.name, "phones": self.count, "seed": s.seed}
        if s.server is not None:
            out["server"] = f"{s.server.transport}:{s.server.host}"
        if s.provisioning is not None:
            url = s.provisioning.config_server_url
            # The label: an http URL may carry credentials, which never reach the records.
            out["provisioning"] = parse_config_url(url).label if url else "mdns"
        return out


def peak_calls(calls: Iterable[CallPlan]) -> int:
    """The most calls of a schedule up at once, as the schedule sees them (each from its
    start for its hold time plus :data:`BUSY_GUARD`): what ``--check`` tells a user sizing a
    run (more than half the phones means some phones take a second call)."""
    ends: list[float] = []
    peak = 0
    for call in calls:  # in time order
        while ends and ends[0] <= call.at:
            heapq.heappop(ends)
        heapq.heappush(ends, call.at + BUSY_GUARD + call.hold)
        peak = max(peak, len(ends))
    return peak


class _Idle:
    """The phones the schedule has in no call: a list to draw from (swap-remove, so a draw
    is O(1)) and a heap of the busy ones by when they are free again."""

    __slots__ = ("_free_at", "_heap", "_phones", "_slot")

    def __init__(self, count: int) -> None:
        self._phones = list(range(count))
        self._slot = list(range(count))  # where each phone is in _phones; -1: busy
        self._free_at = [0.0] * count
        self._heap: list[tuple[float, int]] = []

    def release(self, now: float) -> None:
        """Make idle again every phone whose last call is over by *now*."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            free_at, phone = heapq.heappop(heap)
            if free_at == self._free_at[phone] and self._slot[phone] < 0:
                self._slot[phone] = len(self._phones)
                self._phones.append(phone)

    def draw(self, pick: random.Random) -> int | None:
        """An idle phone at random (now busy until :meth:`busy` says), or None: none idle."""
        if not self._phones:
            return None
        phone = self._phones[pick.randrange(len(self._phones))]
        self._remove(phone)
        return phone

    def busy(self, phone: int, until: float) -> None:
        """*phone* is in a call until *until* (a phone drawn when none was idle too)."""
        self._remove(phone)
        if until > self._free_at[phone]:
            self._free_at[phone] = until
            heapq.heappush(self._heap, (until, phone))

    def _remove(self, phone: int) -> None:
        slot = self._slot[phone]
        if slot < 0:
            return
        last = self._phones.pop()
        if last != phone:
            self._phones[slot] = last
            self._slot[last] = slot
        self._slot[phone] = -1
