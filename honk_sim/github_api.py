"""The REST API subset Honk calls, under the simulator's `/api/v3` (GHES-style) prefix.

Each handler is a plain synchronous function of a `Call` (the path parameters, the query,
the JSON body and the resolved caller); the adapter in `ApiRoutes._endpoint` reads the
body, runs the handler off the event loop (handlers run git) and turns `ApiError` into
GitHub's error JSON.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import anyio.to_thread
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from honk_sim import github_git as git
from honk_sim.github_auth import (
    ApiError,
    Caller,
    caller_from_header,
    issue_installation_token,
    not_found,
    require_repo,
)
from honk_sim.github_ops import SimOps, check_body, validation_failed
from honk_sim.github_shapes import iso, role_flags
from honk_sim.github_state import App, Issue, Repo, utc_now

LEGACY_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}


@dataclass
class Call:
    request: Request
    params: dict[str, Any]
    query: QueryParams
    body: Any
    caller: Caller

    def field(self, name: str, kind: type, *, required: bool = True, default: Any = None) -> Any:
        value = self.body.get(name) if isinstance(self.body, dict) else None
        if value is None:
            if required:
                raise ApiError(422, f'Invalid request.\n\n"{name}" wasn\'t supplied.')
            return default
        if not isinstance(value, kind):
            raise ApiError(
                422, f"Invalid request.\n\nFor '{name}', {value!r} is not a {kind.__name__}."
            )
        return value

    @property
    def full_name(self) -> str:
        return f"{self.params['owner']}/{self.params['repo']}"


Handler = Callable[[Call], Response]


def answer(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=headers)


def error_response(error: ApiError) -> Response:
    data: dict[str, Any] = {
        "message": error.message,
        "documentation_url": error.documentation_url,
        "status": str(error.status),
    }
    if error.errors:
        data["errors"] = error.errors
    return JSONResponse(data, status_code=error.status, headers=error.headers)


def _summary(text: str, limit: int = 60) -> str:
    """The first line of a body, shortened: what the timeline shows of a call."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _conditional(request: Request, response: Response) -> Response:
    """GitHub's caching headers; a matching If-None-Match is answered 304 with no body.

    githubkit sends `Cache-Control: no-cache` and revalidates with the ETag, so this is the
    path its cached reads take, as on GitHub.
    """
    etag = 'W/"' + hashlib.sha256(response.body).hexdigest()[:32] + '"'
    caching = {
        "ETag": etag,
        "Cache-Control": "private, max-age=60, s-maxage=60",
        "Vary": "Accept, Authorization, Cookie, X-GitHub-OTP",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=caching)
    response.headers.update(caching)
    return response


