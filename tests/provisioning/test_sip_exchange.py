"""The SIP exchange's two cores wired together in memory (no sockets, a fake clock): refusals,
bad requests, lost messages, and what each side does with what is not its business."""

from __future__ import annotations

import random

from phone_sim.account import SipTransport
from phone_sim.firmware import profile_for
from phone_sim.provisioning.asterisk_conf import parse_asterisk_conf
from phone_sim.provisioning.dpma import REFUSED, ConfigRequestAnswered, Dpma, DpmaSite
from phone_sim.provisioning.dpma_conf import load_dpma_conf
from phone_sim.provisioning.errors import ConfigFetchError
from phone_sim.provisioning.exchange import CONFIG_METHOD, ConfigRequest, PhoneSimExchange
from phone_sim.provisioning.sip_client import ConfigFetched, ConfigFetchFailed, SipConfigClient
from phone_sim.provisioning.sip_server import DpmaSipServer, ExchangeRejected, ReplyNotDelivered
from phone_sim.provisioning.urls import SipConfigUrl
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.message import SipRequest, SipResponse, parse_message
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import UaConfig, UserAgent
from phone_sim.sip.uri import SipUri

PHONE = ("10.0.0.20", 40000)
SERVER = ("10.0.0.10", 5060)
MAC = "000fd3010203"
CONF = """[general]
config_auth=pin
[lan]
type=network
cidr=10.0.0.0/8
[101]
type=line
[p]
type=phone
mac=000fd3010203
pin=1111
line=101
"""


def _server(transport: str = "UDP") -> DpmaSipServer:
    conf = load_dpma_conf(parse_asterisk_conf(CONF, file="t.conf"), passwords={"101": "pw"})
    dpma = Dpma(conf, DpmaSite(address=SERVER[0], sip_ports={transport.lower(): SERVER[1]}))
    return DpmaSipServer(dpma, {transport: SERVER}, rng=random.Random(7))


def _client(pin: str | None, transport: SipTransport = SipTransport.UDP,
            timeout: float = 10.0) -> SipConfigClient:
    return SipConfigClient(
        request=ConfigRequest(method=CONFIG_METHOD, mac=MAC, model="D65", firmware="2_9_2",
                              pin=pin),
        server=SipConfigUrl(host=SERVER[0], port=SERVER[1], transport=transport),
        local=PHONE, signature=PhoneSignature.for_profile(profile_for("D65", "2_9_2"),
                                                          extra_methods=("MESSAGE",)),
        timeout=timeout, rng=random.Random(3),
    )


def _run(client: SipConfigClient, server: DpmaSipServer, now: float = 0.0,
         drop_to_phone: int = 0) -> list[object]:
    """Move messages both ways until quiet; returns the server's events."""
    client.start(now, SERVER)
    events: list[object] = []
    for _ in range(10):
        moved = False
        for data, _dest in client.data_to_send():
            moved = True
            message = parse_message(data)
            if server.wants(message):
                server.receive_message(message, "UDP", PHONE, now)
        for _transport, data, _dest in server.data_to_send():
            moved = True
            if drop_to_phone:
                drop_to_phone -= 1
                continue
            client.receive_datagram(data, SERVER, now)
        while (event := server.next_event()) is not None:
            events.append(event)
        if not moved:
            break
    return events


def test_a_good_pin_gets_the_configuration() -> None:
    client, server = _client("1111"), _server()
    events = _run(client, server)
    fetched = client.next_event()
    assert isinstance(fetched, ConfigFetched) and fetched.reply.ok
    assert [type(e) for e in events] == [ConfigRequestAnswered]


def test_a_wrong_pin_is_a_reply_not_an_error_status() -> None:
    client, server = _client("2222"), _server()
    _run(client, server)
    fetched = client.next_event()
    assert isinstance(fetched, ConfigFetched)
    assert (fetched.reply.error_code, fetched.reply.error_message) == ("refused", REFUSED)


def test_a_lost_reply_is_resent_on_udp() -> None:
    client, server = _client("1111"), _server()
    _run(client, server, drop_to_phone=2)  # the 200 and the answer MESSAGE are lost
    assert client.next_event() is None
    # RFC 3261 17.1.2.2: the server's MESSAGE is retransmitted after T1
    server.handle_timer(0.5)
    for _transport, data, _dest in server.data_to_send():
        client.receive_datagram(data, SERVER, 0.5)
    assert isinstance(client.next_event(), ConfigFetched)
    for data, _dest in client.data_to_send():
        server.receive_message(parse_message(data), "UDP", PHONE, 0.5)
    assert server.next_event() is None


