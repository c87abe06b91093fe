"""A database another process holds locked: work resumes, the webhook answers in time,
/healthz tells the truth.

The fault is real: a second process opens Honk's SQLite file, takes the write lock with
BEGIN EXCLUSIVE and holds it until the test lets go. Honk is the production app against
the simulated GitHub and the scripted Claude.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from honk_app.run.status import MARKER
from honk_app.settings import load_settings
from honk_app.store import db as honk_db
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, demo_script
from honk_sim.loopback import LoopbackServer
from tests.conftest import SECRET, app_payload, sample_honk, signed_headers

T = TypeVar("T")

_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


@contextlib.contextmanager
def locked_by_another_process(path: Path) -> Iterator[None]:
    """Hold SQLite's write lock on `path` from another process until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0


def status_comments(honk: Any, number: int) -> list[dict[str, Any]]:
    return [c for c in honk.github.comments(REPO, number) if MARKER in c["body"]]


def test_a_lock_held_while_idle_leaves_the_worker_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each attempt at the lock gives up after 0.3 s, so the idle worker's claims fail a few
    # times a second while the lock is held (before, the first failure ended its loop: a
    # new issue then got 202 and stayed queued for good).
    monkeypatch.setattr(honk_db, "BUSY_TIMEOUT_MS", 300)
    with sample_honk(tmp_path, demo_script()) as honk:
        assert honk.settings.sqlite_path is not None
        with locked_by_another_process(honk.settings.sqlite_path):
            time.sleep(3)
        sim = honk.github
        number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        delivery = sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        assert delivery is not None and delivery.status == 202
        task = honk.wait_until_idle(2, timeout=90)[-1]
        assert (task["state"], task["outcome"], task["attempts"]) == ("done", "success", 1)
        [status] = status_comments(honk, number)
        assert status["body"].startswith("🚀 Opened #")
        assert len(sim.pulls(REPO)) == 1


def test_a_lock_held_during_a_run_delays_its_lease_and_stop_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(honk_db, "BUSY_TIMEOUT_MS", 300)
    # The agent waits on Claude for the whole test; only `/honk stop` ends the run.
    with sample_honk(tmp_path, [{"sleep": 25, "text": "too late"}]) as honk:
        sim = honk.github
        assert honk.settings.sqlite_path is not None and honk.claude is not None
        number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        assert sim.label_issue(REPO, number, "honk", sender=MAINTAINER).status == 202
        claude = honk.claude
        honk.wait_for(lambda runs: runs[-1]["state"] == "running" and bool(claude.requests),
                      timeout=60)
        with locked_by_another_process(honk.settings.sqlite_path):
            time.sleep(4.5)  # two heartbeats (every 2 s) meet the lock
        released = time.time()
        honk.wait_for(lambda runs: runs[-1]["heartbeat_at"] > released, timeout=20)

        stop = sim.comment(REPO, number, "/honk stop", author=MAINTAINER)
        assert stop is not None and stop.status == 202
        run = honk.wait_until_idle(2, timeout=30)[-1]
        assert (run["state"], run["outcome"]) == ("cancelled", "stopped")
        [status] = status_comments(honk, number)
        assert "Stopped by `/honk stop`" in status["body"]
        assert sim.pulls(REPO) == []


def labelled_issue() -> bytes:
    payload = app_payload("issues", "labeled.payload.json", label={"name": "honk"})
    return json.dumps(payload).encode()


