"""The Starlette application: routes, and a lifespan that opens the store and the worker.

Until Honk is a GitHub App, `/` is the setup page; when the manifest flow registers the App,
the running server takes the new credentials at once (see `Live.configure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from honk_app import metrics
from honk_app.github.manifest import AppCredentials
from honk_app.redact import Redactor
from honk_app.run.pipeline import execute, keep_statuses_true
from honk_app.run.services import build_services
from honk_app.settings import Settings
from honk_app.store.db import DatabaseUnavailable
from honk_app.web import pages
from honk_app.web.runs_pages import RunsPages
from honk_app.web.setup import Onboarding
from honk_app.web.signin import GitHubSignIn
from honk_app.web.webhooks import WebhookReceiver
from honk_app.workers.backend import Backend, Workers, open_backend
from honk_app.workers.pool import Backoff, pause

log = structlog.get_logger()


class Live:
    """The settings in force, and the receiver and worker built from them."""

    def __init__(
        self, settings: Settings, backend: Backend, redactor: Redactor, *, with_worker: bool
    ) -> None:
        self.backend = backend
        self.store = backend.store
        self.redactor = redactor
        self.with_worker = with_worker
        self.pool: Workers | None = None
        self._stop = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._statuses: asyncio.Task[None] | None = None  # re-sends owed final states
        self._worker_failed = False
        self._running = False
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        self.settings = settings
        if self.with_worker and settings.has_app_credentials and self.pool is None:
            # A worker's store may differ from the request path's (on PostgreSQL it waits
            # out an outage where the request path answers 503).
            self.pool = self.backend.workers(
                lambda store: partial(
                    execute, services=build_services(settings, store, self.redactor)
                ),
                concurrency=settings.workers,
            )
            if self._running:
                self._start_tasks()
        pool = self.pool
        self.receiver = WebhookReceiver(
            self.store,
            secret=settings.webhook_secret,
            label=settings.label,
            on_run=pool.wake if pool else lambda: None,
        )

    async def receive(self, request: Request) -> Response:
        return await self.receiver.receive(request)

    async def register(self, credentials: AppCredentials) -> None:
        """The setup page registered the App: act as it from now on."""
        settings = replace(
            self.settings,
            app_id=credentials.app_id,
            private_key=credentials.private_key.strip() + "\n",
            webhook_secret=credentials.webhook_secret,
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
        )
        for secret in settings.secrets:
            self.redactor.add(secret)
        self.configure(settings)

    def start(self) -> None:
        self._running = True
        if self.pool is not None:
            self._start_tasks()

    def _start_tasks(self) -> None:
        assert self.pool is not None
        self._worker = asyncio.create_task(self._keep_working(self.pool))
        services = build_services(self.settings, self.store, self.redactor)
        self._statuses = asyncio.create_task(keep_statuses_true(services, self._stop))

    async def _keep_working(self, pool: Workers) -> None:
        """Run the workers until stopped; should their loop ever end by an error, again."""
        backoff = Backoff(1.0)
        while not self._stop.is_set():
            try:
                await pool.run(self._stop)
            except Exception:
                self._worker_failed = True
                log.exception("the worker stopped by an error; starting it again")
                await pause(self._stop, backoff.failed())
                self._worker_failed = False
            else:
                return

    def worker_trouble(self) -> str | None:
        """Why this process's worker is not picking runs up, or None (also: no worker)."""
        if self.pool is None or not self._running:
            return None
        if self._worker is None or self._worker.done() or self._worker_failed:
            return "the worker loop of this process is not running"
        return self.pool.trouble(self.settings.queue_stall_seconds)

    async def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            await self._worker
        if self._statuses is not None:
            await self._statuses


def create_app(
    settings: Settings,
    *,
    redactor: Redactor | None = None,
    with_worker: bool = True,
    dotenv_path: Path | None = None,
) -> Starlette:
    """The web app; the setup page writes the App's credentials to `dotenv_path` (`./.env`)."""
    redactor = redactor or Redactor(settings.secrets)
    backend = open_backend(settings)
    store = backend.store
    live = Live(settings, backend, redactor, with_worker=with_worker)
    onboarding = Onboarding(
        lambda: live.settings, dotenv_path=dotenv_path or Path(".env"), on_registered=live.register
    )
    signin = GitHubSignIn(lambda: live.settings)
    runs_pages = RunsPages(lambda: live.settings, store, signin, redactor)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.start()
        live.start()
        # The libraries loaded by now (githubkit's schemas, anthropic, pydantic) are a few
        # hundred thousand long-lived objects; a full collection walking them all stalled
        # the event loop for 110-180 ms, the whole p99 of webhook latency. Frozen, the
        # collector skips them.
        gc.collect()
        gc.freeze()
        if not settings.has_app_credentials:
            log.warning(
                "no GitHub App credentials: open the setup page to register Honk",
                url=f"http://localhost:{settings.port}/",
            )
        try:
            yield
        finally:
            await live.stop()
            await backend.close()

    async def healthz(request: Request) -> JSONResponse:
        """Healthy unless this process's worker loop is not running, or runs wait (due)
        longer than HONK_QUEUE_STALL_SECONDS while no run moves, or the database does
        not answer within the request path's deadline."""
        problems = []
        if trouble := live.worker_trouble():
            problems.append(trouble)
        try:
            if stalled := await store.stalled_queue(live.settings.queue_stall_seconds):
                problems.append(stalled)
        except DatabaseUnavailable as error:
            problems.append(f"the database does not answer: {error}")
        configured = live.settings.has_app_credentials
        if problems:
            log.warning("unhealthy", reason="; ".join(problems))
            return JSONResponse(
                {"ok": False, "configured": configured, "reason": "; ".join(problems)},
                status_code=503,
            )
        return JSONResponse({"ok": True, "configured": configured})

    async def metrics_page(request: Request) -> Response:
        # Read at scrape time: a web process without a worker sees the queue too. A database
        # that does not answer leaves the last value: the counters still matter then.
        with contextlib.suppress(DatabaseUnavailable):
            metrics.QUEUE_DEPTH.set(await store.queue_depth())
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def home(request: Request) -> HTMLResponse:
        suggested = live.settings.public_url or str(request.base_url).rstrip("/")
        return HTMLResponse(pages.home(live.settings, suggested_url=suggested))

    app = Starlette(
        routes=[
            Route("/api/github/webhooks", live.receive, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/metrics", metrics_page),
            Route("/", home),
            *onboarding.routes(),
            *signin.routes(),
            *runs_pages.routes(),
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.live = live
    return app
