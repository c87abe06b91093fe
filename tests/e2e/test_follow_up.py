"""Reviews and `/honk` comments on pull requests become follow-up commits (issue 3).

The real app, worker, sandbox and git against the simulated GitHub; the scripted Claude
answers the task run first, then the follow-ups, in order.
"""

from __future__ import annotations

import time
from pathlib import Path

from honk_app.run.status import MARKER
from honk_sim.claude import load_script
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, demo_script
from honk_sim.harness import OfflineHonk
from tests.conftest import edit, git_out, report, sample_honk

TYPE_HINTS = [
    edit("def add(a, b):", "def add(a: int, b: int) -> int:"),
    edit("def mul(a, b):", "def mul(a: int, b: int) -> int:"),
    report("Add type hints to add() and mul()"),
]


def open_honk_pull(honk: OfflineHonk) -> tuple[int, str]:
    """Label the sample issue and let Honk open its pull request; (number, branch)."""
    sim = honk.github
    number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
    sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
    runs = honk.wait_until_idle(2)
    assert runs[-1]["outcome"] == "success", runs[-1]
    [pull] = sim.pulls(REPO)
    return pull["number"], pull["head"]["ref"]


def test_review_with_three_inline_comments(tmp_path: Path) -> None:
    with sample_honk(tmp_path, load_script(demo_script()) + TYPE_HINTS) as honk:
        sim = honk.github
        pull, branch = open_honk_pull(honk)
        before = sim.branches(REPO)[branch]
        delivery = sim.submit_review(REPO, pull, author=MAINTAINER, state="REQUEST_CHANGES",
                                     body="Nearly there.", comments=[
                                         {"path": "calc.py", "line": 4, "body": "Type hints?"},
                                         {"path": "calc.py", "line": 5, "body": "Good fix."},
                                         {"path": "calc.py", "line": 8, "body": "Here too."},
                                     ])
        assert delivery is not None and delivery.status == 202
        run = honk.wait_until_idle(3)[-1]
        assert (run["kind"], run["outcome"]) == ("followup", "success"), run

        after = sim.branches(REPO)[branch]
        assert git_out(sim.git_dir(REPO), "rev-list", f"{before}..{after}").split() == [after]
        diff = git_out(sim.git_dir(REPO), "diff", "-U0", before, after)
        assert "+def add(a: int, b: int) -> int:" in diff
        assert "+def mul(a: int, b: int) -> int:" in diff

        replies = [c for c in sim.review_comments(REPO, pull) if c.get("in_reply_to_id")]
        assert len(replies) == 3
        assert all(r["body"].startswith(f"Done in `{after[:7]}`") for r in replies)
        tops = {c["id"] for c in sim.review_comments(REPO, pull) if not c.get("in_reply_to_id")}
        assert {r["in_reply_to_id"] for r in replies} == tops
        assert MAINTAINER in sim.requested_reviewers(REPO, pull)
        assert len(sim.pulls(REPO)) == 1


def test_approval_and_honks_own_replies_start_nothing(tmp_path: Path) -> None:
    with sample_honk(tmp_path, load_script(demo_script()) + TYPE_HINTS) as honk:
        sim = honk.github
        pull, _ = open_honk_pull(honk)
        approval = sim.submit_review(REPO, pull, author=MAINTAINER, state="APPROVE",
                                     body="LGTM", comments=[])
        assert approval is not None and approval.status == 200
        sim.submit_review(REPO, pull, author=MAINTAINER, state="COMMENT", body="",
                          comments=[{"path": "calc.py", "line": 4, "body": "Type hints?"}])
        honk.wait_until_idle(3)
        sim.wait_for_deliveries()
        # Honk's reply in the thread came back as deliveries from a bot: no fourth run.
        bot_deliveries = [d for d in sim.deliveries if d.sender == honk.app.bot_login]
        assert any(d.event == "pull_request_review_comment" for d in bot_deliveries)
        time.sleep(0.5)
        assert len(honk.runs()) == 3


def test_honk_comment_on_a_humans_pull_request_pushes_there(tmp_path: Path) -> None:
    script = [edit("def mul(a, b):", 'def mul(a, b):\n    """Multiply."""'),
              report("Document mul()")]
    with sample_honk(tmp_path, script) as honk:
        sim = honk.github
        sim.push_files(REPO, "docs", {"NOTES.md": "notes\n"}, author=MAINTAINER,
                       message="Add notes")
        pull = sim.open_pull(REPO, head="docs", base="main", title="Notes", body="",
                             author=MAINTAINER)
        before = sim.branches(REPO)["docs"]
        delivery = sim.comment(REPO, pull, "/honk document mul()", author=MAINTAINER)
        assert delivery is not None and delivery.status == 202
        run = honk.wait_until_idle(2)[-1]
        assert run["outcome"] == "success", run
        after = sim.branches(REPO)["docs"]
        assert git_out(sim.git_dir(REPO), "rev-parse", f"{after}~1").strip() == before
        assert '"""Multiply."""' in git_out(sim.git_dir(REPO), "show", f"{after}:calc.py")
        assert len(sim.pulls(REPO)) == 1
        instruction = honk.claude.requests[0]["messages"][0]["content"]  # type: ignore[union-attr]
        assert "document mul()" in str(instruction)


