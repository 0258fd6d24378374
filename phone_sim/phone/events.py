"""What happens to a phone, as :meth:`Phone.events() <phone_sim.phone.aio.Phone.events>`
yields it: past-tense facts from the phone's registrations, the requests it answered, and its
calls (:mod:`phone_sim.call.events`). :data:`PhoneEvent` is their union.

Registration events name the account by its index (``<account index>``): a phone registers
each of its enabled lines on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from phone_sim.account import SipHost
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
from phone_sim.errors import PhoneSimError
from phone_sim.sip.routing import Address

__all__ = [
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
    "MessageReceived",
    "PhoneCallEvent",
    "PhoneEvent",
    "PhoneStopped",
    "RegistrationEvent",
    "RegistrationFailed",
    "RegistrationSucceeded",
    "ReprovisionRequested",
    "RequestAnswered",
    "Unregistered",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationSucceeded:
    """The registrar accepted the account's binding (first time or refresh)."""

    account: int
    """The account's index."""
    host: SipHost
    """The registrar."""
    expires: int
    """Seconds granted (the Contact's expires, else the Expires header)."""
    contact: str
    """The Contact URI registered."""
    refresh: bool
    """True for a refresh of a live registration."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationFailed:
    """An attempt failed; the account tries again at ``retry_at`` (None when it stopped)."""

    account: int
    """The account's index."""
    host: SipHost
    """The registrar tried."""
    error: PhoneSimError
    """What went wrong (``TlsRefused`` with its bitmask, ``AuthenticationRefused``...)."""
    retry_at: float | None
    """When the next attempt starts, on the caller's clock."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedOver:
    """The account moved from one registrar to the other."""

    account: int
    """The account's index."""
    from_host: SipHost
    """The host given up."""
    to_host: SipHost
    """The host tried next."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionDropped:
    """The account's connection closed under it (the registrar restarted, a framing
    error); the account reconnects and registers again."""

    account: int
    """The account's index."""
    host: SipHost
    """The registrar."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Unregistered:
    """The account removed its binding (or gave up waiting) and stopped."""

    account: int
    """The account's index."""
    host: SipHost | None
    """The registrar, None when the account was not registered."""
    confirmed: bool
    """True when the registrar answered the un-REGISTER with 2xx."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneStopped:
    """Every account has stopped and every transport is closed: the phone is off."""

    confirmed: bool
    """True when every registered account's un-REGISTER was answered with 2xx."""
    registered: bool
    """True when some account held a binding when the phone was asked to stop."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReprovisionRequested:
    """A ``NOTIFY`` with ``Event: check-sync`` came from a registrar of the phone (answered
    200): the phone should fetch its configuration again."""

    source: Address
    """Who sent it."""
    reboot: bool
    """True when the event carried ``reboot=true``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """An out-of-dialog MESSAGE arrived (answered 200)."""

    account: int
    """The index of the account it was sent to."""
    sender: str
    """The From URI."""
    content_type: str | None
    """Its Content-Type."""
    body: bytes
    """Its body, as bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAnswered:
    """The phone answered a request outside any call (OPTIONS, NOTIFY, MESSAGE, a stray BYE)."""

    method: str
    """The request method."""
    status: int
    """The status sent."""
    source: Address
    """Who sent it."""


RegistrationEvent = (
    RegistrationSucceeded | RegistrationFailed | FailedOver | ConnectionDropped | Unregistered
)

PhoneEvent = (
    RegistrationEvent
    | PhoneStopped
    | ReprovisionRequested
    | MessageReceived
    | RequestAnswered
    | PhoneCallEvent
)
