"""Shared test configuration."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.testing.aio_process import PeerProcess
from phone_sim.testing.aio_pytest_peers import BaresipFactory, CaptureFactory, KamailioFactory
from phone_sim.testing.certs import TestPki

# The real-peer fixtures come with the package's pytest plugin (phone_sim_kamailio...); the
# suite's own rules about them (CI=true fails a missing peer, the peer marker must match what
# a test starts: docs/peers.md) apply to every test.
pytest_plugins = ["tests.peer_rules"]


# The suite's short names for the plugin's peer fixtures: the same objects, not copies.
@pytest.fixture(scope="session")
def peer_pki(phone_sim_peer_pki: TestPki) -> TestPki:
    """``phone_sim_peer_pki``."""
    return phone_sim_peer_pki


@pytest.fixture
def peer_tracker(phone_sim_peer_tracker: list[PeerProcess]) -> list[PeerProcess]:
    """``phone_sim_peer_tracker``."""
    return phone_sim_peer_tracker


@pytest.fixture
def kamailio_factory(phone_sim_kamailio_factory: KamailioFactory) -> KamailioFactory:
    """``phone_sim_kamailio_factory``."""
    return phone_sim_kamailio_factory


@pytest.fixture
def kamailio(phone_sim_kamailio: Kamailio) -> Kamailio:
    """``phone_sim_kamailio``."""
    return phone_sim_kamailio


@pytest.fixture
def baresip_factory(phone_sim_baresip_factory: BaresipFactory) -> BaresipFactory:
    """``phone_sim_baresip_factory``."""
    return phone_sim_baresip_factory


@pytest.fixture
def capture_factory(phone_sim_capture_factory: CaptureFactory) -> CaptureFactory:
    """``phone_sim_capture_factory``."""
    return phone_sim_capture_factory


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
