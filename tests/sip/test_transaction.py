"""Transaction tables: RFC 3261 §17 timers and transitions, RFC 6026, matching keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.sip.transaction import (
    INITIAL_STATE,
    TABLES,
    TimerSettings,
    Transaction,
    TransactionKind,
    TransactionStateError,
    TxAction,
    TxInput,
    TxState,
    client_key,
    new_transaction,
    server_key,
)

K = TransactionKind
S = TxState
I = TxInput  # noqa: E741
A = TxAction
TIMER_INPUTS = {i for i in TxInput if i.name.startswith("TIMER_")}


def _run_timers(tx: Transaction, until: float) -> list[tuple[float, TxAction]]:
    """Fire every timer due up to *until*, as a user agent pump would."""
    fired = []
    while (at := tx.get_timer()) is not None and at <= until:
        fired.append((at, tx.handle_timer(at)))
    return fired


def _tx(kind: TransactionKind, *, reliable: bool = False) -> Transaction:
    return new_transaction(kind, ("z9hG4bKPjx", "X"), reliable=reliable)


def test_ict_udp_retransmits_on_timer_a_then_times_out_on_b() -> None:
    tx = _tx(K.INVITE_CLIENT)
    assert tx.start(0.0) == A.TRANSMIT
    fired = _run_timers(tx, 100.0)
    retransmits = [at for at, act in fired if act == A.RETRANSMIT]
    # 17.1.1.2: A starts at T1 and doubles; B = 64*T1 = 32 s: 7 transmissions in all.
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert fired[-1] == (32.0, A.TIMED_OUT)
    assert tx.terminated and tx.get_timer() is None
    assert tx.retransmissions == 6


def test_ict_reliable_never_retransmits() -> None:
    tx = _tx(K.INVITE_CLIENT, reliable=True)
    tx.start(0.0)
    assert tx.retransmit_at is None
    assert _run_timers(tx, 100.0) == [(32.0, A.TIMED_OUT)]


def test_ict_provisional_stops_retransmission_and_timer_b() -> None:
    tx = _tx(K.INVITE_CLIENT)
    tx.start(0.0)
    assert tx.feed(I.RECV_1XX, 0.2) == A.PASS_UP
    assert tx.state is S.PROCEEDING and tx.get_timer() is None


def test_ict_non_2xx_acks_absorbs_retransmissions_and_waits_timer_d() -> None:
    tx = _tx(K.INVITE_CLIENT)
    tx.start(0.0)
    assert tx.feed(I.RECV_FINAL, 1.0) == A.SEND_ACK | A.PASS_UP
    assert tx.state is S.COMPLETED and tx.timeout_at == 33.0 and tx.retransmit_at is None
    assert tx.feed(I.RECV_FINAL, 2.0) == A.SEND_ACK | A.ABSORBED
    assert tx.absorbed == 1
    assert _run_timers(tx, 40.0) == [(33.0, A.NONE)]
    assert tx.terminated


def test_ict_reliable_timer_d_is_zero() -> None:
    tx = _tx(K.INVITE_CLIENT, reliable=True)
    tx.start(0.0)
    tx.feed(I.RECV_FINAL, 1.0)
    assert tx.timeout_at == 1.0
    _run_timers(tx, 1.0)
    assert tx.terminated


def test_ict_2xx_goes_to_accepted_and_passes_retransmissions_up_rfc6026() -> None:
    tx = _tx(K.INVITE_CLIENT)
    tx.start(0.0)
    assert tx.feed(I.RECV_2XX, 0.1) == A.PASS_UP
    assert tx.state is S.ACCEPTED and tx.timeout_at == pytest.approx(32.1)
    assert tx.feed(I.RECV_2XX, 0.6) == A.PASS_UP
    assert tx.feed(I.RECV_FINAL, 0.7) == A.ABSORBED
    _run_timers(tx, 33.0)
    assert tx.terminated


def test_nict_timer_e_doubles_to_t2_and_f_times_out() -> None:
    tx = _tx(K.NON_INVITE_CLIENT)
    tx.start(0.0)
    fired = _run_timers(tx, 100.0)
    retransmits = [at for at, act in fired if act == A.RETRANSMIT]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-1] == (32.0, A.TIMED_OUT)


def test_nict_proceeding_retransmits_every_t2_and_keeps_timer_f() -> None:
    tx = _tx(K.NON_INVITE_CLIENT)
    tx.start(0.0)
    tx.feed(I.RECV_1XX, 0.1)
    assert tx.retransmit_at == pytest.approx(4.1) and tx.timeout_at == 32.0
    fired = _run_timers(tx, 100.0)
    assert [at for at, act in fired if act == A.RETRANSMIT] == pytest.approx(
        [4.1, 8.1, 12.1, 16.1, 20.1, 24.1, 28.1]
    )
    assert fired[-1] == (32.0, A.TIMED_OUT)


@pytest.mark.parametrize(("reliable", "k_at"), [(False, 6.0), (True, 1.0)])
def test_nict_completed_waits_timer_k(reliable: bool, k_at: float) -> None:
    tx = _tx(K.NON_INVITE_CLIENT, reliable=reliable)
    tx.start(0.0)
    assert tx.feed(I.RECV_2XX, 1.0) == A.PASS_UP
    assert tx.timeout_at == k_at and tx.retransmit_at is None
    assert tx.feed(I.RECV_2XX, 1.0) == A.ABSORBED


def test_ist_non_2xx_retransmits_on_g_until_ack_then_timer_i() -> None:
    tx = _tx(K.INVITE_SERVER)
    assert tx.start(0.0) == A.NONE
    assert tx.feed(I.SEND_1XX, 0.0) == A.TRANSMIT
    assert tx.feed(I.RECV_REQUEST, 0.3) == A.RETRANSMIT  # repeat the provisional
    assert tx.feed(I.SEND_FINAL, 1.0) == A.TRANSMIT
    fired = _run_timers(tx, 9.0)
    assert [at for at, _ in fired] == [1.5, 2.5, 4.5, 8.5]  # G: T1 doubling, capped at T2
    assert tx.feed(I.RECV_ACK, 9.0) == A.NONE
    assert tx.state is S.CONFIRMED and tx.timeout_at == 14.0 and tx.retransmit_at is None
    assert tx.feed(I.RECV_ACK, 9.5) == A.ABSORBED
    _run_timers(tx, 14.0)
    assert tx.terminated


def test_ist_timer_h_gives_up_waiting_for_ack() -> None:
    tx = _tx(K.INVITE_SERVER, reliable=True)
    tx.feed(I.SEND_FINAL, 0.0)
    assert tx.retransmit_at is None
    assert _run_timers(tx, 40.0) == [(32.0, A.TIMED_OUT)]


def test_ist_2xx_accepted_absorbs_invite_and_passes_ack_rfc6026() -> None:
    tx = _tx(K.INVITE_SERVER)
    tx.feed(I.SEND_2XX, 0.0)
    assert tx.state is S.ACCEPTED and tx.timeout_at == 32.0
    # RFC 3261 13.3.1.4: the 2xx is retransmitted on UDP until the ACK comes.
    assert _run_timers(tx, 1.6) == [(0.5, A.RETRANSMIT), (1.5, A.RETRANSMIT)]
    assert tx.feed(I.RECV_REQUEST, 1.7) == A.ABSORBED
    assert tx.feed(I.SEND_2XX, 1.7) == A.TRANSMIT
    assert not tx.acked
    assert tx.feed(I.RECV_ACK, 1.8) == A.PASS_UP
    assert tx.acked and tx.retransmit_at is None
    assert tx.feed(I.RECV_ACK, 1.9) == A.PASS_UP
    _run_timers(tx, 32.0)
    assert tx.terminated


def test_ist_2xx_on_reliable_transport_is_not_retransmitted() -> None:
    tx = _tx(K.INVITE_SERVER, reliable=True)
    tx.feed(I.SEND_2XX, 0.0)
    assert tx.retransmit_at is None
    assert _run_timers(tx, 40.0) == [(32.0, A.NONE)]
    assert tx.terminated and not tx.acked


@pytest.mark.parametrize(("reliable", "j_at"), [(False, 33.0), (True, 1.0)])
def test_nist_completed_repeats_response_until_timer_j(reliable: bool, j_at: float) -> None:
    tx = _tx(K.NON_INVITE_SERVER, reliable=reliable)
    assert tx.feed(I.RECV_REQUEST, 0.5) == A.ABSORBED  # 17.2.2: nothing to repeat yet
    assert tx.feed(I.SEND_2XX, 1.0) == A.TRANSMIT
    assert tx.timeout_at == j_at
    if not reliable:
        assert tx.feed(I.RECV_REQUEST, 2.0) == A.RETRANSMIT
    _run_timers(tx, j_at)
    assert tx.terminated


def test_pair_not_in_table_is_an_error_and_leaves_state() -> None:
    tx = _tx(K.NON_INVITE_SERVER)
    tx.feed(I.SEND_2XX, 0.0)
    with pytest.raises(TransactionStateError, match="nist transaction cannot take"):
        tx.feed(I.SEND_FINAL, 0.1)
    assert tx.state is S.COMPLETED
    tx2 = _tx(K.INVITE_CLIENT)
    tx2.start(0.0)
    with pytest.raises(TransactionStateError):
        tx2.feed(I.RECV_ACK, 0.0)


def test_custom_timer_settings() -> None:
    timers = TimerSettings(t1=0.1, t2=0.4, t4=1.0)
    tx = new_transaction(K.NON_INVITE_CLIENT, ("b", "OPTIONS"), reliable=False, timers=timers)
    tx.start(0.0)
    assert tx.timeout_at == pytest.approx(6.4)
    with pytest.raises(ValueError, match="t1 <= t2"):
        TimerSettings(t1=5.0, t2=4.0)


def test_every_table_state_is_reachable_kind_state() -> None:
    for kind, table in TABLES.items():
        states = {s for s, _ in table} | {n for n, _ in table.values()}
        assert INITIAL_STATE[kind] in states
        assert S.TERMINATED in states
        # no transitions out of Terminated
        assert all(s is not S.TERMINATED for s, _ in table)


NON_TIMER_INPUTS = [i for i in TxInput if i not in TIMER_INPUTS]
steps = st.lists(
    st.one_of(
        st.sampled_from(NON_TIMER_INPUTS),
        st.floats(min_value=0.0, max_value=40.0),  # advance the clock by this much
    ),
    max_size=40,
)


@given(kind=st.sampled_from(list(TransactionKind)), reliable=st.booleans(), steps=steps)
def test_random_event_sequences_keep_the_machine_legal(
    kind: TransactionKind, reliable: bool, steps: list[TxInput | float]
) -> None:
    table = TABLES[kind]
    legal = {s for s, _ in table} | {n for n, _ in table.values()}
    tx = new_transaction(kind, ("k",), reliable=reliable)
    now = 0.0
    tx.start(now)
    for step in steps:
        if isinstance(step, float):
            now += step
            while (at := tx.get_timer()) is not None and at <= now:
                before = tx.state
                tx.handle_timer(now)
                assert tx.state in legal
                assert tx.state is not before or tx.retransmit_at is None or (
                    tx.retransmit_at > now
                ), "a retransmit timer must move forward when it fires"
        else:
            before = tx.state
            if (before, step) in table:
                tx.feed(step, now)
            else:
                with pytest.raises(TransactionStateError):
                    tx.feed(step, now)
                assert tx.state is before
        assert tx.state in legal
        if reliable:
            assert tx.retransmit_at is None, "no retransmissions on reliable transports"
        if tx.terminated:
            assert tx.get_timer() is None, "no timer pending after termination"
        timer = tx.get_timer()
        assert timer is None or timer >= 0.0
    # Every machine terminates by itself in bounded time once the TU has acted.
    if tx.state in (S.CALLING, S.TRYING) and kind in (K.INVITE_CLIENT, K.NON_INVITE_CLIENT):
        while (at := tx.get_timer()) is not None:
            tx.handle_timer(at)
        assert tx.terminated


def test_client_key_matches_method_case_insensitively() -> None:
    assert client_key("z9hG4bKPj1", "invite") == client_key("z9hG4bKPj1", "INVITE")
    assert client_key("z9hG4bKPj1", "CANCEL") != client_key("z9hG4bKPj1", "INVITE")


def _skey(**over: object) -> tuple[str, ...]:
    base: dict[str, object] = dict(
        method="INVITE", branch="z9hG4bKPjabc", sent_by="10.0.0.1:5060",
        request_uri="sip:bob@b", call_id="c1", from_tag="f", cseq_number=1,
        top_via="SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKPjabc",
    )
    base.update(over)
    return server_key(**base)  # type: ignore[arg-type]


def test_server_key_rfc3261() -> None:
    assert _skey() == _skey(method="ACK")  # ACK for a non-2xx matches the INVITE
    assert _skey() != _skey(method="CANCEL")  # CANCEL is its own transaction
    assert _skey() == _skey(sent_by="10.0.0.1:5060".upper(), call_id="other")
    assert _skey() != _skey(sent_by="10.0.0.2:5060")


def test_server_key_rfc2543_fallback() -> None:
    old = dict(branch="1234", top_via="SIP/2.0/UDP 10.0.0.1;branch=1234")
    assert _skey(**old) == _skey(**old, method="ACK")
    assert _skey(**old) != _skey(**old, cseq_number=2)
    assert _skey(**old) != _skey(**old, call_id="c2")
    assert _skey(**old) != _skey(**old, from_tag="g")
    assert _skey(branch=None, top_via="SIP/2.0/UDP h")[0] == "2543"
    # Linear white space in the Via does not change the key.
    assert _skey(branch=None, top_via="SIP/2.0/UDP  h") == _skey(branch=None,
                                                                  top_via="SIP/2.0/UDP h")


def test_ict_transport_error_after_final_only_terminates() -> None:
    tx = _tx(K.INVITE_CLIENT)
    tx.start(0.0)
    tx.feed(I.RECV_FINAL, 0.1)
    assert tx.feed(I.TRANSPORT_ERROR, 0.2) == A.NONE
    assert tx.terminated and tx.get_timer() is None
    calling = _tx(K.INVITE_CLIENT)
    calling.start(0.0)
    assert calling.feed(I.TRANSPORT_ERROR, 0.1) == A.TRANSPORT_FAILED
