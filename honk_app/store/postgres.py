"""PostgreSQL for the run store: a psycopg 3 connection pool, one transaction per operation.

The operations are the run store's, written once for both databases (see `honk_app.store.db`);
here `?` placeholders become psycopg's and rows come back as dicts.

Two ways to meet an outage. The request path is impatient: if no connection comes within
a few seconds it raises DatabaseUnavailable and the webhook answers 503, so GitHub (or
the operator) can redeliver. A worker is patient: it retries the operation until the
database answers again, so a run in flight waits out a restart instead of failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from honk_app.store.db import DatabaseClosed, DatabaseUnavailable, Operation, Rows

log = structlog.get_logger()

T = TypeVar("T")

REQUEST_TIMEOUT_SECONDS = 3.0
WORKER_PATIENCE_SECONDS = 15 * 60.0
RETRY_SECONDS = 1.0


class PostgresSql:
    """One transaction on one connection; `connection` is there for procrastinate's defer."""

    dialect = "postgresql"

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self.connection = connection

    async def execute(self, query: str, params: Sequence[Any] = ()) -> Rows:
        async with self.connection.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(_placeholders(query), tuple(params))
            rows = await cursor.fetchall() if cursor.description else []
            return Rows(rows, cursor.rowcount)


def _placeholders(query: str) -> str:
    # The shared queries hold no literal `?` or `%`; escape `%` all the same.
    return query.replace("%", "%%").replace("?", "%s")


def new_pool(url: str, *, name: str, max_size: int, timeout: float) -> AsyncConnectionPool:
    """A pool that checks a connection before lending it, so a restarted server's dead
    connections are replaced rather than handed out."""
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        timeout=timeout,
        name=name,
        open=False,
        check=AsyncConnectionPool.check_connection,
    )


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: AsyncConnectionPool, *, patience_seconds: float = 0.0) -> None:
        """`patience_seconds`: how long an operation keeps retrying while the server cannot
        be reached (0: fail at once with DatabaseUnavailable)."""
        self.pool = pool
        self._patience = patience_seconds

    @classmethod
    def for_requests(cls, url: str, *, max_size: int = 10) -> PostgresDatabase:
        pool = new_pool(url, name="honk-web", max_size=max_size, timeout=REQUEST_TIMEOUT_SECONDS)
        return cls(pool)

    async def start(self) -> None:
        """Open the pool without waiting for the server: the first operation will wait."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def call(self, op: Operation[T]) -> T:
        first_failure: float | None = None
        while True:
            if self.pool.closed:
                raise DatabaseClosed("the database is not open")
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    return await op(PostgresSql(conn))
            except Exception as error:
                if not is_unreachable(error):
                    raise
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    if self._patience:
                        log.warning("waiting for PostgreSQL", error=_first_line(error))
                if now - first_failure >= self._patience:
                    raise DatabaseUnavailable(
                        f"PostgreSQL cannot be reached: {_first_line(error)}"
                    ) from error
            await asyncio.sleep(RETRY_SECONDS)


def is_unreachable(error: BaseException) -> bool:
    """True for a lost or refused connection (also when a library wrapped it)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, psycopg.OperationalError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.strip().splitlines()[0]
