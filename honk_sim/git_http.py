"""git smart HTTP at `{web_url}/{owner}/{repo}.git`, served by `git http-backend`.

Authentication is GitHub's: Basic auth whose password is an installation token scoped to
the repository (or a user's token); no or a bad token is 401 with a Basic challenge. The
request body is streamed into the CGI and its output streamed back. After a push, the refs
the post-receive hook reported become `push` (and `pull_request.synchronize`) webhooks.
The hooks live in a directory the simulator owns; nothing a push brings is ever run.
"""

import asyncio
import shlex
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio.to_thread
import structlog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from honk_sim import git_workflow_guard
from honk_sim.github_auth import ApiError, caller_from_header
from honk_sim.github_git import git_env
from honk_sim.github_state import ACCESS_RANK, ROLE_RANK, Repo, SimState, utc_now

log = structlog.get_logger()

PushHandler = Callable[[Repo, Sequence[tuple[str, str, str]], str], None]
_SERVICES = ("git-upload-pack", "git-receive-pack")


def install_hooks(hooks_dir: Path) -> None:
    """Write the hooks every simulated bare repository points `core.hooksPath` at."""
    hooks_dir.mkdir(parents=True, exist_ok=True)
    guard = Path(git_workflow_guard.__file__).resolve()
    scripts = {
        "proc-receive": f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I "
        f"{shlex.quote(str(guard))}\n",
        "post-receive": '#!/bin/sh\n[ -n "$HONK_SIM_PUSH_LOG" ] && cat >> "$HONK_SIM_PUSH_LOG"\n'
        "exit 0\n",
    }
    for name, text in scripts.items():
        path = hooks_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(text, status_code=status, headers=headers)


def _challenge() -> Response:
    return _text(401, "Unauthorized\n", {"WWW-Authenticate": 'Basic realm="GitHub"'})


