"""The registrar core alone, in memory, with a fake clock (RFC 3261 §10.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.lab.registrar import (
    TIMER_J,
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRefused,
    BindingRemoved,
    Flow,
    FlowLost,
    LabConfigError,
    LabUser,
    PhoneAnswered,
    PhoneSilent,
    PhoneUnreachable,
    Registrar,
    RegistrarConfig,
    UserTable,
)
from phone_sim.sip.framer import KeepAlivePingReceived, MessageRejected, StreamFramer
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse, parse_message
from tests.lab.sipclient import RegisterClient

DOMAIN = "lab.phone-sim.test"
TLS1 = Flow(id=1, transport="TLS", remote=("127.0.0.1", 40001), local=("127.0.0.1", 5061))
TLS2 = Flow(id=2, transport="TLS", remote=("127.0.0.1", 40002), local=("127.0.0.1", 5061))
UDP = Flow(id=9, transport="UDP", remote=("127.0.0.1", 40003), local=("127.0.0.1", 5060))


def make(**config: object) -> Registrar:
    users = [
        LabUser(username="101", password="1234"),
        LabUser(username="102", password="secret"),
        LabUser(username="103", password="pw3", authname="auth103"),
    ]
    reg = Registrar(users, RegistrarConfig(realm=DOMAIN, **config))  # type: ignore[arg-type]
    reg.flow_opened(TLS1)
    reg.flow_opened(TLS2)
    return reg


def send(reg: Registrar, data: bytes, flow: Flow = TLS1, now: float = 0.0) -> list[bytes]:
    if flow.reliable:
        for event in StreamFramer().feed(data):
            reg.receive_message(event, flow, now)
    else:
        reg.receive_datagram(data, flow, now)
    out = reg.transmits_to_send()
    for transmit in out:
        assert transmit.flow == flow
    return [t.data for t in out]


def ask(
    reg: Registrar, client: RegisterClient, data: bytes, flow: Flow = TLS1, now: float = 0.0
) -> SipResponse:
    out = send(reg, data, flow, now)
    assert len(out) == 1
    return client.take(out[0])


def register(
    reg: Registrar, client: RegisterClient, flow: Flow = TLS1, now: float = 0.0, **kwargs: object
) -> SipResponse:
    """REGISTER, answering the challenge once, as a phone does."""
    response = ask(reg, client, client.register(**kwargs), flow, now)  # type: ignore[arg-type]
    if response.status == 401:
        response = ask(reg, client, client.register(**kwargs), flow, now)  # type: ignore[arg-type]
    return response


def events(reg: Registrar) -> list[object]:
    out: list[object] = []
    while (event := reg.next_event()) is not None:
        out.append(event)
    return out


# -- authentication ---------------------------------------------------------------------------


def test_register_is_challenged_then_bound() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    first = ask(reg, phone, phone.register())
    assert first.status == 401
    assert phone.challenge is not None
    assert phone.challenge.realm == DOMAIN
    assert phone.challenge.qop == ("auth",)
    assert first.to_tag  # RFC 3261 8.2.6.2
    assert first.headers.get("Server") == "phone-sim lab"
    ok = ask(reg, phone, phone.register(expires=300))
    assert ok.status == 200
    [contact] = ok.contacts
    assert contact.uri.user == "101" and contact.uri.port == 5099
    assert contact.expires == 300
    [binding] = reg.bindings(f"sip:101@{DOMAIN}")
    assert binding.flow == TLS1 and binding.flow_alive
    assert binding.expires_at == 300.0
    assert binding.user_agent == "Digium D40 1_4_0_0_57389"
    assert reg.bindings("101") == [binding]
    assert [type(e) for e in events(reg)] == [BindingAdded]


def test_wrong_password_is_challenged_again_and_reported() -> None:
    reg = make()
    phone = RegisterClient("101", "nope")
    assert ask(reg, phone, phone.register()).status == 401
    again = ask(reg, phone, phone.register())
    assert again.status == 401
    assert "stale" not in (again.headers.get("WWW-Authenticate") or "")
    assert reg.bindings("101") == []
    [refused] = events(reg)
    assert isinstance(refused, BindingRefused)
    assert refused.status == 401 and refused.reason == "wrong response digest"
    assert "nope" not in repr(refused)


def test_unknown_user_looks_like_a_wrong_password() -> None:
    reg = make()
    phone = RegisterClient("999", "1234")
    assert register(reg, phone).status == 401


def test_old_nonce_gets_stale_challenge() -> None:
    reg = make(nonce_lifetime=30.0)
    phone = RegisterClient("101", "1234")
    assert register(reg, phone, now=0.0).status == 200
    late = ask(reg, phone, phone.register(), now=31.0)
    assert late.status == 401
    assert "stale=true" in (late.headers.get("WWW-Authenticate") or "")
    assert ask(reg, phone, phone.register(), now=31.0).status == 200


def test_authname_differs_from_user() -> None:
    reg = make()
    phone = RegisterClient("103", "pw3", authname="auth103")
    assert register(reg, phone).status == 200
    assert len(reg.bindings("103")) == 1


def test_someone_elses_aor_is_forbidden() -> None:
    reg = make()
    # 102 authenticates correctly but tries to register 101's AOR (RFC 3261 10.3 step 3).
    phone = RegisterClient("101", "secret", authname="102")
    response = register(reg, phone)
    assert response.status == 403
    assert reg.bindings("101") == []


def test_open_registrar_still_knows_its_users() -> None:
    reg = make(require_auth=False)
    assert register(reg, RegisterClient("101", "")).status == 200
    assert register(reg, RegisterClient("555", "")).status == 404


def test_foreign_domain_is_not_found() -> None:
    reg = make(domains=frozenset({DOMAIN}))
    assert register(reg, RegisterClient("101", "1234", domain="elsewhere.test")).status == 404
    assert register(reg, RegisterClient("101", "1234")).status == 200


# -- expiry -----------------------------------------------------------------------------------


def test_too_brief_gets_423_with_min_expires() -> None:
    reg = make(min_expires=60)
    phone = RegisterClient("101", "1234")
    response = register(reg, phone, expires=30)
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"
    assert reg.bindings("101") == []
    assert register(reg, phone, expires=60).status == 200


def test_too_long_is_shortened_and_contact_param_wins() -> None:
    reg = make(max_expires=600)
    phone = RegisterClient("101", "1234")
    assert register(reg, phone, expires=7200).contacts[0].expires == 600
    response = register(reg, phone, expires=7200, contacts=[phone.contact() + ";expires=120"])
    assert response.contacts[0].expires == 120
    assert reg.bindings("101")[0].contact.param("expires") is None


def test_no_expires_anywhere_uses_the_default() -> None:
    reg = make(default_expires=900)
    phone = RegisterClient("101", "1234")
    assert register(reg, phone, expires=None).contacts[0].expires == 900


def test_binding_expires_on_the_clock_and_refresh_moves_the_deadline() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    register(reg, phone, expires=100, now=0.0)
    assert reg.get_timer() == 100.0
    register(reg, phone, expires=100, now=50.0)  # refresh: the old deadline is stale
    events(reg)
    assert reg.get_timer() == 150.0
    reg.handle_timer(100.0)
    assert len(reg.bindings("101")) == 1
    assert events(reg) == []
    reg.handle_timer(150.0)
    assert reg.bindings("101") == []
    [expired] = events(reg)
    assert isinstance(expired, BindingExpired) and expired.binding.aor == f"sip:101@{DOMAIN}"
    assert reg.get_timer() is None


def test_response_lists_remaining_time() -> None:
    reg = make()
    a = RegisterClient("101", "1234", local=("127.0.0.1", 5001))
    b = RegisterClient("101", "1234", local=("127.0.0.1", 5002))
    register(reg, a, expires=300, now=0.0)
    response = register(reg, b, expires=600, now=100.0)
    assert sorted(c.expires or 0 for c in response.contacts) == [200, 600]


# -- contacts ---------------------------------------------------------------------------------


def test_several_contacts_per_aor_and_unregister_one() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    other = RegisterClient("101", "1234", local=("127.0.0.1", 6000))
    two = [phone.contact(5001), phone.contact(5002)]
    assert len(register(reg, phone, contacts=two).contacts) == 2
    assert len(register(reg, other, flow=TLS2).contacts) == 3
    assert len(reg.bindings("101")) == 3
    events(reg)
    response = register(reg, phone, contacts=[phone.contact(5001)], expires=0)
    assert response.status == 200
    assert len(response.contacts) == 2
    assert [type(e) for e in events(reg)] == [BindingRemoved]


def test_star_removes_everything_only_with_expires_zero_and_alone() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    register(reg, phone, contacts=[phone.contact(5001), phone.contact(5002)])
    assert register(reg, phone, contacts=["*"], expires=300).status == 400
    assert register(reg, phone, contacts=["*", phone.contact()], expires=0).status == 400
    assert len(reg.bindings("101")) == 2
    response = register(reg, phone, contacts=["*"], expires=0)
    assert response.status == 200
    assert response.contacts == []
    assert reg.bindings("101") == []


def test_query_without_contact_lists_bindings() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    register(reg, phone)
    response = register(reg, phone, contacts=[], expires=None)
    assert response.status == 200
    assert len(response.contacts) == 1


def test_out_of_order_cseq_fails_whole_request() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    register(reg, phone, contacts=[phone.contact(5001)])
    phone.cseq = 0  # same Call-ID, lower CSeq: RFC 3261 10.3 step 7
    response = register(reg, phone, contacts=[phone.contact(5002), phone.contact(5001)])
    assert response.status == 500
    assert [b.contact.uri.port for b in reg.bindings("101")] == [5001]  # all or nothing


def test_too_many_contacts_forbidden() -> None:
    reg = make(max_contacts_per_aor=2)
    phone = RegisterClient("101", "1234")
    register(reg, phone, contacts=[phone.contact(5001), phone.contact(5002)])
    assert register(reg, phone, contacts=[phone.contact(5003)]).status == 403
    # replacing one is fine
    assert register(reg, phone, contacts=[phone.contact(5002)]).status == 200


def test_instance_id_replaces_binding_from_new_port() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    inst = ';+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>";reg-id=1'
    register(reg, phone, contacts=[phone.contact(5001) + inst])
    other = RegisterClient("101", "1234")  # a reboot: new Call-ID, new port
    register(reg, other, flow=TLS2, contacts=[other.contact(5002) + inst])
    [binding] = reg.bindings("101")
    assert binding.contact.uri.port == 5002
    assert binding.flow == TLS2
    assert binding.reg_id == "1"


def test_too_many_contacts_in_one_request() -> None:
    reg = make(max_contacts_per_request=2)
    phone = RegisterClient("101", "1234")
    contacts = [phone.contact(p) for p in (5001, 5002, 5003)]
    assert register(reg, phone, contacts=contacts).status == 400


# -- flows ------------------------------------------------------------------------------------


def test_closed_flow_keeps_binding_until_expiry_then_moves() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    register(reg, phone, flow=TLS1, expires=300)
    events(reg)
    reg.flow_closed(TLS1.id, 10.0)
    [lost] = events(reg)
    assert isinstance(lost, FlowLost) and lost.aors == (f"sip:101@{DOMAIN}",)
    [binding] = reg.bindings("101")
    assert not binding.flow_alive  # kept, but unreachable (RFC 5626 spirit)
    register(reg, phone, flow=TLS2, now=20.0)
    [binding] = reg.bindings("101")
    assert binding.flow == TLS2 and binding.flow_alive
    assert [type(e) for e in events(reg)] == [BindingRefreshed]
    reg.flow_closed(TLS1.id, 30.0)  # again: nothing bound there any more
    assert events(reg) == []


def test_udp_bindings_are_always_alive() -> None:
    reg = make()
    phone = RegisterClient("101", "1234", transport="UDP")
    assert register(reg, phone, flow=UDP).status == 200
    assert reg.bindings("101")[0].flow_alive


# -- other requests and bad input -------------------------------------------------------------


def test_keepalive_ping_gets_pong() -> None:
    reg = make()
    reg.receive_message(KeepAlivePingReceived(), TLS1, 0.0)
    [pong] = reg.transmits_to_send()
    assert pong.data == b"\r\n" and pong.flow == TLS1


def test_options_is_answered() -> None:
    reg = make()
    data = (
        b"OPTIONS sip:lab.phone-sim.test SIP/2.0\r\n"
        b"Via: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK1\r\n"
        b"From: <sip:101@lab.phone-sim.test>;tag=a\r\nTo: <sip:lab.phone-sim.test>\r\n"
        b"Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    [out] = send(reg, data)
    response = parse_message(out)
    assert isinstance(response, SipResponse) and response.status == 200
    assert "REGISTER" in (response.headers.get_all("Allow"))


def test_malformed_request_gets_400_and_response_is_dropped() -> None:
    reg = make()
    bad = (
        b"REGISTER sip:lab.phone-sim.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK3\r\n"
        b"From: <sip:101@lab.phone-sim.test>;tag=a\r\nTo: <sip:101@lab.phone-sim.test\r\n"
        b"Call-ID: m1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    [out] = send(reg, bad, UDP)
    # The To is copied as it came (RFC 3261 8.2.6.2), so only the status line is checked.
    assert out.startswith(b"SIP/2.0 400 Bad Request (missing '>' in To)\r\n")
    stray = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK9\r\nContent-Length: 0\r\n\r\n"
    )
    assert send(reg, stray, UDP) == []
    assert send(reg, b"\x16\x03\x01 garbage", UDP) == []
    assert reg.stats["malformed"] >= 2


def test_missing_call_id_gets_400() -> None:
    reg = make()
    phone = RegisterClient("101", "1234", transport="UDP")
    data = phone.register().replace(f"Call-ID: {phone.call_id}\r\n".encode(), b"")
    [out] = send(reg, data, UDP)
    response = parse_message(out)
    assert isinstance(response, SipResponse) and response.status == 400


def test_udp_retransmission_gets_the_same_response_until_timer_j() -> None:
    reg = make()
    phone = RegisterClient("101", "1234", transport="UDP")
    request = phone.register(branch="z9hG4bKPjretransmit")
    [first] = send(reg, request, UDP, now=0.0)
    [again] = send(reg, request, UDP, now=1.0)
    assert again == first
    assert reg.stats["retransmissions"] == 1
    assert reg.get_timer() == TIMER_J
    reg.handle_timer(TIMER_J)
    [fresh] = send(reg, request, UDP, now=TIMER_J)
    assert fresh != first  # a new transaction: a new challenge


def test_udp_response_goes_to_rport_or_sent_by() -> None:
    reg = make()
    phone = RegisterClient("101", "1234", transport="UDP", local=("127.0.0.1", 5077))
    reg.receive_datagram(phone.register(), UDP, 0.0)
    [t] = reg.transmits_to_send()
    assert t.destination == UDP.remote  # rport: the source port
    response = parse_message(t.data)
    assert response.top_via.param("rport") == str(UDP.remote[1])
    phone.rport = False
    reg.receive_datagram(phone.register(), UDP, 0.0)
    [t] = reg.transmits_to_send()
    assert t.destination == ("127.0.0.1", 5077)  # RFC 3261 18.2.2: the sent-by port


@given(st.binary(max_size=600))
def test_random_datagrams_never_raise(data: bytes) -> None:
    reg = make()
    reg.receive_datagram(data, UDP, 0.0)
    for t in reg.transmits_to_send():
        assert t.data.startswith(b"SIP/2.0 ")


@given(st.lists(st.sampled_from(["reg", "unreg", "star", "close", "tick"]), max_size=30))
def test_model_of_one_phone(ops: list[str]) -> None:
    """Random register/unregister/close/time sequences keep the table consistent."""
    reg = make()
    phone = RegisterClient("101", "1234")
    now = 0.0
    expected_until: float | None = None
    for op in ops:
        if op == "reg":
            assert register(reg, phone, now=now, expires=120).status == 200
            expected_until = now + 120
        elif op == "unreg":
            assert register(reg, phone, now=now, expires=0).status == 200
            expected_until = None
        elif op == "star":
            assert register(reg, phone, now=now, contacts=["*"], expires=0).status == 200
            expected_until = None
        elif op == "close":
            reg.flow_closed(TLS1.id, now)
            reg.flow_opened(TLS1)
        else:
            now += 70.0
            timer = reg.get_timer()
            if timer is not None and timer <= now:
                reg.handle_timer(now)
            if expected_until is not None and expected_until <= now:
                expected_until = None
        bindings = reg.bindings("101")
        assert len(bindings) == (0 if expected_until is None else 1)
        if bindings:
            assert bindings[0].expires_at == expected_until


# -- configuration and secrets ----------------------------------------------------------------


def test_user_specs_and_secrets_stay_out_of_repr() -> None:
    user = LabUser.parse("101:s3cret:auth101")
    assert (user.username, user.authname, user.password) == ("101", "auth101", "s3cret")
    assert "s3cret" not in repr(user)
    table = UserTable({"101": "s3cret"})
    assert "s3cret" not in repr(table)
    assert "s3cret" not in repr(Registrar(table))
    with pytest.raises(LabConfigError, match="USER:PASSWORD"):
        LabUser.parse("101")
    with pytest.raises(LabConfigError, match="needs a password"):
        LabUser.parse("101:")
    with pytest.raises(LabConfigError, match="twice"):
        UserTable([LabUser(username="1", password="a"), LabUser(username="1", password="b")])


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"min_expires": 0}, "min_expires"),
        ({"min_expires": 100, "max_expires": 50}, "max_expires"),
        ({"default_expires": 10}, "default_expires"),
        ({"max_contacts_per_aor": 0}, "contact limits"),
        ({"realm": 'a"b'}, "realm"),
    ],
)
def test_bad_config_is_named(config: dict[str, object], match: str) -> None:
    with pytest.raises(LabConfigError, match=match):
        RegistrarConfig(**config)  # type: ignore[arg-type]


_VALID = RegisterClient("101", "1234").register()


@given(
    st.lists(
        st.one_of(
            st.just(_VALID),
            st.just(b"\r\n\r\n"),
            st.binary(max_size=80),
            st.builds(lambda n: _VALID[:n], st.integers(0, len(_VALID))),
        ),
        max_size=8,
    ),
    st.integers(1, 64),
)
def test_random_streams_never_raise(parts: list[bytes], chunk: int) -> None:
    """What the asyncio shell does with a connection's bytes, fed arbitrary streams."""
    reg = make()
    framer = StreamFramer()
    data = b"".join(parts)
    for i in range(0, len(data), chunk):
        try:
            framed = framer.feed(data[i : i + chunk])
        except SipParseError as exc:
            reg.receive_message(MessageRejected(error=exc), TLS1, 0.0)
            break
        for event in framed:
            reg.receive_message(event, TLS1, 0.0)
    for t in reg.transmits_to_send():
        assert t.data == b"\r\n" or t.data.startswith(b"SIP/2.0 ")


