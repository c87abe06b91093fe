"""DESIGN.md's trigger table, row by row, on payloads shaped as GitHub sends them."""

from __future__ import annotations

from typing import Any

import pytest

from honk_app.web.triggers import parse_command, trigger_for
from tests.conftest import app_payload


def comment(body: str, *, on_pull: bool = False, sender_type: str = "User") -> dict[str, Any]:
    payload = app_payload("issue_comment", "created.payload.json")
    payload["comment"]["body"] = body
    payload["sender"]["type"] = sender_type
    if on_pull:
        payload["issue"]["pull_request"] = {"url": "https://api.github.com/x"}
    return payload


def review(state: str, *, head_ref: str = "honk/1-fix", same_repo: bool = True) -> dict[str, Any]:
    payload = app_payload("pull_request_review", "submitted.payload.json")
    payload["review"]["state"] = state
    payload["pull_request"]["head"]["ref"] = head_ref
    if not same_repo:
        payload["pull_request"]["head"]["repo"]["full_name"] = "someone/fork"
    return payload


def test_issue_labeled_with_the_configured_label_is_a_task() -> None:
    payload = app_payload("issues", "labeled.payload.json")
    payload["label"]["name"] = "honk"
    trigger = trigger_for("issues", payload, label="honk")
    assert trigger is not None
    assert (trigger.kind, trigger.repo, trigger.number) == ("task", "Codertocat/Hello-World", 1)
    assert trigger.sender == "Codertocat"
    assert trigger.installation_id == 4242
    assert trigger.lock_key == "Codertocat/Hello-World#1"


def test_other_labels_and_a_custom_label() -> None:
    payload = app_payload("issues", "labeled.payload.json")
    assert trigger_for("issues", payload, label="honk") is None  # the fixture's label is "bug"
    assert trigger_for("issues", payload, label="bug") is not None


def test_honk_comment_on_an_issue_is_a_task_with_the_instruction() -> None:
    trigger = trigger_for("issue_comment", comment("/honk use a dict\nand keep it short"),
                          label="honk")
    assert trigger is not None
    assert trigger.kind == "task"
    assert trigger.instruction == "use a dict\nand keep it short"
    assert trigger.comment_id is not None


def test_honk_comment_on_a_pull_request_is_a_follow_up() -> None:
    trigger = trigger_for("issue_comment", comment("/honk rename x", on_pull=True), label="honk")
    assert trigger is not None and trigger.kind == "followup"
    assert trigger.instruction == "rename x"


@pytest.mark.parametrize("body", ["/honk stop", "/honk  STOP ", "/honk cancel"])
def test_honk_stop_is_a_stop(body: str) -> None:
    trigger = trigger_for("issue_comment", comment(body, on_pull=True), label="honk")
    assert trigger is not None and trigger.kind == "stop"


@pytest.mark.parametrize("body", ["please /honk", "/honkify this", "honk", "", "> /honk quoted"])
def test_comments_that_are_not_commands_are_ignored(body: str) -> None:
    assert trigger_for("issue_comment", comment(body), label="honk") is None


def test_bots_never_trigger() -> None:
    bot_comment = comment("/honk go", sender_type="Bot")
    assert trigger_for("issue_comment", bot_comment, label="honk") is None
    payload = comment("/honk go")
    payload["sender"]["login"] = "honk[bot]"
    assert trigger_for("issue_comment", payload, label="honk") is None


@pytest.mark.parametrize("state", ["changes_requested", "commented"])
def test_review_on_a_honk_pull_request_is_a_follow_up(state: str) -> None:
    trigger = trigger_for("pull_request_review", review(state), label="honk")
    assert trigger is not None and trigger.kind == "followup"
    assert trigger.review_id is not None
    assert trigger.number == 2


@pytest.mark.parametrize(
    "payload",
    [review("approved"), review("commented", head_ref="feature/x"),
     review("commented", same_repo=False)],
    ids=["approval", "not-honk-branch", "fork"],
)
def test_reviews_that_start_nothing(payload: dict[str, Any]) -> None:
    assert trigger_for("pull_request_review", payload, label="honk") is None


def test_installation_events_create_labels() -> None:
    created = trigger_for("installation", app_payload("installation", "created.payload.json"),
                          label="honk")
    assert created is not None and created.kind == "labels"
    assert created.repos == ("Codertocat/Hello-World",)
    added = trigger_for(
        "installation_repositories",
        app_payload("installation_repositories", "added.payload.json"), label="honk")
    assert added is not None and added.kind == "labels"
    assert added.lock_key == "installation:957387"


@pytest.mark.parametrize("event,payload", [
    ("issues", {"action": "labeled"}),
    ("issues", {"action": "labeled", "label": {"name": "honk"}, "issue": {"number": "7"}}),
    ("issue_comment", {"action": "created", "comment": {"body": "/honk x"}}),
    ("pull_request_review", {"action": "submitted", "review": None}),
    ("issues", ["not", "a", "mapping"]),
])
def test_payloads_missing_fields_are_ignored_not_errors(event: str, payload: Any) -> None:
    assert trigger_for(event, payload, label="honk") is None


def test_parse_command() -> None:
    assert parse_command("/honk") == ""
    assert parse_command("  /honk fix it  \n\nmore detail") == "fix it\nmore detail"
    assert parse_command("/honkfix") is None


def test_a_task_keeps_the_issue_text_the_delivery_carried() -> None:
    payload = app_payload("issues", "labeled.payload.json")
    payload["label"]["name"] = "honk"
    payload["issue"].update(title="As labelled", body="The body then.")
    trigger = trigger_for("issues", payload, label="honk")
    assert trigger is not None
    assert (trigger.issue_title, trigger.issue_body) == ("As labelled", "The body then.")
    payload["issue"]["body"] = None  # an issue without a body
    trigger = trigger_for("issues", payload, label="honk")
    assert trigger is not None and (trigger.issue_title, trigger.issue_body) == ("As labelled", "")

    on_issue = comment("/honk go")
    on_issue["issue"].update(title="Seen at comment time", body="Body then.")
    trigger = trigger_for("issue_comment", on_issue, label="honk")
    assert trigger is not None and trigger.kind == "task"
    assert (trigger.issue_title, trigger.issue_body) == ("Seen at comment time", "Body then.")
    trigger = trigger_for("issue_comment", comment("/honk go", on_pull=True), label="honk")
    assert trigger is not None and trigger.kind == "followup"
    assert (trigger.issue_title, trigger.issue_body) == (None, None)


def test_a_trigger_stored_before_the_issue_text_was_kept_still_loads() -> None:
    from honk_app.models import Trigger

    payload = app_payload("issues", "labeled.payload.json")
    payload["label"]["name"] = "honk"
    trigger = trigger_for("issues", payload, label="honk")
    assert trigger is not None
    stored = trigger.to_json()
    assert Trigger.from_json(stored) == trigger
    old = {k: v for k, v in stored.items() if k not in ("issue_title", "issue_body")}
    loaded = Trigger.from_json(old)
    assert (loaded.issue_title, loaded.issue_body) == (None, None)  # the worker fetches it
