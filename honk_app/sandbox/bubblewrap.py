"""Run the agent's commands under bubblewrap: the workspace read-write, the system read-only.

Every command the agent chooses is treated as hostile. It runs in fresh pid, ipc, uts,
cgroup and (unless the operator allows it) network namespaces, as a host uid that owns
nothing (user.py), with no capabilities, `no_new_privs`, a seccomp filter
(seccomp.py), an environment built from an allowlist, and the filesystem that
mounts.py describes.

Limits, as measured on this machine (kernel 6.18, run as root, cgroup v1 with writable
pids, memory and cpu hierarchies, bubblewrap 0.8.0):
- Time: each command is killed at its timeout. Killing bwrap (SIGKILL to its process
  group) kills the sandbox's pid 1 through `--die-with-parent`, and the kernel then kills
  every process of the pid namespace, daemonised or not.
- Processes, memory, CPU: per command, not per process (cgroups.py): a pids cgroup
  (RLIMIT_NPROC does not bind root and counts a uid's processes host-wide), a memory
  cgroup that counts every process and the private /tmp and /dev/shm together, and a CPU
  quota. RLIMIT_AS and RLIMIT_NPROC stay as a per-process floor, and are all there is
  where no cgroup can be made (Honk says so once at start).
- Disk: RLIMIT_FSIZE caps each file; the workspace's bytes and files are capped as a whole
  by measurement (disk.py); /tmp and /dev/shm are tmpfs with a size.
- Output: one pipe carries stdout and stderr interleaved; the reader keeps a head and a
  rolling tail and only counts what falls between, so 10 GB of output costs no memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from honk_app.sandbox.cgroups import (
    Cgroup,
    CgroupLimits,
    command_cgroups,
    missing_controllers,
)
from honk_app.sandbox.disk import DiskCap, Usage
from honk_app.sandbox.mounts import SANDBOX_HOME, WORKSPACE_MOUNT, bwrap_argv
from honk_app.sandbox.output import OutputBuffer, cap_text
from honk_app.sandbox.user import SandboxUser, sandbox_user

log = structlog.get_logger()

__all__ = [
    "MAX_COMMAND_BYTES", "SANDBOX_HOME", "SANDBOX_PATH", "STOPPED_EXIT_CODE", "TIMEOUT_EXIT_CODE",
    "UNSAFE_SWITCH", "WORKSPACE_MOUNT", "CommandResult", "OutputBuffer", "Sandbox",
    "SandboxLimits", "SandboxUnavailable", "cap_text", "check_available", "default_cpus",
    "report_enforcement",
]
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT_EXIT_CODE = 124
STOPPED_EXIT_CODE = 137  # killed, as a shell reports SIGKILL
MAX_COMMAND_BYTES = 100_000  # well under Linux's 128 KiB cap on one argument
UNSAFE_SWITCH = "HONK_UNSAFE_NO_SANDBOX=1"
_KILL_GRACE_SECONDS = 2.0
# Enters the command's cgroups (one cgroup.procs file per hierarchy, up to "--"), sets the
# umask the sandbox's files get (not Honk's 077), then execs the rest, so every descendant
# starts inside the cgroups. It also unsets the PWD it exports, which would show the host's
# cwd inside.
_LAUNCHER = ("/bin/sh", "-c", 'unset PWD; umask 022; while [ "$1" != -- ]; do '
             'echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"', "honk-launch")


def default_cpus() -> float:
    """Half this machine's cores, at least one."""
    return max(1.0, (os.cpu_count() or 2) / 2)


@dataclass(frozen=True)
class SandboxLimits:
    timeout_seconds: float = 300.0      # per command
    memory_bytes: int = 4 * 2**30       # one command's processes and tmpfs together; also
    #                                     each process's address space and the /tmp size
    max_processes: int = 256            # fork-bomb guard, per command
    max_file_bytes: int = 1 * 2**30     # largest file a command may write
    output_limit_chars: int = 30_000    # output returned to the model: head and tail kept
    cpus: float = field(default_factory=default_cpus)  # CPU quota, in cores
    disk_bytes: int = 10 * 2**30        # the whole workspace, checkout included
    disk_files: int = 500_000           # files and directories in the workspace


@dataclass(frozen=True)
class CommandResult:
    exit_code: int      # the command's status; 124 on timeout, 137 when stopped at a cap
    output: str         # stdout and stderr interleaved, capped, with a line saying what was cut
    timed_out: bool
    truncated: bool


