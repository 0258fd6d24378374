"""phone-sim: a software Digium/Sangoma D-Series desk phone.

The public API is re-exported here, as h11 does, and loaded lazily (PEP 562): ``import
phone_sim`` is cheap, and the media stack (aiortc, PyAV) loads only when a call needs it::

    from phone_sim import Account, PhoneConfig, SipHost, SipTransport, build_phone, profile_for
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from phone_sim._lazy import lazy_exports

try:
    __version__ = version("phone-sim")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # the phone
    "Phone": "phone_sim.phone.aio",
    "build_phone": "phone_sim.phone.aio",
    "PhoneConfig": "phone_sim.phone.config",
    "MediaOptions": "phone_sim.phone.config",
    "Impairment": "phone_sim.phone.config",
    "NetworkOptions": "phone_sim.phone.config",
    "normalize_mac": "phone_sim.phone.config",
    "RegistrationSettings": "phone_sim.phone.registration",
    # accounts, firmware, trust
    "Account": "phone_sim.account",
    "SipHost": "phone_sim.account",
    "SipTransport": "phone_sim.account",
    "FirmwareProfile": "phone_sim.firmware",
    "Model": "phone_sim.firmware",
    "profile_for": "phone_sim.firmware",
    "TrustStore": "phone_sim.tls.client",
    # calls
    "Call": "phone_sim.call.aio",
    "CallConfig": "phone_sim.call.session",
    "CallFailed": "phone_sim.call.aio",
    "CallTimeout": "phone_sim.call.aio",
    # events and errors of the phone
    "AuthenticationRefused": "phone_sim.phone.registration",
    "CallAnswered": "phone_sim.phone.events",
    "CallArrived": "phone_sim.phone.events",
    "CallFinished": "phone_sim.phone.events",
    "CallMediaNegotiated": "phone_sim.phone.events",
    "CallPlaced": "phone_sim.phone.events",
    "CallProgressed": "phone_sim.phone.events",
    "CallRefreshed": "phone_sim.phone.events",
    "CallStats": "phone_sim.call.aio",
    "CallUpdateRefused": "phone_sim.phone.events",
    "ConnectionDropped": "phone_sim.phone.events",
    "FailedOver": "phone_sim.phone.events",
    "MessageReceived": "phone_sim.phone.events",
    "PhoneCallEvent": "phone_sim.phone.events",
    "PhoneEvent": "phone_sim.phone.events",
    "PhoneStopped": "phone_sim.phone.events",
    "RegistrationError": "phone_sim.phone.registration",
    "RegistrationFailed": "phone_sim.phone.events",
    "RegistrationRefused": "phone_sim.phone.registration",
    "RegistrationSucceeded": "phone_sim.phone.events",
    "RegistrationTimeout": "phone_sim.phone.registration",
    "ReprovisionRequested": "phone_sim.phone.events",
    "RequestAnswered": "phone_sim.phone.events",
    "SipTransportError": "phone_sim.phone.registration",
    "TlsNotSupported": "phone_sim.tls.verdict",
    "TlsVerdict": "phone_sim.tls.verdict",
    "UdpCallAgent": "phone_sim.phone.aio_agent",
    "Unregistered": "phone_sim.phone.events",
    # errors
    "PhoneSimError": "phone_sim.errors",
    "UsageError": "phone_sim.errors",
    "RemoteError": "phone_sim.errors",
    "ProtocolError": "phone_sim.errors",
    "TlsError": "phone_sim.tls.verdict",
    "TlsRefused": "phone_sim.tls.verdict",
}

__all__ = [
    "Account",
    "AuthenticationRefused",
    "Call",
    "CallAnswered",
    "CallArrived",
    "CallConfig",
    "CallFailed",
    "CallFinished",
    "CallMediaNegotiated",
    "CallPlaced",
    "CallProgressed",
    "CallRefreshed",
    "CallStats",
    "CallTimeout",
    "CallUpdateRefused",
    "ConnectionDropped",
    "FailedOver",
    "FirmwareProfile",
    "Impairment",
    "MediaOptions",
    "MessageReceived",
    "Model",
    "NetworkOptions",
    "Phone",
    "PhoneCallEvent",
    "PhoneConfig",
    "PhoneEvent",
    "PhoneSimError",
    "PhoneStopped",
    "ProtocolError",
    "RegistrationError",
    "RegistrationFailed",
    "RegistrationRefused",
    "RegistrationSettings",
    "RegistrationSucceeded",
    "RegistrationTimeout",
    "RemoteError",
    "ReprovisionRequested",
    "RequestAnswered",
    "SipHost",
    "SipTransport",
    "SipTransportError",
    "TlsError",
    "TlsNotSupported",
    "TlsRefused",
    "TlsVerdict",
    "TrustStore",
    "UdpCallAgent",
    "Unregistered",
    "UsageError",
    "__version__",
    "build_phone",
    "normalize_mac",
    "profile_for",
]

if TYPE_CHECKING:
    from phone_sim.account import (
        Account,
        SipHost,
        SipTransport,
    )
    from phone_sim.call.aio import (
        Call,
        CallFailed,
        CallStats,
        CallTimeout,
    )
    from phone_sim.call.session import (
        CallConfig,
    )
    from phone_sim.errors import (
        PhoneSimError,
        ProtocolError,
        RemoteError,
        UsageError,
    )
    from phone_sim.firmware import (
        FirmwareProfile,
        Model,
        profile_for,
    )
    from phone_sim.phone.aio import (
        Phone,
        build_phone,
    )
    from phone_sim.phone.aio_agent import (
        UdpCallAgent,
    )
    from phone_sim.phone.config import (
        Impairment,
        MediaOptions,
        NetworkOptions,
        PhoneConfig,
        normalize_mac,
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
        RegistrationFailed,
        RegistrationSucceeded,
        ReprovisionRequested,
        RequestAnswered,
        Unregistered,
    )
    from phone_sim.phone.registration import (
        AuthenticationRefused,
        RegistrationError,
        RegistrationRefused,
        RegistrationSettings,
        RegistrationTimeout,
        SipTransportError,
    )
    from phone_sim.tls.client import (
        TrustStore,
    )
    from phone_sim.tls.verdict import (
        TlsError,
        TlsNotSupported,
        TlsRefused,
        TlsVerdict,
    )


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
