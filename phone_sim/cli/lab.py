"""``phone-sim lab``: run the embedded registrar and proxy, with the echo service at 600, and
say how to point a phone at it and call the echo.

Exit statuses: 0 stopped cleanly (Ctrl-C, SIGTERM or ``--duration``), 2 a usage error (a bad
option, a port in use). Passwords given with ``--user`` are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phone_sim.cli._provisioning import DpmaSetup, add_dpma_options, print_dpma_event
from phone_sim.cli._signals import stop_on_signals
from phone_sim.errors import UsageError
from phone_sim.lab.aio import DEFAULT_SERVER_NAME, DEFAULT_USERS, TRANSPORTS, Lab
from phone_sim.lab.limits import LabLimits
from phone_sim.lab.registrar import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRefused,
    BindingRemoved,
    CallRefused,
    CallRouted,
    FlowLost,
    LabConfigError,
    LabUser,
    RegistrarConfig,
    RegistrarEvent,
)

__all__ = ["add_parser", "event_json", "event_line"]


def add_parser(subparsers: Any) -> None:
    """Register ``lab``."""
    p = subparsers.add_parser(
        "lab",
        help="run the embedded registrar and proxy (TLS, TCP, UDP) with an echo service",
        description="Run a SIP registrar and record-routing proxy on TLS, TCP and UDP with "
        "digest authentication and a freshly generated certificate, and an echo service "
        "(SDES-SRTP, audio and DTMF) at extension 600; print where it listens, the CA file a "
        "validating phone must load, and example phone-sim and baresip settings, then show "
        "registrations as they happen until Ctrl-C. Port 0 picks a free port.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--tls-port", type=_port, default=5061, help="TLS port (default 5061)")
    p.add_argument("--tcp-port", type=_port, default=5060, help="TCP port (default 5060)")
    p.add_argument("--udp-port", type=_port, default=5060, help="UDP port (default 5060)")
    p.add_argument(
        "--transport",
        default="tls,tcp,udp",
        help="comma-separated transports to listen on (default tls,tcp,udp)",
    )
    p.add_argument(
        "--user",
        action="append",
        metavar="USER:PASSWORD[:AUTHNAME]",
        help="an account (repeatable); default on loopback: 101-106 with password 1234",
    )
    p.add_argument(
        "--server-name",
        "--servername",
        dest="server_name",
        default=DEFAULT_SERVER_NAME,
        help="host name (or IP address) in the certificate, SIP domain and realm "
        f"(default {DEFAULT_SERVER_NAME})",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the lab's CA (ca.pem, the file phones load), its certificate and keys there "
        "and reuse them on the next start; made if missing, but its parent must exist "
        "(default: a new CA in a temporary directory removed on exit)",
    )
    p.add_argument(
        "--echo-extension",
        default="600",
        metavar="EXT",
        help="extension of the echo service (default 600)",
    )
    p.add_argument("--no-echo", action="store_true", help="do not run the echo service")
    defaults = LabLimits()
    p.add_argument(
        "--max-connections", type=int, default=defaults.max_connections, metavar="N",
        help="TCP/TLS connections held at once, lowered to what the open-file limit allows "
        f"(default {defaults.max_connections})",
    )  # fmt: skip
    p.add_argument(
        "--max-connections-per-source", type=int, metavar="N",
        default=defaults.max_connections_per_source,
        help="connections from one IP address; lower it for a lab reachable from a network "
        f"(default {defaults.max_connections_per_source})",
    )  # fmt: skip
    p.add_argument(
        "--first-message-timeout", type=float, metavar="SECONDS",
        default=defaults.first_message_timeout,
        help="a new connection must send a whole SIP message within this long "
        f"(default {defaults.first_message_timeout:g})",
    )  # fmt: skip
    p.add_argument(
        "--max-buffered-bytes", type=int, metavar="N", default=defaults.max_buffered_bytes,
        help="bytes of incomplete messages held across all connections; beyond, those held "
        f"longest are closed (default {defaults.max_buffered_bytes})",
    )  # fmt: skip
    p.add_argument(
        "--idle-timeout", type=float, metavar="SECONDS", default=defaults.idle_timeout,
        help="close a connection without registration that sent no SIP message for this long "
        f"(default {defaults.idle_timeout:g})",
    )  # fmt: skip
    p.add_argument("--min-expires", type=int, default=60, metavar="SECONDS",
                   help="shortest expiry granted; a REGISTER asking less gets 423 (default 60)")
    p.add_argument("--max-expires", type=int, default=3600, metavar="SECONDS",
                   help="longest expiry granted (default 3600)")
    p.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop by itself after this long"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object when ready (host, ports, ca_file...), then one per event",
    )
    p.add_argument("--quiet", action="store_true", help="do not print registrations")
    p.add_argument(
        "--no-uvloop", action="store_true", help="use asyncio's own event loop instead of uvloop"
    )
    add_dpma_options(p)
    p.set_defaults(func=_lab)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} out of range (0-65535)")
    return value


def _users(specs: list[str] | None) -> list[LabUser] | None:
    if not specs:
        return None
    try:
        return [LabUser.parse(spec) for spec in specs]
    except LabConfigError as exc:
        raise UsageError(f"--user: {exc}") from None


#: A host name (RFC 1123 labels) or an address: what a certificate and a SIP domain can carry.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _server_name(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        labels = name.removesuffix(".").split(".")
        if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise UsageError(
                f"--server-name {name!r}: not a host name (letters, digits and hyphens in "
                "dot-separated labels, e.g. lab.phone-sim.test) nor an IP address"
            ) from None
    return name


def _state_dir(path: str | None) -> Path | None:
    """The state directory: made if missing (one level, as mkdir does), never a deep path
    that a typo would leave behind."""
    if path is None:
        return None
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--state-dir {directory}: not a directory")
    if not directory.exists() and not directory.parent.is_dir():
        raise UsageError(
            f"--state-dir {directory}: {directory.parent} does not exist (create it first, "
            "or give an existing directory)"
        )
    return directory


def _registrar_config(args: argparse.Namespace, realm: str) -> RegistrarConfig:
    if args.min_expires < 1:
        raise UsageError(f"--min-expires must be at least 1 s, not {args.min_expires}")
    if args.max_expires < args.min_expires:
        raise UsageError(
            f"--max-expires {args.max_expires} is below --min-expires {args.min_expires}"
        )
    try:
        return RegistrarConfig(
            realm=realm,
            min_expires=args.min_expires,
            max_expires=args.max_expires,
            default_expires=max(args.min_expires, min(3600, args.max_expires)),
        )
    except LabConfigError as exc:
        raise UsageError(str(exc)) from None


def _lab(args: argparse.Namespace) -> int:
    users = _users(args.user)
    transports = [t.strip().lower() for t in args.transport.split(",") if t.strip()]
    bad = [t for t in transports if t not in TRANSPORTS]
    if bad or not transports:
        raise UsageError(f"unknown transport {','.join(bad) or '(none)'}: use tls, tcp, udp")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    server_name = _server_name(args.server_name)
    state_dir = _state_dir(args.state_dir)
    limits = _limits(args)
    config = _registrar_config(args, server_name)
    if not args.no_echo and (
        not args.echo_extension.isalnum() or (users and any(
            u.username == args.echo_extension for u in users))
    ):
        raise UsageError(
            f"--echo-extension {args.echo_extension!r}: letters and digits, not a --user"
        )
    printer: Callable[[RegistrarEvent], None] | None = None
    if not args.quiet:
        printer = _print_json_event if args.json else _print_event
    dpma = DpmaSetup.from_args(args, users)
    lab = Lab(
        dpma.users if dpma is not None else users,
        host=args.host,
        tls_port=args.tls_port,
        tcp_port=args.tcp_port,
        udp_port=args.udp_port,
        server_name=server_name,
        transports=transports,
        config=config,
        state_dir=state_dir,
        limits=limits,
        on_event=printer,
        echo=not args.no_echo and not args.provisioning_only,
        echo_extension=args.echo_extension,
        **(dpma.lab_options() if dpma is not None else {}),
    )
    default_users = users is None and dpma is None
    runner = _loop_factory(args.no_uvloop)
    with asyncio.Runner(loop_factory=runner) as asyncio_runner:
        asyncio_runner.run(_serve(lab, args, default_users, dpma))
    return 0


def _limits(args: argparse.Namespace) -> LabLimits:
    for flag, value in (("--max-connections", args.max_connections),
                        ("--max-connections-per-source", args.max_connections_per_source),
                        ("--max-buffered-bytes", args.max_buffered_bytes)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, not {value}")
    for flag, seconds in (("--first-message-timeout", args.first_message_timeout),
                          ("--idle-timeout", args.idle_timeout)):
        if not seconds > 0:
            raise UsageError(f"{flag} must be positive, not {seconds:g}")
    return LabLimits(
        max_connections=args.max_connections,
        max_connections_per_source=args.max_connections_per_source,
        first_message_timeout=args.first_message_timeout,
        idle_timeout=args.idle_timeout,
        max_buffered_bytes=args.max_buffered_bytes,
    )


def _loop_factory(no_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if no_uvloop:
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return None
    return uvloop.new_event_loop


async def _serve(
    lab: Lab, args: argparse.Namespace, default_users: bool, dpma: DpmaSetup | None
) -> None:
    stop = asyncio.Event()
    with stop_on_signals(lambda _signum: stop.set(), stopping="stopping the lab"):
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(lab)
            emulator = None
            if dpma is not None:
                emulator = await stack.enter_async_context(dpma.attach(
                    lab, None if args.quiet else print_dpma_event(args.json)))
                for warning in emulator.port_warnings():
                    print(f"phone-sim lab: warning: {warning}", file=sys.stderr, flush=True)
            if args.json:
                extra = {"dpma": emulator.describe()} if emulator is not None else {}
                print(json.dumps({"ready": True, **lab.describe(), **extra}), flush=True)
            else:
                if emulator is None or not emulator.provisioning_only:
                    print(_banner(lab, default_users), flush=True)
                if emulator is not None:
                    print(DpmaSetup.banner(emulator), flush=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.duration):
                    await stop.wait()
            stats = dict(lab.registrar.stats)
            stats.update({f"proxy_{k}": v for k, v in lab.registrar.proxy.stats.items()})
            stats.update({f"limit_{k.replace('-', '_')}": v for k, v in lab.guard.stats.items()})
            stats.update(lab.stats)
            bindings = lab.registrar.binding_count
    if args.json:
        print(json.dumps({"stopped": True, "bindings": bindings, "stats": stats}), flush=True)
    else:
        print(f"phone-sim lab stopped ({bindings} bindings dropped)", file=sys.stderr)


def _banner(lab: Lab, default_users: bool) -> str:
    host = f"[{lab.host}]" if ":" in lab.host else lab.host
    lines = [f"phone-sim lab: registrar for {lab.server_name} on {lab.host}"]
    for name in lab.transports:
        lines.append(f"  {name.upper():4} {host}:{lab.ports[name]}")
    if lab.ca_file is not None:
        lines.append(f"  CA file (load it on validating phones): {lab.ca_file}")
    names = [u.username for u in lab.users.users()]
    shown = ", ".join(names[:10]) + (f" ... ({len(names)} users)" if len(names) > 10 else "")
    lines.append(f"  users: {shown}" + (" (password 1234)" if default_users else ""))
    user = names[0]
    password = DEFAULT_USERS.get(user, "PASSWORD") if default_users else "PASSWORD"
    transport = "tls" if "tls" in lab.ports else lab.transports[0]
    port = lab.ports[transport]
    lines.append("")
    lines.append("Point a phone at it:")
    register = (
        f"  phone-sim register --server {host}:{port} --transport {transport} "
        f"--user {user} --password {password} --domain {lab.server_name}"
    )
    if transport == "tls":
        register += f" --servername {lab.server_name} --ca {lab.ca_file}"
    lines.append(register)
    lines.append(
        f"  baresip accounts: <sip:{user}@{lab.server_name};transport={transport}>;"
        f'auth_pass={password};outbound="sip:{host}:{port};transport={transport}"'
    )
    if transport == "tls":
        lines.append(f"  baresip config:   sip_cafile {lab.ca_file}")
    lines.append("")
    lines.append(
        "Registered phones call each other by extension through the lab (it record-routes,"
    )
    lines.append("and reaches each phone over its own connection).")
    if lab.echo is not None:
        ext = lab.echo.extension
        lines.append(f"Echo service: dial {ext} (SDES-SRTP; echoes audio and RFC 4733 DTMF):")
        call = (
            f"  phone-sim call --to {ext} --server {host}:{port} --transport {transport} "
            f"--user {user} --password {password} --domain {lab.server_name}"
        )
        if transport == "tls":
            call += f" --servername {lab.server_name} --ca {lab.ca_file}"
        call += " --play tone:1004 --expect-tone 1004 --duration 5"
        lines.append(call)
    lines.append("Ctrl-C stops it.")
    return "\n".join(lines)


def event_json(event: RegistrarEvent) -> dict[str, Any]:
    """One registrar event as JSON-ready data (``--json``); never a password."""
    out: dict[str, Any] = {"event": type(event).__name__}
    if isinstance(event, BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired):
        b = event.binding
        out.update(
            aor=b.aor,
            contact=str(b.contact.uri),
            transport=b.flow.transport.lower(),
            source=f"{b.source[0]}:{b.source[1]}",
            expires=b.expires,
            user_agent=b.user_agent,
        )
    elif isinstance(event, FlowLost):
        out.update(flow=str(event.flow), aors=list(event.aors))
    elif isinstance(event, BindingRefused):
        out.update(aor=event.aor, status=event.status, reason=event.reason, flow=str(event.flow))
    elif isinstance(event, CallRouted):
        out.update(call_id=event.call_id, caller=event.caller, target=event.target,
                   contact=event.contact, transports=[t.lower() for t in event.transports])
    elif isinstance(event, CallRefused):
        out.update(call_id=event.call_id, caller=event.caller, target=event.target,
                   status=event.status, reason=event.reason)
    return out


def event_line(event: RegistrarEvent) -> str:
    """One registrar event as a line of text."""
    data = event_json(event)
    name = data.pop("event")
    if isinstance(event, BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired):
        verb = {
            "BindingAdded": "registered",
            "BindingRefreshed": "refreshed",
            "BindingRemoved": "unregistered",
            "BindingExpired": "expired",
        }[name]
        line = (
            f"{verb:12} {data['aor']} -> {data['contact']} via {data['transport']} "
            f"from {data['source']}"
        )
        if isinstance(event, BindingAdded | BindingRefreshed):
            line += f" ({data['expires']} s)"
        return line
    if isinstance(event, FlowLost):
        return f"{'lost':12} {data['flow']} ({', '.join(data['aors'])} kept until expiry)"
    if isinstance(event, CallRouted):
        return (
            f"{'call':12} {data['caller']} -> {data['target']} routed to {data['contact']} "
            f"({' -> '.join(data['transports'])})"
        )
    if isinstance(event, CallRefused):
        return (
            f"{'call failed':12} {data['caller']} -> {data['target']}: {data['status']} "
            f"{data['reason']}"
        )
    if isinstance(event, BindingRefused):
        return (
            f"{'refused':12} {data['aor']} from {data['flow']}: {data['status']} {data['reason']}"
        )
    return f"{name:12} {data}"


def _print_event(event: RegistrarEvent) -> None:
    print(event_line(event), flush=True)


def _print_json_event(event: RegistrarEvent) -> None:
    print(json.dumps(event_json(event)), flush=True)
