"""The live state folded from records, the plain line and the rich table."""

from __future__ import annotations

import io

from phone_sim.fleet.aio_live import LiveView, status_line
from phone_sim.fleet.live import LiveState

RECORDS = [
    {"t": 0.0, "ev": "run", "phones": 3},
    {"t": 0.1, "ev": "reg_start", "phone": "1"},
    {"t": 0.1, "ev": "reg_start", "phone": "2"},
    {"t": 0.1, "ev": "reg_start", "phone": "3"},
    {"t": 0.2, "ev": "reg", "phone": "1", "ok": True, "latency": 0.1},
    {"t": 0.3, "ev": "reg", "phone": "2", "ok": False, "latency": 0.2,
     "cause": "tls EUNTRUSTED"},
    {"t": 1.0, "ev": "call_start", "call": 0},
    {"t": 1.1, "ev": "call_start", "call": 1},
    {"t": 1.2, "ev": "call_end", "call": 5, "answered": False, "placed": False,
     "cause": "caller not registered"},
    {"t": 3.0, "ev": "call_end", "call": 0, "answered": True, "setup": 0.05, "received": 95,
     "lost": 5},
]


def test_state_and_plain_line() -> None:
    state = LiveState()
    for record in RECORDS:
        state.update(record)
    assert (state.phones, state.registered, state.registering, state.failed) == (3, 1, 1, 1)
    assert (state.calls_started, state.calls_active, state.calls_answered) == (2, 1, 1)
    assert state.calls_failed == 1
    assert state.loss_percent == 5.0
    line = status_line("x", state)
    assert "phones 1/3 registered, 1 registering, 1 failed" in line
    assert "register: tls EUNTRUSTED x1" in line


def test_rich_table_renders() -> None:
    state = LiveState()
    for record in RECORDS:
        state.update(record)
    out = io.StringIO()
    view = LiveView("demo", state, out, rich=True)
    from rich.console import Console

    Console(file=out, width=100).print(view._table())
    text = out.getvalue()
    assert "phone-sim fleet: demo" in text
    assert "1 / 3" in text and "register: tls EUNTRUSTED" in text


def test_provisioning_in_the_live_view() -> None:
    state = LiveState()
    for record in [
        {"t": 0.0, "ev": "run", "phones": 3, "provisioning": "mdns"},
        {"t": 0.1, "ev": "prov_start", "mac": "a"},
        {"t": 0.1, "ev": "prov_start", "mac": "b"},
        {"t": 0.1, "ev": "prov_start", "mac": "c"},
        {"t": 0.5, "ev": "prov", "mac": "a", "ok": True, "latency": 0.4},
        {"t": 0.6, "ev": "prov", "mac": "b", "ok": False, "latency": 0.5, "cause": "HTTP 404"},
        {"t": 3.0, "ev": "reprov", "phone": "1", "ok": True},
    ]:
        state.update(record)
    assert (state.provisioned, state.booting, state.provision_failed) == (1, 1, 1)
    assert state.reprovisioned == 1 and state.provision_mean == 0.4
    line = status_line("b", state)
    assert "provisioned 1/3, 1 booting, 1 failed, to config 0.4 s" in line
    assert "provision: HTTP 404 x1" in line
    out = io.StringIO()
    from rich.console import Console

    Console(file=out, width=100).print(LiveView("b", state, out, rich=True)._table())
    assert "phones provisioned" in out.getvalue() and "1 / 3" in out.getvalue()
    # A run configured by the scenario shows no provisioning rows.
    plain = LiveState()
    plain.update({"t": 0.0, "ev": "run", "phones": 3})
    assert "provisioned" not in status_line("x", plain)
