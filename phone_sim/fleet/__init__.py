"""``phone-sim fleet``: many phones that register and call each other from a scenario file,
with results on disk as they happen, a live view, thresholds and an HTML report.

See ``docs/load-testing.md``. Sans-I/O parts: :mod:`~phone_sim.fleet.scenario` (the file),
:mod:`~phone_sim.fleet.plan` (phones and calls), :mod:`~phone_sim.fleet.metrics` (metrics,
thresholds, summary), :mod:`~phone_sim.fleet.impairment`, :mod:`~phone_sim.fleet.report`.
The asyncio shells are the ``aio_*`` modules.
"""

from __future__ import annotations

from phone_sim.fleet.metrics import METRICS, Metric, Threshold, parse_threshold, summarize
from phone_sim.fleet.plan import CallPlan, FleetPlan, PhonePlan
from phone_sim.fleet.results import Results, ResultsError, read_results
from phone_sim.fleet.scenario import Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = [
    "METRICS",
    "CallPlan",
    "FleetPlan",
    "Metric",
    "PhonePlan",
    "Results",
    "ResultsError",
    "Scenario",
    "ScenarioError",
    "Threshold",
    "load_scenario",
    "parse_scenario",
    "parse_threshold",
    "read_results",
    "summarize",
]
