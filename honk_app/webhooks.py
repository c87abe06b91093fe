"""The webhook receiver: verify, dedupe, decide the trigger, persist, answer.

Nothing on this path calls GitHub or Anthropic. A delivery is answered only after it is
durably stored, so a 2xx means it will not be lost; a storage outage answers 503.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from honk_app import metrics
from honk_app.db import DatabaseUnavailable
from honk_app.runs import RunStore
from honk_app.triggers import trigger_for

log = structlog.get_logger()

MAX_BODY_BYTES = 25 * 2**20


class WebhookReceiver:
    def __init__(
        self, store: RunStore, *, secret: str | None, label: str, on_run: Callable[[], None]
    ) -> None:
        self._store = store
        self._secret = secret.encode() if secret else None
        self._label = label
        self._on_run = on_run

    async def receive(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        event = request.headers.get("x-github-event", "")
        response = await self._handle(request, event)
        metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: Request, event: str) -> JSONResponse:
        if self._secret is None:
            return _answer(503, event, "unconfigured", "Honk has no WEBHOOK_SECRET yet; "
                           "finish the setup at / first.")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _answer(413, event, "too_large", "Payload over 25 MiB.")
        body = await _read_body(request)
        if body is None:
            return _answer(413, event, "too_large", "Payload over 25 MiB.")
        if not _signature_ok(self._secret, body, request.headers.get("x-hub-signature-256")):
            return _answer(401, event, "bad_signature", "Signature does not match.")
        delivery_id = request.headers.get("x-github-delivery", "")
        if not event or not delivery_id:
            return _answer(400, event, "bad_request",
                           "Missing X-GitHub-Event or X-GitHub-Delivery header.")
        try:
            payload = json.loads(body)
        except ValueError:
            return _answer(400, event, "bad_request", "The body is not JSON.")
        action = payload.get("action") if isinstance(payload, dict) else None
        trigger = trigger_for(event, payload, label=self._label)
        try:
            accepted = await self._store.record_delivery(delivery_id, event, action, trigger)
        except DatabaseUnavailable as error:
            log.error("delivery not stored", delivery_id=delivery_id, gh_event=event,
                      error=str(error))
            return _answer(503, event, "unavailable",
                           "Honk cannot store deliveries right now; redeliver later.")
        if accepted.duplicate:
            return _answer(200, event, "duplicate", "Delivery already received.")
        if accepted.run_id is not None:
            assert trigger is not None
            log.info("run queued", delivery_id=delivery_id, run_id=accepted.run_id,
                     repo=trigger.repo, number=trigger.number, kind=trigger.kind,
                     sender=trigger.sender)
            self._on_run()
            return _answer(202, event, "queued", "Run queued.", run_id=accepted.run_id)
        if trigger is not None and trigger.kind == "stop":
            log.info("stop requested", delivery_id=delivery_id, repo=trigger.repo,
                     number=trigger.number, runs=accepted.cancelled)
            return _answer(202, event, "stop", "Stop requested.", runs=accepted.cancelled)
        return _answer(200, event, "ignored", "Not an event Honk acts on.")


def _answer(status: int, event: str, outcome: str, message: str, **extra: object) -> JSONResponse:
    metrics.DELIVERIES.labels(event=event or "unknown", outcome=outcome).inc()
    return JSONResponse({"message": message, **extra}, status_code=status)


async def _read_body(request: Request) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for this body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
