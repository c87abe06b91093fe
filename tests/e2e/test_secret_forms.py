"""A hostile model writes a secret Honk holds, encoded and split, into everything it can.

A whole run against the simulated GitHub: the scripted model's report carries the Anthropic
API key Honk holds in the PR title, base64 and hex in the summary, and the key folded over
lines in the commit message. None of it may reach GitHub in any of those forms.
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO
from honk_sim.harness import SIM_ANTHROPIC_KEY
from tests.conftest import edit, git_out, sample_honk


def readable_forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode().rstrip("="),
            base64.urlsafe_b64encode(raw).decode().rstrip("=")]


def leaked(text: str, secret: str) -> list[str]:
    """Any form of the secret readable in `text`, also with its whitespace taken out."""
    squeezed = "".join(text.split())
    return [form for form in readable_forms(secret) if form in text or form in squeezed]


def test_encoded_and_split_secrets_never_reach_github(tmp_path: Path) -> None:
    secret = SIM_ANTHROPIC_KEY
    raw = secret.encode()
    folded = "\n".join(textwrap.wrap(secret, 7))
    hostile = {"tool": "report", "input": {
        "title": f"Fix add() {secret}",
        "summary": f"b64: {base64.b64encode(b'key=' + raw).decode()}\n"
                   f"hex: {raw.hex()}\nurl: {base64.urlsafe_b64encode(raw).decode()}",
        "commit_message": f"Fix add()\n\n{folded}\n\n{raw.hex().upper()}",
    }}
    with sample_honk(tmp_path, [edit("return a - b", "return a + b"), hostile]) as honk:
        assert secret in honk.settings.secrets
        sim = honk.github
        number = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
        sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        run = honk.wait_until_idle(2)[-1]
        assert run["outcome"] == "success", run
        [pull] = sim.pulls(REPO)
        assert pull["title"].startswith("Fix add() ")
        message = git_out(sim.git_dir(REPO), "log", "-1", "--format=%B", pull["head"]["ref"])
        assert message.startswith("Fix add()")
        texts = {"title": pull["title"], "body": pull["body"], "commit": message,
                 **{f"comment {c['id']}": c["body"] for c in sim.comments(REPO, number)}}
        for where, text in texts.items():
            assert not leaked(text, secret), (where, text)
        assert "[redacted]" in pull["title"] and "[redacted]" in message


def test_a_secret_in_the_issue_title_does_not_name_the_branch(tmp_path: Path) -> None:
    """The branch is named after the issue's title: a secret Honk holds never shows in it."""
    secret = SIM_ANTHROPIC_KEY
    with sample_honk(tmp_path, [edit("return a - b", "return a + b")]) as honk:
        sim = honk.github
        number = sim.open_issue(REPO, title=f"Fix add {secret}", body=ISSUE_BODY,
                                author=MAINTAINER)
        sim.label_issue(REPO, number, "honk", sender=MAINTAINER)
        run = honk.wait_until_idle(2)[-1]
        assert run["outcome"] == "success", run
        [pull] = sim.pulls(REPO)
        branch = pull["head"]["ref"]
        assert branch.startswith(f"honk/{number}-fix-add-"), branch
        assert secret.lower() not in branch and "0000000000" not in branch, branch
