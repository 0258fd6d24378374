"""phone-sim: a software Digium/Sangoma D-Series desk phone.

The public API is re-exported here, as h11 does, and loaded lazily (PEP 562): ``import
phone_sim`` is cheap, and the media stack (aiortc, PyAV) loads only when a call needs it::

    from phone_sim import Account, PhoneConfig, SipHost, SipTransport, build_phone, profile_for
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

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
    "Call",
    "CallConfig",
    "CallFailed",
    "CallTimeout",
    "FirmwareProfile",
    "MediaOptions",
    "Model",
    "NetworkOptions",
    "Phone",
    "PhoneConfig",
    "PhoneSimError",
    "ProtocolError",
    "RegistrationSettings",
    "RemoteError",
    "SipHost",
    "SipTransport",
    "TlsError",
    "TlsRefused",
    "TrustStore",
    "UsageError",
    "__version__",
    "build_phone",
    "normalize_mac",
    "profile_for",
]

if TYPE_CHECKING:
    from phone_sim.account import Account, SipHost, SipTransport
    from phone_sim.call.aio import Call, CallFailed, CallTimeout
    from phone_sim.call.session import CallConfig
    from phone_sim.errors import PhoneSimError, ProtocolError, RemoteError, UsageError
    from phone_sim.firmware import FirmwareProfile, Model, profile_for
    from phone_sim.phone.aio import Phone, build_phone
    from phone_sim.phone.config import MediaOptions, NetworkOptions, PhoneConfig, normalize_mac
    from phone_sim.phone.registration import RegistrationSettings
    from phone_sim.tls.client import TrustStore
    from phone_sim.tls.verdict import TlsError, TlsRefused


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'phone_sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
