"""One shard of a fleet: the phones ``index % shards == shard`` of a plan, on one event loop.

:class:`ShardRunner` brings its phones up on the ramp, places the calls whose caller it
runs, answers the calls that reach its phones, injects the scenario's faults and reports
everything as result records (plain dicts, ``ev`` naming the kind: see
:data:`~phone_sim.fleet.metrics.RECORD_KINDS`) through ``emit``. Each phone fails on its own:
an error is a record, never the end of the run. Phones are the phone core's objects
(``build_phone``, ``register``, ``dial``, ``next_call``, ``events``); calls between shards go
through the server like any other call.

With ``provisioning`` each phone first boots as a real one does
(:mod:`~phone_sim.fleet.aio_provision`): its number is known once its configuration has
arrived, so the shard keeps a :attr:`~ShardRunner.directory` of the fleet's numbers, its own
phones' at once and the other shards' as the fleet passes them on (:meth:`ShardRunner.learn`).
A check-sync NOTIFY makes a provisioned phone fetch its configuration again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from phone_sim.call.aio import Call, CallFailed, CallTimeout, shared_media_clock
from phone_sim.errors import PhoneSimError
from phone_sim.fleet.aio_faults import RelaySet
from phone_sim.fleet.aio_provision import FleetBoot, ShardProvisioner
from phone_sim.fleet.plan import CallPlan, FleetPlan, PhonePlan
from phone_sim.media.impairment import ImpairmentModel
from phone_sim.phone import (
    CallArrived,
    ConnectionDropped,
    FailedOver,
    Phone,
    RegistrationFailed,
    RegistrationRefused,
    RegistrationSucceeded,
    RegistrationTimeout,
    ReprovisionRequested,
    SipTransportError,
    build_phone,
)
from phone_sim.provisioning.errors import ProvisioningError
from phone_sim.tls.verdict import TlsConnectError, TlsError, TlsRefused

__all__ = ["ShardRunner", "failure_cause"]

logger = logging.getLogger(__name__)

Record = dict[str, Any]

#: Seconds a phone may take to unregister at the end.
UNREGISTER_TIMEOUT = 5.0
#: Phones unregistering at once at the end (the server's rate, not ours, is the limit).
UNREGISTER_CONCURRENCY = 200
#: Seconds the far end waits for the caller's tone and digits.
CHECK_TIMEOUT = 5.0


def failure_cause(exc: BaseException) -> str:
    """A short, groupable cause: ``503``, ``timeout``, ``tls ENOTTRUSTED|EUNTRUSTED``,
    ``connection``, and for provisioning ``refused``, ``HTTP 404``, ``bad config``..."""
    if isinstance(exc, ProvisioningError):
        return exc.cause
    if isinstance(exc, TlsConnectError):
        # No TLS verdict: the TCP connection itself failed (its message says how).
        text = str(exc)
        if text.startswith("connection refused"):
            return "connection refused"
        return "timeout" if text.startswith("no answer") else "connection"
    if isinstance(exc, TlsRefused):
        verdict = exc.verdict
        flags = "|".join(verdict.flags) if verdict is not None else "?"
        return f"tls {flags or verdict.bitmask_hex if verdict else '?'}"
    if isinstance(exc, TlsError):
        return f"tls {type(exc).__name__}"
    if isinstance(exc, RegistrationRefused):
        return str(exc.status)
    if isinstance(exc, RegistrationTimeout | CallTimeout | TimeoutError):
        return "timeout"
    if isinstance(exc, SipTransportError | ConnectionError):
        return "connection"
    if isinstance(exc, CallFailed):
        return str(exc.status) if exc.status else "failed"
    return type(exc).__name__


def _rss_kb() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _media(call: Call) -> Record:
    stats = call.stats
    if stats is None:
        return {}
    s = stats.stream
    return {
        "codec": stats.codec, "srtp": stats.encrypted, "sent": s.packets_sent,
        "received": s.packets_received, "lost": s.packets_lost,
        "jitter_ms": round(s.jitter * 1000, 3), "mos": round(s.mos_received, 3),
        "srtp_failures": s.srtp_auth_failures + s.srtp_replay_failures,
    }  # fmt: skip


def _impaired(model: ImpairmentModel) -> Record:
    """What the phone's access network did to the RTP of one call."""
    return {"offered": model.offered, "dropped": model.dropped, "delayed": model.delayed,
            "reordered": model.reordered}


