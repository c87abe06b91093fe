"""The few github.com pages an App meets outside the API.

- `POST /settings/apps/new` (and `/organizations/{org}/settings/apps/new`): the manifest
  flow's form post; redirects to the manifest's `redirect_url` with a one-time `code`, which
  `POST /api/v3/app-manifests/{code}/conversions` turns into the App's credentials.
- `GET /login/oauth/authorize` and `POST /login/oauth/access_token`: "Sign in with GitHub"
  for a web page of the App. Who signs in is set with `GitHubSim.oauth_login_as`.
"""

import json
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from honk_sim.github_auth import new_token
from honk_sim.github_state import SimState, Token, utc_now

OAUTH_TOKEN_LIFETIME = timedelta(hours=8)


class WebRoutes:
    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/settings/apps/new", self.new_app_from_manifest, methods=["POST"]),
            Route(
                "/organizations/{org}/settings/apps/new",
                self.new_app_from_manifest,
                methods=["POST"],
            ),
            Route("/login/oauth/authorize", self.authorize, methods=["GET"]),
            Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
        ]

    def create_manifest_code(self, manifest: dict[str, Any], *, owner: str) -> str:
        code = secrets.token_hex(10)
        with self.state.lock:
            self.state.manifest_codes[code] = {**manifest, "_owner": owner}
        return code

    async def new_app_from_manifest(self, request: Request) -> Response:
        raw = (await _form(request)).get("manifest")
        try:
            manifest = json.loads(str(raw)) if raw else None
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict) or not manifest.get("url"):
            return PlainTextResponse("Invalid GitHub App configuration\n", status_code=422)
        with self.state.lock:
            owner = request.path_params.get("org") or self.state.oauth_login or "sim-admin"
        code = self.create_manifest_code(manifest, owner=owner)
        query = {"code": code}
        if "state" in request.query_params:
            query["state"] = request.query_params["state"]
        target = str(manifest.get("redirect_url") or manifest["url"])
        joiner = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{joiner}{urlencode(query)}", status_code=302)

    async def authorize(self, request: Request) -> Response:
        client_id = request.query_params.get("client_id", "")
        with self.state.lock:
            app = next((a for a in self.state.apps.values() if a.client_id == client_id), None)
            login = self.state.oauth_login
            if app is None:
                return PlainTextResponse("Not Found\n", status_code=404)
            if login is None:
                return PlainTextResponse(
                    "Nobody is signed in to the simulator (GitHubSim.oauth_login_as).\n",
                    status_code=401,
                )
            code = secrets.token_hex(10)
            self.state.oauth_codes[code] = (app.id, login)
        target = request.query_params.get("redirect_uri") or app.callback_url
        if not target:
            return PlainTextResponse("The redirect_uri is missing.\n", status_code=400)
        query = {"code": code}
        if "state" in request.query_params:
            query["state"] = request.query_params["state"]
        joiner = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{joiner}{urlencode(query)}", status_code=302)

    async def access_token(self, request: Request) -> Response:
        fields: dict[str, str] = dict(request.query_params)
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
            fields.update({k: str(v) for k, v in body.items()} if isinstance(body, dict) else {})
        else:
            fields.update(await _form(request))
        wants_json = "json" in request.headers.get("accept", "")
        with self.state.lock:
            app = next(
                (a for a in self.state.apps.values() if a.client_id == fields.get("client_id")),
                None,
            )
            if app is None or app.client_secret != fields.get("client_secret"):
                return _oauth_answer(
                    wants_json,
                    {
                        "error": "incorrect_client_credentials",
                        "error_description": "The client_id and/or client_secret passed are "
                        "incorrect.",
                    },
                )
            grant = self.state.oauth_codes.pop(fields.get("code", ""), None)
            if grant is None or grant[0] != app.id:
                return _oauth_answer(
                    wants_json,
                    {
                        "error": "bad_verification_code",
                        "error_description": "The code passed is incorrect or expired.",
                    },
                )
            token = Token(
                value=new_token("ghu_"),
                kind="oauth",
                login=grant[1],
                expires_at=utc_now() + OAUTH_TOKEN_LIFETIME,
                app_id=app.id,
            )
            self.state.tokens[token.value] = token
        return _oauth_answer(
            wants_json,
            {
                "access_token": token.value,
                "expires_in": int(OAUTH_TOKEN_LIFETIME.total_seconds()),
                "refresh_token": new_token("ghr_"),
                "refresh_token_expires_in": 15897600,
                "scope": "",
                "token_type": "bearer",
            },
        )


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (what browsers and OAuth clients post here)."""
    body = (await request.body()).decode(errors="replace")
    return {key: values[-1] for key, values in parse_qs(body).items()}


def _oauth_answer(wants_json: bool, data: dict[str, Any]) -> Response:
    # GitHub answers OAuth errors with 200, in the format the client asked for.
    if wants_json:
        return JSONResponse(data)
    return PlainTextResponse(
        urlencode({k: str(v) for k, v in data.items()}),
        media_type="application/x-www-form-urlencoded",
    )
