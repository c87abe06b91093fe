"""`honk sandbox --workspace DIR -- CMD`: one command exactly as the agent's bash tool runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import sandbox_owned

HONK = shutil.which("honk") or str(Path(sys.executable).with_name("honk"))


def honk_sandbox(workspace: Path, *command: str, env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(workspace.parent)}
    return subprocess.run([HONK, "sandbox", "--workspace", str(workspace), "--", *command],
                          capture_output=True, text=True, timeout=60, env={**base, **(env or {})})


def test_exits_with_the_commands_status_and_writes_only_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    workspace = sandbox_owned(tmp_path / "ws")
    done = honk_sandbox(workspace, "sh", "-c",
                        "echo made > made.txt; pwd; touch /etc/honk-test 2>&1; exit 7")
    assert done.returncode == 7
    assert "/workspace" in done.stdout
    assert "Read-only file system" in done.stdout + done.stderr
    assert (workspace / "made.txt").read_text() == "made\n"
    assert not Path("/etc/honk-test").exists()


def test_a_worktree_reads_its_git_history_but_cannot_write_it(tmp_path: Path) -> None:
    main, side = tmp_path / "main", tmp_path / "side"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", str(main)], check=True)
    subprocess.run([*git, "-C", str(main), "commit", "-q", "--allow-empty", "-m", "first"],
                   check=True)
    subprocess.run([*git, "-C", str(main), "worktree", "add", "-q", str(side)], check=True)
    done = honk_sandbox(side, "sh", "-c", "git log --format=%s; git branch -q x && echo wrote")
    assert done.stdout.splitlines()[0] == "first"
    assert "wrote" not in done.stdout
    assert subprocess.run(["git", "-C", str(main), "branch", "--list", "x"], capture_output=True,
                          text=True, check=True).stdout == ""


def test_without_bubblewrap_it_refuses_and_says_how_to_install_it(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    workspace = sandbox_owned(tmp_path / "ws")
    bare_path = tmp_path / "bin"  # everything Honk needs on PATH but bwrap
    bare_path.mkdir()
    for tool in ("prlimit", "sh", "bash"):
        (bare_path / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    done = honk_sandbox(workspace, "true", env={"PATH": str(bare_path)})
    assert done.returncode == 2
    assert "bubblewrap" in done.stderr and "HONK_UNSAFE_NO_SANDBOX" in done.stderr
    unsafe = honk_sandbox(workspace, "/usr/bin/touch", "ok",
                          env={"PATH": str(bare_path), "HONK_UNSAFE_NO_SANDBOX": "1"})
    assert unsafe.returncode == 0 and (workspace / "ok").exists()


def test_worker_start_makes_the_data_directory_honks_alone(tmp_path: Path) -> None:
    # What an older Honk (umask 022) left: a readable database and transcript.
    data = tmp_path / "data"
    (data / "runs" / "7").mkdir(parents=True)
    (data / "honk.db").write_text("db")
    (data / "runs" / "7" / "transcript.jsonl").write_text("{}\n")
    for path in (data, data / "runs", data / "runs" / "7"):
        path.chmod(0o755)
    for path in (data / "honk.db", data / "runs" / "7" / "transcript.jsonl"):
        path.chmod(0o644)
    done = subprocess.run([HONK, "worker"], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HONK_DATA_DIR": str(data)})
    assert done.returncode == 2  # no App credentials: it stops, after locking the directory
    # And it said, in one line, which sandbox limits this host cannot enforce (if any).
    said = [line for line in (done.stdout + done.stderr).splitlines() if "sandbox limits" in line]
    assert len(said) == 1, done.stdout + done.stderr
    if os.geteuid() != 0:  # no writable cgroup for an unprivileged user here
        assert "not enforced" in said[0] and "memory: RLIMIT_AS per process" in said[0]
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert oct((data / "runs" / "7").stat().st_mode & 0o777) == "0o700"
    assert oct((data / "honk.db").stat().st_mode & 0o777) == "0o600"
    assert oct((data / "runs" / "7" / "transcript.jsonl").stat().st_mode & 0o777) == "0o600"


def test_kernel_settings_and_root_files_are_out_of_reach(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    workspace = sandbox_owned(tmp_path / "ws")
    before = Path("/proc/sys/kernel/printk_ratelimit").read_text()
    done = honk_sandbox(workspace, "sh", "-c",
                        "echo 7 > /proc/sys/kernel/printk_ratelimit; id -u; "
                        "cat /etc/shadow 2>&1; keyctl show 2>&1 | head -1; exit 3")
    assert done.returncode == 3
    assert Path("/proc/sys/kernel/printk_ratelimit").read_text() == before
    assert "Read-only file system" in done.stderr + done.stdout
    assert done.stdout.splitlines()[0] != "0"
    assert "root:" not in done.stdout
