"""Bare repositories of the simulator, driven through the git CLI.

Commits are written with `git fast-import` (no work tree), diffs are three-dot diffs as on
GitHub, and every command runs with a clean, fixed configuration so that nothing from the
machine or a pushed tree can change what it does.
"""

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ZERO_SHA = "0" * 40
WORKFLOWS_DIR = ".github/workflows/"


class GitError(RuntimeError):
    """A git command of the simulator failed."""


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    env.update(extra or {})
    return env


def run_git(git_dir: Path, *args: str, input: bytes | None = None) -> str:
    result = subprocess.run(
        ["git", "--git-dir", str(git_dir), "-c", "core.quotePath=false", *args],
        input=input,
        capture_output=True,
        env=git_env(),
        check=False,
    )
    if result.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode(errors="replace")


def init_bare(git_dir: Path, *, hooks_dir: Path, default_branch: str) -> None:
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(git_dir)],
        check=True,
        env=git_env(),
    )
    run_git(git_dir, "config", "core.hooksPath", str(hooks_dir))
    # Every pushed ref passes through the proc-receive hook (the workflow guard).
    run_git(git_dir, "config", "receive.procReceiveRefs", "refs")
    run_git(git_dir, "config", "http.receivepack", "true")
    run_git(git_dir, "config", "uploadpack.allowAnySHA1InWant", "true")


