"""The embedded lab: a registrar on TLS, TCP and UDP for phones to register to (issue #4).

``Lab`` (asyncio, :mod:`phone_sim.lab.aio`) runs it; ``Registrar``
(:mod:`phone_sim.lab.registrar`) is its sans-I/O core. See ``docs/lab.md``.
"""

from __future__ import annotations

from phone_sim.lab.aio import DEFAULT_SERVER_NAME, DEFAULT_USERS, Lab, LabError
from phone_sim.lab.registrar import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
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
    RegistrationRefused,
    Transmit,
    UserTable,
)

__all__ = [
    "DEFAULT_SERVER_NAME",
    "DEFAULT_USERS",
    "Binding",
    "BindingAdded",
    "BindingExpired",
    "BindingRefreshed",
    "BindingRemoved",
    "Flow",
    "FlowLost",
    "Lab",
    "LabConfigError",
    "LabError",
    "LabUser",
    "PhoneAnswered",
    "PhoneSilent",
    "PhoneUnreachable",
    "Registrar",
    "RegistrarConfig",
    "RegistrarEvent",
    "RegistrationRefused",
    "Transmit",
    "UserTable",
]
