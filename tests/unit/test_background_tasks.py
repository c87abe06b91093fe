"""The embedded worker's loops outlive failed database calls of any kind.

A seam-level fake (the database failing its next few calls with an error that is not a
lock, so no waiting view retries it) over a real SQLite file; the lock itself, from a real
second process, is in test_database_faults.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client import REGISTRY

from honk_app.models import Run, RunState, Trigger
from honk_app.store.db import Operation, Storage
from honk_app.store.runs import RunStore
from honk_app.workers.backend import SQLiteBackend
from honk_app.workers.pool import WorkerPool

pytestmark = pytest.mark.anyio  # on asyncio: conftest's anyio_backend

T = TypeVar("T")
REPO = "octo/calculator"


class Failing:
    """A database whose next `failures` calls raise, then which works again."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.failures = 0

    @property
    def dialect(self) -> str:
        return self.storage.dialect

    async def call(self, op: Operation[T]) -> T:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("disk I/O error (injected)")
        return await self.storage.call(op)


def trigger() -> Trigger:
    return Trigger(kind="task", repo=REPO, number=7, installation_id=1,  # type: ignore[arg-type]
                   sender="mona", instruction="")


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def errors(task: str) -> float:
    return REGISTRY.get_sample_value("honk_background_errors_total", {"task": task}) or 0.0


async def test_the_claim_loop_outlives_failed_calls_and_then_claims(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "honk.db")
    await backend.start()
    database = Failing(backend.db)
    executed: list[int] = []

    async def execute(run: Run) -> None:
        executed.append(run.id)
        await backend.store.finish(run.id, RunState.DONE, "success", "done")

    pool = WorkerPool(RunStore(database), execute, poll_seconds=0.02, heartbeat_seconds=0.02)
    before = errors("claiming runs")
    database.failures = 5
    stop = asyncio.Event()
    worker = asyncio.create_task(pool.run(stop))
    try:
        await until(lambda: database.failures == 0)
        accepted = await backend.store.record_delivery("d-1", "issues", "labeled", trigger())
        pool.wake()
        await until(lambda: executed == [accepted.run_id])
        assert not worker.done()
        assert errors("claiming runs") > before
    finally:
        stop.set()
        await worker
        await backend.close()


async def test_the_heartbeat_outlives_failed_calls_and_stop_still_reaches_the_run(
    tmp_path: Path,
) -> None:
    backend = SQLiteBackend(tmp_path / "honk.db")
    await backend.start()
    database = Failing(backend.db)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def execute(run: Run) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    pool = WorkerPool(RunStore(database), execute, poll_seconds=0.02, heartbeat_seconds=0.02)
    accepted = await backend.store.record_delivery("d-1", "issues", "labeled", trigger())
    stop = asyncio.Event()
    worker = asyncio.create_task(pool.run(stop))
    try:
        await started.wait()
        before = await backend.store.get(accepted.run_id)
        database.failures = 6  # heartbeats (and claims) fail for a while
        await until(lambda: database.failures == 0)
        assert before is not None and before.heartbeat_at is not None

        async def renewed() -> bool:
            run = await backend.store.get(accepted.run_id)
            return run is not None and (run.heartbeat_at or 0) > (before.heartbeat_at or 0)

        async with asyncio.timeout(10):
            while not await renewed():
                await asyncio.sleep(0.02)
        # A `/honk stop` the run's worker accepted: the heartbeat is what carries it.
        await backend.store.update(accepted.run_id, cancel_requested=1)
        await asyncio.wait_for(cancelled.wait(), timeout=10)
        assert not worker.done()
    finally:
        stop.set()
        await worker
        await backend.close()


class CrashingOnce:
    """Workers whose loop ends by an error the first time, then runs until stopped."""

    def __init__(self) -> None:
        self.starts = 0

    def wake(self) -> None:
        pass

    def trouble(self, stalled_after: float) -> str | None:
        return None

    async def run(self, stop: asyncio.Event) -> None:
        self.starts += 1
        if self.starts == 1:
            raise RuntimeError("the loop broke (injected)")
        await stop.wait()


async def test_a_worker_loop_ended_by_an_error_is_started_again_and_healthz_says_so_meanwhile(
    tmp_path: Path,
) -> None:
    from honk_app.redact import Redactor
    from honk_app.settings import load_settings
    from honk_app.web.app import Live
    from tests.unit.test_silent_calls import private_key_pem

    workers = CrashingOnce()

    class OneWorkerBackend:
        store = None

        def workers(self, *args: object, **options: object) -> CrashingOnce:
            return workers

    settings = load_settings({"HONK_DATA_DIR": str(tmp_path), "APP_ID": "1",
                              "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": "s"})
    live = Live(settings, OneWorkerBackend(), Redactor([]), with_worker=True)  # type: ignore[arg-type]
    live.start()
    try:
        await until(lambda: workers.starts == 1)
        assert live.worker_trouble() == "the worker loop of this process is not running"
        await until(lambda: workers.starts == 2)
        assert live.worker_trouble() is None
    finally:
        await live.stop()
