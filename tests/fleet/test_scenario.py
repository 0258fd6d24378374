"""Scenario files: every fixture validates; bad ones name the field and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from phone_sim.fleet.scenario import ScenarioError, load_scenario, parse_scenario

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios"
ENV = {"LAB_TLS_PORT": "5061", "LAB_CA_FILE": "ca.pem", "KAMAILIO_TLS_PORT": "5061",
       "KAMAILIO_CA_FILE": "ca.pem"}

MINIMAL = """\
server:
  host: 127.0.0.1
phones:
  count: 10
  accounts: {first: 100, password: "pw{number}"}
"""


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_fixture_validates(path: Path) -> None:
    scenario = load_scenario(path, ENV)
    assert scenario.phones.count >= 1
    scenario.parsed_thresholds()


def test_minimal_defaults() -> None:
    s = parse_scenario(MINIMAL)
    assert s.server.transport == "tls"
    assert s.ramp.rate == 100.0
    assert s.calls is None
    assert s.phones.models[0].model == "D65"


def _error(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="s.yaml")
    return str(info.value)


def test_unknown_field_names_field_and_line() -> None:
    message = _error(MINIMAL + "ramp:\n  rate: 10\n  burst: 5\n")
    assert message == "s.yaml: line 8: ramp.burst: unknown field (see docs/load-testing.md " \
        "for the fields)"


def test_bad_value_names_field_and_line() -> None:
    message = _error(MINIMAL.replace("count: 10", "count: -3"))
    assert "line 4: phones.count:" in message
    assert "greater than or equal to 1" in message


def test_missing_field() -> None:
    message = _error("server:\n  host: 127.0.0.1\n")
    assert "phones: this field is required" in message


def test_model_shares_must_add_up() -> None:
    text = MINIMAL.replace("phones:\n", "phones:\n  models:\n    - {model: D65, percent: 60%}\n"
                           "    - {model: D45, percent: 30}\n")
    message = _error(text)
    assert "s.yaml: line 5: phones.models: " in message
    assert "add up to 90%, not 100%" in message


def test_bad_percentage() -> None:
    message = _error(MINIMAL + "faults:\n  impairment: {loss: lots}\n")
    assert "s.yaml: line 7: faults.impairment.loss: " in message
    assert "'lots' is not a percentage" in message


def test_bad_reconnect_window_is_named() -> None:
    message = _error(MINIMAL + "registration:\n  reconnect_window: -1\n")
    assert "s.yaml: line 7: registration.reconnect_window: " in message
    assert "greater than or equal to 0" in message


def test_bad_threshold_names_metric_list() -> None:
    message = _error(MINIMAL + "thresholds:\n  - register.p97 < 2s\n")
    assert "s.yaml: line 7: thresholds: " in message
    assert "unknown metric 'register.p97'" in message


def test_threshold_unit_must_match() -> None:
    message = _error(MINIMAL + "thresholds: ['calls.failed < 1s']\n")
    assert "calls.failed is in %" in message


def test_calls_need_a_driver_and_a_duration() -> None:
    assert "say how many calls" in _error(MINIMAL + "calls: {tone: 1004}\n")
    assert "need a duration" in _error(MINIMAL + "calls: {rate: 2}\n")
    assert "busy_hour sets the call rate" in _error(MINIMAL + "calls: {busy_hour: 2, rate: 1}\n"
                                                     "duration: 5\n")


def test_mac_range_must_fit() -> None:
    text = MINIMAL.replace("count: 10", "count: 10\n  mac_first: 00:0f:d3:00:00:01\n"
                           "  mac_last: 00:0f:d3:00:00:05")
    assert "10 phones do not fit in the MAC range" in _error(text)


def test_not_yaml_and_not_a_mapping() -> None:
    assert "s.yaml: line 3: not valid YAML" in _error("server: [\nphones: 1\n")
    assert "must be a mapping" in _error("- 1\n- 2\n")
    assert "the file is empty" in _error("")
    assert "given twice" in _error(MINIMAL + "server: {host: x}\n")


def test_environment_variables() -> None:
    text = MINIMAL.replace("count: 10", "count: ${N:-4}")
    assert parse_scenario(text).phones.count == 4
    assert parse_scenario(text, environ={"N": "7"}).phones.count == 7
    message = _error(MINIMAL.replace("count: 10", "count: ${NOPE}"))
    assert "line 4: ${NOPE} is not set in the environment" in message


def test_firmware_keeps_its_underscores() -> None:
    s = parse_scenario(MINIMAL.replace("phones:\n", "phones:\n  models: [{model: D65, "
                                       "firmware: 2_9_22, percent: 100}]\n"))
    assert s.phones.models[0].firmware == "2_9_22"


def test_destination_mix() -> None:
    s = parse_scenario(MINIMAL + "duration: 5\ncalls:\n  rate: 1\n  destinations:\n"
                       "    - {to: fleet, percent: 80%}\n    - {to: 600, percent: 20%}\n")
    assert s.calls is not None
    assert [d.to for d in s.calls.destination_mix()] == ["fleet", "600"]
    assert "add up to 90%" in _error(MINIMAL + "duration: 5\ncalls:\n  rate: 1\n"
                                     "  destinations: [{to: fleet, percent: 90}]\n")


def test_missing_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "none.yaml")
