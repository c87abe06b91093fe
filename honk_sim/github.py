"""A GitHub simulator on 127.0.0.1: REST API, git smart HTTP, signed webhook deliveries.

Honk is tested offline against it, and `honk demo` runs on it. The server is Starlette on
uvicorn in a background thread; the Python API below is synchronous and thread-safe. A
user action (open_issue, label_issue, comment, ...) changes state the way GitHub does and
delivers the webhook GitHub would send before it returns; what the App does through the API
comes back as deliveries sent in the background, in order.

Faults: `add_faults` (or `POST /_sim/faults`) sets rules that answer an error status, drop
the connection, hold a request, slow it, or act and then lose the answer; see
`honk_sim.faults` for the rules' shape. `fail_next` and `rate_limit_next` are shorthands.

    with GitHubSim(tmp_path) as sim:
        app = sim.create_app(webhook_url="http://127.0.0.1:8000/api/github/webhooks")
        sim.add_user("alice")
        sim.create_repo("alice/widgets", {"README.md": "# widgets\\n"})
        sim.install(["alice/widgets"])
        number = sim.open_issue("alice/widgets", title="Fix it", body="...", author="alice")
        delivery = sim.label_issue("alice/widgets", number, "honk", sender="alice")
"""

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from honk_sim import github_git as git
from honk_sim.faults import ADMIN_PATH, FaultRule, FaultRuleError, Faults
from honk_sim.git_http import GitHttp, install_hooks
from honk_sim.github_api import ApiRoutes
from honk_sim.github_ops import SimOps
from honk_sim.github_shapes import Shapes
from honk_sim.github_state import (
    DEFAULT_APP_EVENTS,
    DEFAULT_APP_PERMISSIONS,
    DEFAULT_LABELS,
    App,
    Delivery,
    Installation,
    Issue,
    Label,
    Repo,
    SimState,
    TimelineEntry,
    User,
    utc_now,
)
from honk_sim.github_web import WebRoutes
from honk_sim.github_webhooks import WebhookDispatcher

log = structlog.get_logger()

API_PREFIX = "/api/v3"
SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID "
    "SIM:0000:000000:000000:00000000."
)

__all__ = ["Delivery", "GitHubSim", "SimApp", "TimelineEntry"]


@dataclass(frozen=True)
class SimApp:
    """What GitHub's manifest flow would give back for a new App."""

    id: int
    slug: str
    name: str
    private_key_pem: str
    webhook_secret: str
    client_id: str
    client_secret: str

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"


_CONTENT_CREATING = rf"^{API_PREFIX}/(?!app-manifests/)(?!.*/access_tokens$)"


