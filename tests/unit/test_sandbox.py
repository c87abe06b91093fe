"""The sandbox, through real bubblewrap: what a command sees, its limits, and its end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from honk_app.sandbox.bubblewrap import (
    MAX_COMMAND_BYTES,
    TIMEOUT_EXIT_CODE,
    CommandResult,
    OutputBuffer,
    Sandbox,
    SandboxLimits,
    SandboxUnavailable,
    cap_text,
    check_available,
)
from tests.conftest import sandbox_owned

QUICK = SandboxLimits(timeout_seconds=20)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    (path / "README.md").write_text("hello from the host\n")
    return sandbox_owned(path)


def run(sandbox: Sandbox, command: str, **kwargs: float) -> CommandResult:
    return asyncio.run(sandbox.run(command, **kwargs))


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes on the host that mention marker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and pid != str(os.getpid()):
            found.append(cmdline)
    return found


def unique_sleep() -> str:
    """A sleep duration nobody else uses, to find its processes by command line."""
    return f"1000.{uuid.uuid4().int % 10**6:06d}"


def test_bubblewrap_is_available_here() -> None:
    check_available()


def test_command_runs_in_the_workspace_and_changes_it(workspace: Path) -> None:
    result = run(Sandbox(workspace, limits=QUICK), "pwd; cat README.md; echo made > new.txt")
    assert result == CommandResult(0, "/workspace\nhello from the host\n", False, False)
    assert (workspace / "new.txt").read_text() == "made\n"


def test_exit_status_and_interleaved_streams(workspace: Path) -> None:
    result = run(Sandbox(workspace, limits=QUICK), "echo one; echo two >&2; echo three; exit 3")
    assert result.exit_code == 3
    assert result.output == "one\ntwo\nthree\n"


def test_signal_death_is_reported_as_shells_do(workspace: Path) -> None:
    assert run(Sandbox(workspace, limits=QUICK), "kill -TERM $$").exit_code == 128 + 15


def test_environment_is_the_allowlist_plus_callers(workspace: Path) -> None:
    os.environ["HONK_TEST_HOST_ONLY"] = "host-value"
    try:
        sandbox = Sandbox(workspace, limits=QUICK, env={"CI": "true"})
        result = run(sandbox, "env -0")
    finally:
        del os.environ["HONK_TEST_HOST_ONLY"]
    env = dict(item.split("=", 1) for item in result.output.split("\0") if item)
    env.pop("PWD"), env.pop("SHLVL"), env.pop("_")  # set by bash itself
    expected = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/tmp/home", "LANG": "C.UTF-8", "TERM": "dumb", "CI": "true"}
    if sandbox.file_owner is not None:  # run by root: git inside accepts root's slots
        expected |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
                     "GIT_CONFIG_VALUE_0": "*"}
    assert env == expected


def test_home_and_tmp_are_private_and_writable(workspace: Path) -> None:
    result = run(Sandbox(workspace, limits=QUICK),
                 "echo x > $HOME/f && echo y > /tmp/g && ls /tmp && touch /usr/evil 2>&1; "
                 "touch /rootfile 2>&1; true")
    assert result.output.startswith("g\nhome\n")
    assert "Read-only file system" in result.output
    assert not Path("/usr/evil").exists()


def test_namespaces_are_all_new(workspace: Path) -> None:
    result = run(Sandbox(workspace, limits=QUICK),
                 "hostname; echo $$; grep -c . /proc/net/dev; cat /proc/self/status")
    hostname, pid, net_lines, *status = result.output.splitlines()
    assert hostname == "honk-sandbox"
    assert int(pid) < 10  # a fresh pid namespace
    assert net_lines == "3"  # two header lines and lo: no host interface
    fields = dict(line.split(":\t", 1) for line in status if ":\t" in line)
    assert fields["CapEff"] == fields["CapBnd"] == "0000000000000000"
    assert fields["NoNewPrivs"] == "1"


def test_git_works_read_only_inside(workspace: Path) -> None:
    git = ["git", "-C", str(workspace), "-c", "user.name=t", "-c", "user.email=t@t",
           "-c", "safe.directory=*"]
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    (workspace / "README.md").write_text("changed\n")
    result = run(Sandbox(workspace, limits=QUICK),
                 "git log --format=%s; git diff --stat; git status --short; "
                 "git commit -qam second 2>&1 | tail -1")
    assert result.output.splitlines()[:3] == [
        "first", " README.md | 2 +-", " 1 file changed, 1 insertion(+), 1 deletion(-)"]
    assert " M README.md" in result.output
    assert "Read-only file system" in result.output
    log = subprocess.run([*git, "log", "--format=%s"], capture_output=True, text=True)
    assert log.stdout == "first\n"


def test_read_only_paths_are_readable_not_writable(workspace: Path, tmp_path: Path) -> None:
    shared = tmp_path / "toolchain"
    shared.mkdir()
    (shared / "tool.txt").write_text("tool\n")
    sandbox = Sandbox(workspace, read_only_paths=[shared], limits=QUICK)
    result = run(sandbox, f"cat {shared}/tool.txt; echo x > {shared}/tool.txt")
    assert result.output.startswith("tool\n")
    assert "Read-only file system" in result.output
    assert (shared / "tool.txt").read_text() == "tool\n"


def test_output_is_capped_head_and_tail(workspace: Path) -> None:
    sandbox = Sandbox(workspace, limits=SandboxLimits(timeout_seconds=20, output_limit_chars=1000))
    result = run(sandbox, "echo FIRST; seq 1 100000; echo LAST")
    assert result.truncated
    assert len(result.output) <= 1000
    assert result.output.startswith("FIRST\n1\n2\n")
    assert result.output.endswith("99999\n100000\nLAST\n")
    assert "[... " in result.output and " cut from the middle of " in result.output


def test_timeout_kills_the_command_and_says_so(workspace: Path) -> None:
    marker = unique_sleep()
    result = run(Sandbox(workspace, limits=QUICK),
                 f"echo started; sleep {marker} & sleep {marker}", timeout=0.5)
    assert result.exit_code == TIMEOUT_EXIT_CODE
    assert result.timed_out
    assert result.output.startswith("started\n")
    assert "timed out after 0.5 s" in result.output
    assert processes_with(marker) == []


def test_cancelling_the_task_kills_the_whole_tree(workspace: Path) -> None:
    marker = unique_sleep()
    sandbox = Sandbox(workspace, limits=QUICK)

    async def cancel_midway() -> None:
        task = asyncio.create_task(sandbox.run(
            f"(sleep {marker} &); setsid sleep {marker} & sleep {marker}"))
        for _ in range(500):  # until the three sleeps run (5 s at most)
            if processes_with(marker).count(f"sleep {marker} ") == 3:
                break
            await asyncio.sleep(0.01)
        assert processes_with(marker).count(f"sleep {marker} ") == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert processes_with(marker) == []


def test_background_processes_end_with_the_command(workspace: Path) -> None:
    marker = unique_sleep()
    result = run(Sandbox(workspace, limits=QUICK),
                 f"nohup setsid sleep {marker} >/dev/null 2>&1 & echo left")
    assert result.output == "left\n"
    assert processes_with(marker) == []


def test_file_size_limit(workspace: Path) -> None:
    limits = SandboxLimits(timeout_seconds=20, max_file_bytes=2**20)
    result = run(Sandbox(workspace, limits=limits), "head -c 3000000 /dev/zero > big")
    assert result.exit_code != 0
    assert (workspace / "big").stat().st_size == 2**20


def test_memory_limit(workspace: Path) -> None:
    limits = SandboxLimits(timeout_seconds=20, memory_bytes=512 * 2**20)
    result = run(Sandbox(workspace, limits=limits),
                 "python3 -c 'bytearray(1024 * 2**20)' 2>&1 | tail -1")
    assert result.output == "MemoryError\n"


def test_process_limit_stops_forks(workspace: Path) -> None:
    limits = SandboxLimits(timeout_seconds=20, max_processes=20)
    script = ("import os, time\nn = 0\nfor _ in range(100):\n    try:\n        pid = os.fork()\n"
              "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n"
              "        os._exit(0)\n    n += 1\nprint(n)\n")
    (workspace / "forks.py").write_text(script)
    result = run(Sandbox(workspace, limits=limits), "python3 forks.py")
    assert 5 < int(result.output) < 20


def test_too_long_command_is_refused_with_advice(workspace: Path) -> None:
    result = run(Sandbox(workspace, limits=QUICK), "echo " + "x" * MAX_COMMAND_BYTES)
    assert result.exit_code == 2
    assert "editor tool" in result.output


def test_run_argv_returns_the_status(workspace: Path) -> None:
    sandbox = Sandbox(workspace, limits=QUICK)
    assert asyncio.run(sandbox.run_argv(["sh", "-c", "echo hi > out; exit 7"])) == 7
    assert (workspace / "out").read_text() == "hi\n"
    short = Sandbox(workspace, limits=SandboxLimits(timeout_seconds=0.3))
    assert asyncio.run(short.run_argv(["sleep", "30"])) == TIMEOUT_EXIT_CODE


def test_run_argv_can_hand_over_the_terminal(workspace: Path) -> None:
    # As `honk sandbox -- CMD` does: the command reads our stdin and writes our stdout.
    script = ("import asyncio, sys\nfrom pathlib import Path\n"
              "from honk_app.sandbox.bubblewrap import Sandbox\n"
              "sandbox = Sandbox(Path(sys.argv[1]))\n"
              "sys.exit(asyncio.run(sandbox.run_argv(['sh', '-c', 'echo in $PWD; cat; exit 5'],"
              " inherit_stdio=True)))\n")
    child = subprocess.run([sys.executable, "-c", script, str(workspace)], input="typed\n",
                           capture_output=True, text=True, timeout=60)
    assert (child.returncode, child.stdout) == (5, "in /workspace\ntyped\n")


def test_concurrent_commands_do_not_mix(workspace: Path) -> None:
    sandbox = Sandbox(workspace, limits=QUICK)

    async def three() -> list[CommandResult]:
        return await asyncio.gather(*(sandbox.run(f"sleep 0.2; echo {n}; exit {n}")
                                      for n in range(3)))

    assert [(r.exit_code, r.output) for r in asyncio.run(three())] == [
        (0, "0\n"), (1, "1\n"), (2, "2\n")]


def test_unsafe_mode_runs_on_the_host_with_the_same_rules(workspace: Path) -> None:
    marker = unique_sleep()
    sandbox = Sandbox(workspace, limits=QUICK, unsafe_no_sandbox=True, env={"CI": "1"})
    result = run(sandbox, f"pwd; echo $CI; echo ${{HONK_NOPE:-unset}}; sleep {marker} & echo bg")
    assert result.output == f"{workspace}\n1\nunset\nbg\n"
    assert processes_with(marker) == []
    timed = run(sandbox, f"sleep {marker} & sleep {marker}", timeout=0.3)
    assert timed.timed_out
    assert processes_with(marker) == []


def test_missing_bubblewrap_is_explained(workspace: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    path = os.environ["PATH"]
    os.environ["PATH"] = str(empty)
    try:
        with pytest.raises(SandboxUnavailable, match="HONK_UNSAFE_NO_SANDBOX"):
            check_available()
    finally:
        os.environ["PATH"] = path


def test_cap_text_keeps_head_and_tail_and_counts_the_cut() -> None:
    text = "".join(f"{n:05d}\n" for n in range(10_000))
    capped, truncated = cap_text(text, 500)
    assert truncated
    assert len(capped) <= 500
    assert capped.startswith("00000\n00001\n")
    assert capped.endswith("09999\n")
    assert f"[... {len(text) - 2 * 190:,} characters cut from the middle of {len(text):,};" \
        in capped
    assert cap_text("short", 500) == ("short", False)


def test_output_buffer_keeps_bounded_head_and_tail_of_a_long_stream() -> None:
    buffer = OutputBuffer(1000)
    lines = [f"line {n} é\n".encode() for n in range(100_000)]
    for line in lines:
        buffer.feed(line)
    text, truncated = buffer.render()
    assert truncated
    assert len(text) <= 1000
    head, tail = text.split("\n[... ")[0], text.split("...]\n")[1]
    assert head.startswith("line 0 é\nline 1 é\n")
    assert tail.endswith("line 99998 é\nline 99999 é\n")
    total = sum(map(len, lines))
    cut = total - len(head.encode()) - len(tail.encode())
    assert f"[... {cut:,} bytes cut from the middle of {total:,};" in text
