"""What a run does when things are not simple: bad config, red checks, workflow files,
secrets in the agent's text, GitHub and Anthropic failures. Each through the real app."""

from __future__ import annotations

from pathlib import Path

from honk_app.run.status import MARKER
from honk_sim.claude import load_script
from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, demo_script
from honk_sim.harness import SIM_ANTHROPIC_KEY, OfflineHonk
from tests.conftest import edit, git_out, report, sample_honk

FIX = load_script(demo_script())


def run_issue(honk: OfflineHonk) -> tuple[int, dict[str, object]]:
    sim = honk.github
    number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
    sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
    return number, honk.wait_until_idle(2)[-1]


def status_of(honk: OfflineHonk, number: int) -> str:
    [status] = [c for c in honk.github.comments(REPO, number) if MARKER in c["body"]]
    return str(status["body"])


def test_a_typo_in_honk_yml_is_reported_in_one_sentence_and_nothing_runs(tmp_path: Path) -> None:
    with sample_honk(tmp_path, FIX) as honk:
        honk.github.push_files(REPO, "main", {".github/honk.yml": "max_turn: 10\n"},
                               author=MAINTAINER, message="Configure Honk")
        number, run = run_issue(honk)
        assert run["outcome"] == "bad_config"
        body = status_of(honk, number)
        assert body.startswith("😕") and "unknown key `max_turn`" in body
        assert honk.claude is not None and honk.claude.requests == []
        reactions = {r["content"] for r in honk.github.reactions(REPO, number)}
        assert reactions == {"eyes", "confused"}
        assert honk.github.pulls(REPO) == []


def test_agents_md_goes_into_the_system_prompt(tmp_path: Path) -> None:
    with sample_honk(tmp_path, FIX) as honk:
        honk.github.push_files(REPO, "main", {"AGENTS.md": "Always run unittest verbosely.\n"},
                               author=MAINTAINER, message="Agent notes")
        _, run = run_issue(honk)
        assert run["outcome"] == "success"
        assert honk.claude is not None
        system = str(honk.claude.requests[0]["system"])
        assert "Always run unittest verbosely." in system


def test_red_checks_go_back_to_the_agent_until_they_pass(tmp_path: Path) -> None:
    script = [edit("return a - b", "return a + b + 1"), report("Fix add()"),
              edit("return a + b + 1", "return a + b"), report("Fix add() properly")]
    with sample_honk(tmp_path, script) as honk:
        _, run = run_issue(honk)
        assert run["outcome"] == "success"
        assert honk.claude is not None
        feedback = str(honk.claude.requests[2]["messages"])
        assert "python3 -m unittest -q" in feedback and "FAILED" in feedback
        [pull] = honk.github.pulls(REPO)
        assert not pull["draft"]
        assert "all passed" in pull["body"]


def test_checks_still_red_after_the_rounds_open_a_draft(tmp_path: Path) -> None:
    script = [edit("return a - b", "return a * b"), report("Fix add()"),
              report("Still broken"), report("Still broken")]
    with sample_honk(tmp_path, script) as honk:
        number, run = run_issue(honk)
        assert run["outcome"] == "success"
        [pull] = honk.github.pulls(REPO)
        assert pull["draft"] is True
        assert "1 failed" in pull["body"]
        assert "draft" in status_of(honk, number)


def test_a_workflow_change_is_left_out_of_the_push_and_offered_as_a_patch(
    tmp_path: Path
) -> None:
    create_workflow = {"tool": "str_replace_based_edit_tool", "input": {
        "command": "create", "path": "/workspace/.github/workflows/ci.yml",
        "file_text": "on: push\njobs: {}\n"}}
    script = [FIX[1], create_workflow, report("Fix add() and add CI")]
    with sample_honk(tmp_path, script) as honk:
        _, run = run_issue(honk)
        assert run["outcome"] == "success", run
        [pull] = honk.github.pulls(REPO)
        changed = git_out(honk.github.git_dir(REPO), "diff", "--name-only",
                          f"main...{pull['head']['ref']}").split()
        assert changed == ["calc.py"]
        assert "`workflows`" in pull["body"] and "+on: push" in pull["body"]


def test_secrets_in_the_agents_text_never_reach_github(tmp_path: Path) -> None:
    token = "ghs_" + "A1b2C3d4E5" * 4
    leaky = report("Fix add()", summary=f"Key {SIM_ANTHROPIC_KEY} and token {token}.")
    with sample_honk(tmp_path, [*FIX[:-1], leaky]) as honk:
        _, run = run_issue(honk)
        assert run["outcome"] == "success"
        [pull] = honk.github.pulls(REPO)
        assert SIM_ANTHROPIC_KEY not in pull["body"] and token not in pull["body"]
        assert pull["body"].count("[redacted]") == 2


def test_a_brief_github_outage_and_a_secondary_rate_limit_are_ridden_out(
    tmp_path: Path
) -> None:
    with sample_honk(tmp_path, FIX) as honk:
        honk.github.fail_next(1, status=502, path_contains="/collaborators/")
        honk.github.rate_limit_next(1, retry_after=1)
        number, run = run_issue(honk)
        assert run["outcome"] == "success", run
        assert status_of(honk, number).startswith("🚀")


def test_an_anthropic_outage_ends_the_run_with_a_sentence(tmp_path: Path) -> None:
    with sample_honk(tmp_path, [{"error": 500, "times": 20}]) as honk:
        number, run = run_issue(honk)
        assert run["outcome"] == "model_unavailable"
        body = status_of(honk, number)
        assert body.startswith("😕") and "\n" not in body.split("\n\n")[0]
        assert SIM_ANTHROPIC_KEY not in body
        assert honk.github.pulls(REPO) == []


def test_the_agent_can_read_git_but_not_write_it(tmp_path: Path) -> None:
    script = [FIX[1],
              {"tool": "bash", "input": {"command": "git status --short; git log --oneline -1"}},
              {"tool": "bash", "input": {"command": "git commit -qam sneaky; echo rc=$?"}},
              report("Fix add()")]
    with sample_honk(tmp_path, script) as honk:
        _, run = run_issue(honk)
        assert run["outcome"] == "success"
        assert honk.claude is not None
        outputs = [str(request["messages"][-1]) for request in honk.claude.requests[2:4]]
        assert "M calc.py" in outputs[0] and "Initial commit" in outputs[0]
        assert "rc=0" not in outputs[1] and "Read-only file system" in outputs[1]
        [pull] = honk.github.pulls(REPO)
        branch = pull["head"]["ref"]
        log = git_out(honk.github.git_dir(REPO), "log", "--format=%s", f"main..{branch}")
        assert log.split("\n")[0] == "Fix add()"
