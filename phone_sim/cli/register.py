"""``phone-sim register``: register one phone to a SIP server and report the outcome.

Exit statuses: 0 registered (and, after Ctrl-C, cleanly unregistered); 1 refused (the phone's
TLS policy with its bitmask, authentication, a 3xx-6xx); 2 usage error, network error or no
answer. The password is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from phone_sim.cli._phone import (
    add_phone_options,
    error_json,
    phone_config_from_args,
    phone_from_args,
)
from phone_sim.cli._signals import stop_on_signals
from phone_sim.errors import PhoneSimError
from phone_sim.phone.events import (
    ConnectionDropped,
    FailedOver,
    PhoneEvent,
    RegistrationFailed,
    RegistrationSucceeded,
    ReprovisionRequested,
)

if TYPE_CHECKING:
    from phone_sim.phone.aio import Phone

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Register ``register``."""
    p = subparsers.add_parser(
        "register",
        help="register a phone to a SIP server over TLS, TCP or UDP",
        description="Register one emulated D-Series phone to --server and report the outcome "
        "(with the TLS bitmask when the phone refuses the server). Without --once it stays "
        "registered, refreshing, until Ctrl-C, then unregisters. Exit 0 registered, 1 refused "
        "(TLS policy, authentication, a 4xx/5xx/6xx), 2 usage error, network error or no answer.",
    )
    add_phone_options(p, media=False)
    p.add_argument("--once", action="store_true",
                   help="register, report, unregister and exit")
    p.add_argument("--json", action="store_true", help="print JSON (one object per line)")
    p.set_defaults(func=run)


def _build(args: argparse.Namespace) -> tuple[Phone, str]:
    config = phone_config_from_args(args)
    account = config.primary_account
    aor = f"{account.username}@{account.domain_for(account.host_primary)}"
    return phone_from_args(config), aor


def run(args: argparse.Namespace) -> int:
    """Run ``phone-sim register``."""
    phone, aor = _build(args)
    return asyncio.run(_main(phone, aor, args))


def _emit(args: argparse.Namespace, text: str, obj: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(obj), flush=True)
    else:
        print(text, flush=True)


def _event_line(event: PhoneEvent) -> tuple[str, dict[str, Any]] | None:
    if isinstance(event, RegistrationSucceeded) and event.refresh:
        return (f"refreshed: expires {event.expires} s",
                {"event": "refreshed", "expires": event.expires})
    if isinstance(event, RegistrationSucceeded):
        return (f"registered again with {event.host.label}: expires {event.expires} s",
                {"event": "registered", "expires": event.expires, "server": event.host.label})
    if isinstance(event, RegistrationFailed):
        retry = "" if event.retry_at is None else " (retrying)"
        return (f"registration failed: {event.error}{retry}",
                {"event": "failed", **error_json(event.error)})
    if isinstance(event, ConnectionDropped):
        return (f"connection to {event.host.label} lost; reconnecting",
                {"event": "connection-dropped", "server": event.host.label})
    if isinstance(event, FailedOver):
        return (f"failing over from {event.from_host.label} to {event.to_host.label}",
                {"event": "failover", "from": event.from_host.label,
                 "to": event.to_host.label})
    if isinstance(event, ReprovisionRequested):
        return ("check-sync NOTIFY received (re-provision requested)",
                {"event": "check-sync", "reboot": event.reboot})
    return None


async def _main(phone: Phone, aor: str, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    with stop_on_signals(lambda _signum: stop.set(), stopping="unregistering"):
        return await _run(phone, aor, args, stop)


async def _run(phone: Phone, aor: str, args: argparse.Namespace, stop: asyncio.Event) -> int:
    async with phone:
        events = phone.events()
        register = asyncio.ensure_future(phone.register())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({register, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not register.done():
            register.cancel()
            _emit(args, "interrupted before the registration completed",
                  {"result": "interrupted"})
            return 2
        stopped.cancel()
        try:
            done = register.result()
        except PhoneSimError as exc:
            if args.json:
                print(json.dumps({"result": "failed", **error_json(exc)}), flush=True)
                return exc.exit_code
            raise
        _emit(
            args,
            f"registered {aor} with {done.host.label}: expires {done.expires} s, "
            f"contact <{done.contact}>",
            {"result": "registered", "aor": aor, "server": done.host.label,
             "transport": str(done.host.transport), "expires": done.expires,
             "contact": done.contact, "user_agent": phone.profile.user_agent},
        )
        if not args.once:
            watcher = asyncio.ensure_future(_watch(events, args, first=done))
            try:
                await stop.wait()
            finally:
                watcher.cancel()
        result = await phone.unregister()
        if not result.registered:
            _emit(args, "not registered at shutdown; nothing to remove",
                  {"result": "not-registered"})
            return 0 if args.once else 2
        if result.confirmed:
            _emit(args, "unregistered", {"result": "unregistered"})
            return 0
        print("phone-sim register: error: the registrar did not confirm the un-REGISTER",
              file=sys.stderr)
        return 2


async def _watch(
    events: Any, args: argparse.Namespace, *, first: RegistrationSucceeded
) -> None:
    async for event in events:
        if event is first:
            continue  # already reported as "registered": the stream replays it
        line = _event_line(event)
        if line is not None:
            _emit(args, *line)