def test_fork_pull_request_gets_a_refusal_and_no_push(tmp_path: Path) -> None:
    with sample_honk(tmp_path, [report("never used")]) as honk:
        sim = honk.github
        sim.add_user("outsider")
        fork = sim.fork_repo(REPO, owner="outsider")
        sim.push_files(fork, "patch", {"calc.py": "x = 1\n"}, author="outsider", message="x")
        pull = sim.open_pull(REPO, head="patch", base="main", title="Patch", body="",
                             author="outsider", head_repo=fork)
        fork_before = sim.branches(fork)
        sim.comment(REPO, pull, "/honk tidy this up", author=MAINTAINER)
        run = honk.wait_until_idle(2)[-1]
        assert run["outcome"] == "fork"
        [status] = [c for c in sim.comments(REPO, pull) if MARKER in c["body"]]
        assert status["body"].startswith("😕") and "fork" in status["body"]
        assert sim.branches(fork) == fork_before
        assert honk.claude is not None and honk.claude.requests == []


def test_honk_stop_cancels_a_long_run_and_pushes_nothing(tmp_path: Path) -> None:
    script = [edit("return a - b", "return a + b"), {"sleep": 60}, report("never reached")]
    with sample_honk(tmp_path, script) as honk:
        sim = honk.github
        number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        claude = honk.claude
        assert claude is not None
        deadline = time.monotonic() + 30
        while len(claude.requests) < 2:  # the second request is the one that hangs
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop = sim.comment(REPO, number, "/honk stop", author=MAINTAINER)
        assert stop is not None and stop.status == 202
        stopped_at = time.monotonic()
        run = honk.wait_until_idle(2, timeout=30)[-1]
        assert time.monotonic() - stopped_at < 15
        assert (run["state"], run["outcome"]) == ("cancelled", "stopped")
        assert not any(name.startswith("honk/") for name in sim.branches(REPO))
        [status] = [c for c in sim.comments(REPO, number) if MARKER in c["body"]]
        assert status["body"].startswith("✋") and "nothing was pushed" in status["body"]


def test_two_comments_50ms_apart_make_two_commits_in_order(tmp_path: Path) -> None:
    script = [*load_script(demo_script()),
              edit("def add(a, b):", "def add(a: int, b: int) -> int:"), report("Hint add()"),
              edit("def mul(a, b):", "def mul(a: int, b: int) -> int:"), report("Hint mul()")]
    with sample_honk(tmp_path, script) as honk:
        sim = honk.github
        pull, branch = open_honk_pull(honk)
        sim.comment(REPO, pull, "/honk type hints on add()", author=MAINTAINER)
        time.sleep(0.05)
        sim.comment(REPO, pull, "/honk type hints on mul()", author=MAINTAINER)
        runs = honk.wait_until_idle(4)
        assert [r["outcome"] for r in runs[-2:]] == ["success", "success"]
        log = git_out(sim.git_dir(REPO), "log", "--format=%s", f"main..{branch}").split("\n")
        assert log[:3] == ["Hint mul()", "Hint add()", "Fix add() to return the sum"]
        final = git_out(sim.git_dir(REPO), "show", f"{branch}:calc.py")
        assert "def add(a: int, b: int) -> int:" in final
        assert "def mul(a: int, b: int) -> int:" in final


def test_a_reviewers_push_during_the_run_is_kept(tmp_path: Path) -> None:
    script = [*load_script(demo_script()), {"sleep": 3}, *TYPE_HINTS]
    with sample_honk(tmp_path, script) as honk:
        sim = honk.github
        pull, branch = open_honk_pull(honk)
        claude = honk.claude
        assert claude is not None
        seen = len(claude.requests)
        sim.comment(REPO, pull, "/honk add type hints", author=MAINTAINER)
        deadline = time.monotonic() + 30
        while len(claude.requests) == seen:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        theirs = sim.push_files(REPO, branch, {"NOTES.md": "reviewer's note\n"},
                                author=MAINTAINER, message="Reviewer's note")
        run = honk.wait_until_idle(3)[-1]
        assert run["outcome"] == "success", run
        head = sim.branches(REPO)[branch]
        git_dir = sim.git_dir(REPO)
        assert git_out(git_dir, "merge-base", "--is-ancestor", theirs, head) == ""
        assert git_out(git_dir, "show", f"{head}:NOTES.md") == "reviewer's note\n"
        assert "def add(a: int, b: int) -> int:" in git_out(git_dir, "show", f"{head}:calc.py")
