"""The embedded SQLite database, with group commit.

Every operation is a function of a connection. Operations that arrive while a commit is
under way wait for the next batch; a batch runs in one transaction (each operation inside
its own savepoint, so one failing operation does not undo its neighbours) and commits
once with `synchronous=FULL`. A webhook delivery is therefore durable before it is
answered, at the cost of one fsync per batch rather than per delivery.

The statements run on the event loop's thread (they take microseconds, and running them
there avoids handing the GIL back and forth per operation); the two calls that can wait —
taking the write lock, when another process holds it, and the fsync of COMMIT — run in a
thread, so the loop keeps serving requests meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

log = structlog.get_logger()

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]

BUSY_TIMEOUT_MS = 10_000
CHECKPOINT_INTERVAL_SECONDS = 1.0


class DatabaseUnavailable(Exception):
    """The database cannot be written now; the caller should answer 503, not lose data."""


class Database:
    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Operation[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()

    def start(self, schema: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.executescript(schema)
        # Checkpoints copy the WAL back into the database file and fsync it; done by the
        # committing connection they would stall a batch of deliveries now and then, so a
        # background thread does them instead (PASSIVE: writers are never blocked).
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn = conn
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, daemon=True,
                                              name="honk-db-checkpoint")
        self._checkpointer.start()

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            while not self._closing.wait(CHECKPOINT_INTERVAL_SECONDS):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as error:
            log.warning("database checkpoint failed", error=str(error))
        finally:
            conn.close()

    async def call(self, op: Operation[T]) -> T:
        if self._conn is None:
            raise DatabaseUnavailable("the database is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._run_batch(batch)
        finally:
            self._flusher = None

    async def _run_batch(self, batch: list[tuple[Operation[Any], asyncio.Future[Any]]]) -> None:
        conn = self._conn
        assert conn is not None
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        try:
            await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
            for op, future in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = op(conn)
                except sqlite3.OperationalError:
                    raise
                except Exception as error:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((future, False, error))
                else:
                    outcomes.append((future, True, result))
                conn.execute("RELEASE op")
            await asyncio.to_thread(conn.execute, "COMMIT")
        except sqlite3.Error as error:
            log.error("database batch failed", error=str(error), size=len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = DatabaseUnavailable(f"the database could not commit: {error}")
            outcomes = [(future, False, failure) for _, future in batch]
        for future, ok, value in outcomes:
            if future.done():  # its caller was cancelled
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
