"""Nothing the agent could plant makes host-side git run code or leak the token.

In production the agent cannot write the git directory (the sandbox binds it read-only);
these tests plant traps there anyway, and in the working tree, and check that Honk's
commit, diff, rebase and push set off none of them. A control test shows that the same
traps do go off under plain git.
"""

import subprocess
from pathlib import Path

import pytest

from honk_app.workspace.checkout import Workspace, WorkspaceManager
from honk_app.workspace.git import GitError, GitRemote
from tests.conftest import git, git_env

pytestmark = pytest.mark.anyio

BOT = {"author_name": "honk[bot]", "author_email": "honk[bot]@users.noreply.github.com"}
HOOKS = (
    "pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "pre-push",
    "post-checkout", "post-rewrite", "pre-rebase", "post-merge", "reference-transaction",
    "pre-auto-gc", "post-index-change",
)  # fmt: skip





class Traps:
    """Scripts that leave a marker file named after themselves when anything runs them."""

    def __init__(self, root: Path) -> None:
        self.marks = root / "marks"
        self.marks.mkdir(parents=True)
        self.scripts = root / "trap-scripts"
        self.scripts.mkdir()

    def script(self, name: str, directory: Path | None = None) -> Path:
        path = (directory or self.scripts) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'#!/bin/sh\ntouch "{self.marks}/{path.parent.name}-{name}"\ncat\n')
        path.chmod(0o755)
        return path

    def sprung(self) -> list[str]:
        return sorted(p.name for p in self.marks.iterdir())


@pytest.fixture
def traps(tmp_path: Path) -> Traps:
    return Traps(tmp_path)


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    bare = tmp_path / "upstream" / "repo.git"
    seed = tmp_path / "seed"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=tmp_path)
    git("init", "--quiet", "--initial-branch=main", str(seed), cwd=tmp_path)
    (seed / "notes.txt").write_text("one\n")
    (seed / "other.txt").write_text("other\n")
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "Initial", cwd=seed)
    git("push", "--quiet", str(bare), "HEAD:refs/heads/main", "HEAD:refs/heads/honk/1-x", cwd=seed)
    return bare


def plant_everything(ws: Workspace, traps: Traps) -> None:
    """Hooks in every place git looks for them, and config naming commands to run."""
    for directory in (ws.common_dir / "hooks", ws.git_dir / "hooks", ws.path / ".githooks"):
        for hook in HOOKS:
            traps.script(hook, directory)
    config = ws.common_dir / "config"
    settings = {
        "core.repositoryFormatVersion": "1",
        "extensions.worktreeConfig": "true",
        "core.hooksPath": ".githooks",
        "core.fsmonitor": str(traps.script("fsmonitor")),
        "core.pager": str(traps.script("pager")),
        "core.editor": str(traps.script("editor")),
        "core.askPass": str(traps.script("askpass")),
        "sequence.editor": str(traps.script("sequence-editor")),
        "diff.external": str(traps.script("diff-external")),
        "filter.Evil.clean": str(traps.script("filter-clean")),
        "filter.Evil.smudge": str(traps.script("filter-smudge")),
        "filter.Evil.process": str(traps.script("filter-process")),
        "filter.Evil.required": "true",
        "diff.evil.command": str(traps.script("diff-command")),
        "diff.evil.textconv": str(traps.script("textconv")),
        "merge.evil.driver": str(traps.script("merge-driver")),
        "commit.gpgSign": "true",
        "log.showSignature": "true",
        "gpg.program": str(traps.script("gpg")),
        "rebase.autoStash": "true",
        "rebase.instructionFormat": "%s",
    }
    for key, value in settings.items():
        git("config", "--file", str(config), key, value, cwd=ws.path)
    worktree_config = ws.git_dir / "config.worktree"
    git(
        "config",
        "--file",
        str(worktree_config),
        "core.fsmonitor",
        str(traps.script("wt-fsmonitor")),
        cwd=ws.path,
    )
    (ws.path / ".gitattributes").write_text("* filter=Evil diff=evil merge=evil\n")


def control_env(ws: Workspace) -> dict[str, str]:
    return git_env(ws.path) | {"GIT_DIR": str(ws.git_dir), "GIT_WORK_TREE": str(ws.path)}


async def test_the_traps_go_off_under_plain_git(
    tmp_path: Path, traps: Traps, upstream: Path
) -> None:
    manager = WorkspaceManager(tmp_path / "data")
    remote = GitRemote(str(upstream))
    async with manager.checkout("o/r", remote, base_branch="main", branch="honk/2-y") as ws:
        plant_everything(ws, traps)
        (ws.path / "notes.txt").write_text("changed\n")
        (ws.path / ".gitattributes").unlink()  # a failing filter would stop the commit early
        plain = ["git", "-c", "commit.gpgSign=false", "commit", "--quiet", "-a", "-m", "plain"]
        subprocess.run(plain, cwd=ws.path, env=control_env(ws), capture_output=True, check=False)
        (ws.path / ".gitattributes").write_text("* filter=Evil\n")
        add = ["git", "add", ".gitattributes"]
        subprocess.run(add, cwd=ws.path, env=control_env(ws), capture_output=True, check=False)
    sprung = traps.sprung()
    assert {".githooks-pre-commit", ".githooks-post-commit"} <= set(sprung)
    assert "trap-scripts-wt-fsmonitor" in sprung
    assert "trap-scripts-filter-process" in sprung