class SandboxUnavailable(Exception):
    """bubblewrap is missing or cannot create namespaces on this host."""


def check_available(user: SandboxUser | None = None) -> None:
    """Raise SandboxUnavailable unless bubblewrap can build the sandbox Honk uses here."""
    bwrap = _require_bwrap()
    user = user or sandbox_user()
    with tempfile.TemporaryDirectory(prefix="honk-sandbox-check-") as workspace, \
            bwrap_argv(bwrap, Path(workspace), binds=[], network=False,
                       memory_bytes=SandboxLimits().memory_bytes, user=user) as (argv, fds):
        try:
            trial = subprocess.run([*argv, "true"], capture_output=True, timeout=30,
                                   env={"PATH": SANDBOX_PATH}, pass_fds=fds.fds)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SandboxUnavailable(_cannot_sandbox(str(error))) from error
    if trial.returncode != 0:
        reason = trial.stderr.decode(errors="replace").strip().splitlines()
        raise SandboxUnavailable(_cannot_sandbox(reason[0] if reason else "no message"))


@functools.cache
def report_enforcement(user: SandboxUser | None = None) -> list[str]:
    """Say once, in one log line, which limits this host cannot enforce; return them."""
    user = user or sandbox_user()
    missing = missing_controllers()
    fallbacks = {"pids": "processes: RLIMIT_NPROC only (it does not bind root)",
                 "memory": "memory: RLIMIT_AS per process only, not per command",
                 "cpu": "cpu: no quota"}
    unenforced = [fallbacks[name] for name in missing]
    if unenforced:
        log.warning("sandbox limits not enforced here (no writable cgroup): "
                    + "; ".join(unenforced), sandbox_uid=user.uid if user.separate else os.getuid())
    else:
        log.info("sandbox limits: pids, memory and cpu cgroups per command",
                 sandbox_uid=user.uid if user.separate else os.getuid())
    return unenforced


