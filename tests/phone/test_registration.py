"""Registration, through the sans-I/O phone core, with a fake clock and an in-memory registrar.

The registrar here answers REGISTER with a real digest challenge (the SIP core's
``DigestServer``) and grants ``min(asked, max_expires)``; the network is a dict of which
hosts are up. Addresses are from the documentation range and never touch a socket.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.errors import PhoneSimError
from phone_sim.firmware import profile_for
from phone_sim.phone.config import PhoneConfig
from phone_sim.phone.core import (
    CloseTransport,
    OpenTransport,
    PhoneCore,
    phone_signature,
)
from phone_sim.phone.events import (
    CallArrived,
    ConnectionDropped,
    FailedOver,
    MessageReceived,
    PhoneEvent,
    PhoneStopped,
    RegistrationFailed,
    RegistrationSucceeded,
    ReprovisionRequested,
    RequestAnswered,
    Unregistered,
)
from phone_sim.phone.registration import (
    AuthenticationRefused,
    RegistrationRefused,
    RegistrationSettings,
    RegistrationTimeout,
    RegState,
)
from phone_sim.sip.message import SipRequest, SipResponse, parse_message
from phone_sim.sip.ua import Address
from tests.phone.fakenet import PHONE_ADDR, FakeRegistrar, Net

PROFILE = profile_for("D65", "2_9_22")
PRIMARY = "192.0.2.1"
ALTERNATE = "192.0.2.2"


def _account(
    *, transport: SipTransport = SipTransport.UDP, password: str = "secret",
    alternate: bool = False, reregister: int = 300, retry: float = 30.0, num_retries: int = 2,
) -> Account:
    def host(server: str) -> SipHost:
        return SipHost(server=server, port=5060, transport=transport, reregister=reregister,
                       retry=retry, num_retries=num_retries)

    return Account(
        username="101", password=password, host_primary=host(PRIMARY),
        host_alternate=host(ALTERNATE) if alternate else None, domain="pbx.test",
    )


def _core(account: Account, *, seed: int = 7, **settings: float | bool) -> PhoneCore:
    config = PhoneConfig(profile=PROFILE, accounts=(account,),
                         registration=RegistrationSettings(**settings))  # type: ignore[arg-type]
    return PhoneCore(config, signature=phone_signature(PROFILE), rng=random.Random(seed))


def _net(account: Account, *, jitter: float = 0.0, **settings: float | bool) -> tuple[
    Net, FakeRegistrar, FakeRegistrar
]:
    primary = FakeRegistrar((PRIMARY, 5060))
    alternate = FakeRegistrar((ALTERNATE, 5060))
    core = _core(account, jitter=jitter, **settings)
    net = Net(core, primary, alternate)
    core.start(net.now)
    return net, primary, alternate


# -- registering ------------------------------------------------------------------------------


def test_registers_after_the_digest_challenge() -> None:
    net, primary, _ = _net(_account())
    net.pump()
    assert net.reg.state is RegState.REGISTERED
    ok = net.of(RegistrationSucceeded)
    assert len(ok) == 1 and ok[0].expires == 300 and not ok[0].refresh
    first, second = primary.seen
    assert "Authorization" not in first.headers and "Authorization" in second.headers
    assert first.call_id == second.call_id
    assert second.cseq.seq == first.cseq.seq + 1
    assert first.headers.get("Expires") == "300"
    assert str(first.uri) == "sip:pbx.test"
    assert first.headers.get("User-Agent") == PROFILE.user_agent
    assert list(primary.bindings) == [net.contact]


def test_refreshes_before_expiry_with_same_call_id_and_higher_cseq() -> None:
    net, primary, _ = _net(_account(reregister=60))
    net.pump()
    # Granted 60 s: refresh 5 s before expiry (pjsip's margin), i.e. at 55 s.
    net.advance(54.9)
    assert len(net.of(RegistrationSucceeded)) == 1
    net.advance(0.2)
    ok = net.of(RegistrationSucceeded)
    assert [e.refresh for e in ok] == [False, True]
    calls = {r.call_id for r in primary.seen}
    assert len(calls) == 1
    seqs = [r.cseq.seq for r in primary.seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_server_granted_expiry_rules_the_refresh() -> None:
    account = _account(reregister=3600)
    net, primary, _ = _net(account)
    primary.max_expires = 120
    net.pump()
    assert net.of(RegistrationSucceeded)[0].expires == 120
    net.advance(114.0)
    assert len(net.of(RegistrationSucceeded)) == 1
    net.advance(1.5)
    assert len(net.of(RegistrationSucceeded)) == 2


def test_short_expiry_refreshes_half_way() -> None:
    net, _primary, _ = _net(_account(reregister=4))
    net.pump()
    net.advance(1.9)
    assert len(net.of(RegistrationSucceeded)) == 1
    net.advance(0.2)
    assert len(net.of(RegistrationSucceeded)) == 2


def test_interval_too_brief_is_retried_with_min_expires() -> None:
    net, primary, _ = _net(_account(reregister=30))
    primary.min_expires = 120
    net.pump()
    ok = net.of(RegistrationSucceeded)
    assert ok and ok[0].expires == 120
    assert [r.headers.get("Expires") for r in primary.seen][-1] == "120"


def test_a_min_expires_that_is_not_ascii_digits_is_a_refusal_not_a_crash() -> None:
    net, primary, _ = _net(_account(reregister=30))
    primary.min_expires = 120
    primary.min_expires_text = "¹²⁰"  # str.isdigit() is true, int() raised (issue #10)
    net.pump()
    error = net.of(RegistrationFailed)[0].error
    assert isinstance(error, RegistrationRefused) and error.status == 423


def test_wrong_password_fails_with_authentication_refused_and_retries() -> None:
    net, _primary, _ = _net(_account(password="wrong", retry=30.0, num_retries=5))
    net.pump()
    failed = net.of(RegistrationFailed)
    assert len(failed) == 1
    error = failed[0].error
    assert isinstance(error, AuthenticationRefused) and error.status == 401
    assert error.exit_code == 1
    assert "wrong" not in str(error)
    assert failed[0].retry_at == pytest.approx(net.now + 30.0)
    assert net.reg.state is RegState.WAITING
    net.advance(30.0)
    assert len(net.of(RegistrationFailed)) == 2


def test_403_is_a_refusal_with_its_status() -> None:
    net, primary, _ = _net(_account())
    primary.refuse_with = 403
    net.pump()
    error = net.of(RegistrationFailed)[0].error
    assert isinstance(error, RegistrationRefused) and error.status == 403


def test_no_answer_times_out() -> None:
    net, primary, _ = _net(_account(), register_timeout=8.0)
    primary.answering = False
    net.pump()
    net.advance(8.5)
    error = net.of(RegistrationFailed)[0].error
    assert isinstance(error, RegistrationTimeout)
    assert error.exit_code == 2
    # UDP retransmitted the REGISTER (Timer E) while waiting.
    assert len(primary.seen) >= 3


# -- retry, failover, failback ------------------------------------------------------------------


def test_retry_then_failover_after_num_retries_then_failback() -> None:
    account = _account(alternate=True, retry=10.0, num_retries=2, reregister=100)
    net, primary, _alternate = _net(account)
    primary.up = False
    net.pump()
    # Attempt 1 fails at once; retries at +10 and +20; the third failure fails over.
    assert net.opened == [PRIMARY]
    net.advance(10.0)
    assert net.opened == [PRIMARY, PRIMARY]
    assert not net.of(FailedOver)
    net.advance(10.0)
    assert net.opened == [PRIMARY, PRIMARY, PRIMARY, ALTERNATE]
    over = net.of(FailedOver)
    assert len(over) == 1 and over[0].to_host.server == ALTERNATE
    ok = net.of(RegistrationSucceeded)
    assert ok[-1].host.server == ALTERNATE
    # Registered on the alternate: the primary is probed at each half-period (50 s).
    net.advance(49.0)
    assert net.opened[-1] == ALTERNATE
    net.advance(1.5)
    assert net.opened[-2:] == [PRIMARY, ALTERNATE]  # probe failed, back to the alternate
    assert net.reg.registered_host is not None
    assert net.reg.registered_host.server == ALTERNATE
    primary.up = True
    net.advance(50.0)
    assert net.reg.registered_host.server == PRIMARY
    assert net.of(RegistrationSucceeded)[-1].host.server == PRIMARY
    # Back on the primary: ordinary refreshes, no more probing.
    opened = len(net.opened)
    net.advance(200.0)
    assert len(net.opened) == opened


def test_without_alternate_the_phone_keeps_retrying_the_primary() -> None:
    net, primary, _ = _net(_account(retry=5.0, num_retries=1))
    primary.up = False
    net.pump()
    net.advance(60.0)
    assert set(net.opened) == {PRIMARY}
    assert len(net.opened) == 13  # t=0, then every 5 s
    assert not net.of(FailedOver)
    primary.up = True
    net.advance(5.0)
    assert net.reg.state is RegState.REGISTERED


def test_jitter_spreads_retries_of_a_fleet() -> None:
    retry_delays = []
    for seed in range(20):
        account = _account(retry=10.0)
        core = _core(account, seed=seed, jitter=5.0)
        net = Net(core, FakeRegistrar((PRIMARY, 5060), up=False))
        core.start(net.now)
        net.pump()
        failed = net.of(RegistrationFailed)[0]
        assert failed.retry_at is not None
        retry_delays.append(failed.retry_at - net.now)
    assert all(10.0 <= d <= 15.0 for d in retry_delays)
    assert len({round(d, 3) for d in retry_delays}) == 20


def test_without_jitter_the_retry_follows_the_profile_exactly() -> None:
    net, primary, _ = _net(_account(retry=7.0))
    primary.up = False
    net.pump()
    failed = net.of(RegistrationFailed)[0]
    assert failed.retry_at == net.now + 7.0


# -- connections ----------------------------------------------------------------------------------


def test_dropped_connection_reconnects_within_the_window_and_reregisters() -> None:
    net, _primary, _ = _net(_account(transport=SipTransport.TLS), reconnect_window=4.0)
    net.pump()
    assert net.reg.state is RegState.REGISTERED
    net.lose()
    net.pump()
    assert net.of(ConnectionDropped) and net.reg.state is RegState.WAITING
    at = net.core.get_timer()
    assert at is not None and net.now <= at <= net.now + 4.0
    net.advance(4.0)
    assert net.opened == [PRIMARY, PRIMARY]
    assert net.reg.state is RegState.REGISTERED
    assert len(net.of(RegistrationSucceeded)) == 2


def test_without_a_window_the_reconnect_is_immediate() -> None:
    net, _primary, _ = _net(_account(transport=SipTransport.TCP), reconnect_window=0.0)
    net.pump()
    net.lose()
    net.advance(0.0)
    assert net.opened == [PRIMARY, PRIMARY] and net.reg.state is RegState.REGISTERED


def test_reconnects_after_a_drop_back_off_with_jitter_up_to_the_retry() -> None:
    net, primary, _ = _net(_account(transport=SipTransport.TCP, retry=30.0, num_retries=99),
                           reconnect_window=0.0, reconnect_backoff=4.0)
    net.pump()
    primary.up = False
    net.lose()
    net.advance(0.0)
    delays = []
    for _ in range(5):
        failed = net.of(RegistrationFailed)[-1]
        assert failed.retry_at is not None
        delays.append(failed.retry_at - net.now)
        net.run_until(failed.retry_at)
    # 0.5-1 x 4, 8, 16, then the host's retry (30) caps it: 15-30 s.
    for delay, ceiling in zip(delays, (4.0, 8.0, 16.0, 30.0, 30.0), strict=True):
        assert ceiling / 2 <= delay <= ceiling
    primary.up = True
    net.advance(30.0)
    assert net.reg.state is RegState.REGISTERED
    # Registered again: the next failure is an ordinary one, at the retry interval.
    primary.refuse_with = 403
    net.advance(3600.0)
    refused = [f for f in net.of(RegistrationFailed)
               if isinstance(f.error, RegistrationRefused)]
    assert refused and refused[0].retry_at is not None


def test_a_fleet_recovering_from_a_restart_spreads_out() -> None:
    # 1,000 phones drop at t=0, the registrar is back at t=2.4 (as the benchmark does it
    # with real sockets): with the default settings the reconnects spread over the window
    # and the back-off.
    done = []
    for seed in range(1000):
        account = _account(transport=SipTransport.TLS, num_retries=99)
        primary = FakeRegistrar((PRIMARY, 5060))
        core = _core(account, seed=seed)
        net = Net(core, primary)
        core.start(net.now)
        net.pump()
        start = net.now
        primary.up = False
        net.lose()
        net.run_until(start + 2.4)
        primary.up = True
        while net.reg.state is not RegState.REGISTERED:
            at = net.core.get_timer()
            assert at is not None
            net.run_until(at)
        done.append(net.now - start)
    done.sort()
    assert done[int(0.99 * len(done)) - 1] <= 2.4 + 15.0
    per_second: dict[int, int] = {}
    for t in done:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    assert max(per_second.values()) <= 0.2 * len(done)


def test_reconnect_failure_falls_back_to_the_back_off() -> None:
    net, primary, _ = _net(_account(transport=SipTransport.TCP, retry=3.0),
                           reconnect_window=0.0)
    net.pump()
    primary.up = False
    net.lose()
    net.advance(0.0)
    failed = net.of(RegistrationFailed)
    assert len(failed) == 1 and failed[0].retry_at is not None
    assert net.now + 1.5 <= failed[0].retry_at <= net.now + 3.0  # capped by retry
    primary.up = True
    net.advance(3.0)
    assert net.reg.state is RegState.REGISTERED


def test_stream_bytes_are_framed_in_any_chunking() -> None:
    account = _account(transport=SipTransport.TLS)
    core = _core(account)
    primary = FakeRegistrar((PRIMARY, 5061))
    core.start(0.0)
    command = core.next_command()
    assert isinstance(command, OpenTransport)
    core.transport_opened(command.flow, PHONE_ADDR, primary.address, 0.0)
    for _ in range(2):
        ((flow, data, _),) = core.data_to_send()
        assert flow == command.flow
        for reply in primary.handle(data, 0.0):
            for i in range(0, len(reply), 7):  # 7-byte pieces
                core.receive_data(command.flow, reply[i : i + 7], 0.0)
    assert core.primary.state is RegState.REGISTERED


def test_a_framing_error_closes_and_reconnects() -> None:
    net, primary, _ = _net(_account(transport=SipTransport.TCP), reconnect_window=0.0)
    net.pump()
    flow = net.reg.flow
    net.deliver(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", primary.address)
    net.advance(0.0)
    assert [c.flow for c in net.closed] == [flow]
    assert net.of(ConnectionDropped)
    assert net.reg.state is RegState.REGISTERED
    assert net.opened == [PRIMARY, PRIMARY]


def test_keepalives_follow_the_transport() -> None:
    net, primary, _ = _net(_account(transport=SipTransport.TCP, reregister=3600),
                           stream_ka_interval=90.0)
    net.pump()
    net.advance(89.0)
    assert primary.keepalives == 0
    net.advance(2.0)
    assert primary.keepalives == 1
    net.advance(90.0)
    assert primary.keepalives == 2

    net, primary, _ = _net(_account(reregister=3600), udp_ka_interval=15.0)
    net.pump()
    net.advance(46.0)
    assert primary.keepalives == 3


def test_a_ping_on_the_stream_is_answered_with_a_pong() -> None:
    net, primary, _ = _net(_account(transport=SipTransport.TLS))
    net.pump()
    net.deliver(b"\r\n\r\n", primary.address)
    assert net.core.data_to_send() == [(net.reg.flow, b"\r\n", primary.address)]


# -- unregistering ----------------------------------------------------------------------------


def test_stop_unregisters_with_expires_zero() -> None:
    net, primary, _ = _net(_account())
    net.pump()
    assert primary.bindings
    net.core.stop(net.now)
    net.pump()
    assert primary.seen[-1].headers.get("Expires") == "0"
    assert primary.bindings == {}
    done = net.of(Unregistered)
    assert done == [Unregistered(account=0, host=net.reg.account.host_primary, confirmed=True)]
    assert net.of(PhoneStopped) == [PhoneStopped(confirmed=True, registered=True)]
    assert net.shutdown
    assert net.reg.state is RegState.STOPPED
    assert net.core.stopped and net.core.get_timer() is None


def test_stop_gives_up_after_the_unregister_timeout() -> None:
    net, primary, _ = _net(_account(), unregister_timeout=2.0)
    net.pump()
    primary.answering = False
    net.core.stop(net.now)
    net.advance(2.5)
    assert net.of(Unregistered) == [
        Unregistered(account=0, host=net.reg.account.host_primary, confirmed=False)
    ]


def test_stop_while_not_registered_just_stops() -> None:
    net, primary, _ = _net(_account())
    primary.up = False
    net.pump()
    net.core.stop(net.now)
    net.pump()
    assert net.of(Unregistered) == [Unregistered(account=0, host=None, confirmed=False)]
    assert net.core.get_timer() is None


def test_start_twice_is_an_error() -> None:
    net, _, _ = _net(_account())
    with pytest.raises(PhoneSimError, match="start"):
        net.core.start(net.now)


# -- requests that arrive ---------------------------------------------------------------------

_SERVER: Address = (PRIMARY, 5060)


def _request(method: str, *, extra: str = "", body: bytes = b"", to_tag: str = "",
             cseq: str | None = None) -> bytes:
    headers = (
        f"{method} sip:101@198.51.100.7:40000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {PRIMARY}:5060;branch=z9hG4bK-{method.lower()}-1;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:asterisk@pbx.test>;tag=srv\r\n"
        f"To: <sip:101@pbx.test>{';tag=' + to_tag if to_tag else ''}\r\n"
        f"Call-ID: call-{method.lower()}\r\n"
        f"CSeq: {cseq or '1 ' + method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return headers.encode() + body


def _answers(net: Net) -> list[SipResponse]:
    out = []
    for _, data, _ in net.core.data_to_send():
        message = parse_message(data)
        assert isinstance(message, SipResponse)
        out.append(message)
    return out


@pytest.fixture
def registered() -> Net:
    net, _, _ = _net(_account())
    net.pump()
    assert net.reg.state is RegState.REGISTERED
    net.events.clear()
    return net


def _deliver(net: Net, data: bytes) -> list[SipResponse]:
    net.core.receive_datagram(data, _SERVER, net.now)
    answers = _answers(net)
    while (event := net.core.next_event()) is not None:
        net.events.append(event)
    return answers


def test_options_gets_200_with_allow(registered: Net) -> None:
    (answer,) = _deliver(registered, _request("OPTIONS"))
    assert answer.status == 200
    allow = answer.tokens("Allow")
    assert "NOTIFY" in allow and "MESSAGE" in allow


def test_check_sync_notify_gets_200_and_a_reprovision_event(registered: Net) -> None:
    (answer,) = _deliver(registered, _request("NOTIFY", extra="Event: check-sync;reboot=true\r\n"))
    assert answer.status == 200
    assert registered.of(ReprovisionRequested) == [
        ReprovisionRequested(source=_SERVER, reboot=True)
    ]


def test_other_notify_events_get_489(registered: Net) -> None:
    (answer,) = _deliver(registered, _request("NOTIFY", extra="Event: dialog\r\n"))
    assert answer.status == 489
    assert not registered.of(ReprovisionRequested)


def test_out_of_dialog_message_gets_200(registered: Net) -> None:
    (answer,) = _deliver(registered, _request(
        "MESSAGE", extra="Content-Type: text/plain\r\n", body=b"hello"))
    assert answer.status == 200
    (message,) = registered.of(MessageReceived)
    assert message.body == b"hello" and message.content_type == "text/plain"


def test_unknown_method_gets_405(registered: Net) -> None:
    (answer,) = _deliver(registered, _request("SUBSCRIBE", extra="Event: presence\r\n"))
    assert answer.status == 405
    assert answer.headers.get("Allow")


@pytest.mark.parametrize("method", ["BYE", "INFO", "NOTIFY"])
def test_in_dialog_requests_for_no_dialog_get_481_or_405(registered: Net, method: str) -> None:
    (answer,) = _deliver(registered, _request(method, to_tag="nodialog",
                                              extra="Event: check-sync\r\n"))
    assert answer.status == (405 if method == "INFO" else 481)


def test_out_of_dialog_bye_gets_481(registered: Net) -> None:
    (answer,) = _deliver(registered, _request("BYE"))
    assert answer.status == 481


def test_invite_without_sdp_rings_and_is_a_call(registered: Net) -> None:
    answers = _deliver(registered, _request(
        "INVITE", extra="Contact: <sip:asterisk@192.0.2.1:5060>\r\n"))
    assert [a.status for a in answers] == [100, 180]
    (arrived,) = registered.of(CallArrived)
    assert arrived.account == 0 and arrived.remote == "sip:asterisk@pbx.test"


def test_malformed_request_gets_400_and_the_phone_keeps_working(registered: Net) -> None:
    registered.core.receive_datagram(
        _request("OPTIONS", cseq="not-a-number OPTIONS"), _SERVER, registered.now
    )
    ((_, raw, destination),) = registered.core.data_to_send()
    assert raw.startswith(b"SIP/2.0 400 ") and destination == _SERVER
    (again,) = _deliver(registered, _request("OPTIONS"))
    assert again.status == 200
    assert registered.reg.state is RegState.REGISTERED


def test_garbage_never_raises(registered: Net) -> None:
    for junk in (b"\x00\xff garbage", b"INVITE\r\n\r\n", b"SIP/2.0 abc\r\n\r\n", b"\r\n"):
        registered.core.receive_datagram(junk, _SERVER, registered.now)
        registered.core.data_to_send()
    assert registered.reg.state is RegState.REGISTERED


def test_malformed_request_on_a_stream_gets_400() -> None:
    net, primary, _ = _net(_account(transport=SipTransport.TCP))
    net.pump()
    net.deliver(_request("OPTIONS", cseq="x OPTIONS"), primary.address)
    ((_, raw, _),) = net.core.data_to_send()
    assert raw.startswith(b"SIP/2.0 400 ")
    assert net.reg.state is RegState.REGISTERED


def test_password_is_not_in_any_repr() -> None:
    account = _account(password="very-secret-pw")
    core = _core(account)
    assert "very-secret-pw" not in repr(account) + repr(core) + repr(account.host_primary)


def test_stop_during_the_first_register_still_unregisters() -> None:
    net, primary, _ = _net(_account())
    primary.answering = False
    net.pump()
    assert net.reg.state is RegState.REGISTERING
    primary.answering = True
    net.core.stop(net.now)
    net.pump()
    assert primary.seen[-1].headers.get("Expires") == "0"
    (done,) = net.of(Unregistered)
    assert done.confirmed
    assert net.core.get_timer() is None


def test_ipv6_local_address_is_bracketed_in_contact_and_via() -> None:
    core = _core(_account())
    core.start(0.0)
    command = core.next_command()
    assert isinstance(command, OpenTransport)
    core.transport_opened(command.flow, ("2001:db8::7", 5060), (PRIMARY, 5060), 0.0)
    ((_, data, _),) = core.data_to_send()
    request = parse_message(data)
    assert isinstance(request, SipRequest)
    assert request.top_via.host == "[2001:db8::7]"
    contact = core.primary.contact
    assert contact is not None and str(contact.uri) == "sip:101@[2001:db8::7]:5060;ob"


def test_jitter_spreads_refreshes_earlier_never_later() -> None:
    delays = []
    for seed in range(20):
        account = _account(reregister=300, transport=SipTransport.TCP)
        # No keep-alive, and TCP (no Timer K): the only deadline left is the refresh.
        core = _core(account, seed=seed, jitter=20.0, stream_ka_interval=0)
        net = Net(core, FakeRegistrar((PRIMARY, 5060)))
        core.start(net.now)
        net.advance(0.0)  # the finished REGISTER transactions go (Timer K = 0 on TCP)
        at = core.get_timer()
        assert at is not None
        delays.append(at - net.now)
    # Without jitter the refresh is at 295 s (5 s margin); with it, 275-295 s.
    assert all(275.0 <= d <= 295.0 for d in delays)
    assert len({round(d, 3) for d in delays}) == 20


def test_a_pbx_connection_to_the_listener_is_framed_on_its_own() -> None:
    net, primary, _ = _net(_account(transport=SipTransport.TCP))
    net.pump()
    pbx: Address = ("203.0.113.5", 41000)
    flow = net.core.connection_accepted(PHONE_ADDR, pbx, net.now)
    request = _request("OPTIONS")
    # Half of a request from the PBX, then the registrar's ping, then the rest.
    net.core.receive_data(flow, request[:40], net.now)
    net.deliver(b"\r\n\r\n", primary.address)
    net.core.receive_data(flow, request[40:], net.now)
    out = net.core.data_to_send()
    assert out[0] == (net.reg.flow, b"\r\n", primary.address)
    assert out[1][0] == flow and out[1][2] == pbx and out[1][1].startswith(b"SIP/2.0 200 ")
    # A stream from the PBX that cannot be framed closes that connection only.
    net.core.receive_data(flow, b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n", net.now)
    assert net.core.next_command() == CloseTransport(flow=flow)
    assert net.core.next_command() is None
    assert net.reg.state is RegState.REGISTERED
    assert [type(e) for e in _drain(net)] == [RequestAnswered]  # the OPTIONS
    net.core.transport_lost(flow, net.now)  # its end, reported by the shell: nothing more
    assert net.core.next_command() is None and not _drain(net)
    assert net.reg.state is RegState.REGISTERED


def test_a_check_sync_from_elsewhere_is_refused(registered: Net) -> None:
    notify = _request("NOTIFY", extra="Event: check-sync\r\n")
    registered.core.receive_datagram(notify, ("203.0.113.66", 5060), registered.now)
    ((_, raw, _),) = registered.core.data_to_send()
    assert raw.startswith(b"SIP/2.0 403 ")
    assert not [e for e in _drain(registered) if isinstance(e, ReprovisionRequested)]


def _drain(net: Net) -> list[PhoneEvent]:
    events = []
    while (event := net.core.next_event()) is not None:
        events.append(event)
    return events


# -- any sequence of inputs ---------------------------------------------------------------------

_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["pump", "advance", "lost", "junk", "down", "up", "mute", "stop"]),
        st.floats(min_value=0.0, max_value=400.0),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=_ACTIONS, transport=st.sampled_from(list(SipTransport)),
       alternate=st.booleans(), seed=st.integers(0, 2**16))
def test_no_sequence_of_inputs_breaks_the_core(
    actions: list[tuple[str, float]], transport: SipTransport, alternate: bool, seed: int
) -> None:
    account = _account(transport=transport, alternate=alternate, retry=5.0, num_retries=1,
                       reregister=60)
    primary = FakeRegistrar((PRIMARY, 5060))
    other = FakeRegistrar((ALTERNATE, 5060))
    core = _core(account, seed=seed, jitter=2.0, register_timeout=8.0)
    net = Net(core, primary, other)
    core.start(net.now)
    for action, value in actions:
        if action == "pump":
            net.pump()
        elif action == "advance":
            net.advance(value)
        elif action == "lost":
            if net.reg.flow is not None:
                net.lose()
        elif action == "junk":
            net.deliver(b"\r\n\r\nINVITE x\r\n\r\n" + bytes([int(value) % 256]) * 3,
                        primary.address)
        elif action in ("down", "up"):
            primary.up = other.up = action == "up"
        elif action == "mute":
            primary.answering = not primary.answering
        elif action == "stop":
            core.stop(net.now)
    core.stop(net.now)
    net.advance(10.0)
    # However it got here, stop() ends in STOPPED with nothing left scheduled.
    assert net.reg.state is RegState.STOPPED
    assert core.stopped and core.get_timer() is None
    assert net.of(Unregistered) and net.of(PhoneStopped) and net.shutdown


@pytest.mark.parametrize("transport", [SipTransport.UDP, SipTransport.TCP])
def test_stream_messages_are_parsed_once(
    transport: SipTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a stream the framer's parsed message goes to UserAgent.receive_message: the core's
    # own parse (phone_sim.sip.ua.parse_message) is for datagrams only.
    import phone_sim.sip.ua as ua_module

    parses: list[bytes] = []
    real = ua_module.parse_message

    def counting(data: bytes) -> SipRequest | SipResponse:
        parses.append(data)
        return real(data)

    monkeypatch.setattr(ua_module, "parse_message", counting)
    net, primary, _ = _net(_account(transport=transport))
    net.pump()
    assert net.reg.state is RegState.REGISTERED and len(primary.seen) == 2
    net.deliver(_request("OPTIONS"), primary.address)
    ((_, raw, _),) = net.core.data_to_send()
    assert raw.startswith(b"SIP/2.0 200 ")
    # UDP: the 401, the 200 and the OPTIONS, each parsed by the core; TCP: none of them.
    assert len(parses) == (3 if transport is SipTransport.UDP else 0)
