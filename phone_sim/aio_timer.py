"""One ``loop.call_at()`` armed at a sans-I/O core's deadline: the one timer helper every
asyncio shell (the phone, the lab's listeners) uses instead of its own copy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["CoreTimer"]


class CoreTimer:
    """Keeps at most one timer handle armed at the deadline it was last given.

    ``timer.arm(core.get_timer())`` after every pump; *callback* gets the deadline that
    fired (feed ``core.handle_timer(max(loop.time(), at))`` with it: a timer may fire a
    little early on some loops).
    """

    __slots__ = ("_at", "_callback", "_handle", "_loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[float], None]
    ) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    @property
    def deadline(self) -> float | None:
        """The deadline armed, or None."""
        return self._at

    def arm(self, at: float | None) -> None:
        """Fire at *at* (None: nothing scheduled); re-arming at the same time costs nothing."""
        if at == self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = at
        if at is not None:
            self._handle = self._loop.call_at(at, self._fire, at)

    def cancel(self) -> None:
        """Disarm."""
        self.arm(None)

    def _fire(self, at: float) -> None:
        self._handle = None
        self._at = None
        self._callback(at)