class Sandbox:
    """Runs commands in one workspace, each in a fresh sandbox with the same shape."""

    def __init__(self, workspace: Path, *, read_only_paths: Sequence[Path] = (),
                 network: bool = False, limits: SandboxLimits | None = None,
                 env: Mapping[str, str] | None = None, unsafe_no_sandbox: bool = False,
                 user: SandboxUser | None = None) -> None:
        self.workspace = workspace.resolve(strict=True)
        if not self.workspace.is_dir():
            raise NotADirectoryError(f"workspace {self.workspace} is not a directory")
        self.limits = limits = limits or SandboxLimits()
        self.network = network
        self.unsafe_no_sandbox = unsafe_no_sandbox
        self.user = user or sandbox_user()
        self._read_only_paths = [path.resolve(strict=True) for path in read_only_paths]
        self._git_entry = _git_entry_identity(self.workspace)
        self._cgroups = command_cgroups()
        self._disk = DiskCap(self.workspace, max_bytes=limits.disk_bytes,
                             max_files=limits.disk_files)
        self.last_stop: str | None = None  # why the last command was stopped at a cap
        if unsafe_no_sandbox:
            _warn_unsafe_once()
            self._bwrap = ""
            home = tempfile.mkdtemp(prefix="honk-home-")
        else:
            self._bwrap = _require_bwrap()
            home = SANDBOX_HOME
        self._env = {"PATH": SANDBOX_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb",
                     **(env or {})}
        if self.file_owner is not None:
            # Slots belong to root (group: the sandbox's): read-only git inside must not
            # refuse them as of "dubious ownership".
            self._env |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
                          "GIT_CONFIG_VALUE_0": "*"}

    @property
    def process_cap(self) -> str:
        """How the process count is bounded: 'cgroup v1', 'cgroup v2' or 'rlimit'."""
        if self._cgroups and "pids" in self._cgroups.controllers:
            return self._cgroups.name
        return "rlimit"

    @property
    def file_owner(self) -> tuple[int, int] | None:
        """Whom the host should give files it writes into the workspace (None: itself)."""
        return None if self.unsafe_no_sandbox else self.user.file_owner

    async def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run `bash -c command` with cwd = the workspace; never raises for the command's sake."""
        if len(command.encode()) > MAX_COMMAND_BYTES:
            return CommandResult(2, f"The command is {len(command.encode()):,} bytes, over the "
                                 f"{MAX_COMMAND_BYTES:,} byte limit: write it to a file in the "
                                 "workspace with the editor tool, then run that file.",
                                 timed_out=False, truncated=False)
        seconds = self.limits.timeout_seconds if timeout is None else timeout
        output = OutputBuffer(self.limits.output_limit_chars)
        # One pipe for both streams keeps them interleaved as the command wrote them.
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pipe = os.fdopen(read_end, "rb", buffering=0)  # closing it twice is harmless
        try:
            starting = self._started(["bash", "-c", command], stdin=subprocess.DEVNULL,
                                     stdout=write_end, stderr=write_end)
            async with starting as started:
                os.close(write_end)
                write_end = -1
                reader, drained = await output.read_from(pipe)
                try:
                    exit_code, timed_out = await started.wait(seconds, drained)
                finally:
                    await started.stop()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(drained), _KILL_GRACE_SECONDS)
                    reader.close()
        finally:
            pipe.close()
            if write_end >= 0:
                os.close(write_end)
        text, truncated = output.render()
        notes = []
        if timed_out:
            notes.append(f"[The command timed out after {seconds:g} s and was killed, "
                         f"with every process it started; exit code {TIMEOUT_EXIT_CODE}.]")
        if started.stopped_at is not None:
            exit_code = STOPPED_EXIT_CODE
            notes.append(self._disk.sentence(started.stopped_at))
        if started.oom_killed:
            notes.append(f"[A process was killed: this command's processes and /tmp together "
                         f"reached the memory cap of {self.limits.memory_bytes / 2**20:,.0f} MiB.]")
        if notes:
            text += "" if text.endswith("\n") or not text else "\n"
            text += "\n".join(notes)
        return CommandResult(exit_code, text, timed_out=timed_out, truncated=truncated)

    async def run_argv(self, argv: Sequence[str], *, inherit_stdio: bool = False) -> int:
        """Run argv in the same sandbox; return its status (124 on timeout, 137 at the disk
        cap, with `last_stop` saying why).

        inherit_stdio: the command gets this process's stdin, stdout and stderr (for
        `honk sandbox -- CMD`); otherwise stdin is /dev/null and output is discarded.
        """
        stdio = None if inherit_stdio else subprocess.DEVNULL
        async with self._started(list(argv), stdin=stdio, stdout=stdio, stderr=stdio) as command:
            try:
                exit_code, _ = await command.wait(self.limits.timeout_seconds, None)
            finally:
                await command.stop()
        self.last_stop = None
        if command.stopped_at is not None:
            self.last_stop = self._disk.sentence(command.stopped_at)
            return STOPPED_EXIT_CODE
        return exit_code

    @contextlib.asynccontextmanager
    async def _started(self, argv: list[str], **stdio: int | None) -> AsyncIterator[_Command]:
        limits = self.limits
        cgroup = self._cgroups.acquire(CgroupLimits(limits.max_processes, limits.memory_bytes,
                                                    limits.cpus)) if self._cgroups else None
        try:
            with self._launcher(argv, cgroup) as (launcher, fds):
                process = await asyncio.create_subprocess_exec(
                    *launcher, env=self._env, start_new_session=True, pass_fds=fds,
                    cwd=self.workspace if self.unsafe_no_sandbox else None, **stdio)
            command = _Command(process, cgroup, self._disk, sandboxed=not self.unsafe_no_sandbox)
            try:
                yield command
            finally:
                command.oom_killed = cgroup is not None and cgroup.new_oom_kills() > 0
        finally:
            if cgroup is not None and self._cgroups is not None:
                await self._cgroups.release(cgroup)

    @contextlib.contextmanager
    def _launcher(self, argv: list[str],
                  cgroup: Cgroup | None) -> Iterator[tuple[list[str], list[int]]]:
        """sh entering the cgroups, then bwrap and its init, which sets the rlimits (or,
        unsandboxed, a shell setting them and argv directly)."""
        limits = self.limits
        ulimits = (f"ulimit -c 0 -v {limits.memory_bytes // 1024} "
                   f"-f {limits.max_file_bytes // 1024}")  # bash: KiB
        # For a separate uid RLIMIT_NPROC counts every sandbox of the host together: leave
        # the count to the pids cgroup when there is one.
        if not (self.user.separate and self.process_cap != "rlimit"):
            ulimits += f" -u {limits.max_processes}"
        procs = [str(path) for path in cgroup.procs_files] if cgroup else []
        head = [*_LAUNCHER, *procs, "--"]
        if self.unsafe_no_sandbox:
            yield [*head, "bash", "-c", f'{ulimits} || exit 125; exec "$@"', "honk-limits",
                   *argv], []
            return
        self._check_git_entry()
        with bwrap_argv(self._bwrap, self.workspace, binds=self._binds(), network=self.network,
                        memory_bytes=limits.memory_bytes, user=self.user,
                        ulimits=ulimits) as (bwrap, fds):
            yield [*head, *bwrap, *argv], list(fds.fds)

    def _binds(self) -> list[tuple[Path, str]]:
        binds = [(self.workspace / ".git", f"{WORKSPACE_MOUNT}/.git")] if self._git_entry else []
        return binds + [(path, str(path)) for path in self._read_only_paths]

    def _check_git_entry(self) -> None:
        # Inside the sandbox .git is a read-only mount point, so it cannot be swapped for a
        # symlink to a host path between commands; check anyway before binding it again.
        if _git_entry_identity(self.workspace) != self._git_entry:
            raise PermissionError(f"{self.workspace}/.git changed since the sandbox was set "
                                  "up; refusing to bind it.")


