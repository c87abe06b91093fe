"""Sign in with GitHub for Honk's own pages, through the App's OAuth client.

`/auth/signin` sends the browser to GitHub's authorize page with a one-time state (kept in
a short-lived cookie); `/auth/callback` checks it, exchanges the code for the person's
user token and asks GitHub who they are. The session is a cookie, HttpOnly and
SameSite=Lax, signed with HMAC-SHA256 and encrypted (Fernet) under a key derived from the
webhook secret (shared by every web process of one App), or from a secret generated in the
data directory when there is none. Which repositories the person can read is asked of
GitHub with their token, and remembered for a minute.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import structlog
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from honk_app.github import oauth
from honk_app.github.client import GitHubError
from honk_app.settings import Settings
from honk_app.web import pages
from honk_app.web.same_origin import CROSS_SITE_SENTENCE, from_this_site

log = structlog.get_logger()

SESSION_COOKIE = "honk_session"
SIGNIN_COOKIE = "honk_signin"
SESSION_SECONDS = 8 * 3600  # as long as GitHub's user tokens of an App live
SIGNIN_SECONDS = 10 * 60
REPOS_CACHE_SECONDS = 60.0
SESSION_KEY_FILE = "session.key"


class SignInError(Exception):
    """Signing in failed; the message is one sentence for the person."""


@dataclass(frozen=True)
class Viewer:
    """The person signed in, with the user token GitHub gave Honk for them."""

    login: str
    token: str = field(repr=False)


class SessionCodec:
    """Cookie values that cannot be read or forged without the key, and that expire."""

    def __init__(self, secret: bytes) -> None:
        key = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"honk session").derive(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def dump(self, data: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(data).encode()).decode()

    def load(self, value: str, *, max_age: int) -> dict[str, Any] | None:
        try:
            data = json.loads(self._fernet.decrypt(value.encode(), ttl=max_age))
        except (InvalidToken, ValueError):
            return None
        return data if isinstance(data, dict) else None


def session_secret(settings: Settings) -> bytes:
    """The webhook secret, or a random secret kept (mode 0600) in the data directory."""
    if settings.webhook_secret:
        return settings.webhook_secret.encode()
    path = settings.data_dir / SESSION_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(descriptor, "wb") as file:
        file.write(secrets.token_bytes(32))
    return path.read_bytes()


def oauth_configured(settings: Settings) -> bool:
    return bool(settings.client_id and settings.client_secret)


class GitHubSignIn:
    """The sign-in routes, and who is signed in on a request."""

    def __init__(self, settings: Callable[[], Settings]) -> None:
        self._settings = settings
        self._codecs: dict[bytes, SessionCodec] = {}
        self._repos: dict[str, tuple[float, frozenset[str]]] = {}  # token -> (until, names)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/auth/signin", self.signin, methods=["GET"]),
            Route("/auth/callback", self.callback, methods=["GET"]),
            Route("/auth/signout", self.signout, methods=["POST"]),
        ]

    # --- who is signed in ------------------------------------------------------------

    def viewer(self, request: Request) -> Viewer | None:
        value = request.cookies.get(SESSION_COOKIE)
        data = self._codec().load(value, max_age=SESSION_SECONDS) if value else None
        if not data or not isinstance(data.get("login"), str) or not data.get("token"):
            return None
        return Viewer(data["login"], str(data["token"]))

    async def readable_repos(self, viewer: Viewer) -> frozenset[str] | None:
        """Repositories of this App's installations the person can read; None: token dead."""
        now = time.monotonic()
        cached = self._repos.get(viewer.token)
        if cached and cached[0] > now:
            return cached[1]
        try:
            names = await oauth.readable_repos(self._settings().github_api_url, viewer.token)
        except GitHubError as error:
            if error.status == 401:
                return None  # the token expired or was revoked: sign in again
            raise SignInError(f"GitHub could not list your repositories ({error}).") from None
        self._repos = {t: c for t, c in self._repos.items() if c[0] > now}
        self._repos[viewer.token] = (now + REPOS_CACHE_SECONDS, names)
        return names

    def redirect_to_signin(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/auth/signin?{urlencode({'next': target})}", status_code=302)

    # --- the routes --------------------------------------------------------------------

    async def signin(self, request: Request) -> Response:
        settings = self._settings()
        if not oauth_configured(settings):
            return HTMLResponse(pages.pages_off(), status_code=404)
        public = settings.public_url
        here = str(request.base_url).rstrip("/")
        if public and here != public and not request.query_params.get("moved"):
            # GitHub returns to the public URL: sign in there, where the cookies will live.
            query = urlencode({"next": _local(request.query_params), "moved": "1"})
            return RedirectResponse(f"{public}/auth/signin?{query}", status_code=302)
        state = secrets.token_urlsafe(24)
        target = oauth.authorize_url(settings.github_api_url, client_id=settings.client_id or "",
                                     redirect_uri=self._callback_url(request), state=state)
        response = RedirectResponse(target, status_code=302)
        cookie = self._codec().dump({"state": state, "next": _local(request.query_params)})
        self._set_cookie(response, request, SIGNIN_COOKIE, cookie, SIGNIN_SECONDS, path="/auth")
        return response

    async def callback(self, request: Request) -> Response:
        settings = self._settings()
        if not oauth_configured(settings):
            return HTMLResponse(pages.pages_off(), status_code=404)
        value = request.cookies.get(SIGNIN_COOKIE)
        started = self._codec().load(value, max_age=SIGNIN_SECONDS) if value else None
        state = request.query_params.get("state", "")
        if not started or not state or not secrets.compare_digest(str(started["state"]), state):
            return _refused("This sign-in was not started here, or it took too long.")
        try:
            token = await self._exchange(settings, request)
        except SignInError as error:
            return _refused(str(error))
        try:
            login = await oauth.login_of(settings.github_api_url, token)
        except GitHubError as error:
            return _refused(f"GitHub would not say who you are ({error}).")
        log.info("signed in", login=login)
        response = RedirectResponse(str(started.get("next") or "/runs"), status_code=302)
        session = self._codec().dump({"login": login, "token": token})
        self._set_cookie(response, request, SESSION_COOKIE, session, SESSION_SECONDS)
        response.delete_cookie(SIGNIN_COOKIE, path="/auth")
        return response

    async def signout(self, request: Request) -> Response:
        if not from_this_site(request, self._settings().public_url):
            return HTMLResponse(pages.signin_failed(CROSS_SITE_SENTENCE), status_code=403)
        viewer = self.viewer(request)
        if viewer is not None:
            self._repos.pop(viewer.token, None)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- helpers -----------------------------------------------------------------------

    async def _exchange(self, settings: Settings, request: Request) -> str:
        code = request.query_params.get("code", "")
        if not code:
            raise SignInError("GitHub sent no code back.")
        try:
            return await oauth.exchange_code(
                settings.github_api_url, client_id=settings.client_id or "",
                client_secret=settings.client_secret or "", code=code,
                redirect_uri=self._callback_url(request),
            )
        except GitHubError as error:
            raise SignInError(str(error)) from None

    def _callback_url(self, request: Request) -> str:
        base = self._settings().public_url or str(request.base_url).rstrip("/")
        return f"{base}/auth/callback"

    def _codec(self) -> SessionCodec:
        secret = session_secret(self._settings())
        if secret not in self._codecs:
            self._codecs[secret] = SessionCodec(secret)
        return self._codecs[secret]

    def _set_cookie(
        self, response: Response, request: Request, name: str, value: str, max_age: int,
        *, path: str = "/",
    ) -> None:
        public = self._settings().public_url or str(request.base_url)
        response.set_cookie(name, value, max_age=max_age, path=path, httponly=True,
                            samesite="lax", secure=public.startswith("https:"))


def _local(query: Any) -> str:
    """The page to return to after signing in: a path on this server, never another site."""
    target = str(query.get("next") or "/runs")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/runs"
    return target


def _refused(sentence: str) -> Response:
    return HTMLResponse(pages.signin_failed(sentence), status_code=400)
