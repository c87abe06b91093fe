"""Every row of DESIGN.md's webhook contract, against the real app on a loopback server."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from honk_app.settings import Settings
from tests.conftest import SECRET, all_fixture_paths, app_payload, signed_headers

HOOK = "/api/github/webhooks"


def stored(settings: Settings, table: str) -> list[sqlite3.Row]:
    assert settings.sqlite_path is not None
    with sqlite3.connect(settings.sqlite_path) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(f"SELECT * FROM {table}"))


def labeled(label: str = "honk") -> bytes:
    payload = app_payload("issues", "labeled.payload.json")
    payload["label"]["name"] = label
    return json.dumps(payload).encode()


def test_missing_signature_is_401_and_nothing_is_stored(
    client: httpx.Client, webhook_only_settings: Settings
) -> None:
    body = labeled()
    headers = signed_headers(body, "issues")
    del headers["X-Hub-Signature-256"]
    assert client.post(HOOK, content=body, headers=headers).status_code == 401
    assert stored(webhook_only_settings, "deliveries") == []


def test_wrong_signature_is_401_and_nothing_is_stored(
    client: httpx.Client, webhook_only_settings: Settings
) -> None:
    body = labeled()
    forged = signed_headers(body, "issues", secret="not-the-secret")
    response = client.post(HOOK, content=body, headers=forged)
    assert response.status_code == 401
    tampered = signed_headers(body, "issues")
    response = client.post(HOOK, content=body + b" ", headers=tampered)
    assert response.status_code == 401
    assert stored(webhook_only_settings, "deliveries") == []
    assert stored(webhook_only_settings, "runs") == []


def test_body_over_25_mib_is_413(client: httpx.Client) -> None:
    body = b'{"pad": "' + b"x" * (25 * 2**20) + b'"}'
    response = client.post(HOOK, content=body, headers=signed_headers(body, "issues"))
    assert response.status_code == 413


def test_body_over_25_mib_without_content_length_is_413(client: httpx.Client) -> None:
    chunk = b"x" * 2**20

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(26):
            yield chunk

    headers = signed_headers(b"", "issues")
    response = client.post(HOOK, content=chunks(), headers=headers)
    assert response.status_code == 413


@pytest.mark.parametrize("missing", ["X-GitHub-Event", "X-GitHub-Delivery"])
def test_missing_event_headers_are_400(client: httpx.Client, missing: str) -> None:
    body = labeled()
    headers = signed_headers(body, "issues")
    del headers[missing]
    response = client.post(HOOK, content=body, headers=headers)
    assert response.status_code == 400
    assert missing in response.json()["message"]


def test_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    body = b"action=labeled"
    response = client.post(HOOK, content=body, headers=signed_headers(body, "issues"))
    assert response.status_code == 400


def test_trigger_is_202_with_the_run_id_and_a_redelivery_is_200_and_not_run_again(
    client: httpx.Client, webhook_only_settings: Settings
) -> None:
    body = labeled()
    headers = signed_headers(body, "issues", delivery="delivery-1")
    first = client.post(HOOK, content=body, headers=headers)
    assert first.status_code == 202
    run_id = first.json()["run_id"]
    again = client.post(HOOK, content=body, headers=headers)
    assert again.status_code == 200
    assert "already" in again.json()["message"]
    runs = stored(webhook_only_settings, "runs")
    assert [run["id"] for run in runs] == [run_id]
    assert runs[0]["state"] == "queued"
    assert runs[0]["lock_key"] == "Codertocat/Hello-World#1"
    assert [d["id"] for d in stored(webhook_only_settings, "deliveries")] == ["delivery-1"]


def test_an_event_honk_does_not_act_on_is_200_and_ignored(
    client: httpx.Client, webhook_only_settings: Settings
) -> None:
    body = labeled("bug")
    response = client.post(HOOK, content=body, headers=signed_headers(body, "issues"))
    assert response.status_code == 200
    assert stored(webhook_only_settings, "runs") == []
    assert stored(webhook_only_settings, "deliveries")[0]["outcome"] == "ignored"


def test_stop_comment_is_recorded_and_cancels_nothing_on_the_request_path(
    client: httpx.Client, webhook_only_settings: Settings
) -> None:
    """Who sent `/honk stop` can only be checked with a GitHub call, which the request path
    never makes: it records the request for a worker and leaves the run alone."""
    body = labeled()
    queued = client.post(HOOK, content=body, headers=signed_headers(body, "issues"))
    assert queued.status_code == 202
    stop = app_payload("issue_comment", "created.payload.json")
    stop["comment"]["body"] = "/honk stop"
    stop_body = json.dumps(stop).encode()
    response = client.post(HOOK, content=stop_body,
                           headers=signed_headers(stop_body, "issue_comment"))
    assert response.status_code == 202
    [run] = stored(webhook_only_settings, "runs")
    assert run["state"] == "queued"
    [request] = stored(webhook_only_settings, "stop_requests")
    assert (request["state"], request["sender"]) == ("pending", stop["sender"]["login"])
    assert request["lock_key"] == run["lock_key"]


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    from honk_app.settings import load_settings
    from honk_app.web.app import create_app
    from honk_sim.loopback import LoopbackServer

    settings = load_settings({"HONK_DATA_DIR": str(tmp_path_factory.mktemp("shared")),
                              "WEBHOOK_SECRET": SECRET})
    with LoopbackServer(create_app(settings)) as server, httpx.Client(base_url=server.url) as c:
        yield c


@pytest.mark.parametrize("path", all_fixture_paths(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_real_payload_shape_is_accepted(shared_client: httpx.Client, path: Path) -> None:
    """A valid signature and valid JSON is never refused for its shape."""
    body = path.read_bytes()
    event = path.parent.name
    response = shared_client.post(HOOK, content=body, headers=signed_headers(body, event))
    assert response.status_code in (200, 202), response.text


def test_server_without_a_secret_refuses_with_503(tmp_path: Path) -> None:
    from honk_app.settings import load_settings
    from honk_app.web.app import create_app
    from honk_sim.loopback import LoopbackServer

    settings = load_settings({"HONK_DATA_DIR": str(tmp_path)})
    with LoopbackServer(create_app(settings)) as server:
        body = labeled()
        response = httpx.post(server.url + HOOK, content=body,
                              headers=signed_headers(body, "issues"))
        assert response.status_code == 503
        assert "WEBHOOK_SECRET" in response.json()["message"]
        home = httpx.get(server.url + "/")
        assert "Set up Honk" in home.text


