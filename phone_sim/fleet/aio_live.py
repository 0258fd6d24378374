"""What a person watching a fleet run sees: a rich live table on a terminal, plain lines
otherwise; and the Prometheus endpoint (``--metrics-port``, on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

from phone_sim.fleet.live import LiveState

__all__ = ["LiveView", "MetricsServer", "status_line"]

#: Seconds between two plain status lines.
LINE_INTERVAL = 2.0


def _fmt(value: float | None, unit: str, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g} {unit}".strip()


def status_line(name: str, state: LiveState) -> str:
    """One plain line of progress."""
    causes = ", ".join(f"{c} x{n}" for c, n in state.causes.most_common(4))
    booting = (
        f"provisioned {state.provisioned}/{state.phones}, {state.booting} booting, "
        f"{state.provision_failed} failed, to config {_fmt(state.provision_mean, 's')} | "
    ) if state.provisioning else ""
    return (
        f"[{name} {state.now:7.1f}s] {booting}phones {state.registered}/{state.phones} registered, "
        f"{state.registering} registering, {state.failed} failed | calls {state.calls_active} up, "
        f"{state.calls_started} placed ({state.calls_per_second:.1f}/s), "
        f"{state.calls_failed} failed, setup {_fmt(state.setup_mean, 's')}, "
        f"loss {_fmt(state.loss_percent, '%')}" + (f" | failures: {causes}" if causes else "")
    )


class LiveView:
    """The live view of *state*: rich on a terminal, plain lines when *stream* is not one."""

    def __init__(self, name: str, state: LiveState, stream: IO[str] | None = None,
                 *, rich: bool | None = None) -> None:
        self.name = name
        self.state = state
        self.stream = stream or sys.stdout
        self.rich = self.stream.isatty() if rich is None else rich
        self._live: Any = None
        self._task: asyncio.Task[None] | None = None

    def _table(self) -> Any:
        from rich.table import Table  # noqa: PLC0415

        s = self.state
        table = Table(title=f"phone-sim fleet: {self.name}  ({s.now:.1f} s)", expand=False,
                      show_header=False)
        table.add_column("", style="bold")
        table.add_column("", justify="right")
        rows = []
        if s.provisioning:
            rows += [
                ("phones provisioned", f"{s.provisioned} / {s.phones}"),
                ("booting (discovery, fetch)", str(s.booting)),
                ("provisioning failed", str(s.provision_failed)),
                ("time to config (recent mean)", _fmt(s.provision_mean, "s")),
                ("reprovisioned (check-sync)", str(s.reprovisioned)),
            ]
        rows += [
            ("phones registered", f"{s.registered} / {s.phones}"),
            ("registering", str(s.registering)),
            ("registration failed", str(s.failed)),
            ("registrations/s", f"{s.registrations_per_second:.1f}"),
            ("connections dropped", str(s.dropped)),
            ("calls up", str(s.calls_active)),
            ("calls placed", f"{s.calls_started} ({s.calls_per_second:.1f}/s)"),
            ("calls answered / failed", f"{s.calls_answered} / {s.calls_failed}"),
            ("set-up time (recent mean)", _fmt(s.setup_mean, "s")),
            ("media loss", _fmt(s.loss_percent, "%")),
        ]
        for label, value in rows:
            table.add_row(label, value)
        if s.causes:
            table.add_section()
            for cause, count in s.causes.most_common(8):
                table.add_row(f"[red]{cause}[/red]", str(count))
        return table

    def start(self) -> None:
        """Start showing."""
        if self.rich:
            from rich.console import Console  # noqa: PLC0415
            from rich.live import Live  # noqa: PLC0415

            self._live = Live(get_renderable=self._table, refresh_per_second=2,
                              console=Console(file=self.stream), transient=False)
            self._live.start()
        else:
            self._task = asyncio.get_running_loop().create_task(self._lines())

    async def _lines(self) -> None:
        while True:
            await asyncio.sleep(LINE_INTERVAL)
            print(status_line(self.name, self.state), file=self.stream, flush=True)

    def stop(self) -> None:
        """Show the final state and stop."""
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.stop()
            self._live = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
            print(status_line(self.name, self.state), file=self.stream, flush=True)


class _Collector:
    def __init__(self, state: LiveState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        s = self.state
        gauges = {
            "phonesim_fleet_phones": ("phones in the fleet", s.phones),
            "phonesim_fleet_phones_registered": ("phones registered now", s.registered),
            "phonesim_fleet_phones_registering": ("phones registering now", s.registering),
            "phonesim_fleet_phones_booting": ("phones discovering or fetching their "
                                              "configuration now", s.booting),
            "phonesim_fleet_calls_active": ("calls up now", s.calls_active),
            "phonesim_fleet_calls_per_second": ("calls placed per second lately",
                                                s.calls_per_second),
            "phonesim_fleet_run_seconds": ("seconds into the run", s.now),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=float(value))
        counters = {
            "phonesim_fleet_registrations_failed": ("first registrations failed", s.failed),
            "phonesim_fleet_phones_provisioned": ("phones provisioned", s.provisioned),
            "phonesim_fleet_provisioning_failed": ("phones whose provisioning failed",
                                                   s.provision_failed),
            "phonesim_fleet_reprovisioned": ("configurations fetched again (check-sync)",
                                             s.reprovisioned),
            "phonesim_fleet_connections_dropped": ("connections dropped", s.dropped),
            "phonesim_fleet_calls_placed": ("calls placed", s.calls_started),
            "phonesim_fleet_calls_answered": ("calls answered", s.calls_answered),
            "phonesim_fleet_calls_failed": ("calls failed", s.calls_failed),
            "phonesim_fleet_rtp_packets_received": ("RTP packets received on ended legs",
                                                    s.packets_received),
            "phonesim_fleet_rtp_packets_lost": ("RTP packets lost on ended legs",
                                                s.packets_lost),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=float(value))
        failures = CounterMetricFamily("phonesim_fleet_failures", "failures by cause",
                                       labels=["cause"])
        for cause, count in s.causes.items():
            failures.add_metric([cause], float(count))
        yield failures
        latency = list(s.registration_latency)
        if latency:
            latency.sort()
            summary = GaugeMetricFamily("phonesim_fleet_register_latency_seconds",
                                        "recent first-registration latency quantiles",
                                        labels=["quantile"])
            for q in (0.5, 0.95, 0.99):
                summary.add_metric([str(q)], latency[min(int(q * len(latency)),
                                                         len(latency) - 1)])
            yield summary


class MetricsServer:
    """Prometheus metrics of *state* on ``127.0.0.1:port`` while the run lasts."""

    def __init__(self, state: LiveState, port: int, host: str = "127.0.0.1") -> None:
        self.state = state
        self.port = port
        self.host = host
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Start serving; the port bound."""
        from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.state))
        self._server, self._thread = start_http_server(self.port, addr=self.host,
                                                       registry=registry)
        self.port = self._server.server_address[1]
        return int(self.port)

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
