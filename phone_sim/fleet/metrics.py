"""The fleet's metrics (a closed list, with units), thresholds over them, and the summary
computed from the result records.

A result record is one JSON object per line of ``results.jsonl``; ``ev`` says what it is
(:data:`RECORD_KINDS`). Everything here is computed from records alone, so a run that was
killed half-way summarises the same way as one that finished.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from phone_sim.errors import UsageError

__all__ = [
    "METRICS",
    "PROVISIONING_METRICS",
    "RECORD_KINDS",
    "Metric",
    "Threshold",
    "ThresholdResult",
    "compute_metrics",
    "evaluate",
    "parse_threshold",
    "percentile",
    "summarize",
]

#: What each ``ev`` of a result record means.
RECORD_KINDS: dict[str, str] = {
    "run": "the run started (name, phones, shards, wall-clock start)",
    "prov_start": "a phone started to boot through provisioning (mac, model)",
    "prov": "a phone's provisioning ended (ok, latency s, discovery s, fetch s, via, the number "
            "it was given, lines, cause)",
    "reprov": "a check-sync made a phone fetch its configuration again (ok, latency s, cause)",
    "reg_start": "a phone started its first registration",
    "reg": "a phone's first registration ended (ok, latency s, cause)",
    "reg_event": "a later registration fact (dropped, registered, failed, failover)",
    "call_start": "a caller sent its INVITE",
    "call_end": "a call ended, with the caller's figures (setup s, tone, DTMF, media)",
    "leg_end": "the far end of a fleet call ended, with its figures (what it received)",
    "fault": "a fault was injected (connections cut)",
    "unreg": "a phone unregistered at the end",
    "shard": "a shard finished: its CPU seconds, media ticker lateness (p99, max), RSS",
    "end": "the run ended (reason)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """One metric a threshold can name."""

    name: str
    """Its name in thresholds, ``register.p95``."""
    unit: str
    """``s``, ``ms``, ``%`` or ``""`` (a count or a MOS)."""
    description: str
    """What it measures."""


def _m(name: str, unit: str, description: str) -> tuple[str, Metric]:
    return name, Metric(name=name, unit=unit, description=description)


#: The closed list of metrics (docs/load-testing.md repeats it).
METRICS: dict[str, Metric] = dict([
    _m("register.p50", "s", "median first-registration latency (REGISTER sent to 200 OK, "
       "including the TLS handshake and the digest round)"),
    _m("register.p95", "s", "95th percentile first-registration latency"),
    _m("register.p99", "s", "99th percentile first-registration latency"),
    _m("register.max", "s", "slowest first registration"),
    _m("register.failed", "%", "phones whose first registration failed (with provisioning: "
       "of those that got a configuration)"),
    _m("phones.registered", "", "phones whose first registration succeeded"),
    _m("provision.p50", "s", "median time to configuration: power on to the configuration "
       "applied (discovery, fetch and apply)"),
    _m("provision.p95", "s", "95th percentile time to configuration"),
    _m("provision.p99", "s", "99th percentile time to configuration"),
    _m("provision.max", "s", "slowest time to configuration"),
    _m("provision.failed", "%", "phones whose provisioning failed (no server, refused, not "
       "found, unreachable, TLS refused, bad configuration)"),
    _m("phones.provisioned", "", "phones that got and applied their configuration"),
    _m("discovery.p50", "s", "median time to find the configuration server over mDNS"),
    _m("discovery.p95", "s", "95th percentile time to find the configuration server"),
    _m("boot.p50", "s", "median boot: power on to every line registered (provisioning, then "
       "the first registration)"),
    _m("boot.p95", "s", "95th percentile boot time"),
    _m("boot.p99", "s", "99th percentile boot time"),
    _m("reprovisioned", "", "configurations fetched again and applied after a check-sync"),
    _m("calls.attempted", "", "calls placed"),
    _m("calls.answered", "", "calls answered"),
    _m("calls.failed", "%", "calls placed that were not answered or did not end cleanly"),
    _m("setup.p50", "s", "median call set-up time (INVITE to 200 OK)"),
    _m("setup.p95", "s", "95th percentile call set-up time"),
    _m("setup.p99", "s", "99th percentile call set-up time"),
    _m("media.loss", "%", "RTP packets lost over every received call leg"),
    _m("media.loss.max", "%", "the worst leg's packet loss"),
    _m("jitter.p50", "ms", "median interarrival jitter (RFC 3550) per received leg"),
    _m("jitter.p95", "ms", "95th percentile interarrival jitter per received leg"),
    _m("mos.p5", "", "5th percentile MOS (E-model) per received leg: the worst calls"),
    _m("mos.p50", "", "median MOS per received leg"),
    _m("tones.failed", "%", "answered calls whose tone was not heard at the other end"),
    _m("dtmf.failed", "%", "answered calls whose DTMF digits did not all arrive"),
    _m("connections.dropped", "", "connections lost by phones during the run"),
])  # fmt: skip

#: The metrics a run measures only when its phones boot through provisioning.
PROVISIONING_METRICS: frozenset[str] = frozenset(
    name for name in METRICS
    if name.startswith(("provision.", "discovery.", "boot."))
    or name in ("phones.provisioned", "reprovisioned")
)

_THRESHOLD = re.compile(
    r"\s*([a-z0-9_.]+)\s*(<=|>=|<|>)\s*([0-9]+(?:\.[0-9]+)?)\s*(s|ms|%)?\s*"
)
_UNIT_FACTORS = {("s", "s"): 1.0, ("s", "ms"): 0.001, ("ms", "ms"): 1.0, ("ms", "s"): 1000.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    """One pass/fail rule: ``metric op value`` in the metric's unit."""

    text: str
    """As written."""
    metric: str
    """A name from :data:`METRICS`."""
    op: str
    """``<``, ``<=``, ``>`` or ``>=``."""
    value: float
    """The bound, converted to the metric's unit."""

    def holds(self, measured: float) -> bool:
        """Whether *measured* satisfies the rule."""
        return {
            "<": measured < self.value, "<=": measured <= self.value,
            ">": measured > self.value, ">=": measured >= self.value,
        }[self.op]  # fmt: skip


