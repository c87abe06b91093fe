"""Run the agent's commands under bubblewrap: the workspace read-write, the system read-only.

Every command the agent chooses is treated as hostile. It runs in fresh user, pid, ipc,
uts, cgroup and (unless the operator allows it) network namespaces, with no capabilities,
`no_new_privs`, an environment built from an allowlist, a private /tmp, and only these host
paths: the system directories read-only (with password and key files masked), the workspace
read-write at /workspace, and the paths the caller names read-only. The workspace's own
`.git` is bound read-only over itself, so hooks, config and refs cannot be changed.

Limits, as measured on this machine (kernel 6.18, run as root, cgroup v1 with a writable
pids hierarchy, bubblewrap 0.8.0):
- Time: each command is killed at its timeout. Killing bwrap (SIGKILL to its process
  group) kills the sandbox's pid 1 through `--die-with-parent`, and the kernel then kills
  every process of the pid namespace, daemonised or not.
- Processes: RLIMIT_NPROC does not bound a fork bomb here. The kernel exempts tasks whose
  real uid is host root (`real_cred->user == INIT_USER` in copy_process), and bwrap run
  by root maps the sandbox's uid, whatever `--uid` says, to host root. Measured: 300
  background `sleep`s started under `prlimit --nproc=50`. Run as an unprivileged host
  uid, the same limit stops at 50 (since kernel 5.14 the count is kept per user namespace,
  though the parent level is the host uid's total). What really bounds it for root is a
  pids cgroup: each command runs alone in one (kept for the next command once empty), with
  `pids.max`, entered by a tiny `sh` that writes its pid to `cgroup.procs` and then execs
  the rest, so nothing forks outside it. Measured: stops at 50. We use a cgroup when one
  can be created (v2 or v1) and always set RLIMIT_NPROC too, which bounds a non-root worker.
- Memory and files: RLIMIT_AS and RLIMIT_FSIZE (prlimit); the private /tmp and /dev/shm
  are size-capped tmpfs, and / and /dev are read-only, so RAM cannot be filled by writing
  files either.
- Output: one pipe carries stdout and stderr interleaved; the reader keeps a head and a
  rolling tail and only counts what falls between, so 10 GB of output costs no memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import glob
import itertools
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

log = structlog.get_logger()

WORKSPACE_MOUNT = "/workspace"
SANDBOX_HOME = "/tmp/home"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT_EXIT_CODE = 124
MAX_COMMAND_BYTES = 100_000  # well under Linux's 128 KiB cap on one argument
UNSAFE_SWITCH = "HONK_UNSAFE_NO_SANDBOX=1"

_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Readable by the sandbox's uid when the worker runs as root (it owns them): mask them.
_SECRET_SYSTEM_PATHS = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
    "/etc/sudoers.d", "/etc/ssl/private", "/etc/security/opasswd", "/etc/credstore",
    "/etc/credstore.encrypted", "/etc/ssh/ssh_host_*key*",
)
# The sandbox's pid 1: a shell that runs the command as its child, reaps orphans, and exits
# with the command's status. bwrap's own init (without --as-pid-1) reports the status and
# exits, and the outer bwrap then exits without reaping it: the zombie went to the host's
# init and stayed charged to the pids cgroup (2 s with this container's init), so the
# cgroup could not be reused at once. Run as pid 2, the command keeps ordinary signal
# semantics (`kill $$` works).
_SANDBOX_INIT = ("bash", "-c", '"$@"; exit $?', "honk-init")
_SHM_BYTES = 256 * 2**20
_KILL_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class SandboxLimits:
    timeout_seconds: float = 300.0      # per command
    memory_bytes: int = 4 * 2**30       # address space per process; also the /tmp size
    max_processes: int = 256            # fork-bomb guard
    max_file_bytes: int = 1 * 2**30     # largest file a command may write
    output_limit_chars: int = 30_000    # output returned to the model: head and tail kept


@dataclass(frozen=True)
class CommandResult:
    exit_code: int      # the command's status; 124 on timeout
    output: str         # stdout and stderr interleaved, capped, with a line saying what was cut
    timed_out: bool
    truncated: bool


class SandboxUnavailable(Exception):
    """bubblewrap is missing or cannot create namespaces on this host."""


def check_available() -> None:
    """Raise SandboxUnavailable unless bubblewrap can build the sandbox Honk uses here."""
    bwrap = _require_bwrap()
    _require_prlimit()
    with tempfile.TemporaryDirectory(prefix="honk-sandbox-check-") as workspace:
        argv = _bwrap_argv(bwrap, Path(workspace), binds=[], network=False,
                           limits=SandboxLimits())
        try:
            trial = subprocess.run([*argv, "true"], capture_output=True, timeout=30,
                                   env={"PATH": SANDBOX_PATH})
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SandboxUnavailable(_cannot_sandbox(str(error))) from error
    if trial.returncode != 0:
        reason = trial.stderr.decode(errors="replace").strip().splitlines()
        raise SandboxUnavailable(_cannot_sandbox(reason[0] if reason else "no message"))


class Sandbox:
    """Runs commands in one workspace, each in a fresh sandbox with the same shape."""

    def __init__(self, workspace: Path, *, read_only_paths: Sequence[Path] = (),
                 network: bool = False, limits: SandboxLimits = SandboxLimits(),
                 env: Mapping[str, str] | None = None, unsafe_no_sandbox: bool = False) -> None:
        self.workspace = workspace.resolve(strict=True)
        if not self.workspace.is_dir():
            raise NotADirectoryError(f"workspace {self.workspace} is not a directory")
        self.limits = limits
        self.network = network
        self.unsafe_no_sandbox = unsafe_no_sandbox
        self._read_only_paths = [path.resolve(strict=True) for path in read_only_paths]
        self._git_entry = _git_entry_identity(self.workspace)
        self._prlimit = _require_prlimit()
        self._cgroups = _process_cgroups()
        if self._cgroups is None and os.geteuid() == 0:
            _warn_no_process_cap()
        if unsafe_no_sandbox:
            _warn_unsafe_once()
            self._bwrap = ""
            home = tempfile.mkdtemp(prefix="honk-home-")
        else:
            self._bwrap = _require_bwrap()
            home = SANDBOX_HOME
        self._env = {"PATH": SANDBOX_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb",
                     **(env or {})}

    @property
    def process_cap(self) -> str:
        """How the process count is bounded: 'cgroup v2', 'cgroup v1' or 'rlimit'."""
        return self._cgroups.name if self._cgroups else "rlimit"

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
        if timed_out:
            text += "" if text.endswith("\n") or not text else "\n"
            text += (f"[The command timed out after {seconds:g} s and was killed, "
                     f"with every process it started; exit code {TIMEOUT_EXIT_CODE}.]")
        return CommandResult(exit_code, text, timed_out=timed_out, truncated=truncated)

    async def run_argv(self, argv: Sequence[str], *, inherit_stdio: bool = False) -> int:
        """Run argv in the same sandbox; return its status (124 on timeout).

        inherit_stdio: the command gets this process's stdin, stdout and stderr (for
        `honk sandbox -- CMD`); otherwise stdin is /dev/null and output is discarded.
        """
        stdio = None if inherit_stdio else subprocess.DEVNULL
        async with self._started(list(argv), stdin=stdio, stdout=stdio, stderr=stdio) as command:
            try:
                exit_code, _ = await command.wait(self.limits.timeout_seconds, None)
            finally:
                await command.stop()
        return exit_code

    @contextlib.asynccontextmanager
    async def _started(self, argv: list[str], **stdio: int | None) -> AsyncIterator[_Command]:
        cgroup = self._cgroups.acquire(self.limits.max_processes) if self._cgroups else None
        try:
            process = await asyncio.create_subprocess_exec(
                *self._launcher(argv, cgroup), env=self._env, start_new_session=True,
                cwd=self.workspace if self.unsafe_no_sandbox else None, **stdio)
            yield _Command(process, cgroup, sandboxed=not self.unsafe_no_sandbox)
        finally:
            if cgroup is not None and self._cgroups is not None:
                await self._cgroups.release(cgroup)

    def _launcher(self, argv: list[str], cgroup: _Cgroup | None) -> list[str]:
        """[sh entering the cgroup] prlimit, then bwrap (or, unsandboxed, argv directly)."""
        limits = self.limits
        command = [self._prlimit, "--core=0", f"--as={limits.memory_bytes}",
                   f"--fsize={limits.max_file_bytes}", f"--nproc={limits.max_processes}", "--"]
        if not self.unsafe_no_sandbox:
            self._check_git_entry()
            command += _bwrap_argv(self._bwrap, self.workspace, binds=self._binds(),
                                   network=self.network, limits=limits)
        command += argv
        if cgroup is None:
            return command
        # The shell moves itself into the cgroup and execs the rest, so every descendant
        # starts inside it; moving bwrap after it has forked would leave its children out.
        # It also unsets the PWD it exports, which would show the host's cwd inside.
        return ["/bin/sh", "-c", 'unset PWD; echo $$ > "$0" && exec "$@"',
                str(cgroup.procs_file), *command]

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
    """One started command: its process (bwrap, or bash when unsandboxed) and its cgroup."""

    def __init__(self, process: asyncio.subprocess.Process, cgroup: _Cgroup | None, *,
                 sandboxed: bool) -> None:
        self.process = process
        self.cgroup = cgroup
        self.sandboxed = sandboxed

    async def wait(self, seconds: float,
                   drained: asyncio.Future[None] | None) -> tuple[int, bool]:
        """Wait for the command and its output up to `seconds`; return (status, timed out)."""
        try:
            async with asyncio.timeout(seconds):
                status = await self.process.wait()
                # Unsandboxed, background jobs outlive bash and hold the pipe open; in the
                # sandbox they already died with its pid namespace.
                self.kill()
                if drained is not None:
                    await asyncio.shield(drained)
        except TimeoutError:
            return TIMEOUT_EXIT_CODE, True
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


def _bwrap_argv(bwrap: str, workspace: Path, *, binds: list[tuple[Path, str]], network: bool,
                limits: SandboxLimits) -> list[str]:
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--hostname", "honk-sandbox", "--as-pid-1"]
    if network:
        argv += ["--share-net", "--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
    argv += _system_mounts()
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(min(_SHM_BYTES, limits.memory_bytes)), "--tmpfs", "/dev/shm",
             "--remount-ro", "/dev",
             "--size", str(limits.memory_bytes), "--tmpfs", "/tmp", "--dir", SANDBOX_HOME,
             "--bind", str(workspace), WORKSPACE_MOUNT]
    for source, target in binds:
        argv += ["--ro-bind", str(source), target]
    return [*argv, "--remount-ro", "/", "--chdir", WORKSPACE_MOUNT, "--", *_SANDBOX_INIT]


@functools.cache
def _system_mounts() -> tuple[str, ...]:
    """The system directories, read-only, with the secret files among them masked."""
    argv: list[str] = []
    for path in _SYSTEM_PATHS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in itertools.chain.from_iterable(glob.glob(p) for p in _SECRET_SYSTEM_PATHS):
        if os.path.isdir(path):
            argv += ["--tmpfs", path, "--remount-ro", path]
        else:
            argv += ["--ro-bind", "/dev/null", path]
    return tuple(argv)


class OutputBuffer:
    """Keeps the head and a rolling tail of a byte stream; counts what falls between."""

    def __init__(self, limit_chars: int) -> None:
        self.limit_chars = limit_chars
        self._cap = 4 * limit_chars  # a UTF-8 character takes at most four bytes
        self._head = bytearray()
        self._tail: collections.deque[bytes] = collections.deque()  # chunks, never copied
        self._tail_bytes = 0
        self._total = 0

    async def read_from(self, pipe: BinaryIO) -> tuple[asyncio.ReadTransport,
                                                      asyncio.Future[None]]:
        """Feed this buffer from a pipe; the future is set at its end."""
        loop = asyncio.get_running_loop()
        drained: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.connect_read_pipe(lambda: _PipeProtocol(self, drained), pipe)
        return transport, drained

    def feed(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = self._cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self._tail.append(chunk)
        self._tail_bytes += len(chunk)
        while self._tail_bytes - len(self._tail[0]) >= self._cap:
            self._tail_bytes -= len(self._tail.popleft())

    def render(self) -> tuple[str, bool]:
        """The output as text, at most about limit_chars long, and whether it was cut."""
        tail = b"".join(self._tail)
        if len(self._head) + len(tail) == self._total:
            return cap_text((self._head + tail).decode(errors="replace"), self.limit_chars)
        tail = tail[-self._cap:].lstrip(bytes(range(0x80, 0xC0)))  # drop a split character
        half = _half(self.limit_chars)
        head_text = self._head.decode(errors="replace")[:half]
        tail_text = tail.decode(errors="replace")[-half:]
        cut = self._total - len(head_text.encode()) - len(tail_text.encode())
        return head_text + _cut_line(cut, "bytes", self._total) + tail_text, True


class _PipeProtocol(asyncio.Protocol):
    # A protocol gets each chunk straight from the transport: 1.8 GB/s here against
    # 0.5 GB/s for StreamReader.read (before our own bookkeeping, which halves it).
    def __init__(self, buffer: OutputBuffer, drained: asyncio.Future[None]) -> None:
        self.buffer = buffer
        self.drained = drained

    def data_received(self, data: bytes) -> None:
        self.buffer.feed(data)

    def eof_received(self) -> bool:
        self._done()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def _done(self) -> None:
        if not self.drained.done():
            self.drained.set_result(None)


def cap_text(text: str, limit_chars: int) -> tuple[str, bool]:
    """Keep the head and tail of text within limit_chars, saying how much was cut."""
    if len(text) <= limit_chars:
        return text, False
    half = _half(limit_chars)
    return text[:half] + _cut_line(len(text) - 2 * half, "characters", len(text)) + \
        text[-half:], True


def _half(limit_chars: int) -> int:
    return max(0, (limit_chars - 120) // 2)  # leave room for the line saying what was cut


def _cut_line(cut: int, unit: str, total: int) -> str:
    return f"\n[... {cut:,} {unit} cut from the middle of {total:,}; head and tail shown ...]\n"


class _Cgroup:
    """A pids cgroup that holds one command at a time."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version
        self.procs_file = path / "cgroup.procs"

    def kill(self) -> None:
        if self.version == 2 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def pids(self) -> list[int]:
        try:
            return [int(pid) for pid in self.procs_file.read_text().split()]
        except OSError:
            return []

    def charged(self) -> int:
        """Tasks counted against pids.max: running ones and exited ones not yet reaped."""
        try:
            return int((self.path / "pids.current").read_text())
        except (OSError, ValueError):
            return -1

    async def stopped(self) -> bool:
        """Kill what is left and wait until nothing runs in it; False if something still does
        after about 2 s."""
        pause = 0.0005
        for _ in range(200):
            if not self.pids():
                return True
            self.kill()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)
        return False


