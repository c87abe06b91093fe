"""Signing a person in with GitHub (the App's OAuth client), and what they can read there.

Each call acts with the person's own user token, never the App's; a refusal or a fault is
a `GitHubError` whose message says what GitHub said.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
from githubkit import GitHub, TokenAuthStrategy
from githubkit.exception import GitHubException, RequestFailed

from honk_app.github.client import GitHubError, as_github_error
from honk_app.github.manifest import github_web_url

TIMEOUT_SECONDS = 30


def authorize_url(api_url: str, *, client_id: str, redirect_uri: str, state: str) -> str:
    """GitHub's page where the person agrees to sign in to Honk."""
    query = {"client_id": client_id, "redirect_uri": redirect_uri, "state": state}
    return f"{github_web_url(api_url)}/login/oauth/authorize?{urlencode(query)}"


async def exchange_code(
    api_url: str, *, client_id: str, client_secret: str, code: str, redirect_uri: str
) -> str:
    """The person's user token for the code GitHub sent their browser back with."""
    url = f"{github_web_url(api_url)}/login/oauth/access_token"
    form = {
        "client_id": client_id,
        "client_secret": client_secret,
        "code": code,
        "redirect_uri": redirect_uri,
    }
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
            response = await http.post(url, data=form, headers={"Accept": "application/json"})
        data = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise GitHubError(f"GitHub could not be reached ({type(error).__name__}).",
                          transient=True) from None
    # GitHub answers OAuth errors with 200 and an `error` field.
    if not isinstance(data, dict) or not data.get("access_token"):
        reason = data.get("error_description") if isinstance(data, dict) else None
        raise GitHubError(f"GitHub refused the sign-in: {reason or response.status_code}.")
    return str(data["access_token"])


async def login_of(api_url: str, token: str) -> str:
    """Who the token belongs to."""
    try:
        async with _user_client(api_url, token) as github:
            return (await github.rest.users.async_get_authenticated()).parsed_data.login
    except GitHubException as error:
        raise as_github_error(error) from None


async def readable_repos(api_url: str, token: str) -> frozenset[str]:
    """The repositories of this App's installations the person can read (`GitHubError` with
    status 401: the token expired or was revoked)."""
    names: set[str] = set()
    try:
        async with _user_client(api_url, token) as github:
            installations = github.rest.paginate(
                github.rest.apps.async_list_installations_for_authenticated_user,
                map_func=lambda response: response.parsed_data.installations,
                per_page=100,
            )
            async for installation in installations:
                try:
                    async for repo in github.rest.paginate(
                        github.rest.apps.async_list_installation_repos_for_authenticated_user,
                        map_func=lambda response: response.parsed_data.repositories,
                        installation_id=installation.id,
                        per_page=100,
                    ):
                        names.add(repo.full_name)
                except RequestFailed as error:
                    if error.response.status_code != 404:  # none of it is visible to them
                        raise
    except GitHubException as error:
        raise as_github_error(error) from None
    return frozenset(names)


def _user_client(api_url: str, token: str) -> GitHub[TokenAuthStrategy]:
    return GitHub(
        TokenAuthStrategy(token), base_url=api_url, timeout=TIMEOUT_SECONDS,
        http_cache=False,  # with the cache on, githubkit's timeout is not enforced
    )
