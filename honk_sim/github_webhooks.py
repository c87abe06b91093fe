"""Webhook deliveries, signed and POSTed the way GitHub's Hookshot does.

A delivery is sent either now (a user's action: the caller waits for the app's answer) or
later, in order, from one background thread (deliveries caused by the App's own API calls,
so the API call that caused them is not held up). A failed delivery is recorded with status
0 and is not retried: GitHub only redelivers when someone asks.
"""

import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from honk_sim.github_state import App, Delivery, SimState, TimelineEntry, utc_now

log = structlog.get_logger()

DELIVERY_TIMEOUT_S = 10.0  # GitHub gives an app ten seconds to answer
USER_AGENT = "GitHub-Hookshot/5f7e1b2"


@dataclass(frozen=True)
class _Sent:
    """What a redelivery needs: the exact body and headers of the first attempt."""

    app_id: int
    event: str
    body: bytes
    payload: dict[str, Any]


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDispatcher:
    def __init__(self, state: SimState) -> None:
        self.state = state
        self._sent: dict[str, _Sent] = {}
        self._queue: queue.Queue[tuple[_Sent, str] | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._worker: threading.Thread | None = None
        self._client = httpx.Client(timeout=DELIVERY_TIMEOUT_S)

    def start(self) -> None:
        self._worker = threading.Thread(target=self._run, name="github-sim-hookshot", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=DELIVERY_TIMEOUT_S + 5)
            self._worker = None
        self._client.close()

    def deliver_now(self, app: App, event: str, payload: dict[str, Any]) -> Delivery | None:
        """Send and wait for the app's answer; None when the app has no webhook URL."""
        if not app.webhook_url:
            return None
        sent = _Sent(app.id, event, _encode(payload), payload)
        delivery_id = str(uuid.uuid4())
        self._sent[delivery_id] = sent
        return self._post(sent, delivery_id, redelivery=False)

    def deliver_later(self, app: App, event: str, payload: dict[str, Any]) -> None:
        if not app.webhook_url:
            return
        sent = _Sent(app.id, event, _encode(payload), payload)
        delivery_id = str(uuid.uuid4())
        self._sent[delivery_id] = sent
        with self._idle:
            self._pending += 1
        self._queue.put((sent, delivery_id))

    def redeliver(self, delivery_id: str) -> Delivery:
        sent = self._sent.get(delivery_id)
        if sent is None:
            raise KeyError(f"no delivery {delivery_id}")
        return self._post(sent, delivery_id, redelivery=True)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every background delivery has been attempted."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            sent, delivery_id = item
            try:
                self._post(sent, delivery_id, redelivery=False)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _post(self, sent: _Sent, delivery_id: str, *, redelivery: bool) -> Delivery:
        with self.state.lock:
            app = self.state.apps[sent.app_id]
            url = app.webhook_url or ""
            secret = app.webhook_secret
            hook_id = app.hook_id
        headers = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-GitHub-Event": sent.event,
            "X-GitHub-Delivery": delivery_id,
            "X-GitHub-Hook-ID": str(hook_id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": str(sent.app_id),
            "X-Hub-Signature": "sha1="
            + hmac.new(secret.encode(), sent.body, hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256": sign(secret, sent.body),
        }
        sent_at = utc_now()
        started = time.monotonic()
        error: str | None = None
        try:
            response = self._client.post(url, content=sent.body, headers=headers)
            status, answer = response.status_code, response.text
        except httpx.HTTPError as failure:
            status, answer, error = 0, "", f"{type(failure).__name__}: {failure}"
        payload = sent.payload
        sender = str((payload.get("sender") or {}).get("login", ""))
        action = payload.get("action")
        delivery = Delivery(
            id=delivery_id,
            event=sent.event,
            action=action if isinstance(action, str) else None,
            sender=sender,
            app_id=sent.app_id,
            payload=payload,
            status=status,
            response_body=answer,
            sent_at=sent_at,
            duration_s=time.monotonic() - started,
            redelivery=redelivery,
            error=error,
        )
        with self.state.lock:
            self.state.deliveries.append(delivery)
            self.state.timeline.append(
                TimelineEntry(
                    at=started,
                    kind="delivery",
                    method="POST",
                    path=urlsplit(url).path or "/",
                    status=status,
                    actor=sender,
                    detail=f"{sent.event}.{action}" if action else sent.event,
                )
            )
        log.debug(
            "github_sim.delivery",
            delivery_id=delivery_id,
            github_event=sent.event,
            action=action,
            status=status,
            error=error,
        )
        return delivery


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
