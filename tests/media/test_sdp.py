"""SDP parse and serialize (RFC 4566): round trips, leniency, and malformed bodies."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phone_sim.errors import ProtocolError
from phone_sim.media import sdp
from phone_sim.media.sdp import (
    SdpAttribute,
    SdpConnection,
    SdpMedia,
    SdpOrigin,
    SdpParseError,
    SdpSession,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sdp"
GOOD = sorted(FIXTURES.glob("*.sdp"))
MALFORMED = FIXTURES / "malformed"


def test_there_are_fixtures() -> None:
    names = {p.name for p in GOOD}
    wanted = {"asterisk-22-sdes-offer.sdp", "baresip-1.0-srtp-mand-offer.sdp", "d40-offer.sdp"}
    assert wanted <= names


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_every_fixture_round_trips(path: Path) -> None:
    data = path.read_bytes()
    session = SdpSession.parse(data)
    assert bytes(session) == data
    assert SdpSession.parse(bytes(session)) == session


def test_baresip_offer_fields() -> None:
    session = sdp.parse((FIXTURES / "baresip-1.0-srtp-mand-offer.sdp").read_bytes())
    assert session.origin.session_id == 3140644491
    assert session.origin.session_version == 699477139
    assert session.session_name == "-"
    assert session.connection == SdpConnection(address="127.0.0.1")
    assert [a.name for a in session.attributes] == ["tool"]
    (audio,) = session.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        28578,
        "RTP/SAVP",
        ("0", "8", "101"),
    )
    assert session.connection_for(audio) == session.connection
    assert audio.attribute_value("fmtp") == "101 0-15"
    assert audio.has_attribute("SENDRECV")
    assert audio.get_attributes("rtpmap")[2].value == "101 telephone-event/8000"
    # attributes keep their order
    assert [a.name for a in audio.attributes][-3:] == ["crypto", "minptime", "ptime"]


def test_d40_offer_has_media_level_connection_and_rtcp() -> None:
    session = sdp.parse((FIXTURES / "d40-offer.sdp").read_bytes())
    assert session.session_name == "digphn"
    assert session.connection is None
    (audio,) = session.media
    assert audio.connection == SdpConnection(address="192.0.2.50")
    assert [str(b) for b in audio.bandwidths] == ["TIAS:64000"]
    assert audio.attribute_value("rtcp") == "4001 IN IP4 192.0.2.50"


def test_build_and_serialize() -> None:
    session = SdpSession(
        origin=SdpOrigin(session_id=7, session_version=8, address="::1", addr_type="IP6"),
        session_name="digphn",
        connection=SdpConnection(addr_type="IP6", address="::1"),
        media=(
            SdpMedia(
                port=4000,
                formats=("0", "101"),
                attributes=(SdpAttribute(name="sendrecv"), SdpAttribute(name="ptime", value="20")),
            ),
        ),
    )
    assert bytes(session) == (
        b"v=0\r\no=- 7 8 IN IP6 ::1\r\ns=digphn\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0 101\r\na=sendrecv\r\na=ptime:20\r\n"
    )


def test_every_rfc4566_line_round_trips() -> None:
    data = (
        b"v=0\r\n"
        b"o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n"
        b"s=SDP Seminar\r\n"
        b"i=A Seminar on the session description protocol\r\n"
        b"u=http://www.example.com/seminars/sdp.pdf\r\n"
        b"e=j.doe@example.com (Jane Doe)\r\n"
        b"p=+1 617 555-6011\r\n"
        b"c=IN IP4 224.2.17.12/127\r\n"
        b"b=CT:128\r\n"
        b"t=2873397496 2873404696\r\n"
        b"r=7d 1h 0 25h\r\n"
        b"z=2882844526 -1h 2898848070 0\r\n"
        b"k=prompt\r\n"
        b"a=recvonly\r\n"
        b"m=audio 49170 RTP/AVP 0\r\n"
        b"i=voice\r\n"
        b"b=AS:64\r\n"
        b"k=clear:secret-key\r\n"
        b"a=orient:portrait\r\n"
        b"m=video 51372/2 RTP/AVP 99\r\n"
        b"a=rtpmap:99 h263-1998/90000\r\n"
    )
    session = sdp.parse(data)
    assert bytes(session) == data
    assert session.timings[0].repeats == ("7d 1h 0 25h",)
    assert session.media[1].port_count == 2
    assert session.media[0].key == "clear:secret-key"


def test_lenient_forms_parse_and_canonicalize() -> None:
    # LF-only line ends, optional lines out of order, trailing blank lines, an empty s=.
    data = b"v=0\no=- 1 2 IN IP4 192.0.2.1\ns=\nt=0 0\nc=IN IP4 192.0.2.1\n" + (
        b"m=audio 4000 RTP/AVP 0\na=sendrecv\nc=IN IP4 192.0.2.2\n\n\n"
    )
    session = sdp.parse(data)
    assert session.session_name == ""
    assert bytes(session) == (
        b"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\na=sendrecv\r\n"
    )
    assert session.connection_for(session.media[0]) == SdpConnection(address="192.0.2.2")


def test_property_attribute_and_empty_value_stay_distinct() -> None:
    base = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"
    session = sdp.parse(base + b"a=foo\r\na=foo:\r\n")
    assert [a.value for a in session.attributes] == [None, ""]
    assert bytes(session) == base + b"a=foo\r\na=foo:\r\n"


MALFORMED_CASES = {
    "empty.sdp": "SDP body is empty",
    "no-version.sdp": "SDP line 1: an SDP body starts with v=",
    "version-1.sdp": "is not version 0",
    "no-origin.sdp": "no o= line",
    "no-time.sdp": "no t= line",
    "origin-five-fields.sdp": "SDP line 2: o= needs 6 fields",
    "origin-session-id-not-number.sdp": "o= session id 'abc' is not a decimal number",
    "media-without-connection.sdp": "media 1 (audio) has no c= line",
    "port-too-big.sdp": "m= port 70000 is above 65535",
    "media-without-formats.sdp": "m= needs <media> <port> <proto> <fmt>",
    "unknown-type-letter.sdp": "SDP line 8: unknown type letter 'x'",
    "blank-line-inside.sdp": "SDP line 4: line is empty",
    "no-equals.sdp": "is not <type>=<value>",
    "bad-attribute-name.sdp": "attribute name '' is not a token",
    "two-origins.sdp": "a second o= line",
    "repeat-before-time.sdp": "r= before any t= line",
    "not-utf8.sdp": "SDP body is not UTF-8",
    "nul-byte.sdp": "bare CR or a NUL",
    "html-error-page.sdp": "an SDP body starts with v=",
}


def test_every_malformed_fixture_has_a_case() -> None:
    assert {p.name for p in MALFORMED.glob("*.sdp")} == set(MALFORMED_CASES)


@pytest.mark.parametrize(("name", "message"), sorted(MALFORMED_CASES.items()))
def test_malformed_fixture_raises_precise_error(name: str, message: str) -> None:
    with pytest.raises(SdpParseError) as info:
        sdp.parse((MALFORMED / name).read_bytes())
    assert message in str(info.value)
    assert isinstance(info.value, ProtocolError)
    assert info.value.status == 400


def test_size_limits_are_named() -> None:
    with pytest.raises(SdpParseError, match=f"over the limit of {sdp.MAX_SDP_BYTES}"):
        sdp.parse(b"v=0\r\n" + b"a=x\r\n" * (sdp.MAX_SDP_BYTES // 5 + 1))
    long_line = b"v=0\r\ns=" + b"x" * (sdp.MAX_LINE_LENGTH + 1) + b"\r\n"
    expected = f"SDP line 2: line is {sdp.MAX_LINE_LENGTH + 3} characters"
    with pytest.raises(SdpParseError, match=expected):
        sdp.parse(long_line)
    many_media = b"v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nt=0 0\r\n" + (
        b"m=audio 0 RTP/AVP 0\r\n" * (sdp.MAX_MEDIA + 1)
    )
    with pytest.raises(SdpParseError, match=f"more than {sdp.MAX_MEDIA} m= lines"):
        sdp.parse(many_media)


def test_a_str_body_is_refused_cleanly() -> None:
    with pytest.raises(SdpParseError, match="must be bytes, not str"):
        sdp.parse("v=0\r\n")  # type: ignore[arg-type]


def test_error_quoting_a_bad_line_never_shows_a_key() -> None:
    key = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"
    data = b"v=0\r\n" + f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n".encode()
    with pytest.raises(SdpParseError) as info:
        sdp.parse(data.replace(b"a=crypto", b"a crypto"))
    assert key not in str(info.value)
    assert "inline:<redacted>" in str(info.value)


def test_repr_and_redacted_never_show_keys() -> None:
    data = (FIXTURES / "asterisk-22-sdes-offer.sdp").read_bytes()
    session = sdp.parse(replace_k(data))
    key = next(a.value for a in session.media[0].attributes if a.name == "crypto")
    assert key is not None
    inline = key.split("inline:")[1]
    for text in (repr(session), str(session), session.redacted(), repr(session.media[0])):
        assert inline not in text
        assert "secret-k-value" not in text
    assert "inline:<redacted>" in session.redacted()
    assert "k=<redacted>" in session.redacted()
    assert inline.encode() in bytes(session)


def replace_k(data: bytes) -> bytes:
    return data.replace(b"t=0 0\r\n", b"t=0 0\r\nk=clear:secret-k-value\r\n")


def test_dataclasses_are_frozen_and_replaceable() -> None:
    session = sdp.parse((FIXTURES / "d40-offer.sdp").read_bytes())
    with pytest.raises(AttributeError):
        session.session_name = "x"  # type: ignore[misc]
    bumped = replace(session, origin=replace(session.origin, session_version=3914838514))
    assert b"o=- 3914838513 3914838514 IN IP4" in bytes(bumped)


# --- Hypothesis: nothing but SdpParseError may escape, and what parses is stable ---------

LINE_ALPHABET = st.sampled_from(list("vosiuepcbtrzkamx=: /0123456789IN4P6.-\t\r\x00é"))


def _check(data: bytes) -> None:
    try:
        session = sdp.parse(data)
    except SdpParseError as exc:
        assert str(exc)
        return
    again = sdp.parse(bytes(session))
    assert again == session
    assert bytes(again) == bytes(session)


@given(st.binary(max_size=400))
def test_random_bytes_only_raise_sdp_parse_error(data: bytes) -> None:
    _check(data)


@given(st.lists(st.text(LINE_ALPHABET, max_size=30), max_size=20))
def test_random_lines_only_raise_sdp_parse_error(lines: list[str]) -> None:
    _check(("\r\n".join(["v=0", *lines]) + "\r\n").encode("utf-8"))


@given(
    st.sampled_from(GOOD),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=2000), st.binary(min_size=0, max_size=3)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_fixtures_only_raise_sdp_parse_error(
    path: Path, edits: list[tuple[int, bytes]]
) -> None:
    data = bytearray(path.read_bytes())
    for position, replacement in edits:
        at = position % (len(data) + 1)
        data[at : at + len(replacement)] = replacement
    _check(bytes(data))


@given(st.sampled_from(GOOD), st.integers(min_value=0, max_value=2000))
def test_truncated_fixtures_only_raise_sdp_parse_error(path: Path, cut: int) -> None:
    data = path.read_bytes()
    _check(data[: cut % (len(data) + 1)])


# --- Hypothesis: every session built from valid parts survives serialize -> parse --------

TOKENS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._+!",
    min_size=1,
    max_size=12,
)
_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)] + ["é", "ü", "€", "\t", "\x7f"]
TEXT = st.text(alphabet=st.sampled_from(_PRINTABLE), max_size=20)
WORD = st.text(
    alphabet=st.sampled_from([c for c in _PRINTABLE if not c.isspace()]), min_size=1, max_size=12
)
NUMBER = st.integers(min_value=0, max_value=2**64)
CONNECTIONS = st.builds(SdpConnection, addr_type=st.sampled_from(["IP4", "IP6"]), address=WORD)
ATTRIBUTES = st.builds(SdpAttribute, name=TOKENS, value=st.none() | TEXT)
BANDWIDTHS = st.builds(sdp.SdpBandwidth, bwtype=TOKENS, bandwidth=NUMBER)
MEDIA = st.builds(
    SdpMedia,
    media=TOKENS,
    port=st.integers(min_value=0, max_value=65535),
    port_count=st.none() | st.integers(min_value=1, max_value=99),
    proto=st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udp"]),
    formats=st.lists(TOKENS, min_size=1, max_size=5).map(tuple),
    information=st.none() | TEXT,
    connections=st.lists(CONNECTIONS, min_size=1, max_size=2).map(tuple),
    bandwidths=st.lists(BANDWIDTHS, max_size=2).map(tuple),
    key=st.none() | TEXT,
    attributes=st.lists(ATTRIBUTES, max_size=4).map(tuple),
)
SESSIONS = st.builds(
    SdpSession,
    origin=st.builds(
        SdpOrigin, username=WORD, session_id=NUMBER, session_version=NUMBER, address=WORD
    ),
    session_name=TEXT,
    information=st.none() | TEXT,
    uri=st.none() | TEXT,
    emails=st.lists(TEXT, max_size=2).map(tuple),
    phones=st.lists(TEXT, max_size=2).map(tuple),
    connection=st.none() | CONNECTIONS,
    bandwidths=st.lists(BANDWIDTHS, max_size=2).map(tuple),
    timings=st.lists(
        st.builds(
            sdp.SdpTiming, start=NUMBER, stop=NUMBER, repeats=st.lists(TEXT, max_size=2).map(tuple)
        ),
        min_size=1,
        max_size=2,
    ).map(tuple),
    time_zones=st.none() | TEXT,
    key=st.none() | TEXT,
    attributes=st.lists(ATTRIBUTES, max_size=4).map(tuple),
    media=st.lists(MEDIA, max_size=2).map(tuple),
)


@settings(max_examples=100)  # each example is a whole session; 100 keep this under 3 s
@given(SESSIONS)
def test_built_sessions_round_trip(session: SdpSession) -> None:
    data = bytes(session)
    assert sdp.parse(data) == session
    assert bytes(sdp.parse(data)) == data
