"""Runs survive faults: each fault is injected by the simulators' fault rules, through
the real app, and each test checks what a person sees on the issue: one pull request, one
status comment that ends in the true state, no reply twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from honk_app.run.pipeline import branch_name
from honk_app.run.status import MARKER
from honk_app.store.db import SQLiteDatabase
from honk_app.store.runs import RunStore
from honk_sim.claude import load_script
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, SAMPLE_FILES, demo_script
from honk_sim.harness import OfflineHonk, offline_honk
from tests.conftest import edit, git_out, report

FIX = load_script(demo_script())
BRANCH = branch_name(1, ISSUE_TITLE)
FAST_RETRIES = {"HONK_RETRY_SECONDS": "1"}


@contextlib.contextmanager
def faulty_honk(
    root: Path, script: Any = None, *, faults: dict[str, list[dict[str, Any]]] | None = None
) -> Iterator[OfflineHonk]:
    """Honk on the simulators with the demo's repository, runs handed back retried in 1 s."""
    with offline_honk(root, script=FIX if script is None else script, env=FAST_RETRIES,
                      faults=faults) as honk:
        sim = honk.github
        sim.add_user(MAINTAINER)
        sim.create_repo(REPO, SAMPLE_FILES)
        sim.set_permission(REPO, MAINTAINER, "write")
        sim.install([REPO])
        honk.wait_until_idle(1)
        yield honk


def label(honk: OfflineHonk, *, runs: int = 2, timeout: float = 120) -> dict[str, Any]:
    sim = honk.github
    number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
    sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
    return honk.wait_until_idle(runs, timeout=timeout)[-1]


def statuses(honk: OfflineHonk, number: int = 1) -> list[str]:
    return [c["body"] for c in honk.github.comments(REPO, number) if MARKER in c["body"]]


def the_status(honk: OfflineHonk, number: int = 1, *, timeout: float = 30) -> str:
    """The one status comment, once it no longer says "working" (an owed final state may
    reach GitHub a little after the run ended)."""
    deadline = time.monotonic() + timeout
    while True:
        found = statuses(honk, number)
        assert len(found) <= 1, f"{len(found)} status comments: {found}"
        if found and not found[0].startswith("👀"):
            return found[0]
        assert time.monotonic() < deadline, f"the status never left 'working': {found}"
        time.sleep(0.1)


