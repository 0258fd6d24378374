"""Booting like a real D-Series phone: discovery over mDNS, the configuration fetch (HTTP(S) or
DPMA's SIP MESSAGE exchange), the phone XML, and a DPMA emulator for the lab.

See ``docs/provisioning.md``. Sans-I/O modules: :mod:`~phone_sim.provisioning.phone_xml`
(the one XML path of phone-sim), :mod:`~phone_sim.provisioning.apply`,
:mod:`~phone_sim.provisioning.urls`; the asyncio parts live in ``aio_*.py`` modules.
"""

from __future__ import annotations
