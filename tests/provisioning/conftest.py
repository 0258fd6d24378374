"""Shared helpers: a lab with the DPMA emulator on loopback, from a small conf."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from phone_sim.lab.aio import Lab
from phone_sim.provisioning.aio_dpma import DpmaEmulator
from phone_sim.provisioning.dpma_conf import read_dpma_conf
from phone_sim.tls.client import TrustStore
from phone_sim.tls.pki import make_server_identity

MAC = "000fd3010203"
USERS = {"101": "pw101", "102": "pw102", "103": "pw103"}


def conf_text(*, general: str = "", transport: str = "tls", phones: str | None = None) -> str:
    """A res_digium_phone.conf whose lines register to the lab itself."""
    return textwrap.dedent(f"""\
        [general]
        mdns_transport={transport}
        {general}

        [loopback]
        type=network
        cidr=127.0.0.0/8
        transport={transport}

        [sdes](!)
        type=line
        media_encryption=sdes

        [101](sdes)
        line_label=Alice
        [102](sdes)
        line_label=Bob
        [103](sdes)
        line_label=Carol
        """) + (phones if phones is not None else textwrap.dedent(f"""\
        [alice]
        type=phone
        mac={MAC}
        pin=1111
        line=101
        line=103
        [bob]
        type=phone
        mac=000fd3040506
        pin=2222
        line=102
        """))


@dataclass
class Site:
    """A running lab + emulator, and what a phone needs to reach it."""

    lab: Lab
    dpma: DpmaEmulator
    trust: TrustStore
    ca_pem: bytes


@asynccontextmanager
async def dpma_site(
    tmp_path: Path,
    *,
    text: str | Callable[[Lab], str] | None = None,
    users: Mapping[str, str] = USERS,
    passwords: Mapping[str, str] | None = None,
    expired: bool = False,
    advertise: bool = False,
    instance_name: str | None = None,
    echo: bool = False,
    provisioning_only: bool = False,
) -> AsyncIterator[Site]:
    """A lab on 127.0.0.1 (free ports, TLS/TCP/UDP) with the emulator attached; *text* may
    be made from the started lab (its ports)."""
    now = dt.datetime.now(dt.UTC) - (dt.timedelta(days=400) if expired else dt.timedelta())
    ca_pem, chain_pem, key_pem = make_server_identity(["127.0.0.1", "lab.phone-sim.test"],
                                                      now=now)
    lab = Lab(users, cert_chain_pem=chain_pem, key_pem=key_pem, ca_pem=ca_pem, echo=echo)
    async with lab:
        path = tmp_path / "res_digium_phone.conf"
        path.write_text(text(lab) if callable(text) else text if text is not None
                        else conf_text())
        conf = read_dpma_conf(path, passwords=users if passwords is None else passwords)
        dpma = DpmaEmulator(conf, lab, cert_chain_pem=chain_pem, key_pem=key_pem,
                            advertise=advertise, instance_name=instance_name,
                            provisioning_only=provisioning_only)
        async with dpma:
            trust = TrustStore.from_pem(ca_pem, public_roots=False)
            yield Site(lab=lab, dpma=dpma, trust=trust, ca_pem=ca_pem)