def eventually(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def one_pull(honk: OfflineHonk) -> dict[str, Any]:
    pulls = honk.github.pulls(REPO)
    assert len(pulls) == 1, [p["head"]["ref"] for p in pulls]
    return pulls[0]


# --- the fault layer itself ------------------------------------------------------------------


def test_faults_are_set_over_http_and_run_out(tmp_path: Path) -> None:
    with faulty_honk(tmp_path) as honk:
        admin = f"{honk.github.web_url}/_sim/faults"
        rules = httpx.post(admin, json=[{"status": 503, "path": "/repos/octo/calculator$",
                                         "count": 2}]).json()
        assert [(r["status"], r["count"], r["hits"]) for r in rules] == [(503, 2, 0)]
        assert httpx.post(admin, json=[{"action": "explode"}]).status_code == 400
        api = f"{honk.github.api_url}/repos/{REPO}"
        assert [httpx.get(api).status_code for _ in range(3)] == [503, 503, 404]
        assert httpx.delete(admin).json() == []
        assert honk.claude is not None
        claude_admin = honk.settings.anthropic_base_url + "/_sim/faults"
        assert httpx.post(claude_admin, json={"status": 529}).json()[0]["status"] == 529
        answer = httpx.post(honk.settings.anthropic_base_url + "/v1/messages", json={},
                            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
        assert answer.status_code == 529
        assert answer.json()["error"]["type"] == "overloaded_error"


def test_resets_holds_and_slow_answers(tmp_path: Path) -> None:
    with faulty_honk(tmp_path) as honk:
        api = f"{honk.github.api_url}/repos/{REPO}"
        honk.github.add_faults([{"action": "reset", "path": "/repos/"}])
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(api)
        honk.github.add_faults([{"action": "hold", "seconds": 5, "method": "GET"}])
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(api, timeout=0.5)
        honk.github.add_faults([{"action": "slow", "seconds": 0.6}])
        started = time.monotonic()
        assert httpx.get(api).status_code == 404  # no token: the answer itself is normal
        assert time.monotonic() - started >= 0.6
        assert honk.claude is not None
        honk.claude.add_faults([{"action": "reset"}])
        with pytest.raises(httpx.TransportError):
            httpx.post(honk.settings.anthropic_base_url + "/v1/messages", json={})


# --- writes that are safe to repeat -----------------------------------------------------------


def test_a_pull_request_made_but_its_answer_lost_is_found_not_made_twice(tmp_path: Path) -> None:
    lost = {"action": "lose-after-acting", "status": 502, "method": "POST", "path": "/pulls$"}
    with faulty_honk(tmp_path, faults={"github": [lost]}) as honk:
        run = label(honk)
        assert run["outcome"] == "success", run
        pull = one_pull(honk)
        assert the_status(honk).startswith(f"🚀 Opened #{pull['number']}")
        assert run["pr_number"] == pull["number"]


def test_a_status_comment_made_but_its_answer_lost_is_not_posted_twice(tmp_path: Path) -> None:
    lost = {"action": "lose-after-acting", "method": "POST", "path": "/issues/1/comments$"}
    with faulty_honk(tmp_path, faults={"github": [lost]}) as honk:
        run = label(honk)
        assert run["outcome"] == "success", run
        assert the_status(honk).startswith("🚀 Opened #")
        one_pull(honk)


def test_a_review_reply_made_but_its_answer_lost_is_not_posted_twice(tmp_path: Path) -> None:
    script = [*FIX, edit("def mul(a, b):", "def mul(a: int, b: int) -> int:"),
              report("Type mul()")]
    with faulty_honk(tmp_path, script) as honk:
        label(honk)
        pull = one_pull(honk)["number"]
        honk.github.add_faults([{"action": "lose-after-acting", "status": 502, "method": "POST",
                                 "path": "/replies$"}])
        honk.github.submit_review(REPO, pull, author=MAINTAINER, state="REQUEST_CHANGES",
                                  body="", comments=[{"path": "calc.py", "line": 8,
                                                      "body": "Type hints here?"}])
        run = honk.wait_until_idle(3)[-1]
        assert run["outcome"] == "success", run
        replies = [c for c in honk.github.review_comments(REPO, pull) if c.get("in_reply_to_id")]
        assert len(replies) == 1, [r["body"] for r in replies]
        assert replies[0]["body"].startswith("Done in `")


def test_a_422_says_githubs_own_reason(tmp_path: Path) -> None:
    from honk_app.github.client import GitHubApp, GitHubError
    from honk_app.redact import Redactor

    with faulty_honk(tmp_path) as honk:
        label(honk)
        pull = one_pull(honk)

        async def open_again() -> str:
            app = GitHubApp(honk.settings, Redactor([]))
            installation = honk.runs()[-1]["installation_id"]
            gh = await app.for_repo(installation, REPO)
            try:
                # Only a PR by "someone" would be adopted: Honk's own is not, so the 422 stays.
                await gh.open_pull(branch=pull["head"]["ref"], base="main", title="t", body="b",
                                   author="someone")
            except GitHubError as error:
                return str(error)
            return "no error"

        said = asyncio.run(open_again())
        assert said.startswith("GitHub answered 422: Validation Failed; A pull request already "
                               f"exists for octo:{pull['head']['ref']}"), said


# --- the status comment tells the truth -----------------------------------------------------


def test_edits_of_the_status_failing_for_a_while_do_not_end_the_run(tmp_path: Path) -> None:
    # Longer than githubkit's own retries of a 5xx (1 + 4 + 9 s), which used to end the run.
    outage = {"status": 502, "method": "PATCH", "path": "/issues/comments/\\d+$",
              "for_seconds": 15}
    with faulty_honk(tmp_path) as honk:
        honk.github.add_faults([outage])
        run = label(honk)
        assert run["outcome"] == "success", run
        assert the_status(honk, timeout=40).startswith("🚀 Opened #")
        one_pull(honk)


@pytest.mark.parametrize("refusal", [
    {"status": 503},
    {"status": 403, "retry_after": 1},  # a secondary rate limit
], ids=["5xx", "secondary-limit"])
def test_the_final_state_is_sent_again_until_github_takes_it(
    tmp_path: Path, refusal: dict[str, Any]
) -> None:
    with faulty_honk(tmp_path) as honk:
        honk.github.add_faults([{**refusal, "method": "PATCH", "path": "/issues/comments/",
                                 "for_seconds": 600}])
        run = label(honk)
        assert run["outcome"] == "success", run
        assert run["status_owed"] == 1 and run["final_status"].startswith("🚀")
        [body] = statuses(honk)
        assert body.startswith("👀"), "GitHub took no edit during the outage"
        honk.github.clear_faults()
        assert the_status(honk, timeout=20).startswith("🚀 Opened #")
        honk.wait_for(lambda runs: runs[-1]["status_owed"] == 0, timeout=10)


def test_a_status_comment_that_cannot_be_created_appears_once_github_is_back(
    tmp_path: Path
) -> None:
    refused = {"status": 502, "method": "POST", "path": "/issues/1/comments$", "for_seconds": 600}
    with faulty_honk(tmp_path, faults={"github": [refused]}) as honk:
        run = label(honk)
        assert run["outcome"] == "success", run
        one_pull(honk)
        assert statuses(honk) == []
        honk.github.clear_faults()
        assert the_status(honk, timeout=20).startswith("🚀 Opened #")


def test_a_run_that_crashed_for_good_says_so_on_the_issue(tmp_path: Path) -> None:
    # The agent's first answer never comes: the run sits at "working" while its (third)
    # worker dies. Its lease is taken away as a dead worker's would be.
    with faulty_honk(tmp_path, [{"sleep": 60}, *FIX]) as honk:
        sim = honk.github
        number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        honk.wait_for(lambda runs: runs[-1]["state"] == "running"
                      and runs[-1]["status_comment_id"] is not None)
        assert honk.settings.sqlite_path is not None

        async def third_worker_dies() -> None:
            db = SQLiteDatabase(honk.settings.sqlite_path)  # type: ignore[arg-type]
            db.start()
            store = RunStore(db)
            run_id = honk.runs()[-1]["id"]
            await store.update(run_id, attempts=3, worker_id="elsewhere:1:dead", heartbeat_at=0)
            assert await store.requeue_stale(60.0) == 1
            await db.close()

        asyncio.run(third_worker_dies())
        run = honk.wait_until_idle(2)[-1]
        assert (run["state"], run["outcome"]) == ("failed", "crashed")
        body = the_status(honk, number, timeout=20)
        assert body.startswith("😕 **Honk stopped**: Honk stopped unexpectedly"), body
        eventually(lambda: "confused" in {r["content"] for r in sim.reactions(REPO, number)})
        assert sim.pulls(REPO) == []


# --- short faults are ridden out ----------------------------------------------------------------


def test_a_reset_a_bare_429_and_a_401_are_ridden_out(tmp_path: Path) -> None:
    faults = [
        {"action": "reset", "method": "GET", "path": "/collaborators/"},
        {"status": 429, "method": "GET", "path": "/issues/1$"},
        {"status": 401, "method": "GET", "path": f"/repos/{REPO}$"},
    ]
    with faulty_honk(tmp_path, faults={"github": faults}) as honk:
        run = label(honk)
        assert run["outcome"] == "success", run
        assert the_status(honk).startswith("🚀 Opened #")
        one_pull(honk)
        tokens = [e for e in honk.github.timeline if e.path.endswith("/access_tokens")]
        assert len(tokens) >= 2, "the 401 did not mint a new token"


def test_a_reaction_github_refuses_for_28_seconds_does_not_end_the_run(tmp_path: Path) -> None:
    refused = {"status": 502, "path": "/reactions$", "for_seconds": 28}
    with faulty_honk(tmp_path, faults={"github": [refused]}) as honk:
        started = time.monotonic()
        run = label(honk)
        assert run["outcome"] == "success", run
        assert time.monotonic() - started < 28, "the run waited for a reaction"
        assert the_status(honk).startswith("🚀 Opened #")
        one_pull(honk)


def test_a_failed_push_hands_the_run_back_and_the_same_commit_is_pushed(tmp_path: Path) -> None:
    dropped = {"status": 502, "method": "POST", "path": "git-receive-pack$", "count": 3}
    with faulty_honk(tmp_path, faults={"github": [dropped]}) as honk:
        run = label(honk)
        assert (run["outcome"], run["attempts"]) == ("success", 2), run
        assert honk.claude is not None and len(honk.claude.requests) == len(FIX), \
            "the agent was paid for twice"
        pull = one_pull(honk)
        body = the_status(honk)
        assert body.startswith(f"🚀 Opened #{pull['number']}")
        assert "picked up again (attempt 2)" in body
        log = git_out(honk.github.git_dir(REPO), "log", "--format=%an %s",
                      f"main..{pull['head']['ref']}")
        assert log.splitlines() == ["honk[bot] Fix add() to return the sum"]


def test_a_failed_fetch_hands_the_run_back_before_the_agent_starts(tmp_path: Path) -> None:
    dropped = {"status": 502, "method": "POST", "path": "git-upload-pack$", "count": 3}
    with faulty_honk(tmp_path, faults={"github": [dropped]}) as honk:
        run = label(honk)
        assert (run["outcome"], run["attempts"]) == ("success", 2), run
        assert the_status(honk).startswith("🚀 Opened #")
        one_pull(honk)


def test_an_anthropic_overload_after_an_edit_is_waited_out(tmp_path: Path) -> None:
    # Five requests per SDK call (four retries): 12 overloaded answers outlast two calls.
    script = [FIX[0], FIX[1], {"error": 529, "times": 12}, *FIX[2:]]
    with faulty_honk(tmp_path, script) as honk:
        run = label(honk)
        assert run["outcome"] == "success", run
        body = the_status(honk)
        assert body.startswith("🚀 Opened #") and "Anthropic is overloaded; waiting" in body
        branch = one_pull(honk)["head"]["ref"]
        assert "return a + b" in git_out(honk.github.git_dir(REPO), "show", f"{branch}:calc.py")


def test_malformed_tool_input_goes_back_to_the_model(tmp_path: Path) -> None:
    script = [{"tool": "str_replace_based_edit_tool", "input": "calc.py"},
              {"tool": "report", "input": "Fixed it"}, *FIX]
    with faulty_honk(tmp_path, script) as honk:
        run = label(honk)
        assert run["outcome"] == "success", run
        assert honk.claude is not None
        told = [str(r["messages"][-1]) for r in honk.claude.requests[1:3]]
        assert all("must be a JSON object" in said for said in told), told
        one_pull(honk)


# --- Honk's branches are Honk's -----------------------------------------------------------------


def test_a_branch_holding_someone_elses_commit_is_not_built_on(tmp_path: Path) -> None:
    with faulty_honk(tmp_path) as honk:
        honk.github.add_user("mallory")
        honk.github.push_files(REPO, BRANCH, {"SECRET_PLANS.md": "world domination\n"},
                               author="mallory", message="My plans")
        run = label(honk)
        assert run["outcome"] == "success", run
        pull = one_pull(honk)
        assert pull["head"]["ref"] == f"{BRANCH}-2"
        changed = git_out(honk.github.git_dir(REPO), "diff", "--name-only",
                          f"main...{pull['head']['ref']}").split()
        assert changed == ["calc.py"]


def test_a_persons_pull_request_from_the_branch_name_is_left_alone(tmp_path: Path) -> None:
    with faulty_honk(tmp_path) as honk:
        sim = honk.github
        # Their pull request takes number 1, so the issue is number 2.
        branch = branch_name(2, ISSUE_TITLE)
        sim.push_files(REPO, branch, {"notes.md": "mine\n"}, author=MAINTAINER, message="Notes")
        theirs = sim.open_pull(REPO, head=branch, base="main", title="My notes",
                               body="Please keep this text.", author=MAINTAINER)
        run = label(honk, runs=2)
        assert run["outcome"] == "success", run
        pulls = {p["number"]: p for p in sim.pulls(REPO)}
        assert pulls[theirs]["body"] == "Please keep this text."
        assert pulls[theirs]["head"]["sha"] == sim.branches(REPO)[branch]
        [honks] = [p for p in pulls.values() if p["number"] != theirs]
        assert honks["head"]["ref"] == f"{branch}-2"


def test_a_follow_up_after_the_branch_was_deleted_ends_with_a_sentence(tmp_path: Path) -> None:
    with faulty_honk(tmp_path) as honk:
        sim = honk.github
        label(honk)
        pull = one_pull(honk)
        git_out(sim.git_dir(REPO), "update-ref", "-d", f"refs/heads/{pull['head']['ref']}")
        sim.comment(REPO, pull["number"], "/honk also add type hints", author=MAINTAINER)
        run = honk.wait_until_idle(3)[-1]
        assert run["outcome"] == "branch_deleted", run
        body = the_status(honk, pull["number"])
        assert body.startswith("😕") and "was deleted" in body
        assert pull["head"]["ref"] not in sim.branches(REPO)


def test_an_empty_repository_ends_with_a_sentence(tmp_path: Path) -> None:
    with faulty_honk(tmp_path) as honk:
        git_out(honk.github.git_dir(REPO), "update-ref", "-d", "refs/heads/main")
        run = label(honk)
        assert run["outcome"] == "empty_repository", run
        body = the_status(honk)
        assert body.startswith("😕") and "no commits" in body
