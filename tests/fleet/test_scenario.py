"""Scenario files: every fixture validates; bad ones name the field and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from phone_sim.fleet.scenario import ScenarioError, load_scenario, parse_scenario

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios"
ENV = {"LAB_TLS_PORT": "5061", "LAB_CA_FILE": "ca.pem", "KAMAILIO_TLS_PORT": "5061",
       "KAMAILIO_CA_FILE": "ca.pem", "DPMA_URL": "sip:proxy@127.0.0.1:5061;transport=tls"}

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


BOOT = """\
phones:
  count: 10
  models:
    - {model: D65, firmware: 2_9_2, percent: 100%}
provisioning:
  mdns: {server: Asterisk}
"""


def test_provisioning_section() -> None:
    s = parse_scenario(BOOT)
    assert s.server is None and s.phones.accounts is None
    p = s.provisioning
    assert p is not None and p.discovers and p.discovery.server == "Asterisk"
    assert p.discovery.browse == "shard" and p.discovery.interfaces == ("127.0.0.1",)
    assert p.discovery.countdown == 0 and p.timeout == 10
    given = parse_scenario(BOOT.replace("mdns: {server: Asterisk}",
                                        "{config_server_url: 'https://pbx.test/cfg/', pin: 0012}"))
    assert given.provisioning is not None and not given.provisioning.discovers
    assert given.provisioning.pin == "0012"  # not the octal 10 YAML 1.1 would read
    assert "0012" not in repr(given.provisioning)


def test_what_provisioning_decides_is_not_in_the_file() -> None:
    # The accounts, the server and the TLS name come from each phone's configuration: a
    # scenario that also gives them is a bad scenario, each field named with its line.
    text = ("server: {host: 127.0.0.1}\ntls: {servername: pbx.test, allow_wildcard: true}\n"
            + BOOT.replace("  count: 10\n", "  count: 10\n  accounts: {first: 1, password: x}\n"))
    message = _error(text)
    assert "s.yaml: line 1: server: with provisioning the phones register where their " \
        "configuration says: remove server (or provisioning)" in message
    assert "line 2: tls.servername: with provisioning the TLS name" in message
    assert "line 2: tls.allow_wildcard: with provisioning the configuration's " \
        "tls_allow_wildcard_certs setting decides" in message
    assert "line 5: phones.accounts: with provisioning each phone's configuration gives " \
        "its accounts" in message


def test_without_provisioning_server_and_accounts_are_required() -> None:
    message = _error("phones: {count: 3}\n")
    assert "line 1: server: this field is required (or give provisioning:" in message
    assert "line 1: phones.accounts: this field is required (or give provisioning:" in message


def test_the_d80_does_not_discover() -> None:
    message = _error(BOOT.replace("model: D65, firmware: 2_9_2", "model: D80, firmware: 1_12_1"))
    assert "line 4: phones.models: the D80 does not use mDNS: give " \
        "provisioning.config_server_url" in message
    ok = parse_scenario(BOOT.replace("model: D65, firmware: 2_9_2", "model: D80, firmware: "
                                     "1_12_1").replace("mdns: {server: Asterisk}",
                                                       "config_server_url: http://h/"))
    assert ok.provisioning is not None


def test_bad_provisioning_values() -> None:
    assert "line 6: provisioning.config_server_url: config URL 'ftp://h/': ftp:// is not " \
        "supported by phone-sim" in _error(
        BOOT.replace("mdns: {server: Asterisk}", "config_server_url: ftp://h/"))
    assert "give config_server_url (the phones skip discovery) or mdns, not both" in _error(
        BOOT.replace("mdns: {server: Asterisk}", "{config_server_url: 'http://h/', mdns: {}}"))
    assert "provisioning.mdns.interfaces: 'eth0' is not an IP address" in _error(
        BOOT.replace("{server: Asterisk}", "{interfaces: [eth0]}"))
    assert "provisioning.pin: a PIN is 1-32 digits" in _error(
        BOOT.replace("mdns: {server: Asterisk}", "pin: abc"))
    assert "provisioning.mdns.browse: Input should be 'shard' or 'phone'" in _error(
        BOOT.replace("{server: Asterisk}", "{browse: all}"))
