"""Scaled out on the real PostgreSQL: `honk worker` and `honk serve` processes, killed by signal.

The simulated GitHub and the scripted Claude live in the test process, so they outlive the
processes under test; every test has a PostgreSQL schema of its own (tests/postgres.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from honk_app.run.status import MARKER
from honk_app.web.webhooks import sign
from honk_sim.claude import ScriptedClaude, load_script
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, SAMPLE_FILES, demo_script
from honk_sim.github import GitHubSim
from honk_sim.harness import SIM_ANTHROPIC_KEY
from honk_sim.loopback import free_port
from tests.conftest import edit, git_out, report
from tests.postgres import fresh_schema, rows, server_down

HONK = shutil.which("honk") or str(Path(sys.executable).with_name("honk"))
LEASE_SECONDS = 4
FINAL_STATES = ("done", "failed", "cancelled")
OUTAGE_SECONDS = 30


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)
    return result


class Fleet:
    """Honk's processes around one simulated GitHub, one scripted Claude, one schema."""

    def __init__(self, root: Path, url: str, sim: GitHubSim, claude: ScriptedClaude) -> None:
        self.root = root
        self.url = url
        self.sim = sim
        self.claude = claude
        self.port = free_port()
        self.app = sim.create_app(webhook_url=self.webhook_url(self.port))
        sim.add_user(MAINTAINER)
        sim.create_repo(REPO, SAMPLE_FILES)
        sim.set_permission(REPO, MAINTAINER, "write")
        self.claude_url = claude.start()
        self.processes: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def webhook_url(port: int) -> str:
        return f"http://127.0.0.1:{port}/api/github/webhooks"

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """A process's settings; its own data directory, as if on a machine of its own."""
        return {
            "PATH": os.environ["PATH"], "HOME": str(self.root), "HOST": "127.0.0.1",
            "PORT": str(self.port), "DATABASE_URL": self.url, "APP_ID": str(self.app.id),
            "PRIVATE_KEY": self.app.private_key_pem, "WEBHOOK_SECRET": self.app.webhook_secret,
            "GITHUB_API_URL": self.sim.api_url, "ANTHROPIC_API_KEY": SIM_ANTHROPIC_KEY,
            "ANTHROPIC_BASE_URL": self.claude_url, "HONK_DATA_DIR": str(self.root / name),
            "LOG_FORMAT": "console", "HONK_WORKERS": "1", **extra,
        }

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def spawn(self, name: str, *argv: str, **extra: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([HONK, *argv], env=self.env(name, **extra),
                                stdout=self.log(name).open("ab"), stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        """A `honk worker`, returned once procrastinate has registered it."""
        before = self.registered_workers()
        proc = self.spawn(name, "worker", "--lease-seconds", str(LEASE_SECONDS))
        wait_for(lambda: self.registered_workers() > before or proc.poll() is not None,
                 timeout=30, what=f"worker {name}")
        assert proc.poll() is None, self.log(name).read_text()[-3000:]
        return proc

    def serve(self, name: str, port: int, *options: str) -> subprocess.Popen[bytes]:
        proc = self.spawn(name, "serve", *options, PORT=str(port))
        wait_for(lambda: _healthy(port) or proc.poll() is not None, timeout=30,
                 what=f"honk serve {name}")
        assert proc.poll() is None, self.log(name).read_text()[-3000:]
        return proc

    def web_only(self) -> subprocess.Popen[bytes]:
        """`honk serve --no-worker`: every run goes to a `honk worker`."""
        return self.serve("web", self.port, "--no-worker")

    def registered_workers(self) -> int:
        return len(rows(self.url, "SELECT id FROM procrastinate_workers"))

    def runs(self) -> list[dict[str, Any]]:
        return rows(self.url, "SELECT * FROM runs ORDER BY id")

    def wait_until_idle(self, count: int, timeout: float = 90) -> list[dict[str, Any]]:
        return wait_for(
            lambda: (runs := self.runs()) and len(runs) >= count
            and all(r["state"] in FINAL_STATES for r in runs) and runs,
            timeout=timeout, what=f"{count} finished runs",
        )

    def install(self) -> None:
        self.sim.install([REPO])
        self.wait_until_idle(1)  # the installation's label run

    def statuses(self, number: int) -> list[dict[str, Any]]:
        return [c for c in self.sim.comments(REPO, number) if MARKER in c["body"]]

    def wait_for_rocket(self, number: int, timeout: float = 90) -> None:
        """Wait for 🚀 on the issue and for its run to be recorded as ended."""
        wait_for(lambda: any(c["body"].startswith("🚀") for c in self.statuses(number)),
                 timeout=timeout, what=f"🚀 on #{number}")
        wait_for(lambda: all(r["state"] in FINAL_STATES for r in self.runs()
                             if r["number"] == number), timeout=30, what=f"#{number} ended")

    def label_new_issue(self) -> int:
        number = self.sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        delivery = self.sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        assert delivery is not None and delivery.status == 202, delivery
        return number

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def fleet(
    root: Path, script: list[dict[str, Any]], *, stops_the_server: bool = False
) -> Iterator[Fleet]:
    with fresh_schema(stops_the_server=stops_the_server) as url, GitHubSim(root / "github") as sim:
        claude = ScriptedClaude(script)
        honk = Fleet(root, url, sim, claude)
        try:
            yield honk
        finally:
            honk.stop_all()
            claude.stop()


def pid_of(worker_id: str) -> int:
    return int(worker_id.split(":")[1])


FIX = load_script(demo_script())
# The first attempt's second request to Claude hangs until the test ends; a worker that
# takes the run over gets the whole fix.
HANGS_THEN_FIX = [FIX[0], {"sleep": 600}, *FIX]


def test_a_worker_killed_mid_run_is_replaced_and_the_run_ends_with_one_pr(
    tmp_path: Path,
) -> None:
    with fleet(tmp_path, HANGS_THEN_FIX) as honk:
        honk.web_only()
        first = honk.worker("first")
        honk.install()
        number = honk.label_new_issue()
        wait_for(lambda: len(honk.claude.requests) >= 2, what="the hanging request")
        [run] = [r for r in honk.runs() if r["kind"] == "task"]
        assert pid_of(run["worker_id"]) == first.pid
        second = honk.worker("second")

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        honk.wait_for_rocket(number)
        honk.sim.wait_for_deliveries()

        assert len(honk.sim.pulls(REPO)) == 1
        [status] = honk.statuses(number)  # the resumed run edits the same status comment
        assert status["body"].startswith("🚀 Opened #")
        [run] = [r for r in honk.runs() if r["kind"] == "task"]
        assert (run["state"], run["attempts"]) == ("done", 2)
        assert pid_of(run["worker_id"]) == second.pid
        assert "run recovered from a dead worker" in honk.log("second").read_text()


def test_a_frozen_worker_loses_its_run_and_leaves_it_to_the_new_owner(tmp_path: Path) -> None:
    with fleet(tmp_path, HANGS_THEN_FIX) as honk:
        honk.web_only()
        frozen = honk.worker("frozen")
        honk.install()
        number = honk.label_new_issue()
        wait_for(lambda: len(honk.claude.requests) >= 2, what="the hanging request")
        other = honk.worker("other")

        frozen.send_signal(signal.SIGSTOP)  # alive, but silent for longer than a lease
        try:
            honk.wait_for_rocket(number)
        finally:
            frozen.send_signal(signal.SIGCONT)
        wait_for(lambda: "run taken over by another worker" in honk.log("frozen").read_text(),
                 timeout=30, what="the thawed worker noticing")
        [run] = [r for r in honk.runs() if r["kind"] == "task"]
        assert (run["state"], run["attempts"], pid_of(run["worker_id"])) == ("done", 2, other.pid)
        assert rows(honk.url, "SELECT id FROM procrastinate_jobs") == [], "finished, not redone"
        assert len(honk.sim.pulls(REPO)) == 1
        assert len(honk.statuses(number)) == 1
        assert frozen.poll() is None


def test_sigterm_hands_the_run_back_and_the_worker_exits(tmp_path: Path) -> None:
    with fleet(tmp_path, HANGS_THEN_FIX) as honk:
        honk.web_only()
        leaving = honk.worker("leaving")
        honk.install()
        number = honk.label_new_issue()
        wait_for(lambda: len(honk.claude.requests) >= 2, what="the hanging request")

        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(timeout=30) == 0
        [run] = [r for r in honk.runs() if r["kind"] == "task"]
        assert (run["state"], run["worker_id"]) == ("queued", None)
        [job] = rows(honk.url, "SELECT status FROM procrastinate_jobs WHERE args->>'run_id' = %s",
                     str(run["id"]))
        assert job["status"] == "todo"
        assert "run handed back" in honk.log("leaving").read_text()

        staying = honk.worker("staying")
        honk.wait_for_rocket(number)
        assert len(honk.sim.pulls(REPO)) == 1
        assert len(honk.statuses(number)) == 1
        [run] = [r for r in honk.runs() if r["kind"] == "task"]
        assert (run["state"], run["attempts"]) == ("done", 2)
        assert pid_of(run["worker_id"]) == staying.pid


def test_honk_stop_reaches_the_worker_running_the_run(tmp_path: Path) -> None:
    with fleet(tmp_path, HANGS_THEN_FIX) as honk:
        honk.web_only()
        honk.worker("worker")
        honk.install()
        number = honk.label_new_issue()
        wait_for(lambda: len(honk.claude.requests) >= 2, what="the hanging request")
        stop = honk.sim.comment(REPO, number, "/honk stop", author=MAINTAINER)
        assert stop is not None and stop.status == 202

        [run] = [r for r in honk.wait_until_idle(2, timeout=30) if r["kind"] == "task"]
        assert (run["state"], run["outcome"]) == ("cancelled", "stopped")
        [status] = honk.statuses(number)
        assert status["body"].startswith("✋") and "nothing was pushed" in status["body"]
        assert rows(honk.url, "SELECT id FROM procrastinate_jobs") == []


def test_two_comments_on_one_pr_run_one_after_the_other_on_two_workers(tmp_path: Path) -> None:
    script = [*FIX,
              edit("def add(a, b):", "def add(a: int, b: int) -> int:"), report("Hint add()"),
              edit("def mul(a, b):", "def mul(a: int, b: int) -> int:"), report("Hint mul()")]
    with fleet(tmp_path, script) as honk:
        honk.web_only()
        honk.worker("one")
        honk.worker("two")
        honk.install()
        honk.label_new_issue()
        honk.wait_until_idle(2)
        [pull] = honk.sim.pulls(REPO)
        honk.sim.comment(REPO, pull["number"], "/honk type hints on add()", author=MAINTAINER)
        time.sleep(0.05)
        honk.sim.comment(REPO, pull["number"], "/honk type hints on mul()", author=MAINTAINER)

        first, second = honk.wait_until_idle(4)[-2:]
        assert [first["outcome"], second["outcome"]] == ["success", "success"]
        assert second["started_at"] >= first["finished_at"], "runs of one PR never overlap"
        branch = pull["head"]["ref"]
        log = git_out(honk.sim.git_dir(REPO), "log", "--format=%s", f"main..{branch}").split("\n")
        assert log[:3] == ["Hint mul()", "Hint add()", "Fix add() to return the sum"]


def test_the_same_delivery_posted_to_two_web_processes_at_once_runs_once(tmp_path: Path) -> None:
    with fleet(tmp_path, FIX) as honk:
        ports = [honk.port, free_port()]
        for n, port in enumerate(ports):
            honk.serve(f"web-{n}", port)
        honk.install()
        # Record a real issues.labeled delivery without letting it reach Honk...
        honk.sim.set_webhook_url(Fleet.webhook_url(free_port()))
        number = honk.sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        missed = honk.sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        assert missed is not None and missed.status == 0
        honk.sim.set_webhook_url(Fleet.webhook_url(honk.port))
        # ...then post it to both web processes at the same moment.
        body = json.dumps(missed.payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": missed.id,
                   "X-Hub-Signature-256": sign(honk.app.webhook_secret, body),
                   "Content-Type": "application/json"}
        statuses = post_at_once(body, headers, [Fleet.webhook_url(port) for port in ports])

        assert sorted(statuses) == [200, 202]
        honk.wait_for_rocket(number)
        honk.sim.wait_for_deliveries()
        assert len(honk.sim.pulls(REPO)) == 1
        assert len(honk.statuses(number)) == 1
        assert [r["delivery_id"] for r in honk.runs() if r["kind"] == "task"] == [missed.id]


def post_at_once(body: bytes, headers: dict[str, str], urls: list[str]) -> list[int]:
    barrier = threading.Barrier(len(urls))
    statuses: list[int] = []

    def post(url: str) -> None:
        with httpx.Client(timeout=30) as client:
            client.get(url.replace("/api/github/webhooks", "/healthz"))  # connect first
            barrier.wait()
            statuses.append(client.post(url, content=body, headers=headers).status_code)

    threads = [threading.Thread(target=post, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def test_postgres_down_for_30s_answers_503_loses_nothing_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    # Run 1's second request to Claude returns while the database is down.
    script = [FIX[0], {"sleep": 8}, *FIX[1:], *FIX]
    with fleet(tmp_path, script, stops_the_server=True) as honk:
        web = honk.serve("web", honk.port)
        worker = honk.worker("worker")
        honk.install()
        first = honk.label_new_issue()
        wait_for(lambda: len(honk.claude.requests) >= 2, what="run 1's slow request")
        with server_down(OUTAGE_SECONDS):
            second = honk.sim.open_issue(REPO, title="Also this", body=ISSUE_BODY,
                                         author=MAINTAINER)
            refused = honk.sim.label_issue(REPO, second, "honk", sender=MAINTAINER)
            assert refused is not None and refused.status == 503, refused

        honk.wait_for_rocket(first)
        assert honk.sim.redeliver(refused.id).status == 202  # as GitHub's Redeliver button
        honk.wait_for_rocket(second)
        honk.sim.wait_for_deliveries()

        assert web.poll() is None and worker.poll() is None, "both processes rode it out"
        tasks = [r for r in honk.runs() if r["kind"] == "task"]
        assert [(r["number"], r["outcome"], r["attempts"]) for r in tasks] == [
            (first, "success", 1), (second, "success", 1)
        ], "each run executed once, by one worker, with no recovery"
        assert len(honk.sim.pulls(REPO)) == 2
        assert len(honk.statuses(first)) == 1 and len(honk.statuses(second)) == 1
        for name in ("web", "worker"):
            assert "recovered" not in honk.log(name).read_text()


def test_honk_migrate_creates_the_schema_once(tmp_path: Path) -> None:
    with fresh_schema() as url:
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DATABASE_URL": url,
               "HONK_DATA_DIR": str(tmp_path / "honk")}
        first = subprocess.run([HONK, "migrate"], env=env, capture_output=True, text=True,
                               timeout=60)
        again = subprocess.run([HONK, "migrate"], env=env, capture_output=True, text=True,
                               timeout=60)
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines() == [
            "applied procrastinate/schema.sql", "applied honk/0001-deliveries-and-runs",
            "applied honk/0002-status-owed", "applied honk/0003-event-keys-stops-refusals",
        ]
        assert (again.returncode, again.stdout.strip()) == (0, "The schema is up to date.")
        tables = {r["table_name"] for r in rows(
            url, "SELECT table_name FROM information_schema.tables WHERE table_schema ="
            " current_schema()")}
        assert {"runs", "deliveries", "honk_migrations", "procrastinate_jobs", "stop_requests",
                "refusals"} <= tables
    unreachable = subprocess.run(
        [HONK, "migrate"], capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
             "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/{uuid.uuid4().hex}"},
    )
    assert unreachable.returncode == 1 and "PostgreSQL cannot be reached" in unreachable.stderr