def test_the_phone_gives_up_after_its_timeout() -> None:
    client = _client("1111", timeout=2.0)
    client.start(0.0, SERVER)
    while (at := client.get_timer()) is not None and at <= 2.0:
        client.handle_timer(at)
    event = client.next_event()
    assert isinstance(event, ConfigFetchFailed)
    assert isinstance(event.error, ConfigFetchError)
    assert "no configuration from sip:proxy@10.0.0.10:5060;transport=udp within 2 s" in str(
        event.error)


def test_the_phone_never_answers_its_reply() -> None:
    client, server = _client("1111"), _server()
    client.start(0.0, SERVER)
    for data, _ in client.data_to_send():
        server.receive_message(parse_message(data), "UDP", PHONE, 0.0)
    server.data_to_send()  # lost on the way
    now = 0.0
    while (at := server.get_timer()) is not None and at < 40:
        now = at
        server.handle_timer(now)
        server.data_to_send()
    events = []
    while (event := server.next_event()) is not None:
        events.append(event)
    assert isinstance(events[-1], ReplyNotDelivered) and events[-1].reason == "no answer"


def _message(body: bytes, content_type: str, *, user: str = "proxy") -> SipRequest:
    ua = UserAgent(UaConfig(local_host=PHONE[0], local_port=PHONE[1]))
    uri = SipUri("sip", user, None, SERVER[0], SERVER[1], ())
    request = ua.create_request("MESSAGE", uri, from_=NameAddr(SipUri("sip", MAC, None,
                                                                      SERVER[0], None, ())),
                                to=NameAddr(uri), body=body, content_type=content_type)
    ua.send_request(request, 0.0, destination=SERVER)
    (data, _), = ua.data_to_send()
    parsed = parse_message(data)
    assert isinstance(parsed, SipRequest)
    return parsed


def _answer(server: DpmaSipServer, message: SipRequest) -> SipResponse:
    assert server.wants(message)
    server.receive_message(message, "UDP", PHONE, 0.0)
    (_, data, _), = server.data_to_send()
    response = parse_message(data)
    assert isinstance(response, SipResponse)
    return response


def test_bad_requests_get_400_and_415_and_no_reply() -> None:
    server = _server()
    bad = _answer(server, _message(b"<request/>", PhoneSimExchange.content_type))
    assert bad.status == 400
    rejected = server.next_event()
    assert isinstance(rejected, ExchangeRejected) and rejected.status == 400
    wrong_type = _answer(server, _message(b"hello", "text/plain"))
    assert wrong_type.status == 415
    assert wrong_type.headers.get("Accept") == PhoneSimExchange.content_type
    bomb = (b'<!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><request>&b;</request>')
    assert _answer(server, _message(bomb, PhoneSimExchange.content_type)).status == 400


def test_the_server_only_takes_its_own_messages() -> None:
    server = _server()
    assert not server.wants(_message(b"hi", "text/plain", user="101"))
    stray = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: not-ours\r\n"
        b"CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n")
    assert not server.wants(stray)


def test_the_phone_refuses_messages_that_are_not_its_reply() -> None:
    client = _client("1111")
    client.start(0.0, SERVER)
    client.data_to_send()
    intruder = _message(b"<response/>", PhoneSimExchange.content_type, user=MAC)
    client.receive_datagram(bytes(intruder), ("10.6.6.6", 5060), 0.1)
    (data, _), = client.data_to_send()
    response = parse_message(data)
    assert isinstance(response, SipResponse) and response.status == 403
    assert client.next_event() is None


def test_an_error_status_ends_the_exchange() -> None:
    client = _client("1111")
    client.start(0.0, SERVER)
    (data, _), = client.data_to_send()
    request = parse_message(data)
    assert isinstance(request, SipRequest)
    response = request.create_response(404, to_tag="x")
    client.receive_datagram(bytes(response), SERVER, 0.1)
    event = client.next_event()
    assert isinstance(event, ConfigFetchFailed)
    assert "answered the configuration MESSAGE with 404" in str(event.error)
    assert "is it a DPMA server" in str(event.error)


def test_no_secret_in_repr() -> None:
    client, server = _client("1111"), _server()
    _run(client, server)
    event = client.next_event()
    assert isinstance(event, ConfigFetched) and event.reply.document is not None
    assert b'password="pw"' in event.reply.document
    for text in (repr(event), repr(client.request), repr(server.dpma.conf)):
        assert 'password="pw"' not in text and "'pw'" not in text and "1111" not in text
