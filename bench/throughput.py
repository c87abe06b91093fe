"""Run throughput on PostgreSQL: 200 trivial runs across 1, 2 and 4 `honk worker` processes.

Each round has a fresh PostgreSQL schema, a simulated GitHub and a scripted Claude in this
process, `honk serve --no-worker` as the web process and N `honk worker` processes (one run
at a time each, each with its own data directory, as on machines of their own). It opens
200 issues, labels them all `honk`, and times until every run has ended. A run is trivial
but whole: 👀 and the status comment, the checkout, the repository's `setup` command in
the sandbox (it writes one file: the change), one request to Claude (which reports at
once), the commit, the push, the pull request, 🚀.

While the runs go, a probe posts a signed delivery Honk ignores (but stores) every 20 ms
and times the answer: the webhook's p99 under load, against the same probe's p99 with no
run going, measured first in the same round.

    python bench/throughput.py [--runs 200] [--workers 1 2 4]

Needs the PostgreSQL of the tests (127.0.0.1:5432, database `test`, trust auth).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from honk_app.web.webhooks import sign
from honk_sim.claude import ScriptedClaude
from honk_sim.github import GitHubSim
from honk_sim.harness import SIM_ANTHROPIC_KEY
from honk_sim.loopback import free_port

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
HONK = shutil.which("honk") or str(Path(sys.executable).with_name("honk"))
REPO = "octo/notes"
MAINTAINER = "mona"
FILES = {
    "README.md": "# notes\n",
    ".github/honk.yml": "setup:\n  - echo 'Honk was here.' > HONK.md\nmax_turns: 3\n",
}
PROBE_INTERVAL = 0.02
FINAL = ("done", "failed", "cancelled")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    results = [round_of(args.runs, workers) for workers in args.workers]
    base = results[0]["runs_per_minute"]
    print()
    print(f"{'workers':>7} {'runs':>5} {'ok':>5} {'seconds':>8} {'runs/min':>9} {'speed-up':>8}"
          f" {'webhook p50 ms':>15} {'p99 ms':>7} {'idle p99 ms':>12} {'p99 ratio':>9}")
    for r in results:
        print(f"{r['workers']:>7} {r['runs']:>5} {r['succeeded']:>5} {r['seconds']:>8.1f}"
              f" {r['runs_per_minute']:>9.1f} {r['runs_per_minute'] / base:>7.2f}x"
              f" {r['p50_ms']:>15.1f} {r['p99_ms']:>7.1f} {r['idle_p99_ms']:>12.1f}"
              f" {r['p99_ms'] / r['idle_p99_ms']:>8.1f}x")
    print(json.dumps(results))
    return 0


def round_of(runs: int, workers: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="honk-throughput-"))
    schema = f"honk_bench_{uuid.uuid4().hex[:10]}"
    url = f"{ADMIN_URL}?options=-csearch_path%3D{schema}"
    admin(f'CREATE SCHEMA "{schema}"')
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with ExitStack() as stack:
            sim = stack.enter_context(GitHubSim(root / "github"))
            claude = ScriptedClaude([])  # every answer: the report
            claude_url = claude.start()
            stack.callback(claude.stop)
            port = free_port()
            app = sim.create_app(webhook_url=f"http://127.0.0.1:{port}/api/github/webhooks")
            sim.add_user(MAINTAINER)
            sim.create_repo(REPO, FILES)
            sim.set_permission(REPO, MAINTAINER, "write")
            env = {
                "PATH": os.environ["PATH"], "HOME": str(root), "HOST": "127.0.0.1",
                "PORT": str(port), "DATABASE_URL": url, "APP_ID": str(app.id),
                "PRIVATE_KEY": app.private_key_pem, "WEBHOOK_SECRET": app.webhook_secret,
                "GITHUB_API_URL": sim.api_url, "ANTHROPIC_API_KEY": SIM_ANTHROPIC_KEY,
                "ANTHROPIC_BASE_URL": claude_url, "LOG_LEVEL": "warning",
                "HONK_WORKERS": "1",
            }
            procs.append(spawn(["serve", "--no-worker"], env, root / "web"))
            wait(lambda: healthy(port), "the web process")
            for n in range(workers):
                procs.append(spawn(["worker"], env, root / f"worker-{n}"))
            wait(lambda: len(query(url, "SELECT id FROM procrastinate_workers")) == workers,
                 "the workers")
            sim.install([REPO])
            wait(lambda: finished(url, 1), "the installation's run")
            issues = [sim.open_issue(REPO, title=f"Note {n}", body="Add a note.",
                                     author=MAINTAINER) for n in range(runs)]
            probe = Probe(port, app.webhook_secret)
            idle = probe.measure(seconds=3)

            started = time.monotonic()
            probe.start()
            for number in issues:
                sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
            wait(lambda: finished(url, runs + 1), "every run", timeout=runs * 30)
            seconds = time.monotonic() - started
            busy = probe.stop()
            done = query(url, "SELECT outcome FROM runs WHERE kind = 'task'")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        admin(f'DROP SCHEMA "{schema}" CASCADE')
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "workers": workers,
        "runs": runs,
        "succeeded": sum(1 for row in done if row["outcome"] == "success"),
        "seconds": seconds,
        "runs_per_minute": runs / seconds * 60,
        "p50_ms": percentile(busy, 50),
        "p99_ms": percentile(busy, 99),
        "idle_p99_ms": percentile(idle, 99),
        "probes": len(busy),
    }
    print(json.dumps(result), flush=True)
    return result


class Probe:
    """Posts a signed `ping` delivery (stored, then ignored) every 20 ms; times each answer."""

    def __init__(self, port: int, secret: str) -> None:
        self.url = f"http://127.0.0.1:{port}/api/github/webhooks"
        self.secret = secret
        self.body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latencies: list[float] = []

    def measure(self, seconds: float) -> list[float]:
        self.start()
        time.sleep(seconds)
        return self.stop()

    def start(self) -> None:
        self._stop.clear()
        self._latencies = []
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        return self._latencies

    def _loop(self) -> None:
        headers = {"X-GitHub-Event": "ping", "Content-Type": "application/json",
                   "X-Hub-Signature-256": sign(self.secret, self.body)}
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(PROBE_INTERVAL):
                headers["X-GitHub-Delivery"] = str(uuid.uuid4())
                sent = time.perf_counter()
                answer = client.post(self.url, content=self.body, headers=headers)
                if answer.status_code == 200:
                    self._latencies.append((time.perf_counter() - sent) * 1000)


def spawn(argv: list[str], env: dict[str, str], data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True)
    log = (data_dir / "honk.log").open("ab")
    return subprocess.Popen([HONK, *argv], env={**env, "HONK_DATA_DIR": str(data_dir)},
                            stdout=log, stderr=subprocess.STDOUT)


def admin(statement: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def query(url: str, sql: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def finished(url: str, count: int) -> bool:
    states = [row["state"] for row in query(url, "SELECT state FROM runs")]
    return len(states) >= count and all(state in FINAL for state in states)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.TransportError:
        return False


def wait(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def percentile(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


if __name__ == "__main__":
    sys.exit(main())
