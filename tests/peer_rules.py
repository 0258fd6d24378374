"""The rules phone-sim's own suite keeps about real peers (docs/peers.md), on top of the
package's peer fixtures (phone_sim/testing/aio_pytest_peers.py, loaded with the ``phone_sim``
plugin). The root ``tests/conftest.py`` loads this module as a plugin; a pytest run elsewhere
gets it with ``-p tests.peer_rules``.

- In CI (``CI`` set, as CI services set it: ``CI=true``), a missing peer program fails the
  test that needs it (``--phone-sim-require-peers`` is turned on); elsewhere it skips with the
  reason, for a developer without the packages.
- The ``peer`` marker is exactly the set of tests that start a peer: a test that looks up a
  peer program (every fixture, peer class and ``require`` does, through
  :func:`phone_sim.testing.aio_process.which`) without the marker fails, and so does a passing
  test with the marker that never looked one up. ``-m "not peer"`` thus runs no peer and
  deselects nothing that needs none.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable

import pytest

from phone_sim.testing import aio_process

#: The programs the peer tests run (``dumpcap`` is tshark's capture helper).
PEER_BINARIES = ("kamailio", "kamcmd", "baresip", "sipp", "tshark", "dumpcap")

#: Fixtures that find a peer once per session, outside :func:`aio_process.which` (the Asterisk
#: build, tests/asterisk/conftest.py): a test that uses one starts that peer.
PEER_FIXTURES = {"asterisk_install": "asterisk"}


def in_ci() -> bool:
    """Whether this is a CI run, where every real peer must be installed (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def peer_marker_problem(marked: bool, looked_up: Iterable[str]) -> str | None:
    """Why a passing test's ``peer`` marker is wrong, or ``None`` when it is right."""
    used = sorted(set(looked_up))
    if used and not marked:
        return (f"this test starts a real peer ({', '.join(used)}) but is not marked "
                "@pytest.mark.peer: -m 'not peer' would run it")
    if marked and not used:
        return ("this test is marked @pytest.mark.peer but started no peer: -m 'not peer' "
                "would deselect it for nothing; remove the mark")
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Under CI, a missing peer fails its test (the package's ``--phone-sim-require-peers``)."""
    if in_ci():
        config.option.phone_sim_require_peers = True


def pytest_report_header(config: pytest.Config) -> str:
    """Which peers this run has, and what a missing one does."""
    missing = [b for b in PEER_BINARIES if aio_process.locate(b) is None]
    rule = (f"CI={os.environ.get('CI')}: a test that needs a missing peer fails" if in_ci()
            else "a test that needs a missing peer is skipped (CI=true makes it fail)")
    have = "all installed" if not missing else f"missing {', '.join(missing)}"
    return f"peers: {have}; {rule}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Start recording which peer programs this test looks up (its fixtures included)."""
    aio_process.LOOKED_UP.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a passing test whose ``peer`` marker does not match the peers it started."""
    yield  # re-raises what the test raised: only a passing test is checked
    fixtures = getattr(item, "fixturenames", ())
    used = aio_process.LOOKED_UP | {
        peer for name, peer in PEER_FIXTURES.items() if name in fixtures
    }
    problem = peer_marker_problem(item.get_closest_marker("peer") is not None, used)
    if problem is not None:
        pytest.fail(problem, pytrace=False)
