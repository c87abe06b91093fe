"""The real PostgreSQL on 127.0.0.1:5432 (database `test`), one fresh schema per test.

Each test gets a DATABASE_URL whose `search_path` is a schema of its own, so tests never
see each other's rows, and the schema is dropped afterwards. Without the server the tests
that need it are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
CLUSTER = ("15", "main")


def reachable() -> bool:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A DATABASE_URL for a new, empty schema, dropped on the way out."""
    if not reachable():
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_URL}")
    name = f"honk_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{ADMIN_URL}?options=-csearch_path%3D{name}"
    finally:
        ensure_running()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def pg_ctl(action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *CLUSTER, action],
        check=True, capture_output=True, timeout=60,
    )


def ensure_running() -> None:
    """Start the cluster if a test stopped it, and wait until it takes connections."""
    if reachable():
        return
    with contextlib.suppress(subprocess.CalledProcessError):
        pg_ctl("start")
    deadline = time.monotonic() + 60
    while not reachable():
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.2)
