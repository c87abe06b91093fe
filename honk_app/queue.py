"""The worker loop on the embedded store: claim, heartbeat, cancel, recover.

Runs are claimed from the runs table (one in flight per issue/PR, oldest first). Each
claimed run holds a lease renewed by heartbeats; a run whose worker died is given back to
the queue when its lease runs out, or at once when this machine can see that its worker
process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

import structlog

from honk_app import metrics
from honk_app.runs import Run, RunState, RunStore

log = structlog.get_logger()

Execute = Callable[[Run], Awaitable[None]]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_dead_here(worker_id: str) -> bool:
    """True for a worker of this host whose process no longer exists."""
    host, _, rest = worker_id.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class WorkerPool:
    def __init__(
        self,
        store: RunStore,
        execute: Execute,
        *,
        concurrency: int = 2,
        lease_seconds: float = 60.0,
        heartbeat_seconds: float = 2.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.execute = execute
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.poll_seconds = poll_seconds
        self.worker_id = new_worker_id()
        self._wake = asyncio.Event()
        self._active: dict[int, asyncio.Task[None]] = {}

    def wake(self) -> None:
        """Called when a run was queued in this process, to claim it without waiting."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker started", worker_id=self.worker_id, concurrency=self.concurrency)
        await self._recover()
        heartbeats = asyncio.create_task(self._heartbeats(stop))
        try:
            while not stop.is_set():
                await self._fill()
                waits = [
                    asyncio.create_task(self._wake.wait()),
                    asyncio.create_task(stop.wait()),
                    *self._active.values(),
                ]
                await asyncio.wait(
                    waits, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in waits[:2]:
                    waiter.cancel()
                self._wake.clear()
        finally:
            heartbeats.cancel()
            await self._hand_back()

    async def _fill(self) -> None:
        while len(self._active) < self.concurrency:
            run = await self.store.claim(self.worker_id)
            if run is None:
                return
            log.info(
                "run claimed",
                run_id=run.id,
                delivery_id=run.delivery_id,
                repo=run.repo,
                number=run.number,
                attempt=run.attempts,
                worker_id=self.worker_id,
            )
            task = asyncio.create_task(self._guarded(run), name=f"run-{run.id}")
            self._active[run.id] = task
        metrics.QUEUE_DEPTH.set(await self.store.queue_depth())

    async def _guarded(self, run: Run) -> None:
        try:
            await self.execute(run)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run raised", run_id=run.id)
            await self.store.finish(
                run.id,
                RunState.FAILED,
                "internal_error",
                "Honk hit an internal error; see the operator's log.",
            )
        finally:
            self._active.pop(run.id, None)
            self._wake.set()

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        ticks = 0
        while not stop.is_set():
            await asyncio.sleep(self.heartbeat_seconds)
            for run_id, task in list(self._active.items()):
                if await self.store.heartbeat(run_id, self.worker_id):
                    log.info("stopping run", run_id=run_id)
                    task.cancel()
            ticks += 1
            if ticks * self.heartbeat_seconds >= self.lease_seconds / 2:
                ticks = 0
                await self._recover()

    async def _recover(self) -> None:
        dead = tuple(w for w in await self.store.running_workers() if _is_dead_here(w))
        count = await self.store.requeue_stale(self.lease_seconds, dead)
        if count:
            log.info("runs recovered from dead workers", count=count)
            self._wake.set()

    async def _hand_back(self) -> None:
        """On shutdown, cancel what is in flight and give it back to the queue."""
        tasks = list(self._active.items())
        for _, task in tasks:
            task.cancel()
        for run_id, task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            fresh = await self.store.get(run_id)
            if fresh is not None and fresh.state == RunState.RUNNING:
                await self.store.update(run_id, state=RunState.QUEUED, worker_id=None)
                log.info("run handed back", run_id=run_id)
