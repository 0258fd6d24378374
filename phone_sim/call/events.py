"""What happens to a phone's calls, as its event stream carries it: past-tense facts, each
naming its call by Call-ID (a phone has several calls at once).

The :class:`~phone_sim.call.router.CallRouter` turns each session's own events
(:mod:`phone_sim.call.session`: ``CallRinging``, ``MediaNegotiated``...) into these.
"""

from __future__ import annotations

from dataclasses import dataclass

from phone_sim.media.negotiation import NegotiatedAudio

__all__ = [
    "CallAnswered",
    "CallArrived",
    "CallFinished",
    "CallMediaNegotiated",
    "CallPlaced",
    "CallProgressed",
    "CallRefreshed",
    "CallUpdateRefused",
    "PhoneCallEvent",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallPlaced:
    """The phone sent an INVITE (``dial()``)."""

    call_id: str
    """The call's Call-ID (the key of ``phone.calls``)."""
    account: int
    """The index of the account that placed it."""
    remote: str
    """The URI called."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallArrived:
    """An acceptable INVITE arrived: the phone rings (180 sent)."""

    call_id: str
    """The call's Call-ID (``next_call()`` returns the :class:`~phone_sim.call.aio.Call`)."""
    account: int
    """The index of the account it was sent to (its registered Contact)."""
    remote: str
    """The caller's URI (From)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallProgressed:
    """The callee is alerting: a 180/183 arrived for an outgoing call."""

    call_id: str
    """The call's Call-ID."""
    status: int
    """The provisional status (180, 181, 182, 183)."""
    reason: str
    """Its reason phrase."""
    reliable: bool
    """Whether it came reliably (RFC 3262) and was PRACKed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallMediaNegotiated:
    """An offer/answer exchange completed; the call's media follows this from now on."""

    call_id: str
    """The call's Call-ID."""
    audio: NegotiatedAudio
    """Remote address, codec, payload types, direction and SRTP keys (hidden from repr)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAnswered:
    """The call is up: 2xx received (outgoing) or ACK received (incoming)."""

    call_id: str
    """The call's Call-ID."""
    incoming: bool
    """Whether the peer called us."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallUpdateRefused:
    """A re-INVITE/UPDATE of ours (hold, resume, refresh) was refused; the media stays."""

    call_id: str
    """The call's Call-ID."""
    status: int
    """The final status (488, 491...)."""
    reason: str
    """The reason phrase or Warning text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRefreshed:
    """RFC 4028 session timing was (re)established: a refresh succeeded, ours or the peer's."""

    call_id: str
    """The call's Call-ID."""
    interval: int
    """The session interval now in force, in seconds."""
    refresher: str
    """``"local"`` or ``"remote"``: who refreshes next."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFinished:
    """The call is over, answered or not."""

    call_id: str
    """The call's Call-ID."""
    reason: str
    """Why, in words."""
    status: int | None = None
    """The SIP status that ended it (486, 487, 488, 503...), if one did."""
    by_peer: bool = False
    """True when the peer ended it (BYE, CANCEL, a rejection)."""


PhoneCallEvent = (
    CallPlaced
    | CallArrived
    | CallProgressed
    | CallMediaNegotiated
    | CallAnswered
    | CallUpdateRefused
    | CallRefreshed
    | CallFinished
)
