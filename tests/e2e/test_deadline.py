"""One deadline per run over setup, the agent, checks and their rounds (issue 10).

Whole runs against the simulated GitHub, with `timeout_minutes` of a few seconds (the key
takes a number of minutes, fractions included) and commands that would outlast it. The
attack as seen: `timeout_minutes: 1` with three 25 s setup commands and two 25 s checks
ran 128 s and ended `done`.
"""

from __future__ import annotations

import time
from pathlib import Path

from honk_app.run.status import MARKER
from honk_sim.claude import load_script
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, demo_script
from honk_sim.harness import OfflineHonk
from tests.conftest import edit, report, sample_honk

FIX = load_script(demo_script())


def configure(honk: OfflineHonk, config: str) -> None:
    honk.github.push_files(REPO, "main", {".github/honk.yml": config}, author=MAINTAINER,
                           message="Configure Honk")


def label_and_wait(honk: OfflineHonk) -> tuple[int, dict[str, object], float]:
    sim = honk.github
    number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
    started = time.monotonic()
    sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
    run = honk.wait_until_idle(2, timeout=60)[-1]
    return number, run, time.monotonic() - started


def status_of(honk: OfflineHonk, number: int) -> str:
    [status] = [c for c in honk.github.comments(REPO, number) if MARKER in c["body"]]
    return str(status["body"])


def test_setup_past_the_deadline_ends_the_run_before_the_agent(tmp_path: Path) -> None:
    with sample_honk(tmp_path, FIX) as honk:
        configure(honk, "timeout_minutes: 0.05\n"  # 3 seconds for the whole run
                        "setup: [sleep 2, sleep 2, sleep 2]\n"
                        "checks: [sleep 2, sleep 2]\n")
        number, run, seconds = label_and_wait(honk)
        assert (run["state"], run["outcome"]) == ("failed", "timed_out"), run
        body = status_of(honk, number)
        assert body.startswith(
            "😕 **Honk stopped**: The run's time budget of 3 seconds ran out during the setup "
            "command `sleep 2`; Honk did not start the agent and pushed nothing.")
        assert body.count("setup: `sleep 2`") == 2  # the third never started
        assert honk.claude is not None and honk.claude.requests == []
        assert honk.github.pulls(REPO) == []
        assert seconds < 3 + 5, seconds  # 3 s budget; unbounded, 10 s and a pull request


def test_checks_past_the_deadline_are_cut_and_the_work_opens_as_a_draft(
        tmp_path: Path) -> None:
    with sample_honk(tmp_path, FIX) as honk:
        configure(honk, "timeout_minutes: 0.1\n"  # 6 seconds
                        "checks: [python3 -m unittest -q, sleep 10, sleep 10]\n")
        number, run, seconds = label_and_wait(honk)
        assert (run["state"], run["outcome"]) == ("done", "success"), run
        [pull] = honk.github.pulls(REPO)
        assert pull["draft"] is True
        assert status_of(honk, number).startswith(
            f"🚀 Opened a draft (the run's time budget of 6 seconds ran out during the checks): "
            f"#{pull['number']}")
        body = pull["body"]
        assert "The run's time budget of 6 seconds ran out during the checks; this is the " \
            "work done by then." in body
        assert "`sleep 10` → exit 124" in body and "timed out after" in body
        assert "Not run: the run's time budget ran out before it." in body
        assert "2 failed" in body
        assert seconds < 6 + 8, seconds  # unbounded: 20 s of checks


def test_a_check_round_past_the_deadline_stops_the_agent(tmp_path: Path) -> None:
    # Red checks go back to the agent, which then takes longer than the time left.
    script = [edit("return a - b", "return a * b"), report("Fix add()"),
              {"sleep": 30}, report("never reached")]
    with sample_honk(tmp_path, script) as honk:
        configure(honk, "timeout_minutes: 0.1\n"
                        "checks: ['sleep 2; python3 -m unittest -q']\n")
        number, run, seconds = label_and_wait(honk)
        assert (run["state"], run["outcome"]) == ("done", "success"), run
        [pull] = honk.github.pulls(REPO)
        assert pull["draft"] is True and pull["title"] == "Honk's unfinished attempt"
        assert status_of(honk, number).startswith(
            "🚀 Opened a draft (the run's time budget of 6 seconds ran out during the agent's "
            "work)")
        # The checks were not run again after the cut.
        assert "Not run: the run's time budget ran out before it." in pull["body"]
        assert seconds < 6 + 8, seconds  # unbounded: the model's 30 s answer, then checks
