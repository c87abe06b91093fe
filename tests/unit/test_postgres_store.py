"""One run store, two databases: the same operations on SQLite and on the real PostgreSQL.

On PostgreSQL a stored run also has its procrastinate job, written in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from honk_app.models import RunState, Trigger
from honk_app.store.db import DatabaseUnavailable
from honk_app.store.runs import MAX_ATTEMPTS, RETENTION_SECONDS
from honk_app.workers.backend import Backend, PostgresBackend, SQLiteBackend
from honk_sim.loopback import free_port
from tests.postgres import fresh_schema, rows

REPO = "octo/calculator"

pytestmark = pytest.mark.anyio  # on asyncio: conftest's anyio_backend


def task(number: int = 7, kind: str = "task") -> Trigger:
    return Trigger(kind=kind, repo=REPO, number=number, installation_id=2**40,  # type: ignore[arg-type]
                   sender="mona", instruction="fix it")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        opened: Backend = SQLiteBackend(tmp_path / "honk.db")
        await opened.start()
        yield opened
        await opened.close()
        return
    with fresh_schema() as url:
        opened = PostgresBackend(url)
        await opened.start(wait=False)
        yield opened
        await opened.close()


async def test_the_schema_is_created_once_and_recorded(backend: Backend) -> None:
    assert await backend.start(wait=False) == []  # the fixture's start applied everything
    assert await backend.store.migrate() == []


async def test_a_delivery_is_stored_once_with_its_run(backend: Backend) -> None:
    store = backend.store
    first = await store.record_delivery("d-1", "issues", "labeled", task())
    again = await store.record_delivery("d-1", "issues", "labeled", task())
    assert not first.duplicate and first.run_id is not None
    assert again.duplicate and again.run_id is None
    run = await store.get(first.run_id)
    assert run is not None
    assert (run.state, run.lock_key, run.installation_id) == ("queued", f"{REPO}#7", 2**40)
    assert run.trigger_data["instruction"] == "fix it"
    assert await store.queue_depth() == 1


async def test_start_heartbeat_and_hand_back(backend: Backend) -> None:
    store = backend.store
    run_id = (await store.record_delivery("d-1", "issues", "labeled", task())).run_id
    assert run_id is not None
    run = await store.start(run_id, "host:1:a")
    assert run is not None
    assert (run.state, run.attempts, run.worker_id) == ("running", 1, "host:1:a")
    assert await store.heartbeat(run_id, "host:1:a") is False
    assert await store.heartbeat(run_id, "host:2:b") is True, "not this worker's run"
    assert await store.release_if_stale(run_id, lease_seconds=60) is False, "its lease is fresh"
    assert await store.hand_back(run_id, "host:2:b") is False
    assert await store.hand_back(run_id, "host:1:a") is True
    again = await store.start(run_id, "host:2:b")
    assert again is not None and (again.attempts, again.worker_id) == (2, "host:2:b")


async def test_a_run_whose_lease_ran_out_is_released_then_failed_after_too_many(
    backend: Backend,
) -> None:
    store = backend.store
    run_id = (await store.record_delivery("d-1", "issues", "labeled", task())).run_id
    assert run_id is not None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await store.start(run_id, f"host:{attempt}:x") is not None
        await store.update(run_id, heartbeat_at=time.time() - 120)
        assert await store.release_if_stale(run_id, lease_seconds=60) is True
    run = await store.get(run_id)
    assert run is not None and (run.state, run.outcome) == ("failed", "crashed")
    assert await store.start(run_id, "host:9:z") is None, "an ended run is not started again"


async def test_stop_cancels_the_waiting_run_and_flags_the_running_one(backend: Backend) -> None:
    store = backend.store
    running = (await store.record_delivery("d-1", "issues", "labeled", task())).run_id
    waiting = (await store.record_delivery("d-2", "issue_comment", "created", task())).run_id
    assert running is not None and waiting is not None
    await store.start(running, "host:1:a")
    stop = await store.record_delivery("d-3", "issue_comment", "created", task(kind="stop"))
    assert stop.stop_requested and stop.run_id is None
    assert await store.heartbeat(running, "host:1:a") is False  # nothing until a worker agrees
    [request] = await store.pending_stops(f"{REPO}#7", since=0)
    assert await store.apply_stop(request) == 2
    assert await store.pending_stops(f"{REPO}#7", since=0) == []
    assert await store.heartbeat(running, "host:1:a") is True
    waited = await store.get(waiting)
    assert waited is not None and (waited.state, waited.outcome) == ("cancelled", "stopped")
    assert await store.start(waiting, "host:1:a") is None
    latest = await store.latest_for(f"{REPO}#7", exclude=waiting + 1)
    assert latest is not None and latest.id == waiting
    assert [run.id for run in await store.of_repos([REPO])] == [waiting, running]
    assert await store.of_repos(["other/repo"]) == []


async def test_each_run_gets_one_job_locked_by_its_issue(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url)
    await backend.start(wait=False)
    try:
        first = await backend.store.record_delivery("d-1", "issues", "labeled", task(7))
        await backend.store.record_delivery("d-1", "issues", "labeled", task(7))
        second = await backend.store.record_delivery("d-2", "issues", "labeled", task(8))
        await backend.store.record_delivery("d-3", "issues", "labeled", None)
    finally:
        await backend.close()
    jobs = rows(postgres_url, "SELECT * FROM procrastinate_jobs ORDER BY id")
    assert [(job["args"], job["lock"], job["queueing_lock"], job["status"]) for job in jobs] == [
        ({"run_id": first.run_id}, f"{REPO}#7", None, "todo"),
        ({"run_id": second.run_id}, f"{REPO}#8", None, "todo"),
    ]
    assert all(job["task_name"] == "honk.run" and job["queue_name"] == "runs" for job in jobs)


async def test_the_same_delivery_stored_by_two_web_processes_at_once_is_one_run(
    postgres_url: str,
) -> None:
    webs = [PostgresBackend(postgres_url) for _ in range(2)]
    await asyncio.gather(*(web.start(wait=False) for web in webs))  # migrations take turns
    try:
        for n in range(20):
            answers = await asyncio.gather(*(
                web.store.record_delivery(f"d-{n}", "issues", "labeled", task(n)) for web in webs
            ))
            assert sorted(a.duplicate for a in answers) == [False, True]
    finally:
        await asyncio.gather(*(web.close() for web in webs))
    assert len(rows(postgres_url, "SELECT id FROM runs")) == 20
    assert len(rows(postgres_url, "SELECT id FROM procrastinate_jobs")) == 20


async def test_an_unreachable_server_is_unavailable_not_an_error() -> None:
    backend = PostgresBackend(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    await backend.db.start()
    with pytest.raises(DatabaseUnavailable):
        await backend.store.record_delivery("d-1", "issues", "labeled", task())
    await backend.close()


async def test_a_final_state_github_did_not_take_is_owed_until_paid(backend: Backend) -> None:
    store = backend.store
    crashed = (await store.record_delivery("d-1", "issues", "labeled", task(1))).run_id
    done = (await store.record_delivery("d-2", "issues", "labeled", task(2))).run_id
    assert crashed is not None and done is not None
    await store.start(crashed, "host:1:a")
    await store.update(crashed, attempts=MAX_ATTEMPTS, heartbeat_at=0)
    assert await store.requeue_stale(lease_seconds=60) == 1
    await store.start(done, "host:1:a")
    await store.finish(done, RunState.DONE, "success", "Opened #3")
    await store.owe_status(done, "🚀 Opened #3")
    owed = await store.owed_statuses()
    assert [(r.id, r.outcome, r.final_status) for r in owed] == [
        (crashed, "crashed", None), (done, "success", "🚀 Opened #3")
    ]
    await store.status_paid(crashed)
    assert [r.id for r in await store.owed_statuses()] == [done]


async def test_a_replay_under_a_new_delivery_id_is_a_duplicate(backend: Backend) -> None:
    store = backend.store
    first = await store.record_delivery("d-1", "issue_comment", "created", task(),
                                        event_key="issue_comment.created:99")
    replay = await store.record_delivery("d-2", "issue_comment", "created", task(),
                                         event_key="issue_comment.created:99")
    other = await store.record_delivery("d-3", "issue_comment", "created", task(),
                                        event_key="issue_comment.created:100")
    assert first.run_id is not None and not first.duplicate
    assert replay.duplicate and replay.run_id is None
    assert other.run_id is not None and not other.duplicate
    assert [run.id for run in await store.of_repos([REPO])] == [other.run_id, first.run_id]
    # Ignored deliveries carry no key, and any number of them is kept.
    for n in range(3):
        assert not (await store.record_delivery(f"i-{n}", "ping", None, None)).duplicate


async def test_stop_requests_are_for_runs_queued_before_them(backend: Backend) -> None:
    store = backend.store
    await store.record_delivery("d-1", "issue_comment", "created", task(kind="stop"))
    [early] = await store.pending_stops(f"{REPO}#7", since=0)
    later = (await store.record_delivery("d-2", "issues", "labeled", task())).run_id
    assert later is not None
    run = await store.get(later)
    assert run is not None
    # The stop came before this run was queued: it is not this run's.
    assert await store.pending_stops(run.lock_key, since=run.created_at) == []
    assert await store.apply_stop(early) == 0
    fresh = await store.get(later)
    assert fresh is not None and fresh.state == "queued"
    await store.record_delivery("d-3", "issue_comment", "created", task(kind="stop"))
    [refused] = await store.pending_stops(run.lock_key, since=run.created_at)
    await store.refuse_stop(refused)
    assert await store.pending_stops(run.lock_key, since=0) == []


async def test_a_refusal_is_remembered_per_person_and_issue(backend: Backend) -> None:
    store = backend.store
    assert await store.refused_before(f"{REPO}#7", "stranger") is False
    await store.remember_refusal(f"{REPO}#7", "stranger")
    await store.remember_refusal(f"{REPO}#7", "stranger")  # again: no error, one row
    assert await store.refused_before(f"{REPO}#7", "stranger") is True
    assert await store.refused_before(f"{REPO}#8", "stranger") is False
    assert await store.refused_before(f"{REPO}#7", "other") is False


async def test_old_deliveries_and_their_keys_are_pruned(backend: Backend) -> None:
    store = backend.store
    await store.record_delivery("d-1", "issue_comment", "created", task(),
                                event_key="issue_comment.created:1")

    async def age(sql):  # type: ignore[no-untyped-def]
        await sql.execute("UPDATE deliveries SET received_at = received_at - ?",
                          (RETENTION_SECONDS + 60,))

    await store.db.call(age)
    store._prune_after = 0.0  # the next delivery prunes (at most once an hour otherwise)
    await store.record_delivery("d-2", "ping", None, None)

    async def ids(sql):  # type: ignore[no-untyped-def]
        return sorted(row["id"] for row in await sql.execute("SELECT id FROM deliveries"))

    assert await store.db.call(ids) == ["d-2"]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_a_database_of_the_previous_version_is_brought_up_to_date(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database made before event keys existed keeps its deliveries and gains the key."""
    from honk_app.store import migrations

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[Backend]:
        backend: Backend = (SQLiteBackend(tmp_path / "honk.db") if dialect == "sqlite"
                            else PostgresBackend(url))
        await backend.start(wait=False)
        yield backend
        await backend.close()

    url = ""
    with contextlib.ExitStack() as stack:
        if dialect == "postgresql":
            url = stack.enter_context(fresh_schema())
        with monkeypatch.context() as patched:
            patched.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:-1])  # all but ours
            async with opened() as old:
                old_store = old.store

                async def insert(sql):  # type: ignore[no-untyped-def]
                    await sql.execute("INSERT INTO deliveries (id, event, action, received_at,"
                                      " outcome) VALUES ('old-1', 'ping', NULL, ?, 'ignored')",
                                      (time.time(),))

                await old_store.db.call(insert)
        async with opened() as new:
            assert await new.store.migrate() == []  # start() applied the new one
            replay = await new.store.record_delivery("d-2", "issue_comment", "created", task(),
                                                     event_key="issue_comment.created:5")
            assert replay.run_id is not None
            assert (await new.store.record_delivery("old-1", "ping", None, None)).duplicate


_HOLD_TABLE_LOCK = """
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
    print("locked", flush=True)
    sys.stdin.read()
"""


async def test_a_table_locked_by_another_process_answers_unavailable_in_time_then_works(
    postgres_url: str,
) -> None:
    import subprocess
    import sys

    from honk_app.store.db import REQUEST_DEADLINE_SECONDS

    backend = PostgresBackend(postgres_url)
    await backend.start(wait=False)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_TABLE_LOCK, postgres_url],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="did not answer within"):
            await backend.store.record_delivery("d-1", "issues", "labeled", task())
        # Before, the INSERT waited on the lock for as long as it was held.
        assert time.monotonic() - started < REQUEST_DEADLINE_SECONDS + 2
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    try:
        # The cancelled statement left no broken connection in the pool.
        answers = [await backend.store.record_delivery(f"d-{n}", "issues", "labeled", task(n))
                   for n in range(1, 4)]
        assert [a.duplicate for a in answers] == [False, False, False]
    finally:
        await backend.close()
    assert len(rows(postgres_url, "SELECT id FROM runs")) == 3
