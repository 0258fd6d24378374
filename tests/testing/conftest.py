"""Fixtures for tests/testing: the Asterisk build (tests/asterisk/conftest.py: skip without
one, fail under CI); the real peers come from the package's plugin (phone_sim_kamailio...),
under the short names the root conftest gives them."""

from tests.asterisk.conftest import asterisk_install  # noqa: F401