class _Command:
    """One started command: its process (bwrap, or bash when unsandboxed), its cgroups and
    the workspace's disk cap."""

    def __init__(self, process: asyncio.subprocess.Process, cgroup: Cgroup | None,
                 disk: DiskCap, *, sandboxed: bool) -> None:
        self.process = process
        self.cgroup = cgroup
        self.disk = disk
        self.sandboxed = sandboxed
        self.stopped_at: Usage | None = None  # the workspace's usage when stopped at the cap
        self.oom_killed = False

    async def wait(self, seconds: float,
                   drained: asyncio.Future[None] | None) -> tuple[int, bool]:
        """Wait for the command and its output up to `seconds`; return (status, timed out).
        A command that takes the workspace over its disk cap is killed (see stopped_at)."""
        watch = asyncio.ensure_future(self.disk.watch())
        try:
            async with asyncio.timeout(seconds):
                exited = asyncio.ensure_future(self.process.wait())
                await asyncio.wait({exited, watch}, return_when=asyncio.FIRST_COMPLETED)
                if not exited.done():
                    self.stopped_at = watch.result()
                    self.kill()
                status = await exited
                # Unsandboxed, background jobs outlive bash and hold the pipe open; in the
                # sandbox they already died with its pid namespace.
                self.kill()
                if drained is not None:
                    await asyncio.shield(drained)
                if self.stopped_at is None:
                    self.stopped_at = await self.disk.over()  # a burst between two polls
        except TimeoutError:
            return TIMEOUT_EXIT_CODE, True
        finally:
            watch.cancel()
        # A process killed by signal N is reported as -N; shells say 128 + N.
        return (128 - status if status < 0 else status), False

    def kill(self) -> None:
        """SIGKILL the whole tree, synchronously, so no await can be cancelled before it."""
        # Once bwrap is reaped its pid may be reused, and nothing of the sandbox outlives it.
        if self.process.returncode is None or not self.sandboxed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()

    async def stop(self) -> None:
        self.kill()
        await self.process.wait()


def _git_entry_identity(workspace: Path) -> tuple[int, int] | None:
    try:
        entry = os.lstat(workspace / ".git")
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(entry.st_mode):
        raise PermissionError(f"{workspace}/.git is a symlink; refusing to bind it.")
    return entry.st_dev, entry.st_ino


def _require_bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable("bubblewrap is not installed: install it (apt-get install "
                                 f"bubblewrap), or for local development only set {UNSAFE_SWITCH}.")
    return path


def _cannot_sandbox(reason: str) -> str:
    return (f"bubblewrap cannot build the sandbox here ({reason}): allow user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, or a container run with "
            f"--privileged or seccomp=unconfined), or for local development only set "
            f"{UNSAFE_SWITCH}.")


@functools.cache
def _warn_unsafe_once() -> None:
    log.warning("UNSAFE: agent commands run WITHOUT a sandbox, with this user's access to "
                "the whole machine and network; use this for local development only",
                switch=UNSAFE_SWITCH)
