"""``phone-sim demo``: the whole story on one machine, with no Asterisk and no arguments.

A test PKI is made; the embedded lab starts on TLS with the DPMA emulator and the echo
service; a D65 on 2_9_2 boots through mDNS and the SIP configuration exchange, a D80 on
1_12_1 (which does not use mDNS) from a configured server; both register over TLS; the D65
calls the D80 and then the echo service (600) with SDES-SRTP, and audio is proven both ways
by tone detection. Every step is printed as it happens, with the time since the start, then
a summary. mDNS stays on 127.0.0.1 unless ``--mdns-interface`` says otherwise.

Exit statuses: 0 every step worked; 1 a step failed (its error on stderr); 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import textwrap
from collections.abc import Callable
from typing import Any

from phone_sim import Call
from phone_sim.errors import RemoteError
from phone_sim.lab.aio import DEFAULT_SERVER_NAME, Lab
from phone_sim.provisioning.aio_boot import (
    AccountRegistered,
    BootedPhone,
    BootEvent,
    BootOptions,
    ConfigApplied,
    ConfigReceived,
    DiscoverySkipped,
    DiscoveryStarted,
    ServerChosen,
    boot,
    default_interfaces,
)
from phone_sim.provisioning.aio_dpma import DpmaEmulator
from phone_sim.provisioning.asterisk_conf import parse_asterisk_conf
from phone_sim.provisioning.dpma_conf import load_dpma_conf
from phone_sim.tls.client import TrustStore
from phone_sim.tls.pki import make_server_identity

__all__ = ["add_parser", "demo_conf"]

D65 = ("D65", "2_9_2", "00:0f:d3:00:00:65", "101")
D80 = ("D80", "1_12_1", "00:0f:d3:00:00:80", "102")
TONE_A = 1004.0
TONE_B = 1500.0


class DemoFailed(RemoteError):
    """A step of the demo did not do what it shows."""

    exit_code = 1


def add_parser(subparsers: Any) -> None:
    """Register ``demo``."""
    p = subparsers.add_parser(
        "demo",
        help="the whole story in one command: lab + DPMA, two phones boot, SRTP calls",
        description="Make a test PKI, start the embedded lab on TLS with the DPMA emulator, "
        "boot a D65 (2_9_2) through mDNS and the SIP configuration exchange and a D80 "
        "(1_12_1) from a configured server, register both over TLS, call D65 -> D80 and "
        "D65 -> the echo service with SDES-SRTP proving audio by tone detection, and print a "
        "summary. Needs no argument; mDNS stays on 127.0.0.1. Exit 0 success, 1 a step "
        "failed.",
    )
    p.add_argument("--mdns-interface", action="append", metavar="ADDRESS",
                   help="advertise and browse on this interface address instead of "
                   "127.0.0.1 (repeatable)")
    p.set_defaults(func=run)


def demo_conf(*, service_name: str) -> str:
    """The demo's ``res_digium_phone.conf``: a TLS network on loopback, SDES lines."""
    return textwrap.dedent(f"""\
        [general]
        config_auth=mac
        mdns_transport=tls
        service_name={service_name}

        [loopback-tls]
        type=network
        alias=Loopback TLS
        cidr=127.0.0.0/8
        transport=tls

        [sdes-line](!)
        type=line
        media_encryption=sdes

        [{D65[3]}](sdes-line)
        line_label=Alice
        [{D80[3]}](sdes-line)
        line_label=Bob

        [D65-2_9_22]
        type=firmware
        model=D65
        version=2_9_22
        public_firmware_url=http://downloads.example.com/firmware/2_9_22_D65.eff

        [alice]
        type=phone
        mac={D65[2]}
        line={D65[3]}
        firmware=D65-2_9_22
        [bob]
        type=phone
        mac={D80[2]}
        line={D80[3]}
        """)


def run(args: argparse.Namespace) -> int:
    """Run ``phone-sim demo``."""
    interfaces = default_interfaces(args.mdns_interface)
    return asyncio.run(_demo(interfaces))


class _Clock:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.steps: list[tuple[float, str]] = []

    def elapsed(self) -> float:
        return self.loop.time() - self.start

    def say(self, text: str) -> None:
        at = self.elapsed()
        self.steps.append((at, text))
        for i, line in enumerate(text.splitlines()):
            print(f"[{at:5.2f} s] {line}" if i == 0 else f"{'':10} {line}", flush=True)


def _reporter(clock: _Clock, name: str) -> Callable[[BootEvent], None]:
    def report(event: BootEvent) -> None:
        if isinstance(event, DiscoveryStarted):
            clock.say(f"{name}: looking for DPMA over mDNS (_digiumproxy._udp) on "
                      f"{', '.join(event.interfaces)}")
        elif isinstance(event, ServerChosen):
            url = event.server.config_url
            clock.say(f"{name}: found {event.server.instance!r}: "
                      f"{url.label if url else '?'}")
        elif isinstance(event, DiscoverySkipped):
            clock.say(f"{name}: no mDNS on this model: config_server_url set by hand")
        elif isinstance(event, ConfigReceived):
            clock.say(f"{name}: configuration over SIP MESSAGE from {event.fetched.url} "
                      f"({len(event.fetched.document)} bytes, TLS validated)")
        elif isinstance(event, ConfigApplied):
            p = event.provisioned
            parts = [f"line {a.index}: {a.username} at {a.host_primary.label}"
                     + (" with SDES-SRTP" if a.host_primary.media_encryption else "")
                     for a in p.config.accounts]
            if p.document.certificates:
                parts.append("the lab's root CA loaded from <certs>")
            if p.upgrade is not None:
                parts.append(p.upgrade.text)
            clock.say(f"{name}: " + "; ".join(parts))
        elif isinstance(event, AccountRegistered):
            clock.say(f"{name}: {event.account.username} registered over "
                      f"{str(event.result.host.transport).upper()} "
                      f"(expires {event.result.expires} s)")

    return report


