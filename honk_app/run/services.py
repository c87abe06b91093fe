"""What a run is given: the settings, the store, GitHub, the workspaces, the model, the
redactor; built once per worker from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import anthropic

from honk_app.github.client import GitHubApp
from honk_app.redact import Redactor
from honk_app.sandbox.user import sandbox_user
from honk_app.settings import Settings
from honk_app.store.runs import RunStore
from honk_app.workspace.checkout import WorkspaceManager


@dataclass
class Services:
    settings: Settings
    store: RunStore
    github: GitHubApp
    workspaces: WorkspaceManager
    anthropic: anthropic.AsyncAnthropic | None
    redactor: Redactor


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
        workspaces=WorkspaceManager(
            settings.data_dir,
            sandbox=sandbox_user(settings.sandbox_uid, settings.sandbox_gid),
            remote_timeout_seconds=settings.git_timeout_seconds,
        ),
        anthropic=model,
        redactor=redactor,
    )
