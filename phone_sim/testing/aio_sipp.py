"""SIPp (UDP/TCP only: Debian's SIPp has no TLS) run against a target on 127.0.0.1.

:func:`run_sipp` runs one scenario to completion and returns a :class:`SippResult` with the
return code and the message trace; on failure ``result.check()`` raises with the trace, so a
test shows what went over the wire. The scenarios phone-sim ships (``register``, ``options``,
``invite_answered``...) are named without ``.xml`` (:func:`scenario_path`); a scenario of your
own is passed as a :class:`~pathlib.Path`.

It needs Debian's ``sip-tester``; without it :func:`run_sipp` raises
:class:`~phone_sim.testing.aio_process.PeerMissing` saying so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import signal
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from phone_sim.testing.aio_ports import free_port, free_port_run
from phone_sim.testing.aio_process import LOOPBACK, PeerError, tail, which
from phone_sim.testing.errors import PeerUsageError

__all__ = [
    "EXIT_MEANINGS",
    "SCENARIOS",
    "SippResult",
    "SippTransport",
    "auth_field",
    "run_sipp",
    "run_sipp_sync",
    "scenario_path",
    "sdes_crypto_line",
    "write_injection",
]

#: The SIPp scenarios shipped with phone-sim (package data).
SCENARIOS = Path(__file__).resolve().parent / "data" / "sipp"

SippTransport = Literal["udp", "tcp"]
P = ParamSpec("P")
T = TypeVar("T")

_TRANSPORT_FLAG = {"udp": "u1", "tcp": "t1"}

# SIPp's documented exit codes.
EXIT_MEANINGS = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}


def scenario_path(name: str) -> Path:
    """The path of a scenario shipped with phone-sim (``"register"`` or a file name)."""
    path = SCENARIOS / (name if name.endswith(".xml") else f"{name}.xml")
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.xml")))
        raise FileNotFoundError(
            f"no SIPp scenario {path} (phone-sim ships: {shipped}; pass a Path for your own)"
        )
    return path


_RECEIVED = re.compile(r"^(UDP|TCP) message received \[")


@dataclass(frozen=True, kw_only=True)
class SippResult:
    """The outcome of one SIPp run."""

    returncode: int
    """SIPp's exit status (see :data:`EXIT_MEANINGS`); -9 if it was killed on timeout."""
    messages: str
    """The message trace (``-trace_msg``): every request and response sent and received."""
    errors: str
    """The unexpected-message log (``-trace_err``)."""
    output: str
    """SIPp's own stdout and stderr."""
    timed_out: bool
    """True when the harness had to kill SIPp after its timeout."""

    @property
    def ok(self) -> bool:
        """True when every call of the scenario succeeded."""
        return self.returncode == 0 and not self.timed_out

    def received_messages(self) -> list[str]:
        """The text of every SIP message SIPp received, in order (from the trace)."""
        blocks = re.split(r"^-{20,}.*$", self.messages, flags=re.MULTILINE)
        found = []
        for block in blocks:
            lines = block.strip("\n").splitlines()
            if lines and _RECEIVED.match(lines[0]):
                found.append("\n".join(lines[1:]).strip("\n") + "\n")
        return found

    def received_statuses(self) -> list[int]:
        """The status codes of the responses SIPp received, in order."""
        statuses: list[int] = []
        lines = self.messages.splitlines()
        for i, line in enumerate(lines):
            if _RECEIVED.match(line):
                for follow in lines[i + 1 : i + 4]:
                    if follow.startswith("SIP/2.0 "):
                        statuses.append(int(follow.split()[1]))
                        break
        return statuses

    def describe(self) -> str:
        """A summary with the exit meaning, output, errors and the message trace tail."""
        meaning = EXIT_MEANINGS.get(self.returncode, "unknown")
        return (
            f"sipp exited {self.returncode} ({meaning}){' after timeout' if self.timed_out else ''}"
            f"\n--- output ---\n{tail(self.output, 30)}"
            f"\n--- unexpected messages ---\n{tail(self.errors, 40)}"
            f"\n--- message trace (tail) ---\n{tail(self.messages, 80)}"
        )

    def check(self) -> SippResult:
        """Return self if the scenario passed, else raise :class:`PeerError` with the trace."""
        if not self.ok:
            raise PeerError(self.describe())
        return self


def auth_field(username: str, password: str) -> str:
    """An injection value that SIPp expands into an Authorization header for the last 401/407."""
    for value in (username, password):
        if any(c in value for c in " ;]\n"):
            raise PeerUsageError(f"SIPp cannot carry {value!r} in an authentication keyword")
    return f"[authentication username={username} password={password}]"


