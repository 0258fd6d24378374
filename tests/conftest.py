"""Shared test configuration."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# The real-peer fixtures and hooks for every test (docs/peers.md): a test anywhere may start
# Kamailio, baresip, SIPp or tshark, and the peer marker rules apply to all of them.
pytest_plugins = ["tests.peers.plugin"]

# CI keeps the fuzzing budget bounded so the whole suite stays well under its time limit;
# HYPOTHESIS_PROFILE=thorough runs many more examples by hand.
settings.register_profile(
    "default",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
