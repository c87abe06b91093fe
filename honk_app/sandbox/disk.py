"""The disk and inode cap on a workspace: measured usage that stops the command at the cap.

Why measured, not a quota or a filesystem per slot: project quotas need the host
filesystem mounted with `prjquota` (not so here, nor in most containers), and a loop-mounted
filesystem per slot needs root, loop devices and mkfs, none of which an unprivileged Honk
or an ordinary container has. Measuring works everywhere Honk runs, at a cost kept off the
common path:
- While a command runs, `statvfs` of the workspace's filesystem (a few microseconds) is
  read every quarter second. Only when that filesystem grew by more than the room the
  workspace had left at its last measurement (and once, after the first command) is the
  workspace walked (in a thread) to count its bytes and files.
- Over the cap, the command is killed and told so; the same check runs once more when a
  command ends, so a short burst is caught too.
The sandbox's /tmp and /dev/shm are tmpfs with a size, inside the memory cgroup.

What this cannot see: another process freeing as much space on the same filesystem while
the command writes hides that growth until the next measurement; a burst between two
polls overshoots the cap by what was written in a quarter second. Both are bounded, and
RLIMIT_FSIZE still caps any single file.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.25




@dataclass(frozen=True)
class Usage:
    bytes: int
    files: int


def measure(root: Path) -> Usage:
    """Bytes allocated and entries (files, directories, links) under root; no links followed."""
    total_bytes = 0
    total_files = 0
    pending = [str(root)]
    while pending:
        directory = pending.pop()
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total_files += 1
                total_bytes += info.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return Usage(total_bytes, total_files)


class DiskCap:
    """The cap of one workspace, shared by the commands that run in it."""

    def __init__(self, root: Path, *, max_bytes: int, max_files: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._known: Usage | None = None
        self._baseline = self._filesystem()

    def _filesystem(self) -> Usage:
        stats = os.statvfs(self.root)
        return Usage((stats.f_blocks - stats.f_bfree) * stats.f_frsize,
                     stats.f_files - stats.f_ffree)

    def _may_be_over(self) -> bool:
        now = self._filesystem()
        grown = Usage(now.bytes - self._baseline.bytes, now.files - self._baseline.files)
        if self._known is None:
            return True  # measured once, when the first command ends
        # Past the cap, any real growth is measured (but not every byte another writer adds).
        return (grown.bytes > max(self.max_bytes - self._known.bytes, 2**20)
                or grown.files > max(self.max_files - self._known.files, 100))

    async def over(self) -> Usage | None:
        """The workspace's usage if it is over the cap now and grew since it was last measured,
        else None (cheap when far under). A command that only deletes is never stopped."""
        try:
            if not self._may_be_over():
                return None
            self._baseline = self._filesystem()
        except OSError:  # the workspace is gone: nothing left to cap
            return None
        previous, self._known = self._known, await asyncio.to_thread(measure, self.root)
        usage = self._known
        over = usage.bytes > self.max_bytes or usage.files > self.max_files
        grew = previous is None or usage.bytes > previous.bytes or usage.files > previous.files
        return usage if over and grew else None

    async def watch(self) -> Usage:
        """Return once the workspace is over the cap (the caller cancels it otherwise)."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            usage = await self.over()
            if usage is not None:
                return usage

    def sentence(self, usage: Usage) -> str:
        return (f"[The command was stopped: the workspace holds {usage.bytes / 2**20:,.0f} MiB "
                f"in {usage.files:,} files and directories, over its cap of "
                f"{self.max_bytes / 2**20:,.0f} MiB and {self.max_files:,} files. Delete what "
                "is not needed (build outputs, caches, generated data), then go on.]")
