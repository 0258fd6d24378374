"""One shard of a fleet: the phones ``index % shards == shard`` of a plan, on one event loop.

:class:`ShardRunner` brings its phones up on the ramp, places the calls whose caller it
runs, answers the calls that reach its phones, injects the scenario's faults and reports
everything as result records (plain dicts, ``ev`` naming the kind: see
:data:`~phone_sim.fleet.metrics.RECORD_KINDS`) through ``emit``. Each phone fails on its own:
an error is a record, never the end of the run. Phones are the phone core's objects
(``build_phone``, ``register``, ``dial``, ``next_call``, ``events``); calls between shards go
through the server like any other call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from phone_sim.call.aio import Call, CallFailed, CallTimeout, shared_media_clock
from phone_sim.errors import PhoneSimError
from phone_sim.fleet.aio_faults import ConnectionRelay
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
    SipTransportError,
    build_phone,
)
from phone_sim.tls.verdict import TlsError, TlsRefused

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
    ``connection``..."""
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
        self._plans: dict[int, PhonePlan] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._calls: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self._relay: ConnectionRelay | None = None
        self._first_done: set[int] = set()
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

    async def run(self, start_wall: float | None = None) -> None:
        """Run the shard; *start_wall* (``time.time()``) is the common start of every shard."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        wall = time.time() if start_wall is None else start_wall
        self._t0 = loop.time() + (wall - time.time())
        s = self.scenario
        if s.faults.drop_connections and s.server.transport != "udp":
            target = (s.server.host, s.server.port or (5061 if s.server.transport == "tls"
                                                       else 5060))
            self._relay = ConnectionRelay(target)
            await self._relay.start()
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
            if self._relay is not None:
                await self._relay.close()

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
            self._plans[phone.index] = phone
            self._spawn(self._bring_up(phone))
        # The ramp is over when every first registration has an outcome.
        while len(self._first_done) < len(phones) and not self._stop.is_set():
            await asyncio.sleep(0.05)

    async def _bring_up(self, plan: PhonePlan) -> None:
        connect = None
        if self._relay is not None:
            connect = (self._relay.host, self._relay.port)
        try:
            phone = build_phone(self.plan.config(plan, connect=connect))
        except PhoneSimError as exc:
            self._first_done.add(plan.index)
            self.emit("reg", phone=plan.username, ok=False, latency=None,
                      cause=failure_cause(exc), model=plan.model)
            return
        self.phones[plan.index] = phone
        events = phone.events()
        self._spawn(self._watch(plan, phone, events))
        self.emit("reg_start", phone=plan.username)
        started = self._now()
        try:
            await phone.register(timeout=self.scenario.ramp.timeout)
        except Exception as exc:  # each phone fails on its own
            if not isinstance(exc, PhoneSimError):
                logger.warning("phone %s: %r", plan.username, exc)
            self.emit("reg", phone=plan.username, ok=False,
                      latency=round(self._now() - started, 6), cause=failure_cause(exc),
                      detail=str(exc)[:200], model=plan.model)
        else:
            self.emit("reg", phone=plan.username, ok=True,
                      latency=round(self._now() - started, 6), model=plan.model)
        finally:
            self._first_done.add(plan.index)

    async def _watch(self, plan: PhonePlan, phone: Phone, events: Any) -> None:
        first = True
        try:
            async for event in events:
                if isinstance(event, ConnectionDropped):
                    self.emit("reg_event", phone=plan.username, what="dropped",
                              cause="connection")
                elif isinstance(event, RegistrationSucceeded | RegistrationFailed) and first:
                    first = False  # the first attempt's outcome: register() reported it
                elif isinstance(event, RegistrationSucceeded):
                    if not event.refresh:
                        self.emit("reg_event", phone=plan.username, what="registered")
                elif isinstance(event, RegistrationFailed):
                    self.emit("reg_event", phone=plan.username, what="failed",
                              cause=failure_cause(event.error))
                elif isinstance(event, FailedOver):
                    self.emit("reg_event", phone=plan.username, what="failover")
                elif isinstance(event, CallArrived) and not self._stop.is_set():
                    self._spawn(self._answer(plan, phone), call=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("phone %s events: %r", plan.username, exc)

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
        caller_plan = self.plan.phone(cp.caller)
        phone = self.phones.get(cp.caller)
        base: Record = {"call": cp.number, "from": caller_plan.username, "to": cp.to}
        if phone is None or not phone.registered:
            self.emit("call_end", **base, answered=False, setup=None, placed=False,
                      cause="caller not registered")
            return
        self.emit("call_start", **base)
        started = self._now()
        call: Call | None = None
        impaired: ImpairmentModel | None = None
        record: Record = {"answered": False, "setup": None}
        try:
            call = await phone.dial(cp.to)
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

    async def _answer(self, plan: PhonePlan, phone: Phone) -> None:
        calls = self.scenario.calls
        try:
            call = await phone.next_call(timeout=2.0)
        except Exception:
            return  # taken already, or gone before we looked
        record: Record = {"phone": plan.username, "from": call.remote,
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
        relay = self._relay
        if relay is None:
            return
        for n, fault in enumerate(sorted(self.scenario.faults.drop_connections,
                                         key=lambda f: f.at)):
            if not await self._sleep_until(fault.at):
                return
            rng = random.Random(f"{self.scenario.seed}:drop:{n}:{self.shard}")
            dropped = relay.drop(fault.share / 100.0, rng)
            self.emit("fault", what="drop_connections", share=fault.share, dropped=dropped)

    # -- the end ------------------------------------------------------------------------------

    async def _unregister_all(self) -> None:
        gate = asyncio.Semaphore(UNREGISTER_CONCURRENCY)

        async def one(index: int, phone: Phone) -> None:
            async with gate:
                plan = self._plans[index]
                ok = False
                try:
                    if phone.registered:
                        result = await asyncio.wait_for(phone.unregister(), UNREGISTER_TIMEOUT)
                        ok = result.confirmed
                        self.emit("unreg", phone=plan.username, ok=ok)
                except Exception as exc:
                    self.emit("unreg", phone=plan.username, ok=False, cause=failure_cause(exc))
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(phone.close(), UNREGISTER_TIMEOUT)

        await asyncio.gather(*(one(i, p) for i, p in list(self.phones.items())))
