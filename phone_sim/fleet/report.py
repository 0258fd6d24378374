"""The HTML report of a fleet run: one self-contained file (plotly's JavaScript inlined, no
network needed to open it) built from the result records alone, so a run that was killed
half-way reports what it recorded.

Plots: registration latency, provisioning (time to configuration and boot time, when the
phones boot through provisioning), registrations and calls over time, concurrent calls,
set-up time, media loss / jitter / MOS distributions, failures by cause; and a table of the
metrics and thresholds.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from typing import Any

from phone_sim.fleet.metrics import METRICS, PROVISIONING_METRICS, Threshold, summarize

__all__ = ["PLOT_IDS", "render_report"]

#: The id of every plot's ``div`` (the browser test checks each one rendered).
PLOT_IDS: tuple[str, ...] = (
    "registration-latency",
    "provisioning",
    "over-time",
    "concurrent-calls",
    "setup-time",
    "media-loss",
    "media-jitter",
    "media-mos",
    "failures",
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
td:nth-child(2) { white-space: nowrap; }
.held { color: #1a7f37; font-weight: bold; } .breached { color: #cf222e; font-weight: bold; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.plot { border: 1px solid #eee; border-radius: 6px; padding: 0.3em; min-height: 360px; }
.wide { grid-column: 1 / 3; } .warn { background: #fff8c5; padding: 0.5em 1em; }
"""


def _layout(fig: Any, title: str, x: str, y: str) -> None:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=360,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, template="plotly_white",
                      legend={"orientation": "h", "y": -0.2})


def _empty(fig: Any, what: str) -> None:
    fig.add_annotation(text=f"no {what} in this run", showarrow=False, x=0.5, y=0.5,
                       xref="paper", yref="paper", font={"size": 16, "color": "#888"})


def _histogram(values: list[float], title: str, x: str, what: str, color: str) -> Any:
    import plotly.graph_objects as go  # noqa: PLC0415  (heavy; the fleet itself never needs it)

    fig = go.Figure()
    if values and min(values) == max(values):
        # One value (no loss on any leg, say): plotly would stretch its one bin over the
        # whole plot. A narrow bar in a readable range, and the value said in words.
        value = values[0]
        width = max(abs(value) * 0.01, 0.01)
        fig.add_trace(go.Histogram(x=values, marker_color=color, name=x,
                                   xbins={"start": value - width / 2,
                                          "end": value + width / 2, "size": width}))
        fig.update_xaxes(range=[value - 25 * width, value + 25 * width])
        fig.add_annotation(text=f"all {len(values)}: {value:.4g}", showarrow=False, x=0.98,
                           y=0.95, xref="paper", yref="paper", xanchor="right",
                           font={"size": 14, "color": "#555"})
    elif values:
        fig.add_trace(go.Histogram(x=values, marker_color=color, nbinsx=40, name=x))
    else:
        _empty(fig, what)
    _layout(fig, title, x, "count")
    return fig


def _steps(times: list[float]) -> tuple[list[float], list[int]]:
    ordered = sorted(times)
    return ordered, list(range(1, len(ordered) + 1))


def _concurrent(records: list[Mapping[str, Any]], last: float) -> tuple[list[float], list[int]]:
    changes: list[tuple[float, int]] = []
    for r in records:
        if r.get("ev") == "call_end" and r.get("answered") and r.get("answered_t") is not None:
            changes.append((float(r["answered_t"]), 1))
            changes.append((float(r["t"]), -1))
    changes.sort()
    xs, ys, level = [0.0], [0], 0
    for t, delta in changes:
        xs.append(t)
        ys.append(level)
        level += delta
        xs.append(t)
        ys.append(level)
    xs.append(max(last, xs[-1]))
    ys.append(level)
    return xs, ys


