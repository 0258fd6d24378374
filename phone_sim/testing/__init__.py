"""Test helpers for phone-sim's users and its own suite.

- :mod:`phone_sim.testing.aio_pytest_plugin`: the pytest plugin (fixtures ``phone_sim_phone``,
  ``phone_sim_phone_factory``, ``phone_sim_lab``, ``phone_sim_asterisk``), loaded through the
  ``pytest11`` entry point.
- :mod:`phone_sim.testing.aio_asterisk`: find an Asterisk build and run it on free loopback ports
  from a configuration directory (:mod:`phone_sim.testing.asterisk_config` renders it).
- :mod:`phone_sim.testing.aio_ports`, :mod:`phone_sim.testing.aio_process`: free loopback ports and
  child processes that are always reaped.
- :mod:`phone_sim.testing.siplog`: what a failing test reports of its phones' SIP exchange.

Nothing here is imported by ``import phone_sim``.
"""
