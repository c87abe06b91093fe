"""How fast a run's workspace is ready on a repository Honk has seen, against a shallow clone.

Builds a synthetic repository with `git fast-import` (20,000 files in nested directories and
a few hundred commits by default), serves it on 127.0.0.1 over smart HTTP (`git http-backend`
behind a token check, as GitHub serves it) or with `git daemon`, and measures in the same run:
  - `git clone --depth 1`, what a per-run checkout (an Actions-based agent) costs;
  - WorkspaceManager.checkout on a repository already seen, each time after a new commit
    has landed on the remote: fetch, take a kept slot, move it to the new tip, clean.
Prints the medians and their ratio; the target is a ratio of at most 0.1.

    .venv/bin/python bench/workspace_ready.py [--files 20000] [--commits 300] [--rounds 7]
                                              [--server http|daemon]

HTTP is the default: on this machine `git daemon` with protocol v2 spends about 50 ms on
every connection (`git ls-remote` takes 50 ms, 5 ms with protocol v0), a fixed cost on both
sides that neither GitHub nor the HTTP server here has.
"""

import argparse
import asyncio
import base64
import logging
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from honk_app.workspace.checkout import WorkspaceManager
from honk_app.workspace.git import GitRemote
from honk_sim.git_server import GitHttpServer
from honk_sim.loopback import free_port

TARGET_RATIO = 0.1
TOKEN = "ghs_bench_token"


def git_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }


def file_path(number: int) -> str:
    return f"src/d{number % 40:02d}/e{number // 40 % 25:02d}/f{number:06d}.txt"


def random_text(size: int) -> bytes:
    """Text that compresses about as well as source code does: base64 of random bytes."""
    return base64.encodebytes(os.urandom(size * 3 // 4))


def fast_import_stream(numbers: range, files: int, file_size: int) -> bytes:
    """Commits `numbers` on main: commit 0 adds every file, each later one changes five."""
    parts: list[bytes] = []
    for number in numbers:
        message = f"Commit {number}\n".encode()
        when = 1_700_000_000 + number * 60
        parts.append(b"commit refs/heads/main\n")
        parts.append(f"committer Bench <bench@example.com> {when} +0000\n".encode())
        parts.append(b"data %d\n%s" % (len(message), message))
        if number == numbers.start and number > 0:  # main exists from an earlier stream
            parts.append(b"from refs/heads/main^0\n")
        changes = (
            range(files)
            if number == 0
            else [(number * 7919 + k * 104_729) % files for k in range(5)]
        )
        for changed in changes:
            content = random_text(file_size)
            parts.append(f"M 100644 inline {file_path(changed)}\n".encode())
            parts.append(b"data %d\n%s\n" % (len(content), content))
    return b"".join(parts)


def build_repository(bare: Path, files: int, commits: int, file_size: int) -> None:
    subprocess.run(
        ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)],
        env=git_env(),
        check=True,
    )
    stream = fast_import_stream(range(commits), files, file_size)
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=bare, input=stream, env=git_env(), check=True
    )
    subprocess.run(["git", "repack", "-a", "-d", "-q"], cwd=bare, env=git_env(), check=True)


def land_a_commit(bare: Path, files: int, file_size: int, number: int) -> None:
    """Someone merges something on the remote: a commit changing a few files."""
    stream = fast_import_stream(range(number, number + 1), files, file_size)
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=bare, input=stream, env=git_env(), check=True
    )


@contextmanager
def daemon_server(root: Path) -> Iterator[str]:
    port = free_port()
    daemon = subprocess.Popen(
        [
            "git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
            f"--port={port}", f"--base-path={root}", str(root),
        ],
        env=git_env(),
        stderr=subprocess.DEVNULL,  # the readiness probe makes it say "hung up unexpectedly"
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait()


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    """`git http-backend` behind Basic auth with TOKEN, like GitHub's smart HTTP."""
    with GitHttpServer(root, TOKEN) as server:
        yield server.url


def time_shallow_clone(url: str, scratch: Path, number: int) -> float:
    """A shallow clone, authenticated the way a per-run agent would be."""
    target = scratch / f"clone-{number}"
    auth = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    env = git_env() | {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {auth}",
    }
    started = time.perf_counter()
    subprocess.run(
        ["git", "clone", "--quiet", "--depth", "1", url, str(target)], env=env, check=True
    )
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    os.sync()  # so that writing back this clone's deletion does not land in the next timing
    return elapsed


async def time_checkout(manager: WorkspaceManager, remote: GitRemote, number: int) -> float:
    started = time.perf_counter()
    async with manager.checkout(
        "bench/repo", remote, base_branch="main", branch=f"honk/{number}-bench"
    ) as workspace:
        elapsed = time.perf_counter() - started
        # What a run leaves behind, for the release (not timed) to clean up.
        (workspace.path / "src" / "new-file.txt").write_text("agent output\n")
        (workspace.path / file_path(number)).write_text("edited\n")
    return elapsed


async def measure(args: argparse.Namespace, root: Path) -> None:
    bare = root / "served" / "repo.git"
    bare.parent.mkdir()
    started = time.perf_counter()
    build_repository(bare, args.files, args.commits, args.file_size)
    built = time.perf_counter() - started
    pack_bytes = sum(p.stat().st_size for p in (bare / "objects" / "pack").glob("*.pack"))
    print(
        f"repository: {args.files} files, {args.commits} commits, "
        f"pack {pack_bytes / 1e6:.1f} MB, built in {built:.1f} s"
    )

    server = http_server if args.server == "http" else daemon_server
    with server(root / "served") as base_url:
        url = f"{base_url}/repo.git"
        remote = GitRemote(url, TOKEN if args.server == "http" else None)
        manager = WorkspaceManager(root / "data", pool_size=2)
        first = await time_checkout(manager, remote, 0)
        print(f"first checkout (creates the mirror and a slot): {first:.3f} s")

        clones, checkouts = [], []
        for number in range(1, args.rounds + 1):
            clones.append(time_shallow_clone(url, root, number))
            land_a_commit(bare, args.files, args.file_size, args.commits + number)
            checkouts.append(await time_checkout(manager, remote, number))

    clone, checkout = statistics.median(clones), statistics.median(checkouts)
    ratio = checkout / clone
    print(f"served by {args.server} on 127.0.0.1")
    print(f"shallow clone    median {clone:.3f} s  (min {min(clones):.3f}, n={len(clones)})")
    print(
        f"workspace ready  median {checkout:.3f} s  (min {min(checkouts):.3f}, "
        f"n={len(checkouts)}, after a new commit on the remote each time)"
    )
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"ratio {ratio:.3f}  (target <= {TARGET_RATIO}: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--file-size", type=int, default=1_200, help="bytes per file")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--server", choices=("http", "daemon"), default="http")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="honk-bench-workspace-") as scratch:
        asyncio.run(measure(args, Path(scratch)))


if __name__ == "__main__":
    main()
