"""Run the git CLI on the host with a configuration the repository cannot subvert.

Every git command Honk runs goes through `Git.run`. The working tree was written by the
agent, so nothing in it (nor in the repository's config, if it were ever tampered with)
may make git run code on the host or send the installation token anywhere but the
remote: hooks, fsmonitor, filter/diff/merge drivers, pagers, editors, askpass and
credential helpers are all switched off, system and global config are not read, and the
token only ever travels in the environment of the one process that talks to the remote.
"""

import asyncio
import base64
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import structlog

log = structlog.get_logger()

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REMOTE_SCHEMES = frozenset({"https", "http", "file", "git"})
STDERR_LIMIT = 2_000
# Honk runs with umask 077; git runs with 007, in directories of the sandbox's group (see
# honk_app/sandbox/user.py), so what it writes into a worktree or a mirror stays
# usable by the agent's uid. Set by a shell (about 1.2 ms a command here) because uvloop's
# subprocess_exec refuses `umask=`, and preexec_fn is not safe with threads. Only a root
# Honk has a sandbox of another uid; unprivileged, the sandbox is Honk's own uid.
_WITH_GIT_UMASK = ("/bin/sh", "-c", 'umask 007 && exec "$@"', "honk-git") \
    if os.geteuid() == 0 else ()
# How long a command talking to a remote (fetch, push) may take before it is killed; the
# server setting HONK_GIT_TIMEOUT_SECONDS sets it per remote (see WorkspaceManager).
DEFAULT_REMOTE_TIMEOUT_SECONDS = 600.0

# Settings given on the command line outrank every config file, so these hold whatever
# the repository's config says.
SAFE_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.trustCtime", "true"),  # an edit cannot hide behind a restored mtime
    ("core.checkStat", "default"),
    ("core.askPass", ""),
    ("core.pager", "cat"),
    ("core.editor", "true"),
    ("credential.helper", ""),
    ("protocol.allow", "never"),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("push.recurseSubmodules", "no"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("push.gpgSign", "false"),
    ("log.showSignature", "false"),
    ("rebase.autoStash", "false"),
    ("rebase.autoSquash", "false"),
    ("rebase.updateRefs", "false"),
    ("rerere.enabled", "false"),
    ("advice.detachedHead", "false"),
    ("init.defaultBranch", "main"),
)

# Config keys naming a command git would run; a -c override with an empty value disables
# each one, so any the repository defines are neutralised per command.
_DRIVER_KEY = re.compile(
    r"^(filter\..+\.(clean|smudge|process)|diff\..+\.(command|textconv)|merge\..+\.driver)$",
    re.IGNORECASE | re.DOTALL,
)
# Config that could redirect traffic (and with it the token) or swap credentials. Honk's
# mirrors never set any of it, so finding some means the config was tampered with.
_NETWORK_KEY = re.compile(
    r"^(url\.|http\.|remote\.|credential\.|core\.(gitproxy|sshcommand)$)", re.IGNORECASE
)


@dataclass(frozen=True)
class GitRemote:
    """Where a repository lives, and the installation token to reach it with."""

    url: str
    token: str | None = None
    # A command talking to this remote is killed after this long (None: the default).
    timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        scheme = self.scheme
        if scheme not in REMOTE_SCHEMES:
            raise ValueError(f"unsupported git remote scheme {scheme!r}")
        if scheme != "file" and "@" in urlsplit(self.url).netloc:
            raise ValueError("credentials belong in GitRemote.token, not in the URL")

    def __repr__(self) -> str:
        token = "None" if self.token is None else "'***'"
        return f"GitRemote(url={self.url!r}, token={token}, timeout_seconds={self.timeout_seconds})"

    @property
    def scheme(self) -> str:
        if "://" not in self.url:
            return "file"  # a local path
        return urlsplit(self.url).scheme.lower()

    def secrets(self) -> tuple[str, ...]:
        """Every form in which the token could show up in git's output."""
        if not self.token:
            return ()
        basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        return (self.token, basic)

    def transport_config(self) -> list[tuple[str, str]]:
        """Config for a command that talks to this remote: its protocol, and the token
        as an HTTP header scoped to the remote's host."""
        config = [(f"protocol.{self.scheme}.allow", "always")]
        if self.token and self.scheme in ("https", "http"):
            parts = urlsplit(self.url)
            host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
            origin = f"{parts.scheme}://{host}"
            if parts.port is not None:
                origin += f":{parts.port}"
            basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
            config.append((f"http.{origin}/.extraHeader", f"Authorization: Basic {basic}"))
        return config


class GitError(Exception):
    """A git command failed. The message holds the command, exit code and trimmed stderr,
    never a token."""

    def __init__(self, command: Sequence[str], returncode: int, stderr: str) -> None:
        self.command = tuple(command)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(self.command)} exited {returncode}: {stderr}")


