"""The emulated phone: its registration core (sans-I/O) and the asyncio :class:`Phone`.

See ``docs/registration.md``.
"""

from __future__ import annotations

from phone_sim.phone.aio import Phone, build_phone, phone_signature, tls_context_for
from phone_sim.phone.config import (
    MODEL_LINES,
    MediaOptions,
    NetworkOptions,
    PhoneConfig,
    PhoneConfigError,
    normalize_mac,
)
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
    "MODEL_LINES",
    "AuthenticationRefused",
    "ConnectionDropped",
    "FailedOver",
    "MediaOptions",
    "MessageReceived",
    "NetworkOptions",
    "Phone",
    "PhoneConfig",
    "PhoneConfigError",
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
    "build_phone",
    "normalize_mac",
    "phone_signature",
    "tls_context_for",
]
