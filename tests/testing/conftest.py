"""Fixtures for tests/testing: the real peers (tests/peers/plugin.py) and the Asterisk build
(tests/asterisk/conftest.py: skip without one, fail under CI)."""

from tests.asterisk.conftest import asterisk_install  # noqa: F401
from tests.peers.plugin import *  # noqa: F403