class GitTimeout(GitError):
    """A git command talking to a remote took longer than its deadline and was killed."""

    def __init__(self, command: Sequence[str], seconds: float) -> None:
        # Not GitError's message: the command's arguments (a URL) stay out of it.
        Exception.__init__(self, f"{' '.join(command[:2])} timed out after {seconds:g} s "
                           "(the remote did not answer in time) and was stopped")
        self.command = tuple(command)
        self.returncode = -signal.SIGKILL
        self.stderr = f"timed out after {seconds:g} s"
        self.seconds = seconds


class PushRejected(GitError):
    """The remote refused a push.

    reason "workflows": GitHub refuses an App push that adds or changes
    .github/workflows/* without the `workflows` permission; `paths` lists them.
    reason "conflict": the remote branch moved and the run's commits do not rebase onto it.
    reason "rejected": any other refusal.
    """

    def __init__(
        self,
        command: Sequence[str],
        returncode: int,
        stderr: str,
        *,
        reason: Literal["workflows", "conflict", "rejected"],
        paths: tuple[str, ...] = (),
    ) -> None:
        super().__init__(command, returncode, stderr)
        self.reason = reason
        self.paths = paths


@dataclass(frozen=True)
class GitResult:
    stdout: bytes
    stderr: str
    returncode: int
    truncated: bool = False  # stdout reached the caller's limit and git was stopped

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape").strip()


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def trim(text: str, limit: int = STDERR_LIMIT) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters trimmed ...]\n{text[-half:]}"


def base_environment(git_dir: Path, work_tree: Path | None) -> dict[str, str]:
    """A clean environment: nothing from the caller's, no system or global config."""
    env = {
        "PATH": SAFE_PATH,
        "HOME": "/nonexistent",
        "XDG_CONFIG_HOME": "/nonexistent",
        "LC_ALL": "C",
        "GIT_DIR": str(git_dir),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_SYSTEM": "/dev/null",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_EDITOR": "true",
        "GIT_SEQUENCE_EDITOR": "true",
        "GIT_PAGER": "cat",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_LITERAL_PATHSPECS": "1",
        "GIT_PROTOCOL_FROM_USER": "0",
    }
    if work_tree is not None:
        env["GIT_WORK_TREE"] = str(work_tree)
    return env


class Git:
    """git bound to one git directory (and work tree), with Honk's safe settings.

    The git directory is always given explicitly: a `.git` file in the agent's working
    tree is never consulted, since the agent could have rewritten it. On its first command
    a Git reads which settings the repository's config files hold; every command then
    disables the filter, diff and merge driver commands among them, and a command that
    talks to a remote refuses to run if they could redirect it. Make one Git per
    operation, so that each operation looks at the config afresh.
    """

    def __init__(
        self, git_dir: Path, work_tree: Path | None = None, *, index_file: Path | None = None
    ) -> None:
        self.git_dir = git_dir
        self.work_tree = work_tree
        self.index_file = index_file

    def with_index(self, index_file: Path) -> "Git":
        return Git(self.git_dir, self.work_tree, index_file=index_file)

    async def run(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        remote: GitRemote | None = None,
        config: Sequence[tuple[str, str]] = (),
        check: bool = True,
        stdout_limit: int | None = None,
    ) -> GitResult:
        """Run `git <args>`. `remote` allows its protocol and carries its token; `config`
        adds settings for this command only (through the environment, never argv)."""
        names = await self.repository_config_names()
        extra_config = _driver_overrides(names) + list(config)
        if remote is not None:
            _refuse_redirecting_config(names)
            extra_config += remote.transport_config()
        secrets = remote.secrets() if remote is not None else ()
        timeout = None
        if remote is not None:
            timeout = remote.timeout_seconds or DEFAULT_REMOTE_TIMEOUT_SECONDS
        result = await self._exec(args, input, env, extra_config, stdout_limit, secrets,
                                  timeout=timeout)
        if check and result.returncode != 0 and not result.truncated:
            raise GitError(("git", *args), result.returncode, result.stderr)
        return result

    async def text(self, *args: str) -> str:
        return (await self.run(*args)).text

    async def repository_config_names(self) -> list[str]:
        """Names the repository's config files set (Honk's own command-line ones excluded).

        Asked of git whenever those files change (or always, if they include others)."""
        fingerprint = _config_fingerprint(self.git_dir)
        if fingerprint is not None and fingerprint in _config_names_seen:
            return _config_names_seen[fingerprint]
        result = await self._exec(
            ("config", "--list", "--show-scope", "--name-only", "-z"), None, None, [], None, ()
        )
        fields = result.stdout.decode("utf-8", "surrogateescape").split("\0")
        pairs = zip(fields[0::2], fields[1::2], strict=False)
        names = [name for scope, name in pairs if name and scope != "command"]
        drivers = sorted({key for key, _ in _driver_overrides(names)})
        if drivers:
            log.warning("git.config_drivers_neutralised", keys=drivers)
        if fingerprint is not None:
            if len(_config_names_seen) > 1_000:
                _config_names_seen.clear()
            _config_names_seen[fingerprint] = names
        return names

    async def _exec(
        self,
        args: Sequence[str],
        input: bytes | None,
        env: Mapping[str, str] | None,
        extra_config: Sequence[tuple[str, str]],
        stdout_limit: int | None,
        secrets: Sequence[str],
        *,
        timeout: float | None = None,
    ) -> GitResult:
        """Run git; with a `timeout`, git and every helper it started (git-remote-http, …)
        run in a process group of their own, all killed when the time is up."""
        process_env = base_environment(self.git_dir, self.work_tree)
        if self.index_file is not None:
            process_env["GIT_INDEX_FILE"] = str(self.index_file)
        process_env.update(env or {})
        process_env["GIT_CONFIG_COUNT"] = str(len(extra_config))
        for number, (key, value) in enumerate(extra_config):
            process_env[f"GIT_CONFIG_KEY_{number}"] = key
            process_env[f"GIT_CONFIG_VALUE_{number}"] = value
        argv = [*_WITH_GIT_UMASK, "git"]
        for key, value in SAFE_CONFIG:
            argv += ["-c", f"{key}={value}"]
        process = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            cwd=self.work_tree if self.work_tree is not None else self.git_dir,
            env=process_env,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=timeout is not None,
        )
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                stdout, stderr, truncated = await _communicate(process, input, stdout_limit)
        except BaseException as error:
            _kill(process, group=timeout is not None)
            await process.wait()
            if isinstance(error, TimeoutError) and deadline.expired():
                assert timeout is not None
                log.warning("git.timed_out", command=args[0], seconds=timeout)
                raise GitTimeout(("git", *args), timeout) from None
            raise
        return GitResult(
            stdout=stdout,
            stderr=trim(redact(stderr.decode("utf-8", "replace"), secrets)),
            returncode=process.returncode if process.returncode is not None else -1,
            truncated=truncated,
        )


