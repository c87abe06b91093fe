"""How much a command costs under Sandbox.run against a bare subprocess, measured here, now.

    .venv/bin/python bench/sandbox_overhead.py [--runs N]

Every mode runs `bash -c COMMAND` and reads its output to the end, interleaved in random
order so that all see the same machine load:
- bare subprocess: no sandbox at all;
- launcher, no bwrap: Sandbox's unsafe mode (the launcher and its cgroups, no bubblewrap);
- old Sandbox.run (before issue 10): a pids cgroup, prlimit, bwrap in a user namespace with
  the whole of /etc (a few files masked), no seccomp, no memory/CPU cgroup, no disk cap,
  run as whoever runs Honk (host root here);
- Sandbox.run: as Honk runs it now (separate uid via setpriv when root, seccomp, the /etc
  allowlist view, pids+memory+cpu cgroups, the disk cap's poll).
Target: median overhead of Sandbox.run over the bare subprocess <= 20 ms a command.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import itertools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from honk_app.sandbox.bubblewrap import Sandbox, SandboxLimits
from honk_app.sandbox.cgroups import CgroupLimits, Cgroups, command_cgroups
from honk_app.sandbox.user import sandbox_user

TARGET_OVERHEAD_MS = 20.0
Runner = Callable[[str], Awaitable[object]]
COMMANDS = ("true", "echo hi")


async def bare(command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    await process.communicate()


class OldSandbox:
    """The launcher and bwrap command line as they were before issue 10, kept to compare."""

    SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
               "/etc/sudoers.d", "/etc/ssl/private", "/etc/security/opasswd",
               "/etc/credstore", "/etc/credstore.encrypted", "/etc/ssh/ssh_host_*key*")

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        found = command_cgroups()
        pids = [h for h in found.hierarchies if "pids" in h.controllers] if found else []
        self.cgroups = Cgroups(pids) if pids else None
        argv = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--unshare-user",
                "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--hostname", "honk-sandbox", "--as-pid-1"]
        for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"):
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for path in itertools.chain.from_iterable(glob.glob(p) for p in self.SECRETS):
            argv += (["--tmpfs", path, "--remount-ro", path] if os.path.isdir(path)
                     else ["--ro-bind", "/dev/null", path])
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(256 * 2**20), "--tmpfs",
                 "/dev/shm", "--remount-ro", "/dev", "--size", str(4 * 2**30), "--tmpfs", "/tmp",
                 "--dir", "/tmp/home", "--bind", str(workspace), "/workspace", "--remount-ro",
                 "/", "--chdir", "/workspace", "--", "bash", "-c", '"$@"; exit $?', "honk-init"]
        self.bwrap = argv

    async def run(self, command: str) -> None:
        prlimit = ["prlimit", "--core=0", f"--as={4 * 2**30}", f"--fsize={2**30}", "--nproc=256",
                   "--"]
        cgroup = self.cgroups.acquire(CgroupLimits(256, 4 * 2**30, 1.0)) if self.cgroups else None
        argv = [*prlimit, *self.bwrap, "bash", "-c", command]
        if cgroup is not None:
            argv = ["/bin/sh", "-c", 'unset PWD; echo $$ > "$0" && exec "$@"',
                    str(cgroup.procs_files[0]), *argv]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "HOME": "/tmp/home", "LANG": "C.UTF-8"})
            await process.communicate()
        finally:
            if cgroup is not None and self.cgroups is not None:
                await self.cgroups.release(cgroup)


async def timings(modes: dict[str, Runner], command: str, runs: int) -> dict[str, list[float]]:
    """Milliseconds per run of each mode, interleaved so that all see the same machine load."""
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(runs + 3):  # the first three rounds warm caches
        order = list(modes)
        random.shuffle(order)
        for mode in order:
            start = time.perf_counter()
            await modes[mode](command)
            if round_ >= 3:
                samples[mode].append((time.perf_counter() - start) * 1000)
    return samples


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1]


async def main(runs: int) -> int:
    with tempfile.TemporaryDirectory(prefix="honk-bench-") as directory:
        workspace = Path(directory)
        user = sandbox_user()
        if user.separate:
            os.chown(workspace, user.uid, user.gid)
        sandbox = Sandbox(workspace, limits=SandboxLimits(timeout_seconds=30))
        unsafe = Sandbox(workspace, limits=SandboxLimits(timeout_seconds=30),
                         unsafe_no_sandbox=True)
        old = OldSandbox(workspace)
        modes: dict[str, Runner] = {
            "bare subprocess": bare, "launcher, no bwrap": unsafe.run,
            "old Sandbox.run": old.run, "Sandbox.run": sandbox.run}
        uid = user.uid if user.separate else os.getuid()
        cgroups = command_cgroups()
        print(f"{runs} runs each, interleaved; cgroups for {cgroups and cgroups.controllers}; "
              f"sandbox uid {uid}; load average {os.getloadavg()[0]:.2f}")
        print(f"{'command':<10} {'mode':<22} {'median ms':>10} {'p90 ms':>8}")
        worst = 0.0
        for command in COMMANDS:
            rows = await timings(modes, command, runs)
            for mode, samples in rows.items():
                print(f"{command:<10} {mode:<22} {statistics.median(samples):>10.2f} "
                      f"{p90(samples):>8.2f}")
            bare_median = statistics.median(rows["bare subprocess"])
            overhead = statistics.median(rows["Sandbox.run"]) - bare_median
            old_overhead = statistics.median(rows["old Sandbox.run"]) - bare_median
            overhead_p90 = p90(rows["Sandbox.run"]) - p90(rows["bare subprocess"])
            print(f"{command:<10} overhead: {overhead:.2f} ms median ({old_overhead:.2f} ms "
                  f"before issue 10; the new limits cost {overhead - old_overhead:+.2f} ms), "
                  f"{overhead_p90:.2f} ms p90\n")
            worst = max(worst, overhead)
    verdict = "within" if worst <= TARGET_OVERHEAD_MS else "OVER"
    print(f"worst median overhead {worst:.2f} ms: {verdict} the {TARGET_OVERHEAD_MS:g} ms target "
          f"(load average now {os.getloadavg()[0]:.2f})")
    return 0 if worst <= TARGET_OVERHEAD_MS else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    sys.exit(asyncio.run(main(parser.parse_args().runs)))
