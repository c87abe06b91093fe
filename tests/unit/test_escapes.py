"""Hostile commands, run through the real sandbox: each fails safely, and we check what it got."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from honk_app.sandbox.bubblewrap import TIMEOUT_EXIT_CODE, CommandResult, Sandbox, SandboxLimits
from honk_app.sandbox.tools import AgentTools
from tests.conftest import sandbox_owned

LIMITS = SandboxLimits(timeout_seconds=20)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git checkout, as the worker prepares it."""
    path = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "app.py").write_text("print('hi')\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    return sandbox_owned(path)


def run(sandbox: Sandbox, command: str, **kwargs: float) -> CommandResult:
    return asyncio.run(sandbox.run(command, **kwargs))


def host_pids() -> set[str]:
    return set(filter(str.isdigit, os.listdir("/proc")))


def test_proc_shows_no_host_process_or_environment(repo: Path) -> None:
    marker = f"honk-secret-{uuid.uuid4()}"
    os.environ["HONK_TEST_SECRET"] = marker
    try:
        result = run(Sandbox(repo, limits=LIMITS),
                     "cat /proc/1/environ | tr '\\0' '\\n'; echo ---; "
                     "cat /proc/[0-9]*/environ | tr '\\0' '\\n' | sort -u; echo ---; "
                     f"ls -d /proc/[0-9]* | wc -l; kill -9 {os.getpid()} 2>&1")
    finally:
        del os.environ["HONK_TEST_SECRET"]
    assert marker not in result.output
    pid1_env, all_env, rest = result.output.split("---\n")
    assert [line for line in sorted(pid1_env.split()) if not line.startswith("GIT_CONFIG_")] \
        == [  # the allowlist, and the PWD its bash sets
        "HOME=/tmp/home", "LANG=C.UTF-8",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PWD=/workspace", "TERM=dumb"]
    assert "HONK_TEST_SECRET" not in all_env
    visible, kill = rest.splitlines()
    assert int(visible) < 10  # bwrap's init, bash and the pipeline, not the host's hundreds
    assert "No such process" in kill


def test_app_key_outside_the_workspace_is_unreachable(repo: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "honk-data"
    data_dir.mkdir()
    key = data_dir / "app-key.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\nSECRETKEYMATERIAL\n")
    result = run(Sandbox(repo, limits=LIMITS),
                 f"cat {key} 2>&1; ls {data_dir} 2>&1; "
                 "find / -xdev \\( -name app-key.pem -o -name 'honk-data' \\) 2>/dev/null; "
                 "cat /etc/shadow 2>&1 | head -1")
    assert "SECRETKEYMATERIAL" not in result.output
    lines = result.output.splitlines()
    assert lines[0] == f"cat: {key}: No such file or directory"
    assert lines[1].endswith("No such file or directory")
    assert "root:" not in result.output  # /etc/shadow is masked
    assert len(lines) == 3


class LoopbackListener:
    """A TCP listener on 127.0.0.1 that records whether anyone connected."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            connection.close()


@pytest.fixture
def listener() -> Iterator[LoopbackListener]:
    server = LoopbackListener()
    yield server
    server.socket.close()


def test_network_is_off(repo: Path, listener: LoopbackListener) -> None:
    connect = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {listener.port}),"
               " timeout=2)\n    print('connected')\n"
               "except OSError as e:\n    print(type(e).__name__)")
    result = run(Sandbox(repo, limits=LIMITS),
                 f"curl -sS -m 2 http://127.0.0.1:{listener.port}/ 2>&1; "
                 f"python3 -c \"{connect}\"; getent hosts github.com || echo no-dns")
    assert "hello" not in result.output
    assert "Failed to connect" in result.output or "Couldn't connect" in result.output
    assert "ConnectionRefusedError" in result.output
    assert result.output.endswith("no-dns\n")
    assert listener.connections == 0


def test_network_can_be_shared_by_the_operator(repo: Path, listener: LoopbackListener) -> None:
    # The control for the test above: with network=True the same request gets through.
    result = run(Sandbox(repo, limits=LIMITS, network=True),
                 f"curl -sS -m 5 http://127.0.0.1:{listener.port}/")
    assert result.output == "hello"
    assert listener.connections == 1


@pytest.mark.parametrize("network", [False, True])
def test_host_abstract_unix_sockets_are_out_of_reach(repo: Path, network: bool) -> None:
    """Abstract sockets (D-Bus, X11, container agents listen there) have no file to mask:
    they belong to the network namespace, so only a shared network reaches them."""
    name = f"honk-abstract-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(1)
    accepted: list[object] = []
    server.settimeout(15)

    def accept() -> None:
        with contextlib.suppress(OSError):  # timed out, or closed: nothing reached it
            accepted.append(server.accept())

    waiter = threading.Thread(target=accept, daemon=True)
    waiter.start()
    connect = ("import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n"
               f"    s.connect('\\0{name}'); print('connected')\n"
               "except OSError as e:\n    print(type(e).__name__)")
    try:
        result = run(Sandbox(repo, limits=LIMITS, network=network), f'python3 -c "{connect}"')
        waiter.join(timeout=0 if not network else 15)
    finally:
        server.close()
    if network:  # the control: the same attempt, with the host's network, gets through
        assert result.output == "connected\n" and accepted, result.output
    else:
        assert result.output == "ConnectionRefusedError\n", result.output
        assert not accepted


def test_writes_outside_the_workspace_fail_or_stay_inside(repo: Path, tmp_path: Path) -> None:
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    name = f"honk-evil-{uuid.uuid4().hex}"
    result = run(Sandbox(repo, limits=LIMITS),
                 f"for d in /etc /usr /usr/local/bin /bin /; do touch $d/{name} 2>&1; done; "
                 f"mkdir -p {host_tmp} && touch {host_tmp}/{name} && echo made-in-private-tmp")
    assert result.output.count("Read-only file system") == 5
    assert result.output.endswith("made-in-private-tmp\n")
    for directory in ("/etc", "/usr", "/usr/local/bin", "/bin", "/", str(host_tmp)):
        assert not Path(directory, name).exists()


def test_git_config_and_hooks_cannot_be_changed(repo: Path) -> None:
    config = (repo / ".git" / "config").read_text()
    result = run(Sandbox(repo, limits=LIMITS),
                 "git config core.hooksPath /tmp 2>&1; "
                 "echo '[core] fsmonitor = touch /tmp/pwned' >> .git/config 2>&1; "
                 "printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit 2>&1; "
                 "git update-ref refs/heads/evil HEAD 2>&1; "
                 "rm -rf .git 2>&1; mv .git gone 2>&1; echo done")
    assert result.output.count("Read-only file system") >= 3
    assert result.output.endswith("done\n")
    assert (repo / ".git" / "config").read_text() == config
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert not (repo / ".git" / "refs" / "heads" / "evil").exists()
    assert (repo / ".git" / "HEAD").exists()


def test_git_worktree_metadata_is_read_only(repo: Path, tmp_path: Path) -> None:
    worktree = tmp_path / "run-1"
    subprocess.run(["git", "-C", str(repo), "-c", "safe.directory=*", "worktree", "add", "-q",
                    "-b", "honk/1",
                    str(worktree)], check=True)
    sandbox_owned(worktree)
    gitdir_pointer = (worktree / ".git").read_text()
    sandbox = Sandbox(worktree, read_only_paths=[repo / ".git"], limits=LIMITS)
    result = run(sandbox, "git log --format=%s; echo x > new.txt; git status --short; "
                          "echo 'gitdir: /tmp' > .git 2>&1; "
                          f"echo evil >> {repo}/.git/config 2>&1; "
                          f"touch {repo}/.git/hooks/post-checkout 2>&1; "
                          f"cat {repo}/app.py 2>&1; echo done")
    assert result.output.startswith("first\n?? new.txt\n")
    assert result.output.count("Read-only file system") == 3
    assert f"cat: {repo}/app.py: No such file or directory" in result.output
    assert (worktree / ".git").read_text() == gitdir_pointer
    assert "evil" not in (repo / ".git" / "config").read_text()
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()


def test_editor_refuses_symlinks_out_of_the_workspace(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("outside secret\n")
    tools = AgentTools(Sandbox(repo, limits=LIMITS), repo)
    made = asyncio.run(tools.run_tool("bash", {"command": (
        f"ln -s /etc/passwd passwd && ln -s {outside} out && ln -s {tmp_path} dir && echo ok")}))
    assert made.text == "ok"
    passwd = Path("/etc/passwd").read_text()
    attempts = [
        {"command": "view", "path": "/workspace/passwd"},
        {"command": "str_replace", "path": "passwd", "old_str": "root", "new_str": "toor"},
        {"command": "create", "path": "passwd", "file_text": "evil::0:0::/:/bin/sh\n"},
        {"command": "insert", "path": "passwd", "insert_line": 0, "insert_text": "evil\n"},
        {"command": "view", "path": "out"},
        {"command": "create", "path": "dir/planted.txt", "file_text": "x"},
        {"command": "view", "path": "/etc/passwd"},
        {"command": "view", "path": "../outside.txt"},
    ]
    for attempt in attempts:
        output = asyncio.run(tools.run_tool("str_replace_based_edit_tool", attempt))
        assert output.is_error, attempt
        assert "outside the workspace" in output.text or "'..' is not allowed" in output.text
        assert "root:" not in output.text and "outside secret" not in output.text
    assert Path("/etc/passwd").read_text() == passwd
    assert outside.read_text() == "outside secret\n"
    assert not (tmp_path / "planted.txt").exists()
    assert (repo / "passwd").is_symlink()


def test_fork_bomb_is_bounded_and_ended(repo: Path) -> None:
    limits = SandboxLimits(timeout_seconds=3, max_processes=64)
    marker = f"honk-bomb-{uuid.uuid4().hex}"
    # The bomb's subshells are forks, so each keeps the marker in its command line; a
    # watcher made of shell builtins records the most processes the sandbox ever held.
    bomb = ("( most=0; while (( SECONDS < 2 )); do p=(/proc/[0-9]*); "
            "(( ${#p[@]} > most )) && most=${#p[@]}; done; echo $most > count ) & "
            "bomb() { bomb | bomb & }; bomb; while :; do :; done")
    result = run(Sandbox(repo, limits=limits), f"bash -c '{bomb}' {marker}")
    assert result.timed_out
    assert result.exit_code == TIMEOUT_EXIT_CODE
    # The bomb fills whatever room it gets (1,500 of 1,500 here in 2 s). A /proc listing is not a
    # snapshot (a pid freed and a higher one forked during the scan are both seen), so
    # the watcher may overcount slightly.
    assert 10 < int((repo / "count").read_text()) <= 64 + 16
    assert [pid for pid in host_pids() if marker.encode() in _cmdline(pid)] == []


def test_ten_gigabytes_of_output_are_capped_in_bounded_memory(repo: Path) -> None:
    limits = SandboxLimits(timeout_seconds=5, output_limit_chars=30_000)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run(Sandbox(repo, limits=limits), "yes | head -c 10000000000")
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.truncated
    assert len(result.output) <= 30_000 + 200  # the cap, plus the timeout line if it fired
    assert result.output.startswith("y\ny\n")
    assert "bytes cut from the middle of" in result.output
    assert peak_after - peak_before < 64 * 1024  # KiB: nowhere near the output's size
    assert sorted(p.name for p in repo.iterdir()) == [".git", "app.py"]


def test_command_that_never_ends_is_killed_at_its_timeout(repo: Path) -> None:
    marker = f"honk-spin-{uuid.uuid4().hex}"
    result = run(Sandbox(repo, limits=LIMITS),
                 f"trap '' TERM INT HUP; bash -c 'while :; do :; done' {marker}", timeout=1)
    assert result.timed_out
    assert result.exit_code == TIMEOUT_EXIT_CODE
    assert "timed out after 1 s" in result.output
    leftovers = [pid for pid in host_pids()
                 if marker.encode() in _cmdline(pid)]
    assert leftovers == []


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
