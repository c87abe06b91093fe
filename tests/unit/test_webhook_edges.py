"""The webhook path against strangers: replays, metrics labels, hostile bodies.

Everything goes through the real app (or the real receiver, where a test needs short
limits) served by uvicorn on loopback; slow and unsigned bodies are sent on raw sockets.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from honk_app.settings import Settings
from honk_app.store.db import SQLiteDatabase
from honk_app.store.runs import RunStore
from honk_app.web.webhooks import BodyGate, WebhookReceiver, sign
from honk_sim.loopback import LoopbackServer
from tests.conftest import SECRET, app_payload, signed_headers
from tests.unit.test_webhooks import HOOK, labeled, stored


def comment(body: str = "/honk please fix it", comment_id: int = 777) -> bytes:
    payload = app_payload("issue_comment", "created.payload.json")
    payload["comment"]["body"] = body
    payload["comment"]["id"] = comment_id
    return json.dumps(payload).encode()


# --- replays -----------------------------------------------------------------------------


@pytest.mark.parametrize(("event", "make"), [
    ("issue_comment", lambda: comment()),
    ("issues", lambda: labeled()),
])
def test_a_replayed_delivery_with_a_new_delivery_id_queues_nothing(
    client: httpx.Client, webhook_only_settings: Settings, event: str, make: object
) -> None:
    body = make()  # type: ignore[operator]
    first = client.post(HOOK, content=body, headers=signed_headers(body, event))
    assert first.status_code == 202
    replay = client.post(HOOK, content=body, headers=signed_headers(body, event))
    assert replay.status_code == 200
    assert "already" in replay.json()["message"]
    assert [run["id"] for run in stored(webhook_only_settings, "runs")] == [first.json()["run_id"]]


def test_the_same_comment_in_another_body_is_still_the_same_event(
    client: httpx.Client, webhook_only_settings: Settings
) -> None:
    """The key is the comment's id, not the bytes: reformatted JSON is the same event."""
    body = comment()
    assert client.post(HOOK, content=body,
                       headers=signed_headers(body, "issue_comment")).status_code == 202
    spaced = json.dumps(json.loads(body), indent=2).encode()
    again = client.post(HOOK, content=spaced, headers=signed_headers(spaced, "issue_comment"))
    assert again.status_code == 200
    other = comment(comment_id=778)
    assert client.post(HOOK, content=other,
                       headers=signed_headers(other, "issue_comment")).status_code == 202
    assert len(stored(webhook_only_settings, "runs")) == 2


def test_an_event_older_than_the_replay_window_is_not_acted_on(
    client: httpx.Client, webhook_only_settings: Settings
) -> None:
    payload = json.loads(comment())
    payload["comment"]["created_at"] = "2019-05-15T15:20:21Z"
    body = json.dumps(payload).encode()
    response = client.post(HOOK, content=body, headers=signed_headers(body, "issue_comment"))
    assert response.status_code == 200
    assert "too old" in response.json()["message"]
    assert stored(webhook_only_settings, "runs") == []


# --- /metrics ----------------------------------------------------------------------------


def series(client: httpx.Client) -> set[str]:
    text = client.get("/metrics").text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_strangers_cannot_add_metrics_series(client: httpx.Client) -> None:
    before = series(client)
    for n in range(3000):
        headers = {"X-GitHub-Event": f"evil-{uuid.uuid4().hex}", "X-GitHub-Delivery": str(n)}
        if n % 2:
            headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
        assert client.post(HOOK, content=b"{}", headers=headers).status_code == 401
    after = series(client)
    assert after == before, sorted(after - before)[:5]


def test_a_signed_event_honk_does_not_know_counts_as_other(client: httpx.Client) -> None:
    for name in ("custom_property", "made-up-event"):
        body = b'{"action": "x"}'
        assert client.post(HOOK, content=body,
                           headers=signed_headers(body, name)).status_code == 200
    text = client.get("/metrics").text
    assert 'event="other",outcome="ignored"' in text
    assert "made-up-event" not in text and "custom_property" not in text


# --- hostile bodies ----------------------------------------------------------------------


