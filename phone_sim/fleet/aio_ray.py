"""Fleet shards as Ray actors (the optional extra ``phone-sim[ray]``).

``--ray ADDRESS`` joins a running Ray cluster (``ray://host:10001`` or ``host:6379``); every
node needs phone-sim installed. ``--ray auto`` joins the cluster ``RAY_ADDRESS`` names, and
otherwise starts a private Ray instance on this machine bound to 127.0.0.1 (every Ray process
listens and connects on loopback only), with no dashboard and usage statistics off, and stops
it at the end.

Each actor runs one :class:`~phone_sim.fleet.aio_shard.ShardRunner` on the actor's event
loop; this process collects their records every :data:`POLL_INTERVAL` seconds. A call from a
phone in one actor to a phone in another goes through the server, as any call does; with
provisioning the numbers the phones were given reach every actor at each collection
(:meth:`ShardActor.learn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from phone_sim.errors import UsageError
from phone_sim.fleet.aio_shard import ShardRunner
from phone_sim.fleet.plan import FleetPlan
from phone_sim.fleet.scenario import Scenario

if TYPE_CHECKING:
    from phone_sim.fleet.aio_fleet import FleetRun

__all__ = ["ShardActor", "run_ray_shards"]

#: Seconds between two collections of the actors' records.
POLL_INTERVAL = 0.25
#: Seconds the actors get to start before the common start instant.
START_MARGIN = 0.5


class ShardActor:
    """One shard in a Ray actor (made a Ray actor class by :func:`run_ray_shards`)."""

    def __init__(self, scenario: Scenario, shard: int, shards: int) -> None:
        self._batch: list[dict[str, Any]] = []
        self._runner = ShardRunner(FleetPlan(scenario), shard, shards, self._batch.append)

    async def ready(self) -> bool:
        """Answered once the actor is up."""
        return True

    async def run(self, start: float) -> str | None:
        """Run the shard; returns why it stopped early (None: it finished)."""
        await self._runner.run(start)
        return self._runner.stop_reason

    async def drain(self) -> list[dict[str, Any]]:
        """The records since the last call."""
        batch = self._batch[:]
        self._batch.clear()
        return batch

    async def stop(self, reason: str) -> None:
        """End the shard early."""
        self._runner.stop(reason)

    async def learn(self, numbers: dict[int, str]) -> None:
        """Numbers other shards' phones were provisioned with."""
        self._runner.learn(numbers)


def _connect(address: str, shards: int) -> bool:
    """Connect to (or start) Ray; True when this process started it."""
    target = os.environ.get("RAY_ADDRESS") if address == "auto" else address
    if not target:
        # Ray's single-machine mode: every Ray process binds and connects on loopback (without
        # it some use the host's own address). Ray reads it on import; its children inherit it.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise UsageError(
            "--ray needs Ray: pip install 'phone-sim[ray]'"
        ) from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    try:
        if target:
            ray.init(address=target, log_to_driver=False, configure_logging=False)
            return True
        ray.init(
            num_cpus=max(shards, 1), include_dashboard=False, log_to_driver=False,
            configure_logging=False, _node_ip_address="127.0.0.1",
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot reach Ray at {target or 'a new local instance'}: {exc}"
                         ) from None
    return True


async def run_ray_shards(run: FleetRun, address: str) -> None:
    """Run *run*'s shards as Ray actors and feed their records to it."""
    started = _connect(address, run.shards)
    import ray  # noqa: PLC0415

    actor_class: Any = ray.remote(num_cpus=1)(ShardActor)
    actors: list[Any] = [actor_class.remote(run.plan.scenario, i, run.shards)
                         for i in range(run.shards)]
    stopping: list[Any] = []

    def stop(reason: str) -> None:
        stopping.extend(a.stop.remote(reason) for a in actors)

    run._stop = stop
    try:
        await asyncio.gather(*(a.ready.remote() for a in actors))
        start = time.time() + START_MARGIN
        runs = [asyncio.ensure_future(a.run.remote(start)) for a in actors]
        while True:
            done = all(r.done() for r in runs)
            for batch in await asyncio.gather(*(a.drain.remote() for a in actors)):
                run.records(batch)
            numbers = run.take_numbers()
            if numbers and not done:
                await asyncio.gather(*(a.learn.remote(numbers) for a in actors))
            if done:
                break
            await asyncio.wait(runs, timeout=POLL_INTERVAL)
        for result in runs:
            exc = result.exception()
            if exc is not None:
                run.errors.append(f"ray shard: {exc!r}")
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if started:
            ray.shutdown()
