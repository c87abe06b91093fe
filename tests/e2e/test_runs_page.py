"""`/runs` behind GitHub sign-in, `honk runs`, and the charts: against the simulators.

Two repositories have runs: the demo's (a full run with a transcript) and a private one of
another account. Carol can read the first only; she signs in through the simulator's
OAuth endpoints and sees its runs, never the other's.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest

from honk_app.models import Run
from honk_app.settings import load_settings
from honk_app.web import charts
from honk_app.web.signin import SESSION_COOKIE, SessionCodec, session_secret
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, demo_script
from honk_sim.harness import OfflineHonk
from tests.conftest import sample_honk

OTHER = "umbrella/secret-plans"


@dataclass
class World:
    honk: OfflineHonk
    task_run: int  # the demo's run, in REPO
    other_run: int  # a refused run in OTHER


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with sample_honk(tmp_path_factory.mktemp("runs-page"), demo_script()) as honk:
        sim = honk.github
        sim.create_repo(OTHER, {"README.md": "# plans\n"})
        sim.install([OTHER])
        sim.add_user("carol")
        sim.set_permission(REPO, "carol", "read")
        sim.set_permission(OTHER, "carol", "none")
        sim.add_user("intern")
        sim.set_permission(OTHER, "intern", "read")
        number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        secret = sim.open_issue(OTHER, title="World domination", body="x", author="intern")
        sim.label_issue(OTHER, secret, "honk", sender="intern")
        runs = honk.wait_until_idle(4)
        task = next(r for r in runs if r["repo"] == REPO and r["kind"] == "task")
        other = next(r for r in runs if r["repo"] == OTHER and r["kind"] == "task")
        assert task["outcome"] == "success" and other["outcome"] == "refused"
        yield World(honk, task["id"], other["id"])


@contextlib.contextmanager
def signed_in(world: World, login: str) -> Iterator[httpx.Client]:
    """A browser-like client that went through GitHub's sign-in as `login`."""
    world.honk.github.oauth_login_as(login)
    with httpx.Client(base_url=world.honk.server.url, timeout=30, follow_redirects=True) as c:
        landed = c.get("/auth/signin", params={"next": "/runs"})
        assert landed.status_code == 200, landed.text
        assert landed.url.path == "/runs"
        yield c


def test_without_signing_in_there_is_a_redirect_never_data(world: World) -> None:
    with httpx.Client(base_url=world.honk.server.url, timeout=30) as anonymous:
        for path in ("/runs", f"/runs/{world.task_run}", f"/runs/{world.other_run}"):
            answer = anonymous.get(path)
            assert answer.status_code == 302, path
            assert answer.headers["location"].startswith("/auth/signin?next=")
            assert REPO not in answer.text and OTHER not in answer.text
        anonymous.cookies.set(SESSION_COOKIE, "gAAAAAforged")
        assert anonymous.get("/runs").status_code == 302


def test_signed_in_user_sees_the_runs_of_repositories_they_can_read(world: World) -> None:
    with signed_in(world, "carol") as carol:
        page = carol.get("/runs")
        assert page.status_code == 200
        assert REPO in page.text
        assert f"/runs/{world.task_run}'" in page.text
        assert OTHER not in page.text
        assert f"/runs/{world.other_run}'" not in page.text
        assert "<svg" in page.text and "Runs per day by outcome" in page.text
        assert f"{MAINTAINER}" in page.text  # who asked

        detail = carol.get(f"/runs/{world.task_run}")
        assert detail.status_code == 200
        assert "Fix add() to return the sum" in detail.text  # the report tool call
        assert "python3 -m unittest -q" in detail.text  # a bash call in the timeline
        assert "queued" in detail.text and "finished: success" in detail.text

        hidden = carol.get(f"/runs/{world.other_run}")
        assert hidden.status_code == 404
        assert OTHER not in hidden.text


