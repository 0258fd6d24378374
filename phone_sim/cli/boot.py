"""``phone-sim boot``: boot one phone as it comes out of the box, and keep it up.

Discovery over mDNS (unless ``--config-url`` is given; the D80 never uses mDNS), the
configuration fetch (SIP MESSAGE or HTTP(S), under the firmware's TLS policy), every account
registered, then incoming calls answered (echo) and state changes printed until Ctrl-C; or,
with ``--call``, one call placed from the first line (a tone sent and the expected tone
checked, as ``phone-sim call`` does) before the phone unregisters and exits.

Exit statuses: 0 booted (and, with ``--once``/``--duration``/``--call``/SIGTERM, unregistered
cleanly); 1 refused or failed (no DPMA server found, configuration refused, a TLS refusal
with its bitmask, a registration refused, the ``--call`` failed or its tone was not heard);
2 usage error, network error or no answer; 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
from typing import Any

from phone_sim.call.aio import CallFailed
from phone_sim.cli._help import firmware_help, model_help
from phone_sim.cli._phone import error_json
from phone_sim.cli._signals import stop_on_signals
from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.firmware import DEFAULT_MODEL
from phone_sim.phone import (
    ConnectionDropped,
    FailedOver,
    NetworkOptions,
    RegistrationFailed,
    RegistrationSucceeded,
    ReprovisionRequested,
)
from phone_sim.provisioning.aio_boot import (
    AccountRegistered,
    AccountRegistrationFailed,
    AccountRegistrationStarted,
    BootedPhone,
    BootEvent,
    BootOptions,
    ConfigApplied,
    ConfigReceived,
    CountdownStarted,
    DiscoverySkipped,
    DiscoveryStarted,
    PhoneEventSeen,
    Reprovisioned,
    ServerChosen,
    ServerFound,
    boot,
    default_interfaces,
)
from phone_sim.tls.client import TrustStore

__all__ = ["add_parser", "boot_event_json", "boot_event_line"]


def add_parser(subparsers: Any) -> None:
    """Register ``boot``."""
    p = subparsers.add_parser(
        "boot",
        help="boot a phone from nothing: mDNS discovery, config fetch, register every account",
        description="Boot one emulated D-Series phone as it comes out of the box: find DPMA "
        "over mDNS (unless --config-url; the D80 never uses mDNS), fetch its configuration "
        "(SIP MESSAGE or HTTP(S), under the firmware's TLS policy), register every account "
        "and answer calls (echo) until Ctrl-C, printing each step. Exit 0 booted, 1 refused "
        "or failed (no server, configuration refused, TLS refusal), 2 usage or network error, "
        "130 Ctrl-C.",
    )
    p.add_argument("--mac", required=True, help="the phone's MAC, e.g. 00:0f:d3:01:02:03")
    p.add_argument("--model", default=DEFAULT_MODEL.value, help=model_help())
    p.add_argument("--firmware", help=firmware_help())
    p.add_argument("--config-url", metavar="URL",
                   help="config_server_url already set on the phone (sip:proxy@host:port;"
                   "transport=tls, http(s)://host/path): discovery is skipped")
    p.add_argument("--pin", help="the PIN typed on the phone when the server asks for one")
    p.add_argument("--ca", action="append", default=[], metavar="FILE",
                   help="private root CA (PEM) on the phone before provisioning; repeatable")
    p.add_argument("--server", dest="server_choice", metavar="NAME|ADDRESS",
                   help="the DPMA server to take when several answer")
    p.add_argument("--countdown", type=float, default=3.0, metavar="SECONDS",
                   help="seconds before connecting to the one server found (default 3)")
    p.add_argument("--discovery-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for a DPMA server (default 5)")
    p.add_argument("--mdns-interface", action="append", metavar="ADDRESS",
                   help="browse on this interface address (repeatable; default 127.0.0.1 "
                   "only: nothing goes out on your LAN)")
    p.add_argument("--local-host", metavar="ADDRESS",
                   help="the phone's own address (default: the route towards the server)")
    p.add_argument("--timeout", type=float, default=32.0, metavar="SECONDS",
                   help="how long each registration may take (default 32)")
    p.add_argument("--once", action="store_true",
                   help="boot, report, unregister and exit (no waiting for calls)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stay up this long, then unregister and exit 0")
    p.add_argument("--json", action="store_true", help="print JSON (one object per line)")
    c = p.add_argument_group(
        "one call once booted", "call from the first line, then unregister and exit "
        "(0 when the call was answered and the expected tone heard, 1 when not)")
    c.add_argument("--call", metavar="EXT|URI", help="the number to call, e.g. 600 (an echo)")
    c.add_argument("--play", metavar="tone:HZ", help="the tone to send in the call (tone:1004)")
    c.add_argument("--expect-tone", type=float, metavar="HZ",
                   help="fail unless this tone is heard from the far end")
    c.add_argument("--call-duration", type=float, default=5.0, metavar="SECONDS",
                   help="how long to stay in the call once answered (default 5)")
    p.set_defaults(func=run)


def _check_call_options(args: argparse.Namespace) -> float | None:
    """The ``--call`` options, checked before anything is sent; the ``--play`` frequency."""
    if args.call is None:
        for flag, given in (("--play", args.play is not None),
                            ("--expect-tone", args.expect_tone is not None),
                            ("--call-duration", args.call_duration != 5.0)):
            if given:
                raise UsageError(f"{flag} goes with --call")
        return None
    if args.duration is not None:
        raise UsageError("--call and --duration exclude each other (--call exits after it)")
    if not args.call.strip():
        raise UsageError("--call needs a number or a sip: URI")
    if not args.call_duration > 0:
        raise UsageError("--call-duration must be positive")
    for flag, hz in (("--expect-tone", args.expect_tone), ("--play", _tone(args.play))):
        if hz is not None and not 20 <= hz <= 3900:
            raise UsageError(f"{flag} must be in 20-3900 Hz")
    return _tone(args.play)


def _tone(play: str | None) -> float | None:
    if play is None:
        return None
    number = play.removeprefix("tone:")
    if number == play or not re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,3})?", number):
        raise UsageError(f"--play {play!r}: write the tone as tone:HZ (tone:1004)")
    return float(number)


def options_from_args(args: argparse.Namespace) -> BootOptions:
    """The :class:`BootOptions` of the command line."""
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    _check_call_options(args)
    return BootOptions(
        mac=args.mac,
        model=args.model,
        firmware=args.firmware,
        config_url=args.config_url,
        pin=args.pin,
        trust=TrustStore.from_files(args.ca) if args.ca else TrustStore(),
        mdns_interfaces=default_interfaces(args.mdns_interface),
        discovery_timeout=args.discovery_timeout,
        server_choice=args.server_choice,
        countdown=args.countdown,
        register_timeout=args.timeout,
        network=NetworkOptions(local_host=args.local_host),
    )


def run(args: argparse.Namespace) -> int:
    """Run ``phone-sim boot``."""
    options = options_from_args(args)
    return asyncio.run(_main(options, args))


def _emit(args: argparse.Namespace, event: BootEvent) -> None:
    if args.json:
        data = boot_event_json(event)
        if data is not None:
            print(json.dumps(data), flush=True)
    else:
        line = boot_event_line(event)
        if line is not None:
            print(line, flush=True)


async def _main(options: BootOptions, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    interrupted: list[bool] = []

    def on_signal(signum: int) -> None:
        interrupted.append(signum == signal.SIGINT)
        stop.set()

    with stop_on_signals(on_signal, stopping="unregistering"):
        return await _boot_until(options, args, stop, interrupted)


async def _boot_until(options: BootOptions, args: argparse.Namespace, stop: asyncio.Event,
                      sigint: list[bool]) -> int:
    booting = asyncio.ensure_future(boot(options, on_event=lambda e: _emit(args, e)))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({booting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not booting.done():
        booting.cancel()
        with contextlib.suppress(BaseException):
            await booting
        _say(args, "interrupted before the phone was up", {"result": "interrupted"})
        return 130 if any(sigint) else 2
    stopped.cancel()
    try:
        booted = booting.result()
    except PhoneSimError as exc:
        if args.json:
            print(json.dumps({"result": "failed", **error_json(exc)}), flush=True)
            return exc.exit_code
        raise
    lines = ", ".join(f"{a.username} ({a.host_primary.label})" for a in booted.lines)
    waiting = not (args.once or args.call)
    _say(args, f"ready: {len(booted.lines)} line(s) registered: {lines}"
         + ("; answering calls (Ctrl-C to stop)" if waiting else ""),
         {"result": "registered", "lines": [a.username for a in booted.lines],
          "user_agent": booted.config.profile.user_agent})
    failure: str | None = None
    try:
        if args.call:
            calling = asyncio.ensure_future(_call(booted, args))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({calling, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if calling.done():
                failure = calling.result()
            else:
                calling.cancel()
                with contextlib.suppress(BaseException):
                    await calling
                failure = "interrupted during the call"
        elif not args.once:
            serving = asyncio.ensure_future(booted.serve())
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.duration):
                        await stop.wait()
            finally:
                serving.cancel()
                with contextlib.suppress(BaseException):
                    await serving
    finally:
        await booted.close()
    _say(args, "unregistered", {"result": "unregistered"})
    if any(sigint):
        return 130
    return 1 if failure else 0


async def _call(booted: BootedPhone, args: argparse.Namespace) -> str | None:
    """The ``--call``: None when it went as asked, else what went wrong (said already)."""
    play = _tone(args.play)
    try:
        call = await booted.phone.dial(args.call)
    except PhoneSimError as exc:
        return _call_failed(args, f"cannot call {args.call}: {exc}")
    try:
        try:
            await call.wait_answered(timeout=30.0)
        except CallFailed as exc:
            return _call_failed(args, f"the call to {args.call} failed: {exc}",
                                status=getattr(exc, "status", None))
        stats = call.stats
        media = "no media" if stats is None else (
            f"{stats.codec} {'SRTP' if stats.encrypted else 'RTP'}")
        _say(args, f"media: {media}", {"event": "media",
                                       **({} if stats is None else stats.as_dict())})
        if play is not None:
            call.play_tone(play)
        loop = asyncio.get_running_loop()
        until = loop.time() + args.call_duration
        if args.expect_tone is not None:
            try:
                await call.wait_tone(args.expect_tone, timeout=args.call_duration)
            except CallFailed as exc:
                return _call_failed(args, f"the {args.expect_tone:g} Hz tone was not heard "
                                    f"({exc})")
            _say(args, f"heard {args.expect_tone:g} Hz",
                 {"event": "tone-heard", "hz": args.expect_tone})
        with contextlib.suppress(CallFailed):
            ended = await call.wait_ended(timeout=max(0.0, until - loop.time()))
            if not (ended.by_peer and ended.status is None):
                return _call_failed(args, f"the call ended early: {ended.reason}")
        return None
    finally:
        final = call.stats
        if call.ended is None:
            with contextlib.suppress(PhoneSimError):
                await call.hangup()
        if final is not None:
            _say(args, f"call media: sent {final.stream.packets_sent}, received "
                 f"{final.stream.packets_received} packets, {final.stream.packets_lost} lost",
                 {"event": "call-stats", **final.as_dict()})


def _call_failed(args: argparse.Namespace, text: str, *, status: int | None = None) -> str:
    _say(args, text, {"event": "call-failed", "error": text, "status": status})
    return text


def _say(args: argparse.Namespace, text: str, obj: dict[str, Any]) -> None:
    print(json.dumps(obj) if args.json else text, flush=True)


# -- the lines -----------------------------------------------------------------------------------


def boot_event_json(event: BootEvent) -> dict[str, Any] | None:
    """One boot event as JSON-ready data (never a password or a PIN)."""
    if isinstance(event, DiscoverySkipped):
        return {"event": "discovery-skipped", "reason": event.reason}
    if isinstance(event, DiscoveryStarted):
        return {"event": "discovering", "interfaces": list(event.interfaces),
                "timeout": event.timeout}
    if isinstance(event, ServerFound | ServerChosen):
        s = event.server
        url = s.config_url
        data: dict[str, Any] = {
                "event": "server-found" if isinstance(event, ServerFound) else "server-chosen",
                "instance": s.instance, "addresses": list(s.addresses),
                "sip_url": url.label if url else None, "service_type": s.service_type}
        if isinstance(event, ServerChosen):
            data["found"] = event.found
        return data
    if isinstance(event, CountdownStarted):
        return {"event": "countdown", "seconds": event.seconds}
    if isinstance(event, ConfigReceived):
        return {"event": "config-received", "url": event.fetched.url,
                "bytes": len(event.fetched.document), "contacts": event.fetched.contacts}
    if isinstance(event, ConfigApplied):
        p = event.provisioned
        return {"event": "config-applied",
                "accounts": [{"index": a.index, "username": a.username,
                              "server": a.host_primary.label,
                              "media_encryption": a.host_primary.media_encryption,
                              "register": a.register and a.enabled}
                             for a in p.config.accounts],
                "ca_certificates": len(p.document.certificates),
                "config_server_url": p.config_server_url,
                "upgrade": p.upgrade.text if p.upgrade else None,
                "notices": [n.text for n in p.notices]}
    if isinstance(event, AccountRegistrationStarted):
        return {"event": "registering", "username": event.account.username,
                "server": event.account.host_primary.label}
    if isinstance(event, AccountRegistrationFailed):
        return {"event": "registration-failed", "username": event.account.username,
                **error_json(event.error)}
    if isinstance(event, AccountRegistered):
        return {"event": "registered", "username": event.account.username,
                "server": event.result.host.label, "expires": event.result.expires,
                "contact": event.result.contact}
    if isinstance(event, Reprovisioned):
        return {"event": "reprovisioned", "applied": event.applied, "detail": event.detail}
    return _phone_event_json(event)


def _phone_event_json(event: PhoneEventSeen) -> dict[str, Any] | None:
    user = event.account.username if event.account is not None else None
    e = event.event
    name = type(e).__name__
    if isinstance(e, RegistrationSucceeded):
        return {"event": "refreshed" if e.refresh else "registered", "username": user,
                "expires": e.expires}
    if isinstance(e, RegistrationFailed):
        return {"event": "registration-failed", "username": user, "retrying":
                e.retry_at is not None, **error_json(e.error)}
    if isinstance(e, ConnectionDropped):
        return {"event": "connection-dropped", "username": user, "server": e.host.label}
    if isinstance(e, FailedOver):
        return {"event": "failover", "username": user, "from": e.from_host.label,
                "to": e.to_host.label}
    if isinstance(e, ReprovisionRequested):
        return {"event": "check-sync", "reboot": e.reboot}
    if name in ("CallArrived", "CallPlaced", "CallAnswered", "CallFinished"):
        data: dict[str, Any] = {"event": name, "username": user,
                                "call_id": getattr(e, "call_id", None)}
        for attribute in ("remote", "reason", "status"):
            if hasattr(e, attribute):
                data[attribute] = getattr(e, attribute)
        return data
    return None


def boot_event_line(event: BootEvent) -> str | None:
    """One boot event as a line of text (None: not worth a line)."""
    data = boot_event_json(event)
    if data is None:
        return None
    kind = data["event"]
    if kind == "discovery-skipped":
        return f"discovery skipped: {data['reason']}"
    if kind == "discovering":
        return (f"discovering DPMA over mDNS on {', '.join(data['interfaces'])} "
                f"(up to {data['timeout']:g} s)")
    if kind == "server-found":
        return f"found {data['instance']} ({data['sip_url'] or 'firmware only'})"
    if kind == "server-chosen":
        return f"using {data['instance']}: {data['sip_url']}"
    if kind == "countdown":
        return f"connecting in {data['seconds']:g} s (Ctrl-C to stop)"
    if kind == "config-received":
        contacts = "" if data["contacts"] is None else f", {data['contacts']} contacts"
        return f"configuration from {data['url']} ({data['bytes']} bytes{contacts})"
    if kind == "config-applied":
        lines = [f"  line {a['index']}: {a['username']} at {a['server']}"
                 + (" (SDES-SRTP)" if a["media_encryption"] else "")
                 + ("" if a["register"] else " (does not register)")
                 for a in data["accounts"]]
        if data["ca_certificates"]:
            lines.append(f"  private root CA loaded ({data['ca_certificates']})")
        lines += [f"  note: {n}" for n in data["notices"]]
        return "\n".join(lines)
    if kind == "registering":
        return f"registering {data['username']} with {data['server']}"
    if kind == "registered":
        if "server" in data:
            return (f"registered {data['username']} with {data['server']}: expires "
                    f"{data['expires']} s")
        return f"registered {data['username']} again: expires {data['expires']} s"
    if kind == "refreshed":
        return None
    if kind == "registration-failed":
        return f"registration of {data['username']} failed: {data['error']}"
    if kind == "reprovisioned":
        return f"check-sync: {data['detail']}"
    who = f"{data['username']}: " if data.get("username") else ""
    if kind == "check-sync":
        return "check-sync NOTIFY: fetching the configuration again"
    if kind in ("connection-dropped", "failover"):
        return f"{who}{kind} {data.get('server') or data.get('to')}"
    if kind == "CallArrived":
        return f"{who}call from {data['remote']}"
    if kind == "CallAnswered":
        return f"{who}call answered"
    if kind == "CallFinished":
        return f"{who}call ended ({data['reason']})"
    if kind == "CallPlaced":
        return f"{who}calling {data['remote']}"
    return None
