"""From zero to a working App in a real browser: headless Chromium (Debian's) clicks through
the setup page, the simulated GitHub's side of the manifest flow, and back; then the App's
first signed delivery reaches the running server, which acts on it with the written key."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from honk_app.run.pipeline import LABEL_COLOR, LABEL_DESCRIPTION
from honk_app.settings import load_settings, read_dotenv
from honk_app.web.app import create_app
from honk_sim.github import GitHubSim
from honk_sim.loopback import LoopbackServer, free_port

CHROMIUM = Path("/usr/bin/chromium")
# Without these, Chromium stalls on background connections this offline machine cannot make.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)",
)


def test_register_in_a_browser_then_receive_a_signed_delivery(tmp_path: Path) -> None:
    with GitHubSim(tmp_path / "github") as sim:
        sim.add_user("ada")
        sim.oauth_login_as("ada")
        sim.create_repo("ada/widgets", {"README.md": "# widgets\n"})
        port = free_port()
        settings = load_settings({
            "HONK_DATA_DIR": str(tmp_path / "data"),
            "GITHUB_API_URL": sim.api_url,
            "PORT": str(port),
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "warning",
        })
        env_file = tmp_path / "honk" / ".env"
        app = create_app(settings, dotenv_path=env_file)
        with LoopbackServer(app, port=port) as honk, sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),  # a fresh profile
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_FLAGS,
            )
            try:
                page = browser.new_page()
                page.goto(f"{honk.url}/")
                # the public URL is asked for on the page, filled in with what the browser used
                assert page.input_value("input[name=public_url]") == honk.url
                page.get_by_role("button", name="Register Honk on GitHub").click()
                page.wait_for_url(f"{honk.url}/setup/callback?*")
                assert page.get_by_role("heading", level=1).inner_text() == "🪿 Honk is registered"
                install_href = page.locator("#install").get_attribute("href")
                page.goto(f"{honk.url}/")
                assert "Honk is running" in page.content()
            finally:
                browser.close()

            [registered] = sim.apps()
            assert install_href == f"{sim.web_url}/apps/{registered.slug}/installations/new"
            assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
            values = read_dotenv(env_file)
            assert values["APP_ID"] == str(registered.id)
            assert values["WEBHOOK_SECRET"] == registered.webhook_secret
            assert values["GITHUB_CLIENT_ID"] == registered.client_id

            # GitHub now delivers the installation, signed with the new secret; the running
            # server accepts it and creates its label with a token minted from the new key.
            sim.install(["ada/widgets"])
            delivery = sim.wait_for_delivery("installation", "created")
            assert delivery.status == 202, delivery.response_body
            label = _wait_for_label(sim, "ada/widgets", "honk")
            assert (label["color"], label["description"]) == (LABEL_COLOR, LABEL_DESCRIPTION)


def _wait_for_label(sim: GitHubSim, repo: str, name: str) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [label for label in sim.labels(repo) if label["name"] == name]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no label {name!r} in {repo}: {sim.labels(repo)}")
