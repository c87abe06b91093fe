"""The GitHub simulator's state: plain records behind one lock.

Everything the simulator knows lives in a `SimState`. Records are mutable dataclasses and
are only touched while holding `SimState.lock`; renderers in `github_shapes` turn them into
GitHub's JSON.
"""

import base64
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Role = Literal["admin", "maintain", "write", "triage", "read", "none"]
ROLE_RANK: dict[str, int] = {
    "none": 0,
    "read": 1,
    "triage": 2,
    "write": 3,
    "maintain": 4,
    "admin": 5,
}
ACCESS_RANK: dict[str, int] = {"none": 0, "read": 1, "write": 2, "admin": 3}

DEFAULT_APP_PERMISSIONS: dict[str, str] = {
    "contents": "write",
    "issues": "write",
    "pull_requests": "write",
    "metadata": "read",
}
DEFAULT_APP_EVENTS: list[str] = [
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "push",
]
# Labels GitHub creates in every new repository.
DEFAULT_LABELS: list[tuple[str, str, str]] = [
    ("bug", "d73a4a", "Something isn't working"),
    ("documentation", "0075ca", "Improvements or additions to documentation"),
    ("duplicate", "cfd3d7", "This issue or pull request already exists"),
    ("enhancement", "a2eeef", "New feature or request"),
    ("good first issue", "7057ff", "Good for newcomers"),
    ("help wanted", "008672", "Extra attention is needed"),
    ("invalid", "e4e669", "This doesn't seem right"),
    ("question", "d876e3", "Further information is requested"),
    ("wontfix", "ffffff", "This will not be worked on"),
]


# One sequence for every simulator in the process: ids are unique the way GitHub's are, and
# githubkit's process-wide caches (keyed by App and installation id) never mix up two sims.
_IDS = itertools.count(1001)


def utc_now() -> datetime:
    # Full precision: token expiry is compared to it; JSON renders whole seconds.
    return datetime.now(UTC)


def node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0{kind}:{number}".encode()).decode().rstrip("=")


@dataclass
class User:
    login: str
    id: int
    type: Literal["User", "Bot", "Organization"]
    created_at: datetime
    token: str | None = None  # a personal access token, for users only

    @property
    def email(self) -> str:
        return f"{self.id}+{self.login}@users.noreply.github.com"


@dataclass
class App:
    id: int
    slug: str
    name: str
    owner: str
    client_id: str
    client_secret: str
    webhook_secret: str
    private_key_pem: str
    public_key_pem: str
    bot_login: str
    permissions: dict[str, str]
    events: list[str]
    webhook_url: str | None
    hook_id: int
    created_at: datetime
    description: str = ""
    external_url: str = ""
    callback_url: str | None = None


@dataclass
class Installation:
    id: int
    app_id: int
    account: str
    repos: list[str]  # full names, repository_selection "selected"
    permissions: dict[str, str]
    events: list[str]
    created_at: datetime


@dataclass
class Token:
    value: str
    kind: Literal["installation", "personal", "oauth"]
    login: str  # the acting user: the App's bot for installation tokens
    expires_at: datetime | None
    installation_id: int | None = None
    repos: frozenset[str] | None = None  # None: every repository of the installation
    permissions: dict[str, str] = field(default_factory=dict)
    app_id: int | None = None  # for OAuth user tokens: the App that signed the user in


@dataclass
class Label:
    id: int
    name: str
    color: str
    description: str | None
    default: bool


@dataclass
class Repo:
    id: int
    owner: str
    name: str
    private: bool
    default_branch: str
    git_dir: Path
    created_at: datetime
    pushed_at: datetime
    roles: dict[str, str] = field(default_factory=dict)  # login -> Role
    labels: dict[str, Label] = field(default_factory=dict)  # lower-cased name -> Label
    fork_of: str | None = None
    next_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Pull:
    id: int
    head_repo: str
    head_ref: str
    base_ref: str
    head_sha: str
    draft: bool = False
    maintainer_can_modify: bool = False
    requested_reviewers: list[str] = field(default_factory=list)


@dataclass
class Issue:
    id: int
    repo: str
    number: int
    title: str
    body: str | None
    author: str
    created_at: datetime
    updated_at: datetime
    state: Literal["open", "closed"] = "open"
    closed_at: datetime | None = None
    labels: list[str] = field(default_factory=list)  # label names as applied
    pull: Pull | None = None


