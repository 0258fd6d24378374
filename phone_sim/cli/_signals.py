"""Ctrl-C and SIGTERM for the commands that run until stopped, one way for all of them.

The first signal asks the command to stop cleanly (unregister, hang up, stop the lab), which
can take a few seconds against a silent server; if it does, one line on stderr says so. A
second Ctrl-C quits at once: the handler is removed, Python's own raises KeyboardInterrupt,
and the command exits 130 (the sockets are closed as the event loop shuts down).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator

__all__ = ["SLOW_STOP_AFTER", "stop_on_signals"]

#: Seconds after the first signal before the "still stopping" line.
SLOW_STOP_AFTER = 1.0


@contextlib.contextmanager
def stop_on_signals(
    on_stop: Callable[[int], None], *, stopping: str = "stopping"
) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call ``on_stop(signum)`` once; after that a
    second Ctrl-C interrupts at once. *stopping* names what a slow stop is doing
    ("unregistering"), for the line that says so."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    hint: asyncio.TimerHandle | None = None
    fired = False

    def slow() -> None:
        print(f"{stopping}... (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    def handler(signum: signal.Signals) -> None:
        nonlocal fired, hint
        if fired:
            return
        fired = True
        if signal.SIGINT in installed:
            # Python's default handler again: the next Ctrl-C raises KeyboardInterrupt.
            loop.remove_signal_handler(signal.SIGINT)
            installed.remove(signal.SIGINT)
        hint = loop.call_later(SLOW_STOP_AFTER, slow)
        on_stop(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not on Windows' loops, nor outside the main thread: Ctrl-C is then Python's own.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, handler, signum)
            installed.append(signum)
    try:
        yield
    finally:
        if hint is not None:
            hint.cancel()
        for signum in installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