def test_the_session_cookie_is_httponly_and_samesite(world: World) -> None:
    world.honk.github.oauth_login_as("carol")
    with httpx.Client(base_url=world.honk.server.url, timeout=30, follow_redirects=True) as c:
        final = c.get("/auth/signin")
        [callback] = [r for r in final.history if r.url.path == "/auth/callback"]
        cookie = next(v for v in callback.headers.get_list("set-cookie")
                      if v.startswith(f"{SESSION_COOKIE}="))
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        token = cookie.split(";")[0].split("=", 1)[1]
        assert "carol" not in token  # encrypted, not merely encoded
        c.post("/auth/signout")
        assert c.get("/runs", follow_redirects=False).status_code == 302


def test_a_sign_in_not_started_here_is_refused(world: World) -> None:
    with httpx.Client(base_url=world.honk.server.url, timeout=30) as c:
        answer = c.get("/auth/callback", params={"code": "x", "state": "y"})
        assert answer.status_code == 400
        assert c.cookies.get(SESSION_COOKIE) is None


def test_someone_who_reads_the_other_repository_sees_only_it(world: World) -> None:
    with signed_in(world, "intern") as intern:
        page = intern.get("/runs")
        assert OTHER in page.text and f"/runs/{world.other_run}'" in page.text
        assert f"/runs/{world.task_run}'" not in page.text
        assert intern.get(f"/runs/{world.task_run}").status_code == 404


@pytest.mark.parametrize("number", ["99999999999999999999", str(2**63), "0", "00042"])
def test_a_run_number_beyond_any_run_is_404_not_an_error(world: World, number: str) -> None:
    with signed_in(world, "carol") as carol:
        answer = carol.get(f"/runs/{number}")
        assert answer.status_code == 404
        assert "No such run" in answer.text


