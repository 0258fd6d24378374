"""The live state of a run, folded from its records as they arrive (for the live view and
the Prometheus metrics)."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LiveState"]

#: Seconds over which calls/s and registrations/s are averaged.
RATE_WINDOW = 5.0


@dataclass(slots=True)
class LiveState:
    """Counters of a run in progress."""

    phones: int = 0
    provisioning: bool = False
    booting: int = 0
    provisioned: int = 0
    provision_failed: int = 0
    reprovisioned: int = 0
    provision_last: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    registering: int = 0
    registered: int = 0
    failed: int = 0
    dropped: int = 0
    calls_started: int = 0
    calls_active: int = 0
    calls_answered: int = 0
    calls_failed: int = 0
    legs: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    setup_last: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    causes: Counter[str] = field(default_factory=Counter)
    now: float = 0.0
    _call_times: deque[float] = field(default_factory=deque)
    _reg_times: deque[float] = field(default_factory=deque)
    registration_latency: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def update(self, r: dict[str, Any]) -> None:
        """Fold one record in."""
        ev = r.get("ev")
        t = float(r.get("t", self.now))
        self.now = max(self.now, t)
        if ev == "run":
            self.phones = int(r.get("phones", 0))
            self.provisioning = bool(r.get("provisioning"))
        elif ev == "prov_start":
            self.booting += 1
        elif ev == "prov":
            self.booting = max(self.booting - 1, 0)
            if r.get("ok"):
                self.provisioned += 1
                if r.get("latency") is not None:
                    self.provision_last.append(float(r["latency"]))
            else:
                self.provision_failed += 1
                self.causes[f"provision: {r.get('cause')}"] += 1
        elif ev == "reprov":
            if r.get("ok"):
                self.reprovisioned += 1
            else:
                self.causes[f"reprovision: {r.get('cause')}"] += 1
        elif ev == "reg_start":
            self.registering += 1
        elif ev == "reg":
            if r.get("latency") is not None:  # it had started (a reg_start before it)
                self.registering = max(self.registering - 1, 0)
            if r.get("ok"):
                self.registered += 1
                self._reg_times.append(t)
                self.registration_latency.append(float(r["latency"]))
            else:
                self.failed += 1
                self.causes[f"register: {r.get('cause')}"] += 1
        elif ev == "reg_event":
            what = r.get("what")
            if what == "dropped":
                self.dropped += 1
                self.registered = max(self.registered - 1, 0)
                self.causes["dropped: connection"] += 1
            elif what == "registered":
                self.registered += 1
            elif what == "failed":
                self.causes[f"failed: {r.get('cause')}"] += 1
        elif ev == "call_start":
            self.calls_started += 1
            self.calls_active += 1
            self._call_times.append(t)
        elif ev == "call_end":
            if r.get("placed", True):
                self.calls_active = max(self.calls_active - 1, 0)
            if r.get("answered"):
                self.calls_answered += 1
                if r.get("setup") is not None:
                    self.setup_last.append(float(r["setup"]))
            if not r.get("answered") or r.get("cause"):
                self.calls_failed += 1
                self.causes[f"call: {r.get('cause')}"] += 1
            self._media(r)
        elif ev == "leg_end":
            self._media(r)
        elif ev == "unreg" and r.get("ok"):
            self.registered = max(self.registered - 1, 0)

    def _media(self, r: dict[str, Any]) -> None:
        received, lost = r.get("received"), r.get("lost")
        if isinstance(received, int) and isinstance(lost, int):
            self.legs += 1
            self.packets_received += received
            self.packets_lost += max(lost, 0)

    def _rate(self, times: deque[float]) -> float:
        while times and times[0] < self.now - RATE_WINDOW:
            times.popleft()
        return len(times) / RATE_WINDOW

    @property
    def calls_per_second(self) -> float:
        """Calls started per second, lately."""
        return self._rate(self._call_times)

    @property
    def registrations_per_second(self) -> float:
        """Registrations succeeded per second, lately."""
        return self._rate(self._reg_times)

    @property
    def provision_mean(self) -> float | None:
        """Mean time to configuration of the latest provisioned phones, in seconds."""
        if not self.provision_last:
            return None
        return sum(self.provision_last) / len(self.provision_last)

    @property
    def setup_mean(self) -> float | None:
        """Mean set-up time of the latest calls, in seconds."""
        return sum(self.setup_last) / len(self.setup_last) if self.setup_last else None

    @property
    def loss_percent(self) -> float | None:
        """Media loss so far over every ended leg, in percent."""
        total = self.packets_received + self.packets_lost
        return None if total == 0 else 100.0 * self.packets_lost / total