class _Cgroups:
    """Per-command pids cgroups under `honk-sandbox` in a pids hierarchy, kept for reuse.

    Reuse matters: entering a fresh cgroup cost 14 to 18 ms here (cgroup v1), entering
    one that held an earlier, finished command about 0.1 ms. A cgroup is reused only once
    nothing in it is charged, so each command gets exactly max_processes. After a kill,
    the dead are reparented to the host's init and stay charged until it reaps them (up
    to 2 s with this container's init): such a cgroup waits in `_draining` meanwhile.
    """

    def __init__(self, base: Path, version: int) -> None:
        self.base = base
        self.version = version
        self.name = f"cgroup v{version}"
        self._serial = itertools.count()
        self._free: list[_Cgroup] = []
        self._draining: list[_Cgroup] = []

    def acquire(self, max_processes: int) -> _Cgroup:
        self._reclaim()
        if self._free:
            cgroup = self._free.pop()
        else:
            path = self.base / f"cmd-{os.getpid()}-{next(self._serial)}"
            path.mkdir()
            cgroup = _Cgroup(path, self.version)
        (cgroup.path / "pids.max").write_text(str(max_processes))
        return cgroup

    async def release(self, cgroup: _Cgroup) -> None:
        if not await cgroup.stopped():
            log.warning("a sandbox cgroup stays busy after SIGKILL; not reusing it",
                        path=str(cgroup.path))
            return
        (self._free if cgroup.charged() == 0 else self._draining).append(cgroup)

    def _reclaim(self) -> None:
        reaped = [cgroup for cgroup in self._draining if cgroup.charged() == 0]
        self._free += reaped
        self._draining = [cgroup for cgroup in self._draining if cgroup not in reaped]

    def remove_stale(self) -> None:
        """Remove the cgroups of worker processes that are gone (they are empty by then)."""
        for path in self.base.glob("cmd-*-*"):
            owner = path.name.split("-")[1]
            if owner.isdigit() and not _alive(int(owner)):
                with contextlib.suppress(OSError):
                    path.rmdir()


