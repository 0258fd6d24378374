"""Shared by the bench_fleet*.py benchmarks: a lab in another process with the fleet's
accounts, and a scenario written for it."""

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
async def lab_for(count: int) -> AsyncIterator[LabProcess]:
    """The lab in another process (TLS only), with *count* accounts."""
    async with LabProcess(users=users(count), transports=("tls", "udp")) as lab:
        yield lab


def plan(lab: LabProcess, body: str) -> FleetPlan:
    """A scenario against *lab*: server, TLS and accounts filled in."""
    text = (f"server: {{host: 127.0.0.1, port: {lab.ports['tls']}, "
            f"servername: {lab.server_name}}}\n"
            f"tls: {{ca_files: ['{lab.ca_file}']}}\n" + body.replace(
                "ACCOUNTS", f'{{first: {FIRST}, password: "b{{number}}"}}'))
    return FleetPlan(parse_scenario(text))