class GitHttp:
    """An ASGI app for one route: /{owner}/{repo}.git/{rest:path}."""

    def __init__(self, state: SimState, *, repos_root: Path, on_push: PushHandler) -> None:
        self.state = state
        self.repos_root = repos_root
        self.on_push = on_push

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        params = scope.get("path_params", {})
        service = self._service(params.get("rest", ""), request.query_params.get("service"))
        repo_part = str(params.get("repo", ""))
        if service is None or not repo_part.endswith(".git"):
            await _text(404, "Not Found\n")(scope, receive, send)
            return
        full_name = f"{params.get('owner')}/{repo_part.removesuffix('.git')}"
        decision = self._authorize(request, full_name, push=service == "git-receive-pack")
        if isinstance(decision, Response):
            await decision(scope, receive, send)
            return
        repo, login, workflows_allowed = decision
        scope.setdefault("state", {})["actor"] = login
        await self._run_backend(scope, receive, send, repo, login, workflows_allowed)

    @staticmethod
    def _service(rest: str, query_service: str | None) -> str | None:
        if rest == "info/refs" and query_service in _SERVICES:
            return query_service
        return rest if rest in _SERVICES else None

    def _authorize(
        self, request: Request, full_name: str, *, push: bool
    ) -> Response | tuple[Repo, str, bool]:
        """(repo, login, may change workflows) or the answer GitHub gives."""
        with self.state.lock:
            repo = self.state.repo(full_name)
            header = request.headers.get("authorization")
            if not header:
                if repo is not None and not repo.private and not push:
                    return repo, "anonymous", False
                return _challenge()
            try:
                caller = caller_from_header(self.state, header, now=utc_now())
            except ApiError:
                return _challenge()
            if caller.kind in ("app", "anonymous") or caller.login is None:
                return _challenge()
            if repo is None:
                return _text(404, "Repository not found.\n")
            denied = _text(403, f"Permission to {repo.full_name}.git denied to {caller.login}.\n")
            if caller.kind == "installation":
                token = caller.token
                assert token is not None and token.installation_id is not None
                installation = self.state.installations.get(token.installation_id)
                in_scope = (
                    installation is not None
                    and repo.full_name in installation.repos
                    and (token.repos is None or repo.full_name in token.repos)
                )
                if not in_scope:
                    return _text(404, "Repository not found.\n")
                held = ACCESS_RANK.get(token.permissions.get("contents", "none"), 0)
                if held < ACCESS_RANK["write" if push else "read"]:
                    return denied
                workflows = ACCESS_RANK.get(token.permissions.get("workflows", "none"), 0)
                return repo, caller.login, workflows >= ACCESS_RANK["write"]
            role = self.state.role(repo, caller.login)
            if role == "none":
                return _text(404, "Repository not found.\n")
            if push and ROLE_RANK[role] < ROLE_RANK["write"]:
                return denied
            return repo, caller.login, True

    async def _run_backend(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        repo: Repo,
        login: str,
        workflows_allowed: bool,
    ) -> None:
        request = Request(scope)
        rest = scope["path_params"]["rest"]
        with tempfile.NamedTemporaryFile(prefix="push-", suffix=".log", delete=False) as pushes:
            push_log = Path(pushes.name)
        env = git_env(
            {
                "GIT_PROJECT_ROOT": str(self.repos_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": f"/{repo.owner}/{repo.name}.git/{rest}",
                "REQUEST_METHOD": request.method,
                "QUERY_STRING": request.url.query,
                "REMOTE_USER": login,
                "REMOTE_ADDR": request.client.host if request.client else "127.0.0.1",
                "CONTENT_TYPE": request.headers.get("content-type", ""),
                "HONK_SIM_PUSH_LOG": str(push_log),
                "HONK_SIM_WORKFLOWS": "allow" if workflows_allowed else "deny",
            }
        )
        for header in ("content-encoding", "git-protocol", "content-length"):
            if header in request.headers:
                key = (
                    "CONTENT_LENGTH"
                    if header == "content-length"
                    else ("HTTP_" + header.upper().replace("-", "_"))
                )
                env[key] = request.headers[header]
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._stream(scope, receive, tracked_send, env)
            updates = _read_updates(push_log)
            if updates:
                # Before the response ends, so the pusher sees the webhooks already queued.
                log.info("github_sim.push", repo=repo.full_name, pusher=login, refs=len(updates))
                await anyio.to_thread.run_sync(self.on_push, repo, updates, login)
        finally:
            push_log.unlink(missing_ok=True)
            if started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(
        self, scope: Scope, receive: Receive, send: Send, env: dict[str, str]
    ) -> None:
        backend = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(self.repos_root),
        )
        assert backend.stdin and backend.stdout and backend.stderr
        feeder = asyncio.create_task(_feed(receive, backend.stdin))
        errors = asyncio.create_task(backend.stderr.read())
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            chunk = await backend.stdout.read(65536)
            if not chunk:
                break
            head += chunk
        status, headers, body = _parse_cgi(head)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if body:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        while chunk := await backend.stdout.read(65536):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await feeder
        code = await backend.wait()
        stderr = await errors
        if code != 0 or stderr.strip():
            log.info("github_sim.http_backend", code=code, stderr=stderr.decode(errors="replace"))


async def _feed(receive: Receive, stdin: asyncio.StreamWriter) -> None:
    try:
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                break
            if message.get("body"):
                stdin.write(message["body"])
                await stdin.drain()
            if not message.get("more_body", False):
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stdin.close()


def _parse_cgi(head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    split = head.find(b"\r\n\r\n")
    separator = 4
    if split < 0 or (0 <= head.find(b"\n\n") < split):
        split, separator = head.find(b"\n\n"), 2
    if split < 0:
        return 502, [(b"content-type", b"text/plain")], b"git http-backend failed\n"
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    for line in head[:split].splitlines():
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "status":
            status = int(value.strip().split(" ", 1)[0])
        elif name:
            headers.append((name.strip().lower().encode(), value.strip().encode("latin-1")))
    return status, headers, head[split + separator :]


def _read_updates(push_log: Path) -> list[tuple[str, str, str]]:
    if not push_log.exists():
        return []
    updates = []
    for line in push_log.read_text().splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            updates.append((parts[0], parts[1], parts[2]))
    return updates
