"""mDNS on asyncio with python-zeroconf: browsing for DPMA, and advertising the emulator.

Both sides bind only the interfaces given (default ``127.0.0.1``): a command a user copies
from the README must not multicast on their LAN. ``--mdns-interface`` widens that on
purpose. The choice among what was found is :mod:`phone_sim.provisioning.discovery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zeroconf import DNSQuestionType, IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from phone_sim.errors import UsageError
from phone_sim.provisioning.discovery import SERVICE_TYPE, DiscoveredServer, server_from_txt

__all__ = ["DEFAULT_MDNS_INTERFACES", "MdnsAdvertiser", "ServerBrowser", "browse"]

logger = logging.getLogger(__name__)

#: Where mDNS goes unless told otherwise: loopback only.
DEFAULT_MDNS_INTERFACES: tuple[str, ...] = ("127.0.0.1",)
#: How long one advertisement may take to resolve (SRV, TXT, addresses).
RESOLVE_TIMEOUT = 3.0


def _host_label(instance: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", instance.lower()).strip("-")[:40] or "dpma"
    return f"{label}-dpma"


def _check_interfaces(interfaces: Sequence[str]) -> list[str]:
    if not interfaces:
        raise UsageError("mDNS needs at least one interface address")
    out = []
    for address in interfaces:
        try:
            out.append(str(ipaddress.ip_address(address)))
        except ValueError:
            raise UsageError(f"--mdns-interface {address!r}: give the interface's IP "
                             "address (e.g. 127.0.0.1 or 169.254.10.2)") from None
    return out


def _ip_version(interfaces: Sequence[str]) -> IPVersion:
    versions = {ipaddress.ip_address(a).version for a in interfaces}
    if versions == {4}:
        return IPVersion.V4Only
    if versions == {6}:
        return IPVersion.V6Only
    return IPVersion.All


def _open(interfaces: Sequence[str]) -> AsyncZeroconf:
    try:
        return AsyncZeroconf(interfaces=list(interfaces), ip_version=_ip_version(interfaces))
    except OSError as exc:
        raise UsageError(f"cannot use mDNS on {', '.join(interfaces)}: "
                         f"{exc.strerror or exc}") from None


class ServerBrowser:
    """A browse of ``_digiumproxy._udp`` that stays open: the servers it has resolved, and a
    wait for the ones a phone would take.

    :func:`browse` opens one per phone, as a real phone does. A fleet shard may open one and
    let every phone it boots ask it (:meth:`servers`): one socket and one query stream per
    shard instead of one per phone (docs/load-testing.md says why and what it costs).
    """

    def __init__(
        self,
        *,
        interfaces: Sequence[str] = DEFAULT_MDNS_INTERFACES,
        accept: Callable[[DiscoveredServer], bool] | None = None,
        on_found: Callable[[DiscoveredServer], None] | None = None,
    ) -> None:
        """*accept* drops advertisements the caller is not interested in (another lab on
        the same loopback); *on_found* is told about each server as it resolves."""
        self.interfaces = _check_interfaces(interfaces)
        self._accept = accept
        self._on_found = on_found
        self._found: dict[str, DiscoveredServer] = {}
        self._first_at: float | None = None
        # One future per phone waiting in servers(), all woken by any change. (An Event
        # replaced by whichever waiter woke first lost the phones already waiting on the
        # next one: with two servers advertised, a fleet's later phones sat out the whole
        # timeout.)
        self._waiters: set[asyncio.Future[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def found(self) -> list[DiscoveredServer]:
        """The servers resolved so far, in the order found."""
        return list(self._found.values())

    @property
    def first_heard(self) -> float | None:
        """When (loop time) this browser resolved its first server."""
        return self._first_at

    async def start(self) -> None:
        """Open the mDNS socket and start asking (idempotent)."""
        if self._aiozc is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._aiozc = _open(self.interfaces)
        # Multicast answers (QM), not python-zeroconf's unicast first question (QU): where
        # several mDNS sockets share port 5353 on one address (loopback, every lab and phone
        # of this host), a unicast answer reaches one of them at random, and a browse that
        # missed it waited for its next question, about a second later (1.1-1.3 s to hear a
        # lab, against 0.1-0.2 s with QM when the lab has not just answered someone else).
        self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, [SERVICE_TYPE],
                                            handlers=[self._handler],
                                            question_type=DNSQuestionType.QM)

    async def close(self) -> None:
        """Stop browsing and release the socket."""
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        for task in list(self._tasks):
            task.cancel()
        await aiozc.async_close()

    async def __aenter__(self) -> ServerBrowser:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _handler(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            assert self._loop is not None
            task = self._loop.create_task(self._resolve(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif state_change is ServiceStateChange.Removed:
            self._found.pop(name, None)

    async def _resolve(self, name: str) -> None:
        aiozc = self._aiozc
        if aiozc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            ok = await info.async_request(aiozc.zeroconf, int(RESOLVE_TIMEOUT * 1000),
                                          question_type=DNSQuestionType.QM)
        except Exception as exc:  # a broken advertisement is skipped, never fatal
            logger.info("cannot resolve %s: %s", name, exc)
            return
        if not ok or info.port is None:
            logger.info("%s did not resolve within %g s", name, RESOLVE_TIMEOUT)
            return
        instance = name[: -len(SERVICE_TYPE) - 1] if name.endswith(SERVICE_TYPE) else name
        server = server_from_txt(instance, info.properties, info.parsed_addresses(),
                                 int(info.port))
        if self._accept is not None and not self._accept(server):
            return
        if name not in self._found and self._on_found is not None:
            self._on_found(server)
        self._found[name] = server
        if self._first_at is None:
            assert self._loop is not None
            self._first_at = self._loop.time()
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def servers(
        self, *, timeout: float = 5.0, settle: float = 1.5, wanted: str | None = None
    ) -> list[DiscoveredServer]:
        """The servers a phone asking now would see: return as soon as the server named
        *wanted* is known, else *settle* seconds after this browser resolved its first
        server (so that a second one can show itself: python-zeroconf asks again about a
        second after its first question), else after *timeout* seconds."""
        await self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if wanted is not None and any(s.matches(wanted) for s in self._found.values()):
                break
            first_at = self._first_at if self._found else None
            end = deadline if first_at is None or wanted else min(deadline, first_at + settle)
            remaining = end - loop.time()
            if remaining <= 0:
                break
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                pass
            finally:
                if not waiter.done():  # cancelled from outside: no longer waiting
                    waiter.cancel()
                self._waiters.discard(waiter)
        return self.found


async def browse(
    *,
    interfaces: Sequence[str] = DEFAULT_MDNS_INTERFACES,
    timeout: float = 5.0,
    settle: float = 1.5,
    wanted: str | None = None,
    accept: Callable[[DiscoveredServer], bool] | None = None,
    on_found: Callable[[DiscoveredServer], None] | None = None,
) -> list[DiscoveredServer]:
    """Browse ``_digiumproxy._udp`` once, as one phone does, and return the servers found,
    in the order found (:meth:`ServerBrowser.servers` says when it stops).

    *accept* drops advertisements the caller is not interested in (another lab on the same
    loopback); *on_found* is told about each server as it resolves.
    """
    async with ServerBrowser(interfaces=interfaces, accept=accept,
                             on_found=on_found) as browser:
        return await browser.servers(timeout=timeout, settle=settle, wanted=wanted)


class MdnsAdvertiser:
    """Advertises one DPMA service (``_digiumproxy._udp``) until closed."""

    def __init__(
        self,
        *,
        instance: str,
        port: int,
        address: str,
        txt: Mapping[str, str],
        interfaces: Sequence[str] = DEFAULT_MDNS_INTERFACES,
        host_name: str | None = None,
    ) -> None:
        """*address* is the A/AAAA record (where the phones reach the server); *host_name*
        its name (default: made from *instance*, so two labs on one host do not clash)."""
        self.interfaces = _check_interfaces(interfaces)
        try:
            packed = socket.inet_pton(
                socket.AF_INET6 if ":" in address else socket.AF_INET, address)
        except OSError:
            raise UsageError(f"mDNS advertises an IP address, not {address!r}") from None
        if not instance or len(instance.encode()) > 63:
            raise UsageError(f"bad mDNS service name {instance!r}: 1-63 bytes")
        self.info = ServiceInfo(
            SERVICE_TYPE,
            f"{instance}.{SERVICE_TYPE}",
            addresses=[packed],
            port=port,
            properties=dict(txt),
            server=f"{host_name or _host_label(instance)}.local.",
        )
        self._aiozc: AsyncZeroconf | None = None
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        """Probe for the name (python-zeroconf's, about 0.8 s), then announce in the
        background."""
        self._aiozc = _open(self.interfaces)
        try:
            self._task = asyncio.ensure_future(
                await self._aiozc.async_register_service(self.info, allow_name_change=True))
        except Exception as exc:
            await self.close()
            raise UsageError(f"cannot advertise over mDNS: {exc}") from None

    async def close(self) -> None:
        """Say goodbye and stop."""
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await aiozc.async_unregister_service(self.info)
        await aiozc.async_close()
