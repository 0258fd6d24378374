"""The pjlib bitmask: flag values, the symbolic-name mapping and decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.tls import _openssl
from phone_sim.tls.flags import (
    FLAG_INFO,
    OPENSSL_ERROR_FLAGS,
    BitmaskParseError,
    CertVerifyFlag,
    decode_bitmask,
    flag_for_error,
    flag_names,
    mask_for_errors,
)

F = CertVerifyFlag


def test_flag_values_are_pjlibs() -> None:
    assert F.EISSUER_NOT_FOUND == 0x1
    assert F.EUNTRUSTED == 0x2
    assert F.EVALIDITY_PERIOD == 0x4
    assert F.EINVALID_FORMAT == 0x8
    assert F.EINVALID_PURPOSE == 0x10
    assert F.EISSUER_MISMATCH == 0x20
    assert F.ECRL_FAILURE == 0x40
    assert F.EREVOKED == 0x80
    assert F.ECHAIN_TOO_LONG == 0x100
    assert F.EWEAK_SIGNATURE == 0x200
    assert F.EIDENTITY_NOT_MATCH == 0x40000000
    assert F.EUNKNOWN == 0x80000000


def test_every_flag_has_an_explanation() -> None:
    assert set(FLAG_INFO) == set(CertVerifyFlag)
    assert "RFC 5922" in FLAG_INFO[F.EIDENTITY_NOT_MATCH].cause
    assert "tls_allow_wildcard_certs" in FLAG_INFO[F.EIDENTITY_NOT_MATCH].fix


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("UNABLE_TO_GET_ISSUER_CERT", F.EISSUER_NOT_FOUND),
        ("X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY", F.EUNTRUSTED),
        ("CERT_HAS_EXPIRED", F.EVALIDITY_PERIOD),
        ("INVALID_CA", F.EINVALID_PURPOSE),
        ("UNABLE_TO_VERIFY_LEAF_SIGNATURE", F.EISSUER_MISMATCH),
        ("CRL_HAS_EXPIRED", F.ECRL_FAILURE),
        ("CERT_REVOKED", F.EREVOKED),
        ("PATH_LENGTH_EXCEEDED", F.ECHAIN_TOO_LONG),
        ("HOSTNAME_MISMATCH", F.EUNKNOWN),
        ("CA_MD_TOO_WEAK", F.EUNKNOWN),
        (None, F.EUNKNOWN),
    ],
)
def test_mapping_by_symbolic_name(name: str | None, flag: CertVerifyFlag) -> None:
    assert flag_for_error(name) is flag


def test_mapped_names_exist_in_the_running_openssl() -> None:
    # The map is by name; most names must be known to the bindings, or the mapping is dead.
    known = set(_openssl.verify_error_names().values())
    missing = set(OPENSSL_ERROR_FLAGS) - known
    assert len(missing) <= 3, missing


def test_masks_add_up() -> None:
    mask = mask_for_errors(["UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"])
    assert mask == 0x22
    assert flag_names(mask | F.EIDENTITY_NOT_MATCH) == [
        "EUNTRUSTED",
        "EISSUER_MISMATCH",
        "EIDENTITY_NOT_MATCH",
    ]


def test_decode_the_vendor_example() -> None:
    decoded = decode_bitmask("0x40000022")
    assert decoded.value == 0x40000022
    assert decoded.flags == (F.EUNTRUSTED, F.EISSUER_MISMATCH, F.EIDENTITY_NOT_MATCH)
    assert decoded.note is None and decoded.unknown_bits == 0


def test_decode_the_vendor_typo_says_so() -> None:
    decoded = decode_bitmask("0x400000022")
    assert decoded.value == 0x40000022
    assert decoded.note is not None and "one digit too many" in decoded.note


@pytest.mark.parametrize(("text", "value"), [("0x4000 0022", 0x40000022), ("0X2", 2),
                                            ("4000002a", 0x4000002A), ("0x4000_0022", 0x40000022)])
def test_decode_accepts_spacing_and_hex(text: str, value: int) -> None:
    decoded = decode_bitmask(text)
    assert decoded.value == value and decoded.note is None


def test_bare_digits_are_hex_as_the_phone_shows_them_and_it_says_so() -> None:
    decoded = decode_bitmask("40000022")
    assert decoded.value == 0x40000022
    assert decoded.flags == (F.EUNTRUSTED, F.EISSUER_MISMATCH, F.EIDENTITY_NOT_MATCH)
    assert decoded.note == ("40000022 has no 0x: read as hex, as the phone shows it "
                            "(as a decimal number it would be 0x02625a16)")
    assert decode_bitmask("34").value == 0x34


@pytest.mark.parametrize("text", ["\uff14\uff10\uff10", "0x\uff14\uff10", "\u00b2",
                                  "0x4000002\u0663", "\u0663\u0664"])
def test_only_ascii_digits(text: str) -> None:
    """int() takes fullwidth and Arabic-Indic digits; a bitmask from the phone never has them."""
    with pytest.raises(BitmaskParseError, match="is not a bitmask"):
        decode_bitmask(text)


def test_decode_reports_unknown_bits() -> None:
    decoded = decode_bitmask("0x1400")
    assert decoded.flags == ()
    assert decoded.unknown_bits == 0x1400


@pytest.mark.parametrize("text", ["", "hello", "0xZZ", "-1", "0x1FFFFFFFF", "1.5"])
def test_decode_refuses_what_is_not_a_mask(text: str) -> None:
    with pytest.raises(BitmaskParseError):
        decode_bitmask(text)


@given(st.integers(0, 0xFFFFFFFF))
def test_decode_round_trip(value: int) -> None:
    decoded = decode_bitmask(hex(value))
    rebuilt = decoded.unknown_bits
    for f in decoded.flags:
        rebuilt |= f.value
    assert rebuilt == value