class ApiRoutes:
    def __init__(
        self,
        ops: SimOps,
        *,
        token_lifetime: Callable[[], timedelta],
        register_app: Callable[[dict[str, Any]], App],
    ) -> None:
        self.ops = ops
        self.state = ops.state
        self.shapes = ops.shapes
        self.token_lifetime = token_lifetime
        self.register_app = register_app

    def routes(self) -> list[BaseRoute]:
        repo = "/repos/{owner}/{repo}"
        table: list[tuple[str, Handler, list[str]]] = [
            ("/app", self.get_app, ["GET"]),
            ("/app/installations/{installation_id:int}", self.get_installation, ["GET"]),
            ("/app/installations/{installation_id:int}/access_tokens", self.create_token, ["POST"]),
            ("/app-manifests/{code}/conversions", self.convert_manifest, ["POST"]),
            ("/installation/repositories", self.installation_repositories, ["GET"]),
            ("/user", self.get_user, ["GET"]),
            ("/user/installations", self.user_installations, ["GET"]),
            (
                "/user/installations/{installation_id:int}/repositories",
                self.user_installation_repositories,
                ["GET"],
            ),
            (repo, self.get_repo, ["GET"]),
            (f"{repo}/installation", self.get_repo_installation, ["GET"]),
            (f"{repo}/collaborators/{{username}}/permission", self.get_permission, ["GET"]),
            (f"{repo}/issues/comments/{{comment_id:int}}", self.issue_comment, ["GET", "PATCH"]),
            (
                f"{repo}/issues/comments/{{comment_id:int}}/reactions",
                self.react_issue_comment,
                ["POST"],
            ),
            (f"{repo}/issues/{{number:int}}", self.get_issue, ["GET"]),
            (f"{repo}/issues/{{number:int}}/comments", self.issue_comments, ["GET", "POST"]),
            (f"{repo}/issues/{{number:int}}/reactions", self.react_issue, ["POST"]),
            (f"{repo}/pulls", self.pulls, ["GET", "POST"]),
            (f"{repo}/pulls/comments/{{comment_id:int}}", self.get_review_comment, ["GET"]),
            (
                f"{repo}/pulls/comments/{{comment_id:int}}/reactions",
                self.react_review_comment,
                ["POST"],
            ),
            (f"{repo}/pulls/{{number:int}}", self.pull, ["GET", "PATCH"]),
            (f"{repo}/pulls/{{number:int}}/files", self.pull_files, ["GET"]),
            (
                f"{repo}/pulls/{{number:int}}/requested_reviewers",
                self.requested_reviewers,
                ["GET", "POST"],
            ),
            (f"{repo}/pulls/{{number:int}}/reviews", self.list_reviews, ["GET"]),
            (f"{repo}/pulls/{{number:int}}/reviews/{{review_id:int}}", self.get_review, ["GET"]),
            (
                f"{repo}/pulls/{{number:int}}/reviews/{{review_id:int}}/comments",
                self.review_comments_of_review,
                ["GET"],
            ),
            (f"{repo}/pulls/{{number:int}}/comments", self.pull_review_comments, ["GET"]),
            (
                f"{repo}/pulls/{{number:int}}/comments/{{comment_id:int}}/replies",
                self.reply,
                ["POST"],
            ),
            (f"{repo}/labels", self.create_label, ["POST"]),
            (f"{repo}/labels/{{name}}", self.get_label, ["GET"]),
        ]
        return [
            Route(path, self._endpoint(handler), methods=methods)
            for path, handler, methods in table
        ]

    def _endpoint(self, handler: Handler) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                return error_response(ApiError(400, "Problems parsing JSON"))
            return await anyio.to_thread.run_sync(self._run, handler, request, body)

        return endpoint

    def _run(self, handler: Handler, request: Request, body: Any) -> Response:
        try:
            with self.state.lock:
                caller = caller_from_header(
                    self.state, request.headers.get("authorization"), now=utc_now()
                )
            request.state.actor = caller.login or (caller.app.slug if caller.app else None)
            call = Call(request, dict(request.path_params), request.query_params, body, caller)
            response = handler(call)
        except ApiError as error:
            return error_response(error)
        if request.method == "GET" and response.status_code == 200:
            return _conditional(request, response)
        return response

    # helpers

    def _repo(
        self, call: Call, permission: str, level: Literal["read", "write"], user_role: str = "read"
    ) -> Repo:
        with self.state.lock:
            return require_repo(
                self.state,
                call.caller,
                call.full_name,
                permission=permission,
                level=level,
                user_role=user_role,
            )

    def _issue(self, call: Call, level: Literal["read", "write"]) -> tuple[Repo, Issue]:
        """An issue or pull request; either permission serves for a pull request's thread."""
        repo = self._repo(call, "metadata", "read")
        with self.state.lock:
            issue = self.state.issue(repo.full_name, int(call.params["number"]))
        if issue is None:
            raise not_found()
        kinds = ["issues"] + (["pull_requests"] if issue.pull else [])
        if not any(call.caller.can_use(kind, level) for kind in kinds):
            raise ApiError(403, "Resource not accessible by integration")
        return repo, issue

    def _pull(self, call: Call, level: Literal["read", "write"]) -> tuple[Repo, Issue]:
        repo = self._repo(call, "pull_requests", level)
        with self.state.lock:
            issue = self.state.issue(repo.full_name, int(call.params["number"]))
        if issue is None or issue.pull is None:
            raise not_found()
        return repo, issue

    def _actor(self, call: Call) -> str:
        if call.caller.login is None:
            raise ApiError(401, "Requires authentication")
        return call.caller.login

    def _app_caller(self, call: Call) -> App:
        if call.caller.kind != "app" or call.caller.app is None:
            raise ApiError(401, "A JSON web token could not be decoded")
        return call.caller.app

    def _page(self, call: Call, items: list[Any]) -> Response:
        try:
            per_page = min(max(int(call.query.get("per_page", 30)), 1), 100)
            page = max(int(call.query.get("page", 1)), 1)
        except ValueError as error:
            raise ApiError(422, "Invalid request.\n\npage and per_page are numbers.") from error
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []
        last = max((len(items) + per_page - 1) // per_page, 1)
        url = call.request.url
        if page < last:
            links.append(
                f'<{url.include_query_params(page=page + 1, per_page=per_page)}>; rel="next"'
            )
            links.append(f'<{url.include_query_params(page=last, per_page=per_page)}>; rel="last"')
        return answer(200, chunk, {"Link": ", ".join(links)} if links else None)

    def _installed_app(self, call: Call) -> int | None:
        if call.caller.kind == "installation" and call.caller.app:
            return call.caller.app.id
        return None

    # App endpoints (JWT)

    def get_app(self, call: Call) -> Response:
        app = self._app_caller(call)
        with self.state.lock:
            return answer(200, self.shapes.app_json(app))

    def get_installation(self, call: Call) -> Response:
        app = self._app_caller(call)
        with self.state.lock:
            installation = self.state.installations.get(call.params["installation_id"])
            if installation is None or installation.app_id != app.id:
                raise not_found()
            return answer(200, self.shapes.installation_json(installation))

    def get_repo_installation(self, call: Call) -> Response:
        app = self._app_caller(call)
        with self.state.lock:
            repo = self.state.repo(call.full_name)
            found = (
                next(
                    (i for i in self.state.installations_for(repo.full_name) if i.app_id == app.id),
                    None,
                )
                if repo
                else None
            )
            if found is None:
                raise not_found()
            return answer(200, self.shapes.installation_json(found))

    def create_token(self, call: Call) -> Response:
        app = self._app_caller(call)
        repositories = call.field("repositories", list, required=False)
        repository_ids = call.field("repository_ids", list, required=False)
        permissions = call.field("permissions", dict, required=False)
        with self.state.lock:
            if repository_ids is not None:
                by_id = {r.id: r.name for r in self.state.repos.values()}
                repositories = list(repositories or []) + [
                    by_id.get(int(i), f"#{i}") for i in repository_ids
                ]
            token = issue_installation_token(
                self.state,
                app=app,
                installation_id=call.params["installation_id"],
                repositories=repositories,
                permissions=permissions,
                expires_at=utc_now() + self.token_lifetime(),
            )
            data: dict[str, Any] = {
                "token": token.value,
                "expires_at": iso(token.expires_at),
                "permissions": token.permissions,
                "repository_selection": "selected",
            }
            if token.repos is not None:
                data["repositories"] = [
                    self.shapes.repo_json(repo)
                    for name in sorted(token.repos)
                    if (repo := self.state.repo(name)) is not None
                ]
        return answer(201, data)

    def convert_manifest(self, call: Call) -> Response:
        code = call.params["code"]
        with self.state.lock:
            manifest = self.state.manifest_codes.pop(code, None)
        if manifest is None:
            raise not_found()
        app = self.register_app(manifest)
        with self.state.lock:
            data = {
                **self.shapes.app_json(app),
                "client_secret": app.client_secret,
                "webhook_secret": app.webhook_secret,
                "pem": app.private_key_pem,
            }
        return answer(201, data)

    def installation_repositories(self, call: Call) -> Response:
        if call.caller.kind != "installation" or call.caller.token is None:
            raise ApiError(
                403,
                "You must authenticate with an installation access token in "
                "order to list repositories for an installation.",
            )
        token = call.caller.token
        with self.state.lock:
            assert token.installation_id is not None
            installation = self.state.installations[token.installation_id]
            names = [n for n in installation.repos if token.repos is None or n in token.repos]
            repos = [self.shapes.repo_json(r) for n in names if (r := self.state.repo(n))]
        return answer(
            200,
            {"total_count": len(repos), "repository_selection": "selected", "repositories": repos},
        )

    # users (OAuth sign-in of the runs page)

    def get_user(self, call: Call) -> Response:
        if call.caller.kind not in ("personal", "oauth") or call.caller.login is None:
            raise ApiError(401, "Requires authentication")
        with self.state.lock:
            user = self.state.user(call.caller.login)
            assert user is not None
            return answer(200, self.shapes.private_user_json(user))

    def user_installations(self, call: Call) -> Response:
        """The installations (of the token's App) with a repository the user can read."""
        if call.caller.kind not in ("personal", "oauth") or call.caller.login is None:
            raise ApiError(401, "Requires authentication")
        login, app = call.caller.login, call.caller.app
        with self.state.lock:
            found = [
                self.shapes.installation_json(installation)
                for installation in self.state.installations.values()
                if (app is None or installation.app_id == app.id)
                and any(
                    (repo := self.state.repo(name)) and self.state.role(repo, login) != "none"
                    for name in installation.repos
                )
            ]
        return answer(200, {"total_count": len(found), "installations": found})

    def user_installation_repositories(self, call: Call) -> Response:
        if call.caller.kind not in ("personal", "oauth") or call.caller.login is None:
            raise ApiError(401, "Requires authentication")
        login = call.caller.login
        with self.state.lock:
            installation = self.state.installations.get(call.params["installation_id"])
            if installation is None:
                raise not_found()
            visible = [
                repo
                for name in installation.repos
                if (repo := self.state.repo(name)) and self.state.role(repo, login) != "none"
            ]
            if not visible:
                raise not_found()
            repos = [self.shapes.repo_json(r, viewer=login) for r in visible]
        return answer(
            200,
            {"total_count": len(repos), "repository_selection": "selected", "repositories": repos},
        )

    # repositories

    def get_repo(self, call: Call) -> Response:
        repo = self._repo(call, "metadata", "read")
        viewer = call.caller.login if call.caller.kind in ("personal", "oauth") else None
        with self.state.lock:
            return answer(200, self.shapes.repo_json(repo, viewer=viewer))

    def get_permission(self, call: Call) -> Response:
        repo = self._repo(call, "metadata", "read")
        with self.state.lock:
            user = self.state.user(call.params["username"])
            if user is None:
                raise ApiError(404, f"{call.params['username']} is not a user")
            role = self.state.role(repo, user.login)
            collaborator = {
                **self.shapes.user_json(user),
                "permissions": role_flags(role),
                "role_name": role,
            }
            return answer(
                200,
                {
                    "permission": LEGACY_PERMISSION[role],
                    "role_name": role,
                    "user": collaborator,
                },
            )

    def get_label(self, call: Call) -> Response:
        repo = self._repo(call, "metadata", "read")
        with self.state.lock:
            label = repo.labels.get(call.params["name"].lower())
            if label is None:
                raise not_found()
            return answer(200, self.shapes.label_json(repo, label))

    def create_label(self, call: Call) -> Response:
        repo = self._repo(call, "issues", "write", user_role="triage")
        name = call.field("name", str)
        color = call.field("color", str, required=False, default="ededed")
        description = call.field("description", str, required=False)
        label = self.ops.create_label(repo, name=name, color=color, description=description)
        with self.state.lock:
            return answer(201, self.shapes.label_json(repo, label))

    # issues and their comments

    def get_issue(self, call: Call) -> Response:
        _, issue = self._issue(call, "read")
        with self.state.lock:
            return answer(200, self.shapes.issue_json(issue))

    def issue_comments(self, call: Call) -> Response:
        if call.request.method == "GET":
            repo, issue = self._issue(call, "read")
            with self.state.lock:
                items = [
                    self.shapes.issue_comment_json(c)
                    for c in sorted(self.state.issue_comments.values(), key=lambda c: c.id)
                    if c.repo == repo.full_name and c.number == issue.number
                ]
            return self._page(call, items)
        repo, issue = self._issue(call, "write")
        author = self._actor(call)
        comment = self.ops.comment(
            repo, issue, call.field("body", str), author=author, app_id=self._installed_app(call)
        )
        with self.state.lock:
            data = self.shapes.issue_comment_json(comment)
        self.ops.emit(
            repo,
            "issue_comment",
            author,
            lambda: {
                "action": "created",
                "issue": self.shapes.issue_json(issue),
                "comment": self.shapes.issue_comment_json(comment),
            },
            now=False,
        )
        return answer(201, data, {"Location": data["url"]})

    def _find_issue_comment(self, repo: Repo, comment_id: int) -> Any:
        comment = self.state.issue_comments.get(comment_id)
        if comment is None or comment.repo != repo.full_name:
            raise not_found()
        return comment

    def issue_comment(self, call: Call) -> Response:
        level: Literal["read", "write"] = "read" if call.request.method == "GET" else "write"
        repo = self._repo(call, "issues", level)
        with self.state.lock:
            comment = self._find_issue_comment(repo, call.params["comment_id"])
        if call.request.method == "GET":
            with self.state.lock:
                return answer(200, self.shapes.issue_comment_json(comment))
        actor = self._actor(call)
        if call.caller.kind != "installation" and comment.author != actor:
            self._repo(call, "issues", "write", user_role="write")
        body = call.field("body", str)
        call.request.state.detail = _summary(body)
        previous = self.ops.edit_comment(comment, body)
        with self.state.lock:
            issue = self.state.issue(repo.full_name, comment.number)
            assert issue is not None
            data = self.shapes.issue_comment_json(comment)
        self.ops.emit(
            repo,
            "issue_comment",
            actor,
            lambda: {
                "action": "edited",
                "changes": {"body": {"from": previous}},
                "issue": self.shapes.issue_json(issue),
                "comment": self.shapes.issue_comment_json(comment),
            },
            now=False,
        )
        return answer(200, data)

    # reactions (GitHub sends no webhook for these)

    def _react(self, call: Call, target: Any) -> Response:
        content = call.field("content", str)
        call.request.state.detail = content
        reaction, created = self.ops.react(target, user=self._actor(call), content=content)
        with self.state.lock:
            return answer(201 if created else 200, self.shapes.reaction_json(reaction))

    def react_issue(self, call: Call) -> Response:
        repo, issue = self._issue(call, "write")
        return self._react(call, ("issue", repo.full_name, issue.number))

    def react_issue_comment(self, call: Call) -> Response:
        repo = self._repo(call, "issues", "write")
        with self.state.lock:
            comment = self._find_issue_comment(repo, call.params["comment_id"])
        return self._react(call, ("issue_comment", "", comment.id))

    def react_review_comment(self, call: Call) -> Response:
        repo = self._repo(call, "pull_requests", "write")
        with self.state.lock:
            comment = self.state.review_comments.get(call.params["comment_id"])
        if comment is None or comment.repo != repo.full_name:
            raise not_found()
        return self._react(call, ("review_comment", "", comment.id))

    # pull requests

    def pulls(self, call: Call) -> Response:
        if call.request.method == "POST":
            return self.create_pull(call)
        repo = self._repo(call, "pull_requests", "read")
        state = call.query.get("state", "open")
        head = call.query.get("head")
        base = call.query.get("base")
        with self.state.lock:
            found = []
            for issue in sorted(self.state.issues.values(), key=lambda i: -i.number):
                pull = issue.pull
                if issue.repo != repo.full_name or pull is None:
                    continue
                if state != "all" and issue.state != state:
                    continue
                if base and pull.base_ref != base:
                    continue
                if head:
                    owner, _, branch = head.partition(":")
                    head_repo = self.state.repo(pull.head_repo)
                    if not branch:
                        owner, branch = repo.owner, owner
                    if (
                        head_repo is None
                        or head_repo.owner.lower() != owner.lower()
                        or (pull.head_ref != branch)
                    ):
                        continue
                found.append(self.shapes.pull_json(issue))
        return self._page(call, found)

    def create_pull(self, call: Call) -> Response:
        repo = self._repo(call, "pull_requests", "write")
        author = self._actor(call)
        head = call.field("head", str)
        base = call.field("base", str)
        title = call.field("title", str)
        body = call.field("body", str, required=False)
        call.request.state.detail = _summary(title)
        owner, _, branch = head.partition(":")
        if not branch:
            owner, branch = repo.owner, head
        with self.state.lock:
            head_repo = (
                repo
                if owner.lower() == repo.owner.lower()
                else next(
                    (
                        r
                        for r in self.state.repos.values()
                        if r.owner.lower() == owner.lower() and r.fork_of == repo.full_name
                    ),
                    None,
                )
            )
        if head_repo is None:
            raise validation_failed("PullRequest", code="invalid", field="head")
        issue = self.ops.open_pull(
            repo,
            head_repo=head_repo,
            head_ref=branch,
            base_ref=base,
            title=title,
            body=body,
            author=author,
            draft=bool(call.field("draft", bool, required=False, default=False)),
            maintainer_can_modify=bool(
                call.field("maintainer_can_modify", bool, required=False, default=False)
            ),
        )
        with self.state.lock:
            data = self.shapes.pull_json(issue)
        self.ops.emit(repo, "pull_request", author, self.ops.pull_event(issue, "opened"), now=False)
        return answer(201, data, {"Location": data["url"]})

    def pull(self, call: Call) -> Response:
        if call.request.method == "GET":
            _, issue = self._pull(call, "read")
            with self.state.lock:
                return answer(200, self.shapes.pull_json(issue))
        repo, issue = self._pull(call, "write")
        actor = self._actor(call)
        assert issue.pull is not None
        changes: dict[str, Any] = {}
        title = call.field("title", str, required=False)
        body = call.field("body", str, required=False)
        state = call.field("state", str, required=False)
        base = call.field("base", str, required=False)
        if body is not None:
            check_body("PullRequest", body)
        if base is not None and git.rev_parse(repo.git_dir, f"refs/heads/{base}") is None:
            raise validation_failed("PullRequest", code="invalid", field="base")
        with self.state.lock:
            if title is not None and title != issue.title:
                changes["title"] = {"from": issue.title}
                issue.title = title
            if body is not None and body != issue.body:
                changes["body"] = {"from": issue.body}
                issue.body = body
            if base is not None and base != issue.pull.base_ref:
                changes["base"] = {"ref": {"from": issue.pull.base_ref}}
                issue.pull.base_ref = base
            closing = state == "closed" and issue.state == "open"
            reopening = state == "open" and issue.state == "closed"
            if closing:
                issue.state, issue.closed_at = "closed", utc_now()
            if reopening:
                issue.state, issue.closed_at = "open", None
            issue.updated_at = utc_now()
            data = self.shapes.pull_json(issue)
        if changes:
            self.ops.emit(
                repo,
                "pull_request",
                actor,
                self.ops.pull_event(issue, "edited", changes=changes),
                now=False,
            )
        if closing or reopening:
            self.ops.emit(
                repo,
                "pull_request",
                actor,
                self.ops.pull_event(issue, "closed" if closing else "reopened"),
                now=False,
            )
        return answer(200, data)

    def pull_files(self, call: Call) -> Response:
        repo, issue = self._pull(call, "read")
        assert issue.pull is not None
        base_sha = git.rev_parse(repo.git_dir, f"refs/heads/{issue.pull.base_ref}")
        head_sha = issue.pull.head_sha
        entries = git.diff_files(repo.git_dir, base_sha or head_sha, head_sha)
        return self._page(call, [self.shapes.diff_entry_json(repo, head_sha, e) for e in entries])

    def requested_reviewers(self, call: Call) -> Response:
        if call.request.method == "GET":
            _, issue = self._pull(call, "read")
            assert issue.pull is not None
            with self.state.lock:
                users = [self.shapes.login_json(r) for r in issue.pull.requested_reviewers]
            return answer(200, {"users": users, "teams": []})
        repo, issue = self._pull(call, "write")
        actor = self._actor(call)
        reviewers = [str(r) for r in call.field("reviewers", list, required=False, default=[])]
        self.ops.request_reviewers(repo, issue, reviewers)
        with self.state.lock:
            data = self.shapes.pull_json(issue)
        for login in reviewers:
            self.ops.emit(
                repo,
                "pull_request",
                actor,
                self.ops.pull_event(
                    issue, "review_requested", requested_reviewer=self.shapes.login_json(login)
                ),
                now=False,
            )
        return answer(201, data)

    def list_reviews(self, call: Call) -> Response:
        repo, issue = self._pull(call, "read")
        with self.state.lock:
            items = [
                self.shapes.review_json(r)
                for r in sorted(self.state.reviews.values(), key=lambda r: r.id)
                if r.repo == repo.full_name and r.number == issue.number
            ]
        return self._page(call, items)

    def get_review(self, call: Call) -> Response:
        repo, issue = self._pull(call, "read")
        with self.state.lock:
            review = self.state.reviews.get(call.params["review_id"])
            if review is None or review.repo != repo.full_name or review.number != issue.number:
                raise not_found()
            return answer(200, self.shapes.review_json(review))

    def review_comments_of_review(self, call: Call) -> Response:
        repo, issue = self._pull(call, "read")
        review_id = call.params["review_id"]
        with self.state.lock:
            review = self.state.reviews.get(review_id)
            if review is None or review.repo != repo.full_name or review.number != issue.number:
                raise not_found()
            items = []
            for comment in sorted(self.state.review_comments.values(), key=lambda c: c.id):
                if comment.review_id == review_id:
                    # GitHub's review-comment listing has no reactions and no line fields.
                    shape = self.shapes.review_comment_json(comment)
                    for key in (
                        "reactions",
                        "line",
                        "original_line",
                        "side",
                        "start_line",
                        "original_start_line",
                        "start_side",
                        "subject_type",
                    ):
                        shape.pop(key, None)
                    items.append(shape)
        return self._page(call, items)

    def pull_review_comments(self, call: Call) -> Response:
        repo, issue = self._pull(call, "read")
        with self.state.lock:
            items = [
                self.shapes.review_comment_json(c)
                for c in sorted(self.state.review_comments.values(), key=lambda c: c.id)
                if c.repo == repo.full_name and c.number == issue.number
            ]
        return self._page(call, items)

    def get_review_comment(self, call: Call) -> Response:
        repo = self._repo(call, "pull_requests", "read")
        with self.state.lock:
            comment = self.state.review_comments.get(call.params["comment_id"])
            if comment is None or comment.repo != repo.full_name:
                raise not_found()
            return answer(200, self.shapes.review_comment_json(comment))

    def reply(self, call: Call) -> Response:
        repo, issue = self._pull(call, "write")
        author = self._actor(call)
        body = call.field("body", str)
        with self.state.lock:
            target = self.state.review_comments.get(call.params["comment_id"])
        if target is None or target.repo != repo.full_name or target.number != issue.number:
            raise not_found()
        review, comment = self.ops.reply(repo, issue, target, body, author=author)
        with self.state.lock:
            data = self.shapes.review_comment_json(comment)
        self.ops.review_events(repo, issue, review, [comment], sender=author, now=False)
        return answer(201, data, {"Location": data["url"]})
