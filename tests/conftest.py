"""Shared test fixtures: real webhook payloads, signed requests, a real server on loopback."""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from honk_app.settings import Settings, load_settings
from honk_app.web.webhooks import sign
from honk_sim.loopback import LoopbackServer

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "webhooks"
SECRET = "test-webhook-secret-0123456789"


def fixture_payload(event: str, name: str) -> dict[str, Any]:
    path = SHARED_FIXTURES / event / name
    if not path.exists():
        pytest.skip(f"shared webhook fixtures not found at {SHARED_FIXTURES}")
    data: dict[str, Any] = json.loads(path.read_text())
    return copy.deepcopy(data)


def all_fixture_paths() -> list[Path]:
    return sorted(SHARED_FIXTURES.glob("*/*.json")) if SHARED_FIXTURES.exists() else []


def app_payload(event: str, name: str, **changes: Any) -> dict[str, Any]:
    """A real payload as an App installation receives it today (older fixtures lack
    `installation`; their events happened in 2019, too long ago for Honk to act on)."""
    payload = fixture_payload(event, name)
    payload.setdefault("installation", {"id": 4242, "node_id": "MDIzOkludGVncmF0aW9uNDI0Mg=="})
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for part, stamp in (("comment", "created_at"), ("issue", "updated_at"),
                        ("review", "submitted_at")):
        if isinstance(payload.get(part), dict) and stamp in payload[part]:
            payload[part][stamp] = now
    payload.update(changes)
    return payload


def signed_headers(body: bytes, event: str, delivery: str | None = None,
                   secret: str = SECRET) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
    }


@pytest.fixture
def webhook_only_settings(tmp_path: Path) -> Settings:
    """A server that knows its webhook secret but has no App key: it stores, it runs nothing."""
    return load_settings({"HONK_DATA_DIR": str(tmp_path / "data"), "WEBHOOK_SECRET": SECRET,
                          "LOG_FORMAT": "console"})


@pytest.fixture
def honk_server(webhook_only_settings: Settings) -> Iterator[LoopbackServer]:
    from honk_app.web.app import create_app

    with LoopbackServer(create_app(webhook_only_settings), name="honk") as server:
        yield server


@pytest.fixture
def client(honk_server: LoopbackServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=honk_server.url, timeout=30) as http:
        yield http


@contextlib.contextmanager
def sample_honk(root: Path, script: Any, env: dict[str, str] | None = None) -> Iterator[Any]:
    """Honk against the simulators, with the demo's sample repository installed."""
    from honk_sim.demo import MAINTAINER, REPO, SAMPLE_FILES
    from honk_sim.harness import offline_honk

    with offline_honk(root, script=script, env=env) as honk:
        sim = honk.github
        sim.add_user(MAINTAINER)
        sim.create_repo(REPO, SAMPLE_FILES)
        sim.set_permission(REPO, MAINTAINER, "write")
        sim.install([REPO])
        honk.wait_until_idle(1)  # the installation's label run
        yield honk


def git_out(git_dir: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True,
                          capture_output=True, text=True).stdout


def edit(old: str, new: str, path: str = "/workspace/calc.py") -> dict[str, Any]:
    """A scripted Claude turn: one str_replace with the text editor tool."""
    return {"tool": "str_replace_based_edit_tool",
            "input": {"command": "str_replace", "path": path, "old_str": old, "new_str": new}}


def report(title: str, summary: str | None = None) -> dict[str, Any]:
    """A scripted Claude turn: the report that ends the task."""
    return {"tool": "report", "input": {"title": title, "summary": summary or f"{title}.",
                                        "commit_message": f"{title}\n\nAs asked."}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def git_env(home: Path) -> dict[str, str]:
    """A plain git's environment for tests acting as someone other than Honk."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "Someone Else",
        "GIT_AUTHOR_EMAIL": "else@example.com",
        "GIT_COMMITTER_NAME": "Someone Else",
        "GIT_COMMITTER_EMAIL": "else@example.com",
    }


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run plain git in `cwd`; its stripped output."""
    import subprocess

    result = subprocess.run(["git", *args], cwd=cwd, env=env or git_env(cwd),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def sandbox_owned(path: Path) -> Path:
    """Give a test's workspace to the sandbox's uid, as WorkspaceManager's slots are given to
    its group: run as root, Honk runs commands as 65534, which must be able to write it."""
    import os

    from honk_app.sandbox.user import sandbox_user

    user = sandbox_user()
    if user.separate:
        for directory, dirs, files in os.walk(path):
            os.chown(directory, user.uid, user.gid)
            for name in [*dirs, *files]:
                os.chown(os.path.join(directory, name), user.uid, user.gid,
                         follow_symlinks=False)
    return path
