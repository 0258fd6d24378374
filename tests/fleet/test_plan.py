"""The plan: PhoneConfigs, the model mix, and a call schedule every shard computes alike."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from phone_sim.fleet.plan import BUSY_GUARD, CallPlan, FleetPlan, peak_calls
from phone_sim.fleet.scenario import ScenarioError, parse_scenario
from phone_sim.phone import Impairment, PhoneConfig, RegistrationSettings
from phone_sim.tls.pki import make_ca
from tests.fleet.conftest import PHONE_SIM

TEXT = """\
seed: 3
server: {host: 127.0.0.1, port: 5999, servername: pbx.test}
phones:
  count: 50
  mac_first: "00:0f:d3:00:00:fe"
  models:
    - {model: D65, firmware: 2_9_22, percent: 70%}
    - {model: D45, firmware: 2_9_22, percent: 30%}
  accounts: {first: 2000, password: "pw-{number}"}
ramp: {rate: 25}
calls:
  count: 40
  rate: 20
  hold: {distribution: exponential, mean: 3, min: 1, max: 6}
  codec: PCMU
"""


def test_phone_configs() -> None:
    plan = FleetPlan(parse_scenario(TEXT))
    phone = plan.phone(3)
    assert phone.username == "2003"
    assert phone.password == "pw-2003"
    assert phone.mac == "00:0f:d3:00:01:01"
    assert phone.register_at == pytest.approx(3 / 25)
    config = plan.config(phone)
    assert isinstance(config, PhoneConfig)
    account = config.primary_account
    assert (account.host_primary.server, account.host_primary.port) == ("127.0.0.1", 5999)
    assert account.server_name == "pbx.test"
    assert account.host_primary.media_encryption == "sdes"
    assert config.media.codecs[0] == "PCMU"
    assert config.media.impairment is None
    assert not config.media.find_tones  # the fleet listens for the tones it expects only
    # The phone core's recovery timing unless the scenario says otherwise.
    default = RegistrationSettings()
    assert config.registration.reconnect_window == default.reconnect_window
    assert config.registration.reconnect_backoff == default.reconnect_backoff
    moved = plan.config(phone, connect=("127.0.0.1", 7000))
    assert moved.primary_account.host_primary.port == 7000
    assert moved.primary_account.server_name == "pbx.test"
    assert "pw-2003" not in repr(config)


def test_model_mix_is_exact() -> None:
    plan = FleetPlan(parse_scenario(TEXT))
    counts = Counter(plan.phone(i).model for i in range(plan.count))
    assert counts == {"D65 2_9_22": 35, "D45 2_9_22": 15}


def test_schedule_is_the_same_however_sharded() -> None:
    plan = FleetPlan(parse_scenario(TEXT))
    calls = list(plan.calls())
    assert len(calls) == 40
    assert [c.number for c in calls] == list(range(40))
    assert all(c.callee != c.caller for c in calls)
    assert all(1.0 <= c.hold <= 6.0 for c in calls)
    assert calls[0].at == pytest.approx(50 / 25 + 1.0)
    again = FleetPlan(parse_scenario(TEXT))
    assert list(again.calls()) == calls
    shards = 3
    by_shard = [[c for c in calls if c.caller % shards == s] for s in range(shards)]
    assert sorted((c for part in by_shard for c in part), key=lambda c: c.number) == calls
    phones = [p.index for s in range(shards) for p in plan.shard_phones(s, shards)]
    assert sorted(phones) == list(range(50))


def _overlaps(calls: list[CallPlan], guard: float) -> int:
    """How many calls start while their caller or callee is still in an earlier one."""
    busy_until: dict[int, float] = {}
    met = 0
    for c in calls:
        ends = c.at + guard + c.hold
        phones = [c.caller] + ([c.callee] if c.callee is not None else [])
        met += any(busy_until.get(p, 0.0) > c.at for p in phones)
        for p in phones:
            busy_until[p] = max(busy_until.get(p, 0.0), ends)
    return met


def test_each_phone_is_in_one_call_at_a_time_while_enough_are_idle() -> None:
    # 40 calls over 2 s, each up for 3-8 s: at most 80 of the 100 phones busy at once.
    roomy = TEXT.replace("count: 50", "count: 100")
    idle = list(FleetPlan(parse_scenario(roomy)).calls())
    assert _overlaps(idle, BUSY_GUARD) == 0
    assert len({c.caller for c in idle} | {c.callee for c in idle if c.callee is not None}) == 80
    anyone = list(FleetPlan(parse_scenario(roomy.replace("  codec: PCMU", "  pick: any"))).calls())
    assert _overlaps(anyone, BUSY_GUARD) > 0  # the old way: some phones take a second call
    # More calls than the 50 phones can carry one at a time: the schedule still makes them
    # all, the later ones on phones already in a call.
    crowded = list(FleetPlan(parse_scenario(TEXT)).calls())
    assert len(crowded) == 40 and all(c.callee != c.caller for c in crowded)
    assert 0 < _overlaps(crowded, BUSY_GUARD) < 40
    # A phone is idle again once its call ends: 200 calls over 100 s on 50 phones.
    spread = TEXT.replace("count: 40\n  rate: 20", "count: 200\n  rate: 2")
    assert _overlaps(list(FleetPlan(parse_scenario(spread)).calls()), BUSY_GUARD) == 0
    # Calls to a number keep only the caller busy.
    echo = list(FleetPlan(parse_scenario(roomy + "  destinations: 600\n")).calls())
    assert {c.callee for c in echo} == {None} and _overlaps(echo, BUSY_GUARD) == 0
    assert len({c.caller for c in echo}) == 40


def test_rate_driven_schedule_stops_at_duration() -> None:
    text = TEXT.replace("  count: 40\n  rate: 20\n", "  busy_hour: 360\n") + "duration: 10\n"
    plan = FleetPlan(parse_scenario(text))
    assert plan.call_rate == pytest.approx(50 * 360 / 3600)
    calls = list(plan.calls())
    assert calls and all(c.at < 10 for c in calls)
    assert len(calls) == int((10 - 3.0) * 5)


def test_csv_accounts(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("username,password,authname\n7001,x1,\n7002,x2,auth2\n")
    text = TEXT.replace('accounts: {first: 2000, password: "pw-{number}"}',
                        "accounts: {csv: a.csv}").replace("count: 50", "count: 2")
    plan = FleetPlan(parse_scenario(text, base_dir=tmp_path))
    assert plan.accounts() == {"7001": "x1", "7002": "x2"}
    assert plan.phone(1).authname == "auth2"
    with pytest.raises(ScenarioError, match="lists 2 accounts for 3 phones"):
        FleetPlan(parse_scenario(text.replace("count: 2", "count: 3"), base_dir=tmp_path))
    (tmp_path / "a.csv").write_text("user,pass\n1,2\n")
    with pytest.raises(ScenarioError, match="line 1 must be a header"):
        FleetPlan(parse_scenario(text, base_dir=tmp_path))


def test_bad_firmware_and_ca_are_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"phones\.models"):
        FleetPlan(parse_scenario(TEXT.replace("D45, firmware: 2_9_22", "D45, firmware: 9_9_9")))
    plan = FleetPlan(parse_scenario(TEXT + "tls: {ca_files: [nope.pem]}\n", base_dir=tmp_path))
    with pytest.raises(ScenarioError, match=r"tls\.ca_files"):
        plan.trust  # noqa: B018


def test_impaired_share_is_seeded() -> None:
    text = TEXT + "faults:\n  impairment: {phones: 40%, loss: 5%}\n"
    a = [FleetPlan(parse_scenario(text)).phone(i).impairment is not None for i in range(50)]
    b = [FleetPlan(parse_scenario(text)).phone(i).impairment is not None for i in range(50)]
    assert a == b
    assert 10 <= sum(a) <= 30


def test_impairment_becomes_each_phones_media_option_seeded_per_phone() -> None:
    text = TEXT + ("faults:\n  impairment: {phones: 100%, loss: 5%, jitter_ms: 20, "
                   "reorder: 1%}\n")
    plan = FleetPlan(parse_scenario(text))
    configs = [plan.config(plan.phone(i)) for i in range(3)]
    impairments = [c.media.impairment for c in configs]
    assert all(isinstance(i, Impairment) for i in impairments)
    first = impairments[0]
    assert first is not None
    assert (first.loss_percent, first.jitter_ms, first.reorder_percent) == (5.0, 20.0, 1.0)
    assert len({i.seed for i in impairments if i is not None}) == 3  # independent phones
    again = FleetPlan(parse_scenario(text)).config(plan.phone(0)).media.impairment
    assert again == first  # a rerun damages alike


def test_reconnect_timing_comes_from_the_scenario() -> None:
    text = TEXT + "registration: {reconnect_window: 1.5, reconnect_backoff: 0}\n"
    plan = FleetPlan(parse_scenario(text))
    settings = plan.config(plan.phone(0)).registration
    assert (settings.reconnect_window, settings.reconnect_backoff) == (1.5, 0.0)


BOOT = """\
seed: 3
phones:
  count: 20
  models:
    - {model: D65, firmware: 2_9_2, percent: 50%}
    - {model: D80, firmware: 1_12_1, percent: 50%}
