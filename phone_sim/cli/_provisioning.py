"""``phone-sim lab --conf res_digium_phone.conf``: the DPMA emulator's options and output,
kept here so that :mod:`phone_sim.cli.lab` only calls in."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from phone_sim.errors import UsageError
from phone_sim.lab.aio import DEFAULT_USERS, Lab
from phone_sim.lab.registrar import LabUser
from phone_sim.provisioning.aio_discovery import DEFAULT_MDNS_INTERFACES
from phone_sim.provisioning.aio_dpma import DpmaEmulator, DpmaEvent
from phone_sim.provisioning.dpma import ConfigRequestAnswered
from phone_sim.provisioning.dpma_conf import DpmaConf, read_dpma_conf
from phone_sim.provisioning.sip_server import ExchangeRejected
from phone_sim.tls.pki import make_server_identity

__all__ = ["DpmaSetup", "add_dpma_options", "dpma_event_json", "dpma_event_line",
           "print_dpma_event"]


def add_dpma_options(p: argparse.ArgumentParser) -> None:
    """The ``--conf`` group of ``phone-sim lab``."""
    g = p.add_argument_group(
        "DPMA emulator",
        "serve phone configurations as Digium's DPMA does (docs/provisioning.md)")
    g.add_argument("--conf", metavar="res_digium_phone.conf",
                   help="run the DPMA emulator from this file: mDNS, the SIP MESSAGE exchange "
                   "and HTTP(S) <mac>.cfg")
    g.add_argument("--pjsip", metavar="pjsip.conf",
                   help="where the lines' passwords are (its type=auth sections); default: "
                   "the lab's --user accounts")
    g.add_argument("--mdns-interface", action="append", metavar="ADDRESS",
                   help="advertise over mDNS on this interface address (repeatable; default "
                   "127.0.0.1 only: nothing goes out on your LAN)")
    g.add_argument("--no-mdns", action="store_true", help="do not advertise over mDNS")
    g.add_argument("--http-port", type=int, default=0, metavar="PORT",
                   help="port of the HTTP configuration server (default: a free one)")
    g.add_argument("--https-port", type=int, default=0, metavar="PORT",
                   help="port of the HTTPS configuration server (default: a free one)")
    g.add_argument("--provisioning-only", action="store_true",
                   help="only provision: the phones register to each network's "
                   "registration_address (e.g. a real Asterisk); the lab takes no accounts")


@dataclass
class DpmaSetup:
    """What ``--conf`` needs before the lab starts."""

    conf: DpmaConf
    """The configuration."""
    args: argparse.Namespace
    """The command line."""
    users: list[LabUser]
    """The lab's accounts: the conf's lines (or the --user accounts)."""
    identity: tuple[bytes, bytes, bytes]
    """``(ca_pem, chain_pem, key_pem)``: the lab's certificate, shared by HTTPS."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, users: list[LabUser] | None) -> DpmaSetup | None:
        """Read ``--conf``/``--pjsip`` (None without ``--conf``); errors name file and line."""
        if not args.conf:
            for name in ("pjsip", "provisioning_only"):
                if getattr(args, name):
                    raise UsageError(f"--{name.replace('_', '-')} goes with --conf")
            return None
        for name in ("http_port", "https_port"):
            port = getattr(args, name)
            if not 0 <= port < 65536:
                raise UsageError(f"--{name.replace('_', '-')} {port} out of range (0-65535)")
        given = users if users is not None else (
            [LabUser(username=u, password=p) for u, p in DEFAULT_USERS.items()]
            if args.host in ("127.0.0.1", "::1", "localhost") else [])
        conf = read_dpma_conf(args.conf, pjsip=args.pjsip,
                              passwords={u.username: u.password for u in given})
        if args.provisioning_only:
            lab_users: list[LabUser] = []
        elif users is not None:
            lab_users = users
        else:
            # The lab registers the conf's lines with the passwords the phones are given.
            lab_users = [LabUser(username=line.name, password=line.password,
                                 authname=line.authname)
                         for line in conf.lines.values()]
        names = [args.server_name]
        if args.host not in ("0.0.0.0", "::", "localhost"):  # noqa: S104 - a comparison
            names.insert(0, args.host)
        return cls(conf=conf, args=args, users=lab_users,
                   identity=make_server_identity(names))

    def lab_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`Lab`."""
        ca_pem, chain_pem, key_pem = self.identity
        return {"cert_chain_pem": chain_pem, "key_pem": key_pem, "ca_pem": ca_pem}

    @asynccontextmanager
    async def attach(
        self, lab: Lab, on_event: Callable[[DpmaEvent], None] | None
    ) -> AsyncIterator[DpmaEmulator]:
        """Run the emulator on the started *lab*."""
        _ca, chain_pem, key_pem = self.identity
        args = self.args
        emulator = DpmaEmulator(
            self.conf, lab, cert_chain_pem=chain_pem, key_pem=key_pem,
            http_port=args.http_port, https_port=args.https_port,
            mdns_interfaces=tuple(args.mdns_interface or DEFAULT_MDNS_INTERFACES),
            advertise=False if args.no_mdns else None,
            provisioning_only=args.provisioning_only, on_event=on_event,
        )
        async with emulator:
            yield emulator

    @staticmethod
    def banner(emulator: DpmaEmulator) -> str:
        """What the emulator adds to the lab's banner."""
        conf = emulator.conf
        lines = [f"DPMA emulator: {conf.file} ({len(conf.phones)} phones, "
                 f"config_auth={conf.general.config_auth})"]
        if emulator.provisioning_only:
            lines.append("  provisioning only: the phones register to their networks' "
                         "registration_address")
        lines.append(f"  config_server_url (SIP): {emulator.sip_url}")
        if emulator.http_url:
            lines.append(f"  HTTP:  {emulator.http_url}<mac>.cfg")
        if emulator.https_url:
            lines.append(f"  HTTPS: {emulator.https_url}<mac>.cfg")
        for note in conf.notes[:20]:
            lines.append(f"  note: {note}")
        if len(conf.notes) > 20:
            lines.append(f"  note: ... and {len(conf.notes) - 20} more options not used")
        if emulator.advertiser is not None:
            where = ", ".join(emulator.mdns_interfaces)
            lines.append(f"  mDNS: {emulator.instance_name!r} (_digiumproxy._udp) on {where}")
        else:
            lines.append("  mDNS: not advertised")
        phone = conf.phones[0] if conf.phones else None
        if phone is not None and phone.mac:
            lab = emulator.lab
            ca = f" --ca {lab.ca_file}" if lab.ca_file else ""
            # Over mDNS when advertised (naming this instance: other labs may answer too).
            find = (f" --server {shlex.quote(emulator.instance_name)}"
                    if emulator.advertiser is not None
                    else f" --config-url {shlex.quote(emulator.sip_url)}")
            lines.append("Boot a phone from it:")
            lines.append(f"  phone-sim boot --mac {phone.mac} --model D65{find}{ca}")
        return "\n".join(lines)


