"""Shared by the bench_fleet*.py benchmarks: a lab in another process with the fleet's
accounts (and, for booting, the DPMA emulator serving them), and a scenario written for it."""

from __future__ import annotations

import resource
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phone_sim.fleet import FleetPlan, parse_scenario
from phone_sim.lab.aio_process import LabProcess

FIRST = 50_000


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def users(count: int) -> dict[str, str]:
    return {str(FIRST + i): f"b{FIRST + i}" for i in range(count)}


@asynccontextmanager
async def lab_for(count: int, *, conf: Path | None = None) -> AsyncIterator[LabProcess]:
    """The lab in another process (TLS only), with *count* accounts; with *conf*, the DPMA
    emulator serving it (``lab.info["dpma"]``: its URLs)."""
    extra = ("--conf", str(conf)) if conf is not None else ()
    async with LabProcess(users=users(count), transports=("tls", "udp"),
                          extra_args=extra) as lab:
        yield lab


#: The first MAC of the phones a DPMA conf of :func:`dpma_conf` serves.
FIRST_MAC = 0x000FD3300000


def dpma_conf(count: int, service: str) -> str:
    """A res_digium_phone.conf (as fixtures/scenarios/lab-boot.conf) for *count* phones with
    MACs from :data:`FIRST_MAC`, one line each (the users of :func:`users`), advertised over
    mDNS on 127.0.0.1 as *service*."""
    out = [f"[general]\nconfig_auth=mac\nmdns_transport=tls\nservice_name={service}\n"
           "service_discovery_enabled=yes\n",
           "[loopback]\ntype=network\ncidr=127.0.0.0/8\ntransport=tls\n",
           "[fleet-line](!)\ntype=line\nmedia_encryption=sdes\n",
           "[fleet-phone](!)\ntype=phone\nnetwork=loopback\n"]
    for i in range(count):
        user = FIRST + i
        out.append(f"[{user}](fleet-line)\n[phone-{user}](fleet-phone)\n"
                   f"mac={FIRST_MAC + i:012x}\nline={user}\n")
    return "\n".join(out)


def plan(lab: LabProcess, body: str) -> FleetPlan:
    """A scenario against *lab*: server, TLS and accounts filled in."""
    text = (f"server: {{host: 127.0.0.1, port: {lab.ports['tls']}, "
            f"servername: {lab.server_name}}}\n"
            f"tls: {{ca_files: ['{lab.ca_file}']}}\n" + body.replace(
                "ACCOUNTS", f'{{first: {FIRST}, password: "b{{number}}"}}'))
    return FleetPlan(parse_scenario(text))
