"""The emulated phone: its configuration, its sans-I/O core and the asyncio :class:`Phone`.

See ``docs/registration.md`` and ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phone_sim._lazy import lazy_exports

#: Public name -> the module that defines it (loaded on first use, PEP 562).
_EXPORTS: dict[str, str] = {
    "AuthenticationRefused": "phone_sim.phone.registration",
    "CallAnswered": "phone_sim.phone.events",
    "CallArrived": "phone_sim.phone.events",
    "CallFinished": "phone_sim.phone.events",
    "CallMediaNegotiated": "phone_sim.phone.events",
    "CallPlaced": "phone_sim.phone.events",
    "CallProgressed": "phone_sim.phone.events",
    "CallRefreshed": "phone_sim.phone.events",
    "CallUpdateRefused": "phone_sim.phone.events",
    "ConnectionDropped": "phone_sim.phone.events",
    "FailedOver": "phone_sim.phone.events",
    "MODEL_LINES": "phone_sim.phone.config",
    "Impairment": "phone_sim.phone.config",
    "MediaOptions": "phone_sim.phone.config",
    "MessageReceived": "phone_sim.phone.events",
    "NetworkOptions": "phone_sim.phone.config",
    "Phone": "phone_sim.phone.aio",
    "PhoneCallEvent": "phone_sim.phone.events",
    "PhoneConfig": "phone_sim.phone.config",
    "PhoneConfigError": "phone_sim.phone.config",
    "PhoneCore": "phone_sim.phone.core",
    "PhoneEvent": "phone_sim.phone.events",
    "PhoneStopped": "phone_sim.phone.events",
    "RegState": "phone_sim.phone.registration",
    "Registration": "phone_sim.phone.registration",
    "RegistrationError": "phone_sim.phone.registration",
    "RegistrationEvent": "phone_sim.phone.events",
    "RegistrationFailed": "phone_sim.phone.events",
    "RegistrationRefused": "phone_sim.phone.registration",
    "RegistrationSettings": "phone_sim.phone.registration",
    "RegistrationSucceeded": "phone_sim.phone.events",
    "RegistrationTimeout": "phone_sim.phone.registration",
    "ReprovisionRequested": "phone_sim.phone.events",
    "RequestAnswered": "phone_sim.phone.events",
    "SipTransportError": "phone_sim.phone.registration",
    "UdpCallAgent": "phone_sim.phone.aio_agent",
    "Unregistered": "phone_sim.phone.events",
    "build_phone": "phone_sim.phone.aio",
    "normalize_mac": "phone_sim.phone.config",
    "parse_target": "phone_sim.phone.core",
    "phone_signature": "phone_sim.phone.core",
    "tls_context_for": "phone_sim.phone.aio",
}

__all__ = [
    "MODEL_LINES",
    "AuthenticationRefused",
    "CallAnswered",
    "CallArrived",
    "CallFinished",
    "CallMediaNegotiated",
    "CallPlaced",
    "CallProgressed",
    "CallRefreshed",
    "CallUpdateRefused",
    "ConnectionDropped",
    "FailedOver",
    "Impairment",
    "MediaOptions",
    "MessageReceived",
    "NetworkOptions",
    "Phone",
    "PhoneCallEvent",
    "PhoneConfig",
    "PhoneConfigError",
    "PhoneCore",
    "PhoneEvent",
    "PhoneStopped",
    "RegState",
    "Registration",
    "RegistrationError",
    "RegistrationEvent",
    "RegistrationFailed",
    "RegistrationRefused",
    "RegistrationSettings",
    "RegistrationSucceeded",
    "RegistrationTimeout",
    "ReprovisionRequested",
    "RequestAnswered",
    "SipTransportError",
    "UdpCallAgent",
    "Unregistered",
    "build_phone",
    "normalize_mac",
    "parse_target",
    "phone_signature",
    "tls_context_for",
]

if TYPE_CHECKING:
    from phone_sim.phone.aio import (
        Phone,
        build_phone,
        tls_context_for,
    )
    from phone_sim.phone.aio_agent import (
        UdpCallAgent,
    )
    from phone_sim.phone.config import (
        MODEL_LINES,
        Impairment,
        MediaOptions,
        NetworkOptions,
        PhoneConfig,
        PhoneConfigError,
        normalize_mac,
    )
    from phone_sim.phone.core import (
        PhoneCore,
        parse_target,
        phone_signature,
    )
    from phone_sim.phone.events import (
        CallAnswered,
        CallArrived,
        CallFinished,
        CallMediaNegotiated,
        CallPlaced,
        CallProgressed,
        CallRefreshed,
        CallUpdateRefused,
        ConnectionDropped,
        FailedOver,
        MessageReceived,
        PhoneCallEvent,
        PhoneEvent,
        PhoneStopped,
        RegistrationEvent,
        RegistrationFailed,
        RegistrationSucceeded,
        ReprovisionRequested,
        RequestAnswered,
        Unregistered,
    )
    from phone_sim.phone.registration import (
        AuthenticationRefused,
        Registration,
        RegistrationError,
        RegistrationRefused,
        RegistrationSettings,
        RegistrationTimeout,
        RegState,
        SipTransportError,
    )

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
