"""What people without write access can make Honk do: nothing, and hear so once.

Whole runs: the real app and worker against the simulated GitHub, where the outsider has
read access to the repository.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from honk_app.run.status import MARKER
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO
from honk_sim.github import GitHubSim
from tests.conftest import edit, report, sample_honk

OUTSIDER = "drive-by"


def wait_until(check: Callable[[], Any], *, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def refusals(sim: GitHubSim, number: int) -> list[dict[str, Any]]:
    return [c for c in sim.comments(REPO, number)
            if c["body"].startswith(f"@{OUTSIDER} ") and MARKER not in c["body"]]


def confused(sim: GitHubSim, number: int, comment_id: int) -> bool:
    return any(r["content"] == "confused"
               for r in sim.reactions(REPO, number, comment_id=comment_id))


def test_an_outsiders_stop_changes_nothing_and_a_writers_stop_still_works(
    tmp_path: Path,
) -> None:
    script = [edit("return a - b", "return a + b"), {"sleep": 60}, report("never reached")]
    with sample_honk(tmp_path, script) as honk:
        sim = honk.github
        sim.add_user(OUTSIDER)
        sim.set_permission(REPO, OUTSIDER, "read")
        number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        claude = honk.claude
        assert claude is not None
        wait_until(lambda: len(claude.requests) >= 2)  # the second request hangs

        stop = sim.comment(REPO, number, "/honk stop", author=OUTSIDER)
        assert stop is not None and stop.status == 202
        [refusal] = wait_until(lambda: refusals(sim, number))
        assert "can stop it" in refusal["body"] and "goes on" in refusal["body"]
        time.sleep(3)  # more than a heartbeat: a cancel would have landed by now
        [run] = [r for r in honk.runs() if r["kind"] == "task"]
        assert (run["state"], run["cancel_requested"]) == ("running", 0)

        # Again: no second comment, a 😕 on the new attempt.
        sim.comment(REPO, number, "/honk stop", author=OUTSIDER)
        [again] = [c for c in sim.comments(REPO, number) if c["body"] == "/honk stop"][1:]
        wait_until(lambda: confused(sim, number, again["id"]))
        assert len(refusals(sim, number)) == 1
        assert honk.runs()[-1]["state"] == "running"

        # The maintainer's stop still stops it, within a few heartbeats.
        stopped_at = time.monotonic()
        sim.comment(REPO, number, "/honk stop", author=MAINTAINER)
        run = honk.wait_until_idle(2, timeout=30)[-1]
        assert time.monotonic() - stopped_at < 15
        assert (run["state"], run["outcome"]) == ("cancelled", "stopped")
        assert not any(name.startswith("honk/") for name in sim.branches(REPO))


def test_five_outsider_requests_get_one_refusal_then_reactions(tmp_path: Path) -> None:
    with sample_honk(tmp_path, []) as honk:
        sim = honk.github
        sim.add_user(OUTSIDER)
        sim.set_permission(REPO, OUTSIDER, "read")
        number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        for n in range(5):
            delivery = sim.comment(REPO, number, f"/honk try harder {n}", author=OUTSIDER)
            assert delivery is not None and delivery.status == 202
        runs = honk.wait_until_idle(6)  # the installation's label run, and five refusals
        assert [r["outcome"] for r in runs if r["kind"] == "task"] == ["refused"] * 5
        [refusal] = refusals(sim, number)
        assert "write access" in refusal["body"]
        attempts = [c for c in sim.comments(REPO, number) if c["body"].startswith("/honk")]
        assert len(attempts) == 5
        assert [confused(sim, number, c["id"]) for c in attempts] == [False] + [True] * 4
        # Another issue is another conversation: the outsider is told there too, once.
        other = sim.open_issue(REPO, title="Another", body="x", author=MAINTAINER)
        sim.comment(REPO, other, "/honk go", author=OUTSIDER)
        honk.wait_until_idle(7)
        assert len(refusals(sim, other)) == 1
