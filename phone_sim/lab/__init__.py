"""The embedded lab: a registrar and record-routing proxy on TLS, TCP and UDP for phones to
register to and call each other through, with an echo service at 600 (issues #4 and #6).

``Lab`` (asyncio, :mod:`phone_sim.lab.aio`) runs it; ``Registrar``
(:mod:`phone_sim.lab.registrar`) and its ``Proxy`` (:mod:`phone_sim.lab.proxy`) are the
sans-I/O core; ``EchoService`` (:mod:`phone_sim.lab.aio_echo`) is the echo. See
``docs/lab.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phone_sim._lazy import lazy_exports

#: Public name -> the module that defines it (loaded on first use, PEP 562: `phone-sim lab
#: --help` and the registrar core do not load the media stack).
_EXPORTS: dict[str, str] = {
    "DEFAULT_SERVER_NAME": "phone_sim.lab.aio",
    "DEFAULT_USERS": "phone_sim.lab.aio",
    "ECHO_EXTENSION": "phone_sim.lab.aio_echo",
    "Binding": "phone_sim.lab.registrar",
    "BindingAdded": "phone_sim.lab.registrar",
    "BindingExpired": "phone_sim.lab.registrar",
    "BindingRefreshed": "phone_sim.lab.registrar",
    "BindingRefused": "phone_sim.lab.registrar",
    "BindingRemoved": "phone_sim.lab.registrar",
    "EchoService": "phone_sim.lab.aio_echo",
    "Flow": "phone_sim.lab.registrar",
    "FlowLost": "phone_sim.lab.registrar",
    "Lab": "phone_sim.lab.aio",
    "LabConfigError": "phone_sim.lab.registrar",
    "LabError": "phone_sim.lab.aio",
    "LabLimits": "phone_sim.lab.limits",
    "LabUser": "phone_sim.lab.registrar",
    "LimitsError": "phone_sim.lab.limits",
    "PhoneAnswered": "phone_sim.lab.registrar",
    "PhoneSilent": "phone_sim.lab.registrar",
    "PhoneUnreachable": "phone_sim.lab.registrar",
    "Proxy": "phone_sim.lab.proxy",
    "Registrar": "phone_sim.lab.registrar",
    "RegistrarConfig": "phone_sim.lab.registrar",
    "RegistrarEvent": "phone_sim.lab.registrar",
    "Service": "phone_sim.lab.proxy",
    "Transmit": "phone_sim.lab.registrar",
    "UserTable": "phone_sim.lab.registrar",
}

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

if TYPE_CHECKING:
    from phone_sim.lab.aio import (
        DEFAULT_SERVER_NAME,
        DEFAULT_USERS,
        Lab,
        LabError,
    )
    from phone_sim.lab.aio_echo import (
        ECHO_EXTENSION,
        EchoService,
    )
    from phone_sim.lab.limits import (
        LabLimits,
        LimitsError,
    )
    from phone_sim.lab.proxy import (
        Proxy,
        Service,
    )
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

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
