"""SIP dialog state (RFC 3261 §12), sans-I/O.

A :class:`Dialog` is created from the request and response that establish it, on the UAC
side (:meth:`Dialog.from_uac`, §12.1.2) or the UAS side (:meth:`Dialog.from_uas`, §12.1.1).
It holds the dialog id, the local and remote CSeq, the route set, the remote target and the
secure flag, builds in-dialog requests with loose or strict routing (§12.2.1.1) and checks
incoming in-dialog requests (§12.2.2).

In-dialog requests come out without Via; the user agent core adds the Via when it sends them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

from phone_sim.errors import ProtocolError, UsageError
from phone_sim.sip.headers import CSeq, Headers, HeaderValue, NameAddr
from phone_sim.sip.message import SipRequest, SipResponse
from phone_sim.sip.uri import SipUri

logger = logging.getLogger(__name__)

__all__ = ["Dialog", "DialogError", "DialogId", "DialogState"]

_MAX_CSEQ = 2**31 - 1


class DialogError(ProtocolError):
    """A message does not fit the dialog (the status is the answer to send, if any)."""


@dataclass(frozen=True, slots=True)
class DialogId:
    """RFC 3261 §12: Call-ID, local tag and remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str

    def __str__(self) -> str:
        return f"{self.call_id};local={self.local_tag};remote={self.remote_tag}"


