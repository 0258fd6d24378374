"""A real Asterisk for tests: found where ``scripts/build-asterisk`` put it, started in the
foreground from a rendered configuration directory on free loopback ports, stopped after.

>>> from pathlib import Path
>>> from phone_sim.testing.aio_asterisk import Asterisk
>>> with Asterisk(Path("/tmp/work"), Path("fixtures/asterisk")) as pbx:  # doctest: +SKIP
...     print(pbx.tls_port, pbx.certs.ca_file)

The configuration is rendered by :mod:`phone_sim.testing.asterisk_config`; the TLS transport
serves a certificate from phone-sim's own test PKI (:func:`make_asterisk_certs`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.testing.aio_ports import LOOPBACK, free_port, free_port_run, release_ports
from phone_sim.testing.aio_process import PeerError, PeerMissing, PeerProcess, tail
from phone_sim.testing.asterisk_config import (
    DEFAULT_SERVER_NAME,
    AsteriskCerts,
    AsteriskSettings,
    AsteriskUser,
    default_users,
    make_asterisk_certs,
    render_config,
)

__all__ = [
    "ASTERISK_VERSION",
    "DEFAULT_SERVER_NAME",
    "HOW_TO_BUILD",
    "Asterisk",
    "AsteriskCerts",
    "AsteriskInstall",
    "AsteriskMissing",
    "default_prefixes",
    "find_asterisk",
    "make_asterisk_certs",
]

ASTERISK_VERSION = "22.10.1"
PREFIX_ENV = "PHONE_SIM_ASTERISK_PREFIX"

HOW_TO_BUILD = (
    f"no Asterisk {ASTERISK_VERSION} build found. In a phone-sim checkout run "
    "scripts/build-asterisk (it builds from ../shared/peers/asterisk, or from the release "
    "tarball with --download, into /opt/phone-sim or ~/.cache/phone-sim, once), or set "
    f"{PREFIX_ENV} to the prefix of an Asterisk 22 build with chan_pjsip and res_srtp"
)


class AsteriskMissing(PeerMissing):
    """No usable Asterisk build; the message says how to get one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AsteriskInstall:
    """An Asterisk build in a prefix (``<prefix>/sbin/asterisk``)."""

    prefix: Path
    """The installation prefix given to ``./configure --prefix``."""

    @property
    def binary(self) -> Path:
        """The ``asterisk`` executable."""
        return self.prefix / "sbin" / "asterisk"

    @property
    def module_dir(self) -> Path:
        """Where its modules are."""
        return self.prefix / "lib" / "asterisk" / "modules"