# -- requests to phones -----------------------------------------------------------------------


def test_request_to_phone_goes_over_its_flow_and_is_answered() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    register(reg, phone, flow=TLS2)
    [binding] = reg.bindings("101")
    events(reg)
    request_id = reg.send_request(
        binding, "NOTIFY", 0.0, headers=[("Event", "check-sync"), ("Subscription-State", "active")]
    )
    [out] = reg.transmits_to_send()
    assert out.flow == TLS2
    request = parse_message(out.data)
    assert isinstance(request, SipRequest)
    assert request.method == "NOTIFY" and request.uri == binding.uri
    assert request.headers.get("Event") == "check-sync"
    assert request.top_via.branch == request_id
    assert reg.get_timer() is not None  # Timer F
    # a 1xx does not end it; a stray response (other branch) is dropped
    reg.receive_message(request.create_response(100), TLS2, 0.1)
    stray = request.create_response(200)
    stray.headers.set("Via", "SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKother")
    reg.receive_message(stray, TLS2, 0.1)
    assert events(reg) == []
    reg.receive_message(request.create_response(200), TLS2, 0.2)
    [answered] = events(reg)
    assert isinstance(answered, PhoneAnswered)
    assert answered.request_id == request_id and answered.response.status == 200
    assert reg.transmits_to_send() == []  # no retransmission on a connection


