"""What a delivery means: DESIGN.md's trigger table as code.

Fields are read from plain JSON and anything missing makes the delivery "not for Honk"
rather than an error: GitHub Enterprise Server and older deliveries lack fields that the
newest schema requires. No network I/O happens here.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any, Literal

from honk_app.models import BRANCH_PREFIX, RunKind, Trigger

HONK_COMMAND = re.compile(r"^/honk(?:[ \t]+(?P<rest>.*))?$", re.DOTALL)
STOP_WORDS = ("stop", "cancel")
FOLLOW_UP_REVIEW_STATES = ("changes_requested", "commented")


def trigger_for(event: str, payload: Any, *, label: str) -> Trigger | None:
    """The trigger a delivery stands for, or None when Honk does not act on it."""
    if not isinstance(payload, dict) or _is_bot(payload.get("sender")):
        return None
    action = payload.get("action")
    if event == "issues" and action == "labeled":
        return _labeled(payload, label)
    if event == "issue_comment" and action == "created":
        return _comment(payload)
    if event == "pull_request_review" and action == "submitted":
        return _review(payload)
    if (event, action) in (("installation", "created"), ("installation_repositories", "added")):
        return _installed(event, payload)
    return None


def event_key(event: str, payload: Any, body: bytes) -> str:
    """What a delivery is, whatever its X-GitHub-Delivery says: a comment or a review by
    its id, a label added by the issue, the label and the issue's time of change. Two
    deliveries with one key are one event (a replay, or the same event sent twice); where
    the payload lacks those fields, the body's digest stands for it."""
    action = payload.get("action") if isinstance(payload, dict) else None
    part = _EVENT_PART.get(event)
    thing = payload.get(part) if part and isinstance(payload, dict) else None
    if isinstance(thing, dict):
        if event != "issues" and isinstance(thing.get("id"), int):
            return f"{event}.{action}:{thing['id']}"
        if event == "issues" and action == "labeled":
            parts = (thing.get("id"), _get(payload, "label", "name"), thing.get("updated_at"))
            if all(isinstance(part, int | str) for part in parts):
                return "issues.labeled:" + ":".join(str(part) for part in parts)
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


def event_time(event: str, payload: Any) -> float | None:
    """When the event happened, by the payload (None if it does not say, or not clearly)."""
    part = _EVENT_PART.get(event)
    thing = payload.get(part) if part and isinstance(payload, dict) else None
    stamp = thing.get(_EVENT_TIME[event]) if isinstance(thing, dict) else None
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp)  # "…Z" too, since Python 3.11
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


# Where each trigger's event names what it is about, and when it happened.
_EVENT_PART = {"issue_comment": "comment", "pull_request_review": "review", "issues": "issue"}
_EVENT_TIME = {"issue_comment": "created_at", "pull_request_review": "submitted_at",
               "issues": "updated_at"}


def _labeled(payload: dict[str, Any], label: str) -> Trigger | None:
    if _get(payload, "label", "name") != label:
        return None
    issue = payload.get("issue")
    if not isinstance(issue, dict) or "pull_request" in issue:
        return None
    return _trigger(RunKind.TASK, payload, _get(issue, "number"), **_issue_text(issue))


def _comment(payload: dict[str, Any]) -> Trigger | None:
    body = _get(payload, "comment", "body")
    command = parse_command(body) if isinstance(body, str) else None
    if command is None:
        return None
    issue = payload.get("issue")
    if not isinstance(issue, dict):
        return None
    comment_id = _get(payload, "comment", "id")
    if command.strip().lower() in STOP_WORDS:
        return _trigger("stop", payload, _get(issue, "number"), comment_id=comment_id)
    if "pull_request" in issue:
        return _trigger(RunKind.FOLLOWUP, payload, _get(issue, "number"), instruction=command,
                        comment_id=comment_id)
    return _trigger(RunKind.TASK, payload, _get(issue, "number"), instruction=command,
                    comment_id=comment_id, **_issue_text(issue))


def _review(payload: dict[str, Any]) -> Trigger | None:
    review = payload.get("review")
    pull = payload.get("pull_request")
    if not isinstance(review, dict) or not isinstance(pull, dict):
        return None
    if str(review.get("state", "")).lower() not in FOLLOW_UP_REVIEW_STATES:
        return None
    head_ref = _get(pull, "head", "ref")
    head_repo = _get(pull, "head", "repo", "full_name")
    if not isinstance(head_ref, str) or not head_ref.startswith(BRANCH_PREFIX):
        return None
    if head_repo != _get(payload, "repository", "full_name"):
        return None
    return _trigger(RunKind.FOLLOWUP, payload, _get(pull, "number"), review_id=review.get("id"),
                    instruction=review.get("body") or "")


def _installed(event: str, payload: dict[str, Any]) -> Trigger | None:
    key = "repositories" if event == "installation" else "repositories_added"
    repos = payload.get(key) or []
    names = tuple(r["full_name"] for r in repos if isinstance(r, dict) and "full_name" in r)
    if not names:
        return None
    installation_id = _get(payload, "installation", "id")
    sender = _get(payload, "sender", "login")
    if not isinstance(installation_id, int) or not isinstance(sender, str):
        return None
    return Trigger(kind=RunKind.LABELS, repo=names[0], number=0, installation_id=installation_id,
                   sender=sender, repos=names)


def parse_command(body: str) -> str | None:
    """The instruction of a `/honk ...` comment (may be empty), or None if it is not one."""
    text = body.strip()
    first, _, rest = text.partition("\n")
    match = HONK_COMMAND.match(first.strip())
    if match is None:
        return None
    instruction = (match.group("rest") or "").strip()
    return "\n".join(part for part in (instruction, rest.strip()) if part)


def _trigger(
    kind: RunKind | Literal["stop"], payload: dict[str, Any], number: Any, **extra: Any
) -> Trigger | None:
    repo = _get(payload, "repository", "full_name")
    installation_id = _get(payload, "installation", "id")
    sender = _get(payload, "sender", "login")
    if not (isinstance(repo, str) and isinstance(number, int) and isinstance(sender, str)):
        return None
    if not isinstance(installation_id, int):
        return None
    clone_url = _get(payload, "repository", "clone_url")
    return Trigger(kind=kind, repo=repo, number=number, installation_id=installation_id,
                   sender=sender, clone_url=clone_url if isinstance(clone_url, str) else None,
                   **{k: v for k, v in extra.items() if v is not None})


def _issue_text(issue: dict[str, Any]) -> dict[str, str]:
    """The issue's title and body as the delivery carries them (a null body is empty)."""
    title, body = issue.get("title"), issue.get("body")
    if not isinstance(title, str):
        return {}
    return {"issue_title": title, "issue_body": body if isinstance(body, str) else ""}


def _is_bot(sender: Any) -> bool:
    if not isinstance(sender, dict):
        return True
    login = sender.get("login")
    return sender.get("type") == "Bot" or not isinstance(login, str) or login.endswith("[bot]")


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data