_config_names_seen: dict[tuple[object, ...], list[str]] = {}


def _kill(process: asyncio.subprocess.Process, *, group: bool) -> None:
    """Kill git (and, with `group`, the helpers it started, which hold its pipes open)."""
    try:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        elif process.returncode is None:
            process.kill()
    except ProcessLookupError:
        pass


def _config_fingerprint(git_dir: Path) -> tuple[object, ...] | None:
    """What identifies the config files git reads for this git directory (any write changes
    it), or None when they include other files."""
    common_dir = git_dir
    commondir_file = git_dir / "commondir"
    if commondir_file.is_file():
        common_dir = git_dir / commondir_file.read_text().strip()
    fingerprint: list[object] = []
    for path in (commondir_file, common_dir / "config", git_dir / "config.worktree"):
        try:
            status = path.stat()
        except FileNotFoundError:
            fingerprint.append((str(path), None))
            continue
        if path.name != "commondir" and b"include" in path.read_bytes().lower():
            return None
        fingerprint.append(
            (str(path), status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
        )
    return tuple(fingerprint)


def _driver_overrides(names: Sequence[str]) -> list[tuple[str, str]]:
    """Empty values for the filter, diff and merge driver commands the config defines, so
    that none of them runs."""
    overrides = [(name, "") for name in names if _DRIVER_KEY.match(name)]
    overrides += [
        (name.rsplit(".", 1)[0] + ".required", "false")
        for name, _ in overrides
        if name.lower().startswith("filter.")
    ]
    return overrides


def _refuse_redirecting_config(names: Sequence[str]) -> None:
    suspicious = sorted({name for name in names if _NETWORK_KEY.match(name)})
    if suspicious:
        raise GitError(
            ("git", "config", "--list"),
            1,
            f"repository config sets {', '.join(suspicious)}; refusing to talk to the remote",
        )


async def _communicate(
    process: asyncio.subprocess.Process, input: bytes | None, stdout_limit: int | None
) -> tuple[bytes, bytes, bool]:
    if stdout_limit is None:
        stdout, stderr = await process.communicate(input)
        return stdout, stderr, False
    assert process.stdout is not None and process.stderr is not None
    if input is not None and process.stdin is not None:
        process.stdin.write(input)
        await process.stdin.drain()
        process.stdin.close()
    stderr_task = asyncio.ensure_future(process.stderr.read())
    chunks: list[bytes] = []
    size = 0
    truncated = False
    while chunk := await process.stdout.read(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > stdout_limit:
            truncated = True
            process.kill()
            break
    stderr = await stderr_task
    await process.wait()
    return b"".join(chunks), stderr, truncated
