"""RFC 4028 session timers for one call, sans-I/O: :class:`SessionTimer`.

It holds the interval in force, who refreshes, and its two deadlines (the refresher's refresh
at half the interval, the other side's BYE at ``interval - min(32, interval / 3)``), builds
the ``Session-Expires``/``Min-SE`` headers the call's requests and answers carry, and reads
those of the peer. It decides nothing about the call: the session's transition table does,
and asks it what is due (:meth:`SessionTimer.due`).
"""

from __future__ import annotations

from dataclasses import dataclass

from phone_sim.sip.headers import HeaderValue, parse_delta_seconds, parse_params
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.message import SipRequest, SipResponse

__all__ = ["SessionTimer", "SessionTiming", "min_se_of", "session_expires_of"]

#: RFC 4028 4: the smallest Session-Expires anyone may ask for.
MIN_SE_FLOOR = 90


def session_expires_of(message: SipRequest | SipResponse) -> tuple[int, str | None] | None:
    """``Session-Expires`` (or its compact form ``x``) as (seconds, refresher);
    :class:`SipParseError` when it is malformed."""
    value = message.headers.get("Session-Expires") or message.headers.get("x")
    if value is None:
        return None
    head, _, rest = value.partition(";")
    seconds = parse_delta_seconds(head, "Session-Expires")
    refresher = None
    for name, param in parse_params(";" + rest if rest else "", "Session-Expires"):
        if name.lower() == "refresher" and param is not None:
            refresher = param.lower()
    if refresher not in (None, "uac", "uas"):
        raise SipParseError(f"Session-Expires refresher {refresher!r} is not uac or uas")
    return seconds, refresher


def min_se_of(message: SipRequest | SipResponse) -> int | None:
    """``Min-SE`` in seconds; :class:`SipParseError` when it is malformed."""
    value = message.headers.get("Min-SE")
    if value is None:
        return None
    return parse_delta_seconds(value.partition(";")[0], "Min-SE")


def _peer_supports_timer(message: SipRequest | SipResponse) -> bool:
    return any(t.lower() == "timer" for h in ("Supported", "Require") for t in message.tokens(h))


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTiming:
    """The session timing now armed (the session reports it as ``SessionRefreshed``)."""

    interval: int
    """The session interval in force, in seconds."""
    refresher: str
    """``"local"`` or ``"remote"``: who refreshes next."""