@functools.cache
def _process_cgroups() -> _Cgroups | None:
    """A pids hierarchy where this process may create cgroups, or None (then RLIMIT_NPROC)."""
    for mount_point, version in _pids_hierarchies():
        base = Path(mount_point) / "honk-sandbox"
        try:
            base.mkdir(exist_ok=True)
            if version == 2:  # the controller must be enabled on the way down
                for parent in (Path(mount_point), base):
                    if "pids" not in (parent / "cgroup.subtree_control").read_text().split():
                        (parent / "cgroup.subtree_control").write_text("+pids")
            cgroups = _Cgroups(base, version)
            cgroups.remove_stale()
            cgroups._free.append(cgroups.acquire(1))  # proves we may create and limit one
            return cgroups
        except OSError as error:
            log.debug("no usable pids cgroup", mount_point=mount_point, error=str(error))
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids_hierarchies() -> list[tuple[str, int]]:
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            mount_point, fstype = fields[4], fields[separator + 1]
            options = fields[separator + 3].split(",") if len(fields) > separator + 3 else []
            if fstype == "cgroup" and "pids" in options:
                found.append((mount_point, 1))
            elif fstype == "cgroup2" and _lists_pids(Path(mount_point) / "cgroup.controllers"):
                found.append((mount_point, 2))
    return found


def _lists_pids(controllers: Path) -> bool:
    try:
        return "pids" in controllers.read_text().split()
    except OSError:
        return False


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


def _require_prlimit() -> str:
    path = shutil.which("prlimit")
    if path is None:
        raise SandboxUnavailable("prlimit is not installed: install it (apt-get install "
                                 "util-linux); it sets each command's limits.")
    return path


def _cannot_sandbox(reason: str) -> str:
    return (f"bubblewrap cannot create its namespaces here ({reason}): allow user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, or a container run with "
            f"--privileged or seccomp=unconfined), or for local development only set "
            f"{UNSAFE_SWITCH}.")


@functools.cache
def _warn_unsafe_once() -> None:
    log.warning("UNSAFE: agent commands run WITHOUT a sandbox, with this user's access to "
                "the whole machine and network; use this for local development only",
                switch=UNSAFE_SWITCH)


@functools.cache
def _warn_no_process_cap() -> None:
    log.warning("no pids cgroup can be created and RLIMIT_NPROC does not bind root: a fork "
                "bomb in the sandbox is bounded only by its timeout; run the worker as a "
                "non-root user or give it a writable cgroup")
