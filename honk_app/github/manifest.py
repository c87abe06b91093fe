"""Registering Honk as a GitHub App (the manifest flow), and GitHub's web addresses.

The manifest is `app-manifest.yml` (the App's events and least permissions) with this
server's URLs; GitHub's answer to the flow's one-time code is the new App's credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import yaml
from githubkit import GitHub
from githubkit.exception import GitHubException

from honk_app.github.client import GitHubError, describe

MANIFEST_PATH = Path(__file__).resolve().parents[2] / "app-manifest.yml"


@dataclass(frozen=True)
class AppCredentials:
    """What GitHub's manifest conversion returns: the new App and its secrets."""

    app_id: int
    slug: str
    html_url: str
    private_key: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    client_id: str
    client_secret: str = field(repr=False)

    @property
    def install_url(self) -> str:
        return f"{self.html_url}/installations/new"

    def env(self) -> dict[str, str]:
        """The `.env` lines Honk reads at start-up (config.load_settings)."""
        return {
            "APP_ID": str(self.app_id),
            # One line: settings.py turns the literal `\n` back into line breaks.
            "PRIVATE_KEY": self.private_key.strip().replace("\n", "\\n"),
            "WEBHOOK_SECRET": self.webhook_secret,
            "GITHUB_CLIENT_ID": self.client_id,
            "GITHUB_CLIENT_SECRET": self.client_secret,
        }


def github_web_url(api_url: str) -> str:
    """GitHub's web address for an API address: github.com, or a GHES (or simulator) host."""
    api_url = api_url.rstrip("/")
    parts = urlsplit(api_url)
    if parts.hostname == "api.github.com":
        return "https://github.com"
    return api_url.removesuffix("/api/v3")


def load_manifest_template(path: Path = MANIFEST_PATH) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a mapping")
    return data


def build_manifest(
    public_url: str, *, webhook_url: str | None = None, template: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The manifest GitHub receives: the App's events and permissions, this server's URLs.

    `webhook_url` replaces `{public_url}/api/github/webhooks` when deliveries go through a
    relay (smee.io) while the browser reaches Honk directly.
    """
    base = public_url.rstrip("/")
    manifest = dict(template if template is not None else load_manifest_template())
    manifest.update(
        url=base,
        hook_attributes={"url": webhook_url or f"{base}/api/github/webhooks", "active": True},
        redirect_url=f"{base}/setup/callback",
        callback_urls=[f"{base}/auth/callback"],
        setup_url=f"{base}/",
        request_oauth_on_install=False,
    )
    return manifest


def registration_url(web_url: str, state: str, organization: str | None = None) -> str:
    """Where the manifest form posts: the person's settings or the organisation's."""
    where = f"/organizations/{organization}" if organization else ""
    return f"{web_url}{where}/settings/apps/new?{urlencode({'state': state})}"


async def convert_code(api_url: str, code: str) -> AppCredentials:
    """Exchange the manifest flow's one-time code for the new App's credentials."""
    try:
        async with GitHub(base_url=api_url, timeout=30, http_cache=False) as github:
            response = await github.rest.apps.async_create_from_manifest(code)
    except GitHubException as error:
        raise GitHubError(
            f"GitHub did not accept the registration code ({describe(error)}); "
            "codes work once and expire after an hour: start again from the setup page.",
        ) from None
    data = response.parsed_data
    if not data.webhook_secret:
        raise GitHubError("GitHub created the App without a webhook secret; delete it on "
                          f"GitHub ({data.html_url}) and start again.")
    return AppCredentials(
        app_id=data.id,
        slug=data.slug if isinstance(data.slug, str) and data.slug else data.name,
        html_url=data.html_url,
        private_key=data.pem,
        webhook_secret=data.webhook_secret,
        client_id=data.client_id,
        client_secret=data.client_secret,
    )
