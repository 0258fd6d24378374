"""The message model, the datagram parser and the serializer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phone_sim.errors import PhoneSimError, ProtocolError
from phone_sim.sip import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_LINE_LENGTH,
    CSeq,
    Headers,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    is_keepalive,
    parse_message,
)
from phone_sim.sip import message as message_module
from phone_sim.testing.aio_ports import free_port
from phone_sim.testing.aio_pytest_peers import require
from tests.sip.test_fuzz_parser import TORTURE, mutated

REGISTER = (
    b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;rport;branch=z9hG4bKPj1c2d3e4f\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "101" <sip:101@pbx.example.com>;tag=Pj9a8b7c\r\n'
    b"To: <sip:101@pbx.example.com>\r\n"
    b"Call-ID: 4f1b2c3d-0001@192.0.2.10\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"User-Agent: Digium D40 1_9_2_0\r\n"
    b'Contact: "101" <sip:101@192.0.2.10:5061;transport=TLS;ob>\r\n'
    b"Expires: 300\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=digphn\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"


def invite(body: bytes = SDP, length: bytes | None = None) -> bytes:
    cl = str(len(body)).encode() if length is None else length
    return (
        b"INVITE sip:102@pbx.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKPjabc\r\n"
        b"From: <sip:101@pbx.example.com>;tag=1\r\n"
        b"To: <sip:102@pbx.example.com>\r\n"
        b"Call-ID: c1\r\n"
        b"CSeq: 2 INVITE\r\n"
        b"Max-Forwards: 70\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: " + cl + b"\r\n\r\n" + body
    )


def test_parse_register_and_accessors() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, SipRequest)
    assert msg.is_request
    assert msg.method == "REGISTER"
    assert msg.uri == SipUri(host="pbx.example.com")
    assert msg.top_via.transport == "TLS"
    assert msg.top_via.rport is True
    assert msg.top_via.branch == "z9hG4bKPj1c2d3e4f"
    assert msg.top_via.port == 5061
    assert msg.cseq == CSeq(1, "REGISTER")
    assert msg.call_id == "4f1b2c3d-0001@192.0.2.10"
    assert msg.from_.display_name == "101"
    assert msg.from_tag == "Pj9a8b7c"
    assert msg.to_tag is None
    assert msg.contacts[0].uri.transport == "tls"
    assert msg.contacts[0].uri.has_param("ob")
    assert msg.expires == 300
    assert msg.max_forwards == 70
    assert msg.tokens("Allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]
    assert msg.body == b""
    assert msg.content_type is None


def test_canonical_message_round_trips_byte_for_byte() -> None:
    assert bytes(parse_message(REGISTER)) == REGISTER
    data = invite()
    assert bytes(parse_message(data)) == data


def test_serialized_message_parses_to_an_equal_message() -> None:
    msg = parse_message(invite())
    assert parse_message(bytes(msg)) == msg


def test_compact_forms_are_canonicalised() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:x@y>;tag=1\r\n"
        b"t: sip:a@b\r\ni: cid\r\nCSEQ: 1 OPTIONS\r\nk: path, outbound\r\nl: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert [n for n, _ in msg.headers] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Supported",
        "Content-Length",
    ]
    assert msg.headers.get("supported") == "path"
    assert msg.headers.get_all("k") == ["path", "outbound"]
    assert bytes(msg).startswith(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1")


def test_folded_headers_are_unfolded() -> None:
    data = REGISTER.replace(
        b"User-Agent: Digium D40 1_9_2_0", b"User-Agent: Digium\r\n  D40\r\n\t1_9_2_0"
    )
    assert parse_message(data).headers.get("User-Agent") == "Digium D40 1_9_2_0"


def test_content_length_larger_than_data_is_an_error() -> None:
    with pytest.raises(SipParseError, match="larger than") as info:
        parse_message(invite(length=b"999"))
    assert info.value.status == 400


def test_octets_after_the_body_are_ignored() -> None:
    msg = parse_message(invite() + b"garbage after the body")
    assert msg.body == SDP


def test_without_content_length_the_rest_is_the_body() -> None:
    data = invite().replace(b"Content-Length: %d\r\n" % len(SDP), b"")
    msg = parse_message(data)
    assert msg.body == SDP
    assert b"Content-Length: %d\r\n" % len(SDP) in bytes(msg)


def test_conflicting_content_lengths_are_refused_equal_ones_accepted() -> None:
    data = invite().replace(b"Max-Forwards: 70", b"Content-Length: 3")
    with pytest.raises(SipParseError, match="conflicting Content-Length"):
        parse_message(data)
    same = invite().replace(b"Max-Forwards: 70", b"Content-Length: %d" % len(SDP))
    msg = parse_message(same)
    assert bytes(msg).count(b"Content-Length") == 1


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1 2", b"", b"0x10", b"9" * 40])
def test_bad_content_length(value: bytes) -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(invite(length=value))


def test_serializer_sets_content_length() -> None:
    msg = parse_message(invite())
    msg.body = b"v=0\r\n"
    wire = bytes(msg)
    assert b"Content-Length: 5\r\n\r\nv=0\r\n" in wire
    assert parse_message(wire).body == b"v=0\r\n"
    fresh = SipResponse(200, "OK")
    assert bytes(fresh) == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_build_request_from_parts() -> None:
    headers = Headers(
        [
            ("Via", Via("UDP", "192.0.2.1", 5060, (("branch", "z9hG4bK1"), ("rport", None)))),
            ("From", NameAddr(SipUri(user="a", host="x"), "Alice", (("tag", "t1"),))),
            ("To", NameAddr(SipUri(user="b", host="x"))),
            ("Call-ID", "abc"),
            ("CSeq", CSeq(1, "OPTIONS")),
            ("Max-Forwards", 70),
        ]
    )
    req = SipRequest("OPTIONS", SipUri(user="b", host="x"), headers)
    wire = bytes(req)
    assert wire == (
        b"OPTIONS sip:b@x SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n"
        b'From: "Alice" <sip:a@x>;tag=t1\r\n'
        b"To: <sip:b@x>\r\n"
        b"Call-ID: abc\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Max-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert parse_message(wire) == SipRequest(
        "OPTIONS", SipUri(user="b", host="x"), Headers([*headers, ("Content-Length", "0")])
    )


def test_response_status_line() -> None:
    msg = parse_message(b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.is_provisional and not msg.is_success
    empty_reason = parse_message(b"SIP/2.0 200 \r\nContent-Length: 0\r\n\r\n")
    assert isinstance(empty_reason, SipResponse) and empty_reason.reason == ""


@pytest.mark.parametrize(
    ("line", "status", "match"),
    [
        (b"SIP/2.0 99 Low", None, "status code"),
        (b"SIP/2.0 700 High", None, "status code"),
        (b"SIP/2.0 2000 OK", None, "status code"),
        ("SIP/2.0 2٠٠ OK".encode(), None, "status code"),  # ASCII digits only (issue #10)
        ("OPTIONS sip:a@b SIP/٣.٠".encode(), 400, "version"),
        (b"SIP/3.0 200 OK", None, "version"),
        (b"OPTIONS sip:a@b SIP/3.0", 505, "version"),
        (b"OPTIONS sip:a@b HTTP/1.1", 400, "version"),
        (b"OPTIONS sip:a@b", 400, "request line"),
        (b"OPTIONS  sip:a@b SIP/2.0", 400, "request line"),
        (b"OPT IONS sip:a@b SIP/2.0", 400, "request line"),
        (b"OPT(ONS sip:a@b SIP/2.0", 400, "method"),
        (b"OPTIONS <sip:a@b> SIP/2.0", 400, "Request-URI"),
        (b"OPTIONS sip: SIP/2.0", 400, "Request-URI"),
    ],
)
def test_bad_start_lines(line: bytes, status: int | None, match: str) -> None:
    with pytest.raises(SipParseError, match=match) as info:
        parse_message(line + b"\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status == status


def test_lower_case_version_is_accepted() -> None:
    msg = parse_message(b"OPTIONS sip:a@b sip/2.0\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(msg, SipRequest)


@pytest.mark.parametrize(
    ("replace", "match"),
    [
        ((b"From: <sip:101@pbx.example.com>;tag=1", b"From: <sip:101@pbx"), "missing '>'"),
        ((b"Call-ID: c1", b"Call-ID: c 1"), "Call-ID"),
        ((b"CSeq: 2 INVITE", b"CSeq: 2"), "CSeq"),
        ((b"CSeq: 2 INVITE", b"CSeq: 2 BYE"), "does not match"),
        ((b"CSeq: 2 INVITE", b"CSeq: 2147483648 INVITE"), "out of range"),
        ((b"Max-Forwards: 70", b"Max-Forwards: 256"), "out of range"),
        ((b"Max-Forwards: 70", b"Date: Mon, 32 Jan 2024 00:00:00 GMT"), "Date"),
        ((b"Via: SIP/2.0/UDP 192.0.2.10:5060", b"Via: SIP/2.0/UDP 192.0.2.10:99999"), "port"),
        ((b"Via: SIP/2.0/UDP", b"Via: SIP/3.0/UDP"), "protocol"),
        ((b"Via: SIP/2.0/UDP", b"Via: SIP/2.0 UDP"), "Via"),
        ((b"Max-Forwards: 70", b"Max-Forwards 70"), "colon"),
        ((b"Max-Forwards: 70", b"Max Forwards: 70"), "header name"),
        ((b"Max-Forwards: 70", b"Contact: <sip:a@b>;;"), "empty parameter"),
        ((b"Max-Forwards: 70", b"Route: <sip:p@q;lr>, sip:x@y?a=b"), "angle brackets"),
    ],
)
def test_bad_header_fields(replace: tuple[bytes, bytes], match: str) -> None:
    data = invite().replace(*replace)
    assert data != invite()
    with pytest.raises(SipParseError, match=match) as info:
        parse_message(data)
    assert info.value.status == 400
    assert isinstance(info.value.partial, SipRequest)


def test_errors_derive_from_the_project_root() -> None:
    with pytest.raises(PhoneSimError):
        parse_message(b"nonsense")
    assert issubclass(SipParseError, ProtocolError)


def test_leading_crlfs_are_skipped_and_keepalives_recognised() -> None:
    assert parse_message(b"\r\n\r\n" + REGISTER) == parse_message(REGISTER)
    assert is_keepalive(b"\r\n\r\n") and is_keepalive(b"\r\n")
    assert not is_keepalive(b"") and not is_keepalive(REGISTER)
    with pytest.raises(SipParseError, match="keep-alive"):
        parse_message(b"\r\n\r\n")


def test_bare_lf_is_refused() -> None:
    with pytest.raises(SipParseError, match="bare CR or LF"):
        parse_message(REGISTER.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n"))
    with pytest.raises(SipParseError, match="empty line"):
        parse_message(REGISTER.replace(b"\r\n", b"\n"))


def test_continuation_before_first_header_is_refused() -> None:
    with pytest.raises(SipParseError, match="continuation"):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\n folded\r\nContent-Length: 0\r\n\r\n")


def test_limits_are_enforced() -> None:
    long_line = b"X-Long: " + b"a" * MAX_LINE_LENGTH + b"\r\n"
    with pytest.raises(SipParseError, match="exceeds") as info:
        parse_message(REGISTER.replace(b"Expires: 300\r\n", long_line))
    assert info.value.status == 513
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADER_COUNT + 1))
    with pytest.raises(SipParseError, match="header fields") as info:
        parse_message(REGISTER.replace(b"Expires: 300\r\n", many))
    assert info.value.status == 513
    big = b"".join(b"X-H: " + b"b" * 1000 + b"\r\n" for _ in range(MAX_HEADER_BYTES // 1000 + 1))
    with pytest.raises(SipParseError, match="header section") as info:
        parse_message(REGISTER.replace(b"Expires: 300\r\n", big))
    assert info.value.status == 513
    body = b"x" * (MAX_BODY_BYTES + 1)
    with pytest.raises(SipParseError, match="exceeds") as info:
        parse_message(invite(body))
    assert info.value.status == 413
    with pytest.raises(SipParseError, match="exceeds") as info:
        parse_message(invite(body).replace(b"Content-Length: %d\r\n" % len(body), b""))
    assert info.value.status == 413


def test_folded_value_longer_than_a_line_is_refused() -> None:
    chunk = b" " + b"c" * (MAX_LINE_LENGTH // 2) + b"\r\n"
    data = REGISTER.replace(b"Expires: 300\r\n", b"X-Folded: a\r\n" + chunk * 3)
    with pytest.raises(SipParseError, match="header value"):
        parse_message(data)


def test_mandatory_accessors_raise_when_missing_or_repeated() -> None:
    msg = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    for accessor in ("top_via", "cseq", "call_id", "from_", "to"):
        with pytest.raises(SipParseError, match="missing"):
            getattr(msg, accessor)
    assert msg.vias == [] and msg.contacts == [] and msg.expires is None
    assert msg.max_forwards is None
    twice = parse_message(REGISTER.replace(b"Call-ID: ", b"Call-ID: x\r\nCall-ID: "))
    with pytest.raises(SipParseError, match="2 values"):
        twice.call_id  # noqa: B018


def test_accessor_cache_follows_header_changes() -> None:
    msg = parse_message(REGISTER)
    assert msg.expires == 300
    assert msg.top_via.branch == "z9hG4bKPj1c2d3e4f"
    msg.headers.set("Expires", 60)
    msg.headers.insert(0, "Via", Via("UDP", "proxy.example.com", params=(("branch", "z9hG4bKx"),)))
    assert msg.expires == 60
    assert msg.top_via.host == "proxy.example.com"
    assert len(msg.vias) == 2


def test_contact_wildcard() -> None:
    msg = parse_message(REGISTER.replace(b'"101" <sip:101@192.0.2.10:5061;transport=TLS;ob>', b"*"))
    assert msg.contact_is_wildcard
    assert msg.contacts == []
    assert msg.headers.get_all("Contact") == ["*"]


def test_create_response_copies_the_right_headers() -> None:
    req = parse_message(
        REGISTER.replace(b"Via: ", b"Via: SIP/2.0/UDP proxy;branch=z9hG4bKp\r\nVia: ")
    )
    assert isinstance(req, SipRequest)
    resp = req.create_response(
        401, to_tag="srv", headers=[("WWW-Authenticate", 'Digest realm="x"')]
    )
    assert resp.status == 401 and resp.reason == "Unauthorized"
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert [n for n, _ in resp.headers] == [
        "Via",
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "WWW-Authenticate",
    ]
    assert resp.to.tag == "srv"
    assert resp.from_ == req.from_
    trying = req.create_response(100, to_tag="srv")
    assert trying.to.tag is None
    already = parse_message(bytes(resp))
    assert isinstance(already, SipResponse)
    assert already.to.tag == "srv"
    assert req.create_response(299).reason == ""
    assert req.create_response(200, "Fine").reason == "Fine"


def test_repr_hides_body_and_password() -> None:
    data = invite(b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:SECRETKEY\r\n")
    msg = parse_message(data)
    assert "SECRETKEY" not in repr(msg)
    assert "INVITE" in repr(msg)
    uri_msg = parse_message(REGISTER.replace(b"REGISTER sip:", b"REGISTER sip:u:hunter2@"))
    assert isinstance(uri_msg, SipRequest)
    assert uri_msg.uri.password == "hunter2"
    assert "hunter2" not in repr(uri_msg)
    resp = SipResponse(200, "OK", body=b"inline:SECRETKEY")
    assert "SECRETKEY" not in repr(resp)


def test_non_utf8_header_octets_survive_a_round_trip() -> None:
    data = REGISTER.replace(b"Digium D40", b"Digium \xff\xfe D40")
    msg = parse_message(data)
    assert bytes(msg) == data


def test_media_type() -> None:
    msg = parse_message(invite().replace(b"application/sdp", b"Application/SDP ; charset=x"))
    assert msg.media_type == "application/sdp"
    assert msg.content_type == "Application/SDP ; charset=x"


def test_bytearray_and_memoryview_inputs() -> None:
    assert parse_message(bytearray(REGISTER)) == parse_message(REGISTER)
    assert parse_message(memoryview(REGISTER)) == parse_message(REGISTER)
    with pytest.raises(SipParseError, match="bytes"):
        parse_message(REGISTER.decode())  # type: ignore[arg-type]


def test_copy_has_independent_headers() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, SipRequest)
    twin = msg.copy()
    assert twin == msg and twin is not msg
    twin.headers.set("CSeq", CSeq(2, "REGISTER"))
    assert msg.cseq.seq == 1 and twin.cseq.seq == 2
    assert isinstance(twin, SipRequest)


def test_unsendable_start_lines_are_refused() -> None:
    from phone_sim.sip import HeaderValueError

    with pytest.raises(HeaderValueError):
        bytes(SipResponse(200, "OK\r\nVia: evil"))
    with pytest.raises(HeaderValueError):
        bytes(SipResponse(1000, "Big"))
    with pytest.raises(HeaderValueError):
        bytes(SipRequest("INV ITE", SipUri(host="h")))
    with pytest.raises(HeaderValueError):
        bytes(SipRequest("INVITE", SipUri(host="h x")))
    with pytest.raises(HeaderValueError):
        bytes(SipRequest("INVITE", SipUri(scheme="urn", opaque="a\r\nb")))


def test_pjsip_contact_with_instance_id() -> None:
    contact = (
        b"Contact: <sip:101@192.0.2.10:5061;transport=TLS;ob>;+sip.ice;reg-id=1;"
        b'+sip.instance="<urn:uuid:00000000-0000-0000-0000-00001234abcd>", '
        b"<sip:101@198.51.100.7:40312;transport=TLS>;expires=120;q=0.5"
    )
    msg = parse_message(
        REGISTER.replace(b'Contact: "101" <sip:101@192.0.2.10:5061;transport=TLS;ob>', contact)
    )
    first, second = msg.contacts
    assert first.uri.has_param("ob")
    assert first.has_param("+sip.ice")
    assert first.param("reg-id") == "1"
    assert first.param("+sip.instance") == '"<urn:uuid:00000000-0000-0000-0000-00001234abcd>"'
    assert second.expires == 120 and second.param("q") == "0.5"
    assert bytes(parse_message(bytes(msg))) == bytes(msg)


def test_request_line_error_masks_a_password() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(b"OPTIONS sip:u:hunter2@h  SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


# -- a real peer: SIPp's built-in UAC over UDP on loopback ---------------------------------------


def _start_sipp(port: int, transport: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [require("sipp"), f"127.0.0.1:{port}", "-sn", "uac", "-t", transport, "-m", "1",
         "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
         "-timeout", "8s", "-nostdin", "-s", "102"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


@pytest.mark.peer
def test_sipp_udp_invite_parses_and_our_answer_is_accepted() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(5)
        proc = _start_sipp(port, "u1")
        try:
            data, peer = sock.recvfrom(65535)
            invite = parse_message(data)
            assert isinstance(invite, SipRequest) and invite.method == "INVITE"
            assert invite.uri.user == "102" and invite.uri.port == port
            assert invite.top_via.branch and invite.top_via.branch.startswith("z9hG4bK")
            assert invite.cseq.method == "INVITE" and invite.from_tag
            assert invite.media_type == "application/sdp" and invite.body.startswith(b"v=0")
            assert bytes(parse_message(bytes(invite))) == bytes(invite)
            busy = invite.create_response(486, to_tag="phone-sim-1")
            sock.sendto(bytes(busy), peer)
            # SIPp acknowledges a final non-2xx answer with an ACK for the same transaction
            # (RFC 3261 17.1.1.3): proof that it parsed what we serialized.
            while True:
                ack = parse_message(sock.recvfrom(65535)[0])
                if isinstance(ack, SipRequest) and ack.method == "ACK":
                    break
            assert ack.top_via.branch == invite.top_via.branch
            assert ack.to.tag == "phone-sim-1"
            assert ack.cseq.seq == invite.cseq.seq
        finally:
            _stop(proc)


# -- the parse memos against fresh parses -----------------------------------------------------


def _outcome(data: bytes) -> object:
    """What a parse yields, down to the parsed values the memos hold; or the refusal."""
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        return ("refused", str(exc), exc.status)
    values: list[object] = [type(msg), msg.headers.items(), msg.body]
    if isinstance(msg, SipRequest):
        values.append(msg.uri)
    for name in ("vias", "call_id", "cseq", "from_", "to", "contacts", "routes",
                 "record_routes", "max_forwards"):  # fmt: skip
        try:
            values.append(getattr(msg, name))
        except SipParseError as exc:
            values.append(("error", str(exc)))
    return values


def _fresh_outcome(data: bytes) -> object:
    """:func:`_outcome` with every memo emptied and none kept: each value parsed anew."""
    saved = message_module._MEMO_MAX_TEXT
    message_module._MEMO_MAX_TEXT = -1
    try:
        for memo in message_module._MEMOS:
            memo.clear()
        return _outcome(data)
    finally:
        message_module._MEMO_MAX_TEXT = saved


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=4))
def test_memoized_parse_equals_a_fresh_parse(messages: list[bytes]) -> None:
    """Parsing with warm memos (each message twice, after its siblings) gives exactly the
    values and refusals that parsing every value anew gives."""
    fresh = [_fresh_outcome(m) for m in messages]
    for m in messages:
        _outcome(m)
    assert [_outcome(m) for m in messages] == fresh


def test_memoized_parse_equals_a_fresh_parse_on_every_torture_message() -> None:
    for name, data in TORTURE.items():
        fresh = _fresh_outcome(data)
        _outcome(data)
        assert _outcome(data) == fresh, name


def test_a_malformed_value_is_refused_every_time() -> None:
    """Errors are never memoized: the same bad From is refused again, with the same words."""
    good = (
        b"OPTIONS sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@pbx>;tag=1\r\nTo: <sip:b@pbx>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    bad = good.replace(b"From: <sip:a@pbx>", b"From: <sip:a@pbx")
    parse_message(good)
    errors = []
    for _ in range(3):
        with pytest.raises(SipParseError) as info:
            parse_message(bad)
        errors.append((str(info.value), info.value.status))
    assert errors[0] == errors[1] == errors[2]
    assert errors[0][1] == 400
    assert "From" in errors[0][0] or ">" in errors[0][0]


def test_memos_are_bounded() -> None:
    """No memo holds more than _MEMO_SIZE values, nor any value longer than _MEMO_MAX_TEXT."""
    template = (
        "OPTIONS sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK{i}\r\n"
        "From: <sip:{i}@pbx>;tag={i}\r\nTo: <sip:{i}@pbx>{pad}\r\nCall-ID: c{i}\r\n"
        "CSeq: {i} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    long_to = ";x=" + "y" * message_module._MEMO_MAX_TEXT
    for i in range(message_module._MEMO_SIZE + 10):
        parse_message(template.format(i=i, pad="").encode())
    parse_message(template.format(i=0, pad=long_to).encode())
    for memo in message_module._MEMOS:
        assert len(memo) <= message_module._MEMO_SIZE
        assert all(len(text) <= message_module._MEMO_MAX_TEXT for text in memo)
    assert any(memo for memo in message_module._MEMOS)
