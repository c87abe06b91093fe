"""A worker killed mid-run: on restart its run is picked up and ends with one PR.

`honk serve` runs as a real process and is killed with SIGKILL while the agent waits
for Claude; the simulators live in the test process, so they outlive it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from honk_app.run.status import MARKER
from honk_sim.claude import ScriptedClaude, load_script
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, SAMPLE_FILES, demo_script
from honk_sim.github import GitHubSim
from honk_sim.harness import SIM_ANTHROPIC_KEY
from honk_sim.loopback import free_port
from tests.conftest import git_out

HONK = shutil.which("honk") or str(Path(sys.executable).with_name("honk"))


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[GitHubSim]:
    with GitHubSim(tmp_path / "github") as github:
        yield github


def start_honk(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([HONK, "serve"], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"honk serve did not start:\n{log.read_text()[-3000:]}")


def statuses(sim: GitHubSim, number: int) -> list[dict[str, Any]]:
    return [c for c in sim.comments(REPO, number) if MARKER in c["body"]]


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_run_killed_mid_way_finishes_after_restart_with_one_pr(
    sim: GitHubSim, tmp_path: Path
) -> None:
    fix = load_script(demo_script())
    # The first attempt's second request hangs until the process is killed; the second
    # attempt gets the whole fix.
    script = [fix[0], {"sleep": 30}, {"text": "lost with the killed process"}, *fix]
    port = free_port()
    app = sim.create_app(webhook_url=f"http://127.0.0.1:{port}/api/github/webhooks")
    sim.add_user(MAINTAINER)
    sim.create_repo(REPO, SAMPLE_FILES)
    sim.set_permission(REPO, MAINTAINER, "write")
    claude = ScriptedClaude(script)
    try:
        env = {
            "PATH": os.environ["PATH"], "HOME": str(tmp_path), "PORT": str(port),
            "HOST": "127.0.0.1", "APP_ID": str(app.id), "PRIVATE_KEY": app.private_key_pem,
            "WEBHOOK_SECRET": app.webhook_secret, "GITHUB_API_URL": sim.api_url,
            "ANTHROPIC_API_KEY": SIM_ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": claude.start(),
            "HONK_DATA_DIR": str(tmp_path / "honk"), "LOG_FORMAT": "console",
        }
        log = tmp_path / "honk.log"
        honk = start_honk(env, log)
        try:
            sim.install([REPO])
            number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
            assert sim.label_issue(REPO, number, "honk", sender=MAINTAINER).status == 202
            wait_for(lambda: len(claude.requests) >= 2)
            honk.send_signal(signal.SIGKILL)
            honk.wait(timeout=10)
            assert sim.pulls(REPO) == []

            honk = start_honk(env, log)
            wait_for(lambda: any(c["body"].startswith("🚀") for c in statuses(sim, number)),
                     timeout=90)
            sim.wait_for_deliveries()
        finally:
            honk.terminate()
            honk.wait(timeout=30)
    finally:
        claude.stop()

    assert len(sim.pulls(REPO)) == 1
    [status] = statuses(sim, number)  # the resumed run edits the same status comment
    assert status["body"].startswith("🚀 Opened #")
    answered = len(claude.requests) - 1  # all but the request the kill cut off
    assert f"{answered} turns" in status["body"], "the turns of both attempts are counted"
    branch = sim.pulls(REPO)[0]["head"]["ref"]
    assert "return a + b" in git_out(sim.git_dir(REPO), "show", f"{branch}:calc.py")
    assert "runs recovered from dead workers" in log.read_text()