def dpma_event_json(event: DpmaEvent) -> dict[str, Any]:
    """One emulator event as JSON-ready data (never a PIN or a password)."""
    if isinstance(event, ConfigRequestAnswered):
        return {"event": "ConfigServed" if event.phone else "ConfigRefused", "mac": event.mac,
                "source": event.source, "method": event.method, "phone": event.phone,
                "error": event.error_code}
    if isinstance(event, ExchangeRejected):
        return {"event": "ExchangeRejected", "source": f"{event.source[0]}:{event.source[1]}",
                "status": event.status, "reason": event.reason}
    return {"event": "ReplyNotDelivered", "mac": event.mac,
            "destination": f"{event.destination[0]}:{event.destination[1]}",
            "reason": event.reason}


def dpma_event_line(event: DpmaEvent) -> str:
    """One emulator event as a line of text."""
    data = dpma_event_json(event)
    if data["event"] == "ConfigServed":
        return f"{'config':12} {data['phone']} served to {data['mac']} at {data['source']}"
    if data["event"] == "ConfigRefused":
        return f"{'config':12} {data['mac']} at {data['source']} refused ({data['error']})"
    if data["event"] == "ExchangeRejected":
        return f"{'config':12} bad request from {data['source']}: {data['status']} " \
               f"{data['reason']}"
    return f"{'config':12} answer to {data['mac']} not delivered: {data['reason']}"


def print_dpma_event(as_json: bool) -> Callable[[DpmaEvent], None]:
    """A printer for ``--json`` or text."""

    def show(event: DpmaEvent) -> None:
        with contextlib.suppress(BrokenPipeError):
            print(json.dumps(dpma_event_json(event)) if as_json else dpma_event_line(event),
                  flush=True)

    return show

