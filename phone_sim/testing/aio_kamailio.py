"""Kamailio as a TEST-ONLY registrar and record-routing proxy on 127.0.0.1.

:class:`Kamailio` writes ``kamailio.cfg`` and ``tls.cfg`` (rendered by
:mod:`phone_sim.testing.kamailio_config` from the templates shipped with phone-sim), starts
``kamailio -f cfg -DD -E -Y <rundir> -w <cfgdir>`` in the foreground, waits until its UDP, TCP
and TLS ports answer, and reads the location table through the ``jsonrpcs`` FIFO (or
``kamcmd -s unix:<ctl socket> ul.dump``).

>>> from pathlib import Path
>>> from phone_sim.testing.aio_kamailio import Kamailio
>>> from phone_sim.testing.certs import make_test_pki
>>> pki = make_test_pki(Path("/tmp/pki"))  # doctest: +SKIP
>>> with Kamailio(Path("/tmp/kam"), pki) as kam:  # doctest: +SKIP
...     print(kam.uri("tls"), kam.user("101").password)

It needs Debian's ``kamailio`` and ``kamailio-tls-modules``; without them :meth:`Kamailio.start`
raises :class:`~phone_sim.testing.aio_process.PeerMissing` saying so.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phone_sim.testing.aio_ports import free_port
from phone_sim.testing.aio_process import LOOPBACK, PeerError, PeerProcess, which
from phone_sim.testing.certs import TestPki
from phone_sim.testing.kamailio_config import (
    DEFAULT_USERS,
    Binding,
    KamailioConfig,
    SipUser,
    Transport,
    bindings_from_rpc,
    make_users,
    parse_ul_dump,
    render_kamailio_cfg,
    render_tls_cfg,
)

__all__ = [
    "DEFAULT_USERS",
    "Binding",
    "Kamailio",
    "KamailioConfig",
    "KamailioRpcError",
    "SipUser",
    "Transport",
    "bindings_from_rpc",
    "make_users",
    "parse_ul_dump",
]


class KamailioRpcError(PeerError):
    """A Kamailio RPC command answered with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"kamailio RPC {method} failed: {code} {message}")
        self.method = method
        self.code = code
        self.rpc_message = message


def _read_fifo_reply(fd: int, timeout: float) -> bytes:
    # A FIFO reads as EOF until its writer connects, so wait for data, then read to EOF.
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.05))
        data = os.read(fd, 1 << 16) if ready else b""
        if data:
            chunks.append(data)
        elif chunks and ready:
            return b"".join(chunks)


