"""A labelled issue becomes a verified pull request: the real app, worker, sandbox and git,
against the simulated GitHub and the scripted Claude on loopback."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from honk_app.run.status import MARKER
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, demo_script
from honk_sim.harness import OfflineHonk
from tests.conftest import git_out, sample_honk


@pytest.fixture
def honk(tmp_path: Path) -> Iterator[OfflineHonk]:
    with sample_honk(tmp_path, demo_script()) as running:
        yield running


def test_labelled_issue_becomes_a_verified_pull_request(honk: OfflineHonk, tmp_path: Path) -> None:
    sim = honk.github
    number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
    delivery = sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
    assert delivery is not None and delivery.status == 202
    runs = honk.wait_until_idle(2)
    task = runs[-1]
    assert (task["kind"], task["state"], task["outcome"]) == ("task", "done", "success")

    bot = honk.app.bot_login
    reactions = {(r["content"], r["user"]["login"]) for r in sim.reactions(REPO, number)}
    assert {("eyes", bot), ("rocket", bot)} <= reactions

    [status] = [c for c in sim.comments(REPO, number) if MARKER in c["body"]]
    assert status["user"]["login"] == bot
    assert len(status["history"]) > 2, "the status comment is edited in place as the run goes"
    assert status["body"].startswith("🚀 Opened #")

    [pull] = sim.pulls(REPO)
    branch = pull["head"]["ref"]
    assert branch == task["branch"] and branch.startswith(f"honk/{number}-")
    assert f"Fixes #{number}" in pull["body"]
    assert "all passed" in pull["body"]
    assert sim.requested_reviewers(REPO, pull["number"]) == [MAINTAINER]
    assert f"#{pull['number']}" in status["body"]

    git_dir = sim.git_dir(REPO)
    assert "return a + b" in git_out(git_dir, "show", f"{branch}:calc.py")
    message = git_out(git_dir, "log", "-1", "--format=%an%n%B", branch)
    assert message.startswith(f"{bot}\n")
    assert f"Co-authored-by: {MAINTAINER} <" in message
    changed = git_out(git_dir, "diff", "--name-only", f"main...{branch}").split()
    assert changed == ["calc.py"]

    checkout = tmp_path / "verify"
    subprocess.run(["git", "clone", "-q", "--branch", branch, str(git_dir), str(checkout)],
                   check=True)
    tests = subprocess.run(["python3", "-m", "unittest", "-q"], cwd=checkout,
                           capture_output=True, text=True)
    assert tests.returncode == 0, tests.stderr

    # GitHub's manual redelivery keeps the delivery id: it must change nothing.
    comments_before = sim.comments(REPO, number)
    again = sim.redeliver(delivery.id)
    assert again.status == 200
    assert len(honk.runs()) == len(runs)
    sim.wait_for_deliveries()
    assert sim.comments(REPO, number) == comments_before
    assert len(sim.pulls(REPO)) == 1


def test_read_only_user_gets_a_reply_and_no_run(honk: OfflineHonk) -> None:
    sim = honk.github
    sim.add_user("reader")
    sim.set_permission(REPO, "reader", "read")
    number = sim.open_issue(REPO, title="Please fix", body="x", author="reader")
    sim.label_issue(REPO, number, "honk", sender="reader")
    [*_, run] = honk.wait_until_idle(2)
    assert run["outcome"] == "refused"
    [reply] = sim.comments(REPO, number)
    assert reply["body"].startswith("@reader") and "write access" in reply["body"]
    assert sim.reactions(REPO, number) == []
    assert not any(name.startswith("honk/") for name in sim.branches(REPO))
    assert honk.claude is not None and honk.claude.requests == []


def test_a_bot_starts_nothing(honk: OfflineHonk) -> None:
    sim = honk.github
    sim.add_user("dependabot[bot]", type="Bot")
    sim.set_permission(REPO, "dependabot[bot]", "write")
    number = sim.open_issue(REPO, title="Bump", body="x", author=MAINTAINER)
    delivery = sim.label_issue(REPO, number, "honk", sender="dependabot[bot]")
    assert delivery is not None and delivery.status == 200
    sim.wait_for_deliveries()
    assert len(honk.runs()) == 1  # only the installation's label run
    assert sim.comments(REPO, number) == []
