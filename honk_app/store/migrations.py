"""The schema of both databases, and every change to it, applied once and recorded.

Honk's own tables (deliveries, runs, stop requests, refusals) change through `MIGRATIONS`,
oldest first, recorded by name in `honk_migrations`; procrastinate's tables (PostgreSQL
only) through the SQL files procrastinate ships, recorded under `procrastinate/`. Every
process applies what is missing when it starts, under a lock (`db.lock_schema`), and
`honk migrate` does it alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from honk_app.store.db import Sql, applied_migrations, ddl, lock_schema, record_migration

if TYPE_CHECKING:
    from honk_app.store.postgres import PostgresDatabase

log = structlog.get_logger()

_DELIVERIES_AND_RUNS = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    action TEXT,
    received_at DOUBLE PRECISION NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id {id},
    delivery_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    repo TEXT NOT NULL,
    number BIGINT NOT NULL,
    lock_key TEXT NOT NULL,
    installation_id BIGINT NOT NULL,
    sender TEXT NOT NULL,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    detail TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    worker_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    started_at DOUBLE PRECISION,
    heartbeat_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    status_comment_id BIGINT,
    branch TEXT,
    pushed_sha TEXT,
    pr_number BIGINT,
    report TEXT,
    turns BIGINT NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state, lock_key, id);
CREATE INDEX IF NOT EXISTS runs_lock_key ON runs (lock_key, state);
"""

# A run's final state that GitHub has not accepted yet (its status comment still says
# "working"): `final_status` is the body to send (NULL: rendered from outcome and detail).
_STATUS_OWED = """
ALTER TABLE runs ADD COLUMN status_owed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN final_status TEXT;
CREATE INDEX IF NOT EXISTS runs_status_owed ON runs (status_owed);
"""

# What a delivery is, beside its id (see `triggers.event_key`): a signed delivery posted
# again under a new X-GitHub-Delivery has the same key and queues nothing. Requests to stop
# wait here until a worker has checked who sent them; refusals are remembered so that a
# person is told once per issue, not at every attempt.
_EVENT_KEYS_STOPS_REFUSALS = """
ALTER TABLE deliveries ADD COLUMN event_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_event_key ON deliveries (event_key);
CREATE INDEX IF NOT EXISTS deliveries_received_at ON deliveries (received_at);
CREATE TABLE IF NOT EXISTS stop_requests (
    id {id},
    delivery_id TEXT NOT NULL,
    lock_key TEXT NOT NULL,
    sender TEXT NOT NULL,
    comment_id BIGINT,
    received_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stop_requests_lock_key ON stop_requests (lock_key, state);
CREATE TABLE IF NOT EXISTS refusals (
    lock_key TEXT NOT NULL,
    login TEXT NOT NULL,
    refused_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (lock_key, login)
);
"""

# Schema changes, oldest first, each applied once and recorded in honk_migrations. Append
# new ones; never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("honk/0001-deliveries-and-runs", _DELIVERIES_AND_RUNS),
    ("honk/0002-status-owed", _STATUS_OWED),
    ("honk/0003-event-keys-stops-refusals", _EVENT_KEYS_STOPS_REFUSALS),
)


async def migrate_runs(sql: Sql) -> list[str]:
    """Apply Honk's schema changes this database lacks; their names."""
    await lock_schema(sql)
    done = await applied_migrations(sql)
    applied = []
    for name, template in MIGRATIONS:
        if name in done:
            continue
        for statement in ddl(template, sql.dialect).split(";"):
            if statement.strip():
                await sql.execute(statement)
        await record_migration(sql, name)
        applied.append(name)
    return applied


_PROCRASTINATE = "procrastinate/"


async def migrate_jobs(db: PostgresDatabase) -> list[str]:
    """Install procrastinate's schema, or apply the migrations it shipped since."""

    from procrastinate.schema import SchemaManager

    from honk_app.store.postgres import PostgresSql

    async def op(sql: Sql) -> list[str]:
        assert isinstance(sql, PostgresSql)
        await lock_schema(sql)
        done = await applied_migrations(sql)
        files = sorted(Path(SchemaManager.get_migrations_path()).glob("*.sql"))
        installed = (await sql.execute("SELECT to_regclass('procrastinate_jobs') AS t")).first()
        applied: list[str] = []
        if installed is None or installed["t"] is None:
            await sql.connection.execute(SchemaManager.get_schema())  # type: ignore[arg-type]
            applied.append(f"{_PROCRASTINATE}schema.sql")
            pending = [f.name for f in files]  # the schema includes every one of them
        elif not any(name.startswith(_PROCRASTINATE) for name in done):
            log.warning("procrastinate's schema was installed outside Honk; taking it as current")
            pending = [f.name for f in files]
        else:
            pending = []
            for file in files:
                if f"{_PROCRASTINATE}{file.name}" not in done:
                    await sql.connection.execute(file.read_text())  # type: ignore[arg-type]
                    applied.append(f"{_PROCRASTINATE}{file.name}")
        for name in {*applied, *(f"{_PROCRASTINATE}{name}" for name in pending)}:
            await record_migration(sql, name)
        return applied

    return await db.call(op)