def _post(url: str, body: bytes, delivery: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    answer = httpx.post(f"{url}/api/github/webhooks", content=body, timeout=30,
                        headers=signed_headers(body, "issues", delivery))
    return answer.status_code, answer.json(), time.monotonic() - started


def test_a_delivery_during_a_lock_is_refused_in_time_and_taken_when_redelivered(
    honk_server: LoopbackServer, tmp_path: Path
) -> None:
    body = labelled_issue()
    path = tmp_path / "data" / "honk.db"
    with locked_by_another_process(path):
        status, answer, seconds = _post(honk_server.url, body, "delivery-during-lock")
    assert status == 503
    assert answer["message"] == "Honk cannot store deliveries right now; redeliver later."
    # GitHub gives up on a delivery after 10 s; the old busy timeout alone was 10 s.
    assert seconds < honk_db.REQUEST_DEADLINE_SECONDS + 2

    # Refused means not stored: the redelivery (same id) is taken as new.
    status, answer, _ = _post(honk_server.url, body, "delivery-during-lock")
    assert status == 202 and answer["run_id"] >= 1


def test_healthz_says_unhealthy_while_runs_wait_and_no_worker_takes_them(tmp_path: Path) -> None:
    from honk_app.web.app import create_app

    # A web process without a worker (no App key here), as when `honk worker` is down.
    settings = load_settings({"HONK_DATA_DIR": str(tmp_path / "data"), "WEBHOOK_SECRET": SECRET,
                              "LOG_FORMAT": "console", "HONK_QUEUE_STALL_SECONDS": "1"})
    body = labelled_issue()
    with LoopbackServer(create_app(settings), name="honk") as server:
        assert httpx.get(f"{server.url}/healthz").json() == {"ok": True, "configured": False}
        assert _post(server.url, body, "waits-forever")[0] == 202
        time.sleep(1.5)
        health = httpx.get(f"{server.url}/healthz", timeout=30)
    assert health.status_code == 503
    assert health.json()["ok"] is False
    assert "1 runs have waited over 1 s to start" in health.json()["reason"]


def test_healthz_says_unhealthy_during_a_lock_and_healthy_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from honk_sim.harness import offline_honk

    monkeypatch.setattr(honk_db, "BUSY_TIMEOUT_MS", 300)
    with offline_honk(tmp_path, script=[], env={"HONK_QUEUE_STALL_SECONDS": "1"}) as honk:
        url = honk.server.url
        assert honk.settings.sqlite_path is not None
        assert httpx.get(f"{url}/healthz").status_code == 200
        with locked_by_another_process(honk.settings.sqlite_path):
            time.sleep(3.5)  # the worker, asking for work every second, waits on the lock
            during = httpx.get(f"{url}/healthz", timeout=30)
            scraped = httpx.get(f"{url}/metrics", timeout=30)
        time.sleep(2)  # its next turn
        after = httpx.get(f"{url}/healthz", timeout=30)
    assert during.status_code == 503, during.text
    reason = during.json()["reason"]
    assert "the worker has not asked for work" in reason
    assert "the database does not answer" in reason
    assert after.status_code == 200, after.text
    assert scraped.status_code == 200  # the metrics of a troubled server still come


def test_two_servers_ride_out_a_lock_and_the_second_resumes_the_run_the_first_hands_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from honk_app.web.app import create_app
    from honk_sim.claude import load_script

    monkeypatch.setattr(honk_db, "BUSY_TIMEOUT_MS", 300)
    fix = load_script(demo_script())
    # The first attempt waits on Claude until its server stops; the second gets the fix.
    script = [{"sleep": 20, "text": "lost with the stopped server"}, *fix]
    with sample_honk(tmp_path, script) as honk:
        assert honk.settings.sqlite_path is not None and honk.claude is not None
        claude = honk.claude
        with LoopbackServer(create_app(honk.settings), name="honk-2") as second:
            servers = {s.app.state.live.pool.worker_id: s for s in (honk.server, second)}
            sim = honk.github
            number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
            assert sim.label_issue(REPO, number, "honk", sender=MAINTAINER).status == 202
            runs = honk.wait_for(lambda runs: runs[-1]["state"] == "running"
                                 and bool(claude.requests), timeout=60)
            with locked_by_another_process(honk.settings.sqlite_path):
                time.sleep(3)  # both servers' claim loops and heartbeats meet the lock
            holder = servers.pop(runs[-1]["worker_id"])
            holder.stop()  # hands the run back
            [other] = servers.values()
            task = honk.wait_until_idle(2, timeout=90)[-1]
            other_id = other.app.state.live.pool.worker_id
    assert (task["state"], task["outcome"], task["attempts"]) == ("done", "success", 2)
    assert task["worker_id"] == other_id
    [status] = status_comments(honk, number)
    assert status["body"].startswith("🚀 Opened #")
    assert len(honk.github.pulls(REPO)) == 1