def test_request_over_udp_is_retransmitted_then_times_out() -> None:
    reg = make()
    phone = RegisterClient("101", "1234", transport="UDP")
    register(reg, phone, flow=UDP)
    [binding] = reg.bindings("101")
    events(reg)
    request_id = reg.send_request(binding, "OPTIONS", 0.0, timeout=5.0)
    [first] = reg.transmits_to_send()
    assert first.destination == UDP.remote  # where the REGISTER came from
    sent_at = []
    while (at := reg.get_timer()) is not None and at <= 5.0:
        reg.handle_timer(at)
        if reg.transmits_to_send():
            sent_at.append(at)
    assert sent_at == [0.5, 1.5, 3.5]  # Timer E: 0.5, 1, 2 ... (RFC 3261 17.1.2.2)
    [silent] = events(reg)
    assert isinstance(silent, PhoneSilent) and silent.request_id == request_id


def test_request_to_a_closed_flow_is_refused() -> None:
    reg = make()
    register(reg, RegisterClient("101", "1234"), flow=TLS1)
    reg.flow_closed(TLS1.id, 1.0)
    [binding] = reg.bindings("101")
    with pytest.raises(PhoneUnreachable, match="closed"):
        reg.send_request(binding, "OPTIONS", 1.0)
    with pytest.raises(LabConfigError, match="bad SIP method"):
        reg.flow_opened(TLS1)
        reg.send_request(binding, "options", 1.0)


