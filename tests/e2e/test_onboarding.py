"""The setup page and the manifest flow, over real HTTP against the GitHub simulator.

The browser walk-through is in test_setup_browser.py; here: the pieces, the organisation
path, and every way a registration is refused without writing anything.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from honk_app.github.manifest import (
    build_manifest,
    github_web_url,
    load_manifest_template,
    registration_url,
)
from honk_app.settings import load_settings, read_dotenv, write_dotenv
from honk_app.web.app import create_app
from honk_sim.github import GitHubSim
from honk_sim.github_auth import new_rsa_key_pair
from honk_sim.loopback import LoopbackServer, free_port


def test_github_web_url_from_the_api_url() -> None:
    assert github_web_url("https://api.github.com") == "https://github.com"
    assert github_web_url("https://api.github.com/") == "https://github.com"
    assert github_web_url("https://ghe.example.com/api/v3") == "https://ghe.example.com"
    assert github_web_url("http://127.0.0.1:4567/api/v3") == "http://127.0.0.1:4567"


def test_manifest_carries_the_events_permissions_and_this_servers_urls() -> None:
    manifest = build_manifest("https://honk.example.com/")
    assert manifest["default_events"] == [
        "issues", "issue_comment", "pull_request", "pull_request_review"
    ]
    assert manifest["default_permissions"] == {
        "contents": "write", "issues": "write", "pull_requests": "write", "metadata": "read"
    }
    assert manifest["hook_attributes"] == {
        "url": "https://honk.example.com/api/github/webhooks", "active": True
    }
    assert manifest["redirect_url"] == "https://honk.example.com/setup/callback"
    assert manifest["callback_urls"] == ["https://honk.example.com/auth/callback"]
    assert manifest["url"] == "https://honk.example.com"
    relayed = build_manifest("http://localhost:3000", webhook_url="https://smee.io/abc")
    assert relayed["hook_attributes"]["url"] == "https://smee.io/abc"
    assert relayed["redirect_url"] == "http://localhost:3000/setup/callback"
    assert load_manifest_template()["name"] == "Honk"


def test_registration_url_for_an_account_and_an_organisation() -> None:
    assert registration_url("https://github.com", "s 1") == (
        "https://github.com/settings/apps/new?state=s+1"
    )
    assert registration_url("https://ghe.example.com", "abc", "acme") == (
        "https://ghe.example.com/organizations/acme/settings/apps/new?state=abc"
    )


def test_dotenv_is_private_keeps_other_lines_and_round_trips_the_key(tmp_path: Path) -> None:
    pem = new_rsa_key_pair()[0]
    env = tmp_path / ".env"
    env.write_text("# mine\nANTHROPIC_API_KEY=sk-ant-keep\nAPP_ID=1\n")
    env.chmod(0o644)
    write_dotenv(env, {"APP_ID": "77", "PRIVATE_KEY": pem.strip().replace("\n", "\\n"),
                       "WEBHOOK_SECRET": "s3cret value"})
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    lines = env.read_text().splitlines()
    assert lines[:3] == ["# mine", "ANTHROPIC_API_KEY=sk-ant-keep", "APP_ID=77"]
    values = read_dotenv(env)
    assert values["WEBHOOK_SECRET"] == "s3cret value"
    settings = load_settings({**values, "HONK_DATA_DIR": str(tmp_path / "data")})
    assert settings.app_id == 77
    assert settings.private_key == pem.strip() + "\n"
    assert settings.anthropic_api_key == "sk-ant-keep"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".env.")] == []


@dataclass
class Setup:
    sim: GitHubSim
    honk: LoopbackServer
    env_file: Path
    http: httpx.Client


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """An unregistered Honk pointed at the simulator, and a client that keeps cookies."""
    with GitHubSim(tmp_path / "github") as sim:
        sim.add_user("ada")
        sim.oauth_login_as("ada")
        port = free_port()
        settings = load_settings({
            "HONK_DATA_DIR": str(tmp_path / "data"),
            "GITHUB_API_URL": sim.api_url,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "warning",
        })
        env_file = tmp_path / "honk" / ".env"
        app = create_app(settings, dotenv_path=env_file)
        with LoopbackServer(app, port=port) as honk, httpx.Client(timeout=30) as http:
            yield Setup(sim, honk, env_file, http)


def _form(page: str) -> tuple[str, str]:
    """The action and the manifest of the form that goes to GitHub."""
    action = unescape(re.search(r'<form id="register" method="post" action="([^"]+)"', page)[1])
    manifest = unescape(re.search(r'name="manifest" value="([^"]+)"', page)[1])
    return action, manifest


def test_home_is_the_setup_page_until_registered(setup: Setup) -> None:
    home = setup.http.get(f"{setup.honk.url}/")
    assert home.status_code == 200
    assert "Register Honk on GitHub" in home.text
    assert f'value="{setup.honk.url}"' in home.text
    assert setup.http.get(f"{setup.honk.url}/healthz").json() == {
        "ok": True, "configured": False
    }


def test_an_organisation_registers_and_the_server_acts_as_the_app(setup: Setup) -> None:
    started = setup.http.post(f"{setup.honk.url}/setup", data={
        "public_url": setup.honk.url, "owner": "organization", "organization": "acme",
    })
    assert started.status_code == 200
    action, manifest = _form(started.text)
    assert action.startswith(f"{setup.sim.web_url}/organizations/acme/settings/apps/new?state=")
    # what the browser does with the form: post it to GitHub, follow GitHub's redirect back
    github = setup.http.post(action, data={"manifest": manifest})
    assert github.status_code == 302
    back = github.headers["location"]
    assert back.startswith(f"{setup.honk.url}/setup/callback?")
    done = setup.http.get(back)
    assert done.status_code == 200, done.text
    [app] = setup.sim.apps()
    assert f"{setup.sim.web_url}/apps/{app.slug}/installations/new" in done.text
    assert stat.S_IMODE(setup.env_file.stat().st_mode) == 0o600
    values = read_dotenv(setup.env_file)
    assert values["APP_ID"] == str(app.id)
    assert values["WEBHOOK_SECRET"] == app.webhook_secret
    assert values["GITHUB_CLIENT_ID"] == app.client_id
    assert values["GITHUB_CLIENT_SECRET"] == app.client_secret
    assert load_settings(values).private_key == app.private_key_pem.strip() + "\n"
    assert app.webhook_secret not in done.text and app.client_secret not in done.text
    assert setup.http.get(f"{setup.honk.url}/healthz").json()["configured"] is True
    # the same callback again: the App exists, nothing is registered twice
    assert setup.http.get(back).status_code == 409
    assert setup.http.post(f"{setup.honk.url}/setup",
                           data={"public_url": setup.honk.url}).status_code == 409
    assert len(setup.sim.apps()) == 1


def test_a_callback_this_server_did_not_start_writes_nothing(setup: Setup) -> None:
    setup.http.post(f"{setup.honk.url}/setup", data={"public_url": setup.honk.url})
    code = setup.sim.manifest_code(build_manifest(setup.honk.url))
    callback = f"{setup.honk.url}/setup/callback"
    forged = setup.http.get(callback, params={"code": code, "state": "made-up"})
    assert forged.status_code == 400
    assert "not started from this server" in forged.text
    assert setup.http.get(callback, params={"code": code}).status_code == 400
    assert not setup.env_file.exists()
    assert setup.sim.apps() == []  # the code was never exchanged


def test_a_bad_code_is_explained_and_writes_nothing(setup: Setup) -> None:
    started = setup.http.post(f"{setup.honk.url}/setup", data={"public_url": setup.honk.url})
    state = parse_qs(urlsplit(_form(started.text)[0]).query)["state"][0]
    answer = setup.http.get(f"{setup.honk.url}/setup/callback",
                            params={"code": "expired", "state": state})
    assert answer.status_code == 502
    assert "did not accept the registration code" in answer.text
    assert not setup.env_file.exists()
    # a state is good once
    code = setup.sim.manifest_code(build_manifest(setup.honk.url))
    again = setup.http.get(f"{setup.honk.url}/setup/callback",
                           params={"code": code, "state": state})
    assert again.status_code == 400
    assert setup.sim.apps() == []


@pytest.mark.parametrize("form, sentence", [
    ({"public_url": "ftp://x"}, "public URL must look like"),
    ({"public_url": "https://honk.example.com", "owner": "organization",
      "organization": "no spaces"}, "organisation"),
    ({"public_url": "https://honk.example.com", "webhook_url": "smee"}, "webhook URL"),
])
def test_the_form_is_checked(setup: Setup, form: dict[str, str], sentence: str) -> None:
    answer = setup.http.post(f"{setup.honk.url}/setup", data=form)
    assert answer.status_code == 400
    assert sentence in unescape(answer.text)


@pytest.fixture
def half_configured(tmp_path: Path) -> Iterator[str]:
    """APP_ID and PRIVATE_KEY set, no webhook secret: the setup page is still open."""
    private_pem, _ = new_rsa_key_pair()
    settings = load_settings({
        "HONK_DATA_DIR": str(tmp_path / "data"), "APP_ID": "12345",
        "PRIVATE_KEY": private_pem, "LOG_FORMAT": "console", "LOG_LEVEL": "warning",
    })
    assert not settings.has_app_credentials
    with LoopbackServer(create_app(settings, dotenv_path=tmp_path / ".env")) as honk:
        yield honk.url


ATTACKER = "https://attacker.example"


@pytest.mark.parametrize("headers", [
    {"Origin": ATTACKER, "Sec-Fetch-Site": "cross-site"},
    {"Origin": ATTACKER},  # a browser without Sec-Fetch-Site
    {"Sec-Fetch-Site": "same-site"},  # a neighbouring subdomain
    {"Origin": "null"},
])
def test_a_cross_site_setup_post_is_refused(half_configured: str, headers: dict[str, str]) -> None:
    answer = httpx.post(f"{half_configured}/setup", headers=headers,
                        data={"public_url": ATTACKER})
    assert answer.status_code == 403
    assert "another site" in answer.text
    assert "settings/apps/new" not in answer.text and ATTACKER not in answer.text


def test_the_setup_pages_own_post_goes_through(half_configured: str) -> None:
    own = urlsplit(half_configured).netloc
    for headers in ({"Origin": half_configured, "Sec-Fetch-Site": "same-origin"},
                    {"Origin": half_configured}, {"Sec-Fetch-Site": "none"}, {}):
        answer = httpx.post(f"{half_configured}/setup", headers=headers,
                            data={"public_url": "https://honk.example.com"})
        assert answer.status_code == 200, (headers, answer.text)
        assert "settings/apps/new" in answer.text and own


def test_a_setup_body_over_the_cap_is_413_without_reading_it(half_configured: str) -> None:
    big = b"public_url=" + b"x" * (1 << 20)
    answer = httpx.post(f"{half_configured}/setup", content=big,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413
    assert "larger than the setup page" in answer.text

    sent = 0

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        nonlocal sent
        yield b"public_url="
        for _ in range(300):
            sent += 1
            yield b"x" * (1 << 20)

    try:
        answer = httpx.post(f"{half_configured}/setup", content=chunks(), timeout=30,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 413
    except httpx.TransportError:
        pass  # the server answered and closed while the client was still sending
    assert sent < 100, f"the server read {sent} MiB of a form"
