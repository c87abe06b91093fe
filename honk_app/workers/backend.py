"""The database and the job queue that DATABASE_URL chooses.

`sqlite:///…` (the default): one file, the runs table as the queue, workers in the web
process or beside it on the same machine (`honk_app.workers.pool`). `postgresql://…`: any number
of web and worker processes on any number of machines, procrastinate as the queue
(`honk_app.workers.jobs`). Either way the run store is the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from honk_app.settings import Settings
from honk_app.store.db import DatabaseUnavailable, Deadline, Patient, SQLiteDatabase
from honk_app.store.runs import RunStore
from honk_app.workers.pool import Execute, WorkerPool, new_worker_id

log = structlog.get_logger()

SQLITE_LEASE_SECONDS = 60.0
POSTGRES_LEASE_SECONDS = 30.0
START_RETRY_SECONDS = 1.0

MakeExecute = Callable[[RunStore], Execute]


class Workers(Protocol):
    def wake(self) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...

    def trouble(self, stalled_after: float) -> str | None:
        """Why this process's workers have not picked runs up for `stalled_after` seconds,
        or None (for /healthz)."""
        ...


class Backend(Protocol):
    # For the request path: every call ends within a few seconds, with DatabaseUnavailable
    # at worst. The workers get a patient view of the same database (see `honk_app.store.db`).
    store: RunStore

    async def start(self, *, wait: bool = True) -> list[str]: ...

    async def close(self) -> None: ...

    def workers(
        self,
        make_execute: MakeExecute,
        *,
        concurrency: int,
        lease_seconds: float | None = None,
        poll_seconds: float = 1.0,
    ) -> Workers: ...


def open_backend(settings: Settings) -> Backend:
    if settings.sqlite_path is not None:
        return SQLiteBackend(settings.sqlite_path)
    return PostgresBackend(settings.database_url)


class SQLiteBackend:
    def __init__(self, path: Path) -> None:
        self.db = SQLiteDatabase(path)
        self.store = RunStore(Deadline(self.db))

    async def start(self, *, wait: bool = True) -> list[str]:
        """Open the file and create or migrate the schema; the changes applied."""
        self.db.start()
        return await RunStore(Patient(self.db) if wait else self.db).migrate()

    async def close(self) -> None:
        await self.db.close()

    def workers(
        self,
        make_execute: MakeExecute,
        *,
        concurrency: int,
        lease_seconds: float | None = None,
        poll_seconds: float = 1.0,
    ) -> Workers:
        store = RunStore(Patient(self.db))
        return WorkerPool(
            store,
            make_execute(store),
            concurrency=concurrency,
            lease_seconds=lease_seconds or SQLITE_LEASE_SECONDS,
            poll_seconds=poll_seconds,
        )


class PostgresBackend:
    def __init__(self, url: str) -> None:
        # Imported here so that SQLite deployments need neither psycopg nor procrastinate.
        from honk_app.store.postgres import PostgresDatabase
        from honk_app.workers import jobs

        self.url = url
        self.db = PostgresDatabase.for_requests(url)
        enqueue = jobs.enqueuer(jobs.job_app())
        self.store = RunStore(Deadline(self.db), enqueue=enqueue)
        self._migrations = RunStore(self.db, enqueue=enqueue)

    async def start(self, *, wait: bool = True) -> list[str]:
        """Create or migrate procrastinate's schema and Honk's; the changes applied.

        With `wait`, a database that cannot be reached yet is waited for.
        """
        from honk_app.store.migrations import migrate_jobs

        await self.db.start()
        while True:
            try:
                return [*await migrate_jobs(self.db), *await self._migrations.migrate()]
            except DatabaseUnavailable as error:
                if not wait:
                    raise
                log.warning("waiting for PostgreSQL to create the schema", error=str(error))
                await asyncio.sleep(START_RETRY_SECONDS)

    async def close(self) -> None:
        await self.db.close()

    def workers(
        self,
        make_execute: MakeExecute,
        *,
        concurrency: int,
        lease_seconds: float | None = None,
        poll_seconds: float = 1.0,
    ) -> Workers:
        from honk_app.store.postgres import WORKER_PATIENCE_SECONDS, PostgresDatabase, new_pool
        from honk_app.workers import jobs

        # The workers' own pool: patient, where the request path's is quick to give up.
        pool = new_pool(
            self.url, name="honk-worker", max_size=concurrency + 4, timeout=jobs.POOL_TIMEOUT
        )
        db = PostgresDatabase(pool, patience_seconds=WORKER_PATIENCE_SECONDS)
        store = RunStore(db)
        return jobs.JobWorkers(
            db,
            store,
            make_execute(store),
            worker_id=new_worker_id(),
            concurrency=concurrency,
            lease_seconds=lease_seconds or POSTGRES_LEASE_SECONDS,
        )
