"""GitHub's JSON, rendered from the simulator's records.

Each `*_json` method returns what GitHub's REST API answers for that object; the webhook
payloads at the end reuse them, as GitHub's own payloads do. Callers hold the state lock.
"""

from datetime import datetime
from typing import Any
from urllib.parse import quote

from honk_sim import github_git as git
from honk_sim.github_state import (
    ROLE_RANK,
    App,
    Installation,
    Issue,
    IssueComment,
    Label,
    Reaction,
    ReactionTarget,
    Repo,
    Review,
    ReviewComment,
    SimState,
    User,
    node_id,
)

REACTION_KEYS = {
    "+1": "+1",
    "-1": "-1",
    "laugh": "laugh",
    "confused": "confused",
    "heart": "heart",
    "hooray": "hooray",
    "rocket": "rocket",
    "eyes": "eyes",
}
REVIEW_STATE_IN_WEBHOOKS = {
    "APPROVED": "approved",
    "CHANGES_REQUESTED": "changes_requested",
    "COMMENTED": "commented",
}


def role_flags(role: str) -> dict[str, bool]:
    """A role as the `permissions` object of repositories and collaborators."""
    rank = ROLE_RANK[role]
    return {
        "admin": rank >= ROLE_RANK["admin"],
        "maintain": rank >= ROLE_RANK["maintain"],
        "push": rank >= ROLE_RANK["write"],
        "triage": rank >= ROLE_RANK["triage"],
        "pull": rank >= ROLE_RANK["read"],
    }


def iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


