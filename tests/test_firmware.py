"""Firmware versions, models, capability profiles and the firmware classes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.errors import UsageError
from phone_sim.firmware import (
    DEFAULT_MODEL,
    FIRMWARE_CLASSES,
    FirmwareError,
    FirmwareVersion,
    Model,
    TlsVersion,
    WildcardSettingUnavailable,
    newest_firmware,
    profile_for,
)


@pytest.mark.parametrize(
    ("text", "numbers", "build"),
    [
        ("2_2_0_4_5a54ff2", (2, 2, 0, 4), "5a54ff2"),
        ("2_3_9", (2, 3, 9), None),
        ("2_9_2", (2, 9, 2), None),
        ("1_12_1", (1, 12, 1), None),
        ("1_4_0_0_57389", (1, 4, 0, 0), "57389"),
        ("2.3.9", (2, 3, 9), None),
    ],
)
def test_vendor_strings_parse(text: str, numbers: tuple[int, ...], build: str | None) -> None:
    version = FirmwareVersion.parse(text)
    assert version.numbers == numbers
    assert version.build == build


def test_round_trip_keeps_the_build() -> None:
    assert str(FirmwareVersion.parse("2_2_0_4_5a54ff2")) == "2_2_0_4_5a54ff2"
    assert str(FirmwareVersion.parse("1_4_0_0_57389")) == "1_4_0_0_57389"


def test_fields_compare_numerically_not_as_text() -> None:
    v = FirmwareVersion.parse
    assert v("2_9_2") < v("2_9_22")
    assert v("2_9_10") > v("2_9_9")
    assert v("1_12_1") > v("1_4_0_0_57389")
    assert v("2_2_0_4_5a54ff2") == v("2_2_0_4")  # the build is metadata
    assert v("2_9_2") == v("2_9_2_0")
    assert v("2_2_0_3") < v("2_2_0_4") < v("2_3_9")


@pytest.mark.parametrize(
    "text", ["", "abc", "2", "2__3", "2_3_x_y", "2-3-9", "2_3_9_1_a_b", "_2_3", "2_3;rm", "2_3_"]
)
def test_malformed_versions_are_refused_clearly(text: str) -> None:
    with pytest.raises(FirmwareError, match="malformed firmware version") as info:
        FirmwareVersion.parse(text)
    assert isinstance(info.value, UsageError)


@given(
    st.lists(st.integers(0, 999), min_size=2, max_size=4),
    st.from_regex(r"[0-9a-f]{7}", fullmatch=True),
)
def test_parse_str_round_trip(numbers: list[int], build: str) -> None:
    text = "_".join(map(str, numbers))
    assert FirmwareVersion.parse(text).key[: len(numbers)] == tuple(numbers)
    if len(numbers) == 4:
        with_build = FirmwareVersion.parse(f"{text}_{build}")
        assert str(with_build) == f"{text}_{build}"
        assert with_build == FirmwareVersion.parse(text)


@given(st.text(max_size=20))
def test_parse_never_raises_anything_but_firmware_error(text: str) -> None:
    with contextlib.suppress(FirmwareError):
        FirmwareVersion.parse(text)


def test_models() -> None:
    assert [m.value for m in Model] == ["D40", "D45", "D50", "D60", "D62", "D65", "D70", "D80"]
    assert Model.parse("d65") is Model.D65
    with pytest.raises(FirmwareError, match="unknown phone model 'D99'"):
        Model.parse("D99")


def test_default_profile_is_a_d65_on_the_newest_firmware() -> None:
    profile = profile_for(DEFAULT_MODEL)
    assert profile.model is Model.D65
    assert str(profile.version) == "2_9_22"
    assert profile.user_agent == "Digium D65 2_9_22"
    assert newest_firmware(Model.D80) == FirmwareVersion.parse("1_12_1")


def test_user_agent_keeps_the_build() -> None:
    assert profile_for("D40", "1_4_0_0_57389").user_agent == "Digium D40 1_4_0_0_57389"


@pytest.mark.parametrize(
    ("model", "fw", "expected"),
    [
        ("D65", "2_0_2_0_78957", (False, False, False, False)),
        ("D65", "2_2_0_3", (False, False, False, False)),
        ("D65", "2_2_0_4_5a54ff2", (True, False, True, False)),
        ("D45", "2_3_8", (True, False, True, False)),
        ("D65", "2_3_9", (True, False, False, False)),
        ("D70", "2_8_99", (True, False, False, False)),
        ("D65", "2_9_0", (True, True, False, False)),
        ("D62", "2_9_1", (True, True, False, False)),
        ("D65", "2_9_2", (True, True, False, True)),
        ("D60", "2_9_22", (True, True, False, True)),
        ("D80", "1_11_9", (False, False, False, False)),
        ("D80", "1_12_0", (True, True, False, False)),
        ("D80", "1_12_1", (True, True, False, True)),
    ],
)
def test_capabilities_follow_the_vendor_table(
    model: str, fw: str, expected: tuple[bool, bool, bool, bool]
) -> None:
    tls, validates, anon, setting = expected
    p = profile_for(model, fw)
    assert (p.tls_supported, p.validates_server, p.anon_ciphers_offered) == (tls, validates, anon)
    assert p.has_wildcard_setting is setting
    assert p.allow_wildcard is False
    assert p.wildcard_setting == ("0" if setting else None)
    assert p.tls_min_version is TlsVersion.TLSv1
    assert p.tls_max_version is TlsVersion.TLSv1_2
    assert p.digest_algorithms == ("MD5",)
    assert p.presents_client_certificate is False
    assert "@SECLEVEL=0" in p.cipher_string
    assert ("aNULL:eNULL" in p.cipher_string) is anon


@pytest.mark.parametrize(
    ("model", "fw"), [("D80", "2_9_22"), ("D80", "2_2_0_4"), ("D65", "1_4_0_0_57389")]
)
def test_pairs_that_never_existed_are_refused(model: str, fw: str) -> None:
    with pytest.raises(FirmwareError, match=f"a {model} never ran firmware"):
        profile_for(model, fw)


@pytest.mark.parametrize(
    ("model", "fw", "first"),
    [("D65", "2_9_1", "2_9_2"), ("D80", "1_12_0", "1_12_1"), ("D65", "2_3_9", "2_9_2")],
)
def test_allow_wildcard_needs_the_setting(model: str, fw: str, first: str) -> None:
    with pytest.raises(WildcardSettingUnavailable, match=f"first appears in firmware {first}"):
        profile_for(model, fw, allow_wildcard=True)


def test_allow_wildcard_sets_the_value() -> None:
    p = profile_for("D65", "2_9_2", allow_wildcard=True)
    assert p.allow_wildcard and p.wildcard_setting == "1"
    assert p.label == "D65 2_9_2 +wildcards"


def test_firmware_classes_are_those_of_the_issue() -> None:
    ids = [c.id for c in FIRMWARE_CLASSES]
    assert ids == [
        "no-tls",
        "2_2_0_4",
        "2_3_9",
        "2_9_0",
        "2_9_2",
        "2_9_2+wild",
        "d80-1_12_0",
        "d80-1_12_1",
        "d80-1_12_1+wild",
    ]
    assert not FIRMWARE_CLASSES[0].profile.tls_supported
    assert FIRMWARE_CLASSES[1].profile.anon_ciphers_offered
    assert sum(c.profile.model is Model.D80 for c in FIRMWARE_CLASSES) == 3
    assert [c.profile.allow_wildcard for c in FIRMWARE_CLASSES].count(True) == 2


def test_profile_is_frozen() -> None:
    p = profile_for("D65")
    with pytest.raises(AttributeError):
        p.validates_server = False  # type: ignore[misc]


@given(
    st.lists(st.integers(0, 99), min_size=2, max_size=4),
    st.lists(st.integers(0, 99), min_size=2, max_size=4),
)
def test_ordering_is_numeric_on_padded_fields(a: list[int], b: list[int]) -> None:
    va = FirmwareVersion.parse("_".join(map(str, a)))
    vb = FirmwareVersion.parse("_".join(map(str, b)))
    pa, pb = tuple(a + [0] * (4 - len(a))), tuple(b + [0] * (4 - len(b)))
    assert (va < vb) is (pa < pb)
    assert (va == vb) is (pa == pb)
    assert (hash(va) == hash(vb)) or pa != pb
