"""Per-command cgroups: processes, memory and CPU counted for the whole command.

Each command runs alone in one cgroup per controller (pids, memory, cpu), entered by the
launcher shell before it execs anything, so every process the command starts is counted,
and the memory controller counts the private /tmp and /dev/shm too (tmpfs pages are
charged to the cgroup of the process that writes them). The limits:
- pids.max = max_processes. RLIMIT_NPROC does not bind host root (measured: 300 sleeps
  under `prlimit --nproc=50`) and, for the sandbox's own uid, counts every sandbox of the
  host together; a pids cgroup counts this command alone (measured: stops at 50).
- memory: limit_in_bytes (v1) or memory.max (v2) = memory_bytes, for all processes and
  tmpfs together. Over it, the kernel's OOM killer kills inside the cgroup only.
- cpu: cfs_quota_us / cfs_period_us (v1) or cpu.max (v2) = cpus cores.

Where a cgroup sits: below the cgroup this worker is in, in each hierarchy (so an outer
container's limits still bind), in a `honk-sandbox` directory. cgroup v1 (mounted per
controller, as on this machine) and v2 (one hierarchy, controllers enabled on the way
down) both work; a controller neither offers is reported once at start (see `report`),
and the rlimits set by the launcher (RLIMIT_NPROC, RLIMIT_AS per process) remain.

Reuse matters: entering a fresh cgroup cost 14 to 18 ms here (cgroup v1), entering one
that held an earlier, finished command about 0.1 ms. A cgroup is reused only once nothing
in it is charged, so each command gets exactly max_processes. After a kill, the dead are
reparented to the host's init and stay charged until it reaps them (up to 2 s with this
container's init): such a cgroup waits in `_draining` meanwhile.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger()

CONTROLLERS = ("pids", "memory", "cpu")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class CgroupLimits:
    max_processes: int
    memory_bytes: int
    cpus: float


@dataclass(frozen=True)
class _Hierarchy:
    mount_point: Path
    version: int
    base: Path  # our `honk-sandbox` directory in it
    controllers: tuple[str, ...]  # the ones this hierarchy serves for us


class Cgroup:
    """The directories of one command: one per hierarchy in use."""

    def __init__(self, dirs: list[tuple[_Hierarchy, Path]]) -> None:
        self.dirs = dirs
        self.procs_files = [path / "cgroup.procs" for _, path in dirs]
        self._limits: CgroupLimits | None = None
        self._oom_kills_seen = 0

    def _dir(self, controller: str) -> tuple[_Hierarchy, Path] | None:
        for hierarchy, path in self.dirs:
            if controller in hierarchy.controllers:
                return hierarchy, path
        return None

    def limit(self, limits: CgroupLimits) -> None:
        if limits == self._limits:
            return  # a reused cgroup keeps its limits: five writes saved a command
        self._limits = limits
        for hierarchy, path in self.dirs:
            v2 = hierarchy.version == 2
            if "pids" in hierarchy.controllers:
                (path / "pids.max").write_text(str(limits.max_processes))
            if "memory" in hierarchy.controllers:
                if v2:
                    (path / "memory.max").write_text(str(limits.memory_bytes))
                    with contextlib.suppress(OSError):
                        (path / "memory.swap.max").write_text("0")
                else:
                    (path / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            if "cpu" in hierarchy.controllers:
                quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
                if v2:
                    (path / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
                else:
                    (path / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                    (path / "cpu.cfs_quota_us").write_text(str(quota))

    def kill(self) -> None:
        for hierarchy, path in self.dirs:
            if hierarchy.version == 2 and (path / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (path / "cgroup.kill").write_text("1")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(pid) for pid in procs.read_text().split())
        return sorted(found)

    def charged(self) -> int:
        """Tasks counted against pids.max: running ones and exited ones not yet reaped."""
        found = self._dir("pids")
        if found is None:
            return len(self.pids())
        try:
            return int((found[1] / "pids.current").read_text())
        except (OSError, ValueError):
            return -1

    def new_oom_kills(self) -> int:
        """How many processes the OOM killer killed here since this was last asked."""
        total = self._oom_kills()
        new, self._oom_kills_seen = total - self._oom_kills_seen, total
        return new

    def _oom_kills(self) -> int:
        found = self._dir("memory")
        if found is None:
            return 0
        name = "memory.events" if found[0].version == 2 else "memory.oom_control"
        try:
            for line in (found[1] / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

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


class Cgroups:
    """Per-command cgroups in every hierarchy that serves a controller, kept for reuse."""

    def __init__(self, hierarchies: list[_Hierarchy]) -> None:
        self.hierarchies = hierarchies
        self.controllers = tuple(c for h in hierarchies for c in h.controllers)
        self._serial = itertools.count()
        self._free: list[Cgroup] = []
        self._draining: list[Cgroup] = []
        self._made: list[Path] = []

    @property
    def name(self) -> str:
        versions = sorted({h.version for h in self.hierarchies})
        return "cgroup " + "+".join(f"v{v}" for v in versions)

    def acquire(self, limits: CgroupLimits) -> Cgroup:
        self._reclaim()
        if self._free:
            cgroup = self._free.pop()
        else:
            name = f"cmd-{os.getpid()}-{next(self._serial)}"
            dirs = []
            for hierarchy in self.hierarchies:
                path = hierarchy.base / name
                path.mkdir(exist_ok=True)
                self._made.append(path)
                dirs.append((hierarchy, path))
            cgroup = Cgroup(dirs)
        cgroup.limit(limits)
        return cgroup

    async def release(self, cgroup: Cgroup) -> None:
        if not await cgroup.stopped():
            log.warning("a sandbox cgroup stays busy after SIGKILL; not reusing it",
                        paths=[str(path) for _, path in cgroup.dirs])
            return
        (self._free if cgroup.charged() == 0 else self._draining).append(cgroup)

    def _reclaim(self) -> None:
        reaped = [cgroup for cgroup in self._draining if cgroup.charged() == 0]
        self._free += reaped
        self._draining = [cgroup for cgroup in self._draining if cgroup not in reaped]

    def remove_own(self) -> None:
        """At exit: remove the cgroups this process made (empty by then)."""
        for path in self._made:
            with contextlib.suppress(OSError):
                path.rmdir()

    def remove_stale(self) -> None:
        """Remove the cgroups of worker processes that are gone (they are empty by then)."""
        for hierarchy in self.hierarchies:
            for path in hierarchy.base.glob("cmd-*-*"):
                owner = path.name.split("-")[1]
                if owner.isdigit() and not _alive(int(owner)):
                    with contextlib.suppress(OSError):
                        path.rmdir()


@functools.cache
def command_cgroups() -> Cgroups | None:
    """The hierarchies where this process may create and limit cgroups, or None."""
    hierarchies: list[_Hierarchy] = []
    wanted = list(CONTROLLERS)
    for mount_point, version, offered, own in _hierarchies():
        serves = tuple(c for c in wanted if c in offered)
        if not serves:
            continue
        base = Path(mount_point) / own.lstrip("/") / "honk-sandbox"
        try:
            base.mkdir(exist_ok=True)
            if version == 2:  # the controllers must be enabled on the way down
                for parent in (base.parent, base):
                    enabled = (parent / "cgroup.subtree_control").read_text().split()
                    missing = [c for c in serves if c not in enabled]
                    if missing:
                        (parent / "cgroup.subtree_control").write_text(
                            " ".join(f"+{c}" for c in missing))
            hierarchy = _Hierarchy(Path(mount_point), version, base, serves)
            probe = Cgroups([hierarchy])
            probe.remove_stale()
            trial = probe.acquire(CgroupLimits(1, 64 * 2**20, 1.0))  # may we make and limit?
            for _, path in trial.dirs:
                path.rmdir()
        except OSError:  # not ours to use: `report_enforcement` says what is lost
            continue
        hierarchies.append(hierarchy)
        wanted = [c for c in wanted if c not in serves]
    if not hierarchies:
        return None
    cgroups = Cgroups(hierarchies)
    atexit.register(cgroups.remove_own)
    return cgroups


def missing_controllers() -> list[str]:
    cgroups = command_cgroups()
    have = cgroups.controllers if cgroups else ()
    return [controller for controller in CONTROLLERS if controller not in have]


def _hierarchies() -> list[tuple[str, int, list[str], str]]:
    """(mount point, version, controllers, this process's cgroup in it) of each hierarchy."""
    own_v1: dict[str, str] = {}
    own_v2 = "/"
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as cgroup_file:
        for line in cgroup_file:
            number, names, path = line.rstrip("\n").split(":", 2)
            if number == "0":
                own_v2 = path
            for name in names.split(","):
                own_v1[name] = path
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            mount_point, fstype = fields[4], fields[separator + 1]
            options = fields[separator + 3].split(",") if len(fields) > separator + 3 else []
            if fstype == "cgroup":
                offered = [c for c in CONTROLLERS if c in options]
                if offered:
                    found.append((mount_point, 1, offered, own_v1.get(offered[0], "/")))
            elif fstype == "cgroup2":
                try:
                    offered = (Path(mount_point) / "cgroup.controllers").read_text().split()
                except OSError:
                    continue
                found.append((mount_point, 2, offered, own_v2))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
