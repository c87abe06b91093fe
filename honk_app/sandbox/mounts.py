"""What a sandboxed command sees: the bubblewrap command line that builds its filesystem.

Host paths inside: the system directories read-only, an allowlist of /etc (what compilers,
interpreters, the dynamic linker, locale, time zones, name lookup and CA certificates read;
never the whole of it with a few files masked), a passwd and group made up for the sandbox,
a fresh /proc whose /proc/sys is read-only, a minimal /dev, size-capped private /tmp and
/dev/shm, the workspace read-write at /workspace, and the read-only paths the caller names.
The workspace's own `.git` is bound read-only over itself, so hooks, config and refs cannot
be changed. Root-only files among the allowed ones stay unreadable: the sandbox's uid is
never root on the host (see user.py).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from honk_app.sandbox.seccomp import program as seccomp_program
from honk_app.sandbox.user import SandboxUser

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

# The sandbox's pid 1: a shell that sets the command's rlimits, runs the command as its
# child, reaps orphans, and exits with the command's status. bwrap's own init (without
# --as-pid-1) reports the status and exits, and the outer bwrap then exits without reaping
# it: the zombie went to the host's init and stayed charged to the pids cgroup (2 s with
# this container's init), so the cgroup could not be reused at once. Run as pid 2, the
# command keeps ordinary signal semantics (`kill $$` works). Setting the rlimits here with
# bash's `ulimit` saves the exec of prlimit (about 1 ms).
def sandbox_init(ulimits: str) -> list[str]:
    return ["bash", "-c", f'{ulimits} || exit 125; "$@"; exit $?', "honk-init"]


@dataclass
class DataFds:
    """Pipes holding data for bwrap (`--seccomp`), one read end each."""

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
               memory_bytes: int, user: SandboxUser,
               ulimits: str = "true") -> Iterator[tuple[list[str], DataFds]]:
    """The bwrap command (ending with `--` and the sandbox's init) and the fds it reads."""
    fds = DataFds([])
    try:
        fds.fds.append(_data_fd(seccomp_program()))
        etc = etc_view(user, network=network)
        argv = _argv(bwrap, workspace, binds, network, memory_bytes, user, etc, fds.fds[0])
        yield [*argv, *sandbox_init(ulimits)], fds
    finally:
        fds.close()


def _argv(bwrap: str, workspace: Path, binds: list[tuple[Path, str]], network: bool,
          memory_bytes: int, user: SandboxUser, etc: Path, seccomp: int) -> list[str]:
    if user.separate:
        # Root builds the namespaces without a user namespace; setpriv then drops to the uid.
        argv = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        argv += [] if network else ["--unshare-net"]
    else:
        argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        argv += ["--share-net"] if network else []
    argv += ["--die-with-parent", "--new-session", "--hostname", HOSTNAME, "--as-pid-1",
             "--seccomp", str(seccomp)]
    argv += _system_mounts()
    argv += ["--ro-bind", str(etc), "/etc"]
    if network:
        argv += ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
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
    return argv


@functools.cache
def _system_mounts() -> tuple[str, ...]:
    argv: list[str] = []
    for path in _SYSTEM_PATHS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    return tuple(argv)


_views: dict[tuple[object, ...], Path] = {}
_checked: dict[tuple[SandboxUser, bool], tuple[float, Path]] = {}


def etc_view(user: SandboxUser, *, network: bool = False) -> Path:
    """A copy of the allowed part of /etc, with the made-up passwd and group, bound whole.

    One bind instead of forty: binding each allowed entry cost about 6 ms a command here
    (measured: bwrap `true` 4.2 ms, 10.4 ms with forty /etc binds). The copy (links kept as
    links, modes kept, so a root-only file stays root-only) is made once per process and
    made again when an allowed entry of /etc changes (its mtime, or a directory's)."""
    recent = _checked.get((user, network))
    if recent is not None and time.monotonic() - recent[0] < 1.0 and recent[1].is_dir():
        return recent[1]  # /etc was looked at less than a second ago
    names = _ETC_ALLOWLIST + (("resolv.conf",) if network else ())
    key = (user, network, *(_stamp(f"/etc/{name}") for name in names))
    view = _views.get(key)
    if view is not None and view.is_dir():
        _checked[(user, network)] = (time.monotonic(), view)
        return view
    for stale_key in [k for k in _views if k[:2] == key[:2]]:
        shutil.rmtree(_views.pop(stale_key), ignore_errors=True)
    view = Path(tempfile.mkdtemp(prefix="honk-sandbox-etc-"))
    os.chmod(view, 0o755)  # its parent, /tmp or TMPDIR, is traversed by bwrap only
    for name in names:
        source, target = Path("/etc", name), view / name
        if not os.path.lexists(source):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, target, symlinks=True, ignore_dangling_symlinks=True)
        else:
            shutil.copy2(source, target, follow_symlinks=False)
    (view / "mtab").symlink_to("../proc/self/mounts")
    passwd, group = _identity_files(user)
    for name, data in (("passwd", passwd), ("group", group)):
        (view / name).write_bytes(data)
        os.chmod(view / name, 0o644)
    _register_cleanup()
    _views[key] = view
    _checked[(user, network)] = (time.monotonic(), view)
    return view


@functools.cache
def _register_cleanup() -> None:
    atexit.register(_remove_views)


def _remove_views() -> None:
    for view in _views.values():
        shutil.rmtree(view, ignore_errors=True)


def _stamp(path: str) -> tuple[str, int] | None:
    try:
        return path, os.lstat(path).st_mtime_ns
    except OSError:
        return None


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
