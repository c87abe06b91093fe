"""The run record and its store: deliveries seen, runs queued, claimed, finished.

A run is one piece of work for one issue or pull request. Its `lock_key` (`owner/repo#N`)
makes runs of the same issue/PR execute one after another, in the order they arrived.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from honk_app.db import Database
from honk_app.triggers import Trigger

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    action TEXT,
    received_at REAL NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    repo TEXT NOT NULL,
    number INTEGER NOT NULL,
    lock_key TEXT NOT NULL,
    installation_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    detail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    created_at REAL NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    started_at REAL,
    heartbeat_at REAL,
    finished_at REAL,
    status_comment_id INTEGER,
    branch TEXT,
    pushed_sha TEXT,
    pr_number INTEGER,
    report TEXT,
    turns INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state, lock_key, id);
CREATE INDEX IF NOT EXISTS runs_lock_key ON runs (lock_key, state);
"""


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATES = (RunState.QUEUED, RunState.RUNNING)
MAX_ATTEMPTS = 3


@dataclass
class Run:
    id: int
    delivery_id: str
    kind: str
    repo: str
    number: int
    lock_key: str
    installation_id: int
    sender: str
    trigger: str
    state: str
    outcome: str | None
    detail: str | None
    attempts: int
    cancel_requested: int
    worker_id: str | None
    created_at: float
    not_before: float
    started_at: float | None
    heartbeat_at: float | None
    finished_at: float | None
    status_comment_id: int | None
    branch: str | None
    pushed_sha: str | None
    pr_number: int | None
    report: str | None
    turns: int
    input_tokens: int
    output_tokens: int
    cost_usd: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    @property
    def trigger_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.trigger)
        return data


@dataclass(frozen=True)
class Accepted:
    """What the request path learned from storing a delivery."""

    duplicate: bool
    run_id: int | None = None
    cancelled: int = 0


