"""What happens on the simulated GitHub when someone acts: state changes and webhooks.

Both doors lead here: the REST API (an App or a user calling over HTTP; its webhooks go out
in the background) and the simulator's Python API (a test playing a user; its webhooks are
delivered before the call returns). Each operation validates the way GitHub does, changes
the records, and hands the events GitHub would send to the dispatcher.
"""

import secrets
from collections.abc import Callable, Sequence
from typing import Any, Literal

from honk_sim import github_git as git
from honk_sim.github_auth import ApiError, new_rsa_key_pair, new_token
from honk_sim.github_shapes import Shapes
from honk_sim.github_state import (
    App,
    Delivery,
    Issue,
    IssueComment,
    Label,
    Pull,
    Reaction,
    ReactionTarget,
    Repo,
    Review,
    ReviewComment,
    SimState,
    Token,
    User,
    utc_now,
)
from honk_sim.github_webhooks import WebhookDispatcher

MAX_BODY = 65536
REACTIONS = frozenset({"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"})
REVIEW_STATES = {
    "APPROVE": "APPROVED",
    "REQUEST_CHANGES": "CHANGES_REQUESTED",
    "COMMENT": "COMMENTED",
}
PayloadBuilder = Callable[[], dict[str, Any]]


def validation_failed(
    resource: str, *, code: str = "custom", field: str | None = None, message: str | None = None
) -> ApiError:
    error: dict[str, str] = {"resource": resource, "code": code}
    if field is not None:
        error["field"] = field
    if message is not None:
        error["message"] = message
    return ApiError(422, "Validation Failed", errors=[error])


def check_body(resource: str, body: str | None) -> None:
    if body is not None and len(body) > MAX_BODY:
        raise validation_failed(
            resource, field="body", message=f"body is too long (maximum is {MAX_BODY} characters)"
        )


