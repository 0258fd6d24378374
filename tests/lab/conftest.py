"""Fixtures for the lab tests: the real-peer helpers of tests/peers (packet capture...)."""

from tests.peers.plugin import *  # noqa: F403
