"""`honk demo`: a labelled issue becomes a verified pull request, offline, in one command.

The simulated GitHub, the scripted Claude and the real app, worker and sandbox run on
loopback. The sample repository has a failing test; the issue describes the bug.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from honk_app.logs import configure_logging
from honk_app.redact import Redactor
from honk_sim.claude import load_script
from honk_sim.faults import FaultRule
from honk_sim.harness import OfflineHonk, offline_honk

REPO = "octo/calculator"
MAINTAINER = "mona"
SAMPLE_FILES = {
    "README.md": "# calculator\n\nA tiny calculator. Run the tests with "
    "`python3 -m unittest -q`.\n",
    "calc.py": '"""Arithmetic helpers."""\n\n\ndef add(a, b):\n    return a - b\n\n\n'
    "def mul(a, b):\n    return a * b\n",
    "test_calc.py": "import unittest\n\nfrom calc import add, mul\n\n\n"
    "class CalcTest(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
    "    def test_mul(self):\n        self.assertEqual(mul(2, 3), 6)\n\n\n"
    'if __name__ == "__main__":\n    unittest.main()\n',
    ".github/honk.yml": "checks:\n  - python3 -m unittest -q\nmax_turns: 20\n",
}
ISSUE_TITLE = "add() returns the difference, not the sum"
ISSUE_BODY = (
    "`add(2, 3)` gives `-1`; it should give `5`. `python3 -m unittest` fails on `test_add`."
)


REVIEW_COMMENTS = [
    {"path": "calc.py", "line": 4, "body": "Could add() have type hints?"},
    {"path": "calc.py", "line": 8, "body": "Same for mul(), please."},
]


def demo_script() -> Path:
    return _script("fix_sum.json")


def demo_turns() -> list[dict[str, Any]]:
    """The scripted Claude's answers: the fix, then the follow-up to the review."""
    return load_script(demo_script()) + load_script(_script("demo_review.json"))


def _script(name: str) -> Path:
    return Path(str(resources.files("honk_sim") / "scripts" / name))


