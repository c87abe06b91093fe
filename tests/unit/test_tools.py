"""The agent's tools: bash through the real sandbox, the editor on real files."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from honk_app.agent.types import ToolOutput
from honk_app.sandbox.bubblewrap import Sandbox, SandboxLimits
from honk_app.sandbox.tools import AgentTools
from tests.conftest import sandbox_owned


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    (path / "src" / "pkg" / "deep").mkdir(parents=True)
    (path / ".git").mkdir()
    (path / ".git" / "config").write_text("[core]\n")
    (path / ".hidden").write_text("")
    (path / "src" / "app.py").write_text("def main():\n    return 1\n\n\nmain()\n")
    (path / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (path / "src" / "pkg" / "deep" / "too_deep.py").write_text("")
    return sandbox_owned(path)


@pytest.fixture
def tools(workspace: Path) -> AgentTools:
    return AgentTools(Sandbox(workspace, limits=SandboxLimits(timeout_seconds=20)), workspace)


def call(tools: AgentTools, name: str, **tool_input: Any) -> ToolOutput:
    return asyncio.run(tools.run_tool(name, tool_input))


def edit(tools: AgentTools, **tool_input: Any) -> ToolOutput:
    return call(tools, "str_replace_based_edit_tool", **tool_input)


# bash

def test_bash_returns_output(tools: AgentTools) -> None:
    assert call(tools, "bash", command="ls src") == ToolOutput("app.py\npkg")


def test_bash_reports_a_failing_status(tools: AgentTools) -> None:
    output = call(tools, "bash", command="echo oops >&2; exit 4")
    assert output == ToolOutput("oops\nexit code 4")


def test_bash_says_when_there_is_no_output(tools: AgentTools) -> None:
    assert call(tools, "bash", command="true") == ToolOutput("(no output)")
    assert call(tools, "bash", command="false") == ToolOutput("exit code 1")


def test_bash_timeout_is_an_error_with_advice(workspace: Path) -> None:
    tools = AgentTools(Sandbox(workspace, limits=SandboxLimits(timeout_seconds=0.3)), workspace)
    output = call(tools, "bash", command="echo waiting; sleep 30")
    assert output.is_error
    assert output.text.startswith("waiting\n[The command timed out after 0.3 s")
    assert "Run something narrower" in output.text


def test_bash_restart_and_bad_input(tools: AgentTools) -> None:
    restarted = call(tools, "bash", restart=True)
    assert not restarted.is_error and "restarted" in restarted.text
    assert call(tools, "bash").is_error
    assert call(tools, "bash", command="   ").is_error
    assert call(tools, "bash", command="echo a\0b").is_error


def test_unknown_tool(tools: AgentTools) -> None:
    output = call(tools, "computer", action="screenshot")
    assert output.is_error
    assert output.text.startswith("unknown tool 'computer'")


# view

def test_view_numbers_lines_like_cat_n(tools: AgentTools) -> None:
    output = edit(tools, command="view", path="/workspace/src/app.py")
    assert output == ToolOutput(
        "Here's the result of running `cat -n` on /workspace/src/app.py:\n"
        "     1\tdef main():\n     2\t    return 1\n     3\t\n     4\t\n     5\tmain()")


def test_view_range(tools: AgentTools) -> None:
    assert edit(tools, command="view", path="src/app.py", view_range=[2, 3]).text.endswith(
        "on /workspace/src/app.py:\n     2\t    return 1\n     3\t")
    assert edit(tools, command="view", path="src/app.py", view_range=[4, -1]).text.endswith(
        ":\n     4\t\n     5\tmain()")
    assert edit(tools, command="view", path="src/app.py", view_range=[5, 99]).text.endswith(
        ":\n     5\tmain()")
    for bad in ([0, 2], [6, -1], [3, 2], [1], "1-2"):
        assert edit(tools, command="view", path="src/app.py", view_range=bad).is_error, bad


def test_view_directory_two_levels_without_hidden(tools: AgentTools) -> None:
    output = edit(tools, command="view", path="/workspace")
    assert output.text.splitlines() == [
        "Here are the files and directories up to 2 levels deep in /workspace, excluding "
        "hidden items:",
        "/workspace/", "/workspace/src/", "/workspace/src/app.py", "/workspace/src/pkg/"]
    nested = edit(tools, command="view", path="src")
    assert nested.text.splitlines()[1:] == [
        "/workspace/src/", "/workspace/src/app.py", "/workspace/src/pkg/",
        "/workspace/src/pkg/deep/", "/workspace/src/pkg/mod.py"]


def test_view_errors(tools: AgentTools, workspace: Path) -> None:
    assert "does not exist" in edit(tools, command="view", path="nope.py").text
    (workspace / "blob.bin").write_bytes(b"\x00\x01\x02")
    assert "binary" in edit(tools, command="view", path="blob.bin").text
    os.mkfifo(workspace / "pipe")
    assert "not a regular file" in edit(tools, command="view", path="pipe").text
    assert edit(tools, command="view").is_error
    assert edit(tools, command="undo_edit", path="src/app.py").is_error


def test_long_view_is_capped_head_and_tail(workspace: Path) -> None:
    limits = SandboxLimits(timeout_seconds=20, output_limit_chars=2000)
    tools = AgentTools(Sandbox(workspace, limits=limits), workspace)
    (workspace / "long.txt").write_text("".join(f"row {n}\n" for n in range(5000)))
    output = edit(tools, command="view", path="long.txt")
    assert len(output.text) <= 2000
    assert "     1\trow 0\n" in output.text
    assert output.text.endswith("  5000\trow 4999")
    assert "characters cut from the middle" in output.text


# create

def test_create_makes_parents_and_overwrites_keeping_mode(tools: AgentTools,
                                                          workspace: Path) -> None:
    output = edit(tools, command="create", path="docs/new/guide.md", file_text="# Guide\n")
    assert output == ToolOutput("File created: /workspace/docs/new/guide.md")
    assert (workspace / "docs" / "new" / "guide.md").read_text() == "# Guide\n"
    script = workspace / "run.sh"
    script.write_text("old\n")
    script.chmod(0o755)
    again = edit(tools, command="create", path="/workspace/run.sh", file_text="#!/bin/sh\n")
    assert again == ToolOutput("File overwritten: /workspace/run.sh")
    assert script.read_text() == "#!/bin/sh\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert not [p for p in workspace.iterdir() if p.name.startswith(".honk-edit-")]


def test_create_refuses_a_directory(tools: AgentTools) -> None:
    output = edit(tools, command="create", path="src/pkg", file_text="x")
    assert output.is_error and "not a regular file" in output.text


# str_replace

def test_str_replace_once(tools: AgentTools, workspace: Path) -> None:
    output = edit(tools, command="str_replace", path="src/app.py",
                  old_str="    return 1\n", new_str="    value = 2\n    return value\n")
    assert not output.is_error
    assert (workspace / "src" / "app.py").read_text() == (
        "def main():\n    value = 2\n    return value\n\n\nmain()\n")
    assert "     2\t    value = 2\n     3\t    return value\n" in output.text
    assert output.text.startswith("The file /workspace/src/app.py has been edited.")


def test_str_replace_without_new_str_deletes(tools: AgentTools, workspace: Path) -> None:
    assert not edit(tools, command="str_replace", path="src/app.py", old_str="\n\nmain()").is_error
    assert (workspace / "src" / "app.py").read_text() == "def main():\n    return 1\n\n"


def test_str_replace_must_match_exactly_once(tools: AgentTools, workspace: Path) -> None:
    before = (workspace / "src" / "app.py").read_text()
    missing = edit(tools, command="str_replace", path="src/app.py", old_str="return 2",
                   new_str="x")
    assert missing.is_error and "does not appear verbatim" in missing.text
    twice = edit(tools, command="str_replace", path="src/app.py", old_str="main()", new_str="x")
    assert twice.is_error
    assert "occurs 2 times" in twice.text and "lines 1, 5" in twice.text
    assert (workspace / "src" / "app.py").read_text() == before


# insert

def test_insert_at_top_middle_and_end(tools: AgentTools, workspace: Path) -> None:
    target = workspace / "notes.txt"
    target.write_text("one\ntwo")  # no final newline
    assert not edit(tools, command="insert", path="notes.txt", insert_line=0,
                    insert_text="zero").is_error
    assert not edit(tools, command="insert", path="notes.txt", insert_line=2,
                    insert_text="one and a half\n").is_error
    output = edit(tools, command="insert", path="notes.txt", insert_line=4, insert_text="three")
    assert target.read_text() == "zero\none\none and a half\ntwo\nthree\n"
    assert output.text.endswith("     5\tthree\nReview the changes and make sure they are as "
                                "expected. Edit the file again if necessary.")


def test_insert_accepts_new_str_and_checks_the_line(tools: AgentTools, workspace: Path) -> None:
    assert not edit(tools, command="insert", path="src/pkg/mod.py", insert_line=1,
                    new_str="y = 2").is_error
    assert (workspace / "src" / "pkg" / "mod.py").read_text() == "x = 1\ny = 2\n"
    for line in (-1, 3, "1", True):
        output = edit(tools, command="insert", path="src/pkg/mod.py", insert_line=line,
                      insert_text="z")
        assert output.is_error and "from 0 (top) to 2" in output.text


# confinement

def test_paths_outside_the_workspace_are_refused(tools: AgentTools) -> None:
    for path in ("/etc/passwd", "/workspace/../etc/passwd", "../x", "src/../../x", "/work"):
        output = edit(tools, command="view", path=path)
        assert output.is_error, path
        assert "outside the workspace" in output.text or "'..' is not allowed" in output.text


def test_symlinks_inside_the_workspace_are_followed(tools: AgentTools, workspace: Path) -> None:
    (workspace / "link.py").symlink_to("src/app.py")
    (workspace / "abs").symlink_to("/workspace/src/pkg")
    (workspace / "src" / "up").symlink_to("../src/pkg")
    assert "def main()" in edit(tools, command="view", path="link.py").text
    assert not edit(tools, command="str_replace", path="abs/mod.py", old_str="x = 1",
                    new_str="x = 3").is_error
    assert "x = 3" in edit(tools, command="view", path="src/up/mod.py").text
    assert (workspace / "src" / "pkg" / "mod.py").read_text() == "x = 3\n"
    assert (workspace / "abs").is_symlink()


def test_symlinks_leaving_the_workspace_are_refused(tools: AgentTools, workspace: Path,
                                                    tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret\n")
    (workspace / "climb").symlink_to("../secret.txt")
    (workspace / "src" / "hop").symlink_to("../../")
    (workspace / "loop").symlink_to("loop")
    for path in ("climb", "src/hop/secret.txt"):
        output = edit(tools, command="view", path=path)
        assert output.is_error and "outside the workspace" in output.text, path
    assert "too many levels" in edit(tools, command="view", path="loop").text
    assert (tmp_path / "secret.txt").read_text() == "secret\n"


def test_git_is_refused_for_writes_but_readable(tools: AgentTools, workspace: Path) -> None:
    (workspace / "g").symlink_to(".git")
    attempts = [
        {"command": "create", "path": ".git/hooks/pre-commit", "file_text": "#!/bin/sh\n"},
        {"command": "str_replace", "path": "/workspace/.git/config", "old_str": "[core]",
         "new_str": "[core]\nhooksPath=/tmp"},
        {"command": "insert", "path": "g/config", "insert_line": 0, "insert_text": "x"},
        {"command": "create", "path": ".git", "file_text": "gitdir: /tmp"},
    ]
    for attempt in attempts:
        output = edit(tools, **attempt)
        assert output.is_error and "read-only" in output.text, attempt
    assert (workspace / ".git" / "config").read_text() == "[core]\n"
    assert not (workspace / ".git" / "hooks").exists()
    assert "[core]" in edit(tools, command="view", path=".git/config").text


def test_a_file_where_a_directory_is_expected(tools: AgentTools) -> None:
    output = edit(tools, command="create", path="src/app.py/inner.py", file_text="x")
    assert output.is_error
    assert "not a directory" in output.text


def test_links_that_look_inside_but_resolve_outside_are_refused(
        tools: AgentTools, workspace: Path, tmp_path: Path) -> None:
    # The attack as seen: `y -> .` makes `y/y/..` the workspace's parent, while the path
    # written out (`.github/../y/y/../secret.txt`) normalises to `y/secret.txt`, inside.
    (tmp_path / "secret.txt").write_text("host secret\n")
    (workspace / "y").symlink_to(".")
    (workspace / ".github").mkdir()
    (workspace / ".github" / "honk.yml").symlink_to("../y/y/../secret.txt")
    # The same through a chain of links: a -> b/x, b -> c, c -> ../..
    (workspace / "src" / "a").symlink_to("b/x")
    (workspace / "src" / "b").symlink_to("c")
    (workspace / "src" / "c").symlink_to("../..")
    for path in (".github/honk.yml", "/workspace/.github/honk.yml", "src/a"):
        for attempt in ({"command": "view"},
                        {"command": "create", "file_text": "overwritten\n"},
                        {"command": "str_replace", "old_str": "host", "new_str": "pwned"},
                        {"command": "insert", "insert_line": 0, "insert_text": "x"}):
            output = edit(tools, path=path, **attempt)
            assert output.is_error and "outside the workspace" in output.text, (path, attempt)
    assert (tmp_path / "secret.txt").read_text() == "host secret\n"
    assert not (workspace / "secret.txt").exists() and not (workspace / "x").exists()
    assert (workspace / ".github" / "honk.yml").is_symlink()


def test_a_chain_of_links_into_git_is_refused(tools: AgentTools, workspace: Path) -> None:
    (workspace / "g1").symlink_to("src/g2")
    (workspace / "src" / "g2").symlink_to("../.git")
    output = edit(tools, command="create", path="g1/config", file_text="[core]\nx=1\n")
    assert output.is_error and ".git" in output.text
    assert (workspace / ".git" / "config").read_text() == "[core]\n"
