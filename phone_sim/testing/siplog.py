"""Keep the SIP exchange of a test's phones, redacted, for its failure report.

:class:`SipCapture` listens on the ``phone_sim.sip.wire`` logger (see
:mod:`phone_sim.sip.wirelog`), which only formats messages while someone listens, and keeps
the last ``limit`` messages. The text it keeps is already redacted: SDES inline keys and
digest responses never reach it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from phone_sim.sip.wirelog import WIRE_LOGGER

__all__ = ["SipCapture", "WireMessage"]



class _LoggerState:
    """The wire logger's level and propagation before the first capture attached."""

    original: tuple[int, bool] | None = None


_STATE = _LoggerState()


@dataclass(frozen=True, slots=True, kw_only=True)
class WireMessage:
    """One SIP message a phone sent or received (redacted text)."""

    created: float
    """When it was logged (``time.time()`` of the log record)."""
    direction: str
    """``sent`` or ``received``."""
    local: str
    """The phone's Contact (which phone, which transport)."""
    peer: str
    """The other end, ``host:port``."""
    text: str
    """The message, with SDES keys and digest responses redacted."""


class _Handler(logging.Handler):
    def __init__(self, capture: SipCapture) -> None:
        super().__init__(logging.DEBUG)
        self._capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        direction = getattr(record, "sip_direction", None)
        if direction is None:
            return
        # The record's args hold (local, arrow, peer, redacted text): see wirelog.log_wire.
        args = record.args if isinstance(record.args, tuple) else ()
        text = str(args[3]) if len(args) == 4 else record.getMessage()
        self._capture.add(WireMessage(
            created=record.created,
            direction=str(direction),
            local=str(getattr(record, "sip_local", "?")),
            peer=str(getattr(record, "sip_peer", "?")),
            text=text,
        ))


class SipCapture:
    """Collect the wire log while attached (``with SipCapture() as capture:``)."""

    def __init__(self, limit: int = 400) -> None:
        self.limit = limit
        self.messages: deque[WireMessage] = deque(maxlen=limit)
        self.total = 0
        self._handler = _Handler(self)
        self._attached = False

    def add(self, message: WireMessage) -> None:
        """Keep ``message`` (the oldest go beyond ``limit``)."""
        # logging.Handler.handle() holds the handler's lock around emit(): one at a time.
        self.messages.append(message)
        self.total += 1

    def attach(self) -> None:
        """Start listening (turns the wire log on)."""
        if self._attached:
            return
        if _STATE.original is None:
            _STATE.original = (WIRE_LOGGER.level, WIRE_LOGGER.propagate)
        WIRE_LOGGER.addHandler(self._handler)
        WIRE_LOGGER.setLevel(logging.DEBUG)
        # The phones' SIP goes to this report only, not into every captured log as well.
        WIRE_LOGGER.propagate = False
        self._attached = True

    def detach(self) -> None:
        """Stop listening; the last capture to detach restores the logger as it was."""
        if not self._attached:
            return
        WIRE_LOGGER.removeHandler(self._handler)
        original = _STATE.original
        if original is not None and not any(
            isinstance(h, _Handler) for h in WIRE_LOGGER.handlers
        ):
            WIRE_LOGGER.setLevel(original[0])
            WIRE_LOGGER.propagate = original[1]
            _STATE.original = None
        self._attached = False

    def __enter__(self) -> SipCapture:
        self.attach()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def report(self) -> str:
        """The kept messages in order, each under a ``phone -> peer`` line."""
        messages = list(self.messages)
        total = self.total
        if not messages:
            return "(no SIP message was sent or received)"
        lines: list[str] = []
        if total > len(messages):
            lines.append(f"... {total - len(messages)} earlier messages left out ...")
        start = messages[0].created
        for m in messages:
            arrow = "->" if m.direction == "sent" else "<-"
            lines.append(f"--- +{m.created - start:.3f}s {m.local} {arrow} {m.peer}")
            lines.append(m.text.rstrip("\r\n").replace("\r\n", "\n"))
        return "\n".join(lines)
