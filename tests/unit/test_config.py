"""Server settings from the environment and `.github/honk.yml`, with their error sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from honk_app.settings import (
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


LEAK = "LEAKED-hostfile-Content"


@pytest.mark.parametrize("text,key,expected", [
    (f"network: {{{LEAK}: 1}}", "network", "must be true or false."),
    (f"network: {LEAK}", "network", "must be true or false."),
    (f"max_turns: {LEAK}", "max_turns", "must be a whole number."),
    (f"max_cost_usd: [{LEAK}]", "max_cost_usd", "must be a whole number or a number."),
    (f"timeout_minutes: '{LEAK}'", "timeout_minutes", "must be a whole number or a number."),
    (f"model: {{{LEAK}: x}}", "model", "must be text."),
    (f"instructions: [{LEAK}]", "instructions", "must be text."),
    (f"checks: [{LEAK}, 3]", "checks", "must be a list of commands."),
    (f"setup: {{{LEAK}: 1}}", "setup", "must be a list or text."),
    ("check_rounds: -1", "check_rounds", "must be a whole number from 0 to 5."),
    ("check_rounds: 100000", "check_rounds", "must be a whole number from 0 to 5."),
    ("max_cost_usd: -1", "max_cost_usd", "must be above zero."),
    ("max_cost_usd: .nan", "max_cost_usd", "must be a finite number."),
    ("timeout_minutes: .inf", "timeout_minutes", "must be a finite number."),
    ("checks: [" + ", ".join(["echo"] * 11) + "]", "checks", "must list at most 10 commands."),
    ("setup: [" + ", ".join(["echo"] * 11) + "]", "setup", "must list at most 10 commands."),
])
def test_repo_config_errors_name_the_key_and_type_never_the_value(
        text: str, key: str, expected: str) -> None:
    with pytest.raises(RepoConfigError) as error:
        parse_repo_config(text)
    assert str(error.value) == f".github/honk.yml: `{key}` {expected}"


def test_an_unknown_key_is_named_only_if_it_looks_like_one() -> None:
    with pytest.raises(RepoConfigError) as error:
        parse_repo_config(f"{LEAK}: 1")
    assert LEAK not in str(error.value)
    assert str(error.value).startswith(".github/honk.yml: unknown key (known keys: model,")
    with pytest.raises(RepoConfigError) as error:
        parse_repo_config("max_turn: 1")
    assert "unknown key `max_turn` (known keys: model, setup," in str(error.value)


def test_a_model_outside_the_operators_list_is_refused_with_the_list() -> None:
    settings = load_settings({})
    assert settings.models[0] == settings.model
    with pytest.raises(RepoConfigError) as error:
        effective_limits(settings, parse_repo_config("model: claude-opus-5-0"))
    assert str(error.value) == (
        ".github/honk.yml: `model` must be one of the models this server allows: "
        "claude-sonnet-5-5, claude-fable-5-2, claude-opus-5-5, claude-haiku-5-5.")
    allowed = effective_limits(settings, parse_repo_config("model: claude-haiku-5-5"))
    assert allowed.model == "claude-haiku-5-5"
    narrow = load_settings({"HONK_MODELS": " claude-haiku-5-5 ,", "HONK_MODEL": "claude-opus-5-5"})
    assert narrow.models == ("claude-opus-5-5", "claude-haiku-5-5")
    with pytest.raises(RepoConfigError, match=r"allows: claude-opus-5-5, claude-haiku-5-5[.]$"):
        effective_limits(narrow, parse_repo_config("model: claude-sonnet-5-5"))
    with pytest.raises(SettingsError, match=r"^HONK_MODELS must be model ids"):
        load_settings({"HONK_MODELS": "claude-x, rm -rf /"})


def test_the_default_models_are_ones_honk_knows_the_price_of() -> None:
    from honk_app.agent.pricing import PRICES
    from honk_app.settings import CURRENT_MODELS, DEFAULT_MODEL

    assert all(model in PRICES for model in (DEFAULT_MODEL, *CURRENT_MODELS))


def test_check_rounds_are_held_under_the_operators_cap() -> None:
    config = parse_repo_config("check_rounds: 4")
    assert effective_limits(load_settings({}), config).check_rounds == 4
    capped = load_settings({"HONK_CHECK_ROUNDS_CAP": "1"})
    assert effective_limits(capped, config).check_rounds == 1
    with pytest.raises(SettingsError, match=r"^HONK_CHECK_ROUNDS_CAP"):
        load_settings({"HONK_CHECK_ROUNDS_CAP": "6"})