async def _call(clock: _Clock, caller: BootedPhone, to: str, label: str,
                callee: BootedPhone | None) -> Call:
    phone = caller.phone
    call = await phone.dial(to)
    answered: Call | None = None
    if callee is not None:
        answered = await callee.phone.next_call(timeout=10)
        await answered.answer()
    await call.wait_answered(timeout=10)
    call.play_tone(TONE_A)
    if answered is not None:
        answered.play_tone(TONE_B)
        await asyncio.gather(answered.wait_tone(TONE_A, timeout=10),
                             call.wait_tone(TONE_B, timeout=10))
        heard = f"the D80 hears {TONE_A:g} Hz, the D65 hears {TONE_B:g} Hz"
    else:
        await call.wait_tone(TONE_A, timeout=10)
        heard = f"the D65 hears its {TONE_A:g} Hz tone come back"
    stats = call.stats
    if stats is None or not stats.encrypted:
        raise DemoFailed(f"the call to {label} is not SRTP")
    # AES_CM_128_HMAC_SHA1_80 is the only suite the phones accept (PROTOCOL-NOTES §5).
    clock.say(f"call D65 -> {label}: answered, {stats.codec} over SDES-SRTP "
              f"(AES_CM_128_HMAC_SHA1_80); {heard}")
    await call.hangup()
    return call


async def _demo(interfaces: tuple[str, ...]) -> int:
    clock = _Clock()
    print("phone-sim demo: two D-Series phones boot from nothing against the embedded lab "
          "and its DPMA emulator", flush=True)
    ca_pem, chain_pem, key_pem = make_server_identity([DEFAULT_SERVER_NAME, "127.0.0.1"])
    clock.say(f"test PKI: a root CA and a server certificate for {DEFAULT_SERVER_NAME} and "
              "127.0.0.1 (test-only keys)")
    # Passwords nobody types: the phones get them from DPMA, as real ones do.
    users = {D65[3]: secrets.token_urlsafe(12), D80[3]: secrets.token_urlsafe(12)}
    service = f"phone-sim demo {os.getpid()}"
    conf = load_dpma_conf(parse_asterisk_conf(demo_conf(service_name=service),
                                              file="demo res_digium_phone.conf"),
                          passwords=users)
    # The phones trust the demo root as a firmware trusts a public CA it was built with.
    trust = TrustStore.from_pem(ca_pem, public_roots=False)
    booted: list[BootedPhone] = []
    async with contextlib.AsyncExitStack() as stack:
        lab = await stack.enter_async_context(
            Lab(users, transports=["tls"], cert_chain_pem=chain_pem, key_pem=key_pem,
                ca_pem=ca_pem))
        clock.say(f"lab: registrar and record-routing proxy on TLS 127.0.0.1:"
                  f"{lab.ports['tls']}, echo service at 600")
        dpma = await stack.enter_async_context(
            DpmaEmulator(conf, lab, http_port=None, https_port=None,
                         mdns_interfaces=interfaces, instance_name=service))
        clock.say(f"DPMA emulator: {service!r} advertised over mDNS on "
                  f"{', '.join(interfaces)}: {dpma.sip_url}")
        d65 = BootOptions(mac=D65[2], model=D65[0], firmware=D65[1], trust=trust,
                          mdns_interfaces=interfaces, server_choice=service,
                          accept=lambda s: s.instance == service, auto_answer=False)
        d80 = BootOptions(mac=D80[2], model=D80[0], firmware=D80[1], trust=trust,
                          config_url=dpma.sip_url, auto_answer=False)
        results = await asyncio.gather(
            boot(d65, on_event=_reporter(clock, f"D65 {D65[1]}")),
            boot(d80, on_event=_reporter(clock, f"D80 {D80[1]}")),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BootedPhone):
                booted.append(result)
                stack.push_async_callback(result.close)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        phone65, phone80 = booted
        await _call(clock, phone65, D80[3], f"D80 ({D80[3]})", phone80)
        await _call(clock, phone65, "600", "echo (600)", None)
    elapsed = clock.elapsed()
    rows = [
        ("phone", "MAC", "configuration", "line", "registered"),
        (f"D65 {D65[1]}", D65[2], "found over mDNS, fetched over SIP MESSAGE/TLS", D65[3],
         "TLS"),
        (f"D80 {D80[1]}", D80[2], "set by hand (no mDNS), SIP MESSAGE/TLS", D80[3], "TLS"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print("summary:", flush=True)
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
              .rstrip(), flush=True)
    print(f"  calls: D65 -> D80 ({D80[3]}) and D65 -> echo (600), SDES-SRTP, audio proven "
          "both ways by tone detection", flush=True)
    print(f"  elapsed: {elapsed:.1f} s", flush=True)
    return 0