@dataclass
class IssueComment:
    id: int
    repo: str
    number: int
    author: str
    body: str
    created_at: datetime
    updated_at: datetime
    history: list[str] = field(default_factory=list)  # earlier bodies, oldest first
    app_id: int | None = None  # set when written by an App's installation token


@dataclass
class Review:
    id: int
    repo: str
    number: int
    author: str
    state: Literal["APPROVED", "CHANGES_REQUESTED", "COMMENTED"]
    body: str
    commit_id: str
    submitted_at: datetime


@dataclass
class ReviewComment:
    id: int
    repo: str
    number: int
    review_id: int
    author: str
    body: str
    path: str
    line: int
    position: int
    diff_hunk: str
    commit_id: str
    created_at: datetime
    updated_at: datetime
    in_reply_to_id: int | None = None


ReactionTarget = tuple[str, str, int]  # ("issue", repo, number) or ("issue_comment", "", id)


@dataclass
class Reaction:
    id: int
    target: ReactionTarget
    user: str
    content: str
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver a webhook, as GitHub's "Recent Deliveries" shows it."""

    id: str
    event: str
    action: str | None
    sender: str
    app_id: int
    payload: dict[str, Any]
    status: int  # the app's HTTP status; 0 when it could not be reached
    response_body: str
    sent_at: datetime
    duration_s: float
    redelivery: bool = False
    error: str | None = None


@dataclass(frozen=True)
class TimelineEntry:
    at: float  # time.monotonic()
    kind: Literal["api", "git", "web", "delivery"]
    method: str
    path: str
    status: int
    actor: str | None = None
    detail: str = ""


class SimState:
    """All records, keyed the way the REST API looks them up."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}  # lower-cased login -> User
        self.apps: dict[int, App] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, Token] = {}
        self.repos: dict[str, Repo] = {}  # lower-cased full name -> Repo
        self.issues: dict[tuple[str, int], Issue] = {}
        self.issue_comments: dict[int, IssueComment] = {}
        self.reviews: dict[int, Review] = {}
        self.review_comments: dict[int, ReviewComment] = {}
        self.reactions: list[Reaction] = []
        self.deliveries: list[Delivery] = []
        self.timeline: list[TimelineEntry] = []
        self.manifest_codes: dict[str, dict[str, Any]] = {}
        self.oauth_codes: dict[str, tuple[int, str]] = {}  # code -> (app id, login)
        self.oauth_login: str | None = None  # who signs in at /login/oauth/authorize

    def next_id(self) -> int:
        return next(_IDS)

    def user(self, login: str) -> User | None:
        return self.users.get(login.lower())

    def repo(self, full_name: str) -> Repo | None:
        return self.repos.get(full_name.lower())

    def issue(self, repo: str, number: int) -> Issue | None:
        found = self.repo(repo)
        return self.issues.get((found.full_name, number)) if found else None

    def app_of_bot(self, login: str) -> App | None:
        return next((app for app in self.apps.values() if app.bot_login == login), None)

    def installations_for(self, repo: str) -> list[Installation]:
        return [i for i in self.installations.values() if repo in i.repos]

    def role(self, repo: Repo, login: str) -> str:
        """The user's role on the repository, as GitHub's permission endpoint names it."""
        if login == repo.owner:
            return "admin"
        role = repo.roles.get(login.lower(), "none")
        if role == "none" and not repo.private:
            return "read"
        return role

    def pull_for_head(self, repo: str, head_repo: str, head_ref: str) -> Issue | None:
        return next(
            (
                issue
                for issue in self.issues.values()
                if issue.repo == repo
                and issue.pull is not None
                and issue.state == "open"
                and issue.pull.head_repo == head_repo
                and issue.pull.head_ref == head_ref
            ),
            None,
        )

    def pulls_with_head(self, head_repo: str, head_ref: str) -> list[Issue]:
        """Open pull requests in any repository whose head is this branch."""
        return [
            issue
            for issue in self.issues.values()
            if issue.pull is not None
            and issue.state == "open"
            and issue.pull.head_repo == head_repo
            and issue.pull.head_ref == head_ref
        ]

    def thread_root(self, comment: ReviewComment) -> ReviewComment:
        while comment.in_reply_to_id is not None:
            comment = self.review_comments[comment.in_reply_to_id]
        return comment
