"""SDES ``a=crypto`` (RFC 4568): parse, serialize, the phone's acceptance rules, redaction."""

from __future__ import annotations

import base64
import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.errors import ProtocolError
from phone_sim.media import sdes
from phone_sim.media.sdes import CryptoAttribute, SdesKeyParam, SdesParseError, check_crypto

KEY = bytes(range(30))
B64 = base64.b64encode(KEY).decode()


def test_generate_key_is_30_fresh_bytes() -> None:
    keys = {sdes.generate_key() for _ in range(50)}
    assert len(keys) == 50
    assert {len(k) for k in keys} == {30}


def test_phone_line_round_trips() -> None:
    value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}"
    attribute = CryptoAttribute.parse(value)
    assert attribute == CryptoAttribute.for_key(KEY, tag=1)
    assert attribute.key_salt == KEY
    assert attribute.serialize() == value
    assert check_crypto(attribute) is None


def test_full_grammar_round_trips() -> None:
    value = f"42 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20|1:4;inline:{B64}|7:4 KDR=0 WSH=128"
    attribute = CryptoAttribute.parse(value)
    assert attribute.tag == 42
    first, second = attribute.key_params
    assert (first.lifetime_packets, first.mki_value, first.mki_length) == (2**20, 1, 4)
    assert (second.lifetime, second.mki) == (None, "7:4")
    assert attribute.session_params == ("KDR=0", "WSH=128")
    assert attribute.serialize() == value


def test_decimal_lifetime_and_missing_padding() -> None:
    key = bytes(range(46))
    unpadded = base64.b64encode(key).decode().rstrip("=")
    param = SdesKeyParam.parse(f"inline:{unpadded}|1048576")
    assert param.key_salt == key
    assert param.lifetime_packets == 1048576


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "needs a tag, a suite and key parameters"),
        ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag, a suite and key parameters"),
        (f"01 AES_CM_128_HMAC_SHA1_80 inline:{B64}", "without leading zeros"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{B64}", "not a decimal number"),
        (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{B64}", "1 to 9 digits"),
        (f"1 AES-CM inline:{B64}", "crypto suite is not a token"),
        (f"1 AES_CM_128_HMAC_SHA1_80 {B64}", "no key method"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{B64}", "key method 'uri' is not supported"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:", "inline key is empty"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:abc$def", "not valid base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:abcde", "not valid base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^x", "lifetime is not N or 2^N"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|1:4|2^20", "lifetime is not N or 2^N"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|1:x", "MKI is not VALUE:LENGTH"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|1:200", "MKI length is not in 1..128"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^123", "lifetime is not N or 2^N"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|1|2|3", "more than a lifetime and an MKI"),
    ],
)
def test_malformed_crypto_values(value: str, message: str) -> None:
    with pytest.raises(SdesParseError, match=re.escape(message)) as info:
        CryptoAttribute.parse(value)
    assert info.value.status == 488
    assert isinstance(info.value, ProtocolError)
    assert B64 not in str(info.value)


def test_parse_error_carries_the_tag_when_readable() -> None:
    with pytest.raises(SdesParseError) as info:
        CryptoAttribute.parse("7 AES_CM_128_HMAC_SHA1_80 inline:!!")
    assert info.value.tag == 7


def _reason(value: str) -> str | None:
    return check_crypto(CryptoAttribute.parse(value))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"1 AES_CM_128_HMAC_SHA1_32 inline:{B64}", "AES_CM_128_HMAC_SHA1_32 is not supported"),
        (f"1 F8_128_HMAC_SHA1_80 inline:{B64}", "F8_128_HMAC_SHA1_80 is not supported"),
        (
            f"1 AES_256_CM_HMAC_SHA1_80 inline:{base64.b64encode(bytes(46)).decode()}",
            "AES_256_CM_HMAC_SHA1_80 is not supported",
        ),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(bytes(29)).decode()}",
            "inline key is 29 bytes; AES_CM_128_HMAC_SHA1_80 needs 30",
        ),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|1:4", "an MKI is required"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64};inline:{B64}", "2 master keys offered"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^49", "lifetime 2^49 is outside 1..2^48"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|0", "lifetime 0 is outside"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} UNENCRYPTED_SRTP", "would weaken SRTP"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} UNAUTHENTICATED_SRTP", "would weaken SRTP"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} KDR=4", "KDR=4 is not supported"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} WSH=32", "WSH=32 is invalid"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} FEC_KEY=x", "FEC_KEY is not supported"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} FOO=1", "unknown mandatory session parameter"),
    ],
)
def test_what_the_phone_declines(value: str, reason: str) -> None:
    found = _reason(value)
    assert found is not None
    assert reason in found
    assert '"' not in found  # it goes into a Warning header's quoted string


@pytest.mark.parametrize(
    "suffix",
    ["|2^31", "|2^48", "|1024", " KDR=0", " WSH=64", " FEC_ORDER=FEC_SRTP", " -X-VENDOR=1"],
)
def test_what_the_phone_accepts(suffix: str) -> None:
    assert _reason(f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}{suffix}") is None


def test_redact_hides_every_inline_key_and_k_line() -> None:
    text = (
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^31\r\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 INLINE:{B64};inline:{B64}\r\n"
        "k=clear:hunter2\r\n"
    )
    redacted = sdes.redact(text)
    assert B64 not in redacted
    assert "hunter2" not in redacted
    assert "inline:<redacted>|2^31" in redacted
    assert "k=<redacted>\r\n" in redacted
    assert sdes.redact_bytes(text.encode() + b"\xff") == redacted + "\ufffd"


def test_repr_and_str_never_show_keys(caplog: pytest.LogCaptureFixture) -> None:
    attribute = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}")
    logger = logging.getLogger("test.sdes")
    with caplog.at_level(logging.DEBUG):
        logger.debug("chose %s / %r / %s", attribute, attribute, attribute.key_params[0])
    for text in (repr(attribute), str(attribute), caplog.text, repr(attribute.key_params)):
        assert B64 not in text
        assert repr(KEY) not in text
        assert KEY.hex() not in text
    assert "inline:<redacted>" in str(attribute)


@given(st.text(max_size=120))
def test_random_values_only_raise_sdes_parse_error(value: str) -> None:
    try:
        attribute = CryptoAttribute.parse(value)
    except SdesParseError:
        return
    assert CryptoAttribute.parse(attribute.serialize()) == attribute
    check_crypto(attribute)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=999_999_999))
def test_any_key_round_trips(key: bytes, tag: int) -> None:
    value = f"{tag} AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}"
    attribute = CryptoAttribute.parse(value)
    assert attribute.key_salt == key
    assert attribute.serialize() == value


@pytest.mark.parametrize(
    "param",
    [
        "WSH=²",         # passes str.isdigit(), then int() raised ValueError
        "KDR=¹",
        "WSH=٦٤",        # Arabic-Indic 64: int() took it, so an invalid value was accepted
        "KDR=٠",
        "WSH=６４",      # full-width digits
        "WSH= 64",
        "WSH=+64",
        "WSH=6_4",
    ],
)
def test_session_parameter_numbers_are_ascii_digits_only(param: str) -> None:
    reason = _reason(f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} {param}")
    assert reason is not None
    assert "is not supported" in reason or "is invalid" in reason
    assert reason.isascii() and '"' not in reason  # it goes into a Warning header
