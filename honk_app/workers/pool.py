"""The worker loop on the embedded store: claim, heartbeat, cancel, recover.

Runs are claimed from the runs table (one in flight per issue/PR, oldest first). Each
claimed run holds a lease renewed by heartbeats; a run whose worker died is given back to
the queue when its lease runs out, or at once when this machine can see that its worker
process is gone.

Every loop here outlives a failed call: a database locked by another process, or gone for
a while, costs a warning and a pause, never the loop (the store these loops use already
waits out a short outage; see `honk_app.store.db.Patient`). `trouble` tells /healthz when the
claim loop has not turned for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog

from honk_app import metrics
from honk_app.models import Outcome, Run, RunState
from honk_app.store.runs import RunStore

log = structlog.get_logger()

Execute = Callable[[Run], Awaitable[None]]

MAX_BACKOFF_SECONDS = 30.0
NEVER_STALE_SECONDS = 1e12


class Backoff:
    """Pauses after failures in a row: 1, 2, 4 … times `base`, at most MAX_BACKOFF_SECONDS."""

    def __init__(self, base: float) -> None:
        self.base = base
        self.failures = 0

    def failed(self) -> float:
        """Count one more failure; the seconds to wait before trying again."""
        self.failures += 1
        return min(self.base * 2 ** (self.failures - 1), MAX_BACKOFF_SECONDS)

    def succeeded(self) -> None:
        self.failures = 0


async def survive(task: str, call: Callable[[], Awaitable[None]], backoff: Backoff) -> float:
    """Run one round of a background task; 0 if it went through, else the pause to take.

    The failure is logged (with the task's name) and counted in
    honk_background_errors_total; the task itself carries on.
    """
    try:
        await call()
    except Exception as error:
        pause = backoff.failed()
        metrics.BACKGROUND_ERRORS.labels(task=task).inc()
        log.warning(f"{task} failed; trying again", error=str(error) or type(error).__name__,
                    failures=backoff.failures, retry_in_seconds=pause)
        return pause
    backoff.succeeded()
    return 0.0


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


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
        self._turned_at: float | None = None  # when the claim loop last asked for work
        # When the database last failed or was slow to answer: no lease is judged stale
        # until it has answered for a whole lease (the other workers renew theirs by then).
        self._answering_since = time.monotonic() - lease_seconds

    def wake(self) -> None:
        """Called when a run was queued in this process, to claim it without waiting."""
        self._wake.set()

    def trouble(self, stalled_after: float) -> str | None:
        """A sentence if the claim loop has not turned for `stalled_after` seconds."""
        stalled_for = time.monotonic() - (self._turned_at or time.monotonic())
        if stalled_for > max(stalled_after, 2 * self.poll_seconds):
            return (f"the worker has not asked for work for {stalled_for:.0f} s "
                    "(is the database locked or unreachable?)")
        return None

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker started", worker_id=self.worker_id, concurrency=self.concurrency)
        self._turned_at = time.monotonic()
        heartbeats = asyncio.create_task(self._heartbeats(stop))
        claims = Backoff(self.poll_seconds)
        try:
            while not stop.is_set():
                self._turned_at = time.monotonic()
                waited = await survive("claiming runs", self._fill, claims)
                if waited:
                    await pause(stop, waited)
                    continue
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
            try:
                await self.store.finish(
                    run.id,
                    RunState.FAILED,
                    Outcome.INTERNAL_ERROR,
                    "Honk hit an internal error; see the operator's log.",
                )
            except Exception as error:  # its lease runs out, and recovery takes it from there
                log.warning("run's end not recorded", run_id=run.id, error=str(error))
        finally:
            self._active.pop(run.id, None)
            self._wake.set()

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        """Renew the leases of the runs in flight (and stop those asked to stop), and now
        and then recover the runs of dead workers."""
        beats = Backoff(self.heartbeat_seconds)
        recoveries = Backoff(self.heartbeat_seconds)
        next_recovery = 0.0  # at once: runs a dead process left behind
        while not stop.is_set():
            started = time.monotonic()
            waited = await survive("renewing leases", self._beat, beats)
            if time.monotonic() >= next_recovery and not waited:
                waited = await survive("recovering runs", self._recover, recoveries)
                next_recovery = time.monotonic() + self.lease_seconds / 2
            if waited or time.monotonic() - started > self.heartbeat_seconds:
                self._answering_since = time.monotonic()  # failed, or waited for the lock
            await pause(stop, waited or self.heartbeat_seconds)

    async def _beat(self) -> None:
        for run_id, task in list(self._active.items()):
            if await self.store.heartbeat(run_id, self.worker_id):
                log.info("stopping run", run_id=run_id)
                task.cancel()

    async def _recover(self) -> None:
        lease = self.lease_seconds
        if time.monotonic() - self._answering_since < lease:
            # Leases could not be renewed meanwhile, so a stale one proves nothing; a worker
            # process known to be gone still does.
            lease = NEVER_STALE_SECONDS
        dead = tuple(w for w in await self.store.running_workers() if _is_dead_here(w))
        count = await self.store.requeue_stale(lease, dead)
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
            try:
                if await self.store.hand_back(run_id, self.worker_id):
                    log.info("run handed back", run_id=run_id)
            except Exception as error:  # its lease runs out, and recovery takes it from there
                log.warning("run not handed back", run_id=run_id, error=str(error))
