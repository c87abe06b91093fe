"""The sandbox's seccomp filter: a small classic-BPF program handed to bubblewrap (`--seccomp FD`).

bubblewrap installs it after it has built the sandbox, just before it executes the first
program inside, so the filter binds everything the agent runs and nothing bwrap needs.
Every refusal is EPERM (ENOSYS where a libc falls back to an older call), never a kill:
a build that probes a feature gets an error it can handle.

Denied outright: the kernel keyring (keyctl, add_key, request_key: host root's keys were
readable from a sandbox that ran as root), bpf, perf_event_open, userfaultfd, ptrace,
io_uring (its requests bypass seccomp), the mount API (mount, umount2, pivot_root,
open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr), kexec, kernel
modules, swap, reboot, quotactl, acct, clock setting, syslog, iopl/ioperm, file handles.
Denied by argument: unshare and clone with any namespace flag, and setns (no namespace
after bwrap's own), and every way to make a setuid or setgid file: chmod, fchmod, fchmodat,
fchmodat2 with S_ISUID or S_ISGID in the mode, open/openat/creat that create a file with
those bits, mknod/mknodat with them. clone3 and openat2 pass their flags in memory that a
filter cannot read, so they get ENOSYS and glibc uses clone and openat instead.

Written by hand rather than through libseccomp: about sixty instructions, no library to
load in the worker, and a program that can be read here. Checked here on x86_64 (kernel
6.18); the aarch64 numbers come from the kernel's generic table and are not exercised on
this machine. A call made through another ABI (i386 `int 0x80`, x32) is refused whole.
"""

from __future__ import annotations

import functools
import platform
import struct

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
_NR, _ARCH, _ARGS = 0, 4, 16
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
EPERM, ENOSYS = 1, 38
_X32_BIT = 0x40000000

S_ISUID_OR_GID = 0o6000
_O_CREAT, _O_TMPFILE = 0o100, 0o20000000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
_NAMESPACE_FLAGS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                    | 0x20000000 | 0x40000000 | 0x00000080)

_DENIED = ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
           "ptrace", "io_uring_setup", "io_uring_enter", "io_uring_register", "mount",
           "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
           "fspick", "mount_setattr", "kexec_load", "kexec_file_load", "init_module",
           "finit_module", "delete_module", "swapon", "swapoff", "reboot", "quotactl", "acct",
           "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "iopl",
           "ioperm", "name_to_handle_at", "open_by_handle_at", "setns", "uselib", "vhangup")
_NOT_IMPLEMENTED = ("clone3", "openat2")
# name -> (index of the argument holding the mode, index of the open flags or None)
_MODE_ARGUMENT = {"chmod": (1, None), "fchmod": (1, None), "fchmodat": (2, None),
                  "fchmodat2": (2, None), "mknod": (1, None), "mknodat": (2, None),
                  "creat": (1, None), "open": (2, 1), "openat": (3, 2)}
_NAMESPACE_ARGUMENT = {"unshare": 0, "clone": 0}  # clone's flags come first on both arches

_X86_64 = {
    "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "ptrace": 101, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "mount": 165, "umount2": 166, "pivot_root": 155,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "swapon": 167,
    "swapoff": 168, "reboot": 169, "quotactl": 179, "acct": 163, "settimeofday": 164,
    "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "syslog": 103, "iopl": 172,
    "ioperm": 173, "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
    "uselib": 134, "vhangup": 153, "clone3": 435, "openat2": 437, "chmod": 90, "fchmod": 91,
    "fchmodat": 268, "fchmodat2": 452, "mknod": 133, "mknodat": 259, "creat": 85, "open": 2,
    "openat": 257, "unshare": 272, "clone": 56,
}
_AARCH64 = {
    "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241,
    "userfaultfd": 282, "ptrace": 117, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "mount": 40, "umount2": 39, "pivot_root": 41, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "kexec_load": 104, "kexec_file_load": 294, "init_module": 105,
    "finit_module": 273, "delete_module": 106, "swapon": 224, "swapoff": 225, "reboot": 142,
    "quotactl": 60, "acct": 89, "settimeofday": 170, "clock_settime": 112,
    "clock_adjtime": 266, "adjtimex": 171, "syslog": 116, "name_to_handle_at": 264,
    "open_by_handle_at": 265, "setns": 268, "vhangup": 58, "clone3": 435, "openat2": 437,
    "fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "mknodat": 33, "openat": 56,
    "unshare": 97, "clone": 220,
}
_ARCHES = {"x86_64": (0xC000003E, _X86_64), "aarch64": (0xC00000B7, _AARCH64)}


class SeccompUnsupported(Exception):
    """This machine's architecture has no syscall table here."""


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _refuse(errno: int) -> bytes:
    return _insn(_RET, _ERRNO | errno)


def _when(number: int, body: list[bytes]) -> list[bytes]:
    """If the call is `number`, run body (which ends in a return); else go on after it."""
    return [_insn(_JEQ, number, 0, len(body)), *body]


def _if_any_bits(argument: int, bits: int, then: list[bytes],
                 otherwise: list[bytes]) -> list[bytes]:
    """Test the low 32 bits of an argument (little-endian) against bits."""
    return [_insn(_LD_W_ABS, _ARGS + 8 * argument), _insn(_JSET, bits, 0, len(then)),
            *then, *otherwise]


@functools.cache
def program(machine: str | None = None) -> bytes:
    """The filter for this machine (or `machine`), as bytes of struct sock_filter."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise SeccompUnsupported(f"no seccomp syscall table for {machine}")
    audit_arch, numbers = _ARCHES[machine]
    allow = [_insn(_RET, _ALLOW)]
    code = [_insn(_LD_W_ABS, _ARCH), _insn(_JEQ, audit_arch, 1, 0), _refuse(EPERM),
            _insn(_LD_W_ABS, _NR)]
    if machine == "x86_64":
        code += [_insn(_JGE, _X32_BIT, 0, 1), _refuse(EPERM)]
    for name in _DENIED:
        if name in numbers:
            code += _when(numbers[name], [_refuse(EPERM)])
    for name in _NOT_IMPLEMENTED:
        code += _when(numbers[name], [_refuse(ENOSYS)])
    for name, argument in _NAMESPACE_ARGUMENT.items():
        code += _when(numbers[name], _if_any_bits(argument, _NAMESPACE_FLAGS,
                                                  [_refuse(EPERM)], allow))
    for name, (mode, flags) in _MODE_ARGUMENT.items():
        if name not in numbers:
            continue
        setuid_mode = _if_any_bits(mode, S_ISUID_OR_GID, [_refuse(EPERM)], allow)
        body = setuid_mode if flags is None else _if_any_bits(
            flags, _O_CREAT | _O_TMPFILE, setuid_mode, allow)
        code += _when(numbers[name], body)
    code += allow
    if len(code) > 4096:  # BPF_MAXINSNS
        raise AssertionError("seccomp program too long")
    return b"".join(code)
