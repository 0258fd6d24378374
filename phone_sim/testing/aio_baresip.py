"""baresip 1.0 as a TEST-ONLY SIP phone on 127.0.0.1, driven through ``ctrl_tcp``.

:class:`Baresip` writes a config dir (no sound card: ``aufile`` plays a WAV into the call and
``sndfile`` records what the phone hears), starts ``baresip -f DIR``, and talks to it over
``ctrl_tcp`` (netstring JSON). Commands and events are async so that a phone-sim phone in the
same event loop keeps running while the test waits on baresip.

It needs Debian's ``baresip-core``; without it :meth:`Baresip.start` raises
:class:`~phone_sim.testing.aio_process.PeerMissing` saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from phone_sim.testing.aio_ports import free_port, free_port_pair, free_port_run
from phone_sim.testing.aio_process import LOOPBACK, PeerError, PeerProcess, which
from phone_sim.testing.errors import PeerUsageError

__all__ = [
    "Baresip",
    "BaresipAccount",
    "BaresipCommandError",
    "BaresipEvent",
    "BaresipTransport",
    "MediaEnc",
]

BaresipTransport = Literal["udp", "tcp", "tls"]
MediaEnc = Literal["srtp", "srtp-mand", "srtp-mandf", "none"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The files the config names, relative to the workdir baresip runs in.
_SOURCE_LINK = "config/source.wav"
_CA_LINK = "config/ca.pem"
_MAX_NETSTRING = 1 << 20


@dataclass(frozen=True, kw_only=True)
class BaresipAccount:
    """The one account a baresip instance registers."""

    user: str
    """SIP user (AOR user part)."""
    password: str = field(repr=False)
    """Digest password."""
    domain: str
    """AOR domain, e.g. the Kamailio fixture's ``pbx.test``."""
    proxy: str
    """Outbound proxy/registrar URI, e.g. ``sip:127.0.0.1:5061;transport=tls``."""
    transport: BaresipTransport = "tls"
    """Transport of the AOR and the proxy."""
    mediaenc: MediaEnc = "srtp-mand"
    """Media encryption: ``srtp-mand`` gives RTP/SAVP with one AES_CM_128_HMAC_SHA1_80."""
    regint: int = 60
    """Requested registration interval (s)."""
    answermode: Literal["manual", "auto", "early"] = "manual"
    """How incoming calls are answered."""
    audio_codecs: str = "PCMU"
    """Codec list; the tone WAV must match its rate (8 kHz for PCMU)."""
    authname: str | None = None
    """Digest username, when it differs from ``user``."""

    @property
    def aor(self) -> str:
        """``sip:user@domain``."""
        return f"sip:{self.user}@{self.domain}"

    def account_line(self) -> str:
        """The line of baresip's ``accounts`` file."""
        params = [
            f"auth_pass={self.password}",
            f'outbound="{self.proxy}"',
            f"regint={self.regint}",
            f"answermode={self.answermode}",
            f"audio_codecs={self.audio_codecs}",
        ]
        if self.authname:
            params.append(f"auth_user={self.authname}")
        if self.mediaenc != "none":
            params.append(f"mediaenc={self.mediaenc}")
        return f"<sip:{self.user}@{self.domain};transport={self.transport}>;" + ";".join(params)


@dataclass(frozen=True, kw_only=True)
class BaresipEvent:
    """One event from ctrl_tcp (``{"event": true, "class": ..., "type": ...}``)."""

    type: str
    """e.g. ``REGISTER_OK``, ``CALL_INCOMING``, ``CALL_ESTABLISHED``, ``CALL_CLOSED``."""
    klass: str
    """The event class: ``register``, ``call``, ..."""
    param: str
    """Free text (status line, close reason)."""
    call_id: str
    """The call's id when it is a call event."""
    peer_uri: str
    """The remote party when it is a call event."""
    raw: dict[str, Any]
    """The whole JSON object."""


class BaresipCommandError(PeerError):
    """baresip answered a ctrl_tcp command with ``ok: false``."""


