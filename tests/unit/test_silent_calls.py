"""Nothing Honk calls may hang: a GitHub that accepts and never answers, a git remote that
never answers. Both are a real TCP listener on loopback that accepts connections, reads
nothing and sends nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from honk_app.github.client import GitHubApp, GitHubError
from honk_app.redact import Redactor
from honk_app.settings import load_settings
from honk_app.workspace.checkout import WorkspaceManager
from honk_app.workspace.git import GitRemote, GitTimeout
from honk_sim.loopback import LoopbackServer
from tests.unit.test_workspace import Upstream, remote_of

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """host:port of a server that accepts every connection and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # so that the accepting thread sees `closing`
    accepted: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        closing.set()
        thread.join(timeout=5)
        listener.close()
        for connection in accepted:
            connection.close()


def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


async def test_a_github_call_that_never_answers_ends_at_its_deadline(tmp_path: Path) -> None:
    with silent_server() as address:
        settings = load_settings({
            "HONK_DATA_DIR": str(tmp_path), "APP_ID": "1", "PRIVATE_KEY": private_key_pem(),
            "GITHUB_API_URL": f"http://{address}", "HONK_GITHUB_TIMEOUT_SECONDS": "1",
        })
        github = GitHubApp(settings, Redactor([]))
        started = time.monotonic()
        # Before: githubkit's timeout was not enforced with its HTTP cache on; a call
        # waited 30 s, and more, per attempt. The outer bound only keeps the test short.
        async with asyncio.timeout(20):
            with pytest.raises(GitHubError) as raised:
                await github.installation_token(1, "octo/calculator")
        waited = time.monotonic() - started
    assert str(raised.value) == (
        "No installation token for octo/calculator: GitHub did not answer in time."
    )
    assert waited < 10, f"the call took {waited:.1f} s with a 1 s deadline"