class Kamailio:
    """A TEST-ONLY Kamailio registrar/proxy on 127.0.0.1 with free UDP, TCP and TLS ports.

    ``Kamailio(workdir, pki)`` only prepares; :meth:`start` writes the configuration and
    waits until the ports answer. Use it as a context manager or call :meth:`stop`.
    """

    def __init__(
        self,
        workdir: Path,
        pki: TestPki,
        config: KamailioConfig | None = None,
        *,
        udp_port: int | None = None,
        tcp_port: int | None = None,
        tls_port: int | None = None,
    ) -> None:
        self.config = config or KamailioConfig()
        self.pki = pki
        self.workdir = workdir
        self.cfg_dir = workdir / "cfg"
        # A unix socket path must stay short (108 bytes), so it lives in a short directory
        # of its own (random name, mode 0700), not in the caller's: pytest's are long, and
        # so may $TMPDIR be. It is made when the config is written and removed by close().
        self.run_dir = Path("/tmp") / f"kam-{uuid.uuid4().hex[:12]}"  # noqa: S108
        self._ports_chosen = not (udp_port or tcp_port or tls_port)
        self.udp_port = udp_port or free_port()
        self.tcp_port = tcp_port or free_port()
        self.tls_port = tls_port or free_port()
        self.ctl_socket = self.run_dir / "ctl.sock"
        self.rpc_fifo = self.run_dir / "rpc.fifo"
        self.cfg_path = self.cfg_dir / "kamailio.cfg"
        self.host = LOOPBACK
        self._process = PeerProcess(
            "kamailio",
            [
                "kamailio",
                "-f", str(self.cfg_path),
                "-DD", "-E",
                "-Y", str(self.run_dir),
                "-w", str(self.cfg_dir),
                "-m", str(self.config.shm_mb), "-M", "8",
            ],
            cwd=workdir,
            log_path=workdir / "kamailio.log",
        )

    @property
    def binary(self) -> str:
        """The ``kamailio`` program (looked up when used: preparing needs none)."""
        return which("kamailio")

    @property
    def kamcmd(self) -> str:
        """The ``kamcmd`` program."""
        return which("kamcmd")

    def __repr__(self) -> str:
        return (f"<Kamailio udp={self.udp_port} tcp={self.tcp_port} tls={self.tls_port} "
                f"running={self.running}>")

    # -- addresses -------------------------------------------------------------------------

    @property
    def domain(self) -> str:
        """The SIP domain (also the digest realm)."""
        return self.config.domain

    def port(self, transport: Transport) -> int:
        """The listening port for ``transport``."""
        return {"udp": self.udp_port, "tcp": self.tcp_port, "tls": self.tls_port}[transport]

    def uri(self, transport: Transport) -> str:
        """This proxy's URI over ``transport``: ``sip:127.0.0.1:PORT;transport=tls``."""
        return f"sip:{self.host}:{self.port(transport)};transport={transport}"

    def user(self, name: str) -> SipUser:
        """The configured account ``name``."""
        for user in self.config.users:
            if user.user == name:
                return user
        known = ", ".join(u.user for u in self.config.users[:10])
        raise KeyError(f"no user {name!r} in this Kamailio's table ({known})")

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the kamailio main process lives."""
        return self._process.running

    @property
    def process(self) -> PeerProcess:
        """The underlying process (log, pid)."""
        return self._process

    def log_text(self) -> str:
        """All Kamailio output so far, across restarts."""
        return self._process.log_text()

    def write_config(self) -> None:
        """(Re)write kamailio.cfg and tls.cfg into the config dir."""
        self.cfg_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        self.cfg_path.write_text(
            render_kamailio_cfg(
                self.config, udp_port=self.udp_port, tcp_port=self.tcp_port,
                tls_port=self.tls_port, ctl_socket=self.ctl_socket, rpc_fifo=self.rpc_fifo,
                run_dir=self.run_dir,
            ),
            encoding="utf-8",
        )
        (self.cfg_dir / "tls.cfg").write_text(
            render_tls_cfg(self.config, server_cert=self.pki.server.cert,
                           server_key=self.pki.server.key, ca_cert=self.pki.ca.cert),
            encoding="utf-8",
        )

    def check_config(self) -> None:
        """Run ``kamailio -c`` on the generated config; raise with its output if it fails.
        The short runtime directory it needs is removed again unless Kamailio runs."""
        made = not self.run_dir.exists()
        try:
            self.write_config()
            result = subprocess.run(  # noqa: S603 - our binary, our arguments, no shell
                [self.binary, "-c", "-f", str(self.cfg_path), "-w", str(self.cfg_dir)],
                capture_output=True, text=True, timeout=30, check=False, cwd=self.cfg_dir,
            )
        finally:
            if made and not self.running:
                self._remove_run_dir()
        if result.returncode != 0:
            raise PeerError(f"kamailio -c rejected the config:\n{result.stdout}{result.stderr}")

    def start(self, timeout: float = 15.0) -> None:
        """Write the config, start Kamailio and wait until UDP, TCP and TLS answer.

        If another process grabbed one of the harness-chosen ports in the meantime (other test
        runs share the machine), it picks new ports and tries again, twice at most.
        """
        for attempt in range(3):
            self.write_config()
            self.ctl_socket.unlink(missing_ok=True)
            log_offset = len(self._process.log_text())
            self._process.start()
            try:
                self._wait_ready(timeout)
                return
            except PeerError:
                self._process.stop()
                lost_race = "Address already in use" in self._process.log_text()[log_offset:]
                if not (lost_race and self._ports_chosen and attempt < 2):
                    raise
                self.udp_port, self.tcp_port, self.tls_port = free_port(), free_port(), free_port()
            except BaseException:
                self._process.stop()
                raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop Kamailio and every worker it forked."""
        self._process.stop(timeout)

    def close(self) -> None:
        """Stop and remove the runtime dir."""
        self.stop()
        self._remove_run_dir()

    def _remove_run_dir(self) -> None:
        self.ctl_socket.unlink(missing_ok=True)
        for leftover in self.run_dir.glob("*"):
            leftover.unlink(missing_ok=True)
        if self.run_dir.exists():
            self.run_dir.rmdir()

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start again on the same ports (the location table starts empty)."""
        self.stop()
        self._ports_chosen = False  # phones know these ports now: never move them
        self.start(timeout)

    def __enter__(self) -> Kamailio:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = ["ctl", "rpc", "udp", "tcp", "tls"]
        while pending:
            if not self._process.running:
                raise self._process.fail(
                    f"exited with status {self._process.returncode} while starting"
                )
            if time.monotonic() > deadline:
                raise self._process.fail(f"not ready after {timeout:.0f} s: {pending} silent")
            pending = [what for what in pending if not self._probe(what)]
            if pending:
                time.sleep(0.05)

    def _probe(self, what: str) -> bool:
        if what == "ctl":
            return self.ctl_socket.exists()
        if what == "rpc":
            try:  # ENXIO until the jsonrpcs process has the FIFO open for reading
                os.close(os.open(self.rpc_fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                return False
            return True
        if what == "udp":
            return self._udp_options_answered()
        port = self.tcp_port if what == "tcp" else self.tls_port
        try:
            with socket.create_connection((self.host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def _udp_options_answered(self) -> bool:
        branch = f"z9hG4bK{uuid.uuid4().hex}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((self.host, 0))
            sock.settimeout(0.3)
            local_port = sock.getsockname()[1]
            request = (
                f"OPTIONS sip:{self.host}:{self.udp_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.host}:{local_port};branch={branch};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:probe@{self.host}>;tag=probe\r\n"
                f"To: <sip:{self.host}:{self.udp_port}>\r\n"
                f"Call-ID: {uuid.uuid4().hex}@{self.host}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            try:
                sock.sendto(request, (self.host, self.udp_port))
                data = sock.recv(4096)
            except OSError:
                return False
        return data.startswith(b"SIP/2.0 ")

    # -- the location table ----------------------------------------------------------------

    def kamcmd_run(self, *args: str, timeout: float = 5.0) -> str:
        """Run ``kamcmd -s unix:<ctl socket> ARGS`` and return its output."""
        result = subprocess.run(  # noqa: S603 - our binary, the caller's RPC arguments
            [self.kamcmd, "-s", f"unix:{self.ctl_socket}", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if result.returncode != 0:
            raise self._process.fail(
                f"kamcmd {' '.join(args)} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def rpc(self, method: str, *params: str | int, timeout: float = 10.0) -> Any:
        """Call a Kamailio RPC command through the jsonrpcs FIFO and return its ``result``.

        Unlike ``kamcmd``, whose replies stop at 64 KB (about 250 bindings), the FIFO has no
        size limit, so a load test can dump thousands of bindings.
        """
        if not self._process.running:
            raise self._process.fail(f"not running, cannot call {method}")
        reply_name = f"reply{uuid.uuid4().hex}"  # jsonrpcs forbids '.', '/' and the like
        reply_path = self.run_dir / reply_name
        os.mkfifo(reply_path, 0o600)
        try:
            reader = os.open(reply_path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                request = {"jsonrpc": "2.0", "method": method, "params": list(params),
                           "id": 1, "reply_name": reply_name}
                writer = os.open(self.rpc_fifo, os.O_WRONLY | os.O_NONBLOCK)
                try:
                    os.write(writer, json.dumps(request).encode() + b"\n")
                finally:
                    os.close(writer)
                raw = _read_fifo_reply(reader, timeout)
            finally:
                os.close(reader)
        except TimeoutError:
            raise self._process.fail(f"no RPC reply to {method} in {timeout} s") from None
        except OSError as exc:
            raise self._process.fail(f"RPC {method} failed: {exc}") from None
        finally:
            reply_path.unlink(missing_ok=True)
        try:
            reply = json.loads(raw)
        except ValueError:
            raise self._process.fail(f"RPC {method}: reply is not JSON: {raw[:200]!r}") from None
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            raise KamailioRpcError(
                method, int(error.get("code", 0)), str(error.get("message", reply["error"]))
            )
        return reply.get("result")

    def ul_dump(self) -> list[Binding]:
        """The whole location table now, one :class:`Binding` per contact (JSON-RPC)."""
        return bindings_from_rpc(self.rpc("ul.dump"))

    def ul_dump_kamcmd(self) -> list[Binding]:
        """The same through ``kamcmd ul.dump`` (its replies stop at about 250 bindings)."""
        return parse_ul_dump(self.kamcmd_run("ul.dump"))

    def bindings(self, aor: str) -> list[Binding]:
        """The contacts bound to ``aor`` now (``ul.lookup``: cheap even in a big table)."""
        try:
            return bindings_from_rpc(self.rpc("ul.lookup", "location", aor))
        except KamailioRpcError as exc:
            if "not found" in exc.rpc_message.lower():  # 500 "AOR not found in location table"
                return []
            raise

    async def arestart(self, timeout: float = 15.0) -> None:
        """:meth:`restart` without blocking the event loop (phones in it keep running)."""
        await asyncio.to_thread(self.restart, timeout)

    async def wait_bindings(
        self,
        aor: str,
        *,
        timeout: float = 10.0,
        until: Callable[[list[Binding]], bool] = bool,
        interval: float = 0.1,
    ) -> list[Binding]:
        """Poll ``ul.dump`` without blocking the event loop until ``until(bindings)`` holds.

        The default waits for at least one contact; ``until=lambda b: not b`` waits for none.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = await asyncio.to_thread(self.bindings, aor)
            if until(found):
                return found
            if time.monotonic() > deadline:
                raise self._process.fail(
                    f"bindings of {aor!r} did not reach the expected state in {timeout} s; "
                    f"last: {found}"
                )
            await asyncio.sleep(interval)
