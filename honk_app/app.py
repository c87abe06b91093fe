"""The Starlette application: routes, and a lifespan that opens the store and the worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial

import anthropic
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from honk_app import pages
from honk_app.config import Settings, SettingsError
from honk_app.db import Database
from honk_app.github import GitHubApp
from honk_app.queue import WorkerPool
from honk_app.redact import Redactor
from honk_app.runs import SCHEMA, RunStore
from honk_app.webhooks import WebhookReceiver
from honk_app.worker import Services, execute
from honk_app.workspace import WorkspaceManager

log = structlog.get_logger()


def build_services(settings: Settings, store: RunStore, redactor: Redactor) -> Services:
    model = None
    if settings.anthropic_api_key:
        model = anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url, max_retries=4
        )
    return Services(
        settings=settings,
        store=store,
        github=GitHubApp(settings, redactor),
        workspaces=WorkspaceManager(settings.data_dir),
        anthropic=model,
        redactor=redactor,
    )


def create_app(
    settings: Settings, *, redactor: Redactor | None = None, with_worker: bool = True
) -> Starlette:
    redactor = redactor or Redactor(settings.secrets)
    if settings.sqlite_path is None:
        raise SettingsError("DATABASE_URL: PostgreSQL is not supported yet; use sqlite:///.")
    db = Database(settings.sqlite_path)
    store = RunStore(db)
    pool: WorkerPool | None = None
    if with_worker and settings.has_app_credentials:
        services = build_services(settings, store, redactor)
        pool = WorkerPool(store, partial(execute, services=services), concurrency=settings.workers)
    receiver = WebhookReceiver(
        store,
        secret=settings.webhook_secret,
        label=settings.label,
        on_run=pool.wake if pool else lambda: None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db.start(SCHEMA)
        stop = asyncio.Event()
        worker = asyncio.create_task(pool.run(stop)) if pool else None
        if not settings.has_app_credentials:
            log.warning(
                "no GitHub App credentials: open the setup page to register Honk",
                url=f"http://localhost:{settings.port}/",
            )
        try:
            yield
        finally:
            stop.set()
            if worker:
                await worker
            await db.close()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "configured": settings.has_app_credentials})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(pages.home(settings))

    app = Starlette(
        routes=[
            Route("/api/github/webhooks", receiver.receive, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/", home),
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.pool = pool
    return app
