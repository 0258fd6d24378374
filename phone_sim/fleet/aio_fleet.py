"""Running a fleet: shards in this process, in child processes, or as Ray actors; their
records merged into one results file, a live view, Prometheus metrics and a summary.

::

    summary = await FleetRun(plan, results=Path("results.jsonl"), processes=2).run()

Shards run the phones ``index % shards == shard``; every shard starts at the same wall-clock
instant, so the ramp and the call schedule are the fleet's, whatever the sharding. Records
reach this process in batches (a child sends its batch every 0.2 s) and go to the results
file, which is flushed every 0.5 s (not fsync'd): a run killed with SIGKILL keeps what it
recorded up to the last half second. A child whose parent is gone finds its pipe broken and
stops.

With provisioning a phone's number is known once its configuration arrives: the ``prov`` and
``reprov`` records carry it, and this process passes the numbers on to every shard in
batches (:meth:`~phone_sim.fleet.aio_shard.ShardRunner.learn`), so that a caller in one
shard can dial a fleet phone provisioned in another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.fleet.aio_shard import ShardRunner
from phone_sim.fleet.live import LiveState
from phone_sim.fleet.metrics import summarize
from phone_sim.fleet.plan import FleetPlan
from phone_sim.fleet.results import read_results
from phone_sim.fleet.scenario import Scenario

__all__ = ["FleetRun", "ResultsWriter", "run_in_loop"]

logger = logging.getLogger(__name__)

#: Seconds between flushes of the results file (at least once a second, as promised).
FLUSH_INTERVAL = 0.5
#: Seconds between two batches a child sends.
BATCH_INTERVAL = 0.2
#: Seconds the shards get to start before the common start instant.
START_MARGIN = 0.3


class ResultsWriter:
    """JSON lines, buffered, flushed every :data:`FLUSH_INTERVAL` (no fsync per event)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        if path is not None:
            try:
                self._file = path.open("w", encoding="utf-8", buffering=1 << 16)
            except OSError as exc:
                raise UsageError(f"cannot write results to {path}: {exc.strerror}") from None
        self._handle: asyncio.TimerHandle | None = None
        self.count = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush on a timer from now on."""
        self._handle = loop.call_later(FLUSH_INTERVAL, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.flush()
        self._handle = loop.call_later(FLUSH_INTERVAL, self._tick, loop)

    def write(self, record: dict[str, Any]) -> None:
        """One record (buffered)."""
        self.count += 1
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        """Hand the buffer to the kernel."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush and close."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None


# -- child processes --------------------------------------------------------------------------


def _child_main(scenario: Scenario, shard: int, shards: int,
                conn: multiprocessing.connection.Connection) -> None:
    """A shard in a child process: records go to *conn* in batches."""
    # The terminal's Ctrl-C reaches the whole group; the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_in_loop(_child(scenario, shard, shards, conn))


async def _child(scenario: Scenario, shard: int, shards: int,
                 conn: multiprocessing.connection.Connection) -> None:
    loop = asyncio.get_running_loop()
    batch: list[dict[str, Any]] = []
    runner = ShardRunner(FleetPlan(scenario), shard, shards, batch.append)
    broken = False

    def send(message: tuple[Any, ...]) -> None:
        nonlocal broken
        if broken:
            return
        try:
            conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            broken = True  # the parent is gone: nobody keeps our records, stop
            runner.stop("parent gone")

    def flush() -> None:
        if batch:
            send(("records", batch[:]))
            batch.clear()

    go: asyncio.Future[float] = loop.create_future()

    def readable() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            runner.stop("parent gone")
            if not go.done():
                go.set_result(time.time())
            return
        if message[0] == "go" and not go.done():
            go.set_result(float(message[1]))
        elif message[0] == "stop":
            runner.stop(str(message[1]))
        elif message[0] == "directory":
            runner.learn(message[1])

    loop.add_reader(conn.fileno(), readable)
    send(("ready",))
    start = await go

    async def pump() -> None:
        while True:
            await asyncio.sleep(BATCH_INTERVAL)
            flush()

    pumping = loop.create_task(pump())
    try:
        await runner.run(start)
    except Exception as exc:
        logger.exception("shard %d failed", shard)
        send(("error", f"shard {shard}: {exc!r}"))
    finally:
        pumping.cancel()
        flush()
        send(("done", runner.stop_reason))
        loop.remove_reader(conn.fileno())


