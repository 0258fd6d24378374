"""Hypothesis drives random call flows (API calls, lost datagrams, time) through two phones
in memory: nothing but :class:`UsageError` ever escapes, and every call ends cleanly."""

from __future__ import annotations

import contextlib
import logging
import random

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from phone_sim.call.session import CallConfig, CallSession, CallState
from phone_sim.errors import UsageError
from tests.call.callpair import CallPair, Wire

ACTIONS = st.lists(
    st.sampled_from(["hold_a", "hold_b", "resume_a", "resume_b", "refresh_a", "refresh_b",
                     "wait_short", "wait_long", "answer", "reject", "hangup_a", "hangup_b"]),
    max_size=12,
)


@example(actions=["answer", "hold_a"], loss=0.1, seed=3, prefer_100rel=False)  # found by it
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
                side_b.answer(pair.now, local=pair.audio("b"))
            elif action == "reject" and side_b is not None:
                side_b.reject(pair.now, 486)
            elif action.endswith("_a") or side_b is not None:
                target = a if action.endswith("_a") else side_b
                assert target is not None
                verb = action[:-2]
                if verb == "hangup":
                    target.hangup(pair.now)
                elif verb == "refresh":
                    target.refresh(pair.now)
                else:
                    getattr(target, verb)(pair.now)
        except UsageError:
            pass  # an API call that does not fit the state: refused, nothing changes
        pair.pump()
    # Whatever happened, hanging up and waiting ends both sides.
    for session in (a, b()):
        if session is not None:
            with contextlib.suppress(UsageError):
                session.hangup(pair.now)
    pair.pump()
    pair.advance(200.0)
    assert a.state is CallState.TERMINATED
    side_b = b()
    assert side_b is None or side_b.state is CallState.TERMINATED
    pair.ra.reap()
    pair.rb.reap()
    assert pair.ra.sessions == {} and pair.rb.sessions == {}
    assert pair.ra.get_timer() is None and pair.rb.get_timer() is None