def parse_threshold(text: str) -> Threshold:
    """``register.p95 < 2s`` -> :class:`Threshold`; :class:`UsageError` naming the problem."""
    match = _THRESHOLD.fullmatch(text)
    if match is None:
        raise UsageError(
            f"threshold {text!r}: write METRIC OP VALUE[UNIT], e.g. 'register.p95 < 2s'"
        )
    name, op, number, unit = match.groups()
    metric = METRICS.get(name)
    if metric is None:
        raise UsageError(f"threshold {text!r}: unknown metric {name!r} (one of: "
                         f"{', '.join(METRICS)})")
    value = float(number)
    given = unit or ""
    if metric.unit in ("s", "ms"):
        if given not in ("s", "ms"):
            raise UsageError(f"threshold {text!r}: {name} is a time: give s or ms")
        value *= _UNIT_FACTORS[(metric.unit, given)]
    elif given != metric.unit:
        want = f"in {metric.unit}" if metric.unit else "without a unit"
        raise UsageError(f"threshold {text!r}: {name} is {want}")
    return Threshold(text=text.strip(), metric=name, op=op, value=value)


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdResult:
    """A threshold checked against a run."""

    threshold: Threshold
    """The rule."""
    measured: float | None
    """The metric's value (None: the run has no data for it)."""
    held: bool
    """Whether the rule held (no data never holds)."""

    def describe(self) -> str:
        """``register.p95 < 2s: 0.41 s (held)``."""
        metric = METRICS[self.threshold.metric]
        value = "no data" if self.measured is None else f"{self.measured:.4g} {metric.unit}"
        return f"{self.threshold.text}: {value.strip()} ({'held' if self.held else 'BREACHED'})"


def percentile(values: list[float], q: float) -> float | None:
    """The *q*-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def _legs(records: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every received media leg: the caller's view (call_end) and the far end's (leg_end)."""
    return [r for r in records if r.get("ev") in ("call_end", "leg_end")
            and isinstance(r.get("received"), int) and isinstance(r.get("lost"), int)
            and r["received"] + max(r["lost"], 0) > 0]


