"""Fixtures for tests/testing: the real peers (tests/peers/plugin.py)."""

from tests.peers.plugin import *  # noqa: F403
