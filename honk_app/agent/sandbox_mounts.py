"""What a sandboxed command sees: the bubblewrap command line that builds its filesystem.

Host paths inside: the system directories read-only, an allowlist of /etc (what compilers,
interpreters, the dynamic linker, locale, time zones, name lookup and CA certificates read;
never the whole of it with a few files masked), a passwd and group made up for the sandbox,
a fresh /proc whose /proc/sys is read-only, a minimal /dev, size-capped private /tmp and
/dev/shm, the workspace read-write at /workspace, and the read-only paths the caller names.
The workspace's own `.git` is bound read-only over itself, so hooks, config and refs cannot
be changed. Root-only files among the allowed ones stay unreadable: the sandbox's uid is
never root on the host (see sandbox_user).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from honk_app.agent import sandbox_seccomp
from honk_app.agent.sandbox_user import SandboxUser

WORKSPACE_MOUNT = "/workspace"
SANDBOX_HOME = "/tmp/home"
HOSTNAME = "honk-sandbox"
SHM_BYTES = 256 * 2**20

_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
# Everything under /etc the sandbox may read. Not here on purpose: shadow and gshadow,
# sudoers, ssh host keys, ssl/private, machine-id, the host's passwd and group (made up
# below), and whatever an operator keeps there (env files, keys).
_ETC_ALLOWLIST = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives",  # the dynamic linker, cc/java
    "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ca-certificates.conf", "pki",
    "crypto-policies", "localtime", "timezone", "locale.alias", "locale.conf", "locale.gen",
    "default/locale", "nsswitch.conf", "host.conf", "hosts", "gai.conf", "services",
    "protocols", "networks", "rpc", "mime.types", "magic", "magic.mime", "os-release",
    "debian_version", "lsb-release", "shells", "inputrc", "terminfo", "fonts", "python3",
    "python3.11", "python3.12", "python3.13", "perl", "java-17-openjdk", "java-21-openjdk",
    "maven", "pip.conf", "npmrc", "gitconfig", "vim", "chromium", "chromium.d", "xml", "sgml",
    "mke2fs.conf",
)
_ETC_WITH_NETWORK = ("resolv.conf",)
_SANDBOX_INIT = ("bash", "-c", '"$@"; exit $?', "honk-init")


@dataclass
class DataFds:
    """Pipes holding data for bwrap (`--seccomp`, `--ro-bind-data`), one read end each."""

    fds: list[int]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def _data_fd(data: bytes) -> int:
    read_end, write_end = os.pipe()  # inheritable: bwrap reads it after exec
    try:
        os.write(write_end, data)  # well under a pipe's 64 KiB buffer
    finally:
        os.close(write_end)
    return read_end


@contextmanager
def bwrap_argv(bwrap: str, workspace: Path, *, binds: list[tuple[Path, str]], network: bool,
               memory_bytes: int, user: SandboxUser) -> Iterator[tuple[list[str], DataFds]]:
    """The bwrap command (ending with `--` and the sandbox's init) and the fds it reads."""
    fds = DataFds([])
    try:
        seccomp = _data_fd(sandbox_seccomp.program())
        fds.fds.append(seccomp)
        passwd, group = _identity_files(user)
        fds.fds += [_data_fd(passwd), _data_fd(group)]
        yield _argv(bwrap, workspace, binds, network, memory_bytes, user, fds.fds), fds
    finally:
        fds.close()


def _argv(bwrap: str, workspace: Path, binds: list[tuple[Path, str]], network: bool,
          memory_bytes: int, user: SandboxUser, fds: list[int]) -> list[str]:
    seccomp, passwd, group = fds
    if user.separate:
        # Root builds the namespaces without a user namespace; setpriv then drops to the uid.
        argv = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        argv += [] if network else ["--unshare-net"]
    else:
        argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        argv += ["--share-net"] if network else []
    argv += ["--die-with-parent", "--new-session", "--hostname", HOSTNAME, "--as-pid-1",
             "--seccomp", str(seccomp)]
    if network:
        argv += ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
    argv += _system_mounts(network)
    argv += ["--perms", "0644", "--ro-bind-data", str(passwd), "/etc/passwd",
             "--perms", "0644", "--ro-bind-data", str(group), "/etc/group"]
    argv += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev",
             "--perms", "1777", "--size", str(min(SHM_BYTES, memory_bytes)), "--tmpfs", "/dev/shm",
             "--remount-ro", "/dev",
             "--perms", "1777", "--size", str(memory_bytes), "--tmpfs", "/tmp",
             "--perms", "0700" if not user.separate else "0777", "--dir", SANDBOX_HOME,
             "--bind", str(workspace), WORKSPACE_MOUNT]
    made: set[str] = {"/", "/tmp", WORKSPACE_MOUNT}
    for source, target in binds:
        # bwrap, run as root, would make the missing directories above a target 0700.
        for parent in reversed(Path(target).parents):
            if str(parent) not in made and not parent.is_relative_to(WORKSPACE_MOUNT):
                made.add(str(parent))
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", str(source), target]
    argv += ["--remount-ro", "/", "--chdir", WORKSPACE_MOUNT, "--"]
    if user.separate:
        argv += ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return [*argv, *_SANDBOX_INIT]


@functools.cache
def _system_mounts(network: bool) -> tuple[str, ...]:
    argv: list[str] = []
    for path in _SYSTEM_PATHS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    names = _ETC_ALLOWLIST + (_ETC_WITH_NETWORK if network else ())
    # Made by bwrap as root, directories would otherwise be 0700 to the sandbox's uid.
    parents = sorted({"/etc", *(f"/etc/{os.path.dirname(name)}" for name in names if "/" in name)})
    for parent in parents:
        argv += ["--perms", "0755", "--dir", parent]
    for name in names:
        path = f"/etc/{name}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            argv += ["--ro-bind", path, path]
    argv += ["--symlink", "../proc/self/mounts", "/etc/mtab"]
    return tuple(argv)


def _identity_files(user: SandboxUser) -> tuple[bytes, bytes]:
    """passwd and group naming root, the sandbox's uid (home /tmp/home) and nobody."""
    uid, gid = (user.uid, user.gid) if user.separate else (os.getuid(), os.getgid())
    users = {0: "root:x:0:0:root:/root:/usr/sbin/nologin",
             65534: "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"}
    users[uid] = f"{'nobody' if uid == 65534 else 'honk'}:x:{uid}:{gid}:Honk sandbox:" \
                 f"{SANDBOX_HOME}:/bin/bash"
    groups = {0: "root:x:0:", 65534: "nogroup:x:65534:"}
    groups.setdefault(gid, f"honk:x:{gid}:")
    return ("\n".join(users.values()) + "\n").encode(), \
        ("\n".join(groups.values()) + "\n").encode()