def compute_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` from result records (None where there is no data)."""
    records = list(records)
    regs = [r for r in records if r.get("ev") == "reg"]
    ok_latencies = [float(r["latency"]) for r in regs if r.get("ok")]
    calls = [r for r in records if r.get("ev") == "call_end"]
    answered = [c for c in calls if c.get("answered")]
    failed = [c for c in calls if not c.get("answered") or c.get("cause")]
    setups = [float(c["setup"]) for c in answered if c.get("setup") is not None]
    legs = _legs(records)
    lost = sum(max(int(r["lost"]), 0) for r in legs)
    expected = sum(int(r["received"]) + max(int(r["lost"]), 0) for r in legs)
    leg_loss = [100.0 * max(r["lost"], 0) / (r["received"] + max(r["lost"], 0)) for r in legs]
    jitters = [float(r["jitter_ms"]) for r in legs if r.get("jitter_ms") is not None]
    moses = [float(r["mos"]) for r in legs if r.get("mos") is not None]
    tone_checked = [c for c in answered if c.get("tone_ok") is not None]
    dtmf_checked = [r for r in records if r.get("ev") in ("call_end", "leg_end")
                    and r.get("dtmf_ok") is not None]
    drops = sum(1 for r in records if r.get("ev") == "reg_event" and r.get("what") == "dropped")
    provs = [r for r in records if r.get("ev") == "prov"]
    provisioned = [r for r in provs if r.get("ok")]
    to_config = [float(r["latency"]) for r in provisioned if r.get("latency") is not None]
    discoveries = [float(r["discovery"]) for r in provisioned if r.get("discovery") is not None]
    boots = [float(r["boot"]) for r in regs if r.get("ok") and r.get("boot") is not None]
    reprovisions = sum(1 for r in records if r.get("ev") == "reprov" and r.get("ok"))
    return {
        "register.p50": percentile(ok_latencies, 50),
        "register.p95": percentile(ok_latencies, 95),
        "register.p99": percentile(ok_latencies, 99),
        "register.max": max(ok_latencies) if ok_latencies else None,
        "register.failed": _share(len(regs) - len(ok_latencies), len(regs)),
        "phones.registered": float(len(ok_latencies)),
        "calls.attempted": float(len(calls)),
        "calls.answered": float(len(answered)),
        "calls.failed": _share(len(failed), len(calls)),
        "setup.p50": percentile(setups, 50),
        "setup.p95": percentile(setups, 95),
        "setup.p99": percentile(setups, 99),
        "media.loss": None if expected == 0 else 100.0 * lost / expected,
        "media.loss.max": max(leg_loss) if leg_loss else None,
        "jitter.p50": percentile(jitters, 50),
        "jitter.p95": percentile(jitters, 95),
        "mos.p5": percentile(moses, 5),
        "mos.p50": percentile(moses, 50),
        "tones.failed": _share(sum(1 for c in tone_checked if not c["tone_ok"]),
                               len(tone_checked)),
        "dtmf.failed": _share(sum(1 for r in dtmf_checked if not r["dtmf_ok"]),
                              len(dtmf_checked)),
        "connections.dropped": float(drops),
        "provision.p50": percentile(to_config, 50),
        "provision.p95": percentile(to_config, 95),
        "provision.p99": percentile(to_config, 99),
        "provision.max": max(to_config) if to_config else None,
        "provision.failed": _share(len(provs) - len(provisioned), len(provs)),
        "phones.provisioned": float(len(provisioned)),
        "discovery.p50": percentile(discoveries, 50),
        "discovery.p95": percentile(discoveries, 95),
        "boot.p50": percentile(boots, 50),
        "boot.p95": percentile(boots, 95),
        "boot.p99": percentile(boots, 99),
        "reprovisioned": float(reprovisions),
    }


def evaluate(thresholds: Iterable[Threshold], metrics: Mapping[str, float | None]
             ) -> list[ThresholdResult]:
    """Check every threshold against computed metrics."""
    results = []
    for threshold in thresholds:
        measured = metrics.get(threshold.metric)
        held = measured is not None and threshold.holds(measured)
        results.append(ThresholdResult(threshold=threshold, measured=measured, held=held))
    return results


def failure_causes(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Failures grouped by cause (``provision: HTTP 404``, ``register: 503``,
    ``call: timeout``, ``register: tls EUNTRUSTED``), most frequent first."""
    counts: Counter[str] = Counter()
    for r in records:
        ev = r.get("ev")
        cause = r.get("cause")
        if not cause:
            continue
        if ev == "prov" and not r.get("ok"):
            counts[f"provision: {cause}"] += 1
        elif ev == "reprov" and not r.get("ok"):
            counts[f"reprovision: {cause}"] += 1
        elif ev == "reg" and not r.get("ok"):
            counts[f"register: {cause}"] += 1
        elif ev == "reg_event" and r.get("what") in ("failed", "dropped"):
            counts[f"{r['what']}: {cause}"] += 1
        elif ev == "call_end":
            counts[f"call: {cause}"] += 1
    return dict(counts.most_common())


def summarize(records: Iterable[Mapping[str, Any]], thresholds: Iterable[Threshold]
              ) -> dict[str, Any]:
    """The summary JSON of a run: metrics, thresholds, failures by cause."""
    records = list(records)
    metrics = compute_metrics(records)
    results = evaluate(thresholds, metrics)
    run = next((r for r in records if r.get("ev") == "run"), {})
    end = next((r for r in reversed(records) if r.get("ev") == "end"), None)
    return {
        "name": run.get("name"),
        "phones": run.get("phones"),
        "provisioning": run.get("provisioning"),
        "shards": run.get("shards"),
        "started": run.get("started"),
        "complete": end is not None,
        "ended": None if end is None else end.get("reason"),
        "seconds": max((float(r.get("t", 0.0)) for r in records), default=0.0),
        "metrics": {k: (None if v is None else round(v, 6)) for k, v in metrics.items()},
        "units": {k: m.unit for k, m in METRICS.items()},
        "failures": failure_causes(records),
        "thresholds": [
            {"threshold": r.threshold.text, "metric": r.threshold.metric,
             "measured": r.measured, "held": r.held} for r in results
        ],
        "breached": [r.describe() for r in results if not r.held],
        "shard_costs": [
            {k: r.get(k) for k in ("shard", "cpu_s", "lateness_p99_ms", "lateness_max_ms",
                                   "rss_kb")}
            for r in records if r.get("ev") == "shard"
        ],
    }
