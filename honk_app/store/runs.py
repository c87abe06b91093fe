"""The run record and its store: deliveries seen, runs queued, claimed, finished.

A run is one piece of work for one issue or pull request. Its `lock_key` (`owner/repo#N`)
makes runs of the same issue/PR execute one after another, in the order they arrived.

One store for both databases: every query below runs as written on SQLite and on
PostgreSQL (see `honk_app.store.db` for the little that differs). On SQLite the runs table is
also the queue (`claim`); on PostgreSQL procrastinate's jobs are (`enqueue`, see
`honk_app.workers.jobs`), and a job's worker marks its run with `start`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, fields
from typing import Any

from honk_app.models import ACTIVE_STATES, Outcome, Run, RunState, Trigger
from honk_app.store import migrations
from honk_app.store.db import Sql, Storage

# How long deliveries (and their event keys), stop requests and refusals are kept. A
# delivery whose event is older than this is not acted on (`triggers.event_time`), so a
# replay cannot outlive the key that would have caught it. GitHub redelivers up to 3 days.
RETENTION_SECONDS = 7 * 24 * 3600.0
PRUNE_INTERVAL_SECONDS = 3600.0

# Called inside the transaction that stores a run, to queue it in the same commit.
Enqueue = Callable[[Sql, int, str], Awaitable[None]]


MAX_RUN_ID = 2**63 - 1  # BIGINT, on both databases
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Accepted:
    """What the request path learned from storing a delivery."""

    duplicate: bool
    run_id: int | None = None
    stop_requested: bool = False


@dataclass(frozen=True)
class StopRequest:
    """A `/honk stop` comment, waiting for a worker to check who sent it."""

    id: int
    delivery_id: str
    lock_key: str
    sender: str
    comment_id: int | None
    received_at: float


class RunStore:
    """The runs and deliveries, through the database's transactions."""

    def __init__(self, db: Storage, *, enqueue: Enqueue | None = None) -> None:
        self.db = db
        self._enqueue = enqueue
        self._prune_after = 0.0

    async def migrate(self) -> list[str]:
        """Create or bring up to date the tables; the names of the changes applied."""

        return await self.db.call(migrations.migrate_runs)

    async def record_delivery(
        self,
        delivery_id: str,
        event: str,
        action: str | None,
        trigger: Trigger | None,
        *,
        event_key: str | None = None,
    ) -> Accepted:
        """Dedupe by delivery id and by what the delivery is (`event_key`), then persist the
        run (or the stop request) in the same commit."""
        now = time.time()
        prune = now >= self._prune_after
        if prune:
            self._prune_after = now + PRUNE_INTERVAL_SECONDS

        async def op(sql: Sql) -> Accepted:
            if prune:
                await _prune(sql, now - RETENTION_SECONDS)
            outcome = "ignored" if trigger is None else trigger.kind
            # No conflict target: a second delivery id or a second event key both conflict.
            inserted = await sql.execute(
                "INSERT INTO deliveries (id, event, action, received_at, outcome, event_key)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (delivery_id, event, action, now, outcome, event_key),
            )
            if not inserted.rowcount:
                return Accepted(duplicate=True)
            if trigger is None:
                return Accepted(duplicate=False)
            if trigger.kind == "stop":
                await sql.execute(
                    "INSERT INTO stop_requests (delivery_id, lock_key, sender, comment_id,"
                    " received_at, state) VALUES (?, ?, ?, ?, ?, 'pending')",
                    (delivery_id, trigger.lock_key, trigger.sender, trigger.comment_id, now),
                )
                return Accepted(duplicate=False, stop_requested=True)
            row = (await sql.execute(
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
            )).first()
            run_id = int(row["id"])
            if self._enqueue is not None:
                await self._enqueue(sql, run_id, trigger.lock_key)
            return Accepted(duplicate=False, run_id=run_id)

        return await self.db.call(op)

    async def claim(self, worker_id: str) -> Run | None:
        """Take the oldest queued run whose issue/PR has no run in flight (SQLite's queue)."""

        async def op(sql: Sql) -> Run | None:
            now = time.time()
            row = (await sql.execute(
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
            )).first()
            return Run.from_row(row) if row else None

        return await self.db.call(op)

    async def start(self, run_id: int, worker_id: str) -> Run | None:
        """Mark a run as this worker's, whoever held it before (the job queue chose it).

        None if the run has ended meanwhile (stopped while it waited, or finished by a
        worker that died before it could say so to the queue).
        """

        async def op(sql: Sql) -> Run | None:
            now = time.time()
            row = (await sql.execute(
                "UPDATE runs SET state = ?, worker_id = ?, heartbeat_at = ?,"
                " started_at = COALESCE(started_at, ?), attempts = attempts + 1"
                " WHERE id = ? AND state IN (?, ?) RETURNING *",
                (RunState.RUNNING, worker_id, now, now, run_id, *ACTIVE_STATES),
            )).first()
            return Run.from_row(row) if row else None

        return await self.db.call(op)

    async def heartbeat(self, run_id: int, worker_id: str) -> bool:
        """Extend the run's lease; True if someone asked to stop it (or it was taken away)."""

        async def op(sql: Sql) -> bool:
            row = (await sql.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND worker_id = ? AND state = ?"
                " RETURNING cancel_requested",
                (time.time(), run_id, worker_id, RunState.RUNNING),
            )).first()
            return row is None or bool(row["cancel_requested"])

        return await self.db.call(op)

    async def requeue_stale(self, lease_seconds: float, dead_workers: tuple[str, ...] = ()) -> int:
        """Give back runs whose worker stopped renewing its lease (or is known dead)."""
        marks = ",".join("?" * len(dead_workers)) or "NULL"

        async def op(sql: Sql) -> int:
            stale = f"(heartbeat_at < ? OR worker_id IN ({marks}))"
            return await _give_back(sql, stale, (time.time() - lease_seconds, *dead_workers))

        return await self.db.call(op)

    async def release_if_stale(self, run_id: int, lease_seconds: float) -> bool:
        """True if no live worker holds this run: its lease ran out (it is given back, or
        failed after too many attempts), or it is not running at all."""

        async def op(sql: Sql) -> bool:
            cutoff = time.time() - lease_seconds
            stale = "id = ? AND (heartbeat_at IS NULL OR heartbeat_at < ?)"
            await _give_back(sql, stale, (run_id, cutoff))
            row = (await sql.execute(
                "SELECT state, heartbeat_at FROM runs WHERE id = ?", (run_id,)
            )).first()
            return row is None or row["state"] != RunState.RUNNING

        return await self.db.call(op)

    async def hand_back(self, run_id: int, worker_id: str) -> bool:
        """Return a run this worker holds to the queue (it is shutting down)."""

        async def op(sql: Sql) -> bool:
            changed = await sql.execute(
                "UPDATE runs SET state = ?, worker_id = NULL"
                " WHERE id = ? AND worker_id = ? AND state = ?",
                (RunState.QUEUED, run_id, worker_id, RunState.RUNNING),
            )
            return changed.rowcount > 0

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

        async def op(sql: Sql) -> None:
            await sql.execute(
                f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id)
            )

        await self.db.call(op)

    async def finish(self, run_id: int, state: RunState, outcome: Outcome, detail: str) -> None:
        await self.update(
            run_id, state=state, outcome=outcome, detail=detail, finished_at=time.time()
        )

    async def owe_status(self, run_id: int, body: str | None) -> None:
        """GitHub did not take the run's final status: keep it to send again later."""
        await self.update(run_id, status_owed=1, final_status=body)

    async def status_paid(self, run_id: int) -> None:
        await self.update(run_id, status_owed=0, final_status=None)

    async def owed_statuses(self, limit: int = 20) -> list[Run]:
        """Ended runs whose final state has not reached GitHub yet, oldest first."""
        return await self._many(
            "SELECT * FROM runs WHERE status_owed = 1 AND state IN (?, ?, ?) ORDER BY id LIMIT ?",
            (RunState.DONE, RunState.FAILED, RunState.CANCELLED, limit),
        )
    async def pending_stops(self, lock_key: str, *, since: float) -> list[StopRequest]:
        """Stop requests for this issue/PR received at or after `since`, not yet decided."""

        async def op(sql: Sql) -> list[StopRequest]:
            rows = await sql.execute(
                "SELECT id, delivery_id, lock_key, sender, comment_id, received_at"
                " FROM stop_requests WHERE lock_key = ? AND state = 'pending'"
                " AND received_at >= ? ORDER BY id",
                (lock_key, since),
            )
            return [StopRequest(**dict(row)) for row in rows]

        return await self.db.call(op)

    async def apply_stop(self, request: StopRequest) -> int:
        """A worker found the request's sender may stop: cancel the issue/PR's runs that
        were queued before it, flag the running one; how many runs it touched."""

        async def op(sql: Sql) -> int:
            await sql.execute(
                "UPDATE stop_requests SET state = 'applied' WHERE id = ?", (request.id,)
            )
            return await _request_cancel(sql, request.lock_key, request.received_at)

        return await self.db.call(op)

    async def refuse_stop(self, request: StopRequest) -> None:
        async def op(sql: Sql) -> None:
            await sql.execute(
                "UPDATE stop_requests SET state = 'refused' WHERE id = ?", (request.id,)
            )

        await self.db.call(op)

    async def refused_before(self, lock_key: str, login: str) -> bool:
        """Whether `login` was already told no on this issue/PR."""

        async def op(sql: Sql) -> bool:
            row = (await sql.execute(
                "SELECT 1 AS seen FROM refusals WHERE lock_key = ? AND login = ?",
                (lock_key, login),
            )).first()
            return row is not None

        return await self.db.call(op)

    async def remember_refusal(self, lock_key: str, login: str) -> None:
        async def op(sql: Sql) -> None:
            await sql.execute(
                "INSERT INTO refusals (lock_key, login, refused_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (lock_key, login, time.time()),
            )

        await self.db.call(op)

    async def get(self, run_id: int) -> Run | None:
        if not 0 < run_id <= MAX_RUN_ID:  # a number from a URL, beyond any run's id
            return None
        return await self._one("SELECT * FROM runs WHERE id = ?", (run_id,))

    async def latest_for(self, lock_key: str, *, exclude: int) -> Run | None:
        """The newest earlier run of the same issue/PR (to reuse its branch and comment)."""
        return await self._one(
            "SELECT * FROM runs WHERE lock_key = ? AND id < ? ORDER BY id DESC LIMIT 1",
            (lock_key, exclude),
        )

    async def running_workers(self) -> list[str]:
        async def op(sql: Sql) -> list[str]:
            rows = await sql.execute(
                "SELECT DISTINCT worker_id FROM runs WHERE state = ? AND worker_id IS NOT NULL",
                (RunState.RUNNING,),
            )
            return [row["worker_id"] for row in rows]

        return await self.db.call(op)

    async def queue_depth(self) -> int:
        async def op(sql: Sql) -> int:
            rows = await sql.execute(
                "SELECT count(*) AS queued FROM runs WHERE state = ?", (RunState.QUEUED,)
            )
            return int(rows.rows[0]["queued"])

        return await self.db.call(op)

    async def stalled_queue(self, threshold_seconds: float) -> str | None:
        """A sentence if a run has waited, due, longer than the threshold while no run
        started, renewed its lease or ended for as long; else None (for /healthz)."""

        async def op(sql: Sql) -> str | None:
            now = time.time()
            cutoff = now - threshold_seconds
            waiting = (await sql.execute(
                "SELECT count(*) AS n FROM runs WHERE state = ? AND created_at <= ?"
                " AND not_before <= ?",
                (RunState.QUEUED, cutoff, cutoff),
            )).rows[0]["n"]
            if not waiting:
                return None
            moved = (await sql.execute(
                "SELECT max(heartbeat_at) AS beat, max(finished_at) AS finished FROM runs"
            )).rows[0]
            last_move = max(moved["beat"] or 0.0, moved["finished"] or 0.0)
            if last_move > cutoff:
                return None
            return (f"{waiting} runs have waited over {threshold_seconds:g} s to start, and no"
                    " run has started, renewed its lease or ended for as long")

        return await self.db.call(op)

    async def of_repos(
        self, repos: Collection[str] | None, *, limit: int = 100, since: float = 0.0
    ) -> list[Run]:
        """The newest runs of these repositories (None: of all), created at or after `since`."""
        if repos is not None and not repos:
            return []
        where = "created_at >= ?"
        params: list[Any] = [since]
        if repos is not None:
            where += f" AND repo IN ({','.join('?' * len(repos))})"
            params += list(repos)
        return await self._many(
            f"SELECT * FROM runs WHERE {where} ORDER BY id DESC LIMIT ?", (*params, limit)
        )

    async def _one(self, query: str, params: tuple[Any, ...]) -> Run | None:
        async def op(sql: Sql) -> Run | None:
            row = (await sql.execute(query, params)).first()
            return Run.from_row(row) if row else None

        return await self.db.call(op)

    async def _many(self, query: str, params: tuple[Any, ...]) -> list[Run]:
        async def op(sql: Sql) -> list[Run]:
            return [Run.from_row(row) for row in await sql.execute(query, params)]

        return await self.db.call(op)