class ShardRunner:
    """Runs one shard of *plan*; ``emit`` receives every record as it happens."""

    def __init__(self, plan: FleetPlan, shard: int, shards: int,
                 emit: Callable[[Record], None]) -> None:
        self.plan = plan
        self.shard = shard
        self.shards = shards
        self._emit = emit
        self.scenario = plan.scenario
        self.phones: dict[int, Phone] = {}
        self._names: dict[int, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._calls: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self._relays: RelaySet | None = None
        self._first_done: set[int] = set()
        self._provisioner = ShardProvisioner(plan) if plan.provisioning else None
        self._booted: dict[int, FleetBoot] = {}
        #: Fleet phone index -> the number its configuration gave it (provisioning only):
        #: this shard's phones as they provision, the others' as :meth:`learn` is told.
        self.directory: dict[int, str] = {}
        #: Why the run ended early (set by :meth:`stop`).
        self.stop_reason: str | None = None

    # -- records ------------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time() - self._t0

    def emit(self, ev: str, **fields: Any) -> None:
        """One record, stamped with the run time and the shard."""
        record: Record = {"t": round(self._now(), 4), "ev": ev, "shard": self.shard}
        record.update(fields)
        self._emit(record)

    def _spawn(self, coro: Any, *, call: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if call:
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _sleep_until(self, at: float) -> bool:
        """Sleep until run time *at*; False when the run was stopped meanwhile."""
        delay = at - self._now()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        return not self._stop.is_set()

    # -- the run ------------------------------------------------------------------------------

    def stop(self, reason: str = "interrupted") -> None:
        """End the run early: no new registrations or calls; calls hang up; phones
        unregister."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def learn(self, numbers: dict[int, str]) -> None:
        """Numbers other shards' phones were given by their provisioning (index -> user)."""
        self.directory.update(numbers)

    def _server_target(self) -> tuple[str, int]:
        server = self.scenario.server
        assert server is not None
        return server.host, server.port or (5061 if server.transport == "tls" else 5060)

    async def run(self, start_wall: float | None = None) -> None:
        """Run the shard; *start_wall* (``time.time()``) is the common start of every shard."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        wall = time.time() if start_wall is None else start_wall
        self._t0 = loop.time() + (wall - time.time())
        s = self.scenario
        if s.faults.drop_connections and (s.server is None or s.server.transport != "udp"):
            self._relays = RelaySet()
            if s.server is not None:  # else each server's relay starts when a phone needs it
                await self._relays.address_for(self._server_target())
        try:
            ramp = loop.create_task(self._ramp())
            calls = loop.create_task(self._place_calls())
            faults = loop.create_task(self._faults())
            background = [ramp, calls, faults]
            duration = s.duration
            if duration is not None:
                await self._sleep_until(duration)
            else:
                waiter = loop.create_task(self._stop.wait())
                while not (ramp.done() and calls.done()) and not waiter.done():
                    await asyncio.wait([ramp, calls, waiter],
                                       return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                # A run driven by counts ends when its calls have (bounded by the longest
                # hold); a run with a duration hangs up what is still up when it ends.
                if self._calls and not self._stop.is_set() and s.calls is not None:
                    limit = s.calls.setup_timeout + s.calls.hold.max + 10.0
                    stopper = loop.create_task(self._stop.wait())
                    deadline = loop.time() + limit
                    while self._calls and not stopper.done() and loop.time() < deadline:
                        await asyncio.wait([*self._calls, stopper],
                                           timeout=deadline - loop.time(),
                                           return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
            self._stop.set()
            for task in background:
                task.cancel()
            if self._calls:
                limit = (s.calls.setup_timeout + s.calls.hold.max + 5.0) if s.calls else 5.0
                if self.stop_reason is not None:
                    limit = 5.0  # the placing tasks see the stop and hang up at once
                await asyncio.wait(list(self._calls), timeout=limit)
            await self._unregister_all()
            self._report_shard()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._relays is not None:
                await self._relays.close()
            if self._provisioner is not None:
                await self._provisioner.close()

    def _report_shard(self) -> None:
        """What this shard cost: CPU seconds of its process, and how late the shared media
        ticker ran (p99 and max), for the benchmarks and the report."""
        clock = shared_media_clock()
        pacer = clock.pacer
        p99 = pacer.lateness_percentile(0.99) if self.plan.scenario.calls else None
        self.emit("shard", cpu_s=round(time.process_time(), 4),
                  lateness_p99_ms=None if p99 is None else round(p99 * 1000, 3),
                  lateness_max_ms=round(pacer.max_lateness * 1000, 3),
                  rss_kb=_rss_kb())

    async def _ramp(self) -> None:
        phones = self.plan.shard_phones(self.shard, self.shards)
        for phone in phones:
            if not await self._sleep_until(phone.register_at):
                return
            self._spawn(self._bring_up(phone))
        # The ramp is over when every first registration has an outcome.
        while len(self._first_done) < len(phones) and not self._stop.is_set():
            await asyncio.sleep(0.05)

    async def _bring_up(self, plan: PhonePlan) -> None:
        try:
            await self._boot_and_register(plan)
        finally:
            self._first_done.add(plan.index)

    async def _boot_and_register(self, plan: PhonePlan) -> None:
        booted_at = self._now()
        name = plan.name
        booted: FleetBoot | None = None
        try:
            if self._provisioner is not None:
                booted = await self._provision(plan)
                # A configuration that arrives once the run is ending starts no phone: the
                # phones still to unregister are already known.
                if booted is None or self._stop.is_set():
                    return
                name = booted.user
                config = booted.provisioned.config
                if self._relays is not None:
                    config = await self._relays.through(config)
            else:
                connect = None
                if self._relays is not None:
                    connect = await self._relays.address_for(self._server_target())
                config = self.plan.config(plan, connect=connect)
            phone = build_phone(config)
        except PhoneSimError as exc:
            self.emit("reg", phone=name, ok=False, latency=None, cause=failure_cause(exc),
                      model=plan.model)
            return
        self.phones[plan.index] = phone
        self._names[plan.index] = name
        events = phone.events()
        self._spawn(self._watch(plan, name, phone, events))
        self.emit("reg_start", phone=name)
        started = self._now()
        extra: Record = {} if booted is None else {"mac": plan.mac}
        try:
            await phone.register(timeout=self.scenario.ramp.timeout)
        except Exception as exc:  # each phone fails on its own
            if not isinstance(exc, PhoneSimError):
                logger.warning("phone %s: %r", name, exc)
            self.emit("reg", phone=name, ok=False, latency=round(self._now() - started, 6),
                      cause=failure_cause(exc), detail=str(exc)[:200], model=plan.model,
                      **extra)
        else:
            if booted is not None:  # power on to every line registered
                extra["boot"] = round(self._now() - booted_at, 6)
            self.emit("reg", phone=name, ok=True, latency=round(self._now() - started, 6),
                      model=plan.model, **extra)

    async def _provision(self, plan: PhonePlan) -> FleetBoot | None:
        """Discover, fetch and apply *plan*'s configuration, recorded as ``prov_start`` and
        ``prov``; None when it failed (the phone stays off)."""
        assert self._provisioner is not None
        self.emit("prov_start", mac=plan.mac, model=plan.model)
        started = self._now()
        try:
            booted = await self._provisioner.boot(plan)
        except Exception as exc:  # each phone fails on its own
            if not isinstance(exc, PhoneSimError):
                logger.warning("phone %s: %r", plan.mac, exc)
            self.emit("prov", mac=plan.mac, ok=False, latency=round(self._now() - started, 6),
                      cause=failure_cause(exc), detail=str(exc)[:200], model=plan.model)
            return None
        self._booted[plan.index] = booted
        self.directory[plan.index] = booted.user
        provisioned = booted.provisioned
        record: Record = {
            "mac": plan.mac, "ok": True, "index": plan.index, "phone": booted.user,
            "latency": round(self._now() - started, 6),
            "discovery": None if booted.discovery is None else round(booted.discovery, 6),
            "fetch": round(booted.fetch, 6), "via": booted.via, "server": booted.label,
            "lines": len(provisioned.config.registering_accounts), "model": plan.model,
        }  # fmt: skip
        if provisioned.upgrade is not None:
            record["upgrade"] = str(provisioned.upgrade.offered)
        self.emit("prov", **record)
        return booted

    async def _reprovision(self, plan: PhonePlan, name: str, phone: Phone) -> None:
        """A check-sync: fetch the configuration again and apply it live (changed or new
        lines register, removed ones unregister, calls go on), recorded as ``reprov``."""
        booted = self._booted.get(plan.index)
        if booted is None or self._provisioner is None:
            return
        started = self._now()
        try:
            new = await self._provisioner.refetch(plan, booted)
            config = new.config
            if self._relays is not None:
                config = await self._relays.through(config)
            await phone.reconfigure(config)
        except Exception as exc:  # the phone goes on with the configuration it has
            self.emit("reprov", phone=name, mac=plan.mac, ok=False,
                      latency=round(self._now() - started, 6), cause=failure_cause(exc),
                      detail=str(exc)[:200])
            return
        self._booted[plan.index] = replace(
            booted, provisioned=new, url=booted.provisioned.config_server_url or booted.url)
        user = new.config.registering_accounts[0].username if (
            new.config.registering_accounts) else name
        self.directory[plan.index] = user
        self.emit("reprov", phone=name, mac=plan.mac, ok=True, index=plan.index, user=user,
                  latency=round(self._now() - started, 6),
                  lines=len(new.config.registering_accounts))

    async def _watch(self, plan: PhonePlan, name: str, phone: Phone, events: Any) -> None:
        firsts: set[int] = set()
        try:
            async for event in events:
                if isinstance(event, ConnectionDropped):
                    self.emit("reg_event", phone=name, what="dropped", cause="connection")
                elif isinstance(event, RegistrationSucceeded | RegistrationFailed) and (
                        event.account not in firsts):
                    firsts.add(event.account)  # a line's first outcome: register() has it
                elif isinstance(event, RegistrationSucceeded):
                    if not event.refresh:
                        self.emit("reg_event", phone=name, what="registered")
                elif isinstance(event, RegistrationFailed):
                    self.emit("reg_event", phone=name, what="failed",
                              cause=failure_cause(event.error))
                elif isinstance(event, FailedOver):
                    self.emit("reg_event", phone=name, what="failover")
                elif isinstance(event, CallArrived) and not self._stop.is_set():
                    self._spawn(self._answer(name, phone), call=True)
                elif isinstance(event, ReprovisionRequested) and self._check_sync(plan):
                    self._spawn(self._reprovision(plan, name, phone))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("phone %s events: %r", name, exc)

    def _check_sync(self, plan: PhonePlan) -> bool:
        """Whether a check-sync makes *plan*'s phone fetch again (a provisioned phone whose
        configuration leaves ``enable_check_sync`` on)."""
        booted = self._booted.get(plan.index)
        return booted is not None and booted.provisioned.check_sync

    # -- calls --------------------------------------------------------------------------------

    async def _place_calls(self) -> None:
        for call in self.plan.calls():
            if call.caller % self.shards != self.shard:
                continue
            if not await self._sleep_until(call.at):
                return
            self._spawn(self._place(call), call=True)

    async def _place(self, cp: CallPlan) -> None:
        calls = self.scenario.calls
        assert calls is not None
        caller = self._names.get(cp.caller) or self.plan.phone(cp.caller).name
        phone = self.phones.get(cp.caller)
        # A fleet callee's number is what its provisioning gave it (None: not provisioned,
        # or not yet known here).
        to = cp.to
        if to is None and cp.callee is not None:
            to = self.directory.get(cp.callee)
        base: Record = {"call": cp.number, "from": caller, "to": to}
        if phone is None or not phone.registered:
            self.emit("call_end", **base, answered=False, setup=None, placed=False,
                      cause="caller not registered")
            return
        if to is None:
            self.emit("call_end", **base, answered=False, setup=None, placed=False,
                      cause="callee not provisioned")
            return
        self.emit("call_start", **base)
        started = self._now()
        call: Call | None = None
        impaired: ImpairmentModel | None = None
        record: Record = {"answered": False, "setup": None}
        try:
            call = await phone.dial(to)
            base["call_id"] = call.call_id
            # The phone's access network (MediaOptions.impairment), kept for its counters:
            # the endpoint is gone once the call has ended.
            impaired = call.endpoint.impaired if call.endpoint is not None else None
            await call.wait_answered(timeout=calls.setup_timeout)
            answered_at = self._now()
            record.update(answered=True, setup=round(answered_at - started, 6),
                          answered_t=round(answered_at, 4))
            call.play_tone(calls.tone)
            try:
                await call.wait_tone(cp.expect_tone, timeout=min(CHECK_TIMEOUT, cp.hold))
                record["tone_ok"] = True
            except CallTimeout:
                record["tone_ok"] = False
            if calls.dtmf and cp.callee is not None:
                await call.send_dtmf(calls.dtmf)
            remaining = answered_at + cp.hold - self._now()
            if remaining > 0 and not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), remaining)
            record.update(_media(call))
            await call.hangup()
            record["duration"] = round(self._now() - answered_at, 4)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # each call fails on its own
            record["cause"] = failure_cause(exc)
            record["detail"] = str(exc)[:200]
            if call is not None and record["answered"]:
                record.update(_media(call))
                with contextlib.suppress(Exception):
                    await call.hangup(timeout=2.0)
        finally:
            if impaired is not None:
                record["impaired"] = _impaired(impaired)
        self.emit("call_end", **base, **record)

    async def _answer(self, name: str, phone: Phone) -> None:
        calls = self.scenario.calls
        try:
            call = await phone.next_call(timeout=2.0)
        except Exception:
            return  # taken already, or gone before we looked
        record: Record = {"phone": name, "from": call.remote,
                          "call_id": call.call_id}
        impaired: ImpairmentModel | None = None
        try:
            await call.answer()
            impaired = call.endpoint.impaired if call.endpoint is not None else None
            if calls is not None:
                call.play_tone(calls.answer_tone)
                try:
                    await call.wait_tone(calls.tone, timeout=CHECK_TIMEOUT)
                    record["tone_ok"] = True
                except CallTimeout:
                    record["tone_ok"] = False
                if calls.dtmf:
                    try:
                        await call.wait_dtmf(calls.dtmf, timeout=CHECK_TIMEOUT)
                        record["dtmf_ok"] = True
                    except CallTimeout:
                        record["dtmf_ok"] = False
            limit = (calls.hold.max + 30.0) if calls is not None else 60.0
            await call.wait_ended(timeout=limit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            record["cause"] = failure_cause(exc)
            with contextlib.suppress(Exception):
                await call.hangup(timeout=2.0)
        record.update(_media(call))
        if impaired is not None:
            record["impaired"] = _impaired(impaired)
        self.emit("leg_end", **record)

    # -- faults -------------------------------------------------------------------------------

    async def _faults(self) -> None:
        relays = self._relays
        if relays is None:
            return
        for n, fault in enumerate(sorted(self.scenario.faults.drop_connections,
                                         key=lambda f: f.at)):
            if not await self._sleep_until(fault.at):
                return
            dropped = relays.drop(fault.share / 100.0,
                                  f"{self.scenario.seed}:drop:{n}:{self.shard}")
            self.emit("fault", what="drop_connections", share=fault.share, dropped=dropped)

    # -- the end ------------------------------------------------------------------------------

    async def _unregister_all(self) -> None:
        gate = asyncio.Semaphore(UNREGISTER_CONCURRENCY)

        async def one(index: int, phone: Phone) -> None:
            async with gate:
                name = self._names[index]
                ok = False
                try:
                    if phone.registered:
                        result = await asyncio.wait_for(phone.unregister(), UNREGISTER_TIMEOUT)
                        ok = result.confirmed
                        self.emit("unreg", phone=name, ok=ok)
                except Exception as exc:
                    self.emit("unreg", phone=name, ok=False, cause=failure_cause(exc))
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(phone.close(), UNREGISTER_TIMEOUT)

        await asyncio.gather(*(one(i, p) for i, p in list(self.phones.items())))
