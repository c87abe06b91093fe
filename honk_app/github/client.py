"""Every call Honk makes to GitHub, in one place.

`GitHubApp` holds the App's identity (RS256 JWT from the private key, via githubkit's App
auth, which signs with pyjwt + cryptography). `RepoGitHub` acts for one run on one
repository with an installation token scoped to that repository alone, refreshed before it
expires.

Faults. githubkit retries rate limits (`retry-after`), where GitHub did nothing. Everything
else is decided here, in `RepoGitHub._call`: a 5xx, a 429 without `retry-after`, a reset
or a timeout is retried a few times with backoff; a 401 mints a new installation token once.
A write that creates something (a comment, a pull request, a reply) is retried only after
looking for what the lost answer may have created, so a retry never makes a second one.
What is still failing after that is a `GitHubError` whose `transient` says whether trying
later may succeed; its message carries GitHub's own reason (`errors[].message`).

Every request has a deadline (HONK_GITHUB_TIMEOUT_SECONDS, for connecting and for each
read): a GitHub that accepts the connection and never answers raises githubkit's
RequestTimeout, so the run's step ends instead of holding its lease forever. githubkit's
HTTP cache is off: with it on, the client's timeout was not enforced (issue 11 measured
6.1 s for timeout=2; here a call to a silent server waited over ten minutes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from githubkit import AppAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.exception import (
    GitHubException,
    RateLimitExceeded,
    RequestError,
    RequestFailed,
)
from githubkit.retry import RetryRateLimit
from githubkit.typing import RetryOption

from honk_app.redact import Redactor
from honk_app.settings import Settings

log = structlog.get_logger()

MAX_BODY_CHARS = 65_536
TOKEN_REFRESH_MARGIN_SECONDS = 10 * 60
MAX_RATE_LIMIT_WAIT = timedelta(seconds=60)
# A call that matters little (a mid-run status edit, a reaction) does not wait out a rate
# limit: it gives up at once, and the run goes on.
_QUICK: ContextVar[bool] = ContextVar("honk_github_quick", default=False)


class _RateLimitUnlessQuick(RetryRateLimit):
    """githubkit's wait for a rate limit, except for quick calls and for waits over a
    minute (a primary limit's reset): those come back as a rate-limited GitHubError, and
    the run is handed back instead of holding a worker."""

    def __call__(self, exc: GitHubException, retry_count: int) -> RetryOption:
        if _QUICK.get():
            return RetryOption(False)
        if isinstance(exc, RateLimitExceeded) and exc.retry_after > MAX_RATE_LIMIT_WAIT:
            return RetryOption(False)
        return super().__call__(exc, retry_count)


# Only rate limits are retried by githubkit itself: GitHub refused before acting, so any
# method may be sent again. Server errors and resets are `RepoGitHub._call`'s to decide.
RETRY = _RateLimitUnlessQuick(max_retry=4)
WRITE_PERMISSIONS = ("admin", "maintain", "write")
CALL_ATTEMPTS = 4
CALL_BACKOFF_SECONDS = 1.0  # doubled after each attempt: 1, 2, 4 s
QUICK_ATTEMPTS = 2
TRANSIENT_STATUSES = (408, 429, 500, 502, 503, 504)
NO_CACHE = {"Cache-Control": "no-cache"}
T = TypeVar("T")


def _client_options(timeout_seconds: float) -> dict[str, Any]:
    """How every githubkit client is built: retries, and a timeout that holds (httpx's, on
    connecting and on each read), so no HTTP cache."""
    return {"auto_retry": RETRY, "timeout": timeout_seconds, "http_cache": False}


class GitHubError(Exception):
    """A GitHub call failed; the message is one sentence for a person.

    `transient`: an outage, a rate limit or a lost connection, so the same call may succeed
    later (the run is handed back); otherwise GitHub refused it, and retrying will not help.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient or rate_limited
        self.rate_limited = rate_limited


def as_github_error(error: GitHubException) -> GitHubError:
    status = error.response.status_code if isinstance(error, RequestFailed) else None
    # A RequestError without a status: the connection was reset or the answer timed out.
    unreachable = isinstance(error, RequestError) and status is None
    transient = unreachable or status in TRANSIENT_STATUSES
    return GitHubError(describe(error), status=status, transient=transient,
                       rate_limited=_rate_limited(error))


def _rate_limited(error: GitHubException) -> bool:
    if not isinstance(error, RequestFailed) or error.response.status_code not in (403, 429):
        return False
    headers = error.response.headers
    return "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"


def bot_email(bot_login: str) -> str:
    """The address Honk's commits carry: how Honk tells its own commits on a branch."""
    return f"{bot_login}@users.noreply.github.com"


def cap_body(text: str, limit: int = MAX_BODY_CHARS) -> str:
    """GitHub refuses bodies over 65,536 characters: keep the head and say what was cut."""
    if len(text) <= limit:
        return text
    note = f"\n\n… (trimmed {len(text) - limit + 200:,} characters to fit GitHub's limit)"
    return text[: limit - 200] + note


def describe(error: Exception) -> str:
    """One sentence about a failed GitHub call, without any token in it."""
    if isinstance(error, RequestFailed):
        status = error.response.status_code
        try:
            data = error.response.json()
        except ValueError:
            data = None
        message = ""
        if isinstance(data, dict):
            message = str(data.get("message") or "")
            # GitHub's own reason sits here (422: "A pull request already exists for …").
            reasons = [
                str(entry["message"])
                for entry in data.get("errors") or []
                if isinstance(entry, dict) and entry.get("message")
            ]
            message = "; ".join(part for part in (message, *reasons) if part)
        return f"GitHub answered {status}{': ' + message if message else ''}"
    if isinstance(error, RequestError) and "Timeout" in type(error).__name__:
        return "GitHub did not answer in time"
    return f"GitHub could not be reached ({type(error).__name__})"


@dataclass(frozen=True)
class InstallationToken:
    token: str
    expires_at: float

    def __repr__(self) -> str:
        return f"InstallationToken(expires_at={self.expires_at})"


class GitHubApp:
    """The App's identity. Every token it mints is registered with the redactor, and every
    body it sends to GitHub passes through it: a secret never reaches a comment or a PR."""

    def __init__(self, settings: Settings, redactor: Redactor) -> None:
        self.redactor = redactor
        if settings.app_id is None or not settings.private_key:
            raise GitHubError("APP_ID and PRIVATE_KEY are needed to act as the GitHub App.")
        self.api_url = settings.github_api_url
        self.timeout_seconds = settings.github_timeout_seconds
        self._app = GitHub(
            AppAuthStrategy(settings.app_id, settings.private_key),
            base_url=self.api_url,
            **_client_options(self.timeout_seconds),
        )
        self._slug: str | None = None

    async def bot_login(self) -> str:
        if self._slug is None:
            try:
                app = (await self._app.rest.apps.async_get_authenticated()).parsed_data
            except GitHubException as raw:
                raise as_github_error(raw) from None
            self._slug = app.slug if app and app.slug else "honk"
        return f"{self._slug}[bot]"

    async def installation_token(self, installation_id: int, repo: str) -> InstallationToken:
        """A token that can reach this one repository, nothing else."""
        name = repo.split("/", 1)[1]
        try:
            response = await self._app.rest.apps.async_create_installation_access_token(
                installation_id, repositories=[name]
            )
        except GitHubException as raw:
            error = as_github_error(raw)
            raise GitHubError(
                f"No installation token for {repo}: {error}.",
                status=error.status,
                transient=error.transient,
                rate_limited=error.rate_limited,
            ) from None
        data = response.parsed_data
        self.redactor.add(data.token)
        return InstallationToken(data.token, _epoch(data.expires_at))

    async def for_repo(self, installation_id: int, repo: str) -> RepoGitHub:
        token = await self.installation_token(installation_id, repo)
        return RepoGitHub(self, installation_id, repo, token)


class RepoGitHub:
    """The calls one run makes on one repository."""

    def __init__(
        self, app: GitHubApp, installation_id: int, repo: str, token: InstallationToken
    ) -> None:
        self._app = app
        self._installation_id = installation_id
        self.repo = repo
        self.owner, self.name = repo.split("/", 1)
        self._token = token
        self._gh = self._client(token)

    def _client(self, token: InstallationToken) -> GitHub[TokenAuthStrategy]:
        return GitHub(
            TokenAuthStrategy(token.token),
            base_url=self._app.api_url,
            **_client_options(self._app.timeout_seconds),
        )

    async def token(self, *, renew: bool = False) -> str:
        """The installation token, renewed when it has less than ten minutes left."""
        if renew or self._token.expires_at - time.time() < TOKEN_REFRESH_MARGIN_SECONDS:
            self._token = await self._app.installation_token(self._installation_id, self.repo)
            self._gh = self._client(self._token)
            log.info("installation token renewed", repo=self.repo, forced=renew)
        return self._token.token

    def _body(self, text: str) -> str:
        return cap_body(self._app.redactor(text))

    async def _rest(self) -> Any:
        await self.token()
        return self._gh.rest

    async def _call(
        self,
        what: str,
        send: Callable[[Any], Awaitable[T]],
        *,
        look: Callable[[], Awaitable[T | None]] | None = None,
        attempts: int = CALL_ATTEMPTS,
    ) -> T:
        """One call, through short faults. `look` finds what a create may have made before
        its answer was lost; without it the call is one that may be sent twice. Calls that
        matter little (a reaction, a mid-run status edit) pass fewer `attempts`."""
        renewed = False
        delay = CALL_BACKOFF_SECONDS
        error: GitHubError | None = None
        for attempt in range(1, attempts + 1):
            if error is not None and look is not None:
                try:
                    found = await look()
                except GitHubError:
                    found = None
                if found is not None:
                    log.info("github write found after a lost answer", call=what)
                    return found
            quick = _QUICK.set(attempts < CALL_ATTEMPTS)
            try:
                return await send(await self._rest())
            except GitHubException as raw:
                error = as_github_error(raw)
            finally:
                _QUICK.reset(quick)
            if error.status == 401 and not renewed:
                renewed = True  # the token was revoked or expired early: one fresh token
                await self.token(renew=True)
                continue
            if error.status == 422 and look is not None:
                found = await look()  # e.g. "A pull request already exists for …"
                if found is not None:
                    return found
            if not error.transient or attempt == attempts:
                break
            if error.rate_limited and attempts < CALL_ATTEMPTS:
                break  # a quick call does not press on against a rate limit
            log.warning("github call failed; retrying", call=what, error=str(error),
                        attempt=attempt)
            await asyncio.sleep(delay)
            delay *= 2
        assert error is not None
        raise error

    async def repository(self) -> Any:
        return await self._call("get repository", lambda rest: _data(
            rest.repos.async_get(self.owner, self.name)))

    async def permission(self, login: str) -> str:
        try:
            data = await self._call("get permission", lambda rest: _data(
                rest.repos.async_get_collaborator_permission_level(self.owner, self.name, login)))
        except GitHubError as error:
            if error.status == 404:
                return "none"
            raise
        return str(data.permission)

    async def can_write(self, login: str) -> bool:
        return await self.permission(login) in WRITE_PERMISSIONS

    async def react(
        self,
        content: str,
        *,
        issue: int | None = None,
        comment_id: int | None = None,
        review_comment_id: int | None = None,
    ) -> None:
        """Add a reaction (GitHub answers an existing one with 200, so a retry is harmless)."""

        async def send(rest: Any) -> None:
            if review_comment_id is not None:
                await rest.reactions.async_create_for_pull_request_review_comment(
                    self.owner, self.name, review_comment_id, content=content
                )
            elif comment_id is not None:
                await rest.reactions.async_create_for_issue_comment(
                    self.owner, self.name, comment_id, content=content
                )
            elif issue is not None:
                await rest.reactions.async_create_for_issue(
                    self.owner, self.name, issue, content=content
                )

        await self._call("react", send, attempts=QUICK_ATTEMPTS)

    async def issue(self, number: int) -> Any:
        return await self._call("get issue", lambda rest: _data(
            rest.issues.async_get(self.owner, self.name, number)))

    async def comment(
        self, number: int, body: str, *, marker: str | None = None, quick: bool = False
    ) -> int:
        """Post a comment; with a `marker` (a hidden line in the body), never a second one."""
        text = self._body(body)

        async def send(rest: Any) -> int:
            response = await rest.issues.async_create_comment(
                self.owner, self.name, number, body=text
            )
            return int(response.parsed_data.id)

        look = None if marker is None else lambda: self.find_comment(number, marker)
        return await self._call("create comment", send, look=look,
                                attempts=QUICK_ATTEMPTS if quick else CALL_ATTEMPTS)

    async def find_comment(self, number: int, marker: str) -> int | None:
        """The id of the issue's first comment by Honk whose body holds `marker`, if any
        (anyone can write a marker into a comment of their own)."""
        bot = await self._app.bot_login()
        for comment in await self._all_pages(
            "list comments",
            lambda rest, page: rest.issues.async_list_comments(
                self.owner, self.name, number, per_page=100, page=page, headers=NO_CACHE
            ),
        ):
            if marker in (comment.body or "") and _login(comment) == bot:
                return int(comment.id)
        return None

    async def edit_comment(self, comment_id: int, body: str, *, quick: bool = False) -> None:
        text = self._body(body)
        await self._call(
            "edit comment",
            lambda rest: rest.issues.async_update_comment(
                self.owner, self.name, comment_id, body=text
            ),
            attempts=QUICK_ATTEMPTS if quick else CALL_ATTEMPTS,
        )

    async def pull(self, number: int) -> Any:
        return await self._call("get pull request", lambda rest: _data(
            rest.pulls.async_get(self.owner, self.name, number)))

    async def find_pull(self, branch: str, *, author: str | None = None) -> Any | None:
        """The open PR whose head is this repository's `branch` (opened by `author`), if any."""
        pulls = await self._call("list pull requests", lambda rest: _data(rest.pulls.async_list(
            self.owner, self.name, head=f"{self.owner}:{branch}", state="open", headers=NO_CACHE
        )))
        for pull in pulls:
            if author is None or (pull.user is not None and pull.user.login == author):
                return pull
        return None

    async def open_pull(
        self, *, branch: str, base: str, title: str, body: str, draft: bool = False,
        author: str | None = None,
    ) -> Any:
        """Open a PR; if an answer was lost and GitHub made it, the one it made."""
        text, title = self._body(body), self._app.redactor(title)
        return await self._call(
            "create pull request",
            lambda rest: _data(rest.pulls.async_create(
                self.owner, self.name, title=title, head=branch, base=base, body=text, draft=draft
            )),
            look=lambda: self.find_pull(branch, author=author),
        )

    async def edit_pull(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> None:
        fields: dict[str, str] = {}
        if title is not None:
            fields["title"] = self._app.redactor(title)
        if body is not None:
            fields["body"] = self._body(body)
        await self._call("edit pull request", lambda rest: rest.pulls.async_update(
            self.owner, self.name, number, **fields))

    async def request_review(self, number: int, login: str) -> bool:
        """Ask `login` to review; False when GitHub refuses (e.g. they wrote the PR)."""
        try:
            await self._call("request review", lambda rest: rest.pulls.async_request_reviewers(
                self.owner, self.name, number, reviewers=[login]))
        except GitHubError as error:
            if error.status == 422:
                log.info("review request refused", repo=self.repo, pull=number, login=login)
                return False
            raise
        return True

    async def review_comments(self, number: int, review_id: int) -> list[Any]:
        return await self._all_pages(
            "list review comments",
            lambda rest, page: rest.pulls.async_list_comments_for_review(
                self.owner, self.name, number, review_id, per_page=100, page=page
            ),
        )

    async def pull_review_comments(self, number: int) -> list[Any]:
        """Every review comment of the pull request, replies included, oldest first."""
        return await self._all_pages(
            "list pull request comments",
            lambda rest, page: rest.pulls.async_list_review_comments(
                self.owner, self.name, number, per_page=100, page=page, headers=NO_CACHE
            ),
        )

    async def reply_to_review_comment(
        self, number: int, comment_id: int, body: str, *, marker: str | None = None
    ) -> None:
        """Reply in a review thread; with a `marker`, never the same reply twice."""
        text = self._body(body)

        async def look() -> bool | None:
            bot = await self._app.bot_login()
            for reply in await self.pull_review_comments(number):
                if (reply.in_reply_to_id == comment_id and marker and marker in reply.body
                        and _login(reply) == bot):
                    return True
            return None

        await self._call(
            "reply to review comment",
            lambda rest: rest.pulls.async_create_reply_for_review_comment(
                self.owner, self.name, number, comment_id, body=text
            ),
            look=None if marker is None else look,
        )

    async def ensure_label(self, name: str, *, color: str, description: str) -> bool:
        """Create the label if the repository lacks it; True when it was created."""
        try:
            await self._call("get label", lambda rest: rest.issues.async_get_label(
                self.owner, self.name, name))
            return False
        except GitHubError as error:
            if error.status != 404:
                raise
        try:
            await self._call("create label", lambda rest: rest.issues.async_create_label(
                self.owner, self.name, name=name, color=color, description=description))
        except GitHubError as error:
            if error.status == 422:  # created meanwhile (or by a retry whose answer was lost)
                return False
            raise
        return True

    async def _all_pages(
        self, what: str, fetch: Callable[[Any, int], Awaitable[Any]]
    ) -> list[Any]:
        items: list[Any] = []
        page = 1
        while True:
            chunk = await self._call(what, lambda rest, page=page: _data(fetch(rest, page)))
            items.extend(chunk)
            if len(chunk) < 100:
                return items
            page += 1


def _login(item: Any) -> str | None:
    return item.user.login if item.user is not None else None


async def _data(response: Awaitable[Any]) -> Any:
    return (await response).parsed_data


def _epoch(value: datetime | str) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.timestamp()
