"""The seeded impairment core: loss as set, jitter that never reorders, reordering."""

from __future__ import annotations

import itertools

from phone_sim.fleet.impairment import ImpairmentCore, ImpairmentSettings


def _run(core: ImpairmentCore, n: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(n):
        now = i * 0.02
        core.send(i.to_bytes(4, "big"), now)
        out += core.due(now)
    out += core.due(1e9)
    return out


def test_loss_matches_setting_and_is_seeded() -> None:
    a = ImpairmentCore(ImpairmentSettings(loss=0.05, seed="s"))
    out = _run(a, 20_000)
    assert a.dropped == 20_000 - len(out)
    assert 0.045 < a.dropped / 20_000 < 0.055
    b = ImpairmentCore(ImpairmentSettings(loss=0.05, seed="s"))
    assert _run(b, 20_000) == out
    c = ImpairmentCore(ImpairmentSettings(loss=0.05, seed="other"))
    assert _run(c, 20_000) != out


def test_jitter_delays_without_reordering() -> None:
    core = ImpairmentCore(ImpairmentSettings(jitter=0.05, seed="j"))
    core.send(b"a", 0.0)
    assert core.get_timer() is not None and core.get_timer() <= 0.05
    out = _run(core, 1000)
    numbers = [int.from_bytes(p, "big") for p in out[1:]]
    assert numbers == sorted(numbers) and len(numbers) == 1000


def test_reordering() -> None:
    core = ImpairmentCore(ImpairmentSettings(reorder=0.1, seed="r"))
    out = [int.from_bytes(p, "big") for p in _run(core, 5000)]
    swapped = sum(1 for x, y in itertools.pairwise(out) if y < x)
    assert len(out) == 5000
    assert swapped == core.reordered
    assert 350 < swapped < 650


def test_nothing_set_passes_everything_at_once() -> None:
    core = ImpairmentCore(ImpairmentSettings())
    core.send(b"x", 1.0)
    assert core.due(1.0) == [b"x"]
    assert core.get_timer() is None
