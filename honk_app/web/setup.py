"""First run: register Honk as a GitHub App through GitHub's manifest flow.

The page at `/` posts this server's public URL and the App's owner (the person's account or
an organisation) to `POST /setup`. Honk answers with a form that carries the manifest
(`app-manifest.yml` plus this server's URLs) to GitHub with a one-time `state`. GitHub
sends the browser back to `GET /setup/callback` with a code; Honk checks the state,
exchanges the code (`POST /app-manifests/{code}/conversions`), writes the App's credentials
to `.env` (mode 0600) and hands them to the running server, which acts as the App at once.

The state is random, good once and for 30 minutes, and kept in this process: a callback
that this server's setup page did not start is refused. It is not also tied to a cookie:
the browser may have opened the page at another address than the public URL GitHub sends
it back to (http://localhost behind a tunnel), and whoever can open the setup page can
register an App anyway, which is why the page closes once Honk is registered.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from honk_app.github.client import GitHubError
from honk_app.github.manifest import (
    AppCredentials,
    build_manifest,
    convert_code,
    github_web_url,
    registration_url,
)
from honk_app.settings import Settings, write_dotenv
from honk_app.web import pages
from honk_app.web.same_origin import CROSS_SITE_SENTENCE, from_this_site

log = structlog.get_logger()

STATE_SECONDS = 30 * 60
MAX_PENDING_STATES = 100
MAX_FORM_BYTES = 16 * 1024
# GitHub's rule for account and organisation names.
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")


class SetupError(Exception):
    """The registration cannot go on; the message is one sentence for the person at the page."""

    def __init__(self, sentence: str, *, status: int = 400) -> None:
        super().__init__(sentence)
        self.status = status


def public_url_of(value: str, *, what: str = "public URL") -> str:
    """A URL as typed on the page, checked: http(s), a host, no query."""
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise SetupError(f"The {what} must look like https://honk.example.com.")
    return value


# --- the routes --------------------------------------------------------------------------


Registered = Callable[[AppCredentials], Awaitable[None]]


class Onboarding:
    """`POST /setup` and `GET /setup/callback`: open only while Honk has no App."""

    def __init__(
        self, settings: Callable[[], Settings], *, dotenv_path: Path, on_registered: Registered
    ) -> None:
        self._settings = settings
        self.dotenv_path = dotenv_path
        self._on_registered = on_registered
        self._pending: dict[str, float] = {}  # state -> when it expires

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/setup", self.start, methods=["POST"]),
            Route("/setup/callback", self.callback, methods=["GET"]),
        ]

    async def start(self, request: Request) -> Response:
        """Check the form, then send the browser to GitHub with the manifest and a state."""
        settings = self._settings()
        if settings.has_app_credentials:
            return _already(settings)
        # A form on another site must not register an App with its own URLs while the
        # operator has this page open (or half-configured, with no webhook secret yet).
        if not from_this_site(request, settings.public_url):
            log.warning("cross-site setup refused", origin=request.headers.get("origin"))
            return HTMLResponse(pages.setup_error(CROSS_SITE_SENTENCE), status_code=403)
        try:
            form = await _form(request)
            public_url = public_url_of(str(form.get("public_url") or ""))
            relay = str(form.get("webhook_url") or "").strip()
            webhook_url = public_url_of(relay, what="webhook URL") if relay else None
            organization = _organization(form)
        except SetupError as error:
            # A refused upload is not read to its end: the connection closes.
            close = {"Connection": "close"} if error.status == 413 else None
            return HTMLResponse(pages.setup_error(str(error)), status_code=error.status,
                                headers=close)
        state = self._new_state()
        target = registration_url(github_web_url(settings.github_api_url), state, organization)
        manifest = build_manifest(public_url, webhook_url=webhook_url)
        page = pages.to_github(target, manifest, owner=organization)
        log.info("app registration started", public_url=public_url, organization=organization)
        return HTMLResponse(page)

    async def callback(self, request: Request) -> Response:
        settings = self._settings()
        if settings.has_app_credentials:
            return _already(settings)
        try:
            self._check_state(request)
            code = request.query_params.get("code", "")
            if not code:
                raise SetupError("GitHub sent no code back; start again from the setup page.")
            try:
                credentials = await convert_code(settings.github_api_url, code)
            except GitHubError as error:
                raise SetupError(str(error), status=502) from None
            self._save(credentials)
        except SetupError as error:
            log.warning("app registration failed", reason=str(error))
            return HTMLResponse(pages.setup_error(str(error)), status_code=error.status)
        log.info("app registered", app_id=credentials.app_id, slug=credentials.slug,
                 env_file=str(self.dotenv_path))
        await self._on_registered(credentials)
        return HTMLResponse(pages.registered(credentials, self.dotenv_path, settings))

    def _new_state(self) -> str:
        now = time.monotonic()
        self._pending = {s: t for s, t in self._pending.items() if t > now}
        while len(self._pending) >= MAX_PENDING_STATES:
            self._pending.pop(next(iter(self._pending)))
        state = secrets.token_urlsafe(24)
        self._pending[state] = now + STATE_SECONDS
        return state

    def _check_state(self, request: Request) -> None:
        """The state must be one this server issued not long ago; it is good once."""
        expires = self._pending.pop(request.query_params.get("state", ""), None)
        if expires is None or expires < time.monotonic():
            raise SetupError(
                "This registration was not started from this server's setup page, or it "
                "expired; start again from the setup page."
            )

    def _save(self, credentials: AppCredentials) -> None:
        try:
            write_dotenv(self.dotenv_path, credentials.env())
        except OSError as error:
            raise SetupError(
                f"GitHub created the App {credentials.slug}, but Honk could not write "
                f"{self.dotenv_path} ({error.strerror}); delete the App on GitHub "
                f"({credentials.html_url}), fix the file's permissions and start again.",
                status=500,
            ) from None


async def _form(request: Request) -> dict[str, str]:
    """The page's urlencoded form (parsed here: Starlette's parser needs python-multipart),
    read no further than `MAX_FORM_BYTES`: the page's form is a few hundred bytes."""
    too_large = SetupError("The form is larger than the setup page ever sends; send it "
                           "from the setup page.", status=413)
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise too_large
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise too_large
    return {name: values[-1] for name, values in parse_qs(body.decode(errors="replace")).items()}


def _organization(form: Mapping[str, Any]) -> str | None:
    if form.get("owner") != "organization":
        return None
    name = str(form.get("organization") or "").strip()
    if not ACCOUNT_NAME.match(name):
        raise SetupError("Give the organisation's name as it appears in its GitHub URL.")
    return name


def _already(settings: Settings) -> Response:
    return HTMLResponse(
        pages.setup_error(
            f"Honk is already registered as GitHub App {settings.app_id}; to register it "
            "again, remove APP_ID, PRIVATE_KEY and WEBHOOK_SECRET from its settings first."
        ),
        status_code=409,
    )
