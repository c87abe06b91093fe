"""The real PostgreSQL on 127.0.0.1:5432 (database `test`), one fresh schema per test.

Each test gets a DATABASE_URL whose `search_path` is a schema of its own, so tests never
see each other's rows, and the schema is dropped afterwards. Without the server the tests
that need it are skipped, saying why.

One test stops the server. A lock file keeps it apart from every other test using the
server, across test runs on this machine (several may run at once), and the restart is
left to a process of its own, so the server comes back even if the test run is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")
from psycopg.rows import dict_row  # noqa: E402

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_CTL = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main"]
LOCK_PATH = Path(tempfile.gettempdir()) / "honk-postgres-tests.lock"
START_SECONDS = 60
_skip_reason: list[str] = []  # set once this process found no server it could use


def reachable() -> bool:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def fresh_schema(*, stops_the_server: bool = False) -> Iterator[str]:
    """A DATABASE_URL for a new, empty schema, dropped on the way out."""
    with _server_lock(exclusive=stops_the_server):
        if _skip_reason:
            pytest.skip(_skip_reason[0])
        if not reachable() and not _started():
            _skip_reason.append(f"no PostgreSQL taking connections at {ADMIN_URL}")
            pytest.skip(_skip_reason[0])
        name = f"honk_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield f"{ADMIN_URL}?options=-csearch_path%3D{name}"
        finally:
            ensure_running()
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@contextlib.contextmanager
def server_down(seconds: float) -> Iterator[None]:
    """PostgreSQL stopped for `seconds` (call inside `fresh_schema(stops_the_server=True)`).

    The restart is a detached process's job, so it happens even if this process dies.
    """
    restart = " ".join([*PG_CTL, "start"])
    restarter = subprocess.Popen(
        ["sh", "-c", f"sleep {seconds}; {restart}"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        subprocess.run([*PG_CTL, "stop"], check=True, capture_output=True, timeout=60)
        yield
        restarter.wait(timeout=seconds + START_SECONDS)
    finally:
        if restarter.poll() is None:  # the test failed early: bring the server back now
            os.killpg(restarter.pid, signal.SIGKILL)
            restarter.wait()
        ensure_running()


def ensure_running() -> None:
    """Start the cluster if it is down, and wait until it takes connections."""
    if not reachable():
        assert _started(), "PostgreSQL did not come back"


def _started() -> bool:
    """Start the cluster (a killed test run may have left it stopped); False if none is here."""
    if shutil.which(PG_CTL[0]) is None:
        return False
    started = subprocess.run([*PG_CTL, "start"], capture_output=True, timeout=START_SECONDS)
    if started.returncode != 0:
        return reachable()  # no such cluster, or it was running (and refuses us)
    deadline = time.monotonic() + START_SECONDS
    while not reachable():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@contextlib.contextmanager
def _server_lock(*, exclusive: bool) -> Iterator[None]:
    with LOCK_PATH.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]
