"""Child processes for test peers (Asterisk, Kamailio, baresip, tshark...): own session,
always reaped.

Every peer process is recorded in :data:`RUNNING` while it lives so that a pytest plugin
can attach its log to a failing test's report and kill anything a test left behind. A peer
also gets SIGTERM when the thread that started it dies (Linux), so a test process killed
outright leaves no peer holding its ports.

:func:`which` finds a peer's program, or raises :class:`PeerMissing` saying which Debian
package installs it; it records every program it found in :data:`LOOKED_UP`, so that a test
harness can tell which tests started a real peer.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from phone_sim.errors import PhoneSimError
from phone_sim.testing.aio_ports import LOOPBACK


class PeerError(PhoneSimError):
    """A test peer failed to start, answer or stop; the message includes its log tail."""


class PeerMissing(PeerError):
    """The peer's program is not installed; the message says how to get it (tests skip)."""


#: The Debian packages that install each peer program (``apt-get install ...``).
DEBIAN_PACKAGES: Mapping[str, str] = {
    "kamailio": "kamailio kamailio-tls-modules",
    "kamcmd": "kamailio",
    "baresip": "baresip-core",
    "sipp": "sip-tester",
    "tshark": "tshark",
    "dumpcap": "wireshark-common",
    "openssl": "openssl",
}

# Debian installs daemons in sbin (``/usr/sbin/kamailio``), outside a non-root user's PATH.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"

#: Every program :func:`which` found, until someone clears it: the project's own suite clears
#: it before each test to check that the tests which start a real peer are marked so.
LOOKED_UP: set[str] = set()


def locate(binary: str) -> str | None:
    """The path of ``binary`` on PATH (or in the sbin directories), ``None`` if absent."""
    return shutil.which(binary) or shutil.which(binary, path=_SBIN)


def install_hint(binary: str) -> str:
    """How to get ``binary``: the Debian package that has it, when it is a known peer."""
    package = DEBIAN_PACKAGES.get(binary)
    if package is None:
        return "install it, or put it on PATH"
    return f"Debian/Ubuntu: sudo apt-get install {package}"


def which(binary: str, *, hint: str | None = None) -> str:
    """Return the path of ``binary`` or raise :class:`PeerMissing` saying how to get it
    (``hint``, else the Debian package of a known peer), and record it in :data:`LOOKED_UP`.
    """
    found = locate(binary)
    if found is None:
        raise PeerMissing(f"{binary} is not installed ({hint or install_hint(binary)})")
    LOOKED_UP.add(binary)
    return found


def tail(text: str, lines: int = 60) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1
# Resolved once in the parent, so that the forked child only makes the system call.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the thread that started us dies.

    This covers a test process killed outright (SIGKILL, a CI timeout), where no teardown
    runs: the peer, in its own session, would otherwise keep its ports.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _stop_all_at_exit() -> None:
    for peer in list(RUNNING):
        peer.stop(timeout=2.0)


def live_group_members(pgid: int) -> list[int]:
    """Pids of processes in group ``pgid`` that are still running (zombies excluded)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


class PeerProcess:
    """One peer process with its output in a log file; use :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.log_path = log_path
        self.env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc else None
        return f"<PeerProcess {self.name} pid={pid} running={self.running}>"

    @property
    def pid(self) -> int | None:
        """The process id, while started."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited."""
        return self._proc.poll() if self._proc else None

    def start(self) -> None:
        """Start the process in its own session, output appended to the log file.

        A program named without a path (``argv[0]``) is looked up now, with :func:`which`:
        a missing one raises :class:`PeerMissing` naming its package.
        """
        if self.running:
            raise PeerError(f"{self.name} is already running")
        program = self.argv[0]
        argv = [program if os.path.isabs(program) else which(program), *self.argv[1:]]
        with self.log_path.open("ab") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            log.flush()
            # The death signal follows the starting *thread*; a worker thread (asyncio's
            # to_thread) may end before the peer should, so only the main thread asks for it.
            in_main = threading.current_thread() is threading.main_thread()
            self._proc = subprocess.Popen(  # noqa: S603 - the caller's argv, no shell
                argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "LC_ALL": "C", **self.env},
                # Only a prctl system call runs between fork and exec.
                preexec_fn=(  # noqa: PLW1509
                    _die_with_parent if in_main and sys.platform == "linux" else None
                ),
            )
        RUNNING.add(self)

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """Ask the process to end (``sig``), then kill its whole session after ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
            # Workers forked by the peer live in its session: make sure none survive.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
            deadline = time.monotonic() + timeout
            while live_group_members(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            RUNNING.discard(self)

    def log_text(self) -> str:
        """Everything the process wrote so far (all starts)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def fail(self, message: str) -> PeerError:
        """A :class:`PeerError` with ``message`` and the tail of the log."""
        return PeerError(f"{self.name}: {message}\n--- {self.log_path} (tail) ---\n"
                         f"{tail(self.log_text())}")


RUNNING: set[PeerProcess] = set()
atexit.register(_stop_all_at_exit)

__all__ = [
    "DEBIAN_PACKAGES", "LOOKED_UP", "LOOPBACK", "RUNNING", "PeerError", "PeerMissing",
    "PeerProcess", "install_hint", "live_group_members", "locate", "tail", "which",
]
