"""The lab in a separate process, for benchmarks: ``phone-sim lab --json`` under asyncio.

::

    async with LabProcess(users={"101": "1234"}) as lab:   # or users=None: 101-106 / 1234
        lab.ports, lab.ca_file, lab.server_name, lab.host   # as with Lab
        ...                                                 # register thousands of phones
    lab.final                                               # {"stopped": true, "stats": ...}

Passwords reach the child through ``--user`` on its command line, which other local users can
see in ``ps``: fine for the loopback test accounts this is for, not for real secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from phone_sim.lab.aio import DEFAULT_SERVER_NAME, LabError

__all__ = ["LabProcess"]


class LabProcess:
    """``phone-sim lab --json --quiet`` as a child process, with the ports it bound."""

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        server_name: str = DEFAULT_SERVER_NAME,
        transports: Sequence[str] = ("tls", "tcp", "udp"),
        extra_args: Sequence[str] = (),
        start_timeout: float = 20.0,
    ) -> None:
        """Prepare the command; :meth:`start` runs it. Every port is 0 (a free one)."""
        self.host = host
        self.server_name = server_name
        args = [
            sys.executable, "-m", "phone_sim", "lab", "--json", "--quiet",
            "--host", host, "--server-name", server_name,
            "--transport", ",".join(transports),
            "--tls-port", "0", "--tcp-port", "0", "--udp-port", "0",
        ]  # fmt: skip
        for user, password in (users or {}).items():
            args += ["--user", f"{user}:{password}"]
        args += list(extra_args)
        self._args = args
        self._start_timeout = start_timeout
        self._process: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        #: What the child logged on stderr, line by line (the last 10,000 lines; read all
        #: along, so a chatty child never blocks on a full pipe).
        self.log_lines: list[str] = []
        #: How many lines it logged in all.
        self.log_count = 0
        self._stderr_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        pid = self._process.pid if self._process else None
        return f"<LabProcess pid={pid} ports={self.ports}>"

    @property
    def ports(self) -> dict[str, int]:
        """The bound ports per transport."""
        return dict(self.info.get("ports", {}))

    @property
    def ca_file(self) -> Path | None:
        """The CA file the child wrote."""
        value = self.info.get("ca_file")
        return Path(value) if value else None

    @property
    def pid(self) -> int | None:
        """The child's process id (e.g. to read its RSS)."""
        return self._process.pid if self._process else None

    async def __aenter__(self) -> LabProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the child and wait for its ready line."""
        env = dict(os.environ)
        self._process = await asyncio.create_subprocess_exec(
            *self._args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert self._process.stdout is not None
        try:
            async with asyncio.timeout(self._start_timeout):
                line = await self._process.stdout.readline()
        except TimeoutError:
            await self.stop()
            raise LabError(
                f"the lab process said nothing within {self._start_timeout:g} s"
            ) from None
        if not line:
            err = b""
            if self._process.stderr is not None:
                err = await self._process.stderr.read()
            await self._process.wait()
            raise LabError(
                f"the lab process exited ({self._process.returncode}): "
                f"{err.decode(errors='replace').strip()}"
            )
        self.info = json.loads(line)
        self._stderr_task = asyncio.get_running_loop().create_task(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        stderr = self._process.stderr
        while line := await stderr.readline():
            self.log_count += 1
            self.log_lines.append(line.decode(errors="replace").rstrip("\n"))
            if len(self.log_lines) > 10_000:
                del self.log_lines[:1000]

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGINT, wait for the final line and the exit (SIGKILL after ``timeout``)."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(timeout):
                assert process.stdout is not None
                out = await process.stdout.read()
                await process.wait()
                if self._stderr_task is not None:
                    await self._stderr_task
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            if self._stderr_task is not None:
                self._stderr_task.cancel()
            return
        for line in out.splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and data.get("stopped"):
                    self.final = data