provisioning: {config_server_url: "https://admin:s3cret@pbx.test:8443/cfg/"}
ramp: {rate: 10}
registration: {reconnect_window: 1}
calls:
  count: 6
  destinations:
    - {to: fleet, percent: 50%}
    - {to: "600", percent: 50%}
  codec: PCMA
"""


def test_provisioned_phones_get_their_numbers_when_they_boot() -> None:
    plan = FleetPlan(parse_scenario(BOOT))
    assert plan.provisioning and plan.accounts() == {}
    phone = plan.phone(4)
    assert phone.username is None and phone.password is None
    assert phone.name == phone.mac == "00:0f:d3:00:00:05"
    with pytest.raises(ScenarioError, match="configuration comes from its configuration"):
        plan.config(phone)
    # What the XML does not say is the scenario's: codec order, impairment, timing.
    assert plan.media_options(phone).codecs[0] == "PCMA"
    assert not plan.media_options(phone).find_tones
    assert plan.registration_settings().reconnect_window == 1
    # A call to a fleet phone dials the number its provisioning gives it: not known here.
    calls = list(plan.calls())
    assert {c.to for c in calls if c.callee is not None} == {None}
    assert {c.to for c in calls if c.callee is None} == {"600"}
    # The ramp paces boots; the first call leaves room for discovery and the fetch.
    assert plan.calls_start == pytest.approx(20 / 10 + 1 + 2)
    assert plan.expected_end() > plan.calls_start
    # The run record names the server without its credentials.
    assert plan.describe()["provisioning"] == "https://pbx.test:8443/cfg"
    assert "s3cret" not in repr(plan.describe())


def test_peak_calls_counts_what_is_up_at_once() -> None:
    def call(at: float, hold: float) -> CallPlan:
        return CallPlan(number=0, at=at, caller=0, to="600", callee=None, hold=hold,
                        expect_tone=1004.0)

    # Up from `at` for the hold plus the set-up/hang-up guard.
    assert peak_calls([]) == 0
    assert peak_calls([call(0, 1), call(1, 1), call(2, 1)]) == 3  # 0-3, 1-4, 2-5 overlap
    assert peak_calls([call(0, 1), call(3, 1), call(6, 1)]) == 1  # each over before the next
    schedule = list(FleetPlan(parse_scenario(TEXT)).calls())
    assert 20 <= peak_calls(schedule) <= 40  # 40 calls in 2 s, each up 3-8 s


def test_check_says_how_many_calls_are_up_at_once(tmp_path: Path) -> None:
    ca_pem, _key = make_ca(cn="test-only CA")
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(TEXT + "tls: {ca_files: [ca.pem]}\n")
    done = subprocess.run([*PHONE_SIM, "fleet", str(scenario), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # 50 phones, 40 fleet calls at 20/s up for 3-8 s: more pairs than the phones hold.
    assert re.fullmatch(
        r"fleet: 50 phones over 2\.0 s, 40 calls, at most about \d+ up at once "
        r"\(about \d+ phones busy: more than the 50 phones carry one call each, so some "
        r"take a second call\), 0 thresholds: OK\n", done.stdout), done.stdout
    scenario.write_text(TEXT.replace("count: 50", "count: 100") + "tls: {ca_files: [ca.pem]}\n")
    done = subprocess.run([*PHONE_SIM, "fleet", str(scenario), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert "phones busy" not in done.stdout and "40 calls, at most about" in done.stdout
