"""README's first command ends in `honk serve`: on a fresh directory it serves the setup
page; once `.env` holds the App's credentials, the next start is the App."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from honk_app.github.manifest import AppCredentials
from honk_app.settings import write_dotenv
from honk_sim.github_auth import new_rsa_key_pair
from honk_sim.loopback import free_port

HONK = Path(sys.executable).with_name("honk")


@contextlib.contextmanager
def honk_serve(directory: Path) -> Iterator[str]:
    """`honk serve` as a person starts it, in `directory`, with nothing else configured."""
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "PORT": str(port), "HOST": "127.0.0.1",
           "LOG_FORMAT": "console"}
    process = subprocess.Popen([str(HONK), "serve"], cwd=directory, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"honk serve did not start:\n{_output(process)}"
                    ) from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _output(process: subprocess.Popen[str]) -> str:
    process.kill()
    return process.communicate()[0]


def test_first_start_serves_the_setup_page_and_the_next_reads_env(tmp_path: Path) -> None:
    with honk_serve(tmp_path) as url:
        home = httpx.get(f"{url}/", timeout=10)
        assert home.status_code == 200
        assert "Register Honk on GitHub" in home.text
        assert httpx.get(f"{url}/healthz", timeout=10).json()["configured"] is False
    assert (tmp_path / ".honk").is_dir()  # the data directory, beside where it started

    credentials = AppCredentials(
        app_id=4242, slug="honk-test", html_url="https://github.com/apps/honk-test",
        private_key=new_rsa_key_pair()[0], webhook_secret="whsec-0123456789",
        client_id="Iv1.abc", client_secret="secret-0123456789",
    )
    write_dotenv(tmp_path / ".env", credentials.env())
    with honk_serve(tmp_path) as url:
        assert httpx.get(f"{url}/healthz", timeout=10).json()["configured"] is True
        home = httpx.get(f"{url}/", timeout=10)
        assert "Honk is running" in home.text and "4242" in home.text
        assert httpx.get(f"{url}/runs", timeout=10).status_code == 302  # sign-in is on
