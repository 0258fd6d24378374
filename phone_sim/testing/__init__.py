"""Test helpers for phone-sim's users and its own suite (docs/testing.md).

- :mod:`phone_sim.testing.aio_pytest_plugin`: the pytest plugin (fixtures ``phone_sim_phone``,
  ``phone_sim_phone_factory``, ``phone_sim_lab``, ``phone_sim_asterisk``), loaded through the
  ``pytest11`` entry point, with its real-peer fixtures in
  :mod:`phone_sim.testing.aio_pytest_peers` (``phone_sim_kamailio``,
  ``phone_sim_baresip_factory``, ``phone_sim_capture_factory``, ``phone_sim_peer_pki``).
- :mod:`phone_sim.testing.aio_asterisk`: find an Asterisk build and run it on free loopback ports
  from a configuration directory (:mod:`phone_sim.testing.asterisk_config` renders it).
- :mod:`phone_sim.testing.aio_kamailio`: Kamailio as a TLS registrar and record-routing proxy
  (:mod:`phone_sim.testing.kamailio_config`: its configuration and location table).
- :mod:`phone_sim.testing.aio_baresip`, :mod:`phone_sim.testing.aio_sipp`,
  :mod:`phone_sim.testing.aio_capture`: baresip as an SRTP phone, SIPp scenarios, tshark on
  ``lo``.
- :mod:`phone_sim.testing.certs`, :mod:`phone_sim.testing.audio`: a TEST-ONLY PKI on disk;
  tone files, tone detection and G.711 for checking what went through.
- :mod:`phone_sim.testing.aio_ports`, :mod:`phone_sim.testing.aio_process`: free loopback ports and
  child processes that are always reaped; a missing peer program names its Debian package.
- :mod:`phone_sim.testing.siplog`: what a failing test reports of its phones' SIP exchange.

Nothing here is imported by ``import phone_sim``.
"""
