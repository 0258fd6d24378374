"""Calls: the sans-I/O INVITE session (:mod:`phone_sim.call.session`) and the asyncio
:class:`~phone_sim.call.aio.Call` that joins it to a media stream."""

from phone_sim.call.session import (
    CALL_METHODS,
    CALL_OPTION_TAGS,
    CallConfig,
    CallEnded,
    CallError,
    CallEstablished,
    CallEvent,
    CallReceived,
    CallRinging,
    CallRouter,
    CallSession,
    CallState,
    MediaNegotiated,
    ReofferFailed,
    SessionRefreshed,
    call_signature,
)

__all__ = [
    "CALL_METHODS",
    "CALL_OPTION_TAGS",
    "CallConfig",
    "CallEnded",
    "CallError",
    "CallEstablished",
    "CallEvent",
    "CallReceived",
    "CallRinging",
    "CallRouter",
    "CallSession",
    "CallState",
    "MediaNegotiated",
    "ReofferFailed",
    "SessionRefreshed",
    "call_signature",
]