def run_in_loop(coro: Any) -> Any:
    """Run *coro* on uvloop when it is installed (the stock loop drops UDP under load)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class _ChildShard:
    def __init__(self, scenario: Scenario, shard: int, shards: int,
                 on_records: Callable[[list[dict[str, Any]]], None]) -> None:
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self.process = context.Process(target=_child_main, args=(scenario, shard, shards, child),
                                       name=f"phone-sim-fleet-{shard}", daemon=True)
        self._child_end = child
        self.shard = shard
        self._on_records = on_records
        self.ready: asyncio.Future[None] | None = None
        self.done: asyncio.Future[str | None] | None = None
        self.error: str | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ready = loop.create_future()
        self.done = loop.create_future()
        self.process.start()
        self._child_end.close()
        loop.add_reader(self._parent.fileno(), self._readable, loop)

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.ready is not None and self.done is not None
        try:
            message = self._parent.recv()
        except (EOFError, OSError):
            loop.remove_reader(self._parent.fileno())
            if not self.ready.done():
                self.ready.set_exception(PhoneSimError(
                    f"fleet shard {self.shard} exited before it started "
                    f"(exit status {self.process.exitcode})"))
            if not self.done.done():
                self.done.set_result("shard exited")
            return
        kind = message[0]
        if kind == "records":
            self._on_records(message[1])
        elif kind == "ready" and not self.ready.done():
            self.ready.set_result(None)
        elif kind == "error":
            self.error = str(message[1])
        elif kind == "done" and not self.done.done():
            self.done.set_result(message[1])

    def send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):
            self._parent.send(message)

    async def close(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(Exception):
            loop.remove_reader(self._parent.fileno())
        self.process.join(timeout=0)
        deadline = time.monotonic() + 10.0
        while self.process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self._parent.close()


# -- the run ----------------------------------------------------------------------------------


class FleetRun:
    """One fleet run: shards, records, live state, summary."""

    def __init__(
        self,
        plan: FleetPlan,
        *,
        results: Path | None,
        processes: int = 1,
        ray: str | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if processes < 1:
            raise UsageError("--processes must be at least 1")
        processes = min(processes, plan.count)
        self.plan = plan
        self.shards = processes
        self.ray = ray
        self.writer = ResultsWriter(results)
        self.results = results
        self.state = LiveState()
        self._on_record = on_record
        self._stop: Callable[[str], None] | None = None
        self.stop_reason: str | None = None
        self.errors: list[str] = []
        self._records: list[dict[str, Any]] | None = [] if results is None else None
        #: Numbers provisioned since the shards were last told (index -> user).
        self._numbers: dict[int, str] = {}

    def record(self, record: dict[str, Any]) -> None:
        """Take one record from a shard."""
        self.writer.write(record)
        self.state.update(record)
        if self.shards > 1 and record.get("ok") and record.get("ev") in ("prov", "reprov"):
            user = record.get("phone") if record["ev"] == "prov" else record.get("user")
            if isinstance(record.get("index"), int) and isinstance(user, str):
                self._numbers[record["index"]] = user
        if self._records is not None:
            self._records.append(record)
        if self._on_record is not None:
            self._on_record(record)

    def records(self, batch: list[dict[str, Any]]) -> None:
        """Take a batch of records."""
        for record in batch:
            self.record(record)

    def take_numbers(self) -> dict[int, str]:
        """The numbers provisioned since the last call, for the shards to learn."""
        numbers, self._numbers = self._numbers, {}
        return numbers

    def stop(self, reason: str = "interrupted") -> None:
        """End the run early (SIGINT): shards hang up, unregister, flush."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._stop is not None:
            self._stop(reason)

    async def run(self) -> dict[str, Any]:
        """Run every shard to the end and return the summary."""
        loop = asyncio.get_running_loop()
        self.writer.start(loop)
        started = time.time()
        self.record({"t": 0.0, "ev": "run", **self.plan.describe(), "shards": self.shards,
                     "started": started, "backend": "ray" if self.ray else (
                         "processes" if self.shards > 1 else "inline")})
        try:
            if self.ray is not None:
                from phone_sim.fleet.aio_ray import run_ray_shards  # noqa: PLC0415

                await run_ray_shards(self, self.ray)
            elif self.shards == 1:
                await self._run_inline()
            else:
                await self._run_processes(loop)
            elapsed = round(time.time() - started, 4)
            self.record({"t": elapsed, "ev": "end", "reason": self.stop_reason or "finished",
                         "errors": self.errors})
        finally:
            self.writer.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The summary, from the results on disk (or in memory without a file)."""
        thresholds = self.plan.scenario.parsed_thresholds()
        if self.results is not None:
            return summarize(read_results(self.results).records, thresholds)
        return summarize(self._records or [], thresholds)

    async def _run_inline(self) -> None:
        runner = ShardRunner(self.plan, 0, 1, self.record)
        self._stop = runner.stop
        await runner.run(time.time())

    async def _run_processes(self, loop: asyncio.AbstractEventLoop) -> None:
        shards = [_ChildShard(self.plan.scenario, i, self.shards, self.records)
                  for i in range(self.shards)]
        for child in shards:
            child.start(loop)

        def stop(reason: str) -> None:
            for child in shards:
                child.send(("stop", reason))

        self._stop = stop

        async def share_numbers() -> None:
            while True:
                await asyncio.sleep(BATCH_INTERVAL)
                numbers = self.take_numbers()
                if numbers:
                    for child in shards:
                        child.send(("directory", numbers))

        sharing = loop.create_task(share_numbers()) if self.plan.provisioning else None
        try:
            await asyncio.gather(*(c.ready for c in shards if c.ready is not None))
            start = time.time() + START_MARGIN
            for child in shards:
                child.send(("go", start))
            await asyncio.gather(*(c.done for c in shards if c.done is not None))
            self.errors += [c.error for c in shards if c.error]
        finally:
            if sharing is not None:
                sharing.cancel()
            await asyncio.gather(*(c.close(loop) for c in shards))


def default_summary_path(results: Path) -> Path:
    """``results.jsonl`` -> ``results.summary.json``."""
    return results.with_name(results.name.removesuffix(".jsonl") + ".summary.json")
