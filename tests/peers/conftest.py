"""Fixtures for the real-peer tests: see tests/peers/plugin.py and docs/peers.md."""

from tests.peers.plugin import *  # noqa: F403
