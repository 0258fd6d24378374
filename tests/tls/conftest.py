"""Shared TLS test material: one test PKI per session (generation takes a few ms)."""

from __future__ import annotations

import pytest

from phone_sim.firmware import FIRMWARE_CLASSES
from phone_sim.tls.client import TlsClientContext, TrustStore
from phone_sim.tls.pki import TestPki, generate_test_pki


@pytest.fixture(scope="session")
def pki() -> TestPki:
    return generate_test_pki()


@pytest.fixture(scope="session")
def trust(pki: TestPki) -> TrustStore:
    return TrustStore(ca_certificates=pki.trusted)


@pytest.fixture(scope="session")
def class_contexts(trust: TrustStore) -> dict[str, TlsClientContext]:
    """One shared context per firmware class, as the SIP layer will share them."""
    return {c.id: TlsClientContext(c.profile, trust) for c in FIRMWARE_CLASSES}
