"""Calls: the sans-I/O INVITE session (:mod:`phone_sim.call.session`), the phone's call
router (:mod:`phone_sim.call.router`), the call events (:mod:`phone_sim.call.events`) and the
asyncio :class:`Call` that joins a call to its media (:mod:`phone_sim.call.aio`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from phone_sim._lazy import lazy_exports

#: Public name -> the module that defines it (loaded on first use, PEP 562).
_EXPORTS: dict[str, str] = {
    "CALL_METHODS": "phone_sim.call.session",
    "CALL_OPTION_TAGS": "phone_sim.call.session",
    "Call": "phone_sim.call.aio",
    "CallAnswered": "phone_sim.call.events",
    "CallArrived": "phone_sim.call.events",
    "CallConfig": "phone_sim.call.session",
    "CallError": "phone_sim.call.session",
    "CallFailed": "phone_sim.call.aio",
    "CallFinished": "phone_sim.call.events",
    "CallMediaNegotiated": "phone_sim.call.events",
    "CallPlaced": "phone_sim.call.events",
    "CallProgressed": "phone_sim.call.events",
    "CallRefreshed": "phone_sim.call.events",
    "CallRouter": "phone_sim.call.router",
    "CallSession": "phone_sim.call.session",
    "CallState": "phone_sim.call.session",
    "CallStats": "phone_sim.call.aio",
    "CallTimeout": "phone_sim.call.aio",
    "CallUpdateRefused": "phone_sim.call.events",
    "PhoneCallEvent": "phone_sim.call.events",
    "call_signature": "phone_sim.call.session",
    "shared_media_clock": "phone_sim.call.aio",
}

__all__ = [
    "CALL_METHODS",
    "CALL_OPTION_TAGS",
    "Call",
    "CallAnswered",
    "CallArrived",
    "CallConfig",
    "CallError",
    "CallFailed",
    "CallFinished",
    "CallMediaNegotiated",
    "CallPlaced",
    "CallProgressed",
    "CallRefreshed",
    "CallRouter",
    "CallSession",
    "CallState",
    "CallStats",
    "CallTimeout",
    "CallUpdateRefused",
    "PhoneCallEvent",
    "call_signature",
    "shared_media_clock",
]

if TYPE_CHECKING:
    from phone_sim.call.aio import (
        Call,
        CallFailed,
        CallStats,
        CallTimeout,
        shared_media_clock,
    )
    from phone_sim.call.events import (
        CallAnswered,
        CallArrived,
        CallFinished,
        CallMediaNegotiated,
        CallPlaced,
        CallProgressed,
        CallRefreshed,
        CallUpdateRefused,
        PhoneCallEvent,
    )
    from phone_sim.call.router import (
        CallRouter,
    )
    from phone_sim.call.session import (
        CALL_METHODS,
        CALL_OPTION_TAGS,
        CallConfig,
        CallError,
        CallSession,
        CallState,
        call_signature,
    )

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
