"""Metrics from records, thresholds and their units, the summary."""

from __future__ import annotations

import pytest

from phone_sim.errors import UsageError
from phone_sim.fleet.metrics import (
    METRICS,
    PROVISIONING_METRICS,
    compute_metrics,
    evaluate,
    parse_threshold,
    percentile,
    summarize,
)


def test_threshold_parsing_and_units() -> None:
    t = parse_threshold("register.p95 < 2s")
    assert (t.metric, t.op, t.value) == ("register.p95", "<", 2.0)
    assert parse_threshold("setup.p99<=250ms").value == pytest.approx(0.25)
    assert parse_threshold("jitter.p95 < 0.03s").value == pytest.approx(30.0)
    assert parse_threshold("mos.p5 > 4").holds(4.2)
    assert not parse_threshold("calls.failed < 1%").holds(1.0)
    for bad, why in [("register.p95 < 2", "is a time"), ("mos.p5 > 4%", "without a unit"),
                     ("calls.failed < 1", "is in %"), ("nope < 1", "unknown metric"),
                     ("register.p95 = 2s", "write METRIC OP VALUE")]:
        with pytest.raises(UsageError, match=why):
            parse_threshold(bad)


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)


RECORDS = [
    {"t": 0, "ev": "run", "name": "x", "phones": 4, "shards": 1},
    {"t": 0.1, "ev": "reg", "phone": "1", "ok": True, "latency": 0.1},
    {"t": 0.2, "ev": "reg", "phone": "2", "ok": True, "latency": 0.3},
    {"t": 0.3, "ev": "reg", "phone": "3", "ok": True, "latency": 0.2},
    {"t": 0.4, "ev": "reg", "phone": "4", "ok": False, "latency": 1.0, "cause": "503"},
    {"t": 2, "ev": "call_end", "answered": True, "setup": 0.05, "tone_ok": True,
     "received": 90, "lost": 10, "jitter_ms": 2.0, "mos": 4.0, "answered_t": 1.0},
    {"t": 2, "ev": "leg_end", "received": 100, "lost": 0, "jitter_ms": 1.0, "mos": 4.4,
     "dtmf_ok": False},
    {"t": 3, "ev": "call_end", "answered": False, "setup": None, "cause": "timeout"},
    {"t": 3, "ev": "reg_event", "what": "dropped", "cause": "connection"},
]


def test_compute_metrics() -> None:
    m = compute_metrics(RECORDS)
    assert set(m) == set(METRICS)
    assert m["register.p50"] == pytest.approx(0.2)
    assert m["register.max"] == pytest.approx(0.3)
    assert m["register.failed"] == pytest.approx(25.0)
    assert m["calls.attempted"] == 2 and m["calls.answered"] == 1
    assert m["calls.failed"] == pytest.approx(50.0)
    assert m["media.loss"] == pytest.approx(100 * 10 / 200)
    assert m["media.loss.max"] == pytest.approx(10.0)
    assert m["tones.failed"] == 0.0 and m["dtmf.failed"] == 100.0
    assert m["connections.dropped"] == 1


def test_summary_and_breaches() -> None:
    thresholds = [parse_threshold("register.p95 < 1s"), parse_threshold("calls.failed < 1%"),
                  parse_threshold("setup.p95 < 10ms")]
    summary = summarize(RECORDS, thresholds)
    assert not summary["complete"]
    assert summary["failures"] == {"register: 503": 1, "call: timeout": 1,
                                   "dropped: connection": 1}
    held = {t["threshold"]: t["held"] for t in summary["thresholds"]}
    assert held == {"register.p95 < 1s": True, "calls.failed < 1%": False,
                    "setup.p95 < 10ms": False}
    assert summary["breached"][0].startswith("calls.failed < 1%: 50 %")


def test_no_data_never_holds() -> None:
    [result] = evaluate([parse_threshold("mos.p5 > 3")], compute_metrics([]))
    assert result.measured is None and not result.held
    assert "no data" in result.describe()


BOOTS = [
    {"t": 0, "ev": "run", "name": "b", "phones": 4, "shards": 1, "provisioning": "mdns"},
    {"t": 0.1, "ev": "prov", "mac": "m1", "ok": True, "latency": 0.4, "discovery": 0.3,
     "fetch": 0.1, "phone": "1", "index": 0},
    {"t": 0.2, "ev": "prov", "mac": "m2", "ok": True, "latency": 0.2, "discovery": 0.0,
     "fetch": 0.2, "phone": "2", "index": 1},
    {"t": 0.3, "ev": "prov", "mac": "m3", "ok": False, "latency": 0.1,
     "cause": "HTTP 404"},
    {"t": 0.3, "ev": "prov", "mac": "m4", "ok": False, "latency": 5.0, "cause": "timeout"},
    {"t": 0.5, "ev": "reg", "phone": "1", "ok": True, "latency": 0.1, "boot": 0.5},
    {"t": 0.6, "ev": "reg", "phone": "2", "ok": True, "latency": 0.1, "boot": 0.3},
    {"t": 4, "ev": "reprov", "phone": "1", "ok": True, "latency": 0.1},
    {"t": 4, "ev": "reprov", "phone": "2", "ok": False, "cause": "refused"},
]


def test_provisioning_metrics_and_causes() -> None:
    m = compute_metrics(BOOTS)
    assert m["phones.provisioned"] == 2 and m["provision.failed"] == pytest.approx(50.0)
    assert m["provision.p50"] == pytest.approx(0.3) and m["provision.max"] == pytest.approx(0.4)
    assert m["discovery.p50"] == pytest.approx(0.15)
    assert m["boot.p50"] == pytest.approx(0.4) and m["boot.p99"] == pytest.approx(0.498)
    assert m["register.failed"] == 0.0  # of the phones that got a configuration
    assert m["reprovisioned"] == 1
    summary = summarize(BOOTS, [parse_threshold("provision.failed < 1%"),
                                parse_threshold("provision.p95 < 500ms")])
    assert summary["failures"] == {"provision: HTTP 404": 1, "provision: timeout": 1,
                                   "reprovision: refused": 1}
    assert [t["held"] for t in summary["thresholds"]] == [False, True]
    assert summary["provisioning"] == "mdns"
    families = {n for n in METRICS if n.split(".")[0] in ("provision", "discovery", "boot")}
    assert families | {"phones.provisioned", "reprovisioned"} == set(PROVISIONING_METRICS)
    times = [n for n in PROVISIONING_METRICS if n.endswith((".p50", ".p95", ".p99", ".max"))]
    assert len(times) == 9 and {METRICS[n].unit for n in times} == {"s"}
    # A run without provisioning measures none of them.
    assert all(compute_metrics(RECORDS)[n] in (None, 0.0) for n in PROVISIONING_METRICS)
