"""The registrars the phone's registration tests run against, behind one small interface.

Kamailio (``phone_sim.testing.aio_kamailio``) and the embedded lab (``phone_sim.lab``) both pass
the same tests: a fixture parametrized over :class:`KamailioServer` and :class:`LabServer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from phone_sim.account import SipTransport
from phone_sim.lab import Lab, RegistrarConfig
from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.tls.client import TrustStore
from phone_sim.tls.pki import make_server_identity

DOMAIN = "pbx.test"
USERS = {"101": "test-secret-101", "102": "test-secret-102"}


@dataclass(frozen=True)
class Bound:
    """One contact the registrar holds for an AOR."""

    contact: str
    user_agent: str | None
    cseq: int


class Server(Protocol):
    """What a registration test needs from a registrar."""

    name: str
    domain: str
    trust: TrustStore

    def port(self, transport: SipTransport) -> int: ...

    def password(self, user: str) -> str: ...

    async def bindings(self, aor: str) -> list[Bound]: ...

    async def restart(self) -> None: ...


async def wait_bindings(
    server: Server, aor: str, *, present: bool = True, timeout: float = 10.0
) -> list[Bound]:
    """Poll until *aor* has a binding (or, with ``present=False``, none)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await server.bindings(aor)
        if bool(found) == present:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{server.name}: bindings of {aor} stayed {found}")
        await asyncio.sleep(0.05)


class KamailioServer:
    """Kamailio from Debian as the registrar."""

    name = "kamailio"

    def __init__(self, kam: Kamailio, trust: TrustStore) -> None:
        self.kam = kam
        self.domain = kam.domain
        self.trust = trust

    def port(self, transport: SipTransport) -> int:
        return self.kam.port(transport.value)

    def password(self, user: str) -> str:
        return self.kam.user(user).password

    async def bindings(self, aor: str) -> list[Bound]:
        found = await asyncio.to_thread(self.kam.bindings, aor)
        return [Bound(contact=b.contact, user_agent=b.user_agent, cseq=b.cseq) for b in found]

    async def restart(self) -> None:
        await asyncio.to_thread(self.kam.restart)


class LabServer:
    """The embedded registrar (``phone_sim.lab``) as the registrar, in this event loop."""

    name = "lab"

    def __init__(
        self, *, min_expires: int = 60, max_expires: int = 3600,
        names: Sequence[str] = (DOMAIN, "127.0.0.1"),
    ) -> None:
        self.domain = DOMAIN
        self.config = RegistrarConfig(
            realm=DOMAIN, min_expires=min_expires, max_expires=max_expires,
            default_expires=min(60, max_expires),
        )
        # One identity for the lab's whole life, so a restart presents the same certificate.
        # ``names`` are the certificate's DNS names: a wildcard ``*.pbx.test`` tests the
        # firmware's wildcard rule.
        self.ca_pem, self.chain_pem, self.key_pem = make_server_identity(list(names))
        self.trust = TrustStore.from_pem(self.ca_pem, public_roots=False)
        self.lab: Lab | None = None
        self.ports: dict[str, int] = {}

    def _new_lab(self) -> Lab:
        return Lab(
            USERS, host="127.0.0.1", server_name=DOMAIN, config=self.config,
            cert_chain_pem=self.chain_pem, key_pem=self.key_pem, ca_pem=self.ca_pem,
            tls_port=self.ports.get("tls", 0), tcp_port=self.ports.get("tcp", 0),
            udp_port=self.ports.get("udp", 0),
        )

    async def start(self) -> None:
        self.lab = self._new_lab()
        await self.lab.start()
        self.ports = dict(self.lab.ports)

    async def close(self) -> None:
        if self.lab is not None:
            await self.lab.close()
            self.lab = None

    def port(self, transport: SipTransport) -> int:
        return self.ports[transport.value]

    def password(self, user: str) -> str:
        return USERS[user]

    async def bindings(self, aor: str) -> list[Bound]:
        assert self.lab is not None
        return [
            Bound(contact=str(b.uri), user_agent=b.user_agent, cseq=b.cseq)
            for b in self.lab.bindings(aor)
            if b.flow_alive
        ]

    async def restart(self) -> None:
        await self.close()
        await self.start()