class SimOps:
    def __init__(self, state: SimState, shapes: Shapes, dispatcher: WebhookDispatcher) -> None:
        self.state = state
        self.shapes = shapes
        self.dispatcher = dispatcher

    # people and apps

    def add_user(
        self, login: str, *, type: Literal["User", "Bot", "Organization"], with_token: bool
    ) -> User:
        """The user `login`, created if new; `with_token` gives it a personal token."""
        with self.state.lock:
            user = self.state.user(login)
            if user is None:
                user = User(login=login, id=self.state.next_id(), type=type, created_at=utc_now())
                self.state.users[login.lower()] = user
            if with_token and user.token is None:
                user.token = new_token("ghp_")
                self.state.tokens[user.token] = Token(
                    value=user.token, kind="personal", login=user.login, expires_at=None
                )
            return user

    def register_app(
        self,
        *,
        slug: str,
        name: str,
        owner: str,
        webhook_url: str | None,
        permissions: dict[str, str],
        events: list[str],
        callback_url: str | None = None,
        description: str = "",
        external_url: str = "",
    ) -> App:
        """An App as GitHub creates it: key pair, secrets, a `slug[bot]` user."""
        private_pem, public_pem = new_rsa_key_pair()
        self.add_user(owner, type="User", with_token=True)
        with self.state.lock:
            taken = {a.slug for a in self.state.apps.values()}
            base, suffix = slug, 1
            while slug in taken:
                suffix += 1
                slug = f"{base}-{suffix}"
            app_id = self.state.next_id()
            app = App(
                id=app_id,
                slug=slug,
                name=name,
                owner=owner,
                client_id=f"Iv1.{secrets.token_hex(8)}",
                client_secret=secrets.token_hex(20),
                webhook_secret=secrets.token_hex(20),
                private_key_pem=private_pem,
                public_key_pem=public_pem,
                bot_login=f"{slug}[bot]",
                permissions=dict(permissions),
                events=list(events),
                webhook_url=webhook_url,
                hook_id=self.state.next_id(),
                created_at=utc_now(),
                description=description,
                external_url=external_url,
                callback_url=callback_url,
            )
            self.state.apps[app_id] = app
            self.add_user(app.bot_login, type="Bot", with_token=False)
        return app

    # webhooks

    def emit(
        self, repo: Repo, event: str, sender: str, build: PayloadBuilder, *, now: bool
    ) -> Delivery | None:
        """Send `event` to every App installed on `repo` that subscribed to it.

        With `now`, deliveries happen before returning and the last one is returned.
        """
        with self.state.lock:
            targets = [
                (self.state.apps[i.app_id], i.id)
                for i in self.state.installations_for(repo.full_name)
                if event in i.events
            ]
            payloads = [
                (app, {**build(), **self.shapes.event_context(repo, sender, installation_id)})
                for app, installation_id in targets
            ]
        delivered: Delivery | None = None
        for app, payload in payloads:
            if now:
                delivered = self.dispatcher.deliver_now(app, event, payload) or delivered
            else:
                self.dispatcher.deliver_later(app, event, payload)
        return delivered

    # issues and comments

    def open_issue(self, repo: Repo, *, title: str, body: str | None, author: str) -> Issue:
        check_body("Issue", body)
        with self.state.lock:
            moment = utc_now()
            issue = Issue(
                id=self.state.next_id(),
                repo=repo.full_name,
                number=repo.next_number,
                title=title,
                body=body,
                author=author,
                created_at=moment,
                updated_at=moment,
            )
            repo.next_number += 1
            self.state.issues[(repo.full_name, issue.number)] = issue
        return issue

    def label(self, repo: Repo, issue: Issue, name: str) -> Label:
        with self.state.lock:
            label = repo.labels.get(name.lower())
            if label is None:
                label = Label(self.state.next_id(), name, "ededed", None, default=False)
                repo.labels[name.lower()] = label
            if label.name not in issue.labels:
                issue.labels.append(label.name)
            issue.updated_at = utc_now()
        return label

    def create_label(self, repo: Repo, *, name: str, color: str, description: str | None) -> Label:
        with self.state.lock:
            if name.lower() in repo.labels:
                raise validation_failed("Label", code="already_exists", field="name")
            label = Label(self.state.next_id(), name, color.lstrip("#"), description, False)
            repo.labels[name.lower()] = label
        return label

    def comment(
        self, repo: Repo, issue: Issue, body: str, *, author: str, app_id: int | None
    ) -> IssueComment:
        check_body("IssueComment", body)
        with self.state.lock:
            moment = utc_now()
            comment = IssueComment(
                id=self.state.next_id(),
                repo=repo.full_name,
                number=issue.number,
                author=author,
                body=body,
                created_at=moment,
                updated_at=moment,
                app_id=app_id,
            )
            self.state.issue_comments[comment.id] = comment
            issue.updated_at = moment
        return comment

    def edit_comment(self, comment: IssueComment, body: str) -> str:
        """Replace the body, keeping the old one in the history; returns the old body."""
        check_body("IssueComment", body)
        with self.state.lock:
            previous = comment.body
            comment.history.append(previous)
            comment.body = body
            comment.updated_at = utc_now()
        return previous

    def react(self, target: ReactionTarget, *, user: str, content: str) -> tuple[Reaction, bool]:
        """Add a reaction; the bool says whether it is new (201) or already there (200)."""
        if content not in REACTIONS:
            raise validation_failed("Reaction", code="invalid", field="content")
        with self.state.lock:
            for reaction in self.state.reactions:
                if (
                    reaction.target == target
                    and reaction.user == user
                    and (reaction.content == content)
                ):
                    return reaction, False
            reaction = Reaction(self.state.next_id(), target, user, content, utc_now())
            self.state.reactions.append(reaction)
        return reaction, True

    # pull requests

    def open_pull(
        self,
        repo: Repo,
        *,
        head_repo: Repo,
        head_ref: str,
        base_ref: str,
        title: str,
        body: str | None,
        author: str,
        draft: bool = False,
        maintainer_can_modify: bool = False,
    ) -> Issue:
        check_body("PullRequest", body)
        head_sha = git.rev_parse(head_repo.git_dir, f"refs/heads/{head_ref}")
        if head_sha is None:
            raise validation_failed("PullRequest", code="invalid", field="head")
        base_sha = git.rev_parse(repo.git_dir, f"refs/heads/{base_ref}")
        if base_sha is None:
            raise validation_failed("PullRequest", code="invalid", field="base")
        with self.state.lock:
            if self.state.pull_for_head(repo.full_name, head_repo.full_name, head_ref):
                raise validation_failed(
                    "PullRequest",
                    message=f"A pull request already exists for {head_repo.owner}:{head_ref}.",
                )
        if head_repo is not repo:
            git.fetch_commit(
                repo.git_dir,
                head_repo.git_dir,
                f"refs/heads/{head_ref}",
                f"refs/honk-sim/incoming/{head_ref}",
            )
        start = git.merge_base(repo.git_dir, base_sha, head_sha) or base_sha
        if git.count_commits(repo.git_dir, start, head_sha) == 0:
            raise validation_failed(
                "PullRequest", message=f"No commits between {base_ref} and {head_ref}"
            )
        issue = self.open_issue(repo, title=title, body=body, author=author)
        with self.state.lock:
            issue.pull = Pull(
                id=self.state.next_id(),
                head_repo=head_repo.full_name,
                head_ref=head_ref,
                base_ref=base_ref,
                head_sha=head_sha,
                draft=draft,
                maintainer_can_modify=maintainer_can_modify,
            )
        git.update_ref(repo.git_dir, f"refs/pull/{issue.number}/head", head_sha)
        return issue

    def pull_event(self, issue: Issue, action: str, **extra: Any) -> PayloadBuilder:
        def build() -> dict[str, Any]:
            return {
                "action": action,
                "number": issue.number,
                "pull_request": self.shapes.pull_json(issue),
                **extra,
            }

        return build

    def request_reviewers(self, repo: Repo, issue: Issue, reviewers: Sequence[str]) -> None:
        assert issue.pull is not None
        with self.state.lock:
            if any(r.lower() == issue.author.lower() for r in reviewers):
                raise validation_failed(
                    "PullRequest",
                    message="Review cannot be requested from pull request author.",
                )
            for login in reviewers:
                user = self.state.user(login)
                if user is None or self.state.role(repo, user.login) == "none":
                    raise validation_failed(
                        "PullRequest",
                        message="Reviews may only be requested from collaborators. One or more "
                        "of the users or teams you specified is not a collaborator of the "
                        f"{repo.full_name} repository.",
                    )
            for login in reviewers:
                user = self.state.user(login)
                assert user is not None
                if user.login not in issue.pull.requested_reviewers:
                    issue.pull.requested_reviewers.append(user.login)

    def review(
        self,
        repo: Repo,
        issue: Issue,
        *,
        author: str,
        state: str,
        body: str,
        comments: Sequence[dict[str, Any]],
    ) -> tuple[Review, list[ReviewComment]]:
        assert issue.pull is not None
        check_body("PullRequestReview", body)
        for item in comments:
            check_body("PullRequestReviewComment", str(item.get("body", "")))
        head_sha = issue.pull.head_sha
        base_sha = git.rev_parse(repo.git_dir, f"refs/heads/{issue.pull.base_ref}") or head_sha
        patches = {f.filename: f.patch for f in git.diff_files(repo.git_dir, base_sha, head_sha)}
        anchors = []
        for item in comments:
            patch = patches.get(str(item["path"]))
            anchor = git.anchor_line(patch, int(item["line"])) if patch else None
            if anchor is None:
                raise validation_failed(
                    "PullRequestReviewComment",
                    message="pull_request_review_thread.line must be part of the diff",
                )
            anchors.append(anchor)
        with self.state.lock:
            moment = utc_now()
            review = Review(
                id=self.state.next_id(),
                repo=repo.full_name,
                number=issue.number,
                author=author,
                state=REVIEW_STATES.get(state, state),  # type: ignore[arg-type]
                body=body,
                commit_id=head_sha,
                submitted_at=moment,
            )
            self.state.reviews[review.id] = review
            created = []
            for item, anchor in zip(comments, anchors, strict=True):
                comment = ReviewComment(
                    id=self.state.next_id(),
                    repo=repo.full_name,
                    number=issue.number,
                    review_id=review.id,
                    author=author,
                    body=str(item["body"]),
                    path=str(item["path"]),
                    line=int(item["line"]),
                    position=anchor.position,
                    diff_hunk=anchor.diff_hunk,
                    commit_id=head_sha,
                    created_at=moment,
                    updated_at=moment,
                )
                self.state.review_comments[comment.id] = comment
                created.append(comment)
            if author in issue.pull.requested_reviewers:
                issue.pull.requested_reviewers.remove(author)
            issue.updated_at = moment
        return review, created

    def reply(
        self, repo: Repo, issue: Issue, to: ReviewComment, body: str, *, author: str
    ) -> tuple[Review, ReviewComment]:
        """A reply lands in the thread of `to`, attached to the thread's top comment.

        GitHub documents replies to replies as unsupported; when given one it threads the
        new comment under the same top comment, which is what happens here.
        """
        check_body("PullRequestReviewComment", body)
        with self.state.lock:
            root = self.state.thread_root(to)
            moment = utc_now()
            review = Review(
                id=self.state.next_id(),
                repo=repo.full_name,
                number=issue.number,
                author=author,
                state="COMMENTED",
                body="",
                commit_id=root.commit_id,
                submitted_at=moment,
            )
            self.state.reviews[review.id] = review
            comment = ReviewComment(
                id=self.state.next_id(),
                repo=repo.full_name,
                number=issue.number,
                review_id=review.id,
                author=author,
                body=body,
                path=root.path,
                line=root.line,
                position=root.position,
                diff_hunk=root.diff_hunk,
                commit_id=root.commit_id,
                created_at=moment,
                updated_at=moment,
                in_reply_to_id=root.id,
            )
            self.state.review_comments[comment.id] = comment
            issue.updated_at = moment
        return review, comment

    def review_events(
        self,
        repo: Repo,
        issue: Issue,
        review: Review,
        comments: Sequence[ReviewComment],
        *,
        sender: str,
        now: bool,
    ) -> Delivery | None:
        """pull_request_review.submitted, then pull_request_review_comment.created each."""
        delivered = self.emit(
            repo,
            "pull_request_review",
            sender,
            lambda: {
                "action": "submitted",
                "review": self.shapes.review_json(review, for_webhook=True),
                "pull_request": self.shapes.pull_json(issue),
            },
            now=now,
        )
        for comment in comments:
            self.emit(
                repo,
                "pull_request_review_comment",
                sender,
                lambda comment=comment: {  # type: ignore[misc]
                    "action": "created",
                    "comment": self.shapes.review_comment_json(comment),
                    "pull_request": self.shapes.pull_json(issue),
                },
                now=now,
            )
        return delivered

    # pushes

    def pushed(
        self, repo: Repo, updates: Sequence[tuple[str, str, str]], *, pusher: str, now: bool
    ) -> Delivery | None:
        """After refs moved: the push event, then synchronize for pull requests on them."""
        delivered: Delivery | None = None
        for before, after, ref in updates:
            with self.state.lock:
                repo.pushed_at = utc_now()
            commits = git.new_commits(repo.git_dir, ref, before, after)
            delivered = (
                self.emit(
                    repo,
                    "push",
                    pusher,
                    lambda ref=ref, before=before, after=after, commits=commits: (  # type: ignore[misc]
                        self.shapes.push_payload(
                            repo,
                            ref=ref,
                            before=before,
                            after=after,
                            pusher=pusher,
                            commits=commits,
                        )
                    ),
                    now=now,
                )
                or delivered
            )
            if ref.startswith("refs/heads/") and after != git.ZERO_SHA:
                self._synchronize(
                    repo, ref.removeprefix("refs/heads/"), before, after, sender=pusher, now=now
                )
        return delivered

    def _synchronize(
        self, head_repo: Repo, branch: str, before: str, after: str, *, sender: str, now: bool
    ) -> None:
        with self.state.lock:
            pulls = self.state.pulls_with_head(head_repo.full_name, branch)
        for issue in pulls:
            assert issue.pull is not None
            base = self.state.repo(issue.repo)
            assert base is not None
            if base is not head_repo:
                git.fetch_commit(
                    base.git_dir,
                    head_repo.git_dir,
                    f"refs/heads/{branch}",
                    f"refs/pull/{issue.number}/head",
                )
            else:
                git.update_ref(base.git_dir, f"refs/pull/{issue.number}/head", after)
            with self.state.lock:
                issue.pull.head_sha = after
                issue.updated_at = utc_now()
            self.emit(
                base,
                "pull_request",
                sender,
                self.pull_event(issue, "synchronize", before=before, after=after),
                now=now,
            )