def test_sign_out_is_not_a_cross_site_post_away(world: World) -> None:
    with signed_in(world, "carol") as carol:
        forged = carol.post("/auth/signout", headers={"Origin": "https://attacker.example",
                                                      "Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403
        assert "another site" in forged.text
        still = carol.get("/runs")
        assert still.status_code == 200 and still.url.path == "/runs"
        mine = carol.post("/auth/signout", headers={"Origin": world.honk.server.url,
                                                    "Sec-Fetch-Site": "same-origin"})
        assert mine.status_code == 200 and mine.url.path == "/"
        assert carol.cookies.get(SESSION_COOKIE) is None


@pytest.mark.slow  # a `honk` subprocess: the CLI's start-up is most of it
def test_honk_runs_prints_a_table_and_json_lines(world: World, tmp_path: Path) -> None:
    honk = Path(sys.executable).with_name("honk")
    env = {"HONK_DATA_DIR": str(world.honk.settings.data_dir), "PATH": "/usr/bin:/bin",
           "LOG_LEVEL": "warning"}
    lines = subprocess.run([str(honk), "runs", "--json"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == sorted((r["id"] for r in records), reverse=True)
    task = next(r for r in records if r["id"] == world.task_run)
    assert set(task) == {"id", "delivery_id", "repository", "number", "kind", "state",
                         "outcome", "pr_number", "cost_usd", "seconds"}
    assert (task["repository"], task["kind"], task["state"], task["outcome"]) == (
        REPO, "task", "done", "success")
    assert task["pr_number"] and task["cost_usd"] > 0 and task["seconds"] > 0
    table = subprocess.run([str(honk), "runs"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, check=True).stdout
    header, *rows = table.splitlines()
    assert header.split()[:4] == ["run", "state", "outcome", "repository"]
    assert len(rows) == len(records)
    assert any(REPO in row and "success" in row and f"#{task['pr_number']}" in row
               for row in rows)


def test_runs_pages_are_off_without_an_oauth_client(client: httpx.Client) -> None:
    for path in ("/runs", "/runs/1", "/auth/signin"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 404
        assert "GITHUB_CLIENT_ID" in answer.text


def _run(run_id: int, created: datetime, state: str, outcome: str | None, cost: float) -> Run:
    return Run(id=run_id, delivery_id="d", kind="task", repo="a/b", number=1, lock_key="a/b#1",
               installation_id=1, sender="x", trigger="{}", state=state, outcome=outcome,
               detail=None, attempts=1, cancel_requested=0, worker_id=None,
               created_at=created.timestamp(), not_before=0, started_at=None,
               heartbeat_at=None, finished_at=None, status_comment_id=None, branch=None,
               pushed_sha=None, pr_number=None, report=None, turns=0, input_tokens=0,
               output_tokens=0, cost_usd=cost)


def test_charts_count_runs_per_day_by_outcome_and_cost() -> None:
    today = date(2026, 11, 24)
    runs = [
        _run(1, datetime(2026, 11, 24, 9, tzinfo=UTC), "done", "success", 0.5),
        _run(2, datetime(2026, 11, 24, 10, tzinfo=UTC), "failed", "no_changes", 0.25),
        _run(3, datetime(2026, 11, 23, 23, 59, tzinfo=UTC), "done", "success", 1.0),
        _run(4, datetime(2026, 11, 22, tzinfo=UTC), "queued", None, 0.0),
        _run(5, datetime(2026, 10, 1, tzinfo=UTC), "done", "success", 9.0),  # too old
    ]
    days = charts.per_day(runs, days=3, today=today)
    assert [d.day for d in days] == [date(2026, 11, 22), date(2026, 11, 23), today]
    assert [d.counts for d in days] == [{"in flight": 1}, {"success": 1},
                                        {"success": 1, "failed": 1}]
    assert [d.cost_usd for d in days] == [0.0, 1.0, 0.75]
    svg = charts.runs_chart(days)
    assert "2026-11-24: 1 failed" in svg and "2026-11-22: 1 in flight" in svg
    assert "2 runs" in svg  # the scale
    cost = charts.cost_chart(days)
    assert "2026-11-24: $0.75" in cost and "$1.00" in cost
    assert "no runs" in charts.runs_chart(charts.per_day([], days=3, today=today))


def test_session_key_is_the_webhook_secret_or_a_private_generated_one(tmp_path: Path) -> None:
    shared = load_settings({"HONK_DATA_DIR": str(tmp_path / "a"), "WEBHOOK_SECRET": "whsec-1"})
    assert session_secret(shared) == b"whsec-1"
    alone = load_settings({"HONK_DATA_DIR": str(tmp_path / "b")})
    key = session_secret(alone)
    assert len(key) == 32 and session_secret(alone) == key
    assert (tmp_path / "b" / "session.key").stat().st_mode & 0o777 == 0o600
    codec = SessionCodec(key)
    value = codec.dump({"login": "carol"})
    assert codec.load(value, max_age=60) == {"login": "carol"}
    assert SessionCodec(b"another key").load(value, max_age=60) is None
    assert codec.load(value[:-4] + "AAAA", max_age=60) is None


def test_sign_in_happens_at_the_public_url_on_github_enterprise(tmp_path: Path) -> None:
    from honk_app.web.app import create_app
    from honk_sim.loopback import LoopbackServer

    settings = load_settings({
        "HONK_DATA_DIR": str(tmp_path), "WEBHOOK_SECRET": "whsec-0123456789",
        "GITHUB_CLIENT_ID": "Iv1.abc", "GITHUB_CLIENT_SECRET": "secret-0123456789",
        "PUBLIC_URL": "https://honk.example.com",
        "GITHUB_API_URL": "https://ghe.example.com/api/v3", "LOG_LEVEL": "warning",
    })
    with LoopbackServer(create_app(settings, with_worker=False)) as honk, httpx.Client(
        base_url=honk.url, timeout=30
    ) as browser:
        hop = browser.get("/auth/signin", params={"next": "/runs/5"})
        assert hop.headers["location"] == (
            "https://honk.example.com/auth/signin?next=%2Fruns%2F5&moved=1"
        )
        there = browser.get("/auth/signin", params={"next": "/runs/5", "moved": "1"})
        authorize = httpx.URL(there.headers["location"])
        assert str(authorize).startswith("https://ghe.example.com/login/oauth/authorize?")
        assert authorize.params["client_id"] == "Iv1.abc"
        assert authorize.params["redirect_uri"] == "https://honk.example.com/auth/callback"
        cookie = there.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "path=/auth" in cookie
        for elsewhere in ("https://evil.example", "//evil.example"):  # back to this site only
            hop = browser.get("/auth/signin", params={"next": elsewhere})
            assert "evil" not in hop.headers["location"]
