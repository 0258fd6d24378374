"""RFC 4475 torture messages, each against the handling the RFC names.

The fixtures are byte-exact copies of the shared corpus ``shared/reference/rfc4475/`` (see its
README), which lives beside the repository (see :func:`find_shared_corpus`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from phone_sim.sip import (
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    parse_message,
    validate_request,
)
from phone_sim.sip.framer import FramingError, KeepAlivePongReceived, MessageRejected

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "rfc4475"
CORPUS = Path("reference") / "rfc4475"


def load(name: str) -> bytes:
    return (FIXTURES / f"{name}.sip").read_bytes()


def answer(data: bytes) -> int | None:
    """The status a phone answers the datagram with; ``None`` when it processes it."""
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        return exc.status
    assert isinstance(msg, SipRequest)
    response = validate_request(msg, to_tag="phone-tag")
    return None if response is None else response.status


# RFC 4475 3.1.1: valid messages a parser must accept.
VALID = ["wsinv", "intmeth", "esc01", "escnull", "longreq", "dblreq", "transports", "mpart01",
         "unreason", "badbranch", "inv2543", "novelsc", "regaut01", "zeromf", "cparam01",
         "insuf", "multi01", "unkscm", "bext01", "invut", "sdp01"]  # fmt: skip

# RFC 4475 3.1.2: invalid messages, refused by the parser with this status.
INVALID = {
    "badinv01": 400, "clerr": 400, "scalar02": 400, "quotbal": 400, "ltgtruri": 400,
    "lwsruri": 400, "trws": 400, "baddate": 400, "regbadct": 400, "baddn": 400,
    "badvers": 505, "mismatch01": 400, "mcl01": 400,
    "bigcode": None,  # a response: refused, and dropped (no status to answer with)
}  # fmt: skip

# RFC 4475 3.3 (and 3.2, 3.4): the answer a phone's validator gives a parsed request.
APPLICATION = {
    "insuf": 400, "multi01": 400, "unkscm": 416, "bext01": 420, "invut": 415,
    "novelsc": None, "zeromf": None, "sdp01": None,  # 406 for sdp01 is the call layer's
    "badbranch": None, "inv2543": None, "wsinv": None, "esc01": None, "longreq": None,
    "transports": None, "mpart01": None,
    # A phone is no registrar: REGISTER gets 405 even when otherwise acceptable.
    "regaut01": 405, "cparam01": 405, "escnull": 405, "dblreq": 405,
    "intmeth": 405,  # an unknown method
}  # fmt: skip


def test_every_fixture_is_classified() -> None:
    names = {p.stem for p in FIXTURES.glob("*.sip")}
    assert names == set(VALID) | set(INVALID)
    assert set(APPLICATION) <= set(VALID)


def find_shared_corpus(root: Path, environ: Mapping[str, str]) -> Path | None:
    """The shared RFC 4475 corpus: ``$PHONE_SIM_SHARED/reference/rfc4475`` when that variable
    names the shared folder, else the first ``shared/reference/rfc4475`` going up from the
    repository ``root`` (CI clones the repository beside ``shared/``; a worktree sits deeper)."""
    if environ.get("PHONE_SIM_SHARED"):
        corpus = Path(environ["PHONE_SIM_SHARED"]) / CORPUS
        return corpus if corpus.is_dir() else None
    for folder in (root, *root.parents):
        corpus = folder / "shared" / CORPUS
        if corpus.is_dir():
            return corpus
    return None


@pytest.mark.parametrize("layout", ["ci-clone", "worktree", "variable"])
def test_the_shared_corpus_is_found_relative_to_the_repository(
    tmp_path: Path, layout: str
) -> None:
    shared = tmp_path / "shared"
    (shared / CORPUS).mkdir(parents=True)
    root = {"ci-clone": tmp_path / "phone-sim", "worktree": tmp_path / "wt" / "suite",
            "variable": tmp_path / "elsewhere" / "phone-sim"}[layout]
    root.mkdir(parents=True)
    environ = {"PHONE_SIM_SHARED": str(shared)} if layout == "variable" else {}
    if layout == "variable":
        (tmp_path / "elsewhere" / "shared").mkdir()  # a decoy without the corpus: not used
    assert find_shared_corpus(root, environ) == shared / CORPUS
    # A variable naming a folder without the corpus finds nothing, rather than guessing.
    assert find_shared_corpus(root, {"PHONE_SIM_SHARED": str(tmp_path / "nope")}) is None


def test_fixtures_are_byte_exact_copies() -> None:
    from tests.peer_rules import in_ci

    shared = find_shared_corpus(ROOT, os.environ)
    if shared is None:
        where = (f"PHONE_SIM_SHARED={os.environ['PHONE_SIM_SHARED']}"
                 if os.environ.get("PHONE_SIM_SHARED")
                 else f"no shared/{CORPUS} above {ROOT}")
        if in_ci():
            pytest.fail(f"the shared RFC 4475 corpus is missing ({where}); CI must check "
                        "the fixtures against it", pytrace=False)
        pytest.skip(f"the shared RFC 4475 corpus is not on this machine ({where})")
    ours = sorted(p.name for p in FIXTURES.glob("*.sip"))
    assert ours == sorted(p.name for p in shared.glob("*.sip"))
    for name in ours:
        assert (FIXTURES / name).read_bytes() == (shared / name).read_bytes(), name


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse(name: str) -> None:
    msg = parse_message(load(name))
    wire = bytes(msg)
    again = parse_message(wire)
    assert again == parse_message(bytes(again))
    assert bytes(again) == wire


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_are_refused(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    assert info.value.status == INVALID[name]
    assert str(info.value)


@pytest.mark.parametrize("name", sorted(APPLICATION))
def test_application_level_answers(name: str) -> None:
    assert answer(load(name)) == APPLICATION[name]


def test_bext01_names_the_unsupported_extensions() -> None:
    req = parse_message(load("bext01"))
    assert isinstance(req, SipRequest)
    resp = validate_request(req)
    assert resp is not None and resp.status == 420
    # Only Require matters to a UAS; Proxy-Require is for proxies (RFC 3261 8.2.2.3).
    assert resp.headers.get_all("Unsupported") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]


def test_invut_answer_lists_accept() -> None:
    req = parse_message(load("invut"))
    assert isinstance(req, SipRequest)
    resp = validate_request(req, to_tag="abc")
    assert resp is not None and resp.status == 415
    assert resp.headers.get("Accept") == "application/sdp"
    assert resp.to.tag == "abc"
    assert resp.call_id == req.call_id and resp.cseq == req.cseq


def test_register_gets_405_with_allow() -> None:
    req = parse_message(load("cparam01"))
    assert isinstance(req, SipRequest)
    resp = validate_request(req, allowed_methods=("INVITE", "BYE"))
    assert resp is not None and resp.status == 405
    assert resp.headers.get_all("Allow") == ["INVITE", "BYE"]


def test_wsinv_values() -> None:
    msg = parse_message(load("wsinv"))
    assert isinstance(msg, SipRequest)
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert msg.cseq.seq == 9 and msg.cseq.method == "INVITE"
    assert [v.host for v in msg.vias] == [
        "192.0.2.2",
        "spindle.example.com",
        "192.168.255.111",
    ]
    assert [v.branch for v in msg.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.param("newparam") == "newvalue"
    assert contact.has_param("secondparam")
    assert contact.param("q") == "0.33"
    assert len(msg.body) == 150
    assert msg.routes[0].uri.has_param("lr")


def test_esc01_unescapes() -> None:
    msg = parse_message(load("esc01"))
    assert isinstance(msg, SipRequest)
    assert msg.uri.user == "sips:user@example.com"
    assert msg.to.uri.user == "user"
    assert msg.from_.uri.user == "I have spaces"
    (contact,) = msg.contacts
    assert contact.uri.user == "caller"
    assert contact.uri.has_param("lr")
    assert contact.uri.param("name") == "value%41"


def test_escnull_keeps_nul() -> None:
    msg = parse_message(load("escnull"))
    assert msg.to.uri.user == "null-\x00-null"
    assert [c.uri.user for c in msg.contacts] == ["\x00", "\x00\x00"]


def test_intmeth() -> None:
    msg = parse_message(load("intmeth"))
    assert isinstance(msg, SipRequest)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert "pas$wo" not in repr(msg.uri)


def test_longreq() -> None:
    msg = parse_message(load("longreq"))
    assert len(msg.vias) == 34
    assert msg.vias[-1].received == "192.0.2.5"
    assert msg.to.uri.port == 6000
    assert len(msg.body) == 150


def test_dblreq_takes_the_first_message_only() -> None:
    msg = parse_message(load("dblreq"))
    assert isinstance(msg, SipRequest) and msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.call_id.startswith("dblreq.0ha0")


def test_transports_keeps_unknown_transports() -> None:
    msg = parse_message(load("transports"))
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_body_stays_bytes() -> None:
    data = load("mpart01")
    msg = parse_message(data)
    assert len(msg.body) == 553 and msg.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert msg.media_type == "multipart/mixed"
    assert bytes(msg) == data


def test_unreason() -> None:
    data = load("unreason")
    msg = parse_message(data)
    assert isinstance(msg, SipResponse)
    assert msg.status == 200
    assert msg.reason.startswith("= 2**3 * 5**2 но")
    assert bytes(msg) == data


def test_inv2543_without_content_length_takes_the_rest() -> None:
    msg = parse_message(load("inv2543"))
    assert msg.top_via.branch is None
    assert msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")


def test_scalar02_expiries_would_be_treated_as_absent() -> None:
    # CSeq is fatal; the out-of-range expiries on their own are treated as absent.
    data = (
        load("scalar02")
        .replace(b"36893488147419103232", b"36")
        .replace(b"Max-Forwards: 300", b"Max-Forwards: 30")
    )
    msg = parse_message(data)
    assert msg.expires is None
    assert msg.contacts[0].expires is None


def test_baddn_display_name_is_refused_even_when_terminated() -> None:
    # The shared copy lacks the final empty line; with it the display name is still wrong.
    with pytest.raises(SipParseError, match="display name") as info:
        parse_message(load("baddn") + b"\r\n")
    assert info.value.status == 400


@pytest.mark.parametrize("name", sorted(INVALID))
def test_refused_requests_keep_enough_to_answer(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    if name == "bigcode":
        assert info.value.partial is None
        return
    partial = info.value.partial
    assert isinstance(partial, SipRequest)
    resp = partial.create_response(info.value.status or 400)
    assert resp.headers.get("Via") == partial.headers.get("Via")
    assert resp.headers.get("Call-ID") == partial.headers.get("Call-ID")


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_through_the_framer(name: str) -> None:
    msg = parse_message(load(name))
    wire = bytes(msg)
    framer = StreamFramer()
    events = []
    for i in range(0, len(wire), 7):
        events.extend(framer.feed(wire[i : i + 7]))
    assert events == [msg] or (
        len(events) == 1 and not isinstance(events[0], MessageRejected) and bytes(events[0]) == wire
    )
    assert framer.buffered == 0


@pytest.mark.parametrize("name", ["regaut01", "cparam01", "escnull", "dblreq"])
def test_registers_are_acceptable_to_a_registrar(name: str) -> None:
    # RFC 4475 calls these acceptable; only a phone's lack of a registrar makes them 405.
    req = parse_message(load(name))
    assert isinstance(req, SipRequest)
    assert validate_request(req, allowed_methods=("REGISTER",)) is None


@pytest.mark.parametrize("name", sorted([*VALID, *INVALID]))
def test_raw_torture_message_on_a_stream(name: str) -> None:
    # On a stream each message is either delivered, rejected alone, or ends the connection
    # (when it cannot be delimited); nothing else escapes, nothing hangs.
    data = load(name)
    framer = StreamFramer()
    try:
        events = framer.feed(data)
    except FramingError as exc:
        assert framer.closed
        events = exc.events
    if name == "dblreq":
        # Both requests are delimited and delivered; the octets beyond the INVITE's
        # Content-Length then read as a message without one, which ends the stream.
        assert [type(e) for e in events] == [SipRequest, KeepAlivePongReceived, SipRequest]
        assert framer.closed
        return
    assert len(events) <= 1
    for event in events:
        if isinstance(event, MessageRejected):
            assert name in INVALID
        else:
            assert name in VALID
