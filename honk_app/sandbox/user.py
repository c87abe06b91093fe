"""Who the agent's commands run as on the host, and what the host does so that uid can work.

When Honk runs as root, the sandbox's processes run as an unprivileged host uid that owns
nothing (HONK_SANDBOX_UID, default 65534 `nobody`; a dedicated user is better, see README):
bubblewrap, run by root, builds the namespaces and mounts without a user namespace (so it
can reach a workspace under Honk's 0700 data directory), and `setpriv` drops to that uid,
with no capabilities, no supplementary groups and no_new_privs, before anything of the
agent's runs. Measured here: run by root *with* a user namespace, bwrap maps the sandbox's
uid 0 to host root (`uid_map 0 0 1`), which wrote /proc/sys and left setuid-root files;
and `--bind-fd` does not help an unprivileged bwrap reach a path under a 0700 directory
(bwrap 0.8.0 reads the fd's path back and walks it: "Permission denied").

When Honk runs unprivileged, the sandbox runs as Honk's own uid inside a user namespace, as
bwrap always did; the seccomp filter keeps the keyring and the rest out of reach.

The workspace must stay writable by that uid while host git (as root) keeps working on it:
- Slots and mirrors live in directories of group HONK_SANDBOX_GID with the setgid bit
  (2770), so everything created below inherits the group; host git runs with umask 007
  (honk_app.workspace.git), so what it writes is group-writable; the editor gives what it writes
  to the sandbox's uid, and `give_tree` gives it what host git checked out before the run
  starts (a group-writable file can be edited but not chmod-ed or touched by another
  uid, and `chmod +x script` is ordinary work). The data directory itself stays 0700:
  bwrap runs as root.
- git's `safe.directory` check does not apply: Honk's git always names GIT_DIR and
  GIT_WORK_TREE, and with an explicit GIT_DIR git 2.39 does not check ownership (measured,
  with the worktree and its git directory owned by nobody).
- Before host git reads a tree the sandbox wrote (commit, diff, the next run's scrub),
  `seal_tree` strips setuid/setgid bits and removes fifos, sockets and device nodes: a fifo
  named `.gitignore` made host `git status` and `git add` hang (measured). The seccomp
  filter already refuses to make setuid/setgid files; sealing is the second wall.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger()

DEFAULT_SANDBOX_UID = 65534
SHARED_DIR_MODE = 0o2770


@dataclass(frozen=True)
class SandboxUser:
    uid: int
    gid: int

    @property
    def separate(self) -> bool:
        """Whether the sandbox runs as another uid than Honk (Honk is root)."""
        return os.geteuid() == 0 and self.uid != 0

    @property
    def file_owner(self) -> tuple[int, int] | None:
        """Whom Honk gives files it writes into a workspace, or None (Honk's own uid)."""
        return (self.uid, self.gid) if self.separate else None


def sandbox_user(uid: int | None = None, gid: int | None = None) -> SandboxUser:
    """The configured uid (default 65534), and its group (default its primary group)."""
    uid = DEFAULT_SANDBOX_UID if uid is None else uid
    if gid is None:
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = uid
    return SandboxUser(uid, gid)


def share_dir(path: Path, user: SandboxUser) -> None:
    """Make path (and missing parents up to an existing one) a directory the sandbox's group
    may use, whose new entries inherit that group."""
    missing = []
    cursor = path
    while not cursor.exists():
        missing.append(cursor)
        cursor = cursor.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
    if not user.separate:
        return
    for directory in [path, *missing[1:]]:
        info = os.lstat(directory)
        if info.st_gid != user.gid or stat.S_IMODE(info.st_mode) != SHARED_DIR_MODE:
            os.chown(directory, -1, user.gid, follow_symlinks=False)
            os.chmod(directory, SHARED_DIR_MODE)


def share_tree(root: Path, user: SandboxUser) -> None:
    """Once, for a tree made before the sandbox had its own uid: group and modes as
    `share_dir` and host git's umask would have made them. Links are not followed."""
    if not user.separate:
        return
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            os.chown(path, -1, user.gid)
            mode = stat.S_IMODE(info.st_mode)
            os.chmod(path, (mode | 0o2070) if stat.S_ISDIR(info.st_mode)
                     else mode | ((mode & 0o600) >> 3))
    share_dir(root, user)


async def give_tree(root: Path, user: SandboxUser) -> None:
    """Give the sandbox's uid every file and directory below root that it does not own yet
    (what host git checked out), leaving `.git` and links alone. Only entries not yet its
    own are touched, so a kept slot costs one walk and the few files the checkout wrote."""
    if not user.separate:
        return
    process = await asyncio.create_subprocess_exec(
        "find", str(root), "-xdev", "-mindepth", "1", "-path", str(root / ".git"), "-prune",
        "-o", "!", "-type", "l", "!", "-user", str(user.uid),
        "-exec", "chown", "--no-dereference", f"{user.uid}:{user.gid}", "{}", "+",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    _, errors = await process.communicate()
    if process.returncode != 0:
        log.warning("workspace.give_failed", root=str(root),
                    error=errors.decode(errors="replace")[-500:])


async def seal_tree(root: Path) -> list[str]:
    """Strip setuid/setgid bits from files under root and remove fifos, sockets and device
    nodes, without following links. Returns what it changed (paths relative to root)."""
    process = await asyncio.create_subprocess_exec(
        "find", str(root), "-xdev", "-path", str(root / ".git"), "-prune", "-o",
        "(", "-type", "f", "-perm", "/6000", "-printf", "S%P\\0", ")", "-o",
        "(", "!", "-type", "f", "!", "-type", "d", "!", "-type", "l", "-printf", "X%P\\0", ")",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    output, _ = await process.communicate()
    changed = []
    for item in filter(None, output.split(b"\0")):
        kind, relative = item[:1], os.fsdecode(item[1:])
        path = root / relative
        with contextlib.suppress(FileNotFoundError):
            if kind == b"S":
                _strip_setid(path)
            else:
                info = os.lstat(path)
                if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
                        or stat.S_ISLNK(info.st_mode)):
                    os.unlink(path)
            changed.append(relative)
    if changed:
        log.warning("workspace.sealed", root=str(root), paths=changed[:20], count=len(changed),
                    reason="setuid/setgid bits stripped, fifos, sockets and devices removed")
    return changed


def _strip_setid(path: Path) -> None:
    # O_PATH would not allow fchmod; a regular file opened without following a link does.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~0o6000)
    finally:
        os.close(fd)
