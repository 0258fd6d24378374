"""Dialog state (RFC 3261 §12): ids, CSeq, route sets, remote target, routing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.errors import UsageError
from phone_sim.sip.dialog import Dialog, DialogError, DialogId, DialogState
from phone_sim.sip.message import SipRequest, SipResponse, parse_message

INVITE = (
    b"INVITE sips:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;rport;branch=z9hG4bKPjinv\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sips:alice@atlanta.example.com>;tag=ftag\r\n"
    b"To: <sips:bob@biloxi.example.com>\r\n"
    b"Call-ID: call-1\r\n"
    b"CSeq: 314 INVITE\r\n"
    b"Contact: <sips:alice@192.0.2.10:5061;ob>\r\n"
    b"Record-Route: <sips:p2.example.com;lr>, <sips:p1.example.com;lr>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;rport=5061;branch=z9hG4bKPjinv\r\n"
    b"Record-Route: <sips:p2.example.com;lr>\r\n"
    b"Record-Route: <sips:p1.example.com;lr>\r\n"
    b"From: <sips:alice@atlanta.example.com>;tag=ftag\r\n"
    b"To: <sips:bob@biloxi.example.com>;tag=ttag\r\n"
    b"Call-ID: call-1\r\n"
    b"CSeq: 314 INVITE\r\n"
    b"Contact: <sips:bob@198.51.100.7:5061>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _req(data: bytes) -> SipRequest:
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def _resp(data: bytes) -> SipResponse:
    msg = parse_message(data)
    assert isinstance(msg, SipResponse)
    return msg


def test_uac_dialog_from_2xx() -> None:
    dialog = Dialog.from_uac(_req(INVITE), _resp(OK), secure_transport=True)
    assert dialog.id == DialogId("call-1", "ftag", "ttag")
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.local_cseq == 314 and dialog.remote_cseq is None
    # §12.1.2: the UAC reverses the Record-Route list.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sips:p1.example.com;lr", "sips:p2.example.com;lr"]
    assert str(dialog.remote_target) == "sips:bob@198.51.100.7:5061"
    assert dialog.secure
    assert not Dialog.from_uac(_req(INVITE), _resp(OK)).secure  # not over TLS


def test_uas_dialog_keeps_record_route_order() -> None:
    dialog = Dialog.from_uas(_req(INVITE), local_tag="mine")
    assert dialog.id == DialogId("call-1", "mine", "ftag")
    assert [str(r.uri) for r in dialog.route_set] == [
        "sips:p2.example.com;lr", "sips:p1.example.com;lr"]
    assert dialog.remote_cseq == 314 and dialog.local_cseq is None
    assert str(dialog.remote_target) == "sips:alice@192.0.2.10:5061;ob"
    bye = dialog.create_request("BYE")
    assert bye.cseq.seq == 1
    assert bye.from_tag == "mine" and bye.to_tag == "ftag"


def test_in_dialog_request_loose_routing() -> None:
    dialog = Dialog.from_uac(_req(INVITE), _resp(OK))
    bye = dialog.create_request("BYE", user_agent="Digium D40 1_4_0_0_57389")
    assert str(bye.uri) == "sips:bob@198.51.100.7:5061"
    assert [str(r.uri) for r in bye.routes] == ["sips:p1.example.com;lr", "sips:p2.example.com;lr"]
    assert bye.cseq.seq == 315 and dialog.local_cseq == 315
    assert bye.from_tag == "ftag" and bye.to_tag == "ttag" and bye.call_id == "call-1"
    assert "Via" not in bye.headers
    ack = dialog.create_request("ACK", cseq=314)
    assert ack.cseq.seq == 314 and dialog.local_cseq == 315
    with pytest.raises(UsageError, match="CSeq number of its INVITE"):
        dialog.create_request("ACK")


def test_in_dialog_request_strict_routing() -> None:
    strict = OK.replace(b"<sips:p1.example.com;lr>", b"<sips:p1.example.com;maddr=x>")
    dialog = Dialog.from_uac(_req(INVITE), _resp(strict))
    bye = dialog.create_request("BYE")
    # §12.2.1.1: the strict router goes in the Request-URI, the remote target last.
    assert str(bye.uri) == "sips:p1.example.com;maddr=x"
    assert [str(r.uri) for r in bye.routes] == [
        "sips:p2.example.com;lr", "sips:bob@198.51.100.7:5061"]


def test_early_dialog_then_confirmed_then_bye() -> None:
    ringing = OK.replace(b"200 OK", b"180 Ringing")
    dialog = Dialog.from_uac(_req(INVITE), _resp(ringing))
    assert dialog.state is DialogState.EARLY
    dialog.receive_response(_req(INVITE), _resp(OK))
    assert dialog.state is DialogState.CONFIRMED
    bye = dialog.create_request("BYE")
    dialog.receive_response(bye, bye.create_response(200))
    assert dialog.state is DialogState.TERMINATED
    with pytest.raises(UsageError, match="terminated"):
        dialog.create_request("INFO")


def test_early_dialog_ends_on_failure() -> None:
    ringing = OK.replace(b"200 OK", b"180 Ringing")
    dialog = Dialog.from_uac(_req(INVITE), _resp(ringing))
    dialog.receive_response(_req(INVITE), _resp(OK.replace(b"200 OK", b"486 Busy Here")))
    assert dialog.state is DialogState.TERMINATED


def test_target_refresh_and_cseq_order() -> None:
    dialog = Dialog.from_uas(_req(INVITE), local_tag="mine")
    reinvite = _req(
        INVITE.replace(b"314 INVITE", b"315 INVITE")
        .replace(b"192.0.2.10:5061;ob", b"192.0.2.99:5061")
        .replace(b"To: <sips:bob@biloxi.example.com>",
                 b"To: <sips:bob@biloxi.example.com>;tag=mine")
    )
    assert dialog.matches(reinvite, local_is_from=False)
    dialog.receive_request(reinvite)
    assert str(dialog.remote_target) == "sips:alice@192.0.2.99:5061"
    assert dialog.remote_cseq == 315
    old = _req(INVITE.replace(b"314 INVITE", b"300 INVITE"))
    with pytest.raises(DialogError, match="lower") as info:
        dialog.receive_request(old)
    assert info.value.status == 500
    bye = _req(INVITE.replace(b"INVITE sips", b"BYE sips").replace(b"314 INVITE", b"316 BYE"))
    dialog.receive_request(bye)
    assert dialog.state is DialogState.TERMINATED


def test_dialog_creation_errors() -> None:
    no_tag = OK.replace(b";tag=ttag", b"")
    with pytest.raises(DialogError, match="no To tag"):
        Dialog.from_uac(_req(INVITE), _resp(no_tag))
    two_contacts = OK.replace(b"Contact: <sips:bob@198.51.100.7:5061>",
                              b"Contact: <sips:a@h>, <sips:b@h>")
    with pytest.raises(DialogError, match="exactly one Contact"):
        Dialog.from_uac(_req(INVITE), _resp(two_contacts))
    with pytest.raises(UsageError):
        Dialog.from_uac(_req(INVITE), _resp(OK.replace(b"200 OK", b"100 Trying")))
    no_contact = INVITE.replace(b"Contact: <sips:alice@192.0.2.10:5061;ob>\r\n", b"")
    with pytest.raises(DialogError) as info:
        Dialog.from_uas(_req(no_contact), local_tag="x")
    assert info.value.status == 400
    dialog = Dialog.from_uac(_req(INVITE), _resp(OK))
    assert "call-1" in repr(dialog)


hosts = st.lists(
    st.tuples(st.sampled_from(["a.test", "proxy.test", "p9.test"]), st.booleans()), max_size=5
)


@given(routes=hosts)
def test_route_set_properties(routes: list[tuple[str, bool]]) -> None:
    record_route = "".join(
        f"Record-Route: <sip:{host}{';lr' if loose else ''}>\r\n" for host, loose in routes
    ).encode()
    response = _resp(OK.replace(
        b"Record-Route: <sips:p2.example.com;lr>\r\nRecord-Route: <sips:p1.example.com;lr>\r\n",
        record_route))
    dialog = Dialog.from_uac(_req(INVITE), response)
    expected = [f"sip:{h}{';lr' if loose else ''}" for h, loose in reversed(routes)]
    assert [str(r.uri) for r in dialog.route_set] == expected
    bye = dialog.create_request("BYE")
    sent = [str(r.uri) for r in bye.routes]
    if not expected or expected[0].endswith(";lr"):
        assert str(bye.uri) == str(dialog.remote_target) and sent == expected
    else:
        # Strict routing: the first hop is the Request-URI, the target ends the Route list.
        assert str(bye.uri) == expected[0]
        assert sent == [*expected[1:], str(dialog.remote_target)]
    assert bye.cseq.seq == 315