_COLUMNS = {f.name for f in fields(Run)} - {"id"}


async def _give_back(sql: Sql, stale: str, params: tuple[Any, ...]) -> int:
    """Requeue the running runs matching `stale`, or fail those that crashed too often."""
    # The status comment still says "working": status_owed has the sweeper say otherwise.
    failed = await sql.execute(
        "UPDATE runs SET state = ?, outcome = ?, finished_at = ?, status_owed = 1,"
        " detail = 'Honk stopped unexpectedly during this run too many times.'"
        f" WHERE state = ? AND attempts >= ? AND {stale}",
        (RunState.FAILED, Outcome.CRASHED, time.time(), RunState.RUNNING, MAX_ATTEMPTS, *params),
    )
    requeued = await sql.execute(
        f"UPDATE runs SET state = ?, worker_id = NULL WHERE state = ? AND {stale}",
        (RunState.QUEUED, RunState.RUNNING, *params),
    )
    return failed.rowcount + requeued.rowcount


async def _request_cancel(sql: Sql, lock_key: str, before: float) -> int:
    now = time.time()
    queued = await sql.execute(
        "UPDATE runs SET state = ?, outcome = ?, detail = ?, finished_at = ?"
        " WHERE lock_key = ? AND state = ? AND created_at <= ?",
        (RunState.CANCELLED, Outcome.STOPPED, "Stopped by /honk stop before it started.", now,
         lock_key, RunState.QUEUED, before),
    )
    running = await sql.execute(
        "UPDATE runs SET cancel_requested = 1 WHERE lock_key = ? AND state = ?"
        " AND created_at <= ?",
        (lock_key, RunState.RUNNING, before),
    )
    return queued.rowcount + running.rowcount


async def _prune(sql: Sql, cutoff: float) -> None:
    """Forget deliveries, stop requests and refusals older than the retention window."""
    await sql.execute("DELETE FROM deliveries WHERE received_at < ?", (cutoff,))
    await sql.execute("DELETE FROM stop_requests WHERE received_at < ?", (cutoff,))
    await sql.execute("DELETE FROM refusals WHERE refused_at < ?", (cutoff,))
