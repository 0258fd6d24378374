"""Fixtures for the phone tests: the real peers of tests/peers (Kamailio, SIPp)."""

from tests.peers.plugin import *  # noqa: F403
