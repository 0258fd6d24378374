"""The connection-drop fault: a TCP relay between the phones and the server that can cut a
share of the connections going through it, as a failing NAT or firewall would.

Bytes pass through untouched (TLS stays end to end: the phone still checks the server's
certificate against the server name). Cutting a connection closes both sides at once, so the
phone sees its connection lost and the server sees the flow go.

:class:`RelaySet` keeps one relay per server, started when a phone first needs it: with
provisioning the servers are known only once the phones' configurations arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace

from phone_sim.phone import PhoneConfig

__all__ = ["ConnectionRelay", "RelaySet"]


class _Side(asyncio.Protocol):
    def __init__(self, relay: ConnectionRelay, pair: _Pair, outer: bool) -> None:
        self.relay = relay
        self.pair = pair
        self.outer = outer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.outer:
            self.pair.phone = self
            self.relay._accepted(self.pair)

    def data_received(self, data: bytes) -> None:
        other = self.pair.server if self.outer else self.pair.phone
        if other is not None and other.transport is not None:
            other.transport.write(data)
        elif self.outer:
            self.pair.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pair.close()
        self.relay._pairs.discard(self.pair)


class _Pair:
    def __init__(self) -> None:
        self.phone: _Side | None = None
        self.server: _Side | None = None
        self.pending: list[bytes] = []
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for side in (self.phone, self.server):
            if side is not None and side.transport is not None:
                with contextlib.suppress(Exception):
                    side.transport.abort()


class ConnectionRelay:
    """Listens on ``host``:0 and relays each connection to ``target``."""

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self.failed_connects = 0

    async def start(self) -> tuple[str, int]:
        """Start listening; the address phones should connect to."""
        loop = asyncio.get_running_loop()

        def factory() -> _Side:
            return _Side(self, _Pair(), outer=True)

        self._server = await loop.create_server(factory, self.host, 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.host, self.port

    def _accepted(self, pair: _Pair) -> None:
        self._pairs.add(pair)
        asyncio.get_running_loop().create_task(self._connect(pair))

    async def _connect(self, pair: _Pair) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, side = await loop.create_connection(
                lambda: _Side(self, pair, outer=False), *self.target
            )
        except OSError:
            self.failed_connects += 1
            pair.close()
            return
        pair.server = side
        if pair.closed:
            pair.close()
            return
        for data in pair.pending:
            assert side.transport is not None
            side.transport.write(data)
        pair.pending.clear()

    @property
    def connections(self) -> int:
        """Connections relayed now."""
        return len(self._pairs)

    def drop(self, share: float, rng: random.Random) -> int:
        """Cut *share* (0-1) of the current connections, picked with *rng*; how many."""
        pairs = sorted(self._pairs, key=id)
        count = round(len(pairs) * share)
        victims = rng.sample(pairs, count) if count else []
        for pair in victims:
            pair.close()
            self._pairs.discard(pair)
        return len(victims)

    async def close(self) -> None:
        """Stop listening and cut everything."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._pairs):
            pair.close()
        self._pairs.clear()


class RelaySet:
    """A :class:`ConnectionRelay` per server address, each started on first use."""

    def __init__(self) -> None:
        self._relays: dict[tuple[str, int], asyncio.Task[ConnectionRelay]] = {}

    async def address_for(self, target: tuple[str, int]) -> tuple[str, int]:
        """Where a phone connects to reach *target* through its relay."""
        task = self._relays.get(target)
        if task is None:
            task = self._relays[target] = asyncio.ensure_future(self._start(target))
        relay = await asyncio.shield(task)
        return relay.host, relay.port

    @staticmethod
    async def _start(target: tuple[str, int]) -> ConnectionRelay:
        relay = ConnectionRelay(target)
        await relay.start()
        return relay

    def _started(self) -> list[ConnectionRelay]:
        return [task.result() for _, task in sorted(self._relays.items())
                if task.done() and not task.cancelled() and task.exception() is None]

    def drop(self, share: float, seed: str) -> int:
        """Cut *share* (0-1) of every relay's connections (each relay's picks seeded from
        *seed* and its rank); how many."""
        return sum(relay.drop(share, random.Random(seed if k == 0 else f"{seed}:{k}"))
                   for k, relay in enumerate(self._started()))

    async def through(self, config: PhoneConfig) -> PhoneConfig:
        """*config* with each TCP/TLS line's primary server reached through its relay; the
        SIP domain and the TLS name stay the server's."""
        accounts = []
        for account in config.accounts:
            host = account.host_primary
            if not host.transport.reliable:
                accounts.append(account)
                continue
            server, port = await self.address_for((host.server, host.effective_port))
            accounts.append(replace(
                account, host_primary=replace(host, server=server, port=port),
                domain=account.domain_for(host), server_name=account.tls_name_for(host)))
        return replace(config, accounts=tuple(accounts))

    async def close(self) -> None:
        """Stop every relay."""
        for task in self._relays.values():
            if not task.done():
                task.cancel()
        for relay in self._started():
            await relay.close()
        self._relays.clear()