def render_report(records: Iterable[Mapping[str, Any]], *, thresholds: Iterable[Threshold] = (),
                  truncated: bool = False, title: str | None = None) -> str:
    """The report as one HTML document."""
    import plotly.graph_objects as go  # noqa: PLC0415
    from plotly.offline import get_plotlyjs  # noqa: PLC0415

    records = list(records)
    summary = summarize(records, thresholds)
    last = float(summary["seconds"] or 0.0)
    name = title or summary.get("name") or "fleet"
    figures: dict[str, Any] = {}

    regs = [r for r in records if r.get("ev") == "reg"]
    figures["registration-latency"] = _histogram(
        [float(r["latency"]) for r in regs if r.get("ok")],
        "Registration latency (first REGISTER to 200 OK)", "seconds", "registrations",
        "#1f77b4")

    provs = [r for r in records if r.get("ev") == "prov"]
    fig = go.Figure()
    to_config = [float(r["latency"]) for r in provs if r.get("ok") and r.get("latency")
                 is not None]
    boots = [float(r["boot"]) for r in regs if r.get("ok") and r.get("boot") is not None]
    for label, values, color in (("time to configuration", to_config, "#17becf"),
                                 ("boot (to every line registered)", boots, "#bcbd22")):
        if values:
            fig.add_trace(go.Histogram(x=values, name=label, marker_color=color, nbinsx=40,
                                       opacity=0.75))
    if not provs:
        _empty(fig, "provisioning (the phones were configured by the scenario)")
    fig.update_layout(barmode="overlay")
    _layout(fig, "Provisioning: power on to configuration, and to registered", "seconds",
            "phones")
    figures["provisioning"] = fig

    fig = go.Figure()
    series = {
        "provisioned": [float(r["t"]) for r in provs if r.get("ok")],
        "provisioning failed": [float(r["t"]) for r in provs if not r.get("ok")],
        "registered": [float(r["t"]) for r in regs if r.get("ok")],
        "registration failed": [float(r["t"]) for r in regs if not r.get("ok")],
        "calls placed": [float(r["t"]) for r in records if r.get("ev") == "call_start"],
        "calls answered": [float(r["answered_t"]) for r in records
                           if r.get("ev") == "call_end" and r.get("answered_t") is not None],
        "calls failed": [float(r["t"]) for r in records if r.get("ev") == "call_end"
                         and (not r.get("answered") or r.get("cause"))],
        "connections dropped": [float(r["t"]) for r in records if r.get("ev") == "reg_event"
                                and r.get("what") == "dropped"],
        "reprovisioned": [float(r["t"]) for r in records if r.get("ev") == "reprov"
                          and r.get("ok")],
    }
    for label, times in series.items():
        if times:
            xs, ys = _steps(times)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv", name=label))
    if not any(series.values()):
        _empty(fig, "registrations or calls")
    _layout(fig, "Registrations and calls over time (cumulative)", "seconds into the run",
            "count")
    figures["over-time"] = fig

    fig = go.Figure()
    xs, ys = _concurrent(records, last)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="calls up", fill="tozeroy"))
    if len(xs) <= 2:
        _empty(fig, "answered calls")
    _layout(fig, "Concurrent calls", "seconds into the run", "calls up")
    figures["concurrent-calls"] = fig

    calls = [r for r in records if r.get("ev") == "call_end"]
    figures["setup-time"] = _histogram(
        [float(r["setup"]) for r in calls if r.get("setup") is not None],
        "Call set-up time (INVITE to 200 OK)", "seconds", "answered calls", "#2ca02c")

    legs = [r for r in records if r.get("ev") in ("call_end", "leg_end")
            and isinstance(r.get("received"), int) and isinstance(r.get("lost"), int)
            and r["received"] + max(r["lost"], 0) > 0]
    figures["media-loss"] = _histogram(
        [100.0 * max(r["lost"], 0) / (r["received"] + max(r["lost"], 0)) for r in legs],
        "Packet loss per received leg", "percent", "media", "#d62728")
    figures["media-jitter"] = _histogram(
        [float(r["jitter_ms"]) for r in legs if r.get("jitter_ms") is not None],
        "Interarrival jitter per received leg (RFC 3550)", "milliseconds", "media", "#9467bd")
    figures["media-mos"] = _histogram(
        [float(r["mos"]) for r in legs if r.get("mos") is not None],
        "MOS per received leg (E-model)", "MOS", "media", "#8c564b")

    fig = go.Figure()
    failures = summary["failures"]
    if failures:
        causes = list(failures)[::-1]
        fig.add_trace(go.Bar(x=[failures[c] for c in causes], y=causes, orientation="h",
                             marker_color="#ff7f0e"))
    else:
        _empty(fig, "failures")
    _layout(fig, "Failures by cause", "count", "")
    figures["failures"] = fig

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>phone-sim fleet report: {html.escape(str(name))}</title>",
        f"<style>{_STYLE}</style>",
        # Inlined once: the file opens with no network.
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>phone-sim fleet: {html.escape(str(name))}</h1>",
        f'<p class="sub">{summary.get("phones") or "?"} phones, '
        f'{summary.get("shards") or "?"} shard(s), {last:.1f} s recorded'
        + (f", booted through provisioning ({html.escape(str(summary['provisioning']))})"
           if summary.get("provisioning") else "")
        + f'{"" if summary["complete"] else " — the run did not finish"}</p>',
    ]
    if truncated or not summary["complete"]:
        parts.append('<p class="warn">The results end before the run did (it was stopped or '
                     "killed): this report shows what was recorded.</p>")
    thresholds_html, metrics_html = _metrics_table(summary)
    parts.append(thresholds_html)
    parts.append('<div class="grid">')
    for plot_id in PLOT_IDS:
        wide = " wide" if plot_id in ("over-time", "concurrent-calls") else ""
        body = figures[plot_id].to_html(
            full_html=False, include_plotlyjs=False, div_id=plot_id,
            config={"displaylogo": False, "responsive": True},
        )
        parts.append(f'<div class="plot{wide}">{body}</div>')
    parts.append("</div>")
    parts.append(metrics_html)
    parts.append('<script type="application/json" id="summary">'
                 f"{html.escape(json.dumps(summary))}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _metrics_table(summary: Mapping[str, Any]) -> tuple[str, str]:
    rows = []
    for result in summary["thresholds"]:
        unit = METRICS[result["metric"]].unit
        measured = result["measured"]
        shown = "no data" if measured is None else f"{measured:.4g} {unit}"
        css = "held" if result["held"] else "breached"
        rows.append(f"<tr><td>{html.escape(result['threshold'])}</td><td>{shown}</td>"
                    f'<td class="{css}">{"held" if result["held"] else "BREACHED"}</td></tr>')
    thresholds = ("<h2>Thresholds</h2><table><tr><th>threshold</th><th>measured</th>"
                  f"<th>result</th></tr>{''.join(rows)}</table>") if rows else ""
    cells = []
    for key, value in summary["metrics"].items():
        if key in PROVISIONING_METRICS and not summary.get("provisioning"):
            continue  # the phones did not boot through provisioning: nothing to say
        unit = METRICS[key].unit
        shown = "—" if value is None else f"{value:.4g} {unit}"
        cells.append(f"<tr><td>{key}</td><td>{shown}</td>"
                     f"<td>{html.escape(METRICS[key].description)}</td></tr>")
    return thresholds, ("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th>"
                        f"<th>meaning</th></tr>{''.join(cells)}</table>")
