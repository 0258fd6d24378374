"""The impairment model, in memory with a fake clock: loss as set and seeded, jitter that
delays in order, reordering as a consequence of a longer delay, and nothing lost or sent
twice."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phone_sim.media.impairment import Impairment, ImpairmentError, ImpairmentModel

PTIME = 0.020


def _run(model: ImpairmentModel, n: int, *, step: float = PTIME
         ) -> list[tuple[float, int, float]]:
    """Offer packets 0..n-1 every *step* seconds, polling the model at each packet and at
    every due time, as the endpoint does: ``(sent_at, number, offered_at)`` in send order."""
    out: list[tuple[float, int, float]] = []
    offered: dict[int, float] = {}

    def drain(until: float) -> None:
        while (at := model.get_timer()) is not None and at <= until:
            for packet in model.packets_due(at):
                number = int.from_bytes(packet, "big")
                out.append((at, number, offered[number]))

    for i in range(n):
        now = i * step
        drain(now)
        offered[i] = now
        packet = i.to_bytes(4, "big")
        if model.offer(packet, now):
            out.append((now, i, now))
        for late in model.packets_due(now):
            number = int.from_bytes(late, "big")
            out.append((now, number, offered[number]))
    drain(math.inf)
    return out


def _numbers(out: list[tuple[float, int, float]]) -> list[int]:
    return [number for _, number, _ in out]


def test_loss_matches_the_setting_and_is_seeded() -> None:
    model = ImpairmentModel(Impairment(loss_percent=5, seed="s"))
    out = _run(model, 20_000)
    assert model.offered == 20_000 and model.dropped == 20_000 - len(out)
    assert 0.045 < model.dropped / 20_000 < 0.055
    assert _numbers(out) == sorted(_numbers(out))  # loss alone neither delays nor reorders
    assert model.delayed == 0 and model.held == 0
    again = _run(ImpairmentModel(Impairment(loss_percent=5, seed="s")), 20_000)
    assert again == out
    other = _run(ImpairmentModel(Impairment(loss_percent=5, seed="t")), 20_000)
    assert _numbers(other) != _numbers(out)


def test_a_seed_loses_the_same_packets_whatever_the_jitter_and_reordering() -> None:
    plain = _run(ImpairmentModel(Impairment(loss_percent=10, seed=7)), 3000)
    rough = _run(ImpairmentModel(Impairment(loss_percent=10, jitter_ms=40, reorder_percent=3,
                                            seed=7)), 3000)
    assert sorted(_numbers(rough)) == _numbers(plain)


def test_jitter_delays_up_to_the_setting_in_order() -> None:
    model = ImpairmentModel(Impairment(jitter_ms=30, seed="j"))
    out = _run(model, 5000)
    assert _numbers(out) == list(range(5000))  # a queue delays without reordering
    delays = [sent - offered for sent, _, offered in out]
    assert max(delays) <= 0.030 + 1e-9
    assert min(delays) >= 0
    assert 0.010 < sum(delays) / len(delays) < 0.025
    assert model.delayed > 4900 and model.dropped == 0
    # The spacing the far end sees varies: what its jitter estimate measures.
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(out)]
    assert max(gaps) > PTIME + 0.015 and min(gaps) < PTIME - 0.015


def test_reordering_is_the_next_packet_overtaking_a_delayed_one() -> None:
    model = ImpairmentModel(Impairment(reorder_percent=5, seed="r"))
    out = _run(model, 10_000)
    numbers = _numbers(out)
    assert sorted(numbers) == list(range(10_000))  # nothing lost, nothing sent twice
    # A slow packet arrives after the next one, unless that one is slow as well (then the
    # two keep their order): the far end sees about as many late arrivals as the setting.
    late = [n for i, n in enumerate(numbers) if i and n < max(numbers[:i])]
    assert 400 < model.reordered < 600
    assert model.reordered * 0.9 < len(late) <= model.reordered
    assert all(sent >= offered for sent, _, offered in out)


def test_jitter_and_reordering_together_keep_every_packet() -> None:
    model = ImpairmentModel(Impairment(jitter_ms=50, reorder_percent=10, loss_percent=1,
                                       seed=3))
    out = _run(model, 5000)
    assert len(out) == 5000 - model.dropped
    assert len(set(_numbers(out))) == len(out)
    assert model.held == 0


def test_the_reorder_delay_follows_the_stream_interval() -> None:
    model = ImpairmentModel(Impairment(reorder_percent=100, seed=1), interval=0.040)
    assert model.offer(b"a", 1.0) is False
    assert model.get_timer() == pytest.approx(1.0 + 1.5 * 0.040)
    assert model.packets_due(1.05) == []
    assert model.packets_due(1.06) == [b"a"]


def test_nothing_set_passes_everything_at_once() -> None:
    impairment = Impairment()
    assert not impairment.active
    model = ImpairmentModel(impairment)
    assert model.offer(b"x", 1.0) is True
    assert model.get_timer() is None and model.packets_due(2.0) == []
    assert Impairment(jitter_ms=1).active and Impairment(seed=5).active is False


def test_a_due_packet_waits_behind_packets_already_due() -> None:
    # Packets due but not yet collected go first: the one offered now never jumps them.
    model = ImpairmentModel(Impairment(jitter_ms=10, seed=2))
    while model.offer(b"first", 0.0):
        pass
    at = model.get_timer()
    assert at is not None
    model.offer(b"second", at + 0.001)
    assert model.packets_due(at + 0.001)[0] == b"first"


def test_clear_forgets_what_is_held() -> None:
    model = ImpairmentModel(Impairment(jitter_ms=100, seed=4))
    for i in range(10):
        model.offer(bytes([i]), 0.0)
    held = model.held
    assert held > 0
    assert model.clear() == held and model.get_timer() is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"loss_percent": 101}, "loss_percent 101: give a percentage 0-100"),
    ({"loss_percent": -1}, "loss_percent -1"),
    ({"loss_percent": math.nan}, "loss_percent nan"),
    ({"reorder_percent": True}, "reorder_percent True"),
    ({"jitter_ms": 5000}, "jitter_ms 5000: give milliseconds 0-1000"),
    ({"jitter_ms": "10"}, "jitter_ms '10'"),
    ({"seed": 1.5}, "seed 1.5: give an integer or a text"),
])
def test_impossible_settings_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ImpairmentError, match=message.replace("(", r"\(")):
        Impairment(**fields)  # type: ignore[arg-type]


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ImpairmentError, match="interval"):
        ImpairmentModel(Impairment(loss_percent=1), interval=0)


@settings(max_examples=60, deadline=None)
@given(loss=st.floats(0, 100), jitter=st.floats(0, 200), reorder=st.floats(0, 100),
       seed=st.integers(0, 2**32), steps=st.lists(st.floats(0, 0.05), min_size=1, max_size=200))
def test_every_packet_is_lost_or_sent_once_never_early(
    loss: float, jitter: float, reorder: float, seed: int, steps: list[float]
) -> None:
    model = ImpairmentModel(Impairment(loss_percent=loss, jitter_ms=jitter,
                                       reorder_percent=reorder, seed=seed))
    sent: list[tuple[float, int]] = []
    offered: dict[int, float] = {}
    now = 0.0
    for number, step in enumerate(steps):
        now += step
        while (at := model.get_timer()) is not None and at <= now:
            sent += [(at, int.from_bytes(p, "big")) for p in model.packets_due(at)]
        offered[number] = now
        if model.offer(number.to_bytes(2, "big"), now):
            sent.append((now, number))
        sent += [(now, int.from_bytes(p, "big")) for p in model.packets_due(now)]
    while (at := model.get_timer()) is not None:
        sent += [(at, int.from_bytes(p, "big")) for p in model.packets_due(at)]
    numbers = [n for _, n in sent]
    assert len(numbers) == len(set(numbers)) == len(steps) - model.dropped
    assert model.offered == len(steps)
    for at, number in sent:
        assert at >= offered[number]
        assert at - offered[number] <= jitter / 1000 * 2 + 1.5 * 0.020 + 1e-9
