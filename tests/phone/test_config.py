"""PhoneConfig: one frozen description of a phone, validated before any I/O."""

from __future__ import annotations

import dataclasses

import pytest

from phone_sim.account import Account, SipHost
from phone_sim.firmware import Model, profile_for
from phone_sim.media.payloads import UnknownCodecError
from phone_sim.phone.config import (
    MODEL_LINES,
    MediaOptions,
    NetworkOptions,
    PhoneConfig,
    PhoneConfigError,
    normalize_mac,
)

HOST = SipHost(server="127.0.0.1")


def _account(user: str, index: int = 0, **kw: object) -> Account:
    return Account(username=user, password="pw", host_primary=HOST, index=index, **kw)  # type: ignore[arg-type]


def test_mac_forms_normalise_to_the_file_name_form() -> None:
    for text in ("00:0F:D3:01:02:03", "00-0f-d3-01-02-03", "000fd3010203", " 000FD3010203 "):
        assert normalize_mac(text) == "000fd3010203"
    config = PhoneConfig(profile=profile_for("D65"), accounts=(_account("101"),),
                         mac="00:0F:D3:01:02:03")
    assert config.mac == "000fd3010203"


@pytest.mark.parametrize("text", ["", "00:0f:d3:01:02", "00:0f:d3:01:02:0g", "000fd30102030",
                                  "００:0f:d3:01:02:03"])
def test_bad_mac_is_named(text: str) -> None:
    with pytest.raises(PhoneConfigError, match="bad MAC address"):
        normalize_mac(text)


def test_no_account_is_refused() -> None:
    with pytest.raises(PhoneConfigError, match="no account"):
        PhoneConfig(profile=profile_for("D65"), accounts=())


def test_duplicate_index_is_refused() -> None:
    with pytest.raises(PhoneConfigError, match="two accounts have index 0"):
        PhoneConfig(profile=profile_for("D65"), accounts=(_account("101"), _account("102")))


@pytest.mark.parametrize("model", list(Model))
def test_each_model_takes_as_many_lines_as_it_has(model: Model) -> None:
    lines = MODEL_LINES[model]
    accounts = tuple(_account(str(100 + i), i) for i in range(lines))
    config = PhoneConfig(profile=profile_for(model), accounts=accounts)
    assert len(config.registering_accounts) == lines
    if lines < 6:  # six lines is also the XML's own limit (index 0-5), checked by Account
        with pytest.raises(PhoneConfigError, match=f"a {model.value} has {lines} lines"):
            PhoneConfig(profile=profile_for(model), accounts=(_account("199", lines),))


def test_primary_and_registering_accounts_follow_index_and_flags() -> None:
    config = PhoneConfig(profile=profile_for("D65"), accounts=(
        _account("103", 3), _account("101", 1, enabled=False), _account("102", 2, register=False),
    ))
    assert config.primary_account.username == "102"  # lowest enabled index
    assert [a.username for a in config.registering_accounts] == ["103"]
    assert config.account(3).username == "103"
    assert config.account("101").index == 1
    with pytest.raises(PhoneConfigError, match="no account 5"):
        config.account(5)


def test_config_is_frozen() -> None:
    config = PhoneConfig(profile=profile_for("D65"), accounts=(_account("101"),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.auto_answer = True  # type: ignore[misc]


def test_media_options_are_checked() -> None:
    with pytest.raises(UnknownCodecError, match="G729"):
        MediaOptions(codecs=("G729",))
    with pytest.raises(PhoneConfigError, match="twice"):
        MediaOptions(codecs=("PCMU", "pcmu"))
    with pytest.raises(PhoneConfigError, match="at least one codec"):
        MediaOptions(codecs=())
    with pytest.raises(PhoneConfigError, match="ptime 25"):
        MediaOptions(ptime_ms=25)
    with pytest.raises(PhoneConfigError, match="listen port"):
        NetworkOptions(listen_port=70000)


def test_caller_id_with_a_quote_is_refused() -> None:
    with pytest.raises(PhoneConfigError.__mro__[1], match="bad caller_id"):
        _account("101", caller_id='Bob "J"')
