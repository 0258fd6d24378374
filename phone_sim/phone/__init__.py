"""The emulated phone: its registration core (sans-I/O) and the asyncio :class:`Phone`.

See ``docs/registration.md``.
"""

from __future__ import annotations

from phone_sim.phone.aio import Phone, phone_signature, tls_context_for
from phone_sim.phone.registration import (
    AuthenticationRefused,
    ConnectionDropped,
    FailedOver,
    MessageReceived,
    PhoneEvent,
    RegistrationCore,
    RegistrationError,
    RegistrationFailed,
    RegistrationRefused,
    RegistrationSettings,
    RegistrationSucceeded,
    RegistrationTimeout,
    RegState,
    ReprovisionRequested,
    RequestAnswered,
    SipTransportError,
    Unregistered,
)

__all__ = [
    "AuthenticationRefused",
    "ConnectionDropped",
    "FailedOver",
    "MessageReceived",
    "Phone",
    "PhoneEvent",
    "RegState",
    "RegistrationCore",
    "RegistrationError",
    "RegistrationFailed",
    "RegistrationRefused",
    "RegistrationSettings",
    "RegistrationSucceeded",
    "RegistrationTimeout",
    "ReprovisionRequested",
    "RequestAnswered",
    "SipTransportError",
    "Unregistered",
    "phone_signature",
    "tls_context_for",
]
