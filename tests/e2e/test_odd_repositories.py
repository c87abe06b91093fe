"""Repositories that trip up git commands written for ordinary ones: a whole run each."""

from __future__ import annotations

from pathlib import Path

from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, SAMPLE_FILES, demo_script
from honk_sim.harness import offline_honk
from tests.conftest import git_out

HEADED = "octo/headed"


def test_a_repository_with_a_root_file_named_head_gets_its_pull_request(tmp_path: Path) -> None:
    with offline_honk(tmp_path, script=demo_script()) as honk:
        sim = honk.github
        sim.add_user(MAINTAINER)
        sim.create_repo(HEADED, {**SAMPLE_FILES, "HEAD": "a file named HEAD\n",
                                 "main": "a file named like the branch\n"})
        sim.set_permission(HEADED, MAINTAINER, "write")
        sim.install([HEADED])
        honk.wait_until_idle(1)
        number = sim.open_issue(HEADED, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        sim.label_issue(HEADED, number, "honk", sender=MAINTAINER)
        run = honk.wait_until_idle(2)[-1]
        assert (run["state"], run["outcome"]) == ("done", "success"), run
        [pull] = sim.pulls(HEADED)
        branch = pull["head"]["ref"]
        changed = git_out(sim.git_dir(HEADED), "diff", "--name-only", f"main...{branch}", "--")
        assert changed.split() == ["calc.py"]