def test_a_field_unreadable_on_demand_gets_400(monkeypatch: pytest.MonkeyPatch) -> None:
    reg = make()

    def unreadable(*_args: object) -> None:
        raise SipParseError("bad Something header")

    monkeypatch.setattr(reg, "_register", unreadable)
    phone = RegisterClient("101", "1234")
    [out] = send(reg, phone.register())
    assert out.startswith(b"SIP/2.0 400 Bad Request (bad Something header)\r\n")


# -- hostile clients (issue #10) ------------------------------------------------------------


def _authorization(data: bytes) -> str:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    value = message.headers.get("Authorization")
    assert value is not None
    return value


def test_a_captured_authorization_replayed_on_another_connection_is_refused() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    assert ask(reg, phone, phone.register()).status == 401
    authorized = phone.register()
    assert ask(reg, phone, authorized).status == 200
    # An attacker replays it on its own connection with its own Call-ID and Contact.
    attacker = RegisterClient("101", "x", call_id="attacker-call", contact_user="attacker",
                              local=("127.0.0.1", 6666))
    replay = attacker.register(authorize=False, extra=[
        f"Authorization: {_authorization(authorized)}"])
    answer = ask(reg, attacker, replay, TLS2, now=1.0)
    assert answer.status == 401
    assert "stale=true" in (answer.headers.get("WWW-Authenticate") or "")
    assert [b.contact.uri.user for b in reg.bindings("101")] == ["101"]
    # The same replayed over UDP (a new transaction, not a retransmission) fares no better.
    assert ask(reg, attacker, replay.replace(b"z9hG4bKPj", b"z9hG4bKPu"), UDP,
               now=2.0).status == 401
    assert len(reg.bindings("101")) == 1


