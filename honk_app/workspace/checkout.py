"""Per-run checkouts of a repository, made fast by keeping a mirror and worktrees.

A repository Honk works on gets one bare mirror, refreshed with `git fetch`, and a small
pool of worktrees ("slots") made from it. A run takes a free slot, which is moved to the
run's start commit and scrubbed of everything the previous run left; the run's agent edits
files there, and the worker commits and pushes on the host through `honk_app.workspace.git`.

Layout under data_dir:
    mirrors/<owner>/<name>.git           bare mirror: refs/remotes/origin/* as fetched,
                                         refs/heads/* only the branches of runs under way
    mirrors/<owner>/<name>.lock          serialises fetches and ref bookkeeping (flock)
    worktrees/<owner>/<name>/slot-<n>    kept checkouts, one per concurrent run
    worktrees/<owner>/<name>/slot-<n>.lock   held (flock) by the run using that slot
    tmp/                                 scratch index files
"""

import asyncio
import fcntl
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

import structlog

from honk_app.sandbox.links import link_escapes
from honk_app.sandbox.user import (
    SandboxUser,
    give_tree,
    sandbox_user,
    seal_tree,
    share_dir,
    share_tree,
)
from honk_app.workspace.git import Git, GitError, GitRemote, PushRejected

__all__ = [
    "BaseBranchMissing",
    "BranchInUse",
    "GitError",
    "GitRemote",
    "NotAFile",
    "PushRejected",
    "Workspace",
    "WorkspaceManager",
]

log = structlog.get_logger()
A = TypeVar("A")
B = TypeVar("B")

ORIGIN = "refs/remotes/origin/"
NO_AUTO_GC = (("gc.auto", "0"), ("maintenance.auto", "false"))
WORKFLOWS_DIR = ".github/workflows/"
LINK_MODE = "120000"
GITLINK_MODE = "160000"  # a nested repository (submodule entry)
_FILE_MODES = ("100644", "100755")
_ENTRY_KINDS = {LINK_MODE: "a symlink", GITLINK_MODE: "a nested repository",
                "040000": "a directory"}
PUSH_ATTEMPTS = 3
FETCH_ATTEMPTS = 3
FETCH_BACKOFF_SECONDS = 1.0
_WORKFLOW_REFUSAL = re.compile(r"refusing to allow an? .{1,40} to create or update workflow")
_NON_FAST_FORWARD = re.compile(r"\((non-fast-forward|fetch first)\)")
_REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_BAD_REF_TEXT = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock/|\.lock$|[./]$")
# Whatever a git command interrupted or a previous run left in a slot's own git directory.
_SLOT_LEFTOVERS = (
    "MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "MERGE_RR", "CHERRY_PICK_HEAD", "REVERT_HEAD",
    "REBASE_HEAD", "ORIG_HEAD", "FETCH_HEAD", "AUTO_MERGE", "SQUASH_MSG", "COMMIT_EDITMSG",
    "BISECT_LOG", "BISECT_START", "BISECT_EXPECTED_REV", "BISECT_ANCESTORS_OK",
    "BISECT_NAMES", "BISECT_TERMS", "BISECT_RUN", "index.lock", "HEAD.lock", "config.worktree",
    "rebase-merge", "rebase-apply", "sequencer", "logs", "refs", "info",
)  # fmt: skip