class RunStore:
    """The runs and deliveries, through the database's writer thread."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_delivery(
        self, delivery_id: str, event: str, action: str | None, trigger: Trigger | None
    ) -> Accepted:
        """Dedupe by delivery id, then persist the run (or the stop) in the same commit."""

        def op(conn: sqlite3.Connection) -> Accepted:
            now = time.time()
            outcome = "ignored" if trigger is None else trigger.kind
            inserted = conn.execute(
                "INSERT INTO deliveries (id, event, action, received_at, outcome)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (delivery_id, event, action, now, outcome),
            ).rowcount
            if not inserted:
                return Accepted(duplicate=True)
            if trigger is None:
                return Accepted(duplicate=False)
            if trigger.kind == "stop":
                return Accepted(duplicate=False, cancelled=_request_cancel(conn, trigger.lock_key))
            run_id = conn.execute(
                "INSERT INTO runs (delivery_id, kind, repo, number, lock_key, installation_id,"
                " sender, trigger, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (
                    delivery_id,
                    trigger.kind,
                    trigger.repo,
                    trigger.number,
                    trigger.lock_key,
                    trigger.installation_id,
                    trigger.sender,
                    json.dumps(trigger.to_json()),
                    RunState.QUEUED,
                    now,
                ),
            ).fetchone()[0]
            return Accepted(duplicate=False, run_id=run_id)

        return await self.db.call(op)

    async def claim(self, worker_id: str) -> Run | None:
        """Take the oldest queued run whose issue/PR has no run in flight."""

        def op(conn: sqlite3.Connection) -> Run | None:
            now = time.time()
            row = conn.execute(
                "UPDATE runs SET state = ?, worker_id = ?, heartbeat_at = ?,"
                " started_at = COALESCE(started_at, ?), attempts = attempts + 1"
                " WHERE id = (SELECT r.id FROM runs r WHERE r.state = ?"
                "   AND r.not_before <= ? AND NOT EXISTS (SELECT 1 FROM runs o"
                "     WHERE o.lock_key = r.lock_key"
                "     AND (o.state = ? OR (o.state = ? AND o.id < r.id)))"
                "   ORDER BY r.id LIMIT 1)"
                " RETURNING *",
                (RunState.RUNNING, worker_id, now, now, RunState.QUEUED, now, RunState.RUNNING,
                 RunState.QUEUED),
            ).fetchone()
            return Run.from_row(row) if row else None

        return await self.db.call(op)

    async def heartbeat(self, run_id: int, worker_id: str) -> bool:
        """Extend the run's lease; True if someone asked to stop it (or it was taken away)."""

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND worker_id = ? AND state = ?"
                " RETURNING cancel_requested",
                (time.time(), run_id, worker_id, RunState.RUNNING),
            ).fetchone()
            return row is None or bool(row[0])

        return await self.db.call(op)

    async def requeue_stale(self, lease_seconds: float, dead_workers: tuple[str, ...] = ()) -> int:
        """Give back runs whose worker stopped renewing its lease (or is known dead)."""

        def op(conn: sqlite3.Connection) -> int:
            cutoff = time.time() - lease_seconds
            marks = ",".join("?" * len(dead_workers)) or "NULL"
            failed = conn.execute(
                "UPDATE runs SET state = ?, outcome = 'crashed', finished_at = ?,"
                " detail = 'Honk stopped unexpectedly during this run too many times.'"
                " WHERE state = ? AND attempts >= ?"
                f" AND (heartbeat_at < ? OR worker_id IN ({marks}))",
                (RunState.FAILED, time.time(), RunState.RUNNING, MAX_ATTEMPTS, cutoff,
                 *dead_workers),
            ).rowcount
            requeued = conn.execute(
                "UPDATE runs SET state = ?, worker_id = NULL"
                f" WHERE state = ? AND (heartbeat_at < ? OR worker_id IN ({marks}))",
                (RunState.QUEUED, RunState.RUNNING, cutoff, *dead_workers),
            ).rowcount
            return failed + requeued

        return await self.db.call(op)

    async def retry_later(self, run_id: int, delay_seconds: float, detail: str) -> None:
        """Hand the run back to the queue, not to be claimed before the delay has passed."""
        await self.update(run_id, state=RunState.QUEUED, worker_id=None, detail=detail,
                          not_before=time.time() + delay_seconds)

    async def update(self, run_id: int, **values: Any) -> None:
        unknown = set(values) - _COLUMNS
        if unknown:
            raise ValueError(f"not run columns: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in values)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))

        await self.db.call(op)

    async def finish(self, run_id: int, state: RunState, outcome: str, detail: str) -> None:
        await self.update(
            run_id, state=state, outcome=outcome, detail=detail, finished_at=time.time()
        )

    async def get(self, run_id: int) -> Run | None:
        def op(conn: sqlite3.Connection) -> Run | None:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            return Run.from_row(row) if row else None

        return await self.db.call(op)

    async def latest_for(self, lock_key: str, *, exclude: int) -> Run | None:
        """The newest earlier run of the same issue/PR (to reuse its branch and comment)."""

        def op(conn: sqlite3.Connection) -> Run | None:
            row = conn.execute(
                "SELECT * FROM runs WHERE lock_key = ? AND id < ? ORDER BY id DESC LIMIT 1",
                (lock_key, exclude),
            ).fetchone()
            return Run.from_row(row) if row else None

        return await self.db.call(op)

    async def recent(self, limit: int = 100) -> list[Run]:
        def op(conn: sqlite3.Connection) -> list[Run]:
            rows = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
            return [Run.from_row(row) for row in rows]

        return await self.db.call(op)

    async def running_workers(self) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT DISTINCT worker_id FROM runs WHERE state = ? AND worker_id IS NOT NULL",
                (RunState.RUNNING,),
            )
            return [row[0] for row in rows]

        return await self.db.call(op)

    async def queue_depth(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT count(*) FROM runs WHERE state = ?", (RunState.QUEUED,))
            return int(row.fetchone()[0])

        return await self.db.call(op)

    async def of_repos(
        self, repos: Collection[str] | None, *, limit: int = 100, since: float = 0.0
    ) -> list[Run]:
        """The newest runs of these repositories (None: of all), created at or after `since`."""
        if repos is not None and not repos:
            return []

        def op(conn: sqlite3.Connection) -> list[Run]:
            where = "created_at >= ?"
            params: list[Any] = [since]
            if repos is not None:
                where += f" AND repo IN ({','.join('?' * len(repos))})"
                params += list(repos)
            rows = conn.execute(
                f"SELECT * FROM runs WHERE {where} ORDER BY id DESC LIMIT ?", (*params, limit)
            )
            return [Run.from_row(row) for row in rows]

        return await self.db.call(op)


_COLUMNS = {f.name for f in fields(Run)} - {"id"}


def _request_cancel(conn: sqlite3.Connection, lock_key: str) -> int:
    now = time.time()
    queued = conn.execute(
        "UPDATE runs SET state = ?, outcome = 'stopped', detail = ?, finished_at = ?"
        " WHERE lock_key = ? AND state = ?",
        (RunState.CANCELLED, "Stopped by /honk stop before it started.", now, lock_key,
         RunState.QUEUED),
    ).rowcount
    running = conn.execute(
        "UPDATE runs SET cancel_requested = 1 WHERE lock_key = ? AND state = ?",
        (lock_key, RunState.RUNNING),
    ).rowcount
    return queued + running
