"""Fixtures for the call tests: the real peers of tests/peers (Kamailio, baresip, SIPp)."""

from tests.peers.plugin import *  # noqa: F403