class _Observer:
    """Outermost ASGI layer: the fault admin endpoint, injected faults (see
    `honk_sim.faults`), then the timeline of every request."""

    def __init__(self, app: ASGIApp, state: SimState) -> None:
        self.app = app
        self.state = state
        self.faults = Faults()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == ADMIN_PATH:
            await self._admin(scope, receive, send)
            return
        kind: Literal["api", "git", "web"] = (
            "api" if path.startswith(API_PREFIX + "/") else "git" if ".git/" in path else "web"
        )
        status = 0
        started = time.monotonic()

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        fault = self.faults.take(method, path)
        try:
            if fault is None:
                await self.app(scope, receive, observed_send)
            else:
                await self._faulty(fault, kind, scope, receive, observed_send)
        finally:
            notes = scope.get("state", {})
            detail = notes.get("detail", "")
            if fault is not None:
                detail = f"fault {fault.action} {detail}".strip()
            with self.state.lock:
                self.state.timeline.append(
                    TimelineEntry(started, kind, method, path, status, actor=notes.get("actor"),
                                  detail=detail)
                )

    async def _faulty(
        self, fault: FaultRule, kind: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if fault.action == "slow":
            await asyncio.sleep(fault.seconds)
            await self.app(scope, receive, send)
        elif fault.action == "status":
            await self._fault_response(fault, kind)(scope, receive, send)
        elif fault.action == "hold":
            await asyncio.sleep(fault.seconds)
            await _drop(send)
        elif fault.action == "reset":
            await _drop(send)
        else:  # lose-after-acting: GitHub does the work, the answer never arrives
            async def discard(message: Message) -> None:
                pass

            await self.app(scope, receive, discard)
            if fault.status is None:
                await _drop(send)
            else:
                await self._fault_response(fault, kind)(scope, receive, send)

    @staticmethod
    def _fault_response(fault: FaultRule, kind: str) -> ASGIApp:
        status = fault.status or 502
        headers = {"retry-after": str(fault.retry_after)} if fault.retry_after is not None else {}
        if status == 403 and fault.retry_after is not None:
            return JSONResponse(
                {
                    "message": SECONDARY_RATE_LIMIT_MESSAGE,
                    "documentation_url": "https://docs.github.com/free-pro-team@latest/rest/"
                    "overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                    "status": "403",
                },
                status_code=403,
                headers=headers,
            )
        if kind == "api":
            message = fault.message or {401: "Bad credentials"}.get(status, "Server Error")
            return JSONResponse(
                {"message": message, "status": str(status)}, status_code=status, headers=headers
            )
        return PlainTextResponse("Server Error\n", status_code=status, headers=headers)

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method == "DELETE":
            self.faults.clear()
        elif request.method == "POST":
            try:
                rules = json.loads(await request.body())
                if not isinstance(rules, list):
                    rules = [rules]
                self.faults.add(rules)
            except (ValueError, FaultRuleError) as error:
                await JSONResponse({"message": str(error)}, status_code=400)(scope, receive, send)
                return
        response = JSONResponse([rule.to_json() for rule in self.faults.rules()])
        await response(scope, receive, send)


async def _drop(send: Send) -> None:
    """Lose the answer: start one, then fail, so the server closes the connection mid-way
    and the client sees the connection end without a whole answer."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"1000")]})
    raise ConnectionAbortedError("fault injected: the answer is lost")


class GitHubSim:
    """GitHub on loopback, for tests and `honk demo`. See the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.token_lifetime = timedelta(hours=1)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        port = self._socket.getsockname()[1]
        self.web_url = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.web_url}{API_PREFIX}"
        self._state = SimState(root)
        self._repos_root = root / "repos"
        self._hooks_dir = root / "hooks"
        install_hooks(self._hooks_dir)
        self._dispatcher = WebhookDispatcher(self._state)
        self._shapes = Shapes(self._state, api_url=self.api_url, web_url=self.web_url)
        self._ops = SimOps(self._state, self._shapes, self._dispatcher)
        self._web = WebRoutes(self._state)
        api = ApiRoutes(
            self._ops,
            token_lifetime=lambda: self.token_lifetime,
            register_app=self._app_from_manifest,
        )
        git_http = GitHttp(self._state, repos_root=self._repos_root, on_push=self._pushed)
        starlette = Starlette(
            routes=[
                Mount(API_PREFIX, routes=api.routes()),
                *self._web.routes(),
                Route("/{owner}/{repo}/{rest:path}", git_http, methods=["GET", "POST"]),
            ]
        )
        self._observer = _Observer(starlette, self._state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> None:
        config = uvicorn.Config(
            self._observer,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._dispatcher.start()
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="github-sim",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the GitHub simulator did not start")
            time.sleep(0.01)
        log.info("github_sim.started", api_url=self.api_url)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._dispatcher.stop()
        self._socket.close()
        self._server = self._thread = None

    def __enter__(self) -> "GitHubSim":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # setup: apps, people, repositories, installations

    def create_app(
        self,
        *,
        slug: str = "honk",
        webhook_url: str | None = None,
        permissions: dict[str, str] | None = None,
        events: Sequence[str] | None = None,
        owner: str = "sim-admin",
    ) -> SimApp:
        """A new App with its own RSA key; by default without the `workflows` permission."""
        app = self._ops.register_app(
            slug=slug,
            name=slug.capitalize(),
            owner=owner,
            webhook_url=webhook_url,
            permissions=dict(permissions or DEFAULT_APP_PERMISSIONS),
            events=list(events or DEFAULT_APP_EVENTS),
        )
        return self._sim_app(app.id)

    def manifest_code(self, manifest: dict[str, Any], *, owner: str = "sim-admin") -> str:
        """A one-time code, as GitHub's redirect after the manifest form would carry."""
        return self._web.create_manifest_code(manifest, owner=owner)

    def apps(self) -> list[SimApp]:
        with self._state.lock:
            return [self._sim_app(app_id) for app_id in self._state.apps]

    def set_webhook_url(self, url: str, *, app_id: int | None = None) -> None:
        """Point the App's webhook (the most recently created App by default) at `url`."""
        with self._state.lock:
            self._app(app_id).webhook_url = url

    def add_user(self, login: str, *, type: Literal["User", "Bot"] = "User") -> str:
        """A user (or a bot account) and its personal token, for git and API calls."""
        user = self._ops.add_user(login, type=type, with_token=True)
        assert user.token is not None
        return user.token

    def oauth_login_as(self, login: str | None) -> None:
        """Who is signed in when an App sends a browser to /login/oauth/authorize."""
        with self._state.lock:
            self._state.oauth_login = login

    def create_repo(
        self,
        full_name: str,
        files: dict[str, str | bytes],
        *,
        default_branch: str = "main",
        private: bool = True,
    ) -> None:
        """A repository whose default branch holds `files` in one commit by the owner."""
        owner, name = full_name.split("/")
        owner_user = self._ops.add_user(owner, type="User", with_token=True)
        git_dir = self._repos_root / owner / f"{name}.git"
        with self._state.lock:
            if self._state.repo(full_name) is not None:
                raise ValueError(f"{full_name} already exists")
            moment = utc_now()
            repo = Repo(
                id=self._state.next_id(),
                owner=owner,
                name=name,
                private=private,
                default_branch=default_branch,
                git_dir=git_dir,
                created_at=moment,
                pushed_at=moment,
            )
            for label_name, color, description in DEFAULT_LABELS:
                repo.labels[label_name] = Label(
                    self._state.next_id(), label_name, color, description, default=True
                )
            self._state.repos[full_name.lower()] = repo
        git.init_bare(git_dir, hooks_dir=self._hooks_dir, default_branch=default_branch)
        git.commit_files(
            git_dir,
            branch=default_branch,
            files=dict(files),
            author_name=owner,
            author_email=owner_user.email,
            message="Initial commit",
            parent=None,
            when=moment,
        )

    def fork_repo(self, source: str, *, owner: str) -> str:
        """A fork of `source` owned by `owner`; returns the fork's full name."""
        parent = self._repo(source)
        self._ops.add_user(owner, type="User", with_token=True)
        full_name = f"{owner}/{parent.name}"
        git_dir = self._repos_root / owner / f"{parent.name}.git"
        git.init_bare(git_dir, hooks_dir=self._hooks_dir, default_branch=parent.default_branch)
        git.run_git(git_dir, "fetch", "--quiet", str(parent.git_dir), "+refs/heads/*:refs/heads/*")
        with self._state.lock:
            moment = utc_now()
            self._state.repos[full_name.lower()] = Repo(
                id=self._state.next_id(),
                owner=owner,
                name=parent.name,
                private=parent.private,
                default_branch=parent.default_branch,
                git_dir=git_dir,
                created_at=moment,
                pushed_at=moment,
                fork_of=parent.full_name,
                labels=dict(parent.labels),
            )
        return full_name

    def set_permission(
        self,
        repo: str,
        login: str,
        permission: Literal["admin", "maintain", "write", "triage", "read", "none"],
    ) -> None:
        found = self._repo(repo)
        user = self._user(login)
        with self._state.lock:
            if permission == "none":
                found.roles.pop(user.login.lower(), None)
            else:
                found.roles[user.login.lower()] = permission

    def install(
        self, repos: Sequence[str], *, account: str | None = None, app_id: int | None = None
    ) -> int:
        """Install the App on `repos`; sends installation.created. Returns the id."""
        with self._state.lock:
            app = self._app(app_id)
            found = [self._repo(name) for name in repos]
            account_login = account or (found[0].owner if found else app.owner)
            installation = Installation(
                id=self._state.next_id(),
                app_id=app.id,
                account=account_login,
                repos=[r.full_name for r in found],
                permissions=dict(app.permissions),
                events=list(app.events),
                created_at=utc_now(),
            )
            self._state.installations[installation.id] = installation
            sender = self._state.user(account_login)
            assert sender is not None
            payload = {
                "action": "created",
                "installation": self._shapes.installation_json(installation),
                "repositories": [self._shapes.repo_brief_json(r) for r in found],
                "requester": None,
                "sender": self._shapes.user_json(sender),
            }
        self._dispatcher.deliver_now(app, "installation", payload)
        return installation.id

    def add_repos_to_installation(self, installation_id: int, repos: Sequence[str]) -> None:
        """Add repositories to an installation; sends installation_repositories.added."""
        with self._state.lock:
            installation = self._state.installations[installation_id]
            app = self._state.apps[installation.app_id]
            added = [self._repo(name) for name in repos]
            installation.repos.extend(
                r.full_name for r in added if r.full_name not in installation.repos
            )
            sender = self._state.user(installation.account)
            assert sender is not None
            payload = {
                "action": "added",
                "installation": self._shapes.installation_json(installation),
                "repository_selection": "selected",
                "repositories_added": [self._shapes.repo_brief_json(r) for r in added],
                "repositories_removed": [],
                "requester": None,
                "sender": self._shapes.user_json(sender),
            }
        self._dispatcher.deliver_now(app, "installation_repositories", payload)

    # user actions: state changes, then the webhook, delivered before returning

    def open_issue(self, repo: str, *, title: str, body: str, author: str) -> int:
        found, user = self._repo(repo), self._user(author)
        issue = self._ops.open_issue(found, title=title, body=body, author=user.login)
        self._ops.emit(
            found,
            "issues",
            user.login,
            lambda: {
                "action": "opened",
                "issue": self._shapes.issue_json(issue),
            },
            now=True,
        )
        return issue.number

    def label_issue(self, repo: str, number: int, label: str, *, sender: str) -> Delivery | None:
        """Apply a label (created if missing); issues.labeled, or pull_request.labeled."""
        found, issue, user = self._repo(repo), self._issue(repo, number), self._user(sender)
        applied = self._ops.label(found, issue, label)
        with self._state.lock:
            label_shape = self._shapes.label_json(found, applied)
        if issue.pull is not None:
            return self._ops.emit(
                found,
                "pull_request",
                user.login,
                self._ops.pull_event(issue, "labeled", label=label_shape),
                now=True,
            )
        return self._ops.emit(
            found,
            "issues",
            user.login,
            lambda: {
                "action": "labeled",
                "issue": self._shapes.issue_json(issue),
                "label": label_shape,
            },
            now=True,
        )

    def edit_issue(
        self, repo: str, number: int, *, author: str, title: str | None = None,
        body: str | None = None,
    ) -> Delivery | None:
        """Edit an issue's title or body, as its author or someone with triage access or
        more may (GitHub's rule); issues.edited with the old values in `changes`."""
        found, issue, user = self._repo(repo), self._issue(repo, number), self._user(author)
        role = found.roles.get(user.login.lower())
        if user.login != issue.author and role not in ("triage", "write", "maintain", "admin"):
            raise PermissionError(f"{author} may not edit {repo}#{number}")
        changes: dict[str, Any] = {}
        with self._state.lock:
            if title is not None and title != issue.title:
                changes["title"], issue.title = {"from": issue.title}, title
            if body is not None and body != issue.body:
                changes["body"], issue.body = {"from": issue.body}, body
            issue.updated_at = utc_now()
        return self._ops.emit(
            found,
            "issues",
            user.login,
            lambda: {"action": "edited", "issue": self._shapes.issue_json(issue),
                     "changes": changes},
            now=True,
        )

    def comment(self, repo: str, number: int, body: str, *, author: str) -> Delivery | None:
        """A comment on an issue or a pull request's conversation: issue_comment.created."""
        found, issue, user = self._repo(repo), self._issue(repo, number), self._user(author)
        comment = self._ops.comment(found, issue, body, author=user.login, app_id=None)
        return self._ops.emit(
            found,
            "issue_comment",
            user.login,
            lambda: {
                "action": "created",
                "issue": self._shapes.issue_json(issue),
                "comment": self._shapes.issue_comment_json(comment),
            },
            now=True,
        )

    def open_pull(
        self,
        repo: str,
        *,
        head: str,
        base: str,
        title: str,
        body: str,
        author: str,
        head_repo: str | None = None,
    ) -> int:
        """A pull request from `head` (in `head_repo`, a fork, if given); pull_request.opened."""
        found, user = self._repo(repo), self._user(author)
        source = self._repo(head_repo) if head_repo else found
        issue = self._ops.open_pull(
            found,
            head_repo=source,
            head_ref=head,
            base_ref=base,
            title=title,
            body=body,
            author=user.login,
        )
        self._ops.emit(
            found, "pull_request", user.login, self._ops.pull_event(issue, "opened"), now=True
        )
        return issue.number

    def push_files(
        self, repo: str, branch: str, files: dict[str, str], *, author: str, message: str,
        links: dict[str, str] | None = None,
    ) -> str:
        """A user's commit on `branch` (made from the default branch if new), with `links`
        as symlinks (path: target); sends push."""
        found, user = self._repo(repo), self._user(author)
        before = git.rev_parse(found.git_dir, f"refs/heads/{branch}")
        parent = before or git.rev_parse(found.git_dir, f"refs/heads/{found.default_branch}")
        sha = git.commit_files(
            found.git_dir,
            branch=branch,
            files=dict(files),
            links=dict(links or {}),
            author_name=user.login,
            author_email=user.email,
            message=message,
            parent=parent,
            when=utc_now(),
        )
        self._ops.pushed(
            found,
            [(before or git.ZERO_SHA, sha, f"refs/heads/{branch}")],
            pusher=user.login,
            now=True,
        )
        return sha

    def submit_review(
        self,
        repo: str,
        number: int,
        *,
        author: str,
        state: Literal["APPROVE", "REQUEST_CHANGES", "COMMENT"],
        body: str,
        comments: Sequence[dict[str, Any]] = (),
    ) -> Delivery | None:
        """A review with inline comments ({path, line, body}; line on the new side).

        Sends pull_request_review.submitted (returned) and pull_request_review_comment.created
        for each comment.
        """
        found, issue, user = self._repo(repo), self._issue(repo, number), self._user(author)
        if issue.pull is None:
            raise ValueError(f"{repo}#{number} is not a pull request")
        review, created = self._ops.review(
            found, issue, author=user.login, state=state, body=body, comments=comments
        )
        return self._ops.review_events(found, issue, review, created, sender=user.login, now=True)

    def redeliver(self, delivery_id: str) -> Delivery:
        """Send a delivery again with the same X-GitHub-Delivery, as GitHub's Redeliver."""
        return self._dispatcher.redeliver(delivery_id)

    # inspection

    def issue(self, repo: str, number: int) -> dict[str, Any]:
        issue = self._issue(repo, number)
        with self._state.lock:
            return self._shapes.issue_json(issue)

    def comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        """Issue comments, oldest first, each with "history": its earlier bodies."""
        found = self._repo(repo)
        with self._state.lock:
            return [
                {**self._shapes.issue_comment_json(c), "history": list(c.history)}
                for c in sorted(self._state.issue_comments.values(), key=lambda c: c.id)
                if c.repo == found.full_name and c.number == number
            ]

    def reactions(
        self, repo: str, number: int, *, comment_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Reactions on the issue, or on one of its issue or review comments."""
        found = self._repo(repo)
        with self._state.lock:
            if comment_id is None:
                targets = {("issue", found.full_name, number)}
            else:
                targets = {("issue_comment", "", comment_id), ("review_comment", "", comment_id)}
            return [
                self._shapes.reaction_json(r) for r in self._state.reactions if r.target in targets
            ]

    def pulls(self, repo: str) -> list[dict[str, Any]]:
        found = self._repo(repo)
        with self._state.lock:
            return [
                self._shapes.pull_json(i)
                for i in sorted(self._state.issues.values(), key=lambda i: i.number)
                if i.repo == found.full_name and i.pull is not None
            ]

    def review_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        found = self._repo(repo)
        with self._state.lock:
            return [
                self._shapes.review_comment_json(c)
                for c in sorted(self._state.review_comments.values(), key=lambda c: c.id)
                if c.repo == found.full_name and c.number == number
            ]

    def reviews(self, repo: str, number: int) -> list[dict[str, Any]]:
        found = self._repo(repo)
        with self._state.lock:
            return [
                self._shapes.review_json(r)
                for r in sorted(self._state.reviews.values(), key=lambda r: r.id)
                if r.repo == found.full_name and r.number == number
            ]

    def requested_reviewers(self, repo: str, number: int) -> list[str]:
        issue = self._issue(repo, number)
        with self._state.lock:
            return list(issue.pull.requested_reviewers) if issue.pull else []

    def branches(self, repo: str) -> dict[str, str]:
        return git.branches(self._repo(repo).git_dir)

    def git_dir(self, repo: str) -> Path:
        return self._repo(repo).git_dir

    def labels(self, repo: str) -> list[dict[str, Any]]:
        found = self._repo(repo)
        with self._state.lock:
            return [self._shapes.label_json(found, label) for label in found.labels.values()]

    @property
    def deliveries(self) -> list[Delivery]:
        with self._state.lock:
            return list(self._state.deliveries)

    @property
    def timeline(self) -> list[TimelineEntry]:
        with self._state.lock:
            return sorted(self._state.timeline, key=lambda entry: entry.at)

    def wait_for_deliveries(self, timeout: float = 10.0) -> None:
        """Wait until every background delivery (caused by the App's calls) was attempted."""
        if not self._dispatcher.wait_idle(timeout):
            raise TimeoutError("webhook deliveries still pending")

    def wait_for_delivery(
        self,
        event: str,
        action: str | None = None,
        *,
        sender: str | None = None,
        since: int = 0,
        timeout: float = 10.0,
    ) -> Delivery:
        """The first delivery (from index `since` of `deliveries`) matching; waits for it."""
        deadline = time.monotonic() + timeout
        while True:
            for delivery in self.deliveries[since:]:
                if (
                    delivery.event == event
                    and action in (None, delivery.action)
                    and (sender in (None, delivery.sender))
                ):
                    return delivery
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event}.{action} delivery within {timeout}s")
            time.sleep(0.02)

    # fault injection

    def add_faults(self, rules: Sequence[dict[str, Any]]) -> None:
        """Fault rules (see `honk_sim.faults`), also settable over HTTP at /_sim/faults."""
        self._observer.faults.add(rules)

    def clear_faults(self) -> None:
        self._observer.faults.clear()

    def fail_next(self, count: int, *, status: int = 502, path_contains: str = "") -> None:
        """The next `count` requests whose path contains `path_contains` fail with `status`."""
        self.add_faults([{"action": "status", "status": status, "count": count,
                          "path": re.escape(path_contains)}])

    def rate_limit_next(self, count: int, *, retry_after: int = 1) -> None:
        """The next `count` content-creating API calls (POST) hit a secondary rate limit."""
        self.add_faults([{"action": "status", "status": 403, "retry_after": retry_after,
                          "count": count, "method": "POST", "path": _CONTENT_CREATING}])

    # internals

    def _pushed(self, repo: Repo, updates: Sequence[tuple[str, str, str]], pusher: str) -> None:
        self._ops.pushed(repo, updates, pusher=pusher, now=False)

    def _app_from_manifest(self, manifest: dict[str, Any]) -> App:
        hook = manifest.get("hook_attributes") or {}
        name = str(manifest.get("name") or "honk")
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "app"
        callbacks = manifest.get("callback_urls") or []
        app = self._ops.register_app(
            slug=slug,
            name=name,
            owner=str(manifest.get("_owner") or "sim-admin"),
            webhook_url=hook.get("url") if hook.get("active", True) else None,
            permissions=dict(manifest.get("default_permissions") or DEFAULT_APP_PERMISSIONS),
            events=list(manifest.get("default_events") or DEFAULT_APP_EVENTS),
            callback_url=callbacks[0] if callbacks else None,
            description=str(manifest.get("description") or ""),
            external_url=str(manifest.get("url") or ""),
        )
        self._dispatcher.deliver_later(app, "ping", self._ping_payload(app))
        return app

    def _ping_payload(self, app: App) -> dict[str, Any]:
        """What GitHub sends to a new App's webhook right after the manifest flow."""
        with self._state.lock:
            created = self._shapes.app_json(app)["created_at"]
            return {
                "zen": "Keep it logically awesome.",
                "hook_id": app.hook_id,
                "hook": {
                    "type": "App",
                    "id": app.hook_id,
                    "name": "web",
                    "active": True,
                    "events": list(app.events),
                    "config": {"content_type": "json", "insecure_ssl": "0",
                               "url": app.webhook_url},
                    "updated_at": created,
                    "created_at": created,
                    "app_id": app.id,
                    "deliveries_url": f"{self.api_url}/app/hook/deliveries",
                },
                "sender": self._shapes.login_json(app.owner),
            }

    def _sim_app(self, app_id: int) -> SimApp:
        app = self._state.apps[app_id]
        return SimApp(
            app.id,
            app.slug,
            app.name,
            app.private_key_pem,
            app.webhook_secret,
            app.client_id,
            app.client_secret,
        )

    def _app(self, app_id: int | None) -> App:
        with self._state.lock:
            if not self._state.apps:
                raise ValueError("no App yet: call create_app first")
            if app_id is None:
                return self._state.apps[max(self._state.apps)]
            return self._state.apps[app_id]

    def _repo(self, full_name: str) -> Repo:
        found = self._state.repo(full_name)
        if found is None:
            raise KeyError(f"no repository {full_name}")
        return found

    def _issue(self, repo: str, number: int) -> Issue:
        found = self._state.issue(repo, number)
        if found is None:
            raise KeyError(f"no issue {repo}#{number}")
        return found

    def _user(self, login: str) -> User:
        found = self._state.user(login)
        if found is None:
            raise KeyError(f"no user {login}: call add_user first")
        return found
