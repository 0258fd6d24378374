"""The lab's proxy core (RFC 3261 §16) in memory, with a fake clock: two phones registered on
different flows call each other through it."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phone_sim.lab.proxy import CANCEL_WAIT, TIMER_C, CallRefused, CallRouted, Service
from phone_sim.lab.registrar import Flow, LabUser, Registrar, RegistrarConfig
from phone_sim.sip.digest import DigestChallenge, DigestResponse, compute_response
from phone_sim.sip.framer import MessageRejected, StreamFramer
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse, parse_message
from tests.lab.sipclient import RegisterClient

DOMAIN = "lab.phone-sim.test"
LAB_TLS = ("127.0.0.1", 5061)
TLS1 = Flow(id=1, transport="TLS", remote=("127.0.0.1", 40001), local=LAB_TLS)
TLS2 = Flow(id=2, transport="TLS", remote=("127.0.0.1", 40002), local=LAB_TLS)
UDP = Flow(id=9, transport="UDP", remote=("127.0.0.1", 40003), local=("127.0.0.1", 5060))
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
    b"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2V\r\n"
)


class Lab:
    """A registrar with 101 on TLS1 and 102 on TLS2 (or UDP), and what it sent."""

    def __init__(self, *, callee_flow: Flow = TLS2, register: bool = True) -> None:
        users = [LabUser(username=u, password="1234") for u in ("101", "102", "103")]
        self.reg = Registrar(users, RegistrarConfig(realm=DOMAIN))
        self.reg.proxy.add_listener(*LAB_TLS)
        self.reg.proxy.add_listener("127.0.0.1", 5060)
        self.reg.proxy.add_name(DOMAIN)
        self.reg.proxy.set_udp_flow(Flow(id=9, transport="UDP", remote=("", 0),
                                         local=("127.0.0.1", 5060)))
        self.reg.flow_opened(TLS1)
        self.reg.flow_opened(TLS2)
        self.now = 0.0
        self.challenge: DigestChallenge | None = None
        self.nc = 0
        if register:
            self.register("101", TLS1, 40001)
            self.register("102", callee_flow, callee_flow.remote[1])

    def register(self, user: str, flow: Flow, port: int) -> None:
        phone = RegisterClient(user, "1234", transport=flow.transport, local=("127.0.0.1", port))
        for _ in range(2):
            [out] = self.feed(phone.register(), flow)
            response = phone.take(out[2])
        assert response.status == 200

    def feed(self, data: bytes, flow: Flow) -> list[tuple[Flow, tuple[str, int], bytes]]:
        if flow.reliable:
            try:
                events = StreamFramer().feed(data)
            except SipParseError as exc:  # as the Lab's connection does: answer, then close
                events = [MessageRejected(error=exc)]
            for event in events:
                self.reg.receive_message(event, flow, self.now)
        else:
            self.reg.receive_datagram(data, flow, self.now)
        return [(t.flow, t.destination, t.data) for t in self.reg.transmits_to_send()]

    def advance(self, seconds: float) -> list[tuple[Flow, tuple[str, int], bytes]]:
        end = self.now + seconds
        out: list[tuple[Flow, tuple[str, int], bytes]] = []
        while (at := self.reg.get_timer()) is not None and at <= end:
            self.now = at
            self.reg.handle_timer(at)
            out.extend((t.flow, t.destination, t.data) for t in self.reg.transmits_to_send())
        self.now = end
        return out

    def proxy_auth(self, method: str, uri: str, user: str = "101", password: str = "1234") -> str:
        assert self.challenge is not None
        self.nc += 1
        cnonce = secrets.token_hex(4)
        digest = compute_response(
            algorithm="MD5", username=user, realm=self.challenge.realm, password=password,
            nonce=self.challenge.nonce, method=method, uri=uri, qop="auth", nc=self.nc,
            cnonce=cnonce,
        )  # fmt: skip
        return str(DigestResponse(
            username=user, realm=self.challenge.realm, nonce=self.challenge.nonce, uri=uri,
            response=digest, algorithm="MD5", cnonce=cnonce, qop="auth", nc=self.nc,
        ))  # fmt: skip


def request(
    method: str,
    uri: str,
    *,
    branch: str,
    call_id: str = "call1",
    cseq: int = 1,
    from_user: str = "101",
    to_user: str = "102",
    to_tag: str | None = None,
    via: str = "SIP/2.0/TLS 127.0.0.1:40001",
    extra: list[str] | None = None,
    body: bytes = b"",
    cseq_method: str | None = None,
) -> bytes:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via};branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:{from_user}@{DOMAIN}>;tag=from{from_user}",
        f"To: <sip:{to_user}@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        f"Contact: <sip:{from_user}@127.0.0.1:40001;transport=tls>",
        *(extra or []),
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def response_to(req: bytes, status: int, *, to_tag: str = "callee", extra: list[str] | None = None,
                body: bytes = b"") -> bytes:
    message = parse_message(req)
    assert isinstance(message, SipRequest)
    out = message.create_response(status, to_tag=to_tag)
    for name in ("Record-Route",):
        for value in message.headers.get_all(name):
            out.headers.add(name, value)
    out.headers.add("Contact", "<sip:102@127.0.0.1:40002;transport=tls>")
    for line in extra or []:
        name, _, value = line.partition(": ")
        out.headers.add(name, value)
    if body:
        out.headers.add("Content-Type", "application/sdp")
    out.body = body
    return bytes(out)


def _drain(lab: Lab) -> list[object]:
    out: list[object] = []
    while (event := lab.reg.next_event()) is not None:
        out.append(event)
    return out


def parsed(data: bytes) -> SipRequest | SipResponse:
    return parse_message(data)


def _status(data: bytes) -> int | str:
    message = parse_message(data)
    return message.status if isinstance(message, SipResponse) else "req"


def invite(lab: Lab, *, branch: str = "z9hG4bKinv1", to_user: str = "102",
           extra: list[str] | None = None) -> list[tuple[Flow, tuple[str, int], bytes]]:
    """INVITE from 101, challenged then authorized; the output of the authorized one."""
    uri = f"sip:{to_user}@{DOMAIN}"
    out = lab.feed(request("INVITE", uri, branch=branch + "a", to_user=to_user, body=SDP,
                           extra=extra), TLS1)
    statuses = [parsed(d) for _, _, d in out]
    assert [r.status for r in statuses if isinstance(r, SipResponse)] == [100, 407]
    challenge = statuses[1].headers.get("Proxy-Authenticate")
    assert challenge is not None
    lab.challenge = DigestChallenge.parse(challenge, proxy=True)[0]
    assert lab.feed(request("ACK", uri, branch=branch + "a", to_user=to_user,
                            to_tag=parsed(out[1][2]).to_tag), TLS1) == []  # absorbed
    auth = f"Proxy-Authorization: {lab.proxy_auth('INVITE', uri)}"
    return lab.feed(request("INVITE", uri, branch=branch, cseq=2, to_user=to_user, body=SDP,
                            extra=[auth, *(extra or [])]), TLS1)


def test_call_through_the_proxy_with_record_route_and_route() -> None:
    lab = Lab()
    out = invite(lab, extra=["Supported: 100rel, timer"])
    assert [(f.id, _status(d)) for f, _, d in out] == [(1, 100), (2, "req")]
    forwarded = parsed(out[1][2])
    assert isinstance(forwarded, SipRequest)
    # Request-URI is the binding's contact; the lab's Via on top; MF decremented; RR x2.
    assert forwarded.uri.host == "127.0.0.1" and forwarded.uri.port == 40002
    assert forwarded.top_via.branch and forwarded.top_via.branch.startswith("z9hG4bK")
    assert forwarded.top_via.transport == "TLS" and forwarded.top_via.port == 5061
    assert len(forwarded.vias) == 2 and forwarded.vias[1].branch == "z9hG4bKinv1"
    assert forwarded.max_forwards == 69
    rr = forwarded.record_routes
    assert len(rr) == 2
    assert all(r.uri.has_param("lr") and r.uri.param("transport") == "tls" for r in rr)
    assert "Proxy-Authorization" not in forwarded.headers
    assert forwarded.body == SDP
    routed = [e for e in _drain(lab) if isinstance(e, CallRouted)]
    assert [(e.target, e.contact, e.transports) for e in routed] == [
        (f"sip:102@{DOMAIN}", str(forwarded.uri), ("TLS", "TLS"))]
    # A reliable 180 and the 200 come back untouched but for the lab's Via.
    ringing = response_to(out[1][2], 180, extra=["Require: 100rel", "RSeq: 1"], body=SDP)
    [(flow, dest, data)] = lab.feed(ringing, TLS2)
    back = parsed(data)
    assert flow == TLS1 and dest == TLS1.remote
    assert isinstance(back, SipResponse) and back.status == 180
    assert back.headers.get("Require") == "100rel" and back.body == SDP
    assert [v.branch for v in back.vias] == ["z9hG4bKinv1"]
    assert len(back.record_routes) == 2
    [(flow, _, data)] = lab.feed(response_to(out[1][2], 200, body=SDP), TLS2)
    ok = parsed(data)
    assert flow == TLS1 and isinstance(ok, SipResponse) and ok.status == 200
    # The caller's route set is the Record-Route reversed; its ACK and BYE go to the callee.
    routes = [f"Route: {r}" for r in reversed(ok.headers.get_all("Record-Route"))]
    callee_contact = "sip:102@127.0.0.1:40002;transport=tls"
    [(flow, _, data)] = lab.feed(request("ACK", callee_contact, branch="z9hG4bKack1", cseq=2,
                                         to_tag="callee", extra=routes), TLS1)
    ack = parsed(data)
    assert flow == TLS2 and isinstance(ack, SipRequest) and ack.method == "ACK"
    assert "Route" not in ack.headers and str(ack.uri) == callee_contact
    # The callee's BYE, with the Record-Route in order, goes to the caller's connection.
    callee_routes = [f"Route: {r}" for r in ok.headers.get_all("Record-Route")]
    bye = request("BYE", "sip:101@127.0.0.1:40001;transport=tls", branch="z9hG4bKbye1",
                  from_user="102", to_user="101", to_tag="from101", extra=callee_routes,
                  via="SIP/2.0/TLS 127.0.0.1:40002")
    [(flow, _, data)] = lab.feed(bye, TLS2)
    fwd_bye = parsed(data)
    assert flow == TLS1 and isinstance(fwd_bye, SipRequest) and fwd_bye.method == "BYE"
    assert "Proxy-Authenticate" not in fwd_bye.headers
    [(flow, _, data)] = lab.feed(response_to(data, 200, to_tag="from101"), TLS1)
    assert flow == TLS2 and parsed(data).status == 200  # type: ignore[union-attr]
    assert lab.reg.proxy.stats["routed"] == 3
    lab.advance(40)
    assert lab.reg.proxy.transactions == 0


def test_in_dialog_methods_all_route() -> None:
    lab = Lab()
    out = invite(lab)
    [(_, _, data)] = lab.feed(response_to(out[1][2], 200, body=SDP), TLS2)
    ok = parsed(data)
    routes = [f"Route: {r}" for r in reversed(ok.headers.get_all("Record-Route"))]
    for n, method in enumerate(["PRACK", "UPDATE", "INFO", "MESSAGE", "NOTIFY", "INVITE"]):
        data = request(method, "sip:102@127.0.0.1:40002;transport=tls", branch=f"z9hG4bKd{n}",
                       cseq=10 + n, to_tag="callee", extra=routes)
        sent = lab.feed(data, TLS1)
        requests = [(f, parsed(d)) for f, _, d in sent if isinstance(parsed(d), SipRequest)]
        assert [(f.id, r.method) for f, r in requests] == [(2, method)]  # type: ignore[union-attr]


def test_cancel_is_hop_by_hop() -> None:
    lab = Lab()
    out = invite(lab)
    forwarded = out[1][2]
    lab.feed(response_to(forwarded, 180), TLS2)
    cancel = request("CANCEL", f"sip:102@{DOMAIN}", branch="z9hG4bKinv1", cseq=2)
    sent = lab.feed(cancel, TLS1)
    assert [(f.id, parsed(d).status if isinstance(parsed(d), SipResponse) else parsed(d).method)  # type: ignore[union-attr]
            for f, _, d in sent] == [(1, 200), (2, "CANCEL")]
    downstream = parsed(sent[1][2])
    assert downstream.top_via.branch == parsed(forwarded).top_via.branch
    assert lab.feed(response_to(sent[1][2], 200), TLS2) == []  # our CANCEL's 200: absorbed
    sent = lab.feed(response_to(forwarded, 487), TLS2)
    kinds = [(f.id, parsed(d)) for f, _, d in sent]
    assert [(i, m.method if isinstance(m, SipRequest) else m.status) for i, m in kinds] == [
        (2, "ACK"), (1, 487)]
    # The caller's ACK to the 487 ends at the lab.
    assert lab.feed(request("ACK", f"sip:102@{DOMAIN}", branch="z9hG4bKinv1", cseq=2,
                            to_tag="callee"), TLS1) == []


def test_cancel_before_any_provisional_waits_for_one() -> None:
    lab = Lab()
    out = invite(lab)
    sent = lab.feed(request("CANCEL", f"sip:102@{DOMAIN}", branch="z9hG4bKinv1", cseq=2), TLS1)
    assert [parsed(d).status for _, _, d in sent] == [200]  # type: ignore[union-attr]
    sent = lab.feed(response_to(out[1][2], 180), TLS2)
    methods = [(f.id, parsed(d)) for f, _, d in sent]
    assert any(f == 2 and isinstance(m, SipRequest) and m.method == "CANCEL" for f, m in methods)


def test_cancel_of_nothing_gets_481() -> None:
    lab = Lab()
    [(_, _, data)] = lab.feed(request("CANCEL", f"sip:102@{DOMAIN}", branch="z9hG4bKnone"),
                              TLS1)
    assert parsed(data).status == 481  # type: ignore[union-attr]


def test_unknown_user_404_and_unregistered_480() -> None:
    lab = Lab()
    while lab.reg.next_event() is not None:
        pass
    out = invite(lab, to_user="999", branch="z9hG4bKx1")
    assert [parsed(d).status for _, _, d in out] == [100, 404]  # type: ignore[union-attr]
    [event] = _drain(lab)
    assert isinstance(event, CallRefused) and event.status == 404
    assert event.target == f"sip:999@{DOMAIN}" and event.caller == f"sip:101@{DOMAIN}"
    out = invite(lab, to_user="103", branch="z9hG4bKx2")
    assert [parsed(d).status for _, _, d in out] == [100, 480]  # type: ignore[union-attr]
    lab.reg.flow_closed(TLS2.id, lab.now)
    lab.reg.transmits_to_send()
    out = invite(lab, to_user="102", branch="z9hG4bKx3")
    assert [parsed(d).status for _, _, d in out] == [100, 480]  # type: ignore[union-attr]


def test_wrong_password_and_someone_else_s_from() -> None:
    lab = Lab()
    uri = f"sip:102@{DOMAIN}"
    out = lab.feed(request("INVITE", uri, branch="z9hG4bKw1"), TLS1)
    lab.challenge = DigestChallenge.parse(parsed(out[1][2]).headers.get("Proxy-Authenticate")
                                          or "", proxy=True)[0]
    bad = f"Proxy-Authorization: {lab.proxy_auth('INVITE', uri, password='nope')}"
    out = lab.feed(request("INVITE", uri, branch="z9hG4bKw2", extra=[bad]), TLS1)
    assert [parsed(d).status for _, _, d in out] == [100, 407]  # type: ignore[union-attr]
    good = f"Proxy-Authorization: {lab.proxy_auth('INVITE', uri, user='102')}"
    out = lab.feed(request("INVITE", uri, branch="z9hG4bKw3", extra=[good]), TLS1)
    assert [parsed(d).status for _, _, d in out] == [100, 403]  # type: ignore[union-attr]


def test_max_forwards_zero_is_483_and_bad_cseq_400() -> None:
    lab = Lab()
    data = request("MESSAGE", f"sip:102@{DOMAIN}", branch="z9hG4bKmf").replace(
        b"Max-Forwards: 70", b"Max-Forwards: 0")
    [(_, _, out)] = lab.feed(data, TLS1)
    assert parsed(out).status == 483  # type: ignore[union-attr]
    data = request("MESSAGE", f"sip:102@{DOMAIN}", branch="z9hG4bKcs", cseq_method="INFO")
    [(_, _, out)] = lab.feed(data, TLS1)
    assert parsed(out).status == 400  # type: ignore[union-attr]


def test_forged_route_token_is_not_followed() -> None:
    lab = Lab()
    forged = "Route: <sip:127.0.0.2:5061;transport=tls;lr;ftok=2.tls.7f000001.40002.000000000000>"
    data = request("BYE", "sip:102@127.0.0.1:40002", branch="z9hG4bKf1", to_tag="x",
                   extra=[forged])
    [(flow, _, out)] = lab.feed(data, TLS1)
    assert flow == TLS1 and parsed(out).status == 403  # type: ignore[union-attr]


def test_stray_response_is_dropped() -> None:
    lab = Lab()
    stray = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKlabpdeadbeef\r\n"
             b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
             b"Content-Length: 0\r\n\r\n")
    assert lab.feed(stray, TLS2) == []
    assert lab.reg.proxy.stats["stray"] == 1


def test_unanswered_invite_times_out_with_408() -> None:
    lab = Lab()
    invite(lab)
    # TLS: no retransmissions; Timer B (64*T1) ends the branch and the caller gets 408.
    out = lab.advance(40)
    assert [(f.id, parsed(d).status) for f, _, d in out] == [(1, 408)]  # type: ignore[union-attr]
    assert lab.reg.proxy.transactions <= 1


def test_ringing_branch_is_cancelled_by_timer_c() -> None:
    lab = Lab()
    out = invite(lab)
    lab.feed(response_to(out[1][2], 180), TLS2)
    sent = lab.advance(TIMER_C + 1)
    assert [(f.id, parsed(d).method) for f, _, d in sent] == [(2, "CANCEL")]  # type: ignore[union-attr]
    # The branch never answers its 487: the lab gives up and the caller gets 408.
    sent = lab.advance(CANCEL_WAIT + 1)
    assert [(f.id, _status(d)) for f, _, d in sent] == [(1, 408)]
    lab.advance(40)
    assert lab.reg.proxy.transactions == 0


def test_udp_callee_gets_retransmissions_until_it_answers() -> None:
    lab = Lab(callee_flow=UDP)
    out = invite(lab)
    flow, dest, data = out[1]
    assert flow.transport == "UDP" and dest == UDP.remote
    fwd = parsed(data)
    assert fwd.top_via.transport == "UDP" and fwd.top_via.rport is True
    assert [r.uri.param("transport") for r in fwd.record_routes] == ["udp", "tls"]
    again = lab.advance(0.6)  # Timer A
    assert [d for _, _, d in again] == [data]
    lab.feed(response_to(data, 100), UDP)
    assert lab.advance(5) == []  # a provisional stops them


def test_service_is_reached_over_udp() -> None:
    lab = Lab()
    lab.reg.proxy.add_service(Service(user="600", address=("127.0.0.1", 45600)))
    out = invite(lab, to_user="600")
    flow, dest, data = out[1]
    fwd = parsed(data)
    assert flow.transport == "UDP" and dest == ("127.0.0.1", 45600)
    assert isinstance(fwd, SipRequest) and str(fwd.uri) == "sip:600@127.0.0.1:45600"


def test_options_to_the_lab_is_answered_and_to_a_phone_is_routed() -> None:
    lab = Lab()
    [(_, _, data)] = lab.feed(request("OPTIONS", f"sip:{DOMAIN}", branch="z9hG4bKo1"), TLS1)
    answer = parsed(data)
    assert answer.status == 200  # type: ignore[union-attr]
    assert "INVITE" in answer.headers.get_all("Allow")


def test_retransmitted_request_gets_the_last_response() -> None:
    lab = Lab()
    data = request("MESSAGE", f"sip:999@{DOMAIN}", branch="z9hG4bKr1")
    first = lab.feed(data, TLS1)
    assert lab.feed(data, TLS1) == first


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["INVITE", "ACK", "CANCEL", "BYE", "PRACK", "MESSAGE", "OPTIONS",
                         "resp180", "resp200", "resp487", "close", "timer"]),
        max_size=12,
    )
)
def test_any_sequence_never_raises(ops: list[str]) -> None:
    lab = Lab()
    last: bytes | None = None
    for n, op in enumerate(ops):
        if op == "close":
            lab.reg.flow_closed(TLS2.id, lab.now)
            lab.reg.transmits_to_send()
        elif op == "timer":
            lab.advance(20)
        elif op.startswith("resp"):
            if last is not None:
                lab.feed(response_to(last, int(op[4:])), TLS2)
        else:
            sent = lab.feed(request(op, f"sip:102@{DOMAIN}", branch=f"z9hG4bKh{n % 3}",
                                    cseq=n + 1, to_tag="t" if op in ("BYE", "PRACK") else None),
                            TLS1)
            for flow, _, data in sent:
                if flow.id == 2:
                    last = data
    lab.advance(TIMER_C + 100)
    # Every transaction ended by itself: nothing is left behind, no timer armed.
    assert lab.reg.proxy.transactions == 0
    assert lab.reg.proxy.get_timer() is None


@pytest.mark.parametrize("junk", [b"INVITE sip:102@x SIP/2.0\r\nVia: x\r\n\r\n",
                                  b"BYE sip: SIP/2.0\r\n\r\n"])
def test_junk_never_raises(junk: bytes) -> None:
    lab = Lab()
    timer = lab.reg.get_timer()
    malformed = lab.reg.stats["malformed"]
    # Too broken to answer (no usable Via to send a 400 to): dropped and counted, nothing sent,
    # no transaction or timer started.
    assert lab.feed(junk, UDP) == []
    assert lab.reg.stats["malformed"] == malformed + 1
    assert lab.reg.get_timer() == timer
    assert lab.advance(60) == []


def test_a_200_that_crosses_the_cancel_is_still_forwarded() -> None:
    lab = Lab()
    out = invite(lab)
    lab.feed(response_to(out[1][2], 180), TLS2)
    lab.feed(request("CANCEL", f"sip:102@{DOMAIN}", branch="z9hG4bKinv1", cseq=2), TLS1)
    sent = lab.feed(response_to(out[1][2], 200, body=SDP), TLS2)
    assert [(f.id, _status(d)) for f, _, d in sent] == [(1, 200)]


def test_a_cancelled_branch_that_never_answers_gets_487_from_the_lab() -> None:
    lab = Lab()
    out = invite(lab)
    lab.feed(response_to(out[1][2], 180), TLS2)
    lab.feed(request("CANCEL", f"sip:102@{DOMAIN}", branch="z9hG4bKinv1", cseq=2), TLS1)
    sent = lab.advance(CANCEL_WAIT + 1)
    assert (1, 487) in [(f.id, _status(d)) for f, _, d in sent]


def test_options_to_a_phone_is_authenticated_then_routed() -> None:
    lab = Lab()
    uri = f"sip:102@{DOMAIN}"
    [(_, _, data)] = lab.feed(request("OPTIONS", uri, branch="z9hG4bKop1"), TLS1)
    challenged = parsed(data)
    assert isinstance(challenged, SipResponse) and challenged.status == 407
    lab.challenge = DigestChallenge.parse(challenged.headers.get("Proxy-Authenticate") or "",
                                          proxy=True)[0]
    auth = f"Proxy-Authorization: {lab.proxy_auth('OPTIONS', uri)}"
    [(flow, _, data)] = lab.feed(request("OPTIONS", uri, branch="z9hG4bKop2", extra=[auth]), TLS1)
    assert flow == TLS2 and _status(data) == "req"
    [(flow, _, data)] = lab.feed(response_to(data, 200), TLS2)
    assert flow == TLS1 and _status(data) == 200


def test_udp_caller_retransmission_gets_the_100_again() -> None:
    lab = Lab(register=False)
    lab.register("101", UDP, UDP.remote[1])
    data = request("INVITE", f"sip:102@{DOMAIN}", branch="z9hG4bKu1",
                   via="SIP/2.0/UDP 127.0.0.1:40003;rport")
    first = lab.feed(data, UDP)
    assert [_status(d) for _, _, d in first] == [100, 407]
    again = lab.feed(data, UDP)
    assert [_status(d) for _, _, d in again] == [407]  # the last response, to the rport
    assert again[0][1] == UDP.remote
    # Timer G retransmits the 407 until the ACK comes.
    assert [_status(d) for _, _, d in lab.advance(0.6)] == [407]


_FIELDS = ["Route", "Max-Forwards", "CSeq", "To", "From", "Via", "Proxy-Authorization",
           "Record-Route", "Call-ID", "Contact", "Content-Length"]


@settings(max_examples=80, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "BYE", "ACK", "CANCEL", "MESSAGE", "PRACK"]),
    field=st.sampled_from(_FIELDS),
    junk=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    in_dialog=st.booleans(),
)
def test_a_mangled_header_gets_an_answer_or_is_dropped_never_raises(
    method: str, field: str, junk: str, in_dialog: bool
) -> None:
    lab = Lab()
    routes = ["Route: <sip:127.0.0.1:5061;transport=tls;lr>"] if in_dialog else []
    data = request(method, f"sip:102@{DOMAIN}", branch="z9hG4bKm1",
                   to_tag="t" if in_dialog else None, extra=routes)
    lines = data.split(b"\r\n")
    mangled = [
        (f"{field}: {junk}".encode() if line.lower().startswith(field.lower().encode() + b":")
         else line)
        for line in lines
    ]
    if field == "Route" and not in_dialog:
        mangled.insert(1, f"Route: {junk}".encode())
    for flow in (TLS1, UDP):
        for _, _, out in lab.feed(b"\r\n".join(mangled), flow):
            if out.startswith(b"SIP/2.0 "):
                # An error response (it echoes the request's header fields, bad ones too).
                assert int(out[8:11]) >= 100
            else:
                parse_message(out)  # a forwarded request is well-formed
    lab.advance(TIMER_C + 100)
    assert lab.reg.proxy.transactions == 0


def test_in_dialog_request_follows_a_phone_that_reconnected() -> None:
    lab = Lab()
    out = invite(lab)
    [(_, _, data)] = lab.feed(response_to(out[1][2], 200, body=SDP), TLS2)
    ok = parsed(data)
    routes = [f"Route: {r}" for r in reversed(ok.headers.get_all("Record-Route"))]
    callee_contact = "sip:102@127.0.0.1:40002;transport=tls"
    # 102's connection drops; it reconnects from a new port and registers the same contact.
    lab.reg.flow_closed(TLS2.id, lab.now)
    tls3 = Flow(id=3, transport="TLS", remote=("127.0.0.1", 40009), local=LAB_TLS)
    lab.reg.flow_opened(tls3)
    lab.register("102", tls3, 40002)
    bye = request("BYE", callee_contact, branch="z9hG4bKre1", cseq=3, to_tag="callee",
                  extra=routes)
    [(flow, _, data)] = lab.feed(bye, TLS1)
    assert flow == tls3 and _status(data) == "req"
    # The connection drops under the pending BYE: the caller gets 503 (a transport error).
    lab.reg.flow_closed(tls3.id, lab.now)
    assert [(t.flow, _status(t.data)) for t in lab.reg.transmits_to_send()] == [(TLS1, 503)]
    # A contact nobody holds any more gets 480.
    [(flow, _, data)] = lab.feed(request("BYE", callee_contact, branch="z9hG4bKre2", cseq=4,
                                         to_tag="callee", extra=routes), TLS1)
    assert flow == TLS1 and _status(data) == 480


# -- hostile clients (issue #10) ------------------------------------------------------------

TLS3 = Flow(id=3, transport="TLS", remote=("127.0.0.1", 40007), local=LAB_TLS)


def _answered_call(lab: Lab) -> tuple[list[str], list[str]]:
    """A call 101 -> 102 answered; the caller's and the callee's Route lines."""
    out = invite(lab)
    [(_, _, data)] = lab.feed(response_to(out[1][2], 200, body=SDP), TLS2)
    ok = parsed(data)
    record_routes = ok.headers.get_all("Record-Route")
    caller = [f"Route: {r}" for r in reversed(record_routes)]
    callee = [f"Route: {r}" for r in record_routes]
    return caller, callee


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "BYE", "INFO"])
def test_a_made_up_to_tag_is_not_a_way_past_authentication(method: str) -> None:
    lab = Lab()
    lab.reg.flow_opened(TLS3)
    lab.reg.next_event()
    # From a connection nobody authenticated, to every kind of user: 102 registered, 103
    # offline, 999 unknown. The lab answers each the same way and forwards nothing.
    answers = []
    for n, user in enumerate(["102", "103", "999"]):
        data = request(method, f"sip:{user}@{DOMAIN}", branch=f"z9hG4bKtag{n}", to_user=user,
                       to_tag="madeup", from_user="666", via="SIP/2.0/TLS 127.0.0.1:40007",
                       body=SDP if method == "INVITE" else b"")
        sent = lab.feed(data, TLS3)
        assert all(f == TLS3 for f, _, _ in sent), "forwarded to a phone"
        finals = [parsed(d) for _, _, d in sent if _status(d) != 100]
        assert [type(r) for r in finals] == [SipResponse]
        final = finals[0]
        assert isinstance(final, SipResponse)
        answers.append((final.status, final.reason, final.headers.get("Server")))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][:2] == (481, "Call/Transaction Does Not Exist")
    assert answers[0][2] == "phone-sim lab"


@pytest.mark.parametrize("method", ["OPTIONS", "MESSAGE", "INVITE", "SUBSCRIBE"])
def test_known_and_unknown_users_look_the_same_without_credentials(method: str) -> None:
    lab = Lab()
    answers = []
    for n, user in enumerate(["102", "103", "999"]):
        data = request(method, f"sip:{user}@{DOMAIN}", branch=f"z9hG4bKen{n}", to_user=user)
        finals = [parsed(d) for _, _, d in lab.feed(data, TLS1) if _status(d) != 100]
        [final] = finals
        assert isinstance(final, SipResponse)
        answers.append((final.status, "Proxy-Authenticate" in final.headers))
    assert answers == [(407, True)] * 3


def test_route_tokens_serve_only_their_dialog_and_its_legs() -> None:
    lab = Lab()
    lab.reg.flow_opened(TLS3)
    caller, _callee = _answered_call(lab)
    callee_contact = "sip:102@127.0.0.1:40002;transport=tls"
    # The tokens with another Call-ID: not a dialog the lab record-routed.
    sent = lab.feed(request("BYE", callee_contact, branch="z9hG4bKo1", call_id="other",
                            cseq=5, to_tag="callee", extra=caller), TLS1)
    assert [(f, _status(d)) for f, _, d in sent] == [(TLS1, 481)]
    # The right Call-ID and tokens from a connection that is neither leg.
    sent = lab.feed(request("BYE", callee_contact, branch="z9hG4bKo2", cseq=6,
                            to_tag="callee", extra=caller, via="SIP/2.0/TLS 127.0.0.1:40007"),
                    TLS3)
    assert [(f, _status(d)) for f, _, d in sent] == [(TLS3, 481)]
    # An initial request (no To tag) with the tokens still needs credentials.
    sent = lab.feed(request("MESSAGE", callee_contact, branch="z9hG4bKo3", cseq=7,
                            extra=caller), TLS1)
    assert [(f, _status(d)) for f, _, d in sent] == [(TLS1, 407)]
    # The dialog itself still works.
    sent = lab.feed(request("BYE", callee_contact, branch="z9hG4bKo4", cseq=8,
                            to_tag="callee", extra=caller), TLS1)
    assert [(f, _status(d)) for f, _, d in sent] == [(TLS2, "req")]


def test_a_phone_that_reconnected_mid_call_can_still_hang_up() -> None:
    lab = Lab()
    _caller, callee = _answered_call(lab)
    lab.reg.flow_closed(TLS2.id, lab.now)
    tls3 = Flow(id=3, transport="TLS", remote=("127.0.0.1", 40009), local=LAB_TLS)
    lab.reg.flow_opened(tls3)
    lab.register("102", tls3, 40002)
    bye = request("BYE", "sip:101@127.0.0.1:40001;transport=tls", branch="z9hG4bKrc1",
                  from_user="102", to_user="101", to_tag="from101", extra=callee, cseq=9,
                  via="SIP/2.0/TLS 127.0.0.1:40009")
    [(flow, _, data)] = lab.feed(bye, tls3)
    assert flow == TLS1 and _status(data) == "req"
    # Someone else registered on a new connection cannot use 102's closed leg.
    tls4 = Flow(id=4, transport="TLS", remote=("127.0.0.1", 40010), local=LAB_TLS)
    lab.reg.flow_opened(tls4)
    lab.register("103", tls4, 40010)
    [(flow, _, data)] = lab.feed(bye.replace(b"z9hG4bKrc1", b"z9hG4bKrc2"), tls4)
    assert flow == tls4 and _status(data) == 481


def test_a_cancel_counts_only_from_where_the_invite_came() -> None:
    lab = Lab()
    lab.reg.flow_opened(TLS3)
    out = invite(lab)
    lab.feed(response_to(out[1][2], 180), TLS2)
    cancel = request("CANCEL", f"sip:102@{DOMAIN}", branch="z9hG4bKinv1", cseq=2)
    assert [(f, _status(d)) for f, _, d in lab.feed(cancel, TLS3)] == [(TLS3, 481)]
    assert [(f.id, _status(d)) for f, _, d in lab.feed(cancel, TLS1)] == [(1, 200), (2, "req")]


def test_one_proxy_authorization_authorizes_one_request() -> None:
    lab = Lab()
    invite(lab)  # authorized, with nc=1
    uri = f"sip:102@{DOMAIN}"
    stolen = lab.proxy_auth("INVITE", uri)
    first = lab.feed(request("INVITE", uri, branch="z9hG4bKs1", cseq=3, body=SDP,
                             extra=[f"Proxy-Authorization: {stolen}"]), TLS1)
    assert [_status(d) for _, _, d in first] == [100, "req"]  # nc=2 on the same call: fine
    # The same header again, and on another call: a replay, and a nonce of another call.
    for n, call_id in enumerate(["call1", "call2"]):
        again = lab.feed(request("INVITE", uri, branch=f"z9hG4bKs2{n}", cseq=4, body=SDP,
                                 call_id=call_id, extra=[f"Proxy-Authorization: {stolen}"]),
                         TLS1)
        assert [_status(d) for _, _, d in again] == [100, 407]
        challenge = parsed(again[1][2]).headers.get("Proxy-Authenticate") or ""
        assert "stale=true" in challenge


def test_a_proxy_digest_for_another_request_uri_is_a_bad_request() -> None:
    lab = Lab()
    invite(lab)
    auth = lab.proxy_auth("INVITE", f"sip:102@{DOMAIN}")
    out = lab.feed(request("INVITE", f"sip:103@{DOMAIN}", branch="z9hG4bKu1", cseq=5,
                           to_user="103", extra=[f"Proxy-Authorization: {auth}"]), TLS1)
    assert [_status(d) for _, _, d in out] == [100, 400]


@pytest.mark.parametrize(
    "crafted",
    [b'response="' + "é".encode() * 32 + b'"', b'uri="sip:102@lab.phone-sim.test\xff"'],
)
def test_crafted_proxy_credentials_get_400_and_leave_no_transaction(crafted: bytes) -> None:
    lab = Lab()
    invite(lab)
    uri = f"sip:102@{DOMAIN}"
    auth = f"Proxy-Authorization: {lab.proxy_auth('INVITE', uri)}".encode()
    name = crafted.split(b"=")[0]
    start = auth.index(name + b'="')
    end = auth.index(b'"', start + len(name) + 2) + 1
    bad = auth[:start] + crafted + auth[end:]
    lab.advance(100)
    assert lab.reg.proxy.transactions == 0
    for n in range(20):
        for flow in (TLS1, UDP):
            data = request("INVITE", uri, branch=f"z9hG4bKc{n}{flow.transport}",
                           call_id=f"c{n}", body=SDP)
            data = data.replace(b"Content-Length:", bad + b"\r\nContent-Length:")
            out = lab.feed(data, flow)
            assert [_status(d) for _, _, d in out] == [100, 400]
    lab.advance(100)
    assert lab.reg.proxy.transactions == 0
