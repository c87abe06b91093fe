"""The GitHub simulator, exercised the way Honk uses it: githubkit over HTTP, git over
smart HTTP, and webhooks received by a real Starlette app that checks the signature."""

import asyncio
import gzip
import hashlib
import hmac
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
import uvicorn
from githubkit import AppAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.compat import type_validate_python
from githubkit.exception import RequestFailed, SecondaryRateLimitExceeded
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from honk_sim.github import GitHubSim, SimApp
from honk_sim.github_auth import new_rsa_key_pair

with __import__("warnings").catch_warnings():
    __import__("warnings").simplefilter("ignore", DeprecationWarning)
    from githubkit.versions.latest import models

REPO = "acme/widgets"
FILES = {
    "README.md": "# widgets\n",
    "src/widgets.py": "".join(f"line {i}\n" for i in range(1, 21)),
}


# a tiny app that receives webhooks, as Honk's web process would


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 202


def serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []

    async def hook(request: Request) -> JSONResponse:
        box[0].received.append(Received(dict(request.headers), await request.body()))
        return JSONResponse({"accepted": True}, status_code=box[0].status)

    server, thread, url = serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))
    box.append(Receiver(f"{url}/hook"))
    yield box[0]
    server.should_exit = True
    thread.join(timeout=5)


# the simulator, with one App installed on one repository


@dataclass
class World:
    sim: GitHubSim
    app: SimApp
    installation_id: int
    alice_token: str  # the owner
    bob_token: str  # a collaborator with write access


@pytest.fixture
def world(tmp_path: Path, receiver: Receiver) -> Iterator[World]:
    with GitHubSim(tmp_path / "sim") as sim:
        app = sim.create_app(webhook_url=receiver.url)
        alice = sim.add_user("acme")
        bob = sim.add_user("bob")
        sim.create_repo(REPO, FILES)
        sim.set_permission(REPO, "bob", "write")
        installation_id = sim.install([REPO])
        yield World(sim, app, installation_id, alice, bob)


def app_client(world: World) -> GitHub[Any]:
    return GitHub(AppAuthStrategy(world.app.id, world.app.private_key_pem),
                  base_url=world.sim.api_url, auto_retry=False)


def installation_client(world: World) -> GitHub[Any]:
    return app_client(world).with_auth(
        AppAuthStrategy(world.app.id, world.app.private_key_pem).as_installation(
            world.installation_id
        )
    )


def user_client(world: World, token: str) -> GitHub[Any]:
    return GitHub(TokenAuthStrategy(token), base_url=world.sim.api_url, auto_retry=False)


def installation_token(world: World, **data: Any) -> str:
    gh = app_client(world)
    response = gh.rest.apps.create_installation_access_token(world.installation_id, **data)
    return response.parsed_data.token


def events(receiver: Receiver) -> list[tuple[str, dict[str, Any]]]:
    return [(r.headers["x-github-event"], json.loads(r.body)) for r in receiver.received]


# git helpers


def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"], "HOME": str(cwd or "/tmp"), "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    return subprocess.run(
        ["git", "-c", "user.name=Honk", "-c", "user.email=honk@example.com", *args],
        cwd=cwd, env=env, capture_output=True, text=True, check=False,
    )


def clone_url(world: World, token: str | None, repo: str = REPO) -> str:
    host = world.sim.web_url.removeprefix("http://")
    credentials = f"x-access-token:{token}@" if token else ""
    return f"http://{credentials}{host}/{repo}.git"


# App authentication


