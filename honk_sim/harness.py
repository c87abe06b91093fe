"""Honk wired to the simulated GitHub and the scripted Claude, all on loopback.

The app under test is the production app: it reaches the simulators only through its
settings (GITHUB_API_URL, ANTHROPIC_BASE_URL), as it would reach GitHub Enterprise Server.
Used by `honk demo` and the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honk_app.settings import Settings, load_settings
from honk_app.web.app import create_app
from honk_sim.claude import ScriptedClaude
from honk_sim.github import GitHubSim, SimApp
from honk_sim.loopback import LoopbackServer, free_port

SIM_ANTHROPIC_KEY = "sk-ant-sim-0000000000000000"
FINAL_STATES = ("done", "failed", "cancelled")


@dataclass
class OfflineHonk:
    github: GitHubSim
    app: SimApp
    settings: Settings
    server: LoopbackServer
    claude: ScriptedClaude | None

    def runs(self) -> list[dict[str, Any]]:
        """Honk's run records, read straight from its database."""
        assert self.settings.sqlite_path is not None
        with contextlib.closing(sqlite3.connect(self.settings.sqlite_path)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute("SELECT * FROM runs ORDER BY id")]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], *, timeout: float = 120.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs()
            if predicate(runs):
                return runs
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs did not reach the expected state: {runs}")
            time.sleep(0.05)

    def wait_until_idle(self, count: int, *, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Wait until at least `count` runs exist and every run has ended."""
        return self.wait_for(
            lambda runs: len(runs) >= count and all(r["state"] in FINAL_STATES for r in runs),
            timeout=timeout,
        )


@contextlib.contextmanager
def offline_honk(
    root: Path,
    *,
    script: Any = None,
    env: Mapping[str, str] | None = None,
    live_model_key: str | None = None,
    faults: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Iterator[OfflineHonk]:
    """Start the simulators and Honk; `script` feeds the scripted Claude (None: real Claude).

    `faults`: {"github": [rules], "claude": [rules]}, in force from the start (see
    `honk_sim.faults`; more can be added later with each simulator's `add_faults`).
    """
    faults = faults or {}
    github = GitHubSim(root / "github")
    github.add_faults(list(faults.get("github", ())))
    github.start()
    claude: ScriptedClaude | None = None
    try:
        port = free_port()
        app = github.create_app(
            slug="honk", webhook_url=f"http://127.0.0.1:{port}/api/github/webhooks"
        )
        values = {
            "APP_ID": str(app.id),
            "PRIVATE_KEY": app.private_key_pem,
            "WEBHOOK_SECRET": app.webhook_secret,
            "GITHUB_CLIENT_ID": app.client_id,
            "GITHUB_CLIENT_SECRET": app.client_secret,
            "GITHUB_API_URL": github.api_url,
            "HONK_DATA_DIR": str(root / "honk"),
            "PORT": str(port),
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "warning",
        }
        if live_model_key:
            values["ANTHROPIC_API_KEY"] = live_model_key
        else:
            claude = ScriptedClaude(script, faults=list(faults.get("claude", ())))
            values["ANTHROPIC_API_KEY"] = SIM_ANTHROPIC_KEY
            values["ANTHROPIC_BASE_URL"] = claude.start()
        values.update(env or {})
        settings = load_settings(values)
        server = LoopbackServer(create_app(settings), port=port, name="honk").start()
        try:
            yield OfflineHonk(
                github=github, app=app, settings=settings, server=server, claude=claude
            )
        finally:
            server.stop()
    finally:
        if claude is not None:
            claude.stop()
        github.stop()