class SessionTimer:
    """One call's RFC 4028 state (see the module docstring).

    *enabled* is the phone's setting (``CallConfig.session_timers`` and ``timer`` in its
    Supported); *session_expires* and *min_se* are what it asks for and accepts.
    """

    __slots__ = ("_pending", "enabled", "expire_at", "interval", "min_se", "peer_supports",
                 "refresh_at", "refresher_local", "requested")

    def __init__(self, *, enabled: bool, session_expires: int, min_se: int) -> None:
        self.enabled = enabled
        #: The interval the phone asks for (raised to the peer's Min-SE after a 422).
        self.requested = session_expires
        #: The smallest interval the phone accepts (raised to the peer's Min-SE).
        self.min_se = min_se
        #: The interval in force, None when the call has no session timer.
        self.interval: int | None = None
        #: Whether this side refreshes.
        self.refresher_local = False
        #: Whether the peer supports (or requires) ``timer``.
        self.peer_supports = False
        self.refresh_at: float | None = None
        self.expire_at: float | None = None
        # Agreed but not armed yet: a UAS arms at the ACK of its 2xx.
        self._pending = False

    # -- headers -------------------------------------------------------------------------------

    def invite_headers(self) -> list[tuple[str, HeaderValue]]:
        """RFC 4028 7.1: the UAC asks for its interval and states its Min-SE; pjsip leaves
        the refresher to the UAS."""
        if not self.enabled:
            return []
        return [("Session-Expires", str(self.requested)), ("Min-SE", str(self.min_se))]

    def refresh_headers(self) -> list[tuple[str, HeaderValue]]:
        """The headers of a refresh (re-INVITE or UPDATE) we send: from its view we (uac)
        refresh next when we refresh now."""
        if not self.enabled or self.interval is None:
            return []
        refresher = "uac" if self.refresher_local else "uas"
        return [("Session-Expires", f"{self.interval};refresher={refresher}"),
                ("Min-SE", str(self.min_se))]

    def answer_headers(self, request: SipRequest) -> list[tuple[str, HeaderValue]]:
        """RFC 4028 9: the interval and refresher of our 2xx to *request* (an INVITE, a
        re-INVITE or an UPDATE); the timing is agreed and armed at :meth:`arm_pending`."""
        if not self.enabled:
            return []
        try:
            se = session_expires_of(request)
        except SipParseError:
            se = None
        if se is None and not self.peer_supports:
            self.stop()
            return []
        interval = se[0] if se is not None else self.interval or self.requested
        interval = max(interval, self.min_se)
        asked = se[1] if se is not None else None
        # 9: the UAS picks uac when the UAC supports timer and did not choose.
        refresher = asked or ("uac" if self.peer_supports else "uas")
        # We are the UAS of this request: we refresh when the refresher is "uas".
        self.agree(interval, local=refresher == "uas")
        headers: list[tuple[str, HeaderValue]] = [
            ("Session-Expires", f"{interval};refresher={refresher}")
        ]
        if self.peer_supports:
            headers.append(("Require", "timer"))
        return headers

    # -- what the peer says ----------------------------------------------------------------------

    def note_request(self, request: SipRequest) -> None:
        """Remember whether the peer supports ``timer`` (its INVITE or re-INVITE)."""
        self.peer_supports = self.peer_supports or _peer_supports_timer(request)

    def too_short(self, request: SipRequest) -> bool:
        """RFC 4028 8.1: whether *request* asks for an interval below our Min-SE (answer 422
        with ``Min-SE``); :class:`SipParseError` for a malformed Session-Expires."""
        if not self.enabled:
            return False
        se = session_expires_of(request)
        return se is not None and se[0] < self.min_se

    def raise_min_se(self, peer_min: int | None) -> None:
        """The peer's Min-SE applies to us too (RFC 4028 5)."""
        if peer_min is not None:
            self.min_se = max(self.min_se, peer_min)

    def retry_after_422(self, response: SipResponse) -> bool:
        """RFC 4028 7.4: a 422 to our INVITE: ask again with the peer's Min-SE. False when
        that would change nothing (the call fails with the 422)."""
        if not self.enabled:
            return False
        try:
            peer_min = min_se_of(response)
        except SipParseError:
            return False
        if peer_min is None or peer_min <= self.requested:
            return False
        self.raise_min_se(peer_min)
        self.requested = peer_min
        return True

    def retry_refresh_after_422(self, response: SipResponse) -> bool:
        """A 422 to our refresh: the interval grows to the peer's Min-SE; True to retry."""
        if self.interval is None:
            return False
        try:
            peer_min = min_se_of(response)
        except SipParseError:
            return False
        if peer_min is None or peer_min <= self.interval:
            return False
        self.raise_min_se(peer_min)
        self.interval = peer_min
        return True

    def from_response(self, response: SipResponse, now: float) -> SessionTiming | None:
        """RFC 4028 7.2: the 2xx to our (re-)INVITE/UPDATE says interval and refresher;
        armed at once. Returns the timing armed, if any."""
        if not self.enabled:
            return None
        try:
            se = session_expires_of(response)
        except SipParseError:
            se = None
        if se is None:
            self.stop()  # 7.2: no Session-Expires, no session timer
            return None
        interval, refresher = se
        self.agree(interval, local=refresher in (None, "uac"))
        return self.arm(now)

    # -- deadlines ---------------------------------------------------------------------------------

    def agree(self, interval: int, *, local: bool) -> None:
        """The interval and refresher are agreed; armed by :meth:`arm` (now or at the ACK)."""
        self.interval = interval
        self.refresher_local = local
        self._pending = True

    @property
    def pending(self) -> bool:
        """Agreed and not armed yet."""
        return self._pending and self.interval is not None

    def arm(self, now: float) -> SessionTiming | None:
        """Start counting the agreed interval from *now*. Returns the timing, or None."""
        interval = self.interval
        if interval is None:
            return None
        self._pending = False
        if self.refresher_local:
            # RFC 4028 10: the refresher refreshes at half the interval.
            self.refresh_at = now + interval / 2
            self.expire_at = None
        else:
            # RFC 4028 10: the other side sends BYE at interval - min(32, interval/3).
            self.refresh_at = None
            self.expire_at = now + interval - min(32, interval / 3)
        return SessionTiming(interval=interval,
                             refresher="local" if self.refresher_local else "remote")

    def arm_pending(self, now: float) -> SessionTiming | None:
        """Arm what was agreed and not armed yet (at the ACK, or a refresh answered)."""
        return self.arm(now) if self.pending else None

    def stop(self) -> None:
        """No session timer from now on."""
        self.interval = None
        self.refresh_at = self.expire_at = None
        self._pending = False

    def clear_deadlines(self) -> None:
        """The call is over: nothing is due any more."""
        self.refresh_at = self.expire_at = None

    def get_timer(self) -> float | None:
        """The earlier of the two deadlines, or None."""
        times = [t for t in (self.refresh_at, self.expire_at) if t is not None]
        return min(times) if times else None

    def due(self, now: float) -> str | None:
        """What is due at *now*: ``"refresh"`` (we are the refresher), ``"expire"`` (no
        refresh came: send BYE), or None. A deadline reported is cleared."""
        if self.refresh_at is not None and now >= self.refresh_at:
            self.refresh_at = None
            return "refresh"
        if self.expire_at is not None and now >= self.expire_at:
            self.expire_at = None
            return "expire"
        return None

    def postpone_refresh(self, now: float, delay: float = 1.0) -> None:
        """A re-INVITE of ours is out (it refreshes too): look again in *delay* seconds."""
        self.refresh_at = now + delay