def test_a_digest_for_another_request_uri_is_a_bad_request() -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    assert ask(reg, phone, phone.register()).status == 401
    authorized = phone.register()
    moved = authorized.replace(b"REGISTER sip:lab.phone-sim.test SIP/2.0",
                               b"REGISTER sip:127.0.0.1 SIP/2.0", 1)
    answer = ask(reg, phone, moved)
    assert answer.status == 400
    assert "digest uri does not match the Request-URI" in answer.reason
    assert reg.bindings("101") == []


@pytest.mark.parametrize(
    "crafted",
    [
        b'response="' + "é".encode() * 32 + b'"',
        b'uri="sip:lab.phone-sim.test\xff"',
        b'username="1\xff01"',
    ],
)
def test_crafted_credentials_get_400_and_nothing_raises(crafted: bytes) -> None:
    reg = make()
    phone = RegisterClient("101", "1234")
    assert ask(reg, phone, phone.register()).status == 401
    authorized = phone.register()
    name = crafted.split(b"=")[0]
    start = authorized.index(name + b'="', authorized.index(b"Authorization:"))
    end = authorized.index(b'"', start + len(name) + 2) + 1
    bad = authorized[:start] + crafted + authorized[end:]
    for flow in (TLS1, UDP):
        [out] = send(reg, bad.replace(b"z9hG4bK", b"z9hG4bK" + flow.transport.encode()), flow)
        assert out.startswith(b"SIP/2.0 400 "), out[:80]
    assert reg.bindings("101") == []


def test_an_internal_error_is_a_500_and_one_log_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reg = make()

    def broken(*_args: object) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(reg, "_register", broken)
    phone = RegisterClient("101", "1234")
    with caplog.at_level("INFO", logger="phone_sim.lab"):
        [out] = send(reg, phone.register())
    assert out.startswith(b"SIP/2.0 500 Server Internal Error\r\n")
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "TypeError: a bug" in record.getMessage() and record.exc_info is None
