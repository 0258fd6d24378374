"""Hypothesis against the parser and the framer: the only exception allowed out is
SipParseError, and whatever parses serializes to something that parses the same way."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phone_sim.sip import (
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    StreamFramer,
    Via,
    parse_message,
    validate_request,
)
from phone_sim.sip.headers import CSeq

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "rfc4475"
TORTURE = {p.stem: p.read_bytes() for p in sorted(FIXTURES.glob("*.sip"))}
NAMES = sorted(TORTURE)

# Budget from the profile in tests/conftest.py (200 examples; HYPOTHESIS_PROFILE=thorough: 5000).
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that matter to the grammar, so random messages reach deep into the parser.
SIP_ALPHABET = b'\r\n :;,=<>"\\@%/?&[].0123456789SIPsipINVTEabcxyz\t\x00\xff'


def parse_or_refuse(data: bytes) -> SipRequest | SipResponse | None:
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        assert str(exc)
        assert exc.status in (None, 400, 413, 505, 513)
        return None
    # What parsed serializes, and the serialization is stable.
    wire = bytes(msg)
    again = parse_message(wire)
    assert bytes(again) == wire
    if isinstance(msg, SipRequest):
        validate_request(msg)
    return msg


def exercise_accessors(msg: SipRequest | SipResponse) -> None:
    for name in ("vias", "contacts", "routes", "record_routes", "expires", "max_forwards"):
        with contextlib.suppress(SipParseError):
            getattr(msg, name)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    parse_or_refuse(data)


@FUZZ
@given(st.lists(st.sampled_from(list(SIP_ALPHABET)), max_size=400).map(bytes))
def test_random_sip_flavoured_bytes(data: bytes) -> None:
    parse_or_refuse(b"INVITE sip:a@b SIP/2.0\r\n" + data)
    parse_or_refuse(b"SIP/2.0 200 OK\r\n" + data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(TORTURE[draw(st.sampled_from(NAMES))])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 4))
        if op == 0:
            data[pos] = draw(st.sampled_from(list(SIP_ALPHABET)))
        elif op == 1:
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == 2:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=10))
        elif op == 3:
            end = min(len(data), pos + draw(st.integers(1, 60)))
            data[pos:pos] = data[pos:end]
        else:
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"\r\n ", b",", b";", b'"', b"<", b">"]))
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_torture_messages(data: bytes) -> None:
    msg = parse_or_refuse(data)
    if msg is not None:
        exercise_accessors(msg)


def test_truncation_at_every_offset() -> None:
    for name, data in TORTURE.items():
        for cut in range(len(data) + 1):
            parse_or_refuse(data[:cut])
            framer = StreamFramer()
            with contextlib.suppress(SipParseError):
                framer.feed(data[:cut])
        del name


@FUZZ
@given(
    st.lists(st.sampled_from(["wsinv", "esc01", "mpart01", "unreason", "longreq", "intmeth"]),
             min_size=1, max_size=4),
    st.lists(st.integers(1, 300), min_size=1, max_size=30),
    st.lists(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]), min_size=4, max_size=4),
)  # fmt: skip
def test_framer_reassembles_any_chunking(
    names: list[str], chunks: list[int], keepalives: list[bytes]
) -> None:
    messages = [parse_message(TORTURE[n]) for n in names]
    stream = b"".join(ka + bytes(m) for ka, m in zip(keepalives * 2, messages, strict=False))
    framer = StreamFramer()
    events: list[object] = []
    pos = 0
    i = 0
    while pos < len(stream):
        size = chunks[i % len(chunks)]
        events.extend(framer.feed(stream[pos : pos + size]))
        pos += size
        i += 1
    got = [e for e in events if isinstance(e, SipRequest | SipResponse)]
    assert got == messages
    assert framer.buffered == 0


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_framer_random_bytes(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    for chunk in chunks:
        try:
            framer.feed(chunk)
        except SipParseError:
            assert framer.closed
            return


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=3), st.integers(1, 400))
def test_framer_mutated_stream(parts: list[bytes], size: int) -> None:
    stream = b"".join(parts)
    framer = StreamFramer()
    try:
        for pos in range(0, len(stream), size):
            framer.feed(stream[pos : pos + size])
    except SipParseError:
        assert framer.closed


URI_ALPHABET = "abcAZ019:@;=?&%[]+-_.!~*'()/$,<> \"sipSIPtel"


@FUZZ
@given(st.text(alphabet=URI_ALPHABET, max_size=60))
def test_structured_values_round_trip(text: str) -> None:
    for parser in (SipUri.parse, NameAddr.parse, Via.parse, CSeq.parse):
        try:
            value = parser("sip:" + text if parser is SipUri.parse else text)
        except SipParseError:
            continue
        assert parser(str(value)) == value  # type: ignore[operator]


PARAM_TEXT = st.text(min_size=1, max_size=6)


@st.composite
def built_uris(draw: st.DrawFn) -> SipUri:
    user = draw(st.one_of(st.none(), st.text(min_size=1, max_size=12)))
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=draw(st.one_of(st.none(), st.text(max_size=8))) if user else None,
        host=draw(st.sampled_from(["example.com", "192.0.2.1", "[2001:db8::1]", "h-1.x"])),
        port=draw(st.one_of(st.none(), st.integers(0, 65535))),
        params=tuple(
            draw(st.lists(st.tuples(PARAM_TEXT, st.one_of(st.none(), PARAM_TEXT)), max_size=3))
        ),
    )


@FUZZ
@given(built_uris())
def test_built_uris_round_trip(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@FUZZ
@given(st.text(alphabet="abAZ09:@;=?&%[].-_!~*'()+$,/", max_size=40))
def test_uri_fast_path_agrees_with_the_general_parser(text: str) -> None:
    text = "sip:" + text
    try:
        general: SipUri | SipParseError = SipUri._parse_general(text)
    except SipParseError as exc:
        general = exc
    try:
        fast = SipUri.parse(text)
    except SipParseError:
        assert isinstance(general, SipParseError)
        return
    assert fast == general


@FUZZ
@given(
    st.text(alphabet='ab "\\<>\t;=,:@x', max_size=12),
    st.sampled_from(["<sip:a@b>", "<sip:a@b;lr>", "sip:a@b", "<sips:[::1]:5>", "<x>", ""]),
    st.text(alphabet=' ;=ab"\\', max_size=10),
)
def test_name_addr_fast_path_agrees_with_the_general_parser(
    display: str, uri: str, params: str
) -> None:
    text = display + uri + params
    try:
        general: NameAddr | SipParseError = NameAddr._parse_general(text)
    except SipParseError as exc:
        general = exc
    try:
        fast = NameAddr.parse(text)
    except SipParseError:
        assert isinstance(general, SipParseError)
        return
    assert fast == general


@FUZZ
@given(
    st.sampled_from(["SIP/2.0/UDP", "SIP / 2.0 / TLS", "sip/2.0/tcp", "SIP/3.0/UDP", "SIP/2.0/"]),
    st.text(alphabet=" \t", max_size=2),
    st.sampled_from(["h", "192.0.2.1", "[::1]", "a-b.c", "-x", "[::1", "h_1"]),
    st.sampled_from(["", ":5060", ":99999", ":", ":x", "x"]),
    st.text(alphabet=' ;=ab"\\[]:', max_size=10),
)
def test_via_fast_path_agrees_with_the_general_parser(
    proto: str, gap: str, host: str, port: str, rest: str
) -> None:
    text = f"{proto}{gap or ' '}{host}{port}{rest}"
    try:
        general: Via | SipParseError = Via._parse_general(text)
    except SipParseError as exc:
        general = exc
    try:
        fast = Via.parse(text)
    except SipParseError:
        assert isinstance(general, SipParseError)
        return
    assert fast == general


@FUZZ
@given(st.text(alphabet=' \t;=ab"\\[]:,%', max_size=30))
def test_param_fast_path_agrees_with_the_slow_parser(text: str) -> None:
    from phone_sim.sip.headers import _parse_params_slowly, parse_params

    try:
        slow: object = _parse_params_slowly(text, "t")
    except SipParseError as exc:
        slow = exc
    try:
        fast = parse_params(text, "t")
    except SipParseError:
        assert isinstance(slow, SipParseError)
        return
    assert fast == slow
