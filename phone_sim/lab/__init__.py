"""The embedded lab: a registrar and record-routing proxy on TLS, TCP and UDP for phones to
register to and call each other through, with an echo service at 600 (issues #4 and #6).

``Lab`` (asyncio, :mod:`phone_sim.lab.aio`) runs it; ``Registrar``
(:mod:`phone_sim.lab.registrar`) and its ``Proxy`` (:mod:`phone_sim.lab.proxy`) are the
sans-I/O core; ``EchoService`` (:mod:`phone_sim.lab.aio_echo`) is the echo. See
``docs/lab.md``.
"""

from __future__ import annotations

from phone_sim.lab.aio import DEFAULT_SERVER_NAME, DEFAULT_USERS, Lab, LabError
from phone_sim.lab.aio_echo import ECHO_EXTENSION, EchoService
from phone_sim.lab.limits import LabLimits, LimitsError
from phone_sim.lab.proxy import Proxy, Service
from phone_sim.lab.registrar import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRefused,
    BindingRemoved,
    Flow,
    FlowLost,
    LabConfigError,
    LabUser,
    PhoneAnswered,
    PhoneSilent,
    PhoneUnreachable,
    Registrar,
    RegistrarConfig,
    RegistrarEvent,
    Transmit,
    UserTable,
)

__all__ = [
    "DEFAULT_SERVER_NAME",
    "DEFAULT_USERS",
    "ECHO_EXTENSION",
    "Binding",
    "BindingAdded",
    "BindingExpired",
    "BindingRefreshed",
    "BindingRefused",
    "BindingRemoved",
    "EchoService",
    "Flow",
    "FlowLost",
    "Lab",
    "LabConfigError",
    "LabError",
    "LabLimits",
    "LabUser",
    "LimitsError",
    "PhoneAnswered",
    "PhoneSilent",
    "PhoneUnreachable",
    "Proxy",
    "Registrar",
    "RegistrarConfig",
    "RegistrarEvent",
    "Service",
    "Transmit",
    "UserTable",
]