class Baresip:
    """A TEST-ONLY baresip phone on 127.0.0.1.

    ``Baresip(workdir, account, source_wav=...)`` prepares; :meth:`start` writes the config,
    starts baresip and waits for its ctrl_tcp port. Commands (:meth:`dial`, :meth:`accept`,
    :meth:`hangup`) and waits (:meth:`wait_registered`, :meth:`wait_event`) are async.
    """

    def __init__(
        self,
        workdir: Path,
        account: BaresipAccount,
        *,
        source_wav: Path,
        ca_file: Path | None = None,
        name: str = "baresip",
        sip_port: int | None = None,
        ctrl_port: int | None = None,
        rtp_port: int | None = None,
        extra_config: tuple[str, ...] = (),
    ) -> None:
        self.account = account
        self.workdir = workdir
        self.name = name
        self.config_dir = workdir / "config"
        self.record_dir = workdir / "recordings"
        self.source_wav = source_wav
        self.ca_file = ca_file
        # baresip listens for UDP/TCP on sip_port and for TLS on sip_port + 1.
        self.sip_port = sip_port or free_port_run(2)
        self.ctrl_port = ctrl_port or free_port()
        self.rtp_port = rtp_port or free_port_pair()
        self.extra_config = extra_config
        self._process = PeerProcess(
            name, ["baresip", "-f", str(self.config_dir)], cwd=workdir,
            log_path=workdir / f"{name}.log",
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._responses: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[BaresipEvent] = []
        self._event_signal: asyncio.Event | None = None
        self._token = 0

    @property
    def binary(self) -> str:
        """The ``baresip`` program (looked up when used: preparing needs none)."""
        return which("baresip")

    def __repr__(self) -> str:
        return f"<Baresip {self.name} {self.account.aor} ctrl={self.ctrl_port}>"

    @property
    def process(self) -> PeerProcess:
        """The underlying process (log, pid)."""
        return self._process

    @property
    def running(self) -> bool:
        """True while baresip lives."""
        return self._process.running

    @property
    def sip_tls_port(self) -> int:
        """The port baresip listens on for TLS: its SIP port + 1 (baresip 1.0 does that)."""
        return self.sip_port + 1

    @property
    def rtp_ports(self) -> tuple[int, int]:
        """The RTP and RTCP ports baresip is confined to."""
        return (self.rtp_port, self.rtp_port + 1)

    def log_text(self) -> str:
        """Everything baresip printed."""
        return self._process.log_text()

    # -- configuration ---------------------------------------------------------------------

    def config_text(self) -> str:
        """The ``config`` file."""
        lines = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t{LOOPBACK}:{self.sip_port}",
            f"net_interface\t\t{LOOPBACK}",
            f"dns_server\t\t{LOOPBACK}:53",
            "call_local_timeout\t120",
            "call_max_calls\t\t4",
            # baresip 1.0 cuts these file names at 127 bytes (pytest's tmp paths can be
            # longer): they are relative to the workdir baresip runs in (write_config links
            # the source and the CA there).
            f"audio_source\t\taufile,{_SOURCE_LINK}",
            # aufile 1.0 has no player: what the phone hears is written by sndfile instead.
            "audio_player\t\taufile,/dev/null",
            "audio_alert\t\taufile,/dev/null",
            "ausrc_format\t\ts16",
            "auplay_format\t\ts16",
            "auenc_format\t\ts16",
            "audec_format\t\ts16",
            "audio_buffer\t\t20-160",
            f"rtp_ports\t\t{self.rtp_port}-{self.rtp_port + 1}",
            "rtcp_mux\t\tno",
            "jitter_buffer_delay\t0-10",
            "module_path\t\t/usr/lib/baresip/modules",
            "module\t\t\tg711.so",
            "module\t\t\taufile.so",
            "module\t\t\tsndfile.so",
            "module\t\t\tsrtp.so",
            "module_tmp\t\tuuid.so",
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
            "module_app\t\tctrl_tcp.so",
            f"ctrl_tcp_listen\t\t{LOOPBACK}:{self.ctrl_port}",
            f"snd_path\t\t{self.record_dir.relative_to(self.workdir)}",
        ]
        if self.ca_file is not None:
            lines.append(f"sip_cafile\t\t{_CA_LINK}")
        lines.extend(self.extra_config)
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        """Write ``config``, ``accounts`` and an empty ``contacts`` into the config dir, with
        links to the source WAV and the CA file that the config names."""
        if not self.source_wav.is_file():
            raise PeerError(f"{self.name}: audio source {self.source_wav} does not exist")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise PeerError(f"{self.name}: CA file {self.ca_file} does not exist")
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        _link(self.workdir / _SOURCE_LINK, self.source_wav)
        if self.ca_file is not None:
            _link(self.workdir / _CA_LINK, self.ca_file)
        (self.config_dir / "config").write_text(self.config_text())
        accounts = self.config_dir / "accounts"
        accounts.write_text(self.account.account_line() + "\n")
        accounts.chmod(0o600)
        (self.config_dir / "contacts").write_text("")
        (self.config_dir / "uuid").write_text(str(uuid.uuid4()))  # no newline: it goes in Contact

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start baresip, and wait until its ctrl_tcp port accepts.

        This blocks; in a test whose event loop runs a server or phone, use :meth:`astart`.
        """
        self.write_config()
        self._process.start()
        deadline = time.monotonic() + timeout
        while not self._ctrl_accepts(deadline, timeout):
            time.sleep(0.05)

    async def astart(self, timeout: float = 10.0) -> None:
        """:meth:`start` without blocking the event loop."""
        self.write_config()
        self._process.start()
        deadline = time.monotonic() + timeout
        while not self._ctrl_accepts(deadline, timeout):
            await asyncio.sleep(0.05)

    def _ctrl_accepts(self, deadline: float, timeout: float) -> bool:
        if not self._process.running:
            raise self._process.fail(
                f"exited with status {self._process.returncode} while starting"
            )
        try:
            with socket.create_connection((LOOPBACK, self.ctrl_port), timeout=0.2):
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            self._process.stop()
            raise self._process.fail(f"ctrl_tcp port {self.ctrl_port} silent after {timeout} s")
        return False

    async def aclose(self) -> None:
        """Close the control connection and stop baresip."""
        await self._close_ctrl()
        await asyncio.to_thread(self._process.stop, 3.0)

    def stop(self) -> None:
        """Stop baresip (blocking; the control connection dies with it)."""
        self._process.stop(3.0)

    # -- ctrl_tcp --------------------------------------------------------------------------

    async def _ensure_ctrl(self) -> None:
        if self._writer is not None:
            return
        self._reader, self._writer = await asyncio.open_connection(LOOPBACK, self.ctrl_port)
        self._event_signal = asyncio.Event()
        self._reader_task = asyncio.create_task(self._read_loop(), name=f"{self.name}-ctrl")

    async def _close_ctrl(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
            self._reader_task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None

    async def _read_loop(self) -> None:
        assert self._reader is not None and self._event_signal is not None
        try:
            while True:
                message = await _read_netstring(self._reader)
                if message.get("response"):
                    future = self._responses.pop(str(message.get("token")), None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif message.get("event"):
                    self._events.append(
                        BaresipEvent(
                            type=str(message.get("type", "")),
                            klass=str(message.get("class", "")),
                            param=str(message.get("param", "")),
                            call_id=str(message.get("id", "")),
                            peer_uri=str(message.get("peeruri", "")),
                            raw=message,
                        )
                    )
                    self._event_signal.set()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            error = self._process.fail(f"ctrl_tcp connection lost: {exc!r}")
            for future in self._responses.values():
                if not future.done():
                    future.set_exception(error)
            self._responses.clear()
            self._event_signal.set()

    async def command(self, command: str, params: str = "", *, timeout: float = 5.0) -> str:
        """Run a ctrl_tcp command (a menu command name) and return its ``data`` text."""
        await self._ensure_ctrl()
        assert self._writer is not None
        self._token += 1
        token = f"t{self._token}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = future
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._writer.write(b"%d:%s," % (len(body), body))
        await self._writer.drain()
        try:
            response = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._responses.pop(token, None)
            raise self._process.fail(
                f"no answer to ctrl command {command!r} in {timeout} s"
            ) from None
        data = _ANSI.sub("", str(response.get("data", "")))
        if not response.get("ok", False):
            raise BaresipCommandError(f"{self.name}: {command} {params!r} failed: {data}")
        return data

    @property
    def events(self) -> list[BaresipEvent]:
        """Every event received so far, oldest first."""
        return list(self._events)

    async def wait_event(
        self,
        event_type: str,
        *,
        timeout: float = 10.0,
        where: Callable[[BaresipEvent], bool] = lambda _event: True,
        after: int = 0,
    ) -> BaresipEvent:
        """Wait for an event of ``event_type`` (index ``>= after`` in :attr:`events`)."""
        await self._ensure_ctrl()
        assert self._event_signal is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self._events[after:]:
                if event.type == event_type and where(event):
                    return event
            if not self._process.running:
                raise self._process.fail(f"exited while waiting for {event_type}")
            if self._reader_task is not None and self._reader_task.done():
                raise self._process.fail(f"ctrl_tcp closed while waiting for {event_type}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                seen = [e.type for e in self._events]
                raise self._process.fail(f"no {event_type} in {timeout} s; events: {seen}")
            self._event_signal.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event_signal.wait(), remaining)

    # -- phone operations ------------------------------------------------------------------

    async def reginfo(self) -> str:
        """The ``reginfo`` text (one line per user agent with OK/ERR/zzz)."""
        return await self.command("reginfo")

    async def is_registered(self) -> bool:
        """True when baresip's account shows OK in ``reginfo``."""
        info = await self.reginfo()
        return any(self.account.aor in line and " OK" in line for line in info.splitlines())

    async def wait_registered(self, timeout: float = 10.0) -> None:
        """Wait until the account is registered (polls ``reginfo``; events may predate us)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not await self.is_registered():
            if asyncio.get_running_loop().time() > deadline:
                raise self._process.fail(
                    f"{self.account.aor} not registered after {timeout} s: "
                    f"{await self.reginfo()!r}"
                )
            await asyncio.sleep(0.1)

    async def dial(self, target: str) -> None:
        """Place a call to ``target`` (a user such as ``102`` or a SIP URI)."""
        uri = target if target.startswith("sip:") else f"sip:{target}@{self.account.domain}"
        await self.command("dial", uri)

    async def accept(self) -> None:
        """Answer the ringing incoming call."""
        await self.command("accept")

    async def hangup(self) -> None:
        """Hang up the current call."""
        await self.command("hangup")

    async def hold(self) -> None:
        """Put the current call on hold (re-INVITE with ``a=sendonly``)."""
        await self.command("hold")

    async def resume(self) -> None:
        """Resume the current call (re-INVITE with ``a=sendrecv``)."""
        await self.command("resume")

    async def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits on the current call (RFC 4733 events, ``sndcode`` per digit)."""
        for digit in digits:
            if digit not in "0123456789*#ABCD":
                raise PeerUsageError(f"not a DTMF digit: {digit!r}")
            await self.command("sndcode", digit)

    async def received_dtmf(self, count: int, *, timeout: float = 5.0, after: int = 0) -> str:
        """Wait for ``count`` DTMF digits received (``CALL_DTMF_START`` events)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            digits = "".join(e.param for e in self._events[after:] if e.type == "CALL_DTMF_START")
            if len(digits) >= count:
                return digits
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._process.fail(f"only DTMF {digits!r} after {timeout} s")
            index = len(self._events)
            with contextlib.suppress(PeerError):
                await self.wait_event("CALL_DTMF_START", timeout=remaining, after=index)

    def recordings(self, direction: Literal["dec", "enc"] = "dec") -> list[Path]:
        """WAV files ``sndfile`` wrote: ``dec`` is what the phone heard, ``enc`` what it sent."""
        return sorted(self.record_dir.glob(f"dump-*-{direction}.wav"))

    def heard_seconds(self) -> float:
        """Seconds of audio in the newest ``dec`` recording so far: ``sndfile`` writes what
        baresip decodes as it goes (the WAV header's sizes are only right once it closes)."""
        recordings = self.recordings("dec")
        if not recordings:
            return 0.0
        with recordings[-1].open("rb") as f:
            header = f.read(512)
            size = os.fstat(f.fileno()).st_size
        data = header.find(b"data")
        if header[:4] != b"RIFF" or data < 0 or header.find(b"fmt ") < 0:
            return 0.0  # not written yet
        fmt = header.find(b"fmt ") + 8
        byte_rate = int.from_bytes(header[fmt + 8 : fmt + 12], "little")
        return max(0, size - (data + 8)) / byte_rate if byte_rate else 0.0

    async def wait_heard(self, seconds: float, *, timeout: float = 10.0) -> None:
        """Wait until the newest ``dec`` recording holds ``seconds`` of audio."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (heard := self.heard_seconds()) < seconds:
            if loop.time() > deadline:
                raise self._process.fail(
                    f"heard only {heard:.2f} s of audio after {timeout} s, not {seconds} s"
                )
            if not self._process.running:
                raise self._process.fail(f"exited after hearing {heard:.2f} s of audio")
            await asyncio.sleep(0.05)


async def _read_netstring(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await reader.readuntil(b":")
    length_text = header[:-1].strip()
    if not length_text.isdigit() or len(length_text) > 7:
        raise ConnectionError(f"bad netstring length {length_text!r}")
    length = int(length_text)
    if length > _MAX_NETSTRING:
        raise ConnectionError(f"netstring of {length} bytes exceeds {_MAX_NETSTRING}")
    payload = await reader.readexactly(length + 1)
    if payload[-1:] != b",":
        raise ConnectionError("netstring without trailing comma")
    message = json.loads(payload[:-1])
    if not isinstance(message, dict):
        raise ConnectionError(f"ctrl_tcp sent {type(message).__name__}, not an object")
    return message


def _link(link: Path, target: Path) -> None:
    """Make ``link`` a symbolic link to ``target`` (absolute), replacing an older one."""
    link.unlink(missing_ok=True)
    link.symlink_to(target.resolve())