def test_app_endpoints_answer_in_githubs_shapes(world: World) -> None:
    gh = app_client(world)
    app = gh.rest.apps.get_authenticated().parsed_data
    assert (app.id, app.slug) == (world.app.id, "honk")
    installation = gh.rest.apps.get_repo_installation("acme", "widgets").parsed_data
    assert installation.id == world.installation_id
    assert installation.account is not None
    assert gh.rest.apps.get_installation(world.installation_id).parsed_data.app_id == app.id
    token = gh.rest.apps.create_installation_access_token(
        world.installation_id, data={"repositories": ["widgets"]}
    ).parsed_data
    assert token.token.startswith("ghs_")
    assert token.permissions.issues == "write"
    assert not token.permissions.workflows
    expires = datetime.fromisoformat(token.expires_at.replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert [r.full_name for r in token.repositories or []] == [REPO]


def test_repository_installation_is_404_where_the_app_is_not_installed(world: World) -> None:
    world.sim.create_repo("acme/other", {"a": "b"})
    gh = app_client(world)
    with pytest.raises(RequestFailed) as failure:
        gh.rest.apps.get_repo_installation("acme", "other")
    assert failure.value.response.status_code == 404


def _jwt(world: World, key: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": str(world.app.id), "iat": now - 30, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm="RS256")


@pytest.mark.parametrize(
    ("case", "offsets"),
    [
        ("signed with another key", {}),
        ("expired", {"iat": -700, "exp": -60}),
        ("expiring too far ahead", {"exp": 3600}),
        ("issued in the future", {"iat": 300}),
        ("for another App", {"iss": None}),
    ],
)
def test_bad_jwts_are_refused(world: World, case: str, offsets: dict[str, int | None]) -> None:
    key = new_rsa_key_pair()[0] if case == "signed with another key" else world.app.private_key_pem
    now = int(time.time())
    claims: dict[str, Any] = {k: now + v for k, v in offsets.items() if v is not None}
    if "iss" in offsets:
        claims["iss"] = "999999999"
    response = httpx.get(f"{world.sim.api_url}/app",
                         headers={"Authorization": f"Bearer {_jwt(world, key, **claims)}"})
    assert response.status_code == 401, case
    assert response.json()["message"]
    good = _jwt(world, world.app.private_key_pem)
    assert httpx.get(f"{world.sim.api_url}/app",
                     headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_manifest_flow_creates_a_working_app(world: World, receiver: Receiver) -> None:
    manifest = {
        "name": "Honk Local",
        "url": "http://127.0.0.1:9/",
        "hook_attributes": {"url": receiver.url},
        "redirect_url": "http://127.0.0.1:9/setup/done",
        "default_permissions": {"contents": "write", "issues": "write", "metadata": "read"},
        "default_events": ["issues", "issue_comment"],
    }
    # the browser's form post to GitHub, then the redirect back with a code
    form = httpx.post(f"{world.sim.web_url}/settings/apps/new?state=xyz",
                      data={"manifest": json.dumps(manifest)})
    assert form.status_code == 302
    redirect = urlsplit(form.headers["location"])
    assert redirect.path == "/setup/done"
    query = parse_qs(redirect.query)
    assert query["state"] == ["xyz"]
    anonymous = GitHub(base_url=world.sim.api_url)
    conversion = anonymous.rest.apps.create_from_manifest(query["code"][0])
    created = conversion.parsed_data
    assert conversion.status_code == 201
    assert created.slug == "honk-local"
    assert created.webhook_secret and created.client_secret
    signed_in = GitHub(AppAuthStrategy(created.id, created.pem), base_url=world.sim.api_url)
    assert signed_in.rest.apps.get_authenticated().parsed_data.name == "Honk Local"
    # a code is good once
    with pytest.raises(RequestFailed):
        anonymous.rest.apps.create_from_manifest(query["code"][0])
    # GitHub pings a new App's webhook, signed with the new secret
    world.sim.wait_for_deliveries()
    ping = next(r for r in receiver.received if r.headers["x-github-event"] == "ping")
    digest = hmac.new(created.webhook_secret.encode(), ping.body, hashlib.sha256).hexdigest()
    assert ping.headers["x-hub-signature-256"] == f"sha256={digest}"
    assert json.loads(ping.body)["hook"]["app_id"] == created.id
    direct = world.sim.manifest_code(manifest)
    assert anonymous.rest.apps.create_from_manifest(direct).parsed_data.id != created.id


# tokens


def test_an_installation_token_only_reaches_its_repositories(world: World) -> None:
    world.sim.create_repo("acme/gadgets", {"a": "b"})
    world.sim.add_repos_to_installation(world.installation_id, ["acme/gadgets"])
    world.sim.create_repo("acme/secret", {"a": "b"})
    scoped = user_client(world, installation_token(world, repositories=["widgets"]))
    assert scoped.rest.repos.get("acme", "widgets").parsed_data.full_name == REPO
    for name in ("gadgets", "secret"):
        with pytest.raises(RequestFailed) as failure:
            scoped.rest.repos.get("acme", name)
        assert failure.value.response.status_code == 403
    whole = user_client(world, installation_token(world))
    assert whole.rest.repos.get("acme", "gadgets").parsed_data.name == "gadgets"
    with pytest.raises(RequestFailed) as failure:
        whole.rest.repos.get("acme", "secret")
    assert failure.value.response.status_code == 403


def test_expired_and_unknown_tokens_are_401(world: World) -> None:
    world.sim.token_lifetime = timedelta(seconds=1)
    token = installation_token(world)
    gh = user_client(world, token)
    gh.rest.repos.get("acme", "widgets")
    time.sleep(1.1)
    for bad in (token, "ghs_not-a-token"):
        gh = user_client(world, bad)
        with pytest.raises(RequestFailed) as failure:
            gh.rest.repos.get("acme", "widgets")
        assert failure.value.response.status_code == 401
        assert failure.value.response.json()["message"] == "Bad credentials"


def test_a_token_cannot_exceed_the_installation(world: World) -> None:
    with pytest.raises(RequestFailed) as failure:
        installation_token(world, permissions={"workflows": "write"})
    assert failure.value.response.status_code == 422
    read_only = user_client(world, installation_token(world, permissions={"issues": "read"}))
    number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
    assert read_only.rest.issues.get("acme", "widgets", number).parsed_data.number == number
    with pytest.raises(RequestFailed) as failure:
        read_only.rest.issues.create_comment("acme", "widgets", number, body="hi")
    assert failure.value.response.status_code == 403


def test_nothing_is_delivered_where_the_app_is_not_installed(world: World,
                                                             receiver: Receiver) -> None:
    world.sim.create_repo("acme/elsewhere", {"a": "b"})
    number = world.sim.open_issue("acme/elsewhere", title="t", body="b", author="acme")
    before = len(receiver.received)
    assert world.sim.label_issue("acme/elsewhere", number, "honk", sender="acme") is None
    assert len(receiver.received) == before
    assert world.sim.issue("acme/elsewhere", number)["labels"][0]["name"] == "honk"


def test_users_act_with_their_own_role(world: World) -> None:
    mallory = world.sim.add_user("mallory")
    gh = user_client(world, mallory)
    with pytest.raises(RequestFailed) as failure:
        gh.rest.repos.get("acme", "widgets")
    assert failure.value.response.status_code == 404
    bob = user_client(world, world.bob_token)
    repo = bob.rest.repos.get("acme", "widgets").parsed_data
    assert repo.permissions is not None and repo.permissions.push


# repositories, issues, comments, reactions


def test_collaborator_permission(world: World) -> None:
    world.sim.add_user("carol")
    world.sim.set_permission(REPO, "carol", "triage")
    gh = installation_client(world)
    answers = {
        login: gh.rest.repos.get_collaborator_permission_level("acme", "widgets", login)
        .parsed_data
        for login in ("acme", "bob", "carol", "honk[bot]")
    }
    assert (answers["acme"].permission, answers["acme"].role_name) == ("admin", "admin")
    assert (answers["bob"].permission, answers["bob"].role_name) == ("write", "write")
    assert (answers["carol"].permission, answers["carol"].role_name) == ("read", "triage")
    assert answers["honk[bot]"].permission == "none"
    with pytest.raises(RequestFailed) as failure:
        gh.rest.repos.get_collaborator_permission_level("acme", "widgets", "nobody")
    assert failure.value.response.status_code == 404


def test_issue_comments_round_trip(world: World, receiver: Receiver) -> None:
    number = world.sim.open_issue(REPO, title="Fix the widget", body="It's broken",
                                  author="bob")
    gh = installation_client(world)
    issue = gh.rest.issues.get("acme", "widgets", number).parsed_data
    assert (issue.title, issue.user and issue.user.login) == ("Fix the widget", "bob")
    created = gh.rest.issues.create_comment("acme", "widgets", number, body="On it").parsed_data
    assert created.user is not None and created.user.login == "honk[bot]"
    assert created.user.type == "Bot"
    assert created.performed_via_github_app is not None
    edited = gh.rest.issues.update_comment("acme", "widgets", created.id,
                                           body="Done").parsed_data
    assert edited.body == "Done"
    fetched = gh.rest.issues.get_comment("acme", "widgets", created.id).parsed_data
    assert fetched.body == "Done"
    listed = gh.rest.issues.list_comments("acme", "widgets", number).parsed_data
    assert [c.body for c in listed] == ["Done"]
    assert world.sim.comments(REPO, number)[0]["history"] == ["On it"]
    world.sim.wait_for_deliveries()
    bot_events = [(e, p["action"], p["sender"]["type"]) for e, p in events(receiver)
                  if p.get("sender", {}).get("login") == "honk[bot]"]
    assert bot_events == [("issue_comment", "created", "Bot"),
                          ("issue_comment", "edited", "Bot")]


def test_comment_lists_paginate_with_link_headers(world: World) -> None:
    number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
    for index in range(5):
        world.sim.comment(REPO, number, f"comment {index}", author="bob")
    gh = installation_client(world)
    page = gh.rest.issues.list_comments("acme", "widgets", number, per_page=2)
    assert 'rel="next"' in page.headers["link"]
    every = list(gh.rest.paginate(gh.rest.issues.list_comments, owner="acme", repo="widgets",
                                  issue_number=number, per_page=2))
    assert [c.body for c in every] == [f"comment {i}" for i in range(5)]


def test_reactions_are_created_once(world: World) -> None:
    number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
    world.sim.comment(REPO, number, "/honk please", author="acme")
    comment_id = world.sim.comments(REPO, number)[0]["id"]
    gh = installation_client(world)
    first = gh.rest.reactions.create_for_issue("acme", "widgets", number, content="eyes")
    again = gh.rest.reactions.create_for_issue("acme", "widgets", number, content="eyes")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.parsed_data.id == again.parsed_data.id
    on_comment = gh.rest.reactions.create_for_issue_comment("acme", "widgets", comment_id,
                                                            content="rocket")
    assert on_comment.status_code == 201
    assert on_comment.parsed_data.user is not None
    assert on_comment.parsed_data.user.login == "honk[bot]"
    assert [r["content"] for r in world.sim.reactions(REPO, number)] == ["eyes"]
    assert [r["content"] for r in world.sim.reactions(REPO, number, comment_id=comment_id)] == [
        "rocket"
    ]
    assert world.sim.issue(REPO, number)["reactions"]["eyes"] == 1
    with pytest.raises(RequestFailed) as failure:
        post_as_installation(world, f"/repos/{REPO}/issues/{number}/reactions", {"content": "tada"})
    assert failure.value.response.status_code == 422


def post_as_installation(world: World, path: str, body: dict[str, Any]) -> Any:
    gh = user_client(world, installation_token(world))
    return gh.request("POST", path, json=body)


def test_labels(world: World) -> None:
    gh = installation_client(world)
    assert gh.rest.issues.get_label("acme", "widgets", "bug").parsed_data.default is True
    with pytest.raises(RequestFailed) as failure:
        gh.rest.issues.get_label("acme", "widgets", "honk")
    assert failure.value.response.status_code == 404
    created = gh.rest.issues.create_label("acme", "widgets", name="honk", color="fbca04",
                                          description="Honk works on this")
    assert created.status_code == 201
    assert created.parsed_data.name == "honk"
    with pytest.raises(RequestFailed) as failure:
        gh.rest.issues.create_label("acme", "widgets", name="Honk", color="fbca04")
    assert failure.value.response.status_code == 422
    assert failure.value.response.json()["errors"][0]["code"] == "already_exists"
    assert "honk" in [label["name"] for label in world.sim.labels(REPO)]


@pytest.mark.parametrize("size", [65536, 65537])
def test_bodies_are_capped_at_65536_characters(world: World, size: int) -> None:
    number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
    world.sim.push_files(REPO, "feature", {"src/widgets.py": "changed\n"}, author="acme",
                         message="change")
    gh = installation_client(world)
    body = "x" * size
    calls = [
        lambda: gh.rest.issues.create_comment("acme", "widgets", number, body=body),
        lambda: gh.rest.pulls.create("acme", "widgets", head="feature", base="main",
                                     title="t", body=body),
    ]
    for call in calls:
        if size <= 65536:
            assert call().status_code == 201
            continue
        with pytest.raises(RequestFailed) as failure:
            call()
        assert failure.value.response.status_code == 422
        errors = failure.value.response.json()["errors"]
        assert errors[0]["message"] == "body is too long (maximum is 65536 characters)"


# pull requests


def test_pull_requests(world: World, receiver: Receiver) -> None:
    sim = world.sim
    gh = installation_client(world)
    with pytest.raises(RequestFailed) as failure:
        gh.rest.pulls.create("acme", "widgets", head="honk/1", base="main", title="t")
    assert failure.value.response.json()["errors"][0]["field"] == "head"
    git_dir = sim.git_dir(REPO)
    subprocess.run(["git", "--git-dir", str(git_dir), "update-ref", "refs/heads/honk/1",
                    sim.branches(REPO)["main"]], check=True)
    with pytest.raises(RequestFailed) as failure:
        gh.rest.pulls.create("acme", "widgets", head="honk/1", base="main", title="t")
    assert failure.value.response.json()["errors"][0]["message"] == (
        "No commits between main and honk/1"
    )
    head_sha = sim.push_files(REPO, "honk/1", {"src/widgets.py": "line 1\nLINE 2\n",
                                               "NEW.md": "new\n"},
                              author="acme", message="work")
    created = gh.rest.pulls.create("acme", "widgets", head="honk/1", base="main",
                                   title="Fix the widget", body="Closes #1").parsed_data
    assert (created.head.ref, created.head.sha, created.base.ref) == ("honk/1", head_sha, "main")
    assert created.user.login == "honk[bot]"
    assert (created.changed_files, created.commits, created.additions) == (2, 1, 2)
    with pytest.raises(RequestFailed) as failure:
        gh.rest.pulls.create("acme", "widgets", head="acme:honk/1", base="main", title="again")
    assert failure.value.response.json()["errors"][0]["message"] == (
        "A pull request already exists for acme:honk/1."
    )
    listed = gh.rest.pulls.list("acme", "widgets", head="acme:honk/1", state="open").parsed_data
    assert [p.number for p in listed] == [created.number]
    assert gh.rest.pulls.list("acme", "widgets", head="acme:other").parsed_data == []
    updated = gh.rest.pulls.update("acme", "widgets", created.number, title="Better title",
                                   body="New body").parsed_data
    assert (updated.title, updated.body) == ("Better title", "New body")
    assert gh.rest.pulls.get("acme", "widgets", created.number).parsed_data.title == (
        "Better title"
    )
    files = gh.rest.pulls.list_files("acme", "widgets", created.number).parsed_data
    by_name = {f.filename: f for f in files}
    assert by_name["NEW.md"].status == "added"
    assert by_name["src/widgets.py"].status == "modified"
    assert by_name["src/widgets.py"].deletions == 19
    assert by_name["src/widgets.py"].patch is not None
    assert "+LINE 2" in by_name["src/widgets.py"].patch
    issue_view = gh.rest.issues.get("acme", "widgets", created.number).parsed_data
    assert issue_view.pull_request is not None
    sim.wait_for_deliveries()
    opened = [p for e, p in events(receiver) if e == "pull_request" and p["action"] == "opened"]
    assert opened[0]["pull_request"]["head"]["ref"] == "honk/1"
    assert opened[0]["sender"]["login"] == "honk[bot]"


def test_review_requests(world: World) -> None:
    world.sim.push_files(REPO, "feature", {"x": "y"}, author="bob", message="x")
    number = world.sim.open_pull(REPO, head="feature", base="main", title="t", body="b",
                                 author="bob")
    gh = installation_client(world)
    with pytest.raises(RequestFailed) as failure:
        gh.rest.pulls.request_reviewers("acme", "widgets", number, reviewers=["bob"])
    assert failure.value.response.json()["errors"][0]["message"] == (
        "Review cannot be requested from pull request author."
    )
    requested = gh.rest.pulls.request_reviewers("acme", "widgets", number, reviewers=["acme"])
    assert requested.status_code == 201
    assert [u.login for u in requested.parsed_data.requested_reviewers or []] == ["acme"]
    listed = gh.rest.pulls.list_requested_reviewers("acme", "widgets", number).parsed_data
    assert [u.login for u in listed.users] == ["acme"]
    assert world.sim.requested_reviewers(REPO, number) == ["acme"]


def _pull_with_review(world: World) -> tuple[int, int]:
    """A PR by the App and a review by the owner with two inline comments."""
    sim = world.sim
    changed = FILES["src/widgets.py"].replace("line 10\n", "line ten\n")
    sim.push_files(REPO, "honk/2", {"src/widgets.py": changed}, author="acme", message="ten")
    gh = installation_client(world)
    number = gh.rest.pulls.create("acme", "widgets", head="honk/2", base="main",
                                  title="t").parsed_data.number
    delivery = sim.submit_review(REPO, number, author="acme", state="REQUEST_CHANGES",
                                 body="Two things", comments=[
                                     {"path": "src/widgets.py", "line": 10, "body": "Spell it"},
                                     {"path": "src/widgets.py", "line": 12, "body": "And this"},
                                 ])
    assert delivery is not None
    return number, delivery.payload["review"]["id"]


def test_reviews_carry_diff_hunks(world: World, receiver: Receiver) -> None:
    number, review_id = _pull_with_review(world)
    gh = installation_client(world)
    review = gh.rest.pulls.get_review("acme", "widgets", number, review_id).parsed_data
    assert (review.state, review.body) == ("CHANGES_REQUESTED", "Two things")
    of_review = gh.rest.pulls.list_comments_for_review("acme", "widgets", number,
                                                       review_id).parsed_data
    assert [c.body for c in of_review] == ["Spell it", "And this"]
    first = gh.rest.pulls.list_review_comments("acme", "widgets", number).parsed_data[0]
    assert first.line == 10 and first.side == "RIGHT"
    assert first.diff_hunk.startswith("@@ -7,7 +7,7 @@")
    assert first.diff_hunk.endswith("+line ten")
    assert first.position == 5
    submitted = [p for e, p in events(receiver) if e == "pull_request_review"]
    assert submitted[0]["review"]["state"] == "changes_requested"
    assert submitted[0]["sender"]["login"] == "acme"
    created = [p for e, p in events(receiver) if e == "pull_request_review_comment"]
    assert [p["comment"]["body"] for p in created] == ["Spell it", "And this"]
    with pytest.raises(Exception, match="part of the diff"):
        world.sim.submit_review(REPO, number, author="acme", state="COMMENT", body="",
                                comments=[{"path": "README.md", "line": 1, "body": "x"}])


def test_replies_attach_to_the_top_of_the_thread(world: World, receiver: Receiver) -> None:
    number, _ = _pull_with_review(world)
    gh = installation_client(world)
    top = gh.rest.pulls.list_review_comments("acme", "widgets", number).parsed_data[0]
    reply = gh.rest.pulls.create_reply_for_review_comment("acme", "widgets", number, top.id,
                                                          body="Fixed in abc123")
    assert reply.status_code == 201
    assert reply.parsed_data.in_reply_to_id == top.id
    assert reply.parsed_data.path == top.path
    again = gh.rest.pulls.create_reply_for_review_comment(
        "acme", "widgets", number, reply.parsed_data.id, body="And a follow-up"
    ).parsed_data
    assert again.in_reply_to_id == top.id
    thread = [c for c in world.sim.review_comments(REPO, number)
              if c.get("in_reply_to_id") == top.id]
    assert [c["body"] for c in thread] == ["Fixed in abc123", "And a follow-up"]
    reaction = gh.rest.reactions.create_for_pull_request_review_comment(
        "acme", "widgets", top.id, content="+1"
    )
    assert reaction.status_code == 201
    with pytest.raises(RequestFailed) as failure:
        gh.rest.pulls.create_reply_for_review_comment("acme", "widgets", number, top.id,
                                                      body="y" * 65537)
    assert failure.value.response.status_code == 422
    world.sim.wait_for_deliveries()
    from_bot = [(e, p["action"]) for e, p in events(receiver)
                if p["sender"]["login"] == "honk[bot]" and e.startswith("pull_request_review")]
    assert from_bot == [("pull_request_review", "submitted"),
                        ("pull_request_review_comment", "created")] * 2


def test_a_push_to_a_pull_request_branch_synchronizes_it(world: World,
                                                          receiver: Receiver) -> None:
    sim = world.sim
    first = sim.push_files(REPO, "feature", {"a.txt": "1\n"}, author="bob", message="one")
    number = sim.open_pull(REPO, head="feature", base="main", title="t", body="b", author="bob")
    second = sim.push_files(REPO, "feature", {"a.txt": "2\n"}, author="bob", message="two")
    sync = [p for e, p in events(receiver) if e == "pull_request" and p["action"] == "synchronize"]
    assert (sync[0]["before"], sync[0]["after"]) == (first, second)
    assert sync[0]["number"] == number
    assert sim.pulls(REPO)[0]["head"]["sha"] == second


def test_a_pull_request_from_a_fork(world: World) -> None:
    sim = world.sim
    fork = sim.fork_repo(REPO, owner="mallory")
    sim.push_files(fork, "patch", {"src/widgets.py": "mine\n"}, author="mallory", message="m")
    number = sim.open_pull(REPO, head="patch", base="main", title="t", body="b",
                           author="mallory", head_repo=fork)
    gh = installation_client(world)
    pull = gh.rest.pulls.get("acme", "widgets", number).parsed_data
    assert pull.head.repo is not None and pull.head.repo.full_name == fork
    assert pull.head.label == "mallory:patch"
    assert pull.changed_files == 1


# webhooks


def test_deliveries_are_signed_and_shaped_like_githubs(world: World, receiver: Receiver) -> None:
    number = world.sim.open_issue(REPO, title="Fix it", body="please", author="acme")
    delivery = world.sim.label_issue(REPO, number, "honk", sender="acme")
    assert delivery is not None
    assert (delivery.status, json.loads(delivery.response_body)) == (202, {"accepted": True})
    last = receiver.received[-1]
    expected = hmac.new(world.app.webhook_secret.encode(), last.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(last.headers["x-hub-signature-256"], f"sha256={expected}")
    assert last.headers["x-github-event"] == "issues"
    assert last.headers["x-github-delivery"] == delivery.id
    assert last.headers["x-github-hook-installation-target-type"] == "integration"
    assert last.headers["x-github-hook-installation-target-id"] == str(world.app.id)
    assert last.headers["user-agent"].startswith("GitHub-Hookshot/")
    assert last.headers["content-type"] == "application/json"
    payload = json.loads(last.body)
    assert payload["action"] == "labeled"
    assert payload["label"]["name"] == "honk"
    assert payload["issue"]["number"] == number
    assert payload["installation"]["id"] == world.installation_id
    assert payload["sender"]["login"] == "acme"
    assert payload["repository"]["full_name"] == REPO
    installed = [p for e, p in events(receiver) if e == "installation"]
    assert installed[0]["action"] == "created"
    assert installed[0]["repositories"][0]["full_name"] == REPO


def test_comment_on_a_pull_request_is_an_issue_comment_with_pull_request(
    world: World, receiver: Receiver
) -> None:
    world.sim.push_files(REPO, "feature", {"x": "y"}, author="bob", message="x")
    number = world.sim.open_pull(REPO, head="feature", base="main", title="t", body="b",
                                 author="bob")
    delivery = world.sim.comment(REPO, number, "/honk rename it", author="acme")
    assert delivery is not None and delivery.event == "issue_comment"
    assert "pull_request" in delivery.payload["issue"]
    assert delivery.payload["comment"]["body"] == "/honk rename it"


def test_redelivery_keeps_the_delivery_id(world: World, receiver: Receiver) -> None:
    number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
    receiver.status = 500
    first = world.sim.label_issue(REPO, number, "honk", sender="acme")
    assert first is not None and first.status == 500
    receiver.status = 202
    again = world.sim.redeliver(first.id)
    assert (again.id, again.status, again.redelivery) == (first.id, 202, True)
    assert receiver.received[-1].body == receiver.received[-2].body
    assert receiver.received[-1].headers["x-github-delivery"] == first.id


def test_an_unreachable_app_is_recorded_not_retried(world: World) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    world.sim.set_webhook_url(f"http://127.0.0.1:{dead.getsockname()[1]}/hook")
    dead.close()
    number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
    delivery = world.sim.label_issue(REPO, number, "honk", sender="acme")
    assert delivery is not None and delivery.status == 0 and delivery.error
    assert [d.id for d in world.sim.deliveries].count(delivery.id) == 1


# git over smart HTTP


def test_clone_and_push_with_an_installation_token(world: World, receiver: Receiver,
                                                   tmp_path: Path) -> None:
    token = installation_token(world)
    work = tmp_path / "work"
    cloned = git("clone", "--quiet", clone_url(world, token), str(work))
    assert cloned.returncode == 0, cloned.stderr
    assert (work / "src" / "widgets.py").read_text() == FILES["src/widgets.py"]
    (work / "fix.txt").write_text("fixed\n")
    git("checkout", "-q", "-b", "honk/7-fix", cwd=work)
    git("add", "fix.txt", cwd=work)
    git("commit", "-qm", "Fix", cwd=work)
    pushed = git("push", "-q", "origin", "honk/7-fix", cwd=work)
    assert pushed.returncode == 0, pushed.stderr
    sha = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert world.sim.branches(REPO)["honk/7-fix"] == sha
    world.sim.wait_for_deliveries()
    push = [p for e, p in events(receiver) if e == "push"][-1]
    assert (push["ref"], push["after"], push["created"]) == ("refs/heads/honk/7-fix", sha, True)
    assert push["sender"]["login"] == "honk[bot]"
    assert [c["message"] for c in push["commits"]] == ["Fix"]
    assert push["commits"][0]["added"] == ["fix.txt"]


def test_git_refuses_missing_bad_and_foreign_tokens(world: World, tmp_path: Path) -> None:
    world.sim.create_repo("acme/private", {"a": "b"})
    token = installation_token(world)
    for name, url in {
        "none": clone_url(world, None),
        "bad": clone_url(world, "ghs_wrong"),
        "other repository": clone_url(world, token, repo="acme/private"),
    }.items():
        result = git("clone", "--quiet", url, str(tmp_path / name.replace(" ", "-")))
        assert result.returncode != 0, name
    answer = httpx.get(f"{world.sim.web_url}/{REPO}.git/info/refs?service=git-upload-pack")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Basic")
    reader = world.sim.add_user("reader")
    world.sim.set_permission(REPO, "reader", "read")
    work = tmp_path / "reader"
    assert git("clone", "--quiet", clone_url(world, reader), str(work)).returncode == 0
    git("commit", "--allow-empty", "-qm", "x", cwd=work)
    refused = git("push", "-q", "origin", "HEAD:refs/heads/reader", cwd=work)
    assert refused.returncode != 0
    assert "reader" not in world.sim.branches(REPO)


def test_an_app_without_workflows_permission_cannot_push_workflows(
    world: World, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    git("clone", "--quiet", clone_url(world, installation_token(world)), str(work))
    (work / ".github" / "workflows").mkdir(parents=True)
    (work / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    (work / "other.txt").write_text("fine\n")
    git("add", ".", cwd=work)
    git("commit", "-qm", "Add CI", cwd=work)
    refused = git("push", "origin", "HEAD:refs/heads/honk/ci", cwd=work)
    assert refused.returncode != 0
    assert (
        "! [remote rejected] HEAD -> honk/ci (refusing to allow a GitHub App to create or "
        "update workflow `.github/workflows/ci.yml` without `workflows` permission)"
    ) in refused.stderr
    assert "honk/ci" not in world.sim.branches(REPO)
    # the repository's owner may
    git("remote", "set-url", "origin", clone_url(world, world.alice_token), cwd=work)
    allowed = git("push", "origin", "HEAD:refs/heads/honk/ci", cwd=work)
    assert allowed.returncode == 0, allowed.stderr


def test_an_app_with_workflows_permission_can_push_workflows(tmp_path: Path) -> None:
    with GitHubSim(tmp_path / "sim") as sim:
        permissions = {"contents": "write", "metadata": "read", "workflows": "write"}
        app = sim.create_app(permissions=permissions)
        sim.create_repo(REPO, {"a": "b"})
        installation_id = sim.install([REPO])
        gh = GitHub(AppAuthStrategy(app.id, app.private_key_pem), base_url=sim.api_url)
        token = gh.rest.apps.create_installation_access_token(installation_id).parsed_data.token
        work = tmp_path / "work"
        url = f"http://x-access-token:{token}@{sim.web_url.removeprefix('http://')}/{REPO}.git"
        assert git("clone", "--quiet", url, str(work)).returncode == 0
        (work / ".github" / "workflows").mkdir(parents=True)
        (work / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
        git("add", ".", cwd=work)
        git("commit", "-qm", "Add CI", cwd=work)
        pushed = git("push", "origin", "HEAD:refs/heads/ci", cwd=work)
        assert pushed.returncode == 0, pushed.stderr


def test_gzip_request_bodies_reach_http_backend(world: World) -> None:
    def packet(text: str) -> bytes:
        return b"%04x" % (len(text) + 4) + text.encode()

    request = packet("command=ls-refs\n") + b"0001" + packet("peel\n") + b"0000"
    answer = httpx.post(
        f"{world.sim.web_url}/{REPO}.git/git-upload-pack",
        content=gzip.compress(request),
        headers={
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
            "Git-Protocol": "version=2",
        },
        auth=("x-access-token", installation_token(world)),
    )
    assert answer.status_code == 200
    assert f"{world.sim.branches(REPO)['main']} refs/heads/main".encode() in answer.content


def test_a_git_fetch_with_a_gzipped_negotiation(world: World, tmp_path: Path) -> None:
    """git gzips request bodies over 1 KiB: here, the `have` lines of 60 local commits."""
    work = tmp_path / "work"
    assert git("clone", "--quiet", clone_url(world, world.alice_token), str(work)).returncode == 0
    later = int(time.time()) + 60  # newer than the server's commits: sent first as haves
    stream = "".join(
        f"commit refs/heads/main\ncommitter Honk <honk@example.com> {later + i} +0000\n"
        f"data 4\nc{i:02}\n{'from refs/heads/main^0' if i == 0 else ''}\n"
        f"M 100644 inline local.txt\ndata 3\n{i:02}\n\n"
        for i in range(60)
    )
    subprocess.run(["git", "fast-import", "--quiet"], input=stream, text=True, cwd=work,
                   check=True)
    upstream = world.sim.push_files(REPO, "main", {"upstream.txt": "new\n"}, author="acme",
                                    message="upstream")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_TRACE_CURL": "1",
           "GIT_TRACE_CURL_NO_DATA": "1"}
    fetched = subprocess.run(["git", "-c", "protocol.version=0", "fetch", "-q", "origin"],
                             cwd=work, env=env, capture_output=True, text=True, check=False)
    assert fetched.returncode == 0, fetched.stderr
    assert "Content-Encoding: gzip" in fetched.stderr
    assert git("rev-parse", "origin/main", cwd=work).stdout.strip() == upstream


# fault injection and the timeline


def test_reads_revalidate_with_etags(world: World) -> None:
    number = world.sim.open_issue(REPO, title="Before", body="b", author="acme")
    gh = installation_client(world)
    path = f"/api/v3/repos/{REPO}/issues/{number}"
    assert gh.rest.issues.get("acme", "widgets", number).parsed_data.title == "Before"
    assert gh.rest.issues.get("acme", "widgets", number).parsed_data.title == "Before"
    world.sim.comment(REPO, number, "a change", author="acme")
    assert gh.rest.issues.get("acme", "widgets", number).parsed_data.comments == 1
    statuses = [e.status for e in world.sim.timeline if e.path == path]
    assert statuses == [200, 304, 200]


def test_outages_hit_matching_paths_only(world: World) -> None:
    number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
    gh = installation_client(world)
    gh.rest.repos.get("acme", "widgets")  # the token is fetched before the outage
    world.sim.fail_next(2, status=502, path_contains="/issues/")
    assert gh.rest.repos.get("acme", "widgets").status_code == 200
    for _ in range(2):
        with pytest.raises(RequestFailed) as failure:
            gh.rest.issues.get("acme", "widgets", number)
        assert failure.value.response.status_code == 502
    assert gh.rest.issues.get("acme", "widgets", number).status_code == 200


def test_secondary_rate_limits_on_content_creation(world: World) -> None:
    number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
    gh = installation_client(world)
    gh.rest.repos.get("acme", "widgets")
    world.sim.rate_limit_next(1, retry_after=7)
    assert gh.rest.issues.get("acme", "widgets", number).status_code == 200  # reads pass
    with pytest.raises(SecondaryRateLimitExceeded) as limited:
        gh.rest.issues.create_comment("acme", "widgets", number, body="hi")
    assert limited.value.retry_after == timedelta(seconds=7)
    assert limited.value.response.status_code == 403
    assert "secondary rate limit" in limited.value.response.json()["message"]
    # githubkit's default retry waits `retry-after` (it reads 0 as "a minute") and succeeds
    world.sim.rate_limit_next(1, retry_after=1)
    retrying = GitHub(AppAuthStrategy(world.app.id, world.app.private_key_pem),
                      base_url=world.sim.api_url).with_auth(
        AppAuthStrategy(world.app.id, world.app.private_key_pem).as_installation(
            world.installation_id))
    assert retrying.rest.issues.create_comment("acme", "widgets", number,
                                               body="hi").status_code == 201
    assert [c["body"] for c in world.sim.comments(REPO, number)] == ["hi"]


def test_the_timeline_records_calls_and_deliveries_without_tokens(world: World) -> None:
    token = installation_token(world)
    number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
    gh = user_client(world, token)
    gh.rest.issues.create_comment("acme", "widgets", number, body="x")
    world.sim.wait_for_deliveries()
    entries = world.sim.timeline
    assert any(e.kind == "api" and e.method == "POST" and e.status == 201 and
               e.path == f"/api/v3/repos/{REPO}/issues/{number}/comments" and
               e.actor == "honk[bot]" for e in entries)
    assert any(e.kind == "delivery" and e.detail == "issues.opened" for e in entries)
    assert token not in repr(entries)
    assert [e.at for e in entries] == sorted(e.at for e in entries)


# OAuth sign-in for the runs page


def test_oauth_sign_in(world: World) -> None:
    sim = world.sim
    sim.oauth_login_as("bob")
    authorize = httpx.get(f"{sim.web_url}/login/oauth/authorize", params={
        "client_id": world.app.client_id, "redirect_uri": "http://127.0.0.1:9/cb",
        "state": "s1",
    })
    assert authorize.status_code == 302
    query = parse_qs(urlsplit(authorize.headers["location"]).query)
    assert query["state"] == ["s1"]
    exchange = httpx.post(f"{sim.web_url}/login/oauth/access_token", headers={
        "Accept": "application/json"}, data={
        "client_id": world.app.client_id, "client_secret": world.app.client_secret,
        "code": query["code"][0]})
    token = exchange.json()["access_token"]
    again = httpx.post(f"{sim.web_url}/login/oauth/access_token", headers={
        "Accept": "application/json"}, data={
        "client_id": world.app.client_id, "client_secret": world.app.client_secret,
        "code": query["code"][0]})
    assert again.json()["error"] == "bad_verification_code"
    gh = user_client(world, token)
    assert gh.rest.users.get_authenticated().parsed_data.login == "bob"
    repos = gh.rest.apps.list_installation_repos_for_authenticated_user(
        world.installation_id).parsed_data
    assert [r.full_name for r in repos.repositories] == [REPO]
    installations = gh.rest.apps.list_installations_for_authenticated_user().parsed_data
    assert [i.id for i in installations.installations] == [world.installation_id]
    assert gh.rest.repos.get("acme", "widgets").parsed_data.permissions is not None
    sim.oauth_login_as("stranger")
    sim.add_user("stranger")
    code = parse_qs(urlsplit(httpx.get(f"{sim.web_url}/login/oauth/authorize", params={
        "client_id": world.app.client_id, "redirect_uri": "http://127.0.0.1:9/cb",
    }).headers["location"]).query)["code"][0]
    stranger = httpx.post(f"{sim.web_url}/login/oauth/access_token", headers={
        "Accept": "application/json"}, data={
        "client_id": world.app.client_id, "client_secret": world.app.client_secret,
        "code": code}).json()["access_token"]
    as_stranger = user_client(world, stranger)
    none = as_stranger.rest.apps.list_installations_for_authenticated_user().parsed_data
    assert none.total_count == 0
    with pytest.raises(RequestFailed) as failure:
        as_stranger.rest.apps.list_installation_repos_for_authenticated_user(
            world.installation_id)
    assert failure.value.response.status_code == 404


# typed parsing of what the inspection API returns, and an async client as Honk uses


def test_inspection_dicts_parse_as_githubs_models(world: World) -> None:
    number, _ = _pull_with_review(world)
    assert type_validate_python(models.Issue, world.sim.issue(REPO, number)).number == number
    for pull in world.sim.pulls(REPO):
        type_validate_python(models.PullRequest, pull)
    for comment in world.sim.review_comments(REPO, number):
        type_validate_python(models.PullRequestReviewComment, comment)
    for label in world.sim.labels(REPO):
        type_validate_python(models.Label, label)


def test_async_client(world: World) -> None:
    async def run() -> str:
        gh = installation_client(world)
        number = world.sim.open_issue(REPO, title="t", body="b", author="acme")
        response = await gh.rest.issues.async_create_comment("acme", "widgets", number,
                                                             body="async")
        return response.parsed_data.body or ""

    assert asyncio.run(run()) == "async"