def _helpers_talking_to(address: str) -> list[str]:
    """Command lines of live processes whose arguments name this address (git's helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if address in cmdline:
                found.append(cmdline)
    return found


async def test_a_push_to_a_remote_that_never_answers_is_stopped_at_its_deadline(
    tmp_path: Path,
) -> None:
    upstream = Upstream(tmp_path / "upstream")
    manager = WorkspaceManager(tmp_path / "data", remote_timeout_seconds=1)
    async with manager.checkout(
        "owner/repo", remote_of(upstream), base_branch="main", branch="honk/1-fix"
    ) as workspace:
        (workspace.path / "fix.txt").write_text("fixed\n")
        await workspace.commit("Fix", author_name="honk[bot]",
                               author_email="honk[bot]@users.noreply.github.com")
        with silent_server() as address:
            remote = GitRemote(f"http://{address}/owner/repo.git", "ghs_" + "x" * 36)
            started = time.monotonic()
            async with asyncio.timeout(60):  # before: git push waited for good
                with pytest.raises(GitTimeout) as raised:
                    await workspace.push(remote)
            waited = time.monotonic() - started
            leftovers = _helpers_talking_to(address)
    assert str(raised.value) == (
        "git push timed out after 1 s (the remote did not answer in time) and was stopped"
    )
    assert "ghs_" not in str(raised.value) and address not in str(raised.value)
    assert waited < 10, f"the push took {waited:.1f} s with a 1 s deadline"
    assert leftovers == [], "git's HTTP helper outlived the push"


async def test_a_fetch_from_a_remote_that_never_answers_is_stopped_at_its_deadline(
    tmp_path: Path,
) -> None:
    manager = WorkspaceManager(tmp_path / "data", remote_timeout_seconds=1)
    with silent_server() as address:
        remote = GitRemote(f"http://{address}/owner/repo.git", "ghs_" + "y" * 36)
        async with asyncio.timeout(60):
            with pytest.raises(GitTimeout, match=r"^git fetch timed out after 1 s"):
                async with manager.checkout(
                    "owner/repo", remote, base_branch="main", branch="honk/1-fix"
                ):
                    pass
        assert _helpers_talking_to(address) == []


class HoldingProxy:
    """A loopback proxy in front of the simulated GitHub that never answers the requests
    `hold` picks (it forwards the others): GitHub accepting a call and going silent."""

    def __init__(self, hold: Callable[[Request], bool]) -> None:
        self.upstream = ""
        self.held: list[str] = []
        self._hold = hold
        self._released = threading.Event()
        self.server = LoopbackServer(Starlette(routes=[
            Route("/{path:path}", self._forward, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
        ]), name="holding-proxy")

    async def _forward(self, request: Request) -> Response:
        if self._hold(request):
            self.held.append(f"{request.method} {request.url.path}")
            while not self._released.is_set():  # until the test ends: never, for Honk
                await asyncio.sleep(0.05)
            return Response(status_code=504)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "accept-encoding")}
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.request(
                request.method, self.upstream + request.url.path, params=request.query_params,
                headers=headers, content=await request.body(),
            )
        kept = {k: v for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")}
        content = answer.content
        if answer.headers.get("content-type", "").startswith("application/json"):
            # Links to the simulator (clone URLs among them) lead through the proxy too.
            content = content.replace(self.upstream.encode(), self.server.url.encode())
        return Response(content, status_code=answer.status_code, headers=kept)

    def __enter__(self) -> HoldingProxy:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self.server.stop()


def _handed_back_after_the_first_attempt(honk: Any) -> dict[str, Any]:
    return honk.wait_for(lambda runs: runs[-1]["kind"] == "task" and runs[-1]["attempts"] == 1
                         and runs[-1]["state"] == "queued" and bool(runs[-1]["detail"]),
                         timeout=120)[-1]


def _sample(honk: Any, proxy: HoldingProxy) -> int:
    """The demo's repository and a labelled issue, through the proxy; the issue's number."""
    from honk_sim.demo import ISSUE_BODY, ISSUE_TITLE, MAINTAINER, REPO, SAMPLE_FILES

    sim = honk.github
    proxy.upstream = sim.web_url
    sim.add_user(MAINTAINER)
    sim.create_repo(REPO, SAMPLE_FILES)
    sim.set_permission(REPO, MAINTAINER, "write")
    sim.install([REPO])
    number: int = sim.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, author=MAINTAINER)
    assert sim.label_issue(REPO, number, "honk", sender=MAINTAINER).status == 202
    return number


def test_a_github_call_that_never_answers_hands_the_run_back_saying_so(tmp_path: Path) -> None:
    from honk_app.run.status import MARKER
    from honk_sim.demo import REPO, demo_script
    from honk_sim.github import API_PREFIX
    from honk_sim.harness import offline_honk

    def opening_the_pull_request(request: Request) -> bool:
        return request.method == "POST" and request.url.path.endswith(f"/{REPO}/pulls")

    # Before, the run stayed on "opening the pull request" with a live lease for good.
    with HoldingProxy(opening_the_pull_request) as proxy, offline_honk(
        tmp_path, script=demo_script(),
        env={"GITHUB_API_URL": proxy.server.url + API_PREFIX, "HONK_GITHUB_TIMEOUT_SECONDS": "1",
             "HONK_RETRY_SECONDS": "3600"},
    ) as honk:
        number = _sample(honk, proxy)
        run = _handed_back_after_the_first_attempt(honk)
        [status] = [c for c in honk.github.comments(REPO, number) if MARKER in c["body"]]
    assert proxy.held and set(proxy.held) == {f"POST {API_PREFIX}/repos/{REPO}/pulls"}
    assert run["worker_id"] is None and run["detail"] == "GitHub did not answer in time."
    assert "GitHub did not answer in time; Honk tries again in 3600 s" in status["body"]


def test_a_git_push_that_never_answers_hands_the_run_back_saying_so(tmp_path: Path) -> None:
    from honk_app.run.status import MARKER
    from honk_sim.demo import REPO, demo_script
    from honk_sim.github import API_PREFIX
    from honk_sim.harness import offline_honk

    def pushing(request: Request) -> bool:
        return request.url.path.endswith("/git-receive-pack")

    # Before, the run stayed on "pushing" with a live lease for good.
    with HoldingProxy(pushing) as proxy, offline_honk(
        tmp_path, script=demo_script(),
        env={"GITHUB_API_URL": proxy.server.url + API_PREFIX, "HONK_GIT_TIMEOUT_SECONDS": "1",
             "HONK_RETRY_SECONDS": "3600"},
    ) as honk:
        number = _sample(honk, proxy)
        run = _handed_back_after_the_first_attempt(honk)
        [status] = [c for c in honk.github.comments(REPO, number) if MARKER in c["body"]]
        branches = honk.github.branches(REPO)
    assert proxy.held and set(proxy.held) == {f"POST /{REPO}.git/git-receive-pack"}
    assert run["worker_id"] is None and run["pushed_sha"] is None
    assert run["detail"] == "The git host did not answer Honk's fetch or push."
    assert "did not answer Honk's fetch or push; Honk tries again in 3600 s" in status["body"]
    assert not any(name.startswith("honk/") for name in branches)