class Shapes:
    def __init__(self, state: SimState, *, api_url: str, web_url: str) -> None:
        self.state = state
        self.api = api_url
        self.web = web_url

    # people and apps

    def user_json(self, user: User) -> dict[str, Any]:
        base = f"{self.api}/users/{quote(user.login)}"
        app = self.state.app_of_bot(user.login) if user.type == "Bot" else None
        return {
            "login": user.login,
            "id": user.id,
            "node_id": node_id("User" if user.type != "Bot" else "Bot", user.id),
            "avatar_url": f"{self.web}/avatars/u/{user.id}?v=4",
            "gravatar_id": "",
            "url": base,
            "html_url": f"{self.web}/apps/{app.slug}" if app else f"{self.web}/{user.login}",
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs",
            "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": user.type,
            "user_view_type": "public",
            "site_admin": False,
        }

    def login_json(self, login: str) -> dict[str, Any]:
        user = self.state.user(login)
        if user is None:
            raise KeyError(login)
        return self.user_json(user)

    def private_user_json(self, user: User) -> dict[str, Any]:
        return {
            **self.user_json(user),
            "name": user.login,
            "company": None,
            "blog": "",
            "location": None,
            "email": None,
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "public_repos": 0,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": iso(user.created_at),
            "updated_at": iso(user.created_at),
            "private_gists": 0,
            "total_private_repos": 0,
            "owned_private_repos": 0,
            "disk_usage": 0,
            "collaborators": 0,
            "two_factor_authentication": True,
            "plan": {
                "name": "free",
                "space": 976562499,
                "private_repos": 10000,
                "collaborators": 0,
            },
        }

    def app_json(self, app: App) -> dict[str, Any]:
        return {
            "id": app.id,
            "slug": app.slug,
            "node_id": node_id("Integration", app.id),
            "client_id": app.client_id,
            "owner": self.login_json(app.owner),
            "name": app.name,
            "description": app.description,
            "external_url": app.external_url or f"{self.web}/apps/{app.slug}",
            "html_url": f"{self.web}/apps/{app.slug}",
            "created_at": iso(app.created_at),
            "updated_at": iso(app.created_at),
            "permissions": dict(app.permissions),
            "events": list(app.events),
            "installations_count": sum(
                1 for i in self.state.installations.values() if i.app_id == app.id
            ),
        }

    def installation_json(self, installation: Installation) -> dict[str, Any]:
        app = self.state.apps[installation.app_id]
        account = self.state.user(installation.account)
        assert account is not None
        return {
            "id": installation.id,
            "client_id": app.client_id,
            "account": self.user_json(account),
            "repository_selection": "selected",
            "access_tokens_url": f"{self.api}/app/installations/{installation.id}/access_tokens",
            "repositories_url": f"{self.api}/installation/repositories",
            "html_url": f"{self.web}/settings/installations/{installation.id}",
            "app_id": app.id,
            "app_slug": app.slug,
            "target_id": account.id,
            "target_type": "Organization" if account.type == "Organization" else "User",
            "permissions": dict(installation.permissions),
            "events": list(installation.events),
            "created_at": iso(installation.created_at),
            "updated_at": iso(installation.created_at),
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    # repositories

    def repo_json(self, repo: Repo, *, viewer: str | None = None) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        html = f"{self.web}/{repo.full_name}"
        templates = {
            "archive_url": "/{archive_format}{/ref}",
            "assignees_url": "/assignees{/user}",
            "blobs_url": "/git/blobs{/sha}",
            "branches_url": "/branches{/branch}",
            "collaborators_url": "/collaborators{/collaborator}",
            "comments_url": "/comments{/number}",
            "commits_url": "/commits{/sha}",
            "compare_url": "/compare/{base}...{head}",
            "contents_url": "/contents/{+path}",
            "contributors_url": "/contributors",
            "deployments_url": "/deployments",
            "downloads_url": "/downloads",
            "events_url": "/events",
            "forks_url": "/forks",
            "git_commits_url": "/git/commits{/sha}",
            "git_refs_url": "/git/refs{/sha}",
            "git_tags_url": "/git/tags{/sha}",
            "hooks_url": "/hooks",
            "issue_comment_url": "/issues/comments{/number}",
            "issue_events_url": "/issues/events{/number}",
            "issues_url": "/issues{/number}",
            "keys_url": "/keys{/key_id}",
            "labels_url": "/labels{/name}",
            "languages_url": "/languages",
            "merges_url": "/merges",
            "milestones_url": "/milestones{/number}",
            "notifications_url": "/notifications{?since,all,participating}",
            "pulls_url": "/pulls{/number}",
            "releases_url": "/releases{/id}",
            "stargazers_url": "/stargazers",
            "statuses_url": "/statuses/{sha}",
            "subscribers_url": "/subscribers",
            "subscription_url": "/subscription",
            "tags_url": "/tags",
            "teams_url": "/teams",
            "trees_url": "/git/trees{/sha}",
        }
        host = self.web.split("://", 1)[1]
        open_issues = sum(
            1 for i in self.state.issues.values() if i.repo == repo.full_name and i.state == "open"
        )
        shape: dict[str, Any] = {
            "id": repo.id,
            "node_id": node_id("Repository", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self.login_json(repo.owner),
            "html_url": html,
            "description": None,
            "fork": repo.fork_of is not None,
            "url": api,
            **{key: api + suffix for key, suffix in templates.items()},
            "git_url": f"git://{host}/{repo.full_name}.git",
            "ssh_url": f"git@{host.split(':')[0]}:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "mirror_url": None,
            "homepage": None,
            "language": None,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 0,
            "default_branch": repo.default_branch,
            "open_issues_count": open_issues,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": True,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private" if repo.private else "public",
            "pushed_at": iso(repo.pushed_at),
            "created_at": iso(repo.created_at),
            "updated_at": iso(repo.pushed_at),
            "allow_forking": True,
            "web_commit_signoff_required": False,
            "subscribers_count": 0,
            "network_count": 0,
            "license": None,
            "forks": 0,
            "open_issues": open_issues,
            "watchers": 0,
        }
        if viewer is not None:
            shape["permissions"] = role_flags(self.state.role(repo, viewer))
        if repo.fork_of:
            parent = self.state.repo(repo.fork_of)
            if parent is not None:
                shape["parent"] = self.repo_json(parent)
                shape["source"] = shape["parent"]
        return shape

    def repo_brief_json(self, repo: Repo) -> dict[str, Any]:
        """The short form used in installation payloads."""
        return {
            "id": repo.id,
            "node_id": node_id("Repository", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
        }

    def label_json(self, repo: Repo, label: Label) -> dict[str, Any]:
        return {
            "id": label.id,
            "node_id": node_id("Label", label.id),
            "url": f"{self.api}/repos/{repo.full_name}/labels/{quote(label.name)}",
            "name": label.name,
            "color": label.color,
            "default": label.default,
            "description": label.description,
            "archived_at": None,
            "archived_by": None,
        }

    # issues and comments

    def _reactions_rollup(self, url: str, target: ReactionTarget) -> dict[str, Any]:
        counts = dict.fromkeys(REACTION_KEYS, 0)
        for reaction in self.state.reactions:
            if reaction.target == target:
                counts[reaction.content] += 1
        return {"url": f"{url}/reactions", "total_count": sum(counts.values()), **counts}

    def author_association(self, repo_name: str, login: str) -> str:
        repo = self.state.repo(repo_name)
        if repo is None:
            return "NONE"
        if login.lower() == repo.owner.lower():
            return "OWNER"
        if repo.roles.get(login.lower(), "none") != "none":
            return "COLLABORATOR"
        return "NONE"

    def issue_json(self, issue: Issue) -> dict[str, Any]:
        repo = self.state.repo(issue.repo)
        assert repo is not None
        api = f"{self.api}/repos/{repo.full_name}/issues/{issue.number}"
        kind = "pull" if issue.pull else "issues"
        comments = sum(
            1
            for c in self.state.issue_comments.values()
            if c.repo == repo.full_name and c.number == issue.number
        )
        shape: dict[str, Any] = {
            "url": api,
            "repository_url": f"{self.api}/repos/{repo.full_name}",
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": f"{self.web}/{repo.full_name}/{kind}/{issue.number}",
            "id": issue.id,
            "node_id": node_id("PullRequest" if issue.pull else "Issue", issue.id),
            "number": issue.number,
            "title": issue.title,
            "user": self.login_json(issue.author),
            "labels": [
                self.label_json(repo, repo.labels[name.lower()])
                for name in issue.labels
                if name.lower() in repo.labels
            ],
            "state": issue.state,
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": comments,
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_at": iso(issue.closed_at),
            "author_association": self.author_association(repo.full_name, issue.author),
            "active_lock_reason": None,
            "body": issue.body,
            "closed_by": None,
            "reactions": self._reactions_rollup(api, ("issue", repo.full_name, issue.number)),
            "timeline_url": f"{api}/timeline",
            "performed_via_github_app": None,
            "state_reason": None if issue.state == "open" else "completed",
        }
        if issue.pull:
            shape["draft"] = issue.pull.draft
            shape["pull_request"] = {
                "url": f"{self.api}/repos/{repo.full_name}/pulls/{issue.number}",
                "html_url": f"{self.web}/{repo.full_name}/pull/{issue.number}",
                "diff_url": f"{self.web}/{repo.full_name}/pull/{issue.number}.diff",
                "patch_url": f"{self.web}/{repo.full_name}/pull/{issue.number}.patch",
                "merged_at": None,
            }
        return shape

    def issue_comment_json(self, comment: IssueComment) -> dict[str, Any]:
        issue = self.state.issue(comment.repo, comment.number)
        assert issue is not None
        kind = "pull" if issue.pull else "issues"
        api = f"{self.api}/repos/{comment.repo}/issues/comments/{comment.id}"
        app = self.state.apps.get(comment.app_id) if comment.app_id else None
        return {
            "url": api,
            "html_url": f"{self.web}/{comment.repo}/{kind}/{comment.number}"
            f"#issuecomment-{comment.id}",
            "issue_url": f"{self.api}/repos/{comment.repo}/issues/{comment.number}",
            "id": comment.id,
            "node_id": node_id("IssueComment", comment.id),
            "user": self.login_json(comment.author),
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "author_association": self.author_association(comment.repo, comment.author),
            "body": comment.body,
            "reactions": self._reactions_rollup(api, ("issue_comment", "", comment.id)),
            "performed_via_github_app": self.app_json(app) if app else None,
        }

    def reaction_json(self, reaction: Reaction) -> dict[str, Any]:
        return {
            "id": reaction.id,
            "node_id": node_id("Reaction", reaction.id),
            "user": self.login_json(reaction.user),
            "content": reaction.content,
            "created_at": iso(reaction.created_at),
        }

    # pull requests

    def pull_json(self, issue: Issue) -> dict[str, Any]:
        pull = issue.pull
        assert pull is not None
        repo = self.state.repo(issue.repo)
        head_repo = self.state.repo(pull.head_repo)
        assert repo is not None
        api = f"{self.api}/repos/{repo.full_name}/pulls/{issue.number}"
        issue_api = f"{self.api}/repos/{repo.full_name}/issues/{issue.number}"
        html = f"{self.web}/{repo.full_name}/pull/{issue.number}"
        base_sha = git.rev_parse(repo.git_dir, f"refs/heads/{pull.base_ref}") or git.ZERO_SHA
        head_sha = pull.head_sha
        files = git.diff_files(repo.git_dir, base_sha, head_sha)
        start = git.merge_base(repo.git_dir, base_sha, head_sha) or base_sha
        review_comments = sum(
            1
            for c in self.state.review_comments.values()
            if c.repo == repo.full_name and c.number == issue.number
        )
        head_owner = head_repo.owner if head_repo else repo.owner
        return {
            "url": api,
            "id": pull.id,
            "node_id": node_id("PullRequest", pull.id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": issue_api,
            "commits_url": f"{api}/commits",
            "review_comments_url": f"{api}/comments",
            "review_comment_url": f"{self.api}/repos/{repo.full_name}/pulls/comments{{/number}}",
            "comments_url": f"{issue_api}/comments",
            "statuses_url": f"{self.api}/repos/{repo.full_name}/statuses/{head_sha}",
            "number": issue.number,
            "state": issue.state,
            "locked": False,
            "title": issue.title,
            "user": self.login_json(issue.author),
            "body": issue.body,
            "labels": [
                self.label_json(repo, repo.labels[name.lower()])
                for name in issue.labels
                if name.lower() in repo.labels
            ],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_at": iso(issue.closed_at),
            "merged_at": None,
            "merge_commit_sha": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [self.login_json(r) for r in pull.requested_reviewers],
            "requested_teams": [],
            "head": {
                "label": f"{head_owner}:{pull.head_ref}",
                "ref": pull.head_ref,
                "sha": head_sha,
                "user": self.login_json(head_owner),
                "repo": self.repo_json(head_repo) if head_repo else None,
            },
            "base": {
                "label": f"{repo.owner}:{pull.base_ref}",
                "ref": pull.base_ref,
                "sha": base_sha,
                "user": self.login_json(repo.owner),
                "repo": self.repo_json(repo),
            },
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "issue": {"href": issue_api},
                "comments": {"href": f"{issue_api}/comments"},
                "review_comments": {"href": f"{api}/comments"},
                "review_comment": {
                    "href": f"{self.api}/repos/{repo.full_name}/pulls/comments{{/number}}"
                },
                "commits": {"href": f"{api}/commits"},
                "statuses": {"href": f"{self.api}/repos/{repo.full_name}/statuses/{head_sha}"},
            },
            "author_association": self.author_association(repo.full_name, issue.author),
            "auto_merge": None,
            "draft": pull.draft,
            "merged": False,
            "mergeable": None,
            "rebaseable": None,
            "mergeable_state": "unknown",
            "merged_by": None,
            "comments": sum(
                1
                for c in self.state.issue_comments.values()
                if c.repo == repo.full_name and c.number == issue.number
            ),
            "review_comments": review_comments,
            "maintainer_can_modify": pull.maintainer_can_modify,
            "commits": git.count_commits(repo.git_dir, start, head_sha),
            "additions": sum(f.additions for f in files),
            "deletions": sum(f.deletions for f in files),
            "changed_files": len(files),
        }

    def diff_entry_json(self, repo: Repo, head_sha: str, entry: git.FileDiff) -> dict[str, Any]:
        shape: dict[str, Any] = {
            "sha": None,
            "filename": entry.filename,
            "status": entry.status,
            "additions": entry.additions,
            "deletions": entry.deletions,
            "changes": entry.additions + entry.deletions,
            "blob_url": f"{self.web}/{repo.full_name}/blob/{head_sha}/{quote(entry.filename)}",
            "raw_url": f"{self.web}/{repo.full_name}/raw/{head_sha}/{quote(entry.filename)}",
            "contents_url": f"{self.api}/repos/{repo.full_name}/contents/"
            f"{quote(entry.filename)}?ref={head_sha}",
        }
        if entry.patch is not None:
            shape["patch"] = entry.patch
        if entry.previous_filename:
            shape["previous_filename"] = entry.previous_filename
        return shape

    def review_json(self, review: Review, *, for_webhook: bool = False) -> dict[str, Any]:
        html = f"{self.web}/{review.repo}/pull/{review.number}#pullrequestreview-{review.id}"
        pull_api = f"{self.api}/repos/{review.repo}/pulls/{review.number}"
        return {
            "id": review.id,
            "node_id": node_id("PullRequestReview", review.id),
            "user": self.login_json(review.author),
            "body": review.body if not for_webhook else (review.body or None),
            "commit_id": review.commit_id,
            "submitted_at": iso(review.submitted_at),
            "state": REVIEW_STATE_IN_WEBHOOKS[review.state] if for_webhook else review.state,
            "html_url": html,
            "pull_request_url": pull_api,
            "author_association": self.author_association(review.repo, review.author),
            "_links": {"html": {"href": html}, "pull_request": {"href": pull_api}},
        }

    def review_comment_json(self, comment: ReviewComment) -> dict[str, Any]:
        api = f"{self.api}/repos/{comment.repo}/pulls/comments/{comment.id}"
        html = f"{self.web}/{comment.repo}/pull/{comment.number}#discussion_r{comment.id}"
        pull_api = f"{self.api}/repos/{comment.repo}/pulls/{comment.number}"
        shape: dict[str, Any] = {
            "url": api,
            "pull_request_review_id": comment.review_id,
            "id": comment.id,
            "node_id": node_id("PullRequestReviewComment", comment.id),
            "diff_hunk": comment.diff_hunk,
            "path": comment.path,
            "position": comment.position,
            "original_position": comment.position,
            "commit_id": comment.commit_id,
            "original_commit_id": comment.commit_id,
            "user": self.login_json(comment.author),
            "body": comment.body,
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "html_url": html,
            "pull_request_url": pull_api,
            "author_association": self.author_association(comment.repo, comment.author),
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "pull_request": {"href": pull_api},
            },
            "reactions": self._reactions_rollup(api, ("review_comment", "", comment.id)),
            "start_line": None,
            "original_start_line": None,
            "start_side": None,
            "line": comment.line,
            "original_line": comment.line,
            "side": "RIGHT",
            "subject_type": "line",
        }
        if comment.in_reply_to_id is not None:
            shape["in_reply_to_id"] = comment.in_reply_to_id
        return shape

    # webhook payloads

    def event_context(self, repo: Repo, sender: str, installation_id: int) -> dict[str, Any]:
        return {
            "repository": self.repo_json(repo),
            "sender": self.login_json(sender),
            "installation": {
                "id": installation_id,
                "node_id": node_id("IntegrationInstallation", installation_id),
            },
        }

    def push_payload(
        self,
        repo: Repo,
        *,
        ref: str,
        before: str,
        after: str,
        pusher: str,
        commits: list[git.CommitInfo],
    ) -> dict[str, Any]:
        pusher_user = self.state.user(pusher)
        repository = self.repo_json(repo)
        owner = self.state.user(repo.owner)
        repository["owner"] = {
            "name": repo.owner,
            "email": owner.email if owner else None,
            **repository["owner"],
        }
        repository["pushed_at"] = int(repo.pushed_at.timestamp())
        repository["created_at"] = int(repo.created_at.timestamp())
        repository["stargazers"] = 0
        repository["master_branch"] = repo.default_branch
        commit_shapes = [self._push_commit_json(repo, c) for c in commits]
        return {
            "ref": ref,
            "before": before,
            "after": after,
            "repository": repository,
            "pusher": {
                "name": pusher,
                "email": pusher_user.email if pusher_user and pusher_user.type == "User" else None,
            },
            "created": before == git.ZERO_SHA,
            "deleted": after == git.ZERO_SHA,
            "forced": False,
            "base_ref": None,
            "compare": f"{self.web}/{repo.full_name}/compare/{before[:12]}...{after[:12]}",
            "commits": commit_shapes,
            "head_commit": commit_shapes[-1] if commit_shapes else None,
        }

    def _push_commit_json(self, repo: Repo, commit: git.CommitInfo) -> dict[str, Any]:
        return {
            "id": commit.sha,
            "tree_id": commit.tree,
            "distinct": True,
            "message": commit.message,
            "timestamp": commit.committed_at,
            "url": f"{self.web}/{repo.full_name}/commit/{commit.sha}",
            "author": {
                "name": commit.author_name,
                "email": commit.author_email,
                "username": commit.author_name,
            },
            "committer": {
                "name": commit.committer_name,
                "email": commit.committer_email,
                "username": commit.committer_name,
            },
            "added": commit.added,
            "removed": commit.removed,
            "modified": commit.modified,
        }
