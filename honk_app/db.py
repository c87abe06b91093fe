"""The embedded SQLite database, written by one thread with group commit.

Every operation is a function of a connection. The writer thread takes whatever operations
are waiting, runs them in one transaction (each inside its own savepoint, so one failing
operation does not undo its neighbours) and commits once with `synchronous=FULL`. A
webhook delivery is therefore durable before it is answered, at the cost of one fsync per
batch rather than per delivery.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import structlog

log = structlog.get_logger()

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]

MAX_BATCH = 256


class DatabaseUnavailable(Exception):
    """The database cannot be written now; the caller should answer 503, not lose data."""


class Database:
    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._ops: queue.SimpleQueue[tuple[Operation[Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def start(self, schema: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(schema, ready), name="honk-db", daemon=True
        )
        self._thread.start()
        ready.result()

    def close(self) -> None:
        if self._thread is not None:
            self._ops.put(None)
            self._thread.join()
            self._thread = None

    async def call(self, op: Operation[T]) -> T:
        return await asyncio.wrap_future(self.submit(op))

    def call_sync(self, op: Operation[T]) -> T:
        return self.submit(op).result()

    def submit(self, op: Operation[T]) -> Future[T]:
        if self._thread is None:
            raise DatabaseUnavailable("the database is not open")
        future: Future[T] = Future()
        self._ops.put((op, future))
        return future

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _serve(self, schema: str, ready: Future[None]) -> None:
        try:
            conn = self._connect()
            conn.executescript(schema)
        except Exception as error:
            ready.set_exception(error)
            return
        ready.set_result(None)
        while True:
            first = self._ops.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._ops.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._ops.put(None)
                    break
                batch.append(item)
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[tuple[Operation[Any], Future[Any]]]
    ) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, future in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = op(conn)
                except Exception as error:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, False, error))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((future, True, result))
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            log.error("database batch failed", error=str(error), size=len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = DatabaseUnavailable(f"the database could not commit: {error}")
            for _, future in batch:
                future.set_exception(failure)
            return
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
