"""Hypothesis drives random call flows (API calls, lost datagrams, time) through two phones
in memory: nothing but :class:`UsageError` ever escapes, and every call ends cleanly."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from phone_sim.call.router import CallRouter
from phone_sim.call.session import CallConfig, CallSession, CallState
from phone_sim.errors import UsageError
from phone_sim.sip.ua import RequestReceived, ResponseReceived, UaEvent
from tests.call.callpair import CallPair, Wire, answer_at_once

SDP_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "sdp"

ACTIONS = st.lists(
    st.sampled_from(["hold_a", "hold_b", "resume_a", "resume_b", "refresh_a", "refresh_b",
                     "wait_short", "wait_long", "answer", "reject", "hangup_a", "hangup_b"]),
    max_size=12,
)


@example(actions=["answer", "hold_a"], loss=0.1, seed=3, prefer_100rel=False)  # found by it
# A re-INVITE out when the call ends, its peer answering only 100: forgotten after 64*T1.
@example(actions=["answer", "hold_a", "hold_a"], loss=0.1, seed=1, prefer_100rel=False)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, loss=st.sampled_from([0.0, 0.1, 0.3]), seed=st.integers(0, 2**16),
       prefer_100rel=st.booleans())
def test_random_call_flows_end_cleanly(
    actions: list[str], loss: float, seed: int, prefer_100rel: bool
) -> None:
    handler = _Errors()
    logging.getLogger("phone_sim.call").addHandler(handler)
    try:
        _flow(actions, loss, seed, prefer_100rel)
    finally:
        logging.getLogger("phone_sim.call").removeHandler(handler)
    assert handler.records == [], handler.records


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def _flow(actions: list[str], loss: float, seed: int, prefer_100rel: bool) -> None:
    rng = random.Random(seed)

    def drop(wire: Wire) -> bool:
        return rng.random() < loss

    pair = CallPair(config_b=CallConfig(prefer_100rel=prefer_100rel), drop=drop)
    a = pair.dial()
    pair.advance(0.5)

    def b() -> CallSession | None:
        return pair.incoming[0] if pair.incoming else None

    for action in actions:
        side_b = b()
        try:
            if action == "wait_short":
                pair.advance(1.0)
            elif action == "wait_long":
                pair.advance(1000.0)
            elif action == "answer" and side_b is not None:
                pair.act(side_b, "answer", local=pair.audio("b"))
            elif action == "reject" and side_b is not None:
                pair.act(side_b, "reject", 486)
            elif action.endswith("_a") or side_b is not None:
                target = a if action.endswith("_a") else side_b
                assert target is not None
                verb = action[:-2]
                if verb == "hangup":
                    pair.act(target, "hangup")
                elif verb == "refresh":
                    pair.act(target, "refresh")
                else:
                    pair.act(target, verb)
        except UsageError:
            pass  # an API call that does not fit the state: refused, nothing changes
        pair.pump()
    # Whatever happened, hanging up and waiting ends both sides.
    for session in (a, b()):
        if session is not None:
            with contextlib.suppress(UsageError):
                pair.act(session, "hangup")
    pair.pump()
    pair.advance(200.0)
    assert a.state is CallState.TERMINATED
    side_b = b()
    assert side_b is None or side_b.state is CallState.TERMINATED
    assert pair.ra.sessions == {} and pair.rb.sessions == {}
    assert pair.ra.get_timer() is None and pair.rb.get_timer() is None


BODIES = [
    b"",
    (SDP_DIR / "asterisk-22-sdes-offer.sdp").read_bytes(),
    (SDP_DIR / "asterisk-22-avp-offer.sdp").read_bytes(),
    (SDP_DIR / "asterisk-22-sdes-hold-reoffer.sdp").read_bytes(),
    (SDP_DIR / "malformed" / "no-origin.sdp").read_bytes(),
    b"\x00\xff garbage",
]
HEADER_VALUES = st.one_of(
    st.tuples(st.just("Session-Expires"),
              st.sampled_from(["1800", "60", "90;refresher=uas", "abc", "1800;refresher=x",
                               "4294967296"])),
    st.tuples(st.just("Min-SE"), st.sampled_from(["90", "3000", "-1", "x"])),
    st.tuples(st.just("RAck"), st.sampled_from(["1 1 INVITE", "x y z", "", "2 7 PRACK"])),
    st.tuples(st.just("Supported"), st.sampled_from(["timer", "100rel", "", "x"])),
    st.tuples(st.just("Require"), st.sampled_from(["timer", "100rel", "foo"])),
)
REQUESTS = st.lists(
    st.tuples(
        st.sampled_from(["INVITE", "UPDATE", "PRACK", "BYE", "INFO", "OPTIONS", "MESSAGE"]),
        st.integers(0, len(BODIES) - 1),
        st.lists(HEADER_VALUES, max_size=3),
        st.sampled_from(["application/sdp", "text/plain"]),
    ),
    min_size=1, max_size=6,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=REQUESTS)
def test_random_in_dialog_requests_never_break_the_phone(
    requests: list[tuple[str, int, list[tuple[str, str]], str]],
) -> None:
    handler = _Errors()
    logging.getLogger("phone_sim.call").addHandler(handler)
    try:
        pair = CallPair()
        pair.on_incoming = answer_at_once
        a = pair.dial()
        b = pair.incoming[0]
        assert b.dialog is not None
        del pair.rb.sessions[b.call_id]  # B is scripted from here on
        for method, body_index, headers, content_type in requests:
            body = BODIES[body_index]
            try:
                request = b.dialog.create_request(
                    method, contact=pair.b.contact, headers=headers, body=body,
                    content_type=content_type if body else None,
                )
            except UsageError:
                continue  # B's own dialog is over (it sent or got a BYE)
            pair.b.send_request(request, pair.now)
            pair.advance(0.5)
            # Scripted B ACKs any 2xx to its INVITEs (answers in ACK are not its business).
            for _name, event in list(pair.unrouted):
                if (isinstance(event, ResponseReceived) and event.request.method == "INVITE"
                        and 200 <= event.response.status < 300 and not event.retransmission):
                    pair.b.send_ack(event.transaction, event.response, pair.now,
                                    dialog=b.dialog)
            pair.unrouted.clear()
            pair.pump()
        pair.advance(100.0)
        assert a.state in (CallState.CONFIRMED, CallState.TERMINATED)
        if a.state is CallState.CONFIRMED:
            pair.act(a, "hangup")
        pair.advance(100.0)
        assert a.state is CallState.TERMINATED
        assert pair.ra.sessions == {}
    finally:
        logging.getLogger("phone_sim.call").removeHandler(handler)
    assert handler.records == [], handler.records


RESPONSES = st.lists(
    st.tuples(
        st.sampled_from([180, 181, 183, 200, 202, 302, 404, 422, 486, 488, 491, 500, 603]),
        st.integers(0, len(BODIES) - 1),
        st.lists(st.one_of(
            HEADER_VALUES,
            st.tuples(st.just("RSeq"), st.sampled_from(["1", "2", "0", "x", "4294967295"])),
        ), max_size=3),
    ),
    min_size=1, max_size=5,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses=RESPONSES)
def test_random_answers_to_our_invite_never_break_the_phone(
    responses: list[tuple[int, int, list[tuple[str, str]]]],
) -> None:
    handler = _Errors()
    logging.getLogger("phone_sim.call").addHandler(handler)
    try:
        pair = CallPair()

        def script(p: CallPair, event: object) -> None:
            if not isinstance(event, RequestReceived) or event.transaction is None:
                return
            if event.request.method != "INVITE":
                with contextlib.suppress(UsageError):
                    p.b.respond(event.transaction, 200, p.now)
                return
            for status, body_index, headers in responses:
                body = BODIES[body_index] if status != 422 else b""
                with contextlib.suppress(UsageError):
                    p.b.respond(event.transaction, status, p.now, headers=headers, body=body,
                                content_type="application/sdp" if body else None)

        pair.rb = _Scripted(pair, script)
        a = pair.dial()
        pair.advance(40.0)
        assert a.state in (CallState.EARLY, CallState.CONFIRMED, CallState.TERMINATED,
                           CallState.CALLING)
        with contextlib.suppress(UsageError):
            pair.act(a, "hangup")
        pair.advance(100.0)
        assert a.state is CallState.TERMINATED
        assert pair.ra.sessions == {}
    finally:
        logging.getLogger("phone_sim.call").removeHandler(handler)
    assert handler.records == [], handler.records


class _Scripted(CallRouter):
    """B: every UA event goes to a script instead of a call layer."""

    def __init__(self, pair: CallPair, script: Callable[[CallPair, object], None]) -> None:
        super().__init__()
        self.pair = pair
        self.script = script

    def handle_event(self, event: UaEvent, now: float) -> bool:
        self.script(self.pair, event)
        return True
