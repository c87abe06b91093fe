"""The workspace against real git: bare repositories on disk, and one served over smart
HTTP by `git http-backend` behind a token check."""

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from honk_app.sandbox.links import link_escapes
from honk_app.workspace.checkout import BranchInUse, NotAFile, Workspace, WorkspaceManager
from honk_app.workspace.git import GitError, GitRemote, PushRejected
from honk_sim.git_server import GitHttpServer
from tests.conftest import git, git_env

pytestmark = pytest.mark.anyio

BOT = {"author_name": "honk[bot]", "author_email": "honk[bot]@users.noreply.github.com"}





def ws_git(workspace: Workspace, *args: str) -> str:
    """git on the workspace, the way a person on the host would look at it."""
    env = git_env(workspace.path) | {
        "GIT_DIR": str(workspace.git_dir),
        "GIT_WORK_TREE": str(workspace.path),
    }
    return git(*args, cwd=workspace.path, env=env)


class Upstream:
    """A bare repository standing in for GitHub, and a way for others to push to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bare = root / "owner" / "repo.git"
        self.bare.parent.mkdir(parents=True)
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare), cwd=root)
        self._clones = 0
        self.push_files(
            "main",
            {".gitignore": "build/\n", "README.md": "# repo\n", "src/sum.py": "total = 1\n"},
            "Initial commit",
        )

    def sha(self, ref: str) -> str:
        return git("rev-parse", ref, cwd=self.bare)

    def has_ref(self, ref: str) -> bool:
        result = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", ref],
            cwd=self.bare,
            env=git_env(self.root),
            capture_output=True,
        )
        return result.returncode == 0

    def show(self, ref: str, path: str) -> str:
        return git("show", f"{ref}:{path}", cwd=self.bare)

    def push_files(
        self, branch: str, files: dict[str, str], message: str, *, start: str = "main",
        links: dict[str, str] | None = None,
    ) -> str:
        """Someone else commits these files on `branch` (made from `start`) and pushes."""
        self._clones += 1
        clone = self.root / f"clone-{self._clones}"
        git("clone", "--quiet", str(self.bare), str(clone), cwd=self.root)
        if self.has_ref(f"refs/heads/{start}"):
            ref = branch if self.has_ref(f"refs/heads/{branch}") else start
            git("checkout", "--quiet", "-B", branch, f"origin/{ref}", cwd=clone)
        else:
            git("checkout", "--quiet", "-b", branch, cwd=clone)
        for name, content in files.items():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_text(content)
        for name, target in (links or {}).items():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).symlink_to(target)
        git("add", "--all", cwd=clone)
        git("commit", "--quiet", "-m", message, cwd=clone)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=clone)
        return git("rev-parse", "HEAD", cwd=clone)


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream")


@pytest.fixture
def manager(tmp_path: Path) -> WorkspaceManager:
    return WorkspaceManager(tmp_path / "data")


def remote_of(upstream: Upstream) -> GitRemote:
    return GitRemote(f"file://{upstream.bare}")


async def test_first_checkout_creates_the_mirror_and_starts_from_base(
    manager: WorkspaceManager, upstream: Upstream, tmp_path: Path
) -> None:
    mirror = tmp_path / "data" / "mirrors" / "owner" / "repo.git"
    assert not mirror.exists()
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/12-fix-the-sum"
    ) as ws:
        assert (mirror / "HEAD").is_file()
        assert ws.common_dir == mirror
        assert ws.git_dir.parent.parent == mirror
        assert ws.base_sha == ws.start_sha == upstream.sha("main")
        assert ws_git(ws, "symbolic-ref", "HEAD") == "refs/heads/honk/12-fix-the-sum"
        assert ws_git(ws, "rev-parse", "HEAD") == ws.base_sha
        assert (ws.path / "src" / "sum.py").read_text() == "total = 1\n"
        assert (ws.path / ".git").read_text() == f"gitdir: {ws.git_dir}\n"
        assert ws_git(ws, "status", "--porcelain", "--ignored") == ""


async def test_a_second_run_reuses_the_mirror_and_slot_and_starts_clean(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    remote = remote_of(upstream)
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/1-a") as ws:
        first_path, mirror = ws.path, ws.common_dir
        (mirror / "kept-marker").write_text("the same mirror\n")
        (ws.path / "untracked.txt").write_text("left behind\n")
        (ws.path / "build").mkdir()
        (ws.path / "build" / "ignored.o").write_text("ignored\n")
        (ws.path / "src" / "sum.py").write_text("total = 2\n")
        (ws.path / "README.md").unlink()
        (ws.path / "nested").mkdir()
        git("init", "--quiet", cwd=ws.path / "nested")
        ws_git(ws, "branch", "stray")
        ws_git(ws, "tag", "stray-tag")
        ws_git(ws, "update-ref", "refs/stash", "HEAD")
        ws_git(ws, "add", "src/sum.py")  # staged state in the index
        (ws.git_dir / "MERGE_HEAD").write_text(ws.start_sha + "\n")
        (ws.path / ".git").write_text("gitdir: /somewhere/else\n")
    new_tip = upstream.push_files("main", {"src/other.py": "x = 1\n"}, "Meanwhile on main")

    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/2-b") as ws:
        assert ws.path == first_path
        assert (ws.common_dir / "kept-marker").exists()
        assert ws.start_sha == new_tip
        assert ws_git(ws, "rev-parse", "HEAD") == new_tip
        assert not (ws.path / "untracked.txt").exists()
        assert not (ws.path / "build").exists()
        assert not (ws.path / "nested").exists()
        assert (ws.path / "README.md").read_text() == "# repo\n"
        assert (ws.path / "src" / "sum.py").read_text() == "total = 1\n"
        assert (ws.path / "src" / "other.py").exists()
        assert ws_git(ws, "status", "--porcelain", "--ignored") == ""
        assert ws_git(ws, "for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags") == (
            "refs/heads/honk/2-b"
        )
        assert ws_git(ws, "for-each-ref", "refs/stash") == ""
        assert not (ws.git_dir / "MERGE_HEAD").exists()
        assert (ws.path / ".git").read_text() == f"gitdir: {ws.git_dir}\n"
        assert await ws.changed_paths() == []


async def test_a_slot_a_crashed_process_left_dirty_is_cleaned_at_checkout(
    manager: WorkspaceManager, upstream: Upstream, tmp_path: Path
) -> None:
    remote = remote_of(upstream)
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/1-a") as ws:
        slot, git_dir = ws.path, ws.git_dir
    # What a process killed mid-run leaves: its branch checked out, edits, git's state files.
    env = git_env(slot) | {"GIT_DIR": str(git_dir), "GIT_WORK_TREE": str(slot)}
    git("checkout", "--quiet", "-b", "honk/crashed", cwd=slot, env=env)
    (slot / "src" / "sum.py").write_text("total = 99\n")
    (slot / "half-written.txt").write_text("junk\n")
    (slot / "build").mkdir()
    (slot / "build" / "cache.o").write_text("ignored\n")
    git("add", "--all", cwd=slot, env=env)
    (git_dir / "rebase-merge").mkdir()
    (git_dir / "ORIG_HEAD").write_text(upstream.sha("main") + "\n")
    (git_dir / "index.lock").write_text("")

    fresh_process = WorkspaceManager(tmp_path / "data")
    async with fresh_process.checkout(
        "owner/repo", remote, base_branch="main", branch="honk/2-b"
    ) as ws:
        assert ws.path == slot
        assert ws_git(ws, "status", "--porcelain", "--ignored") == ""
        assert (ws.path / "src" / "sum.py").read_text() == "total = 1\n"
        assert not (git_dir / "rebase-merge").exists()
        assert not (git_dir / "ORIG_HEAD").exists()
        assert ws_git(ws, "for-each-ref", "--format=%(refname)", "refs/heads") == (
            "refs/heads/honk/2-b"
        )


async def test_an_existing_remote_branch_is_continued(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    tip = upstream.push_files("honk/7-x", {"src/sum.py": "total = 7\n"}, "Earlier run")
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/7-x"
    ) as ws:
        assert ws.start_sha == tip
        assert ws.base_sha == upstream.sha("main")
        assert (ws.path / "src" / "sum.py").read_text() == "total = 7\n"
        assert await ws.changed_paths() == ["src/sum.py"]


async def test_commit_has_the_identity_and_co_author_trailers(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/3-c"
    ) as ws:
        (ws.path / "src" / "sum.py").write_text("total = 3\n")
        (ws.path / "new.txt").write_text("new\n")
        sha = await ws.commit(
            "Fix the sum\n\n#3 is fixed by adding one.",
            co_authors=["Jane Doe <jane@example.com>", "Joe <joe@example.com>"],
            **BOT,
        )
        assert sha == ws_git(ws, "rev-parse", "HEAD")
        assert ws_git(ws, "rev-parse", "HEAD^") == ws.start_sha
        fields = ws_git(ws, "log", "-1", "--format=%an|%ae|%cn|%ce").split("|")
        assert fields == [BOT["author_name"], BOT["author_email"]] * 2
        assert ws_git(ws, "log", "-1", "--format=%B") == (
            "Fix the sum\n\n#3 is fixed by adding one.\n\n"
            "Co-authored-by: Jane Doe <jane@example.com>\nCo-authored-by: Joe <joe@example.com>"
        )
        assert ws_git(ws, "show", "--format=", "--name-only", "HEAD").splitlines() == [
            "new.txt",
            "src/sum.py",
        ]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
async def test_a_workspace_owned_by_another_user_still_commits(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    # The sandbox may run the agent as another user; git's ownership check must not
    # stop the host from committing what it wrote.
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/23-q"
    ) as ws:
        (ws.path / "agent.txt").write_text("written by the agent\n")
        for path in [ws.path, *ws.path.rglob("*")]:
            os.lchown(path, 4321, 4321)
        assert await ws.commit("From another user", **BOT) is not None


async def test_nothing_to_commit_gives_none(manager: WorkspaceManager, upstream: Upstream) -> None:
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/4-d"
    ) as ws:
        (ws.path / "build").mkdir()
        (ws.path / "build" / "out.o").write_text("ignored output\n")
        assert await ws.commit("Nothing", **BOT) is None
        assert ws_git(ws, "rev-parse", "HEAD") == ws.start_sha
        with pytest.raises(ValueError):
            await ws.commit("   ", **BOT)
        with pytest.raises(ValueError):
            await ws.commit("x", co_authors=["Eve <e@x>\nSigned-off-by: forged"], **BOT)


async def test_push_creates_the_branch_on_the_remote(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    remote = remote_of(upstream)
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/5-e") as ws:
        (ws.path / "src" / "sum.py").write_text("total = 5\n")
        sha = await ws.commit("Five", **BOT)
        assert await ws.push(remote) == sha
        assert upstream.sha("refs/heads/honk/5-e") == sha
        (ws.path / "more.txt").write_text("more\n")
        second = await ws.commit("More", **BOT)
        assert await ws.push(remote) == second
        assert upstream.sha("refs/heads/honk/5-e") == second


async def test_a_concurrent_push_is_rebased_onto_and_both_commits_land(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    upstream.push_files("honk/8-f", {"src/sum.py": "total = 8\n"}, "Earlier run")
    remote = remote_of(upstream)
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/8-f") as ws:
        (ws.path / "ours.txt").write_text("ours\n")
        ours = await ws.commit("Ours", **BOT)
        theirs = upstream.push_files("honk/8-f", {"theirs.txt": "theirs\n"}, "Theirs")
        pushed = await ws.push(remote)
        assert pushed != ours
        assert upstream.sha("refs/heads/honk/8-f") == pushed
        assert upstream.sha(f"{pushed}^") == theirs
        assert upstream.show(pushed, "ours.txt") == "ours"
        assert upstream.show(pushed, "theirs.txt") == "theirs"
        assert git("log", "-1", "--format=%an", pushed, cwd=upstream.bare) == BOT["author_name"]
        assert (ws.path / "theirs.txt").exists()


async def test_a_conflicting_concurrent_push_raises_conflict_and_leaves_the_remote(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    upstream.push_files("honk/9-g", {"notes.txt": "start\n"}, "Earlier run")
    remote = remote_of(upstream)
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/9-g") as ws:
        (ws.path / "notes.txt").write_text("ours\n")
        ours = await ws.commit("Ours", **BOT)
        theirs = upstream.push_files("honk/9-g", {"notes.txt": "theirs\n"}, "Theirs")
        with pytest.raises(PushRejected) as caught:
            await ws.push(remote)
        assert caught.value.reason == "conflict"
        assert upstream.sha("refs/heads/honk/9-g") == theirs
        assert ws_git(ws, "rev-parse", "HEAD") == ours
        assert ws_git(ws, "status", "--porcelain") == ""
        assert not (ws.git_dir / "rebase-merge").exists()


async def test_symlinks_leading_out_of_the_workspace_are_not_committed(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/10-h"
    ) as ws:
        (ws.path / "passwd").symlink_to("/etc/passwd")
        (ws.path / "src" / "up").symlink_to("../../outside")
        (ws.path / "config-link").symlink_to(".git/../../x")
        (ws.path / "gitdir-link").symlink_to(".git")
        (ws.path / "src" / "sibling").symlink_to("sum.py")
        (ws.path / "readme-link").symlink_to("src/../README.md")
        (ws.path / "src" / "sum.py").write_text("total = 10\n")
        sha = await ws.commit("Links", **BOT)
        assert sha is not None
        committed = ws_git(ws, "show", "--format=", "--name-only", "HEAD").splitlines()
        assert committed == ["readme-link", "src/sibling", "src/sum.py"]
        assert sorted(ws.excluded_paths) == ["config-link", "gitdir-link", "passwd", "src/up"]
        assert (ws.path / "passwd").is_symlink()  # left in place, just not committed
        assert "passwd" not in await ws.changed_paths()


def test_link_escapes() -> None:
    def escapes(path: str, **links: str) -> bool:
        return link_escapes(path, {k.replace("__", "/"): v for k, v in links.items()}.get)

    assert escapes("a", a="/etc/passwd")
    assert escapes("a/b", a__b="../../c")
    assert escapes("a", a="..")
    assert escapes("a", a=".git/config")
    assert not escapes("a/b", a__b="../c")
    assert not escapes("a", a="b/../c")
    assert not escapes("a", a=".github/x")
    # Physically, not lexically: `y -> .` makes y/y/.. the parent of the root.
    links = {"y": ".", ".github/honk.yml": "../y/y/../../etc/passwd"}
    assert link_escapes(".github/honk.yml", links.get)
    assert not link_escapes("y", links.get)
    chain = {"src/a": "b/x", "src/b": "c", "src/c": "../.."}
    assert link_escapes("src/a", chain.get)
    assert link_escapes("g", {"g": "h/config", "h": ".git"}.get)
    assert link_escapes("loop", {"loop": "loop"}.get)
    assert not link_escapes("ok", {"ok": "d/../e", "d": "sub/dir"}.get)


async def test_links_that_lead_out_only_physically_are_not_committed(
    manager: WorkspaceManager, upstream: Upstream, tmp_path: Path
) -> None:
    """The attack as seen: `y -> .` and `.github/honk.yml -> ../y/y/../../<host file>`
    passed the lexical check and were committed."""
    host_file = tmp_path / "host-secret"
    host_file.write_text("host secret\n")
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/10-y"
    ) as ws:
        up = "/".join([".."] * (len(ws.path.parts) - len(tmp_path.parts)))
        (ws.path / "y").symlink_to(".")
        (ws.path / ".github").mkdir()
        target = f"../y/y/{up}/host-secret"
        (ws.path / ".github" / "honk.yml").symlink_to(target)
        assert (ws.path / ".github" / "honk.yml").read_text() == "host secret\n"
        (ws.path / "src" / "a").symlink_to("b/x")
        (ws.path / "src" / "b").symlink_to("c")
        (ws.path / "src" / "c").symlink_to("../..")
        (ws.path / "g1").symlink_to("src/g2")
        (ws.path / "src" / "g2").symlink_to("../.git")
        (ws.path / "src" / "fine").symlink_to("../y/y/README.md")
        (ws.path / "src" / "sum.py").write_text("total = 10\n")
        sha = await ws.commit("Links", **BOT)
        assert sha is not None
        committed = ws_git(ws, "show", "--format=", "--name-only", "HEAD").splitlines()
        assert committed == ["src/fine", "src/sum.py", "y"]
        assert ws.excluded_paths == (
            ".github/honk.yml", "g1", "src/a", "src/b", "src/c", "src/g2")
        assert await ws.changed_paths() == ["src/fine", "src/sum.py", "y"]
        assert (ws.path / ".github" / "honk.yml").is_symlink()  # left on disk, uncommitted


async def test_a_link_the_change_makes_lead_out_is_left_out_and_old_ones_kept(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    upstream.push_files("main", {"sub/file.txt": "x\n"}, "Links",
                        links={"z": "sub/..", "system-dict": "/usr/share/dict/words"})
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/10-z"
    ) as ws:
        # `sub` turned into `sub -> .`: harmless itself, but now z -> sub/.. leads out.
        (ws.path / "sub" / "file.txt").unlink()
        (ws.path / "sub").rmdir()
        (ws.path / "sub").symlink_to(".")
        (ws.path / "README.md").write_text("# changed\n")
        assert await ws.commit("Sub", **BOT) is not None
        assert ws.excluded_paths == ("z",)
        tree = ws_git(ws, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
        assert "z" not in tree and "sub" in tree
        # A link that already led out in the base, unchanged, is the repository's own.
        assert "system-dict" in tree
        assert ws_git(ws, "diff", "--name-only", "HEAD~1", "HEAD").split() == [
            "README.md", "sub", "sub/file.txt", "z"]


async def test_nested_repositories_are_not_committed(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/11-i"
    ) as ws:
        nested = ws.path / "vendor" / "lib"
        nested.mkdir(parents=True)
        git("init", "--quiet", cwd=nested)
        (nested / "f.txt").write_text("f\n")
        git("add", "f.txt", cwd=nested)
        git("commit", "--quiet", "-m", "nested", cwd=nested)
        (ws.path / "kept.txt").write_text("kept\n")
        await ws.commit("Nested", **BOT)
        assert ws_git(ws, "show", "--format=", "--name-only", "HEAD") == "kept.txt"
        assert ws.excluded_paths == ("vendor/lib",)


async def test_drop_paths_rewrites_the_unpushed_commits(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    remote = remote_of(upstream)
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/13-j") as ws:
        (ws.path / ".github" / "workflows").mkdir(parents=True)
        (ws.path / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
        (ws.path / "src" / "sum.py").write_text("total = 13\n")
        first = await ws.commit("Sum and CI", co_authors=["Jane <jane@example.com>"], **BOT)
        (ws.path / "README.md").write_text("# repo, changed\n")
        await ws.commit("Readme", **BOT)
        head = await ws.drop_paths([".github/workflows/ci.yml"])
        assert head is not None and head == ws_git(ws, "rev-parse", "HEAD")
        assert ws_git(ws, "rev-list", "--count", f"{ws.start_sha}..HEAD") == "2"
        assert ws_git(ws, "log", "--format=%s", "HEAD").splitlines()[:2] == [
            "Readme",
            "Sum and CI",
        ]
        assert "Co-authored-by: Jane" in ws_git(ws, "log", "-1", "--format=%B", "HEAD^")
        assert ws_git(ws, "log", "-1", "--format=%an", "HEAD^") == BOT["author_name"]
        assert ws_git(ws, "ls-tree", "-r", "--name-only", "HEAD^") == ws_git(
            ws, "ls-tree", "-r", "--name-only", first
        ).replace(".github/workflows/ci.yml\n", "")
        assert not (ws.path / ".github" / "workflows" / "ci.yml").exists()
        assert ws_git(ws, "status", "--porcelain") == ""
        assert await ws.changed_paths() == ["README.md", "src/sum.py"]

        assert await ws.drop_paths(["README.md", "src"]) is None
        assert ws_git(ws, "rev-parse", "HEAD") == ws.start_sha
        assert (ws.path / "README.md").read_text() == "# repo\n"


async def test_diff_against_base_covers_committed_and_uncommitted_work(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/14-k"
    ) as ws:
        (ws.path / "src" / "sum.py").write_text("total = 14\n")
        await ws.commit("Fourteen", **BOT)
        (ws.path / "later.txt").write_text("not committed yet\n")
        diff = await ws.diff_against_base()
        assert "+total = 14" in diff and "-total = 1" in diff
        assert "+not committed yet" in diff
        assert "later.txt" not in await ws.diff_against_base(paths=["src"])
        assert await ws.changed_paths() == ["later.txt", "src/sum.py"]
        assert ws_git(ws, "status", "--porcelain") == "?? later.txt"  # the index is untouched
        (ws.path / "big.txt").write_text("x\n" * 10_000)
        trimmed = await ws.diff_against_base(max_chars=500)
        assert len(trimmed) < 600 and trimmed.endswith("[... diff trimmed ...]\n")


async def test_concurrent_runs_get_different_slots(tmp_path: Path, upstream: Upstream) -> None:
    manager = WorkspaceManager(tmp_path / "data", pool_size=1)
    remote = remote_of(upstream)
    both_in = asyncio.Event()
    paths: list[Path] = []

    async def run(branch: str) -> None:
        async with manager.checkout("owner/repo", remote, base_branch="main", branch=branch) as ws:
            paths.append(ws.path)
            (ws.path / f"{branch.replace('/', '-')}.txt").write_text(branch)
            if len(paths) == 2:
                both_in.set()
            await asyncio.wait_for(both_in.wait(), 30)
            assert await ws.commit(f"Work on {branch}", **BOT) is not None
            assert await ws.changed_paths() == [f"{branch.replace('/', '-')}.txt"]
            await ws.push(remote)

    await asyncio.gather(run("honk/15-a"), run("honk/16-b"))
    assert len(set(paths)) == 2
    overflow = next(p for p in paths if p.name != "slot-0")
    assert not overflow.exists()  # past the pool size: removed after its run
    assert upstream.has_ref("refs/heads/honk/15-a") and upstream.has_ref("refs/heads/honk/16-b")


async def test_two_runs_on_one_branch_at_once_are_refused(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    remote = remote_of(upstream)
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/22-p"):
        with pytest.raises(BranchInUse):
            async with manager.checkout(
                "owner/repo", remote, base_branch="main", branch="honk/22-p"
            ):
                pass
    async with manager.checkout("Owner/Repo", remote, base_branch="main", branch="honk/22-p") as ws:
        assert ws.path.name == "slot-0"  # same repository, whatever the case of its name


async def test_a_slot_held_by_another_process_is_not_shared(
    manager: WorkspaceManager, upstream: Upstream, tmp_path: Path
) -> None:
    lock_file = tmp_path / "data" / "worktrees" / "owner" / "repo" / "slot-0.lock"
    lock_file.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); sys.stdin.read()",
            str(lock_file),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        async with manager.checkout(
            "owner/repo", remote_of(upstream), base_branch="main", branch="honk/17-l"
        ) as ws:
            assert ws.path.name == "slot-1"
    finally:
        holder.communicate("")
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/17-l"
    ) as ws:
        assert ws.path.name == "slot-0"


async def test_a_missing_base_branch_is_an_error(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    with pytest.raises(GitError, match="no branch develop"):
        async with manager.checkout(
            "owner/repo", remote_of(upstream), base_branch="develop", branch="honk/18-m"
        ):
            pass
    with pytest.raises(ValueError):
        async with manager.checkout(
            "owner/repo", remote_of(upstream), base_branch="main", branch="--upload-pack=x"
        ):
            pass
    with pytest.raises(ValueError):
        async with manager.checkout(
            "../repo", remote_of(upstream), base_branch="main", branch="honk/1"
        ):
            pass


def test_the_token_stays_out_of_repr_and_urls() -> None:
    remote = GitRemote("https://github.com/o/r.git", "ghs_secret")
    assert "ghs_secret" not in repr(remote) and "ghs_secret" not in str(remote)
    with pytest.raises(ValueError):
        GitRemote("https://x-access-token:ghs_secret@github.com/o/r.git")
    with pytest.raises(ValueError):
        GitRemote("ssh://git@github.com/o/r.git")


# --- smart HTTP ---------------------------------------------------------------------------


@pytest.fixture
def http_server(upstream: Upstream) -> Iterator[GitHttpServer]:
    with GitHttpServer(upstream.root, token="ghs_T0kenThatMustNotLeak42") as server:
        yield server


async def test_the_token_reaches_the_server_and_leaves_no_trace(
    manager: WorkspaceManager, upstream: Upstream, http_server: GitHttpServer, tmp_path: Path
) -> None:
    token = "ghs_T0kenThatMustNotLeak42"
    remote = GitRemote(f"{http_server.url}/owner/repo.git", token)
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/19-n") as ws:
        (ws.path / "src" / "sum.py").write_text("total = 19\n")
        sha = await ws.commit("Nineteen", **BOT)
        assert await ws.push(remote) == sha
    assert upstream.sha("refs/heads/honk/19-n") == sha

    wrong = GitRemote(f"{http_server.url}/owner/repo.git", "ghs_WrongToken99")
    with pytest.raises(GitError) as caught:
        async with manager.checkout("owner/repo", wrong, base_branch="main", branch="honk/20"):
            pass
    assert http_server.refused > 0
    assert "ghs_WrongToken99" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)

    secrets = [token, base64.b64encode(f"x-access-token:{token}".encode()).decode()]
    secrets += ["ghs_WrongToken99"]
    for secret in secrets:
        found = subprocess.run(
            ["grep", "-r", "-l", "-a", secret, str(tmp_path / "data")],
            capture_output=True,
            text=True,
        )
        assert found.stdout == "", f"token found in {found.stdout}"


async def test_a_workflow_change_refused_by_the_server_is_reported_then_dropped(
    manager: WorkspaceManager, upstream: Upstream, http_server: GitHttpServer
) -> None:
    hook = upstream.bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "while read old new ref; do\n"
        "  for path in $(git log --name-only --format= $new --not --all -- .github/workflows); do\n"
        '    echo "refusing to allow a GitHub App to create or update workflow \\`$path\\`'
        ' without \\`workflows\\` permission" >&2; exit 1\n'
        "  done\n"
        "done\n"
    )
    hook.chmod(0o755)
    remote = GitRemote(f"{http_server.url}/owner/repo.git", "ghs_T0kenThatMustNotLeak42")
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/21-o") as ws:
        (ws.path / ".github" / "workflows").mkdir(parents=True)
        (ws.path / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
        (ws.path / "src" / "sum.py").write_text("total = 21\n")
        await ws.commit("Sum and CI", **BOT)
        with pytest.raises(PushRejected) as caught:
            await ws.push(remote)
        assert caught.value.reason == "workflows"
        assert caught.value.paths == (".github/workflows/ci.yml",)
        assert not upstream.has_ref("refs/heads/honk/21-o")
        patch = await ws.diff_against_base(paths=caught.value.paths)
        assert "+on: push" in patch and "sum.py" not in patch
        head = await ws.drop_paths(caught.value.paths)
        assert head is not None
        assert await ws.push(remote) == head
    assert upstream.show("refs/heads/honk/21-o", "src/sum.py") == "total = 21"
    assert not upstream.has_ref("refs/heads/honk/21-o:.github/workflows/ci.yml")


def test_http_server_refuses_without_the_token(http_server: GitHttpServer, tmp_path: Path) -> None:
    result = subprocess.run(
        ["git", "ls-remote", f"{http_server.url}/owner/repo.git"],
        env=git_env(tmp_path) | {"GIT_TERMINAL_PROMPT": "0"},
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0 and http_server.refused > 0


async def test_read_base_file_reads_git_objects_never_the_tree_or_links(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    upstream.push_files(
        "main", {"AGENTS.md": "base notes\n", "docs/big.md": "x" * 100}, "Base files",
        links={"CLAUDE.md": "AGENTS.md", "linked": "docs", ".github/honk.yml": "/etc/passwd"},
    )
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/20-r"
    ) as ws:
        # What the agent writes, and even commits, is not what is read.
        (ws.path / "AGENTS.md").write_text("agent's notes\n")
        await ws.commit("Agent notes", **BOT)
        assert await ws.read_base_file("AGENTS.md", max_bytes=1000) == b"base notes\n"
        assert await ws.read_base_file("missing.md", max_bytes=1000) is None
        assert await ws.read_base_file("linked/big.md", max_bytes=1000) is None
        assert await ws.read_base_file("docs/big.md", max_bytes=10) == b"x" * 11
        for path, kind in (("CLAUDE.md", "a symlink"), (".github/honk.yml", "a symlink"),
                           ("docs", "a directory")):
            with pytest.raises(NotAFile) as refused:
                await ws.read_base_file(path, max_bytes=1000)
            assert refused.value.kind == kind


def test_no_link_is_left_leading_out_whatever_the_trees() -> None:
    """_links_to_leave_out on many small trees: what is left leads out only where the base
    already had that very link leading out."""
    import random

    from honk_app.workspace.checkout import _links_to_leave_out

    paths = ["a", "b", "c", "d/x", "d/y"]
    targets = [".", "..", "d", "d/..", "d/../..", "a/..", "b/x", "/etc/passwd", ".git",
               "../c", "x", "c/../..", "a", "y/.."]
    rng = random.Random(10)
    for _ in range(3000):
        head = {p: rng.choice(targets) for p in paths if rng.random() < 0.5}
        staged = {p: rng.choice(targets) for p in paths if rng.random() < 0.6}
        reverted, removed = _links_to_leave_out(staged, head)
        final = dict(staged)
        for path in reverted:
            final.pop(path, None)
            if path in head:
                final[path] = head[path]
        for path in removed:
            final.pop(path)
        for path, target in final.items():
            if link_escapes(path, final.get):
                assert head.get(path) == target and link_escapes(path, head.get), (
                    head, staged, final)
        assert set(removed) <= set(head)  # only the base's own links are ever removed


async def test_files_named_like_revisions_do_not_confuse_git(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    """A root file named HEAD (or like a branch) made `git diff HEAD` ambiguous."""
    upstream.push_files("main", {"HEAD": "a file named HEAD\n", "main": "and one named main\n"},
                        "Files named like revisions")
    remote = remote_of(upstream)
    async with manager.checkout("owner/repo", remote, base_branch="main", branch="honk/20-h") as ws:
        (ws.path / "HEAD").write_text("changed\n")
        (ws.path / "src" / "sum.py").write_text("total = 20\n")
        assert await ws.changed_paths() == ["HEAD", "src/sum.py"]
        assert "+changed" in await ws.diff_against_base()
        sha = await ws.commit("Change HEAD the file", **BOT)
        assert sha is not None and sha == ws_git(ws, "rev-parse", "--verify", "HEAD")
        (ws.path / "README.md").write_text("# more\n")
        await ws.commit("More", **BOT)
        head = await ws.drop_paths(["README.md"])
        assert head is not None
        assert await ws.push(remote) == head
        assert upstream.show("honk/20-h", "HEAD") == "changed"
        assert await ws.commit("Nothing", **BOT) is None


async def test_an_empty_nested_repository_is_left_out_not_an_error(
    manager: WorkspaceManager, upstream: Upstream
) -> None:
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/21-e"
    ) as ws:
        for where in (ws.path / "empty", ws.path / "new" / "deeper"):
            where.mkdir(parents=True)
            git("init", "--quiet", cwd=where)  # no commit: `git add` refused the whole tree
            (where / "inside.txt").write_text("not Honk's to commit\n")
        (ws.path / "new" / "kept.txt").write_text("kept\n")
        (ws.path / "src" / "sum.py").write_text("total = 21\n")
        assert await ws.changed_paths() == ["new/kept.txt", "src/sum.py"]
        sha = await ws.commit("Around nested repositories", **BOT)
        assert sha is not None
        committed = ws_git(ws, "show", "--format=", "--name-only", "HEAD").splitlines()
        assert committed == ["new/kept.txt", "src/sum.py"]
        assert set(ws.excluded_paths) == {"empty", "new/deeper"}