def _quote_path(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _data(content: bytes) -> bytes:
    return b"data %d\n" % len(content) + content + b"\n"


def commit_files(
    git_dir: Path,
    *,
    branch: str,
    files: dict[str, str | bytes | None],
    links: dict[str, str] | None = None,
    author_name: str,
    author_email: str,
    message: str,
    parent: str | None,
    when: datetime,
) -> str:
    """Commit `files` (None deletes a path) and `links` (symlinks: path to target) on top
    of `parent` and point `branch` at it."""
    stamp = f"{int(when.timestamp())} +0000"
    identity = f"{author_name} <{author_email}> {stamp}"
    stream = bytearray()
    stream += f"commit refs/heads/{branch}\n".encode()
    stream += f"author {identity}\ncommitter {identity}\n".encode()
    stream += _data(message.encode())
    stream += f"from {parent}\n".encode() if parent else b"deleteall\n"
    for path, content in sorted(files.items()):
        if content is None:
            stream += f"D {_quote_path(path)}\n".encode()
            continue
        raw = content.encode() if isinstance(content, str) else content
        stream += f"M 100644 inline {_quote_path(path)}\n".encode() + _data(raw)
    for path, target in sorted((links or {}).items()):
        stream += f"M 120000 inline {_quote_path(path)}\n".encode() + _data(target.encode())
    stream += b"done\n"
    # No --force: if the branch moved since `parent` was read, fail rather than drop a commit.
    run_git(git_dir, "fast-import", "--quiet", "--done", input=bytes(stream))
    return run_git(git_dir, "rev-parse", f"refs/heads/{branch}").strip()


def rev_parse(git_dir: Path, ref: str) -> str | None:
    try:
        return run_git(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except GitError:
        return None


def branches(git_dir: Path) -> dict[str, str]:
    listing = run_git(git_dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads")
    found: dict[str, str] = {}
    for line in listing.splitlines():
        sha, ref = line.split(" ", 1)
        found[ref.removeprefix("refs/heads/")] = sha
    return found


def update_ref(git_dir: Path, ref: str, sha: str) -> None:
    run_git(git_dir, "update-ref", ref, sha)


def fetch_commit(git_dir: Path, source_git_dir: Path, source_ref: str, into_ref: str) -> None:
    """Copy a ref of another bare repository (a fork) into this one."""
    refspec = f"+{source_ref}:{into_ref}"
    run_git(git_dir, "fetch", "--quiet", "--no-tags", str(source_git_dir), refspec)


def merge_base(git_dir: Path, base: str, head: str) -> str | None:
    try:
        return run_git(git_dir, "merge-base", base, head).strip() or None
    except GitError:
        return None


def count_commits(git_dir: Path, base: str, head: str) -> int:
    return int(run_git(git_dir, "rev-list", "--count", f"{base}..{head}").strip() or 0)


@dataclass(frozen=True)
class FileDiff:
    filename: str
    previous_filename: str | None
    status: str  # GitHub's names: added, removed, modified, renamed
    additions: int
    deletions: int
    patch: str | None  # hunks only, from the first "@@", None for binary files


_STATUS_NAMES = {
    "A": "added",
    "D": "removed",
    "M": "modified",
    "R": "renamed",
    "C": "copied",
    "T": "changed",
}


def diff_files(git_dir: Path, base: str, head: str) -> list[FileDiff]:
    """The files of GitHub's pull request diff: merge-base(base, head)..head."""
    start = merge_base(git_dir, base, head) or base
    common = ["--no-ext-diff", "--no-textconv", "--no-color", "-M", start, head]
    names = run_git(git_dir, "diff", "--name-status", "-z", *common).split("\0")
    patches = run_git(git_dir, "diff", "--unified=3", *common)
    chunks = [c for c in re.split(r"^diff --git ", patches, flags=re.MULTILINE) if c]
    entries: list[FileDiff] = []
    fields = [f for f in names if f]
    index = 0
    chunk_index = 0
    while index < len(fields):
        code = fields[index][0]
        if code in "RC":
            previous, filename = fields[index + 1], fields[index + 2]
            index += 3
        else:
            previous, filename = None, fields[index + 1]
            index += 2
        chunk = chunks[chunk_index] if chunk_index < len(chunks) else ""
        chunk_index += 1
        patch = _hunks_of(chunk)
        additions = deletions = 0
        for line in (patch or "").splitlines():
            if line.startswith("+"):
                additions += 1
            elif line.startswith("-"):
                deletions += 1
        entries.append(
            FileDiff(
                filename, previous, _STATUS_NAMES.get(code, "modified"), additions, deletions, patch
            )
        )
    return entries


def _hunks_of(chunk: str) -> str | None:
    at = chunk.find("\n@@")
    if at < 0:
        return None
    return chunk[at + 1 :].rstrip("\n")


@dataclass(frozen=True)
class LineAnchor:
    position: int  # GitHub's legacy "position": lines below the file's first @@ header
    diff_hunk: str  # the hunk header and the hunk's lines up to the commented line


def anchor_line(patch: str, line: int) -> LineAnchor | None:
    """Where a comment on `line` of the new file sits in a file's patch (RIGHT side)."""
    lines = patch.split("\n")
    position = 0
    hunk_start = 0
    new_line = 0
    for index, text in enumerate(lines):
        if text.startswith("@@"):
            if index > 0:
                position += 1
            hunk_start = index
            new_line = int(text.split("+", 1)[1].split(" ", 1)[0].split(",")[0]) - 1
            continue
        position += 1
        if text.startswith("-") or text.startswith("\\"):
            continue
        new_line += 1
        if new_line == line:
            return LineAnchor(position, "\n".join(lines[hunk_start : index + 1]))
    return None


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    author_name: str
    author_email: str
    authored_at: str
    committer_name: str
    committer_email: str
    committed_at: str
    message: str
    added: list[str]
    removed: list[str]
    modified: list[str]


def new_commits(
    git_dir: Path, ref: str, before: str, after: str, *, limit: int = 20
) -> list[CommitInfo]:
    """Commits a push brought to `ref`, oldest first, as GitHub's push payload lists them."""
    if after == ZERO_SHA:
        return []
    if before == ZERO_SHA:
        branch = ref.removeprefix("refs/heads/")
        others = [f"^{sha}" for name, sha in branches(git_dir).items() if name != branch]
        revs = run_git(git_dir, "rev-list", "--reverse", after, *others).split()
    else:
        revs = run_git(git_dir, "rev-list", "--reverse", f"{before}..{after}").split()
    return [commit_info(git_dir, sha) for sha in revs[-limit:]]


def commit_info(git_dir: Path, sha: str) -> CommitInfo:
    fmt = "%H%x00%T%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
    fields = run_git(git_dir, "show", "-s", f"--format={fmt}", sha).split("\0")
    changes = run_git(
        git_dir,
        "diff-tree",
        "-r",
        "--root",
        "--no-commit-id",
        "--name-status",
        "-z",
        "--no-renames",
        sha,
    ).split("\0")
    added: list[str] = []
    removed: list[str] = []
    modified: list[str] = []
    pairs = [c for c in changes if c]
    for status, path in zip(pairs[::2], pairs[1::2], strict=False):
        {"A": added, "D": removed}.get(status, modified).append(path)
    return CommitInfo(
        sha=fields[0],
        tree=fields[1],
        author_name=fields[2],
        author_email=fields[3],
        authored_at=fields[4],
        committer_name=fields[5],
        committer_email=fields[6],
        committed_at=fields[7],
        message=fields[8].rstrip("\n"),
        added=added,
        removed=removed,
        modified=modified,
    )
