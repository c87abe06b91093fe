"""Server settings from the environment and `.github/honk.yml`, with their error sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from honk_app.config import (
    RepoConfigError,
    SettingsError,
    effective_limits,
    load_settings,
    parse_repo_config,
)


def pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({"HONK_DATA_DIR": str(tmp_path)})
    assert settings.port == 3000
    assert settings.github_api_url == "https://api.github.com"
    assert settings.sqlite_path == tmp_path / "honk.db"
    assert not settings.has_app_credentials


@pytest.mark.parametrize("env,name", [
    ({"PORT": "abc"}, "PORT"),
    ({"PORT": "70000"}, "PORT"),
    ({"APP_ID": "x1"}, "APP_ID"),
    ({"PRIVATE_KEY": "not a key"}, "PRIVATE_KEY"),
    ({"PRIVATE_KEY_PATH": "/nonexistent/key.pem"}, "PRIVATE_KEY_PATH"),
    ({"GITHUB_API_URL": "ftp://x"}, "GITHUB_API_URL"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"HONK_UNSAFE_NO_SANDBOX": "maybe"}, "HONK_UNSAFE_NO_SANDBOX"),
])
def test_a_bad_setting_is_named_in_one_line(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(env)
    assert str(error.value).startswith(name)
    assert "\n" not in str(error.value)


def test_private_key_from_text_with_escaped_newlines_and_from_a_file(tmp_path: Path) -> None:
    key = pem()
    one_line = key.replace("\n", "\\n")
    assert load_settings({"PRIVATE_KEY": one_line}).private_key == key
    path = tmp_path / "key.pem"
    path.write_text(key)
    settings = load_settings({"PRIVATE_KEY_PATH": str(path), "APP_ID": "12",
                              "WEBHOOK_SECRET": "s3cret-s3cret"})
    assert settings.has_app_credentials
    assert key not in repr(settings)
    assert "s3cret" not in repr(settings)


def test_repo_config_full() -> None:
    config = parse_repo_config("""
model: claude-opus-4-1
setup: pip install -e .
checks: [pytest -q, ruff check .]
check_rounds: 3
max_turns: 10
max_cost_usd: 1.5
timeout_minutes: 20
instructions: Keep changes small.
network: true
""")
    assert config.setup == ("pip install -e .",)
    assert config.checks == ("pytest -q", "ruff check .")
    assert config.max_cost_usd == 1.5
    assert config.network is True


@pytest.mark.parametrize("text,key", [
    ("max_turn: 10", "max_turn"),
    ("label: fixme", "label"),
    ("max_turns: ten", "max_turns"),
    ("max_turns: yes", "max_turns"),
    ("checks: 5", "checks"),
    ("checks: [pytest, 3]", "checks"),
    ("network: sometimes", "network"),
    ("max_cost_usd: -1", "max_cost_usd"),
    ("timeout_minutes: 0", "timeout_minutes"),
])
def test_repo_config_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(RepoConfigError) as error:
        parse_repo_config(text)
    assert f"`{key}`" in str(error.value)


def test_repo_config_yaml_typo_says_where() -> None:
    with pytest.raises(RepoConfigError, match="not valid YAML at line 2"):
        parse_repo_config("label: honk\nmodel: a: b\n")
    with pytest.raises(RepoConfigError, match="mapping"):
        parse_repo_config("- just a list")


def test_operator_caps_hold(tmp_path: Path) -> None:
    settings = load_settings({"HONK_MAX_TURNS_CAP": "5", "HONK_MAX_COST_USD_CAP": "1"})
    limits = effective_limits(settings, parse_repo_config(
        "max_turns: 50\nmax_cost_usd: 9\nnetwork: true"))
    assert (limits.max_turns, limits.max_cost_usd, limits.network) == (5, 1.0, False)
