"""The request validator (RFC 3261 8.2)."""

from __future__ import annotations

import pytest

from phone_sim.sip import SipRequest, parse_message, validate_request

BASE = (
    b"{method} sip:101@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"From: <sip:a@pbx>;tag=f\r\n"
    b"To: <sip:101@pbx>\r\n"
    b"Call-ID: v-1\r\n"
    b"CSeq: 3 {method}\r\n"
    b"{extra}"
    b"Content-Length: {length}\r\n\r\n{body}"
)


def request(method: str = "OPTIONS", extra: bytes = b"", body: bytes = b"") -> SipRequest:
    data = (
        BASE.replace(b"{method}", method.encode())
        .replace(b"{extra}", extra)
        .replace(b"{length}", str(len(body)).encode())
        .replace(b"{body}", body)
    )
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def test_acceptable_request() -> None:
    assert validate_request(request()) is None
    assert (
        validate_request(request("INVITE", b"Content-Type: application/sdp\r\n", b"v=0\r\n"))
        is None
    )


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_gives_400(name: str) -> None:
    req = request()
    req.headers.remove(name)
    resp = validate_request(req, to_tag="t")
    assert resp is not None and resp.status == 400
    assert name in resp.reason


def test_missing_max_forwards_is_fine() -> None:
    assert validate_request(request()) is None  # BASE has none, like an RFC 2543 client


@pytest.mark.parametrize("name", ["From", "To", "Call-ID", "CSeq", "Max-Forwards"])
def test_repeated_single_header_gives_400(name: str) -> None:
    req = request()
    value = {"CSeq": "3 OPTIONS", "Max-Forwards": "70"}.get(name, req.headers.get(name) or "x")
    if name not in req.headers:
        req.headers.add(name, value)
    req.headers.add(name, value)
    resp = validate_request(req)
    assert resp is not None and resp.status == 400
    assert "more than one" in resp.reason


def test_malformed_header_set_after_parsing_gives_400() -> None:
    req = request()
    req.headers.set("CSeq", "three OPTIONS")
    resp = validate_request(req)
    assert resp is not None and resp.status == 400


def test_unknown_method_gives_405_with_allow() -> None:
    resp = validate_request(request("SUBSCRIBE"), allowed_methods=("INVITE", "BYE"))
    assert resp is not None and resp.status == 405
    assert resp.headers.get_all("Allow") == ["INVITE", "BYE"]


def test_register_gets_405_by_default() -> None:
    resp = validate_request(request("REGISTER"))
    assert resp is not None and resp.status == 405


def test_unknown_scheme_gives_416() -> None:
    req = request()
    req.uri = req.uri.__class__.parse("nobody:opaque")
    resp = validate_request(req)
    assert resp is not None and resp.status == 416
    req.uri = req.uri.__class__.parse("soap.beep://192.0.2.103:3002")
    assert validate_request(req) is None
    assert validate_request(req, known_schemes=("sip",)) is not None


def test_require_gives_420_unless_supported() -> None:
    req = request(extra=b"Require: 100rel, timer\r\nProxy-Require: foo\r\n")
    resp = validate_request(req, supported=("timer",))
    assert resp is not None and resp.status == 420
    assert resp.headers.get_all("Unsupported") == ["100rel"]
    assert validate_request(req, supported=("100REL", "timer")) is None


def test_cancel_ignores_require() -> None:
    assert validate_request(request("CANCEL", b"Require: weird\r\n")) is None


def test_ack_is_never_answered() -> None:
    req = request("ACK", b"Require: weird\r\n")
    req.headers.remove("Call-ID")
    assert validate_request(req) is None
    req.headers.add("From", "<sip:x@y>")
    assert validate_request(req) is None


def test_unknown_body_type_gives_415_with_accept() -> None:
    req = request("INVITE", b"Content-Type: application/unknown\r\n", b"<x/>")
    resp = validate_request(req, to_tag="t1")
    assert resp is not None and resp.status == 415
    assert resp.headers.get("Accept") == "application/sdp"
    assert resp.to.tag == "t1"


def test_body_without_content_type_gives_400() -> None:
    resp = validate_request(request("INVITE", body=b"v=0\r\n"))
    assert resp is not None and resp.status == 400


def test_unknown_content_encoding_gives_415() -> None:
    req = request(
        "INVITE", b"Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n", b"\x1f\x8b"
    )
    resp = validate_request(req)
    assert resp is not None and resp.status == 415
    assert resp.headers.get("Accept-Encoding") == "identity"


def test_methods_without_accept_entry_take_any_body() -> None:
    req = request("MESSAGE", b"Content-Type: application/vnd.digium+xml\r\n", b"<request/>")
    assert validate_request(req) is None
    assert validate_request(req, accept={"MESSAGE": ("text/plain",)}) is not None


def test_optional_body_of_an_unknown_type_is_ignored() -> None:
    extra = (
        b"Content-Type: application/unknown\r\nContent-Disposition: render; handling=optional\r\n"
    )
    assert validate_request(request("INVITE", extra, b"<x/>")) is None
    required = extra.replace(b"optional", b"required")
    resp = validate_request(request("INVITE", required, b"<x/>"))
    assert resp is not None and resp.status == 415


def test_unknown_disposition_type_gives_415() -> None:
    extra = b"Content-Type: application/sdp\r\nContent-Disposition: telepathy\r\n"
    resp = validate_request(request("INVITE", extra, b"v=0\r\n"))
    assert resp is not None and resp.status == 415
    assert "telepathy" in resp.reason
    session = extra.replace(b"telepathy", b"session")
    assert validate_request(request("INVITE", session, b"v=0\r\n")) is None