class DialogState(enum.Enum):
    """RFC 3261 §12: early (after a 1xx with a To tag), confirmed (after a 2xx), terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


_TRANSITIONS: dict[tuple[DialogState, str], DialogState] = {
    # §12.1: a 2xx confirms an early dialog; a 2xx retransmission changes nothing.
    (DialogState.EARLY, "2xx"): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, "2xx"): DialogState.CONFIRMED,
    (DialogState.EARLY, "1xx"): DialogState.EARLY,
    # §12.3: a non-2xx final response to the initial INVITE ends an early dialog.
    (DialogState.EARLY, "failure"): DialogState.TERMINATED,
    (DialogState.EARLY, "bye"): DialogState.TERMINATED,
    (DialogState.CONFIRMED, "bye"): DialogState.TERMINATED,
    (DialogState.TERMINATED, "bye"): DialogState.TERMINATED,
}


def _tagless(addr: NameAddr) -> NameAddr:
    return replace(addr, params=tuple(p for p in addr.params if p[0].lower() != "tag"))


class Dialog:
    """One dialog: identity, sequence numbers, route set and remote target."""

    __slots__ = (
        "id",
        "local_cseq",
        "local_uri",
        "remote_cseq",
        "remote_target",
        "remote_uri",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        *,
        dialog_id: DialogId,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        remote_target: SipUri,
        route_set: tuple[NameAddr, ...],
        local_cseq: int | None,
        remote_cseq: int | None,
        secure: bool,
        state: DialogState,
    ) -> None:
        self.id = dialog_id
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.secure = secure
        self.state = state

    def __repr__(self) -> str:
        return f"<Dialog {self.id} {self.state.value} target={self.remote_target}>"

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def from_uac(
        cls, request: SipRequest, response: SipResponse, *, secure_transport: bool = False
    ) -> Dialog:
        """The UAC's dialog from its INVITE and a 1xx (with To tag) or 2xx (§12.1.2)."""
        if not 101 <= response.status < 300:
            raise UsageError(f"a {response.status} response does not create a dialog")
        remote_tag = response.to_tag
        local_tag = request.from_tag
        if not remote_tag:
            # §12.1.2 allows a null remote tag for RFC 2543 peers; we refuse it instead, so
            # two dialogs of one call can always be told apart.
            raise DialogError("response creating a dialog has no To tag", status=None)
        if not local_tag:
            raise UsageError("our request has no From tag")
        contacts = response.contacts
        if response.status >= 200 and len(contacts) != 1:
            raise DialogError(
                f"2xx to {request.method} must carry exactly one Contact, got {len(contacts)}",
                status=None,
            )
        # §12.1.2: the route set is the Record-Route list in reverse order.
        route_set = tuple(reversed(response.record_routes))
        target = contacts[0].uri if contacts else request.uri
        secure = request.uri.is_secure and secure_transport
        state = DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY
        dialog = cls(
            dialog_id=DialogId(request.call_id, local_tag, remote_tag),
            local_uri=_tagless(request.from_),
            remote_uri=_tagless(response.to),
            remote_target=target,
            route_set=route_set,
            local_cseq=request.cseq.seq,
            remote_cseq=None,
            secure=secure,
            state=state,
        )
        logger.debug("dialog %s created (UAC, %s)", dialog.id, state.value)
        return dialog

    @classmethod
    def from_uas(
        cls,
        request: SipRequest,
        *,
        local_tag: str,
        final: bool = True,
        secure_transport: bool = False,
    ) -> Dialog:
        """The UAS's dialog from a dialog-creating request and the To tag it answers with
        (§12.1.1); ``final=False`` for an early dialog (a 1xx with a tag)."""
        remote_tag = request.from_tag
        if not remote_tag:
            raise DialogError("request has no From tag", status=400)
        contacts = request.contacts
        if len(contacts) != 1:
            raise DialogError(
                f"{request.method} creating a dialog must carry exactly one Contact, "
                f"got {len(contacts)}",
                status=400,
            )
        dialog = cls(
            dialog_id=DialogId(request.call_id, local_tag, remote_tag),
            local_uri=_tagless(request.to),
            remote_uri=_tagless(request.from_),
            remote_target=contacts[0].uri,
            # §12.1.1: the route set is the Record-Route list in order.
            route_set=tuple(request.record_routes),
            local_cseq=None,
            remote_cseq=request.cseq.seq,
            secure=request.uri.is_secure and secure_transport,
            state=DialogState.CONFIRMED if final else DialogState.EARLY,
        )
        logger.debug("dialog %s created (UAS, %s)", dialog.id, dialog.state.value)
        return dialog

    # -- state -------------------------------------------------------------------------------

    def _apply(self, event: str) -> None:
        try:
            new = _TRANSITIONS[(self.state, event)]
        except KeyError:
            raise DialogError(
                f"dialog {self.id} in state {self.state.value} cannot take {event}", status=None
            ) from None
        if new is not self.state:
            logger.debug("dialog %s: %s -> %s", self.id, self.state.value, new.value)
            self.state = new

    def receive_response(self, request: SipRequest, response: SipResponse) -> None:
        """Apply a response to a request we sent in this dialog (target refresh, §12.2.1.2)."""
        if response.status >= 200 and response.status < 300:
            if request.method == "INVITE":
                self._apply("2xx")
                # §12.2.1.2: a 2xx to a target refresh request updates the remote target.
                contacts = response.contacts
                if len(contacts) == 1:
                    self.remote_target = contacts[0].uri
            elif request.method == "BYE":
                self._apply("bye")
        elif response.status < 200:
            if request.method == "INVITE" and self.state is DialogState.EARLY:
                self._apply("1xx")
                contacts = response.contacts
                if len(contacts) == 1:
                    self.remote_target = contacts[0].uri
        elif request.method == "INVITE" and self.state is DialogState.EARLY:
            self._apply("failure")
        elif response.status in (408, 481) or (
            request.method == "BYE" and response.status >= 300
        ):
            # §12.2.1.2: 481 or 408 to an in-dialog request ends the dialog; so does a
            # failed BYE (the session is gone from our side anyway).
            self.state = DialogState.TERMINATED

    def receive_request(self, request: SipRequest) -> None:
        """Check and apply an in-dialog request (§12.2.2); raises :class:`DialogError`
        with the status to answer (500 for an out-of-order CSeq)."""
        if request.method in ("ACK", "CANCEL"):
            return
        seq = request.cseq.seq
        # §12.2.2: a lower CSeq than the last one is out of order: 500.
        if self.remote_cseq is not None and seq < self.remote_cseq:
            raise DialogError(f"CSeq {seq} lower than the dialog's {self.remote_cseq}", status=500)
        self.remote_cseq = seq
        if request.method == "BYE":
            self._apply("bye")
        elif request.method == "INVITE":
            # §12.2.2: a target refresh request updates the remote target.
            contacts = request.contacts
            if len(contacts) == 1:
                self.remote_target = contacts[0].uri

    def matches(self, message: SipRequest | SipResponse, *, local_is_from: bool) -> bool:
        """Whether *message* belongs to this dialog (Call-ID and both tags)."""
        if message.call_id != self.id.call_id:
            return False
        if local_is_from:
            return message.from_tag == self.id.local_tag and message.to_tag == self.id.remote_tag
        return message.to_tag == self.id.local_tag and message.from_tag == self.id.remote_tag

    # -- requests ------------------------------------------------------------------------------

    def next_cseq(self) -> int:
        """Take the next local CSeq (§12.2.1.1: one more than the last; 1 for a UAS dialog
        that has sent nothing yet, which §8.1.1.5 allows)."""
        seq = 1 if self.local_cseq is None else self.local_cseq + 1
        if seq > _MAX_CSEQ:
            raise UsageError("dialog CSeq exhausted")
        self.local_cseq = seq
        return seq

    def create_request(
        self,
        method: str,
        *,
        cseq: int | None = None,
        contact: NameAddr | None = None,
        headers: Iterable[tuple[str, HeaderValue]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        max_forwards: int = 70,
        user_agent: str | None = None,
    ) -> SipRequest:
        """An in-dialog request (§12.2.1.1), without Via.

        ACK and CANCEL reuse the INVITE's CSeq number (pass it as *cseq*); other methods
        take the next local CSeq. Routing is loose unless the first route lacks ``;lr``
        (strict routing: that route becomes the Request-URI and the remote target the last
        Route).
        """
        if self.state is DialogState.TERMINATED and method not in ("ACK",):
            raise UsageError(f"dialog {self.id} is terminated; cannot send {method}")
        if method in ("ACK", "CANCEL"):
            if cseq is None:
                raise UsageError(f"{method} needs the CSeq number of its INVITE")
            seq = cseq
        else:
            seq = self.next_cseq() if cseq is None else cseq
            if cseq is not None:
                self.local_cseq = cseq
        routes = list(self.route_set)
        if routes and not routes[0].uri.has_param("lr"):
            # §12.2.1.1 strict routing: Request-URI = first route (URI parameters not allowed
            # in a Request-URI removed), the rest as Route, remote target last.
            first = routes.pop(0).uri
            uri = replace(first, headers=())
            route_values = [*routes, NameAddr(self.remote_target)]
        else:
            uri = replace(self.remote_target, headers=())
            route_values = routes
        h = Headers()
        for route in route_values:
            h.add("Route", route)
        h.add("Max-Forwards", max_forwards)
        h.add("From", self.local_uri.with_tag(self.id.local_tag))
        h.add("To", self.remote_uri.with_tag(self.id.remote_tag))
        h.add("Call-ID", self.id.call_id)
        h.add("CSeq", CSeq(seq, method))
        if user_agent is not None:
            h.add("User-Agent", user_agent)
        if contact is not None:
            h.add("Contact", contact)
        for name, value in headers:
            h.add(name, value)
        if body:
            if content_type is None:
                raise UsageError("a request body needs a Content-Type")
            h.add("Content-Type", content_type)
        return SipRequest(method, uri, h, body)
