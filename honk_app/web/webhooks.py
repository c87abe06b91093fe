"""The webhook receiver: verify, dedupe, decide the trigger, persist, answer.

Nothing on this path calls GitHub or Anthropic. A delivery is answered only after it is
durably stored, so a 2xx means it will not be lost; a storage outage answers 503.

Until its signature is checked a body is a stranger's, so reading it is bounded: a post
without a signature header is refused before its body is read, a body must arrive whole
within `BODY_SECONDS`, and the bodies being read at once are bounded in number and in
bytes together (`BodyGate`); beyond either bound the answer is a quick 503. Nothing a
stranger sends picks a metrics label (`metrics.event_label`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from honk_app import metrics
from honk_app.store.db import DatabaseUnavailable
from honk_app.store.runs import RETENTION_SECONDS, RunStore
from honk_app.web.triggers import event_key, event_time, trigger_for

log = structlog.get_logger()

MAX_BODY_BYTES = 25 * 2**20
BODY_SECONDS = 10.0
# Bodies read at once, and their bytes together: room for two 25 MiB deliveries beside
# hundreds of ordinary ones (GitHub's are a few KiB to a few hundred).
MAX_BODY_READS = 256
BODY_BUDGET_BYTES = 64 * 2**20
SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")
# Answers that close the connection: the rest of the body, if any, is not read.
CLOSE = {"Connection": "close"}


class BodyRefused(Exception):
    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class BodyGate:
    """Bounds what reading not-yet-verified bodies can cost the server: how many are read
    at once, how many bytes they hold together, and how long one may take to arrive.

    The time limit is kept by one watcher task that wakes every second and cancels the
    reads past their deadline, rather than by a timer per request: on a path that serves
    thousands of deliveries a second, a timer armed and disarmed per request costs more
    than the rest of the bookkeeping together."""

    def __init__(
        self,
        *,
        max_reads: int = MAX_BODY_READS,
        budget_bytes: int = BODY_BUDGET_BYTES,
        seconds: float = BODY_SECONDS,
    ) -> None:
        self.max_reads = max_reads
        self.budget_bytes = budget_bytes
        self.seconds = seconds
        self._bytes = 0
        self._deadlines: dict[asyncio.Task[object], float] = {}  # the reads under way
        self._expired: set[asyncio.Task[object]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def read(self, request: Request) -> bytes:
        if len(self._deadlines) >= self.max_reads:
            raise BodyRefused(503, "busy", "Too many deliveries arriving at once; redeliver later.")
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + self.seconds
        if self._watcher is None or self._watcher.done():
            self._watcher = loop.create_task(self._expire_slow_reads(), name="body-deadlines")
        held = 0
        try:
            chunks: list[bytes] = []
            async for chunk in request.stream():
                if held + len(chunk) > MAX_BODY_BYTES:
                    raise BodyRefused(413, "too_large", "Payload over 25 MiB.")
                if self._bytes + len(chunk) > self.budget_bytes:
                    raise BodyRefused(503, "busy", "Too many large deliveries arriving at "
                                      "once; redeliver later.")
                self._bytes += len(chunk)
                held += len(chunk)
                chunks.append(chunk)
            return b"".join(chunks)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            task.uncancel()
            raise BodyRefused(408, "slow_body", f"The body did not arrive within "
                              f"{self.seconds:.0f} seconds.") from None
        except ClientDisconnect:
            # Nobody is left to read the answer; it only keeps the outcome counted.
            raise BodyRefused(400, "disconnected", "The body was cut off.") from None
        finally:
            del self._deadlines[task]
            self._expired.discard(task)
            self._bytes -= held

    async def _expire_slow_reads(self) -> None:
        """Cancel the reads past their deadline, once a second, while there are reads."""
        loop = asyncio.get_running_loop()
        while self._deadlines:
            await asyncio.sleep(min(1.0, self.seconds / 4))
            now = loop.time()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()


class WebhookReceiver:
    def __init__(
        self,
        store: RunStore,
        *,
        secret: str | None,
        label: str,
        on_run: Callable[[], None],
        gate: BodyGate | None = None,
    ) -> None:
        self._store = store
        self._secret = secret.encode() if secret else None
        self._label = label
        self._on_run = on_run
        self._gate = gate or BodyGate()

    async def receive(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        event = request.headers.get("x-github-event", "")
        response = await self._handle(request, event)
        metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: Request, event: str) -> JSONResponse:
        # Until the signature is checked, the event header is a stranger's word: the
        # answers before that are counted under one label, whatever it says.
        if self._secret is None:
            return _answer(503, metrics.UNVERIFIED, "unconfigured",
                           "Honk has no WEBHOOK_SECRET yet; finish the setup at / first.")
        signature = request.headers.get("x-hub-signature-256", "")
        if not SIGNATURE.fullmatch(signature):
            return _answer(401, metrics.UNVERIFIED, "bad_signature",
                           "Missing or malformed X-Hub-Signature-256.", headers=CLOSE)
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _answer(413, metrics.UNVERIFIED, "too_large", "Payload over 25 MiB.",
                           headers=CLOSE)
        try:
            body = await self._gate.read(request)
        except BodyRefused as refused:
            return _answer(refused.status, metrics.UNVERIFIED, refused.outcome, str(refused),
                           headers=CLOSE)
        if not _signature_ok(self._secret, body, signature):
            return _answer(401, metrics.UNVERIFIED, "bad_signature", "Signature does not match.")
        delivery_id = request.headers.get("x-github-delivery", "")
        if not event or not delivery_id:
            return _answer(400, event, "bad_request",
                           "Missing X-GitHub-Event or X-GitHub-Delivery header.")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return _answer(400, event, "bad_request", "The body is not JSON (or nests too deep).")
        action = payload.get("action") if isinstance(payload, dict) else None
        trigger = trigger_for(event, payload, label=self._label)
        key = None
        if trigger is not None:
            happened = event_time(event, payload)
            if happened is not None and happened < time.time() - RETENTION_SECONDS:
                # Older than the replay keys are kept: a captured delivery, not news.
                return _answer(200, event, "stale", "The event is too old to act on.")
            key = event_key(event, payload, body)
        try:
            accepted = await self._store.record_delivery(
                delivery_id, event, action, trigger, event_key=key
            )
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
        if accepted.stop_requested:
            assert trigger is not None
            log.info("stop requested", delivery_id=delivery_id, repo=trigger.repo,
                     number=trigger.number, sender=trigger.sender)
            return _answer(202, event, "stop", "Stop requested; a worker checks who asked "
                           "before it stops anything.")
        return _answer(200, event, "ignored", "Not an event Honk acts on.")


def _answer(
    status: int,
    event: str,
    outcome: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> JSONResponse:
    metrics.DELIVERIES.labels(event=metrics.event_label(event), outcome=outcome).inc()
    return JSONResponse({"message": message, **extra}, status_code=status, headers=headers)


def _signature_ok(secret: bytes, body: bytes, header: str) -> bool:
    """`header` is `sha256=<64 hex>` (checked before the body was read)."""
    expected = hmac.digest(secret, body, "sha256")
    return hmac.compare_digest(expected, bytes.fromhex(header.removeprefix("sha256=")))


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for this body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