def run_demo(
    *, json_line: bool, live_model: bool, keep: bool, faults_file: Path | None = None,
    verbose: bool = False,
) -> int:
    key = os.environ.get("ANTHROPIC_API_KEY") if live_model else None
    if live_model and not key:
        print("honk demo --live-model needs ANTHROPIC_API_KEY", file=sys.stderr)
        return 2
    try:
        faults = _faults(faults_file)
    except (OSError, ValueError) as error:
        print(f"honk demo --faults: {error}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="honk-demo-"))
    log_file = _logs_to(None if verbose else root.with_suffix(".log"))
    env = {"HONK_UNSAFE_NO_SANDBOX": os.environ.get("HONK_UNSAFE_NO_SANDBOX", "")}
    if faults:
        env["HONK_RETRY_SECONDS"] = "2"  # a run handed back is tried again at once
    started = time.monotonic()
    try:
        with offline_honk(
            root, script=None if live_model else demo_turns(), env=env, live_model_key=key,
            faults=faults,
        ) as honk:
            result = _play(honk, started)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        if log_file is not None:
            log_file.close()
            _say(f"The log lines of Honk and the simulators are in {log_file.name} "
                 "(`honk demo --verbose` shows them as they come).")
    if json_line:
        print(json.dumps(result))
    return 0 if result["pr_number"] and result["checks_passed"] else 1


def _logs_to(path: Path | None) -> TextIO | None:
    """Send every log line (Honk's, the simulators', uvicorn's) to `path`, kept after the
    demo, so that the narration reads alone; None: to standard error, as they come."""
    stream = path.open("a") if path is not None else None
    configure_logging(level="debug", fmt="console", redactor=Redactor(()), stream=stream)
    return stream


def _faults(path: Path | None) -> dict[str, list[dict[str, Any]]]:
    """The fault rules of `--faults`: {"github": [...], "claude": [...]}, checked."""
    if path is None:
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or set(data) - {"github", "claude"}:
        raise ValueError('the file holds {"github": [rules], "claude": [rules]}')
    for rules in data.values():
        if not isinstance(rules, list):
            raise ValueError("each simulator's rules are a JSON list")
        for rule in rules:
            FaultRule.parse(rule)
    return data


def _play(honk: OfflineHonk, started: float) -> dict[str, Any]:
    sim = honk.github
    _say(f"Simulated GitHub at {sim.web_url}; Honk at {honk.server.url}")
    sim.add_user(MAINTAINER)
    sim.create_repo(REPO, SAMPLE_FILES)
    sim.set_permission(REPO, MAINTAINER, "write")
    sim.install([REPO])
    number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
    _say(f"{MAINTAINER} opened {REPO}#{number}: {ISSUE_TITLE}")
    labelled_at = time.monotonic()
    delivery = sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
    _say(f"{MAINTAINER} labelled it `honk` → webhook answered {delivery.status}")
    runs = honk.wait_until_idle(2)  # the installation's label run, then the task
    task = next(run for run in runs if run["kind"] == "task")
    ack = _first_reaction_time(honk, number)
    _print_timeline(honk, labelled_at, "the label")
    pulls = sim.pulls(REPO)
    pull = pulls[0] if pulls else None
    branch = task["branch"]
    commits = _commits(sim.git_dir(REPO), branch) if pull else []
    if pull:
        _say("The pull request's diff:")
        print(_diff(sim.git_dir(REPO), pull["base"]["ref"], branch))
    status = sim.comments(REPO, number)
    status_text = next((c["body"] for c in status if "honk:status" in c["body"]), "")
    checks_passed = bool(pull) and "all passed" in (pull.get("body") or "")
    _say(f"Run {task['id']} ended: {task['state']} — {task['detail']}")
    followup_commits, replies = _review(honk, pull["number"], branch) if pull else ([], 0)
    return {
        "pr_number": pull["number"] if pull else None,
        "pr_url": pull["html_url"] if pull else None,
        "branch": branch,
        "commits": commits,
        "checks_passed": checks_passed,
        "status_comment": status_text,
        "seconds_to_ack": round(ack - labelled_at, 3) if ack else None,
        "followup_commits": followup_commits,
        "thread_replies": replies,
        "seconds_total": round(time.monotonic() - started, 3),
    }


def _review(honk: OfflineHonk, pull: int, branch: str) -> tuple[list[str], int]:
    """A reviewer asks for changes in two inline comments; Honk follows up."""
    sim = honk.github
    before = sim.branches(REPO)[branch]
    reviewed_at = time.monotonic()
    sim.submit_review(REPO, pull, author=MAINTAINER, state="REQUEST_CHANGES",
                      body="Looks right; two small things.", comments=REVIEW_COMMENTS)
    _say(f"{MAINTAINER} requested changes on #{pull} with {len(REVIEW_COMMENTS)} inline comments")
    run = honk.wait_until_idle(3)[-1]
    _print_timeline(honk, reviewed_at, "the review")
    after = sim.branches(REPO)[branch]
    commits = _git(sim.git_dir(REPO), "rev-list", "--reverse", f"{before}..{after}").split()
    if commits:
        _say("The follow-up commit:")
        print(_git(sim.git_dir(REPO), "show", "--format=%h %s", after))
    replies = [c for c in sim.review_comments(REPO, pull) if c.get("in_reply_to_id")]
    for reply in replies:
        shown = re.sub(r"\s*<!--.*?-->", "", reply["body"], flags=re.DOTALL)  # as GitHub shows it
        _say(f"reply in thread {reply['in_reply_to_id']}: {shown}")
    _say(f"Run {run['id']} ended: {run['state']} — {run['detail']}")
    return commits, len(replies)


def _first_reaction_time(honk: OfflineHonk, number: int) -> float | None:
    for entry in honk.github.timeline:
        if entry.method == "POST" and entry.path.endswith(f"/issues/{number}/reactions"):
            return float(entry.at)
    return None


def _print_timeline(honk: OfflineHonk, origin: float, what: str) -> None:
    _say(f"Timeline (seconds after {what}):")
    for entry in honk.github.timeline:
        if entry.at < origin:
            continue
        line = _describe(entry)
        if line:
            print(f"  {entry.at - origin:7.3f}s  {line}")


def _describe(entry: Any) -> str | None:
    path, method = entry.path, entry.method
    if entry.kind == "delivery":
        return f"webhook {entry.detail} → {entry.status}"
    if method == "POST" and path.endswith("/reactions"):
        return f"reaction {entry.detail or ''} on {path.split('/repos/')[-1]}"
    if method == "POST" and path.endswith("/comments"):
        return "status comment posted"
    if method == "PATCH" and "/issues/comments/" in path:
        return f"status comment edited{': ' + entry.detail if entry.detail else ''}"
    if entry.kind == "git" and "receive-pack" in path and method == "POST":
        return "git push"
    if method == "POST" and path.endswith("/pulls"):
        return "pull request opened"
    if method == "POST" and path.endswith("/requested_reviewers"):
        return "review requested"
    return None


def _commits(git_dir: Path, branch: str) -> list[str]:
    out = _git(git_dir, "rev-list", "--reverse", f"main..{branch}")
    return out.split()


def _diff(git_dir: Path, base: str, branch: str) -> str:
    return _git(git_dir, "diff", f"{base}...{branch}")


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True
    ).stdout


def _say(text: str) -> None:
    print(f"honk demo: {text}", flush=True)