class NotAFile(Exception):
    """The base commit has something other than a regular file at a path Honk reads."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"{path} is {kind} in the base commit, not a regular file")
        self.path = path
        self.kind = kind


class BaseBranchMissing(GitError):
    """The remote has no such base branch (an empty repository has none at all)."""


class BranchInUse(RuntimeError):
    """Another run holds a workspace on the same branch (runs on one issue or pull request
    are meant to be one at a time)."""


def check_repo_name(repo: str) -> None:
    if not _REPO_NAME.match(repo) or any(part in (".", "..") for part in repo.split("/")):
        raise ValueError(f"not a repository name: {repo!r}")


def check_branch_name(branch: str) -> None:
    """The rules of git check-ref-format --branch, checked without a process."""
    if not branch or branch.startswith(("-", "/", ".")) or branch == "@":
        raise ValueError(f"not a branch name: {branch!r}")
    if _BAD_REF_TEXT.search(branch):
        raise ValueError(f"not a branch name: {branch!r}")


class FileLock:
    """An exclusive flock on a file: held by at most one open file, in any process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def acquire(self) -> None:
        delay = 0.002
        while not self.try_acquire():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Mirror:
    """The bare mirror of one repository, shared by that repository's slots."""

    def __init__(self, path: Path, user: SandboxUser | None = None) -> None:
        self.path = path
        self.user = user or sandbox_user()
        self._lock = asyncio.Lock()
        self._lock_path = path.with_suffix(".lock")

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Exclusive use of the mirror's refs and worktree list, within and across processes."""
        async with self._lock:
            file_lock = FileLock(self._lock_path)
            await file_lock.acquire()
            try:
                yield
            finally:
                file_lock.release()

    async def ensure_exists(self) -> None:
        if (self.path / "HEAD").exists():
            return
        log.info("workspace.mirror_create", mirror=str(self.path))
        fresh = self.path.with_name(self.path.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        share_dir(fresh, self.user)  # the sandbox's group reads it (read-only git inside)
        git = Git(fresh)
        await git.run("init", "--bare", "--quiet", "--template=")
        await git.run("config", "core.logAllRefUpdates", "false")
        await git.run("config", "gc.autoDetach", "false")
        fresh.rename(self.path)

    @property
    def git(self) -> Git:
        """A Git for one operation on the mirror (it reads the config afresh)."""
        return Git(self.path)

    async def fetch(self, remote: GitRemote) -> None:
        """Bring refs/remotes/origin/* up to date with the remote's branches. Call locked."""
        await self.git.run(
            "fetch", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head",
            "--no-auto-maintenance", "--no-recurse-submodules", remote.url,
            f"+refs/heads/*:{ORIGIN}*",
            remote=remote,
        )  # fmt: skip

    async def remote_tips(self, *branches: str) -> dict[str, str]:
        """The fetched tip of each branch that exists on the remote."""
        output = await self.git.text(
            "for-each-ref", "--format=%(objectname) %(refname)", *(ORIGIN + b for b in branches)
        )
        tips = {}
        for line in output.splitlines():
            sha, ref = line.split(" ", 1)
            tips[ref.removeprefix(ORIGIN)] = sha
        return {branch: tips[branch] for branch in branches if branch in tips}

    async def sweep_refs(self) -> None:
        """Delete every ref but the fetched ones and the branches worktrees have checked
        out: stray branches, stash, tags, notes, replace refs. Call locked."""
        git = self.git
        listing = await git.run("worktree", "list", "--porcelain", "-z")
        fields = listing.stdout.decode("utf-8", "surrogateescape").split("\0")
        checked_out = {f.removeprefix("branch ") for f in fields if f.startswith("branch ")}
        refs = (await git.text("for-each-ref", "--format=%(refname)")).splitlines()
        doomed = [r for r in refs if not r.startswith(ORIGIN) and r not in checked_out]
        if doomed:
            commands = "".join(f"delete {ref}\n" for ref in doomed)
            await git.run("update-ref", "--stdin", input=commands.encode())
            log.info("workspace.refs_swept", mirror=str(self.path), refs=doomed)


@dataclass
class Slot:
    path: Path  # the worktree
    git_dir: Path  # <mirror>/worktrees/<name>: what the worktree's .git file points to
    lock: FileLock
    kept: bool  # part of the pool (kept after the run) or an overflow slot (removed)

    def is_registered(self) -> bool:
        gitdir_file = self.git_dir / "gitdir"
        return (
            self.path.is_dir()
            and gitdir_file.is_file()
            and gitdir_file.read_text().strip() == str(self.path / ".git")
        )

    def scrub_git_dir(self) -> None:
        """Remove what an interrupted command or the previous run left in the slot's own
        git directory, and point the worktree's .git back at it."""
        for name in _SLOT_LEFTOVERS:
            leftover = self.git_dir / name
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            elif leftover.exists() or leftover.is_symlink():
                leftover.unlink()
        dot_git = self.path / ".git"
        if dot_git.is_dir() and not dot_git.is_symlink():
            shutil.rmtree(dot_git)
        elif dot_git.is_symlink():
            dot_git.unlink()
        dot_git.write_text(f"gitdir: {self.git_dir}\n")


@dataclass
class Workspace:
    """One run's checkout, on its work branch. Host-side git only: commit, diff, push."""

    path: Path
    git_dir: Path
    repo: str
    branch: str
    base_branch: str
    base_sha: str
    start_sha: str
    # The mirror the git directory belongs to (objects, refs): the sandbox binds it
    # read-only alongside git_dir so that read-only git works inside.
    common_dir: Path = field(kw_only=True)
    # Paths the last commit left out: symlinks leading outside the workspace, nested repos.
    excluded_paths: tuple[str, ...] = field(default=(), kw_only=True)
    # Whether `branch` existed on the remote (the run continues it) or starts from the base.
    existed: bool = field(default=False, kw_only=True)
    _mirror: Mirror = field(kw_only=True, repr=False, compare=False)
    _scratch_dir: Path = field(kw_only=True, repr=False, compare=False)
    # How long a push or fetch may take (None: honk_app.workspace.git's default).
    remote_timeout_seconds: float | None = field(default=None, kw_only=True, repr=False)
    # The remote's tip of the branch as last seen: commits after it are not pushed yet.
    _upstream_sha: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._upstream_sha = self.start_sha

    @property
    def _git(self) -> Git:
        return Git(self.git_dir, self.path)

    async def commit(
        self,
        message: str,
        *,
        author_name: str,
        author_email: str,
        co_authors: Sequence[str] = (),
    ) -> str | None:
        """Stage everything the agent changed and commit it; None if nothing changed."""
        text = commit_message(message, co_authors)
        git = self._git
        self.excluded_paths = await self._stage(git, report=True)
        unchanged = await git.run(
            "diff", "--cached", "--quiet", "--no-ext-diff", "--no-textconv", "HEAD", "--",
            check=False,
        )
        if unchanged.returncode == 0:
            return None
        if unchanged.returncode != 1:
            raise GitError(("git", "diff", "--cached"), unchanged.returncode, unchanged.stderr)
        await git.run(
            "commit", "--quiet", "--no-verify", "--no-gpg-sign", "--cleanup=whitespace",
            "--file=-",
            input=text.encode(),
            env=identity_env(author_name, author_email),
            config=NO_AUTO_GC,
        )  # fmt: skip
        sha = await git.text("rev-parse", "--verify", "--end-of-options", "HEAD")
        log.info("workspace.committed", repo=self.repo, branch=self.branch, sha=sha)
        return sha

    async def read_base_file(self, path: str, *, max_bytes: int) -> bytes | None:
        """The file at `path` in the base commit, from git's objects: never from the
        working tree or the run's own commits, never through a symlink. None when the base
        has nothing at `path` (or reaches it only through a link); NotAFile when it has a
        symlink, a directory or a nested repository there. At most max_bytes + 1 bytes, so
        that a caller can tell a longer file."""
        git = Git(self.common_dir)  # objects only: no work tree, no index
        listing = (await git.run("ls-tree", "-z", self.base_sha, "--", path)).stdout
        if not listing:
            return None
        mode = listing.split(b" ", 1)[0].decode()
        if mode not in _FILE_MODES:
            raise NotAFile(path, _ENTRY_KINDS.get(mode, "not a file"))
        sha = listing.split(b"\t", 1)[0].split(b" ")[2].decode()
        blob = await git.run("cat-file", "blob", sha, stdout_limit=max_bytes)
        return blob.stdout[: max_bytes + 1]

    async def authors_since_base(self) -> list[str]:
        """The author email of each commit the remote branch holds beyond its base."""
        span = f"{self.base_sha}..{self.start_sha}"
        text = await self._git.text("log", "--format=%ae", span, "--")
        return text.splitlines()

    async def adopt(self, sha: str) -> bool:
        """Put the branch on `sha`, the commit an earlier attempt of this run made and could
        not push, if this machine's mirror still has it and it grows from where the branch
        starts now. False: the work must be made again."""
        git = self._git
        if (await git.run("cat-file", "-e", f"{sha}^{{commit}}", check=False)).returncode:
            return False
        descends = await git.run("merge-base", "--is-ancestor", self.start_sha, sha, check=False)
        if descends.returncode:
            return False
        # The checkout was handed to the sandbox's uid since git wrote it (new ctimes): let
        # the index see the files are unchanged, or `reset --keep` takes them for edits.
        await git.run("update-index", "-q", "--refresh", check=False)
        await git.run("reset", "--quiet", "--keep", sha, "--")
        log.info("workspace.adopted", repo=self.repo, branch=self.branch, sha=sha)
        return True

    async def diff_against_base(self, max_chars: int = 60_000, *, paths: Sequence[str] = ()) -> str:
        """The change the branch carries against its base, uncommitted work included (of
        `paths` only, if given), as a unified diff trimmed to max_chars."""
        git = self._git
        tree = await self._snapshot_tree(git)
        base = await self._merge_base(git)
        result = await git.run(
            "diff", "--no-color", "--no-ext-diff", "--no-textconv", base, tree, "--", *paths,
            stdout_limit=max_chars * 4,
        )  # fmt: skip
        text = result.stdout.decode("utf-8", "replace")
        if len(text) <= max_chars and not result.truncated:
            return text
        return text[:max_chars] + "\n[... diff trimmed ...]\n"

    async def changed_paths(self) -> list[str]:
        """Paths the branch adds, changes or deletes against its base, uncommitted work
        included."""
        git = self._git
        tree = await self._snapshot_tree(git)
        base = await self._merge_base(git)
        result = await git.run("diff", "--name-only", "-z", "--no-renames", base, tree, "--")
        return _split_z(result.stdout)

    async def drop_paths(self, paths: Sequence[str]) -> str | None:
        """Rewrite the unpushed commits so they leave these paths as the remote branch has
        them (start_sha at first). Returns the new head, or None if no change is left."""
        git = self._git
        upstream = self._upstream_sha
        history = await git.text(
            "log", "--reverse", "--format=%H %T %P", f"{upstream}..HEAD", "--"
        )
        commits = [line.split(" ") for line in history.splitlines()]
        if not commits:
            return None
        if not paths:
            return commits[-1][0]
        restore = (await git.run("ls-tree", "-r", "-z", upstream, "--", *paths)).stdout
        parent, parent_tree = upstream, await git.text(
            "rev-parse", "--verify", "--end-of-options", f"{upstream}^{{tree}}"
        )
        index = self._scratch_index()
        try:
            scratch = git.with_index(index)
            for commit, original_tree, *original_parents in commits:
                await scratch.run("read-tree", commit)
                dropped = (await git.run("ls-tree", "-r", "-z", commit, "--", *paths)).stdout
                removals = b"".join(
                    b"0 " + b"0" * 40 + b"\t" + entry.split(b"\t", 1)[1] + b"\0"
                    for entry in dropped.split(b"\0")
                    if entry
                )
                await scratch.run("update-index", "-z", "--index-info", input=removals + restore)
                tree = await scratch.text("write-tree")
                if tree == parent_tree:
                    continue  # the commit changed nothing but the dropped paths
                if tree == original_tree and original_parents == [parent]:
                    parent = commit  # untouched: keep it as it is
                else:
                    parent = await _recommit(git, commit, tree, parent)
                parent_tree = tree
        finally:
            index.unlink(missing_ok=True)
        await git.run("reset", "--quiet", "--keep", parent, "--")
        log.info("workspace.paths_dropped", repo=self.repo, paths=list(paths), head=parent)
        return None if parent == upstream else parent

    async def push(self, remote: GitRemote) -> str:
        """Push HEAD to refs/heads/<branch>, never forcing. If the branch moved meanwhile,
        rebase onto it and push again."""
        remote = _timed(remote, self.remote_timeout_seconds)
        git = self._git
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            head = await git.text("rev-parse", "--verify", "--end-of-options", "HEAD")
            args = ("push", "--porcelain", "--no-verify", "--no-recurse-submodules",
                    remote.url, f"HEAD:refs/heads/{self.branch}")  # fmt: skip
            result = await git.run(*args, remote=remote, check=False)
            if result.returncode == 0:
                self._upstream_sha = head
                log.info("workspace.pushed", repo=self.repo, branch=self.branch, sha=head)
                return head
            report = result.stdout.decode("utf-8", "replace") + "\n" + result.stderr
            command = ("git", *args)
            if _WORKFLOW_REFUSAL.search(report):
                paths = await self._workflow_paths()
                raise PushRejected(
                    command, result.returncode, result.stderr, reason="workflows", paths=paths
                )
            if not _rejected(report):
                raise GitError(command, result.returncode, result.stderr)
            if not _NON_FAST_FORWARD.search(report) or attempt == PUSH_ATTEMPTS:
                raise PushRejected(command, result.returncode, result.stderr, reason="rejected")
            log.info("workspace.push_behind", repo=self.repo, branch=self.branch)
            await self._rebase_onto_remote(remote)
        raise AssertionError("unreachable")

    async def _stage(self, git: Git, *, report: bool = False) -> tuple[str, ...]:
        """Stage the whole working tree in git's index, then unstage what must not be
        committed: nested repositories, and symlinks the change makes lead out of the
        workspace (or into .git). Returns the unstaged paths (and logs them if `report`)."""
        await seal_tree(self.path)  # no setuid bits, no fifo for git to hang on
        # Untracked nested repositories (with commits or none) are left out of `git add`:
        # an empty one would make it fail outright ("does not have a commit checked out").
        # Excluding needs pathspec magic, so literal pathspecs are off for this one command
        # and every pathspec given says `literal` itself.
        untracked_repos = [path.rstrip("/") for path in await _untracked_repositories(git)]
        pathspecs = [b":(literal).", *(b":(exclude,literal)" + os.fsencode(path) + b"/"
                                       for path in untracked_repos)]
        await git.run("add", "--all", "--pathspec-from-file=-", "--pathspec-file-nul",
                      input=b"\0".join(pathspecs), env={"GIT_LITERAL_PATHSPECS": "0"})
        raw = await git.run(
            "diff", "--cached", "--raw", "-z", "--no-renames", "--no-abbrev", "HEAD", "--"
        )
        changes = _parse_raw_diff(raw.stdout)
        nested = [c.path for c in changes if c.new_mode == GITLINK_MODE]
        await _reset_paths(git, nested)
        reverted: list[str] = []
        removed: list[str] = []
        # Where a link leads depends on the other links only (links.py), so a change that
        # adds, changes or removes none cannot make one lead out.
        if any(LINK_MODE in (c.old_mode, c.new_mode) for c in changes):
            staged, head = await _tree_links(git, "index"), await _tree_links(git, "HEAD")
            reverted, removed = _links_to_leave_out(staged, head)
            await _reset_paths(git, reverted)
            if removed:
                await git.run("update-index", "--force-remove", "-z", "--stdin",
                              input=b"".join(os.fsencode(p) + b"\0" for p in removed))
        excluded = sorted([*nested, *untracked_repos, *reverted, *removed])
        if excluded and report:
            log.warning(
                "workspace.paths_not_committed",
                repo=self.repo,
                paths=excluded,
                reason="symlink leading outside the workspace or into .git, or a nested "
                "repository",
            )
        return tuple(excluded)

    async def _snapshot_tree(self, git: Git) -> str:
        """The tree the working tree would commit as, built in a scratch index so that
        git's own index is left as it is."""
        index = self._scratch_index()
        try:
            if (self.git_dir / "index").exists():
                shutil.copyfile(self.git_dir / "index", index)
            scratch = git.with_index(index)
            await self._stage(scratch)
            return await scratch.text("write-tree")
        finally:
            index.unlink(missing_ok=True)

    async def _merge_base(self, git: Git) -> str:
        result = await git.run("merge-base", self.base_sha, "HEAD", check=False)
        return result.text or self.base_sha

    def _scratch_index(self) -> Path:
        return self._scratch_dir / f"index-{uuid.uuid4().hex}"

    async def _workflow_paths(self) -> tuple[str, ...]:
        result = await self._git.run(
            "log", "--no-renames", "--name-only", "--format=", "-z",
            f"{self._upstream_sha}..HEAD", "--", WORKFLOWS_DIR,
        )  # fmt: skip
        return tuple(sorted(set(_split_z(result.stdout))))

    async def _rebase_onto_remote(self, remote: GitRemote) -> None:
        async with self._mirror.locked():
            await self._mirror.fetch(remote)
            tips = await self._mirror.remote_tips(self.branch)
        if self.branch not in tips:
            raise GitError(("git", "fetch", remote.url), 0, f"{self.branch} vanished remotely")
        git = self._git
        committer = (await git.text("log", "-1", "--format=%cn%x00%ce", "HEAD", "--")).split("\0")
        rebase = await git.run(
            "rebase", "--quiet", "--autostash", "--no-verify", "--onto", tips[self.branch],
            self._upstream_sha,
            env=identity_env(*committer), config=NO_AUTO_GC, check=False,
        )  # fmt: skip
        if rebase.returncode != 0:
            await git.run("rebase", "--abort", check=False)
            log.warning("workspace.rebase_conflict", repo=self.repo, branch=self.branch)
            raise PushRejected(
                ("git", "rebase", "--onto", tips[self.branch], self._upstream_sha),
                rebase.returncode,
                rebase.stderr,
                reason="conflict",
            )
        self._upstream_sha = tips[self.branch]


class WorkspaceManager:
    """Hands out workspaces: a mirror per repository and a pool of kept worktrees."""

    def __init__(
        self,
        data_dir: Path,
        *,
        pool_size: int = 2,
        sandbox: SandboxUser | None = None,
        remote_timeout_seconds: float | None = None,
    ) -> None:
        self._data_dir = data_dir.resolve()
        self._pool_size = pool_size
        self._user = sandbox or sandbox_user()
        self._remote_timeout = remote_timeout_seconds
        self._mirrors: dict[str, Mirror] = {}
        self._swept: set[Path] = set()
        (self._data_dir / "tmp").mkdir(parents=True, exist_ok=True)
        for shared in ("mirrors", "worktrees"):
            path = self._data_dir / shared
            if path.is_dir() and self._user.separate and path.stat().st_gid != self._user.gid:
                share_tree(path, self._user)  # made before the sandbox had its own uid
            share_dir(path, self._user)

    @asynccontextmanager
    async def checkout(
        self, repo: str, remote: GitRemote, *, base_branch: str, branch: str
    ) -> AsyncIterator[Workspace]:
        """A workspace on `branch`, started from the remote's `branch` if it exists, else
        from `base_branch`; clean, and the slot released (clean) when the block exits."""
        check_repo_name(repo)
        check_branch_name(base_branch)
        check_branch_name(branch)
        remote = _timed(remote, self._remote_timeout)
        started = time.monotonic()
        mirror = self._mirror(repo)
        slot = self._take_slot(repo)
        try:
            # The slot is scrubbed while the mirror fetches: both before the run can start.
            tips, _ = await _both(
                self._fetch_tips(mirror, remote, base_branch, branch), self._scrub(slot)
            )
            start_sha = tips.get(branch, tips[base_branch])
            await self._move(mirror, slot, repo, branch, start_sha)
            await give_tree(slot.path, self._user)
        except BaseException:
            await self._release(mirror, slot)
            raise
        workspace = Workspace(
            path=slot.path,
            git_dir=slot.git_dir,
            repo=repo,
            branch=branch,
            base_branch=base_branch,
            base_sha=tips[base_branch],
            start_sha=start_sha,
            existed=branch in tips,
            common_dir=mirror.path,
            _mirror=mirror,
            _scratch_dir=self._data_dir / "tmp",
            remote_timeout_seconds=self._remote_timeout,
        )
        log.info(
            "workspace.ready",
            repo=repo,
            branch=branch,
            slot=slot.path.name,
            start_sha=start_sha,
            continued=branch in tips,
            seconds=round(time.monotonic() - started, 3),
        )
        try:
            yield workspace
        finally:
            await self._release(mirror, slot)

    async def _fetch_tips(
        self, mirror: Mirror, remote: GitRemote, base_branch: str, branch: str
    ) -> dict[str, str]:
        async with mirror.locked():
            await mirror.ensure_exists()
            for attempt in range(1, FETCH_ATTEMPTS + 1):
                try:
                    await mirror.fetch(remote)
                    break
                except GitError as error:  # a reset or a 5xx from the git host: once more
                    if attempt == FETCH_ATTEMPTS:
                        raise
                    log.warning("workspace.fetch_failed", repo=str(mirror.path), error=str(error))
                    await asyncio.sleep(FETCH_BACKOFF_SECONDS * attempt)
            tips = await mirror.remote_tips(base_branch, branch)
        if base_branch not in tips:
            raise BaseBranchMissing(
                ("git", "fetch", remote.url), 0, f"the remote has no branch {base_branch}"
            )
        return tips

    async def _scrub(self, slot: Slot) -> None:
        """Put a kept slot back to its own commit, detached, with nothing else in it: what
        the last run (or a process that died) left goes. Touches nothing but the slot."""
        if not slot.is_registered():
            return
        await seal_tree(slot.path)  # before host git reads what the last run left
        slot.scrub_git_dir()
        git = Git(slot.git_dir, slot.path)
        try:
            await git.run("checkout", "--quiet", "--force", "--detach", "--no-recurse-submodules")
            await git.run("clean", "-ffdxq")
        except GitError as error:
            log.warning("workspace.slot_broken", slot=str(slot.path), error=str(error))
            shutil.rmtree(slot.path)  # made anew below

    async def _move(
        self, mirror: Mirror, slot: Slot, repo: str, branch: str, start_sha: str
    ) -> None:
        """Put the scrubbed (or a new) slot on a local `branch` at start_sha."""
        git = Git(slot.git_dir, slot.path)
        if slot.is_registered():
            # A two-way merge from a clean tree only writes the files that differ.
            await git.run("read-tree", "-m", "-u", "HEAD", start_sha)
        async with mirror.locked():
            if _branch_held_elsewhere(mirror, slot, branch):
                raise BranchInUse(f"another run of {repo} is working on {branch}")
            if not slot.is_registered():
                await self._create_worktree(mirror, slot, start_sha)
            await git.run("update-ref", f"refs/heads/{branch}", start_sha)
            await git.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            if mirror.path not in self._swept:
                await mirror.sweep_refs()  # leftovers of a process that died
                self._swept.add(mirror.path)

    def _mirror(self, repo: str) -> Mirror:
        key = repo.lower()  # GitHub's names are not case-sensitive
        if key not in self._mirrors:
            path = self._data_dir / "mirrors" / f"{key}.git"
            share_dir(path.parent, self._user)
            self._mirrors[key] = Mirror(path, self._user)
        return self._mirrors[key]

    def _take_slot(self, repo: str) -> Slot:
        """The first slot no one holds; past the pool size, an overflow slot."""
        slots_dir = self._data_dir / "worktrees" / repo.lower()
        share_dir(slots_dir, self._user)
        mirror = self._mirror(repo)
        number = 0
        while True:
            name = f"slot-{number}"
            lock = FileLock(slots_dir / f"{name}.lock")
            if lock.try_acquire():
                return Slot(
                    path=slots_dir / name,
                    git_dir=mirror.path / "worktrees" / name,
                    lock=lock,
                    kept=number < self._pool_size,
                )
            number += 1

    async def _create_worktree(self, mirror: Mirror, slot: Slot, start_sha: str) -> None:
        """Register and check out the slot's worktree. Call with the mirror locked."""
        log.info("workspace.slot_create", slot=str(slot.path))
        shutil.rmtree(slot.path, ignore_errors=True)
        shutil.rmtree(slot.git_dir, ignore_errors=True)
        await mirror.git.run("worktree", "prune")
        await mirror.git.run(
            "worktree", "add", "--quiet", "--detach", "--force", str(slot.path), start_sha
        )
        if not slot.is_registered():
            raise GitError(("git", "worktree", "add"), 0, f"{slot.git_dir} was not created")

    async def _release(self, mirror: Mirror, slot: Slot) -> None:
        """Leave the slot clean and detached, its branch deleted, and let it go."""
        try:
            if slot.kept:
                await self._scrub(slot)
            async with mirror.locked():
                if not slot.kept:
                    shutil.rmtree(slot.path, ignore_errors=True)
                    shutil.rmtree(slot.git_dir, ignore_errors=True)
                await mirror.sweep_refs()
                await mirror.git.run("gc", "--auto", "--quiet")
        except GitError as error:
            log.warning("workspace.release_failed", slot=str(slot.path), error=str(error))
        finally:
            slot.lock.release()


def _timed(remote: GitRemote, seconds: float | None) -> GitRemote:
    """The remote with this deadline on its commands, unless it already has one."""
    if seconds is None or remote.timeout_seconds is not None:
        return remote
    return replace(remote, timeout_seconds=seconds)


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Run both to the end, even when one fails (then raise its error)."""
    results = await asyncio.gather(first, second, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results[0], results[1]  # type: ignore[return-value]


def _branch_held_elsewhere(mirror: Mirror, slot: Slot, branch: str) -> bool:
    """Whether another slot that a run holds has this branch checked out."""
    for admin_dir in (mirror.path / "worktrees").glob("*"):
        head = admin_dir / "HEAD"
        if admin_dir == slot.git_dir or not head.is_file():
            continue
        if head.read_text().strip() != f"ref: refs/heads/{branch}":
            continue
        if not (admin_dir / "gitdir").is_file():
            continue
        other = Path((admin_dir / "gitdir").read_text().strip()).parent
        lock = FileLock(other.with_name(other.name + ".lock"))
        if not lock.try_acquire():
            return True
        lock.release()  # a slot left so by a process that died: it will be reset
    return False


@dataclass(frozen=True)
class _Change:
    old_mode: str
    new_mode: str
    new_sha: str
    status: str
    path: str


def _parse_raw_diff(output: bytes) -> list[_Change]:
    """Entries of `git diff --raw -z --no-renames`: ':old new oldsha newsha X\\0path\\0'."""
    fields = output.split(b"\0")
    changes = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, _, new_sha, status = meta[1:].decode().split(" ")
        changes.append(_Change(old_mode, new_mode, new_sha, status, os.fsdecode(path)))
    return changes


async def _untracked_repositories(git: Git) -> list[str]:
    """Untracked directories that are repositories of their own: git lists each as one
    entry ending in `/` rather than the files inside it."""
    listing = await git.run("ls-files", "--others", "--exclude-standard", "-z")
    return [path for path in _split_z(listing.stdout) if path.endswith("/")]


async def _blobs(git: Git, shas: Sequence[str]) -> dict[str, bytes]:
    if not shas:
        return {}
    output = (await git.run("cat-file", "--batch", input="\n".join(shas).encode() + b"\n")).stdout
    blobs: dict[str, bytes] = {}
    position = 0
    while position < len(output):
        header_end = output.index(b"\n", position)
        sha, _, size = output[position:header_end].decode().split(" ")
        start = header_end + 1
        blobs[sha] = output[start : start + int(size)]
        position = start + int(size) + 1
    return blobs


async def _reset_paths(git: Git, paths: Sequence[str]) -> None:
    """Put these paths in the index back as HEAD has them."""
    if paths:
        await git.run(
            "reset", "--quiet", "HEAD", "--pathspec-from-file=-", "--pathspec-file-nul", "--",
            input=b"\0".join(os.fsencode(p) for p in paths),
        )  # fmt: skip


async def _tree_links(git: Git, source: Literal["index", "HEAD"]) -> dict[str, str]:
    """Every symlink of the index (or of HEAD's tree), with its target."""
    if source == "index":
        listing = (await git.run("ls-files", "--stage", "-z")).stdout
    else:
        listing = (await git.run("ls-tree", "-r", "-z", "HEAD", "--")).stdout
    shas: dict[str, str] = {}
    for entry in listing.split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        fields = meta.split(b" ")
        if fields[0] == LINK_MODE.encode():
            # ls-files: mode sha stage; ls-tree: mode type sha
            shas[os.fsdecode(path)] = fields[1 if source == "index" else 2].decode()
    blobs = await _blobs(git, sorted(set(shas.values())))
    return {path: os.fsdecode(blobs[sha]) for path, sha in shas.items()}


def _links_to_leave_out(
    staged: dict[str, str], head: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Which symlinks of the staged tree to put back as HEAD has them (the ones the change
    added or altered), and which to remove (HEAD's own, made to lead out by other links
    the change altered), so that no link leads out of the tree unless it already did in
    HEAD, unchanged. Works on copies; git is updated by the caller."""
    staged = dict(staged)
    already_out = {path for path in head if link_escapes(path, head.get)}
    reverted: list[str] = []
    removed: list[str] = []
    while True:
        leading_out = [
            path for path in sorted(staged)
            if link_escapes(path, staged.get)
            and not (path in already_out and head.get(path) == staged[path])
        ]  # fmt: skip
        altered = [path for path in leading_out if head.get(path) != staged[path]]
        if altered:
            for path in altered:
                # `git reset HEAD -- path` brings back HEAD's entries at and under path.
                staged.pop(path)
                staged.update(
                    (p, t) for p, t in head.items() if p == path or p.startswith(path + "/")
                )
            reverted += altered
        elif leading_out:
            for path in leading_out:
                staged.pop(path)
            removed += leading_out
        else:
            # A path removed, then brought back by reverting a directory above it, stays.
            return reverted, sorted({path for path in removed if path not in staged})


def commit_message(message: str, co_authors: Sequence[str]) -> str:
    text = message.strip()
    if not text:
        raise ValueError("a commit needs a message")
    trailers = []
    for co_author in co_authors:
        if "\n" in co_author or "\r" in co_author:
            raise ValueError(f"not a co-author: {co_author!r}")
        trailer = f"Co-authored-by: {co_author.strip()}"
        if co_author.strip() and trailer not in text and trailer not in trailers:
            trailers.append(trailer)
    if trailers:
        text += "\n\n" + "\n".join(trailers)
    return text + "\n"


def identity_env(name: str, email: str) -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


async def _recommit(git: Git, commit: str, tree: str, parent: str) -> str:
    """A copy of `commit` with another tree and parent: same message and author."""
    raw = (await git.run("cat-file", "commit", commit)).stdout
    headers, _, message = raw.partition(b"\n\n")
    people = {}
    for line in headers.split(b"\n"):
        match = re.match(rb"^(author|committer) (.*) <(.*)> (\d+ [+-]\d{4})$", line)
        if match:
            people[match[1].decode()] = tuple(os.fsdecode(part) for part in match.groups()[1:])
    author_name, author_email, author_date = people["author"]
    committer_name, committer_email, _ = people["committer"]
    env = {
        "GIT_AUTHOR_NAME": author_name,
        "GIT_AUTHOR_EMAIL": author_email,
        "GIT_AUTHOR_DATE": author_date,
        "GIT_COMMITTER_NAME": committer_name,
        "GIT_COMMITTER_EMAIL": committer_email,
    }
    return (await git.run("commit-tree", tree, "-p", parent, input=message, env=env)).text


def _rejected(report: str) -> bool:
    """Whether git push reported a ref as refused (a porcelain '!' line)."""
    return any(line.startswith("!\t") for line in report.splitlines())


def _split_z(output: bytes) -> list[str]:
    return [os.fsdecode(name) for name in output.split(b"\0") if name]
