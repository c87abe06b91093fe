"""Every call Honk makes to GitHub, in one place.

`GitHubApp` holds the App's identity (RS256 JWT from the private key, via githubkit's App
auth, which signs with pyjwt + cryptography). `RepoGitHub` acts for one run on one
repository with an installation token scoped to that repository alone, refreshed before it
expires. githubkit retries secondary rate limits (honouring `retry-after`) and 5xx answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from githubkit import AppAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.exception import GitHubException, RequestFailed
from githubkit.retry import RetryChainDecision, RetryRateLimit, RetryServerError

from honk_app.config import Settings
from honk_app.redact import Redactor

log = structlog.get_logger()

MAX_BODY_CHARS = 65_536
TOKEN_REFRESH_MARGIN_SECONDS = 10 * 60
RETRY = RetryChainDecision(RetryRateLimit(max_retry=4), RetryServerError(max_retry=3))
WRITE_PERMISSIONS = ("admin", "maintain", "write")


class GitHubError(Exception):
    """A GitHub call failed in a way the run cannot get past; the message is for a person."""


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
            message = error.response.json().get("message", "")
        except ValueError:
            message = ""
        return f"GitHub answered {status}{': ' + message if message else ''}"
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
        self._app = GitHub(
            AppAuthStrategy(settings.app_id, settings.private_key),
            base_url=self.api_url,
            auto_retry=RETRY,
            timeout=30,
        )
        self._slug: str | None = None

    async def bot_login(self) -> str:
        if self._slug is None:
            app = (await self._app.rest.apps.async_get_authenticated()).parsed_data
            self._slug = app.slug if app and app.slug else "honk"
        return f"{self._slug}[bot]"

    async def installation_token(self, installation_id: int, repo: str) -> InstallationToken:
        """A token that can reach this one repository, nothing else."""
        name = repo.split("/", 1)[1]
        try:
            response = await self._app.rest.apps.async_create_installation_access_token(
                installation_id, repositories=[name]
            )
        except GitHubException as error:
            raise GitHubError(f"No installation token for {repo}: {describe(error)}.") from None
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
            TokenAuthStrategy(token.token), base_url=self._app.api_url, auto_retry=RETRY, timeout=30
        )

    async def token(self) -> str:
        """The installation token, renewed when it has less than ten minutes left."""
        if self._token.expires_at - time.time() < TOKEN_REFRESH_MARGIN_SECONDS:
            self._token = await self._app.installation_token(self._installation_id, self.repo)
            self._gh = self._client(self._token)
            log.info("installation token renewed", repo=self.repo)
        return self._token.token

    def _body(self, text: str) -> str:
        return cap_body(self._app.redactor(text))

    async def _rest(self) -> Any:
        await self.token()
        return self._gh.rest

    async def repository(self) -> Any:
        return (await (await self._rest()).repos.async_get(self.owner, self.name)).parsed_data

    async def permission(self, login: str) -> str:
        rest = await self._rest()
        try:
            response = await rest.repos.async_get_collaborator_permission_level(
                self.owner, self.name, login
            )
        except RequestFailed as error:
            if error.response.status_code == 404:
                return "none"
            raise
        return str(response.parsed_data.permission)

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
        rest = await self._rest()
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

    async def issue(self, number: int) -> Any:
        rest = await self._rest()
        return (await rest.issues.async_get(self.owner, self.name, number)).parsed_data

    async def comment(self, number: int, body: str) -> int:
        rest = await self._rest()
        response = await rest.issues.async_create_comment(
            self.owner, self.name, number, body=self._body(body)
        )
        return int(response.parsed_data.id)

    async def edit_comment(self, comment_id: int, body: str) -> None:
        rest = await self._rest()
        await rest.issues.async_update_comment(
            self.owner, self.name, comment_id, body=self._body(body)
        )

    async def pull(self, number: int) -> Any:
        rest = await self._rest()
        return (await rest.pulls.async_get(self.owner, self.name, number)).parsed_data

    async def find_pull(self, branch: str) -> Any | None:
        """The open PR whose head is this repository's `branch`, if any."""
        rest = await self._rest()
        response = await rest.pulls.async_list(
            self.owner, self.name, head=f"{self.owner}:{branch}", state="open"
        )
        pulls = response.parsed_data
        return pulls[0] if pulls else None

    async def open_pull(
        self, *, branch: str, base: str, title: str, body: str, draft: bool = False
    ) -> Any:
        rest = await self._rest()
        response = await rest.pulls.async_create(
            self.owner,
            self.name,
            title=title,
            head=branch,
            base=base,
            body=self._body(body),
            draft=draft,
        )
        return response.parsed_data

    async def edit_pull(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> None:
        rest = await self._rest()
        fields: dict[str, str] = {}
        if title is not None:
            fields["title"] = self._app.redactor(title)
        if body is not None:
            fields["body"] = self._body(body)
        await rest.pulls.async_update(self.owner, self.name, number, **fields)

    async def request_review(self, number: int, login: str) -> bool:
        """Ask `login` to review; False when GitHub refuses (e.g. they wrote the PR)."""
        rest = await self._rest()
        try:
            await rest.pulls.async_request_reviewers(
                self.owner, self.name, number, reviewers=[login]
            )
        except RequestFailed as error:
            if error.response.status_code == 422:
                log.info("review request refused", repo=self.repo, pull=number, login=login)
                return False
            raise
        return True

    async def review_comments(self, number: int, review_id: int) -> list[Any]:
        rest = await self._rest()
        response = await rest.pulls.async_list_comments_for_review(
            self.owner, self.name, number, review_id, per_page=100
        )
        return list(response.parsed_data)

    async def reply_to_review_comment(self, number: int, comment_id: int, body: str) -> None:
        rest = await self._rest()
        await rest.pulls.async_create_reply_for_review_comment(
            self.owner, self.name, number, comment_id, body=self._body(body)
        )

    async def ensure_label(self, name: str, *, color: str, description: str) -> bool:
        """Create the label if the repository lacks it; True when it was created."""
        rest = await self._rest()
        try:
            await rest.issues.async_get_label(self.owner, self.name, name)
            return False
        except RequestFailed as error:
            if error.response.status_code != 404:
                raise
        await rest.issues.async_create_label(
            self.owner, self.name, name=name, color=color, description=description
        )
        return True


def _epoch(value: datetime | str) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.timestamp()
