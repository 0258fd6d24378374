"""Fixtures for tests/testing: the Asterisk build (tests/asterisk/conftest.py: skip without
one, fail under CI); the real peers come from tests/peers/plugin.py, which the root conftest
loads."""

from tests.asterisk.conftest import asterisk_install  # noqa: F401