def test_deeply_nested_signed_json_is_a_clean_400(client: httpx.Client) -> None:
    body = b"[" * 200_000 + b"]" * 200_000
    response = client.post(HOOK, content=body, headers=signed_headers(body, "issues"))
    assert response.status_code == 400
    assert "JSON" in response.json()["message"]
    nested = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    response = client.post(HOOK, content=nested, headers=signed_headers(nested, "issues"))
    assert response.status_code == 400


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return data
        if not chunk:
            return data
        data += chunk


def head(port: int, length: int, signature: str | None) -> str:
    lines = [f"POST {HOOK} HTTP/1.1", f"Host: 127.0.0.1:{port}", "X-GitHub-Event: issues",
             f"X-GitHub-Delivery: {uuid.uuid4()}", f"Content-Length: {length}",
             "Content-Type: application/json"]
    if signature is not None:
        lines.append(f"X-Hub-Signature-256: {signature}")
    return "\r\n".join(lines) + "\r\n"


def test_no_signature_header_is_refused_before_the_body_is_read(
    honk_server: LoopbackServer,
) -> None:
    """20 MiB announced, none sent: the answer comes at once, and the connection closes."""
    with contextlib.closing(raw_request(honk_server.port, head(honk_server.port, 20 * 2**20,
                                                                None))) as sock:
        sock.settimeout(5)
        started = time.monotonic()
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
        assert b"connection: close" in answer.lower()
        assert time.monotonic() - started < 4  # closed by the server, not our timeout


@contextlib.contextmanager
def receiver_server(tmp_path: Path, gate: BodyGate) -> Iterator[tuple[LoopbackServer, RunStore]]:
    """The real receiver and store, with limits short enough for a test."""
    db = SQLiteDatabase(tmp_path / "honk.db")
    store = RunStore(db)
    receiver = WebhookReceiver(store, secret=SECRET, label="honk", on_run=lambda: None,
                               gate=gate)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db.start()
        await store.migrate()
        yield
        await db.close()

    app = Starlette(routes=[Route(HOOK, receiver.receive, methods=["POST"])], lifespan=lifespan)
    with LoopbackServer(app) as server:
        yield server, store


def test_a_slow_body_is_answered_408_and_the_connection_closed(tmp_path: Path) -> None:
    with receiver_server(tmp_path, BodyGate(seconds=1.0)) as (server, _):
        body = labeled()
        signature = sign(SECRET, body)
        with contextlib.closing(raw_request(server.port, head(server.port, len(body), signature),
                                            body[:100])) as sock:
            sock.settimeout(10)
            started = time.monotonic()
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
            assert b"did not arrive" in answer
            assert 0.8 < time.monotonic() - started < 8
        # The server still takes a delivery sent at a normal pace.
        ok = httpx.post(server.url + HOOK, content=body, headers=signed_headers(body, "issues"))
        assert ok.status_code == 202


def test_bodies_read_at_once_are_bounded_in_number_and_bytes(tmp_path: Path) -> None:
    gate = BodyGate(max_reads=2, budget_bytes=2**20, seconds=20.0)
    with receiver_server(tmp_path, gate) as (server, _):
        wrong = "sha256=" + "0" * 64
        held = [raw_request(server.port, head(server.port, 2**20 - 1, wrong), b"x" * 800_000)
                for _ in range(1)]
        time.sleep(0.3)  # the server is now reading 800 KB of the first body
        # Bytes: a second large body does not fit beside it. (It sends only what the server
        # reads before refusing: unread bytes at close would reset the connection.)
        with contextlib.closing(raw_request(server.port, head(server.port, 600_000, wrong),
                                            b"y" * 300_000)) as sock:
            sock.settimeout(5)
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
        # Number: a second slow reader fits, a third is turned away at once.
        held.append(raw_request(server.port, head(server.port, 100, wrong), b"z"))
        time.sleep(0.3)
        with contextlib.closing(raw_request(server.port, head(server.port, 100, wrong),
                                            b"z")) as sock:
            sock.settimeout(5)
            started = time.monotonic()
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
            assert time.monotonic() - started < 3
        for sock in held:
            sock.close()
        time.sleep(0.3)
        # Once they are gone, a delivery goes through again.
        body = labeled()
        ok = httpx.post(server.url + HOOK, content=body, headers=signed_headers(body, "issues"))
        assert ok.status_code == 202