async def test_commit_diff_rebase_and_push_run_nothing_planted(
    tmp_path: Path, traps: Traps, upstream: Path
) -> None:
    manager = WorkspaceManager(tmp_path / "data")
    remote = GitRemote(f"file://{upstream}")
    async with manager.checkout("o/r", remote, base_branch="main", branch="honk/1-x") as ws:
        plant_everything(ws, traps)
        (ws.path / "notes.txt").write_text("ours\n")
        (ws.path / "new.txt").write_text("new\n")
        sha = await ws.commit("Ours", co_authors=["Jane <jane@example.com>"], **BOT)
        assert sha is not None
        assert "+ours" in await ws.diff_against_base()
        assert "new.txt" in await ws.changed_paths()
        assert await ws.drop_paths(["new.txt"]) is not None

        # Someone else pushes meanwhile, so the push rebases (merge driver, rebase hooks).
        other = tmp_path / "other"
        git("clone", "--quiet", "--branch", "honk/1-x", str(upstream), str(other), cwd=tmp_path)
        (other / "other.txt").write_text("theirs\n")
        git("commit", "--quiet", "-am", "Theirs", cwd=other)
        git("push", "--quiet", "origin", "HEAD", cwd=other)

        pushed = await ws.push(remote)
        assert git("rev-parse", "refs/heads/honk/1-x", cwd=upstream) == pushed
        (ws.path / "later.txt").write_text("later\n")
        assert await ws.commit("Later", **BOT) is not None
        assert await ws.push(remote) is not None
    assert traps.sprung() == []
    assert git("show", "-s", "--format=%an", pushed, cwd=upstream) == BOT["author_name"]


async def test_a_rewritten_dot_git_file_does_not_redirect_git(
    tmp_path: Path, traps: Traps, upstream: Path
) -> None:
    manager = WorkspaceManager(tmp_path / "data")
    decoy = tmp_path / "decoy.git"
    git("init", "--quiet", "--bare", str(decoy), cwd=tmp_path)
    git(
        "config",
        "--file",
        str(decoy / "config"),
        "core.fsmonitor",
        str(traps.script("decoy")),
        cwd=tmp_path,
    )
    git("config", "--file", str(decoy / "config"), "core.bare", "false", cwd=tmp_path)
    async with manager.checkout(
        "o/r", GitRemote(str(upstream)), base_branch="main", branch="honk/3-z"
    ) as ws:
        (ws.path / ".git").write_text(f"gitdir: {decoy}\n")
        (ws.path / "notes.txt").write_text("changed\n")
        sha = await ws.commit("Into the real repository", **BOT)
        assert git("rev-parse", "HEAD", cwd=ws.path, env=control_env(ws)) == sha
    assert traps.sprung() == []
    assert not (decoy / "index").exists()


async def test_a_nested_repository_with_its_own_traps_is_inert(
    tmp_path: Path, traps: Traps, upstream: Path
) -> None:
    manager = WorkspaceManager(tmp_path / "data")
    async with manager.checkout(
        "o/r", GitRemote(str(upstream)), base_branch="main", branch="honk/4-w"
    ) as ws:
        nested = ws.path / "sub"
        nested.mkdir()
        git("init", "--quiet", cwd=nested)
        (nested / "f.txt").write_text("f\n")
        git("add", "f.txt", cwd=nested)
        git("commit", "--quiet", "-m", "nested", cwd=nested)
        git("config", "core.fsmonitor", str(traps.script("nested-fsmonitor")), cwd=nested)
        git("config", "core.hooksPath", str(traps.scripts), cwd=nested)
        (ws.path / "notes.txt").write_text("changed\n")
        await ws.commit("Beside a nested repository", **BOT)
        await ws.diff_against_base()
        assert ws.excluded_paths == ("sub",)
    assert traps.sprung() == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("url.file:///elsewhere/.insteadOf", "file://"),
        ("http.proxy", "http://127.0.0.1:9"),
        ("credential.helper", "!touch /tmp/never"),
        ("remote.origin.pushurl", "file:///elsewhere"),
        ("core.sshCommand", "touch /tmp/never"),
    ],
)
async def test_config_that_could_redirect_the_push_stops_it(
    tmp_path: Path, upstream: Path, key: str, value: str
) -> None:
    manager = WorkspaceManager(tmp_path / "data")
    remote = GitRemote(str(upstream))
    async with manager.checkout("o/r", remote, base_branch="main", branch="honk/5-v") as ws:
        (ws.path / "notes.txt").write_text("changed\n")
        await ws.commit("Change", **BOT)
        git("config", "--file", str(ws.common_dir / "config"), key, value, cwd=ws.path)
        with pytest.raises(GitError, match="refusing to talk to the remote"):
            await ws.push(remote)
        subprocess.run(
            ["git", "config", "--file", str(ws.common_dir / "config"), "--unset", key],
            check=True,
        )
    assert "honk/5-v" not in git("for-each-ref", "--format=%(refname)", cwd=upstream)