def sdes_crypto_line(suite: str = "AES_CM_128_HMAC_SHA1_80", tag: int = 1) -> str:
    """An ``a=crypto`` line with a fresh random TEST-ONLY master key and salt (RFC 4568)."""
    key_len = {"AES_CM_128_HMAC_SHA1_80": 30, "AES_CM_128_HMAC_SHA1_32": 30,
               "F8_128_HMAC_SHA1_80": 30, "AES_256_CM_HMAC_SHA1_80": 46,
               "AES_256_CM_HMAC_SHA1_32": 46}.get(suite)
    if key_len is None:
        raise PeerUsageError(f"unknown SDES crypto suite {suite!r}")
    key = base64.b64encode(secrets.token_bytes(key_len)).decode()
    return f"a=crypto:{tag} {suite} inline:{key}"


def write_injection(path: Path, rows: Sequence[Sequence[str]], order: str = "SEQUENTIAL") -> Path:
    """Write a SIPp injection CSV (``[field0]``, ``[field1]``, ... per row)."""
    for row in rows:
        for value in row:
            if ";" in value or "\n" in value:
                raise PeerUsageError(f"SIPp injection value {value!r} may not hold ';' or newline")
    path.write_text(order + "\n" + "".join(";".join(row) + ";\n" for row in rows))
    return path


async def run_sipp(
    scenario: Path | str,
    target: tuple[str, int],
    *,
    workdir: Path,
    transport: SippTransport = "udp",
    inject: Sequence[Sequence[str]] = (),
    calls: int = 1,
    rate: float | None = None,
    timeout: float = 15.0,
    extra_args: Sequence[str] = (),
    local_port: int | None = None,
    default_behaviors: str = "all,-bye",
    service: str | None = None,
    keys: Mapping[str, str] | None = None,
    media_port: int | None = None,
) -> SippResult:
    """Run ``scenario`` against ``target`` (127.0.0.1 only) and return the outcome.

    ``inject`` rows become the ``-inf`` CSV; ``timeout`` is SIPp's global timeout (an error),
    with a hard kill a few seconds later should SIPp itself hang. ``default_behaviors`` drops
    SIPp's habit of sending BYE after an unexpected message (``-default_behaviors``).
    Async so that a phone under test in the same event loop keeps answering. ``service`` is
    the user part of the target (``-s``, ``[service]``), ``keys`` fill ``[NAME]`` keywords
    (``-key NAME VALUE``), and ``media_port`` is the port SIPp offers in SDP (``-mp``; a free
    even port by default, with the three after it, which SIPp also binds).
    """
    binary = which("sipp")
    host, port = target
    if host not in (LOOPBACK, "::1"):
        raise PeerUsageError(f"SIPp target must be loopback, not {host!r}")
    path = scenario if isinstance(scenario, Path) else scenario_path(scenario)
    workdir.mkdir(parents=True, exist_ok=True)
    stem = f"sipp-{path.stem}-{free_port()}"
    message_file = workdir / f"{stem}-messages.log"
    error_file = workdir / f"{stem}-errors.log"
    argv = [
        binary, f"{host}:{port}",
        "-sf", str(path),
        "-t", _TRANSPORT_FLAG[transport],
        "-i", LOOPBACK,
        "-p", str(local_port or free_port()),
        "-m", str(calls),
        "-timeout", f"{timeout}s", "-timeout_error",
        "-nostdin",
        "-trace_msg", "-message_file", str(message_file),
        "-trace_err", "-error_file", str(error_file),
        "-max_recv_loops", "1000",
        "-default_behaviors", default_behaviors,
    ]
    # SIPp binds audio RTP/RTCP on -mp and -mp+1, and video on -mp+2 and -mp+3: reserve all four.
    argv += ["-mp", str(media_port or free_port_run(4, even=True))]
    if service is not None:
        argv += ["-s", service]
    for name, value in (keys or {}).items():
        if not name.isidentifier() or "\n" in value:
            raise PeerUsageError(f"bad SIPp key {name!r}")
        argv += ["-key", name, value]
    if rate is not None:
        argv += ["-r", str(rate)]
    if inject:
        argv += ["-inf", str(write_injection(workdir / f"{stem}.csv", inject))]
    argv += list(extra_args)

    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "TERM": "dumb"},
    )
    timed_out = False
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout + 5.0)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise

    def read(p: Path) -> str:
        return p.read_text(errors="replace") if p.exists() else ""

    return SippResult(
        returncode=proc.returncode if proc.returncode is not None else -9,
        messages=read(message_file),
        errors=read(error_file),
        output=out.decode(errors="replace"),
        timed_out=timed_out,
    )


def _blocking(coro_fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(coro_fn(*args, **kwargs))

    run.__doc__ = f":func:`{coro_fn.__name__}` for code without an event loop (blocks)."
    return run


run_sipp_sync = _blocking(run_sipp)