def default_prefixes() -> list[Path]:
    """Where ``scripts/build-asterisk`` installs by default, in the order it prefers."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [
        Path("/opt/phone-sim") / f"asterisk-{ASTERISK_VERSION}",
        cache / "phone-sim" / f"asterisk-{ASTERISK_VERSION}",
    ]


def find_asterisk(prefix: str | Path | None = None) -> AsteriskInstall:
    """The Asterisk build in ``prefix``, else ``$PHONE_SIM_ASTERISK_PREFIX``, else the first
    default prefix holding one; :class:`AsteriskMissing` says how to build it."""
    explicit = prefix if prefix is not None else os.environ.get(PREFIX_ENV)
    if explicit:
        install = AsteriskInstall(prefix=Path(explicit).expanduser().resolve())
        if not os.access(install.binary, os.X_OK):
            where = "the prefix given" if prefix is not None else PREFIX_ENV
            raise AsteriskMissing(
                f"{where} is {install.prefix}, which has no sbin/asterisk; {HOW_TO_BUILD}"
            )
        return install
    for candidate in default_prefixes():
        install = AsteriskInstall(prefix=candidate)
        if os.access(install.binary, os.X_OK) and install.module_dir.is_dir():
            return install
    raise AsteriskMissing(HOW_TO_BUILD)


# The control socket path must fit sockaddr_un (108 bytes with the NUL).
_MAX_SOCKET_PATH = 100


class Asterisk:
    """A real Asterisk started from ``template_dir`` (like ``fixtures/asterisk``).

    :meth:`start` picks free loopback ports (TLS, UDP, an RTP range), renders the
    configuration into ``workdir``, starts ``asterisk -f -C <workdir>/etc/asterisk.conf`` and
    waits until it is fully booted and its TLS transport accepts connections. :meth:`stop`
    ends it and everything it started. Use it as a context manager.
    """

    def __init__(
        self,
        workdir: Path,
        template_dir: Path,
        *,
        install: AsteriskInstall | None = None,
        certs: AsteriskCerts | None = None,
        users: tuple[AsteriskUser, ...] | None = None,
        sip_debug: bool = True,
        rtp_ports: int = 128,
        name: str = "asterisk",
    ) -> None:
        if rtp_ports < 4:
            raise UsageError(f"an RTP range of {rtp_ports} ports is too small (4 at least)")
        self.install = install or find_asterisk()
        self.workdir = workdir
        self.template_dir = template_dir
        workdir.mkdir(parents=True, exist_ok=True)
        self.certs = certs or make_asterisk_certs(workdir / "certs")
        self.users = users if users is not None else default_users()
        self.sip_debug = sip_debug
        self.rtp_ports = rtp_ports
        self.name = name
        self.tls_port = 0
        self.udp_port = 0
        self.rtp_start = 0
        self.rtp_end = 0
        run_dir = workdir / "run"
        self._private_run_dir: Path | None = None
        if len(str(run_dir / "asterisk.ctl")) > _MAX_SOCKET_PATH:
            self._private_run_dir = Path(tempfile.mkdtemp(prefix="ast-"))
            run_dir = self._private_run_dir
        self.run_dir = run_dir
        self.config_path = workdir / "etc" / "asterisk.conf"
        self.process = PeerProcess(
            name,
            [str(self.install.binary), "-f", "-n", "-C", str(self.config_path)],
            cwd=workdir,
            log_path=workdir / f"{name}.log",
        )

    def __repr__(self) -> str:
        return (f"<Asterisk {self.name} tls={LOOPBACK}:{self.tls_port} "
                f"udp={LOOPBACK}:{self.udp_port} running={self.running}>")

    def __enter__(self) -> Asterisk:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.process.running

    @property
    def server_name(self) -> str:
        """The name in the TLS certificate (the phones' ``server_name``)."""
        return self.certs.server_name

    def user(self, name: str) -> AsteriskUser:
        """The configured user ``name`` (its password for a phone's account)."""
        for user in self.users:
            if user.user == name:
                return user
        raise UsageError(f"Asterisk has no user {name!r} (it has {len(self.users)} users)")

    def settings(self) -> AsteriskSettings:
        """The values rendered into the configuration."""
        return AsteriskSettings(
            config_dir=self.config_path.parent,
            module_dir=self.install.module_dir,
            sbin_dir=self.install.binary.parent,
            var_dir=self.workdir / "var",
            run_dir=self.run_dir,
            data_dir=self.workdir / "data",
            cert_file=self.certs.cert_file,
            key_file=self.certs.key_file,
            bind_address=LOOPBACK,
            tls_port=self.tls_port,
            udp_port=self.udp_port,
            rtp_start=self.rtp_start,
            rtp_end=self.rtp_end,
            sip_debug=self.sip_debug,
            users=self.users,
        )

    def _choose_ports(self) -> None:
        self._release_ports()
        self.tls_port, self.udp_port = free_port(), free_port()
        self.rtp_start = free_port_run(self.rtp_ports, even=True, udp_only=True)
        self.rtp_end = self.rtp_start + self.rtp_ports - 1

    def start(self, timeout: float = 60.0) -> None:
        """Render the configuration, start Asterisk and wait until it serves TLS.

        Another process on the machine may take a chosen port before Asterisk binds it: then
        it picks new ports and starts again, twice at most.
        """
        for attempt in range(3):
            self._choose_ports()
            render_config(self.template_dir, self.settings())
            (self.run_dir / "asterisk.ctl").unlink(missing_ok=True)
            offset = len(self.process.log_text())
            self.process.start()
            try:
                self._wait_ready(timeout, offset)
                return
            except PeerError:
                self.process.stop()
                lost_race = "already in use" in self.process.log_text()[offset:]
                if not (lost_race and attempt < 2):
                    raise
            except BaseException:
                self.process.stop()
                raise

    def _wait_ready(self, timeout: float, offset: int) -> None:
        deadline = time.monotonic() + timeout
        ctl = self.run_dir / "asterisk.ctl"
        while not ctl.exists():
            if not self.process.running:
                raise self._fail(f"exited with status {self.process.returncode} while starting")
            if time.monotonic() > deadline:
                raise self._fail(f"no control socket {ctl} after {timeout:.0f} s")
            time.sleep(0.05)
        remaining = max(1.0, deadline - time.monotonic())
        try:
            self.cli("core waitfullybooted", timeout=remaining)
        except PeerError as exc:
            raise self._fail(f"did not finish booting: {exc}") from None
        if "already in use" in self.process.log_text()[offset:]:
            raise self._fail("a SIP transport could not bind its port (already in use)")
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                (LOOPBACK, self.tls_port), timeout=1.0
            ):
                return
            if not self.process.running or time.monotonic() > deadline:
                raise self._fail(f"its TLS transport does not accept on port {self.tls_port}")
            time.sleep(0.05)

    def cli(self, command: str, timeout: float = 10.0) -> str:
        """Run one Asterisk CLI command on the running Asterisk (``asterisk -rx``)."""
        try:
            result = subprocess.run(  # noqa: S603 - our binary, our arguments, no shell
                [str(self.install.binary), "-C", str(self.config_path), "-rx", command],
                capture_output=True, text=True, timeout=timeout, check=False,
                env={**os.environ, "LC_ALL": "C"},
            )
        except subprocess.TimeoutExpired:
            raise PeerError(f"asterisk -rx {command!r} took over {timeout:.0f} s") from None
        if result.returncode != 0:
            raise PeerError(
                f"asterisk -rx {command!r} exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def log_text(self) -> str:
        """Asterisk's log: its messages.log (timestamped, with every SIP message when
        ``sip_debug``), or its console output before the logger started."""
        messages = self.workdir / "var" / "log" / "messages.log"
        try:
            text = messages.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        return text or self.process.log_text()

    def _fail(self, message: str) -> PeerError:
        console = tail(self.process.log_text(), 30)
        return PeerError(f"{self.name}: {message}\n--- console (tail) ---\n{console}"
                         f"\n--- log (tail) ---\n{tail(self.log_text())}")

    def stop(self, timeout: float = 5.0, *, graceful: bool = False) -> None:
        """Stop Asterisk: at once (SIGKILL to its session), or ``graceful`` (SIGTERM, which
        takes Asterisk about a second, then SIGKILL after ``timeout``). A test Asterisk keeps
        nothing worth a graceful shutdown: its state directory is private."""
        self.process.stop(timeout, sig=signal.SIGTERM if graceful else signal.SIGKILL)

    def _release_ports(self) -> None:
        if self.tls_port:
            release_ports([self.tls_port, self.udp_port, *range(self.rtp_start,
                                                                self.rtp_end + 1)])
        self.tls_port = self.udp_port = self.rtp_start = self.rtp_end = 0

    def close(self, *, graceful: bool = False) -> None:
        """Stop it, give its ports back and remove the private run directory."""
        self.stop(graceful=graceful)
        self._release_ports()
        if self._private_run_dir is not None:
            shutil.rmtree(self._private_run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m phone_sim.testing.aio_asterisk CONFIG_DIR``: run an Asterisk from a
    configuration directory on free loopback ports until Ctrl-C (or ``--duration``)."""
    import argparse  # noqa: PLC0415 - only the command line needs it
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="python -m phone_sim.testing.aio_asterisk",
        description="Start Asterisk from a configuration directory with @@NAME@@ "
                    "placeholders (phone-sim's fixtures/asterisk) on free 127.0.0.1 ports, "
                    "print where it listens and the CA file the phones need, and run until "
                    "Ctrl-C. Exit 2 when there is no Asterisk build or it does not start.",
    )
    parser.add_argument("config", type=Path, help="the configuration directory")
    parser.add_argument("--prefix", type=Path, default=None,
                        help="the Asterisk build's prefix (default: where "
                             "scripts/build-asterisk installs)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the rendered configuration, certificates and logs go "
                             "(default: a temporary directory removed on exit)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop by itself after this many seconds")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object when ready")
    args = parser.parse_args(argv)
    # `kill PID` (SIGTERM) stops it as Ctrl-C does: Asterisk stopped, work directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="phone-sim-asterisk-")
        args.workdir = Path(tmp.name)
    pbx: Asterisk | None = None
    try:
        pbx = Asterisk(args.workdir, args.config, install=find_asterisk(args.prefix))
        pbx.start()
        users = [u.user for u in pbx.users]  # default_users(): 101-199, password 1234
        ready = {
            "host": LOOPBACK, "tls_port": pbx.tls_port, "udp_port": pbx.udp_port,
            "rtp": [pbx.rtp_start, pbx.rtp_end], "server_name": pbx.server_name,
            "ca_file": str(pbx.certs.ca_file), "users": f"{users[0]}-{users[-1]}",
            "password": "1234", "log": str(pbx.workdir / "var" / "log" / "messages.log"),
            "pid": pbx.process.pid,
        }
        if args.json:
            print(json.dumps(ready), flush=True)
        else:
            print(f"Asterisk {ASTERISK_VERSION} on {LOOPBACK}: TLS {pbx.tls_port}, UDP "
                  f"{pbx.udp_port}, RTP {pbx.rtp_start}-{pbx.rtp_end}\n"
                  f"server name {pbx.server_name}; phones load the CA {pbx.certs.ca_file}\n"
                  f"users {ready['users']}, password 1234; log {ready['log']}\n"
                  "Ctrl-C stops it.", flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while pbx.running and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
        if not pbx.running:
            print(f"asterisk exited with status {pbx.process.returncode}", file=sys.stderr)
            return 2
        return 0
    except KeyboardInterrupt:
        return 0
    except PhoneSimError as exc:
        print(f"asterisk: {exc}", file=sys.stderr)
        return 2
    finally:
        if pbx is not None:
            pbx.close()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
